"""Tests for ImageMapReduceTask's grid methods against LSST's serial ``_generateGrid`` loop.

The Task's grid (``_generateGrid``: config rescaling, FWHM scaling, given centroids, errors) must
match the reference of ``grid_reference`` box for box.
"""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import math

import pytest
from grid_reference import (
    FWHM_FACTOR,
    PROPERTY_SETTINGS,
    as_tuples,
    grid_params,
    make_config,
    make_exposure,
    outcome,
    reference_for_task,
    reference_grid,
)
from hypothesis import given
from hypothesis import strategies as st
from lsst.pex.config import FieldValidationError

from imagemapreduce import (
    DoubleGaussianPsf,
    ExposureF,
    GaussianPsf,
    ImageMapper,
    ImageMapReduceConfig,
    ImageMapReduceTask,
    Quadrupole,
)
from imagemapreduce.geom import Box2I, Extent2I, Point2D, Point2I
from imagemapreduce.grid import FWHM_PER_SIGMA, psf_fwhm, rescale

# -- 1. the task against the reference ----------------------------------------------------------------
IMAGES = [
    pytest.param(128, 128, (0, 0), id="128x128"),
    pytest.param(97, 61, (100, 37), id="97x61@100,37"),
    pytest.param(33, 200, (-5, 12), id="33x200@-5,12"),
    pytest.param(7, 5, (3, 0), id="7x5@3,0"),
]
# (cellSizeX, cellSizeY, gridStepX, gridStepY, borderSizeX, borderSizeY): pixels, or FWHMs when scaled.
CELLS = [
    pytest.param((10.0, 10.0, 10.0, 10.0, 5.0, 5.0), id="lsst-defaults"),
    pytest.param((4.5, 6.0, 3.0, 2.5, 1.2, 2.0), id="step<cell,half-even"),
    pytest.param((3.0, 2.5, 5.5, 7.0, 2.0, 0.6), id="step>cell"),
    pytest.param((2.0, 3.0, 2.0, 3.0, 0.4, 1.0), id="small,border-rounds-0"),
]
PSF = GaussianPsf(21, 21, 1.5)  # FWHM ~ 3.53 pixels: scaled sizes are not whole


@pytest.mark.parametrize("forceEvenSized", [False, True])
@pytest.mark.parametrize("cells", CELLS)
@pytest.mark.parametrize("width, height, xy0", IMAGES)
@pytest.mark.parametrize("scaleByFwhm", [False, True])
@pytest.mark.parametrize("adjust", ["spacing", "size", "none"])
def test_grid_matches_lsst_loop(adjust, scaleByFwhm, width, height, xy0, cells, forceEvenSized):
    names = ("cellSizeX", "cellSizeY", "gridStepX", "gridStepY", "borderSizeX", "borderSizeY")
    config = make_config(adjustGridOption=adjust, scaleByFwhm=scaleByFwhm, **dict(zip(names, cells, strict=True)))
    exposure = make_exposure(width, height, xy0, psf=PSF)
    task = ImageMapReduceTask(config=config)

    expected = outcome(lambda: reference_for_task(exposure, config, forceEvenSized))
    got = outcome(lambda: task._generateGrid(exposure, forceEvenSized=forceEvenSized))
    if expected[0] == "raises":
        assert got == expected
        return
    assert got[0] == "ok", got
    ref0, ref1 = expected[1]
    boxes0, boxes1 = got[1]
    assert boxes0 is task.boxes0 and boxes1 is task.boxes1
    assert boxes0 == ref0
    assert boxes1 == ref1
    assert all(type(b) is Box2I for b in boxes0 + boxes1)
    bbox = exposure.getBBox()
    for b0, b1 in zip(boxes0, boxes1, strict=True):
        assert bbox.contains(b0) and bbox.contains(b1) and b1.contains(b0)
        if forceEvenSized:
            assert b0.getWidth() % 2 == b0.getHeight() % 2 == b1.getWidth() % 2 == b1.getHeight() % 2 == 0


def test_parametrized_grids_mostly_have_cells():
    """Guard the big table above against comparing empty lists only."""
    bbox = Box2I(Point2I(100, 37), Extent2I(97, 61))
    for adjust in ("spacing", "size", "none"):
        boxes0, boxes1 = reference_grid(bbox, 4.5, 6.0, 3.0, 2.5, 1.2, 2.0, adjust)
        assert len(boxes0) == len(boxes1) > 10


CENTROIDS = [
    pytest.param([5.0], [5.0], id="one"),
    pytest.param([0.0, 10.2, 50.9, 96.5, 3.7], [0.0, 30.5, 60.0, 12.49, 59.99], id="floats"),
    pytest.param([-3.5, -40.0, 150.0, 48.0, 96.0], [-2.0, 20.0, 20.0, 60.0, -9.5], id="outside-and-edges"),
    pytest.param([20.0, 20.0, 20.0], [30.0, 30.0, 31.0], id="repeated"),
]


@pytest.mark.parametrize("forceEvenSized", [False, True])
@pytest.mark.parametrize("sizes", [(10.0, 10.0, 5.0, 5.0), (7.9, 4.2, 2.6, 0.5), (3.0, 3.0, 1.0, 1.0)])
@pytest.mark.parametrize("xs, ys", CENTROIDS)
@pytest.mark.parametrize("scaleByFwhm", [True, False])
def test_given_centroids_match_lsst_loop(scaleByFwhm, xs, ys, sizes, forceEvenSized):
    cellX, cellY, borderX, borderY = sizes
    # Given centroids ignore scaleByFwhm and the grid options (and need no PSF).
    config = make_config(
        cellCentroidsX=xs,
        cellCentroidsY=ys,
        cellSizeX=cellX,
        cellSizeY=cellY,
        borderSizeX=borderX,
        borderSizeY=borderY,
        scaleByFwhm=scaleByFwhm,
        gridStepX=1.0,
        gridStepY=99.0,
    )
    exposure = make_exposure(97, 61, (100, 37))
    task = ImageMapReduceTask(config=config)
    expected = outcome(lambda: reference_for_task(exposure, config, forceEvenSized))
    got = outcome(lambda: task._generateGrid(exposure, forceEvenSized=forceEvenSized))
    assert got == expected
    assert expected[0] == "ok"
    assert len(task.boxes0) >= 1


def test_given_centroids_one_cell_per_pair_relative_to_begin():
    config = make_config(
        cellCentroidsX=[10.0, 40.7],
        cellCentroidsY=[20.0, 5.2],
        cellSizeX=6.9,
        cellSizeY=4.0,
        borderSizeX=2.0,
        borderSizeY=3.0,
    )
    task = ImageMapReduceTask(config=config)
    boxes0, boxes1 = task._generateGrid(make_exposure(60, 50, (100, 37)))
    # int(6.9) = 6: starts at begin + floor(c) - 3
    assert as_tuples(boxes0) == [(107, 55, 112, 58), (137, 40, 142, 43)]
    assert as_tuples(boxes1) == [(105, 52, 114, 61), (135, 37, 144, 46)]


def test_empty_cells_from_centroids_have_no_even_size_error():
    """A cell size that truncates to 0 gives empty cells and empty expanded cells, as in LSST."""
    config = make_config(
        cellCentroidsX=[5.0],
        cellCentroidsY=[2.0],
        cellSizeX=0.5,
        cellSizeY=5.0,
        borderSizeX=1.0,
        borderSizeY=1.0,
    )
    exposure = make_exposure(10, 5)
    assert reference_for_task(exposure, config, forceEvenSized=True) == ([], [])
    task = ImageMapReduceTask(config=config)
    assert task._generateGrid(exposure, forceEvenSized=True) == ([], [])


# -- 2. LSST's defaults ------------------------------------------------------------------------------
def test_lsst_defaults_on_128x128_double_gaussian():
    psf = DoubleGaussianPsf(11, 11, 2.0, 3.7)
    exposure = make_exposure(128, 128, psf=psf)
    radius = psf.computeShape(psf.getAveragePosition()).getDeterminantRadius()
    fwhm = psf_fwhm(psf)
    assert FWHM_PER_SIGMA == pytest.approx(2.0 * math.sqrt(2.0 * math.log(2.0)), rel=1e-15)
    assert fwhm == pytest.approx(radius * 2.3548, rel=1e-4)
    assert fwhm == pytest.approx(radius * FWHM_FACTOR, rel=1e-12)
    assert fwhm == pytest.approx(2.0 * FWHM_FACTOR, rel=0.01)  # sigma 2 Gaussian (b = 0)
    config = make_config()
    assert (config.scaleByFwhm, config.adjustGridOption) == (True, "spacing")
    assert (config.cellSizeX, config.gridStepX, config.borderSizeX) == (10.0, 10.0, 5.0)
    # Scaled sizes: 10 x 4.70 -> 47, 5 x 4.70 -> 24
    assert rescale(config.cellSizeX, fwhm, "cellSizeX") == 47
    assert rescale(config.gridStepY, fwhm, "gridStepY") == 47
    assert rescale(config.borderSizeX, fwhm, "borderSizeX") == 24

    task = ImageMapReduceTask(config=config)
    boxes0, boxes1 = task._generateGrid(exposure)
    ref0, ref1 = reference_for_task(exposure, config)
    assert boxes0 == ref0 and boxes1 == ref1
    # 128 // 47 + 1 = 3 centres per axis at 23, 64, 105
    assert len(boxes0) == len(boxes1) == 9
    assert as_tuples(boxes0[:3]) == [(0, 0, 46, 46), (0, 41, 46, 87), (0, 82, 46, 127)]
    assert as_tuples(boxes1[:3]) == [(0, 0, 70, 70), (0, 17, 70, 111), (0, 58, 70, 127)]
    assert boxes0[4].getDimensions() == Extent2I(47, 47)
    assert boxes1[4].getDimensions() == Extent2I(95, 95)


class _EllipticalPsf:
    """A stub PSF whose shape is elliptical and depends on where it is computed."""

    def getAveragePosition(self):
        return Point2D(30.0, 40.0)

    def computeShape(self, position):
        # Elongated: the trace radius (sqrt((ixx + iyy) / 2)) differs from the determinant radius.
        scale = 1.0 if (position.getX(), position.getY()) == (30.0, 40.0) else 3.0
        return Quadrupole(9.0 * scale, 1.0 * scale, 0.5 * scale)


def test_fwhm_is_determinant_radius_at_average_position():
    psf = _EllipticalPsf()
    shape = Quadrupole(9.0, 1.0, 0.5)
    assert shape.getDeterminantRadius() != pytest.approx(shape.getTraceRadius(), rel=0.01)
    assert psf_fwhm(psf) == pytest.approx(shape.getDeterminantRadius() * FWHM_FACTOR, rel=1e-12)
    config = make_config(cellSizeX=4.0, cellSizeY=3.0, gridStepX=4.0, gridStepY=3.0, borderSizeX=1.0, borderSizeY=2.0)
    exposure = make_exposure(90, 70, (100, 37), psf=psf)
    task = ImageMapReduceTask(config=config)
    boxes0, boxes1 = task._generateGrid(exposure)
    assert (boxes0, boxes1) == reference_for_task(exposure, config)
    # FWHM = 1.7199 x 2.3548 = 4.050: the first cell is rint(4 x 4.05) x rint(3 x 4.05) = 16 x 12
    fwhm = psf_fwhm(psf)
    assert fwhm == pytest.approx(4.050044, abs=1e-6)
    assert boxes0[0].getDimensions() == Extent2I(16, 12)


def test_scaling_is_logged(caplog):
    task = ImageMapReduceTask(config=make_config())
    with caplog.at_level("INFO", logger=task.log.name):
        task._generateGrid(make_exposure(64, 64, psf=GaussianPsf(15, 15, 2.0)))
    assert any("Scaling grid parameters by" in r.getMessage() for r in caplog.records)


def test_unscaled_grid_needs_no_psf():
    task = ImageMapReduceTask(config=make_config(scaleByFwhm=False))
    exposure = make_exposure(30, 20)
    assert not exposure.hasPsf()
    boxes0, boxes1 = task._generateGrid(exposure)
    assert (boxes0, boxes1) == reference_grid(exposure.getBBox(), 10, 10, 10, 10, 5, 5, "spacing")


# -- 3. errors ---------------------------------------------------------------------------------------
def _unequal_centroids():
    config = make_config(cellCentroidsX=[1.0, 2.0], cellCentroidsY=[1.0])
    ImageMapReduceTask(config=config)._generateGrid(make_exposure(20, 20))


def _centroids_x_without_y():
    config = make_config(cellCentroidsX=[1.0, 2.0])
    ImageMapReduceTask(config=config).run(make_exposure(20, 20))


def _scale_without_psf():
    ImageMapReduceTask(config=make_config(scaleByFwhm=True)).run(make_exposure(20, 20))


def _boxes_of_different_lengths():
    task = ImageMapReduceTask(config=make_config(scaleByFwhm=False))
    task.boxes0 = [Box2I(Point2I(0, 0), Extent2I(4, 4)), Box2I(Point2I(4, 0), Extent2I(4, 4))]
    task.boxes1 = [Box2I(Point2I(0, 0), Extent2I(6, 6))]
    task.run(make_exposure(20, 20))


def _even_impossible_width_one():
    task = ImageMapReduceTask(config=make_config(scaleByFwhm=False, cellSizeX=4.0, gridStepX=4.0, borderSizeX=1.0))
    task._generateGrid(make_exposure(1, 6), forceEvenSized=True)


def _even_impossible_odd_width_equal_to_box():
    config = make_config(cellCentroidsX=[3.0], cellCentroidsY=[4.0], cellSizeX=7.0, cellSizeY=4.0)
    ImageMapReduceTask(config=config).run(make_exposure(7, 8), forceEvenSized=True)


def _cell_rounds_to_zero():
    ImageMapReduceTask(config=make_config(scaleByFwhm=False, cellSizeY=0.3))._generateGrid(make_exposure(20, 20))


def _step_scaled_to_zero():
    config = make_config(gridStepX=0.1, adjustGridOption="size")
    ImageMapReduceTask(config=config)._generateGrid(make_exposure(20, 20, psf=GaussianPsf(11, 11, 1.0)))


def _set_field(name, value):
    def setup():
        config = make_config()
        setattr(config, name, value)
        config.validate()

    return setup


class _AbstractMapper(ImageMapper):
    """A mapper that forgot to implement run()."""


def _abstract_default_mapper():
    ImageMapReduceTask(config=ImageMapReduceConfig())


def _abstract_subclass_mapper():
    config = ImageMapReduceConfig()
    config.mapper.retarget(_AbstractMapper)
    ImageMapReduceTask(config=config)


ERRORS = [
    pytest.param(ValueError, "equal length", _unequal_centroids, id="unequal-centroids"),
    pytest.param(ValueError, "equal length", _centroids_x_without_y, id="centroids-x-only"),
    pytest.param(ValueError, r"(?s)(?=.*setPsf)(?=.*scaleByFwhm)", _scale_without_psf, id="scale-no-psf"),
    pytest.param(ValueError, "different lengths", _boxes_of_different_lengths, id="boxes-lengths"),
    pytest.param(RuntimeError, "even-sized", _even_impossible_width_one, id="even-width-1"),
    pytest.param(RuntimeError, "even-sized", _even_impossible_odd_width_equal_to_box, id="even-odd-full"),
    pytest.param(ValueError, "cellSizeY", _cell_rounds_to_zero, id="cell-rounds-0"),
    pytest.param(ValueError, "gridStepX.*scaleByFwhm=False", _step_scaled_to_zero, id="step-scaled-0"),
    pytest.param(FieldValidationError, "cellSizeX", _set_field("cellSizeX", 0.0), id="cellSizeX=0"),
    pytest.param(FieldValidationError, "cellSizeX", _set_field("cellSizeX", -4.0), id="cellSizeX<0"),
    pytest.param(FieldValidationError, "gridStepY", _set_field("gridStepY", 0.0), id="gridStepY=0"),
    pytest.param(FieldValidationError, "borderSizeX", _set_field("borderSizeX", -1.0), id="borderSizeX<0"),
    pytest.param(FieldValidationError, "adjustGridOption", _set_field("adjustGridOption", "bogus"), id="bogus"),
    pytest.param(TypeError, "abstract", _abstract_default_mapper, id="abstract-default-mapper"),
    pytest.param(TypeError, "abstract", _abstract_subclass_mapper, id="abstract-subclass-mapper"),
]


@pytest.mark.parametrize("exception, match, setup", ERRORS)
def test_errors(exception, match, setup):
    with pytest.raises(exception, match=match):
        setup()


# -- 4. properties -----------------------------------------------------------------------------------
# Config values in pixels: often half-integers, to exercise rounding half to even.
_SIZES = st.one_of(st.integers(2, 80).map(lambda n: n / 2), st.floats(1.0, 40.0))
_BORDERS = st.one_of(st.integers(1, 40).map(lambda n: n / 2), st.floats(0.01, 20.0))


@PROPERTY_SETTINGS
@given(grid_params(), st.tuples(_SIZES, _SIZES, _SIZES, _SIZES, _BORDERS, _BORDERS), st.booleans())
def test_task_matches_lsst_loop_with_float_config(params, values, force_even):
    bbox, _, _, _, adjust = params
    names = ("cellSizeX", "cellSizeY", "gridStepX", "gridStepY", "borderSizeX", "borderSizeY")
    fields = dict(zip(names, values, strict=True))
    # Keep at most ~17 cells per axis so the serial reference stays quick.
    for name, length in (
        ("cellSizeX", bbox.getWidth()),
        ("gridStepX", bbox.getWidth()),
        ("cellSizeY", bbox.getHeight()),
        ("gridStepY", bbox.getHeight()),
    ):
        fields[name] = max(fields[name], length / 16)
    config = make_config(scaleByFwhm=False, adjustGridOption=adjust, **fields)
    exposure = ExposureF(bbox)
    task = ImageMapReduceTask(config=config)
    expected = outcome(lambda: reference_for_task(exposure, config, force_even))
    got = outcome(lambda: task._generateGrid(exposure, forceEvenSized=force_even))
    assert got == expected


# -- 5. big grids ------------------------------------------------------------------------------------
def test_hundred_thousand_cells_through_the_task():
    config = make_config(scaleByFwhm=False, adjustGridOption="spacing", cellSizeX=10.0, cellSizeY=10.0)
    task = ImageMapReduceTask(config=config)
    boxes0, boxes1 = task._generateGrid(make_exposure(3990, 2490))
    assert len(boxes0) == len(boxes1) == 400 * 250
    # y centres: linspace(5, 2485, 250), the second at 14.96 -> floor 14 -> cell from 9
    assert as_tuples(boxes0[:2]) == [(0, 0, 9, 9), (0, 9, 9, 18)]
    assert as_tuples(boxes1[:2]) == [(0, 0, 14, 14), (0, 4, 14, 23)]
    assert as_tuples(boxes0[-1:]) == [(3980, 2480, 3989, 2489)]
