"""Tests for the grid of cells: imagemapreduce.grid and ImageMapReduceTask's grid methods.

The reference is a transcription of LSST's serial ``ImageMapReduceTask._generateGrid`` loop
(``lsst.ip.diffim.imageMapReduce``), moving one `Box2I` at a time; the vectorised grid must match
it box for box.
"""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from lsst.pex.config import FieldValidationError  # noqa: E402

from imagemapreduce import (  # noqa: E402
    DoubleGaussianPsf,
    ExposureF,
    GaussianPsf,
    ImageMapper,
    ImageMapReduceConfig,
    ImageMapReduceTask,
    Quadrupole,
)
from imagemapreduce.geom import Box2I, Extent2I, Point2D, Point2I  # noqa: E402
from imagemapreduce.grid import (  # noqa: E402
    FWHM_PER_SIGMA,
    CellGrid,
    boxes_from_array,
    boxes_to_array,
    cell_boxes,
    grid_centroids,
    psf_fwhm,
    rescale,
)
from imagemapreduce.mappers import IdentityMapper  # noqa: E402

FWHM_FACTOR = 2.0 * np.sqrt(2.0 * np.log(2.0))
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, database=None)


# -- the reference: LSST's serial loop ---------------------------------------------------------------
def lsst_fwhm(psf) -> float:
    """LSST: determinant radius of the PSF shape at its average position x 2 sqrt(2 ln 2)."""
    return psf.computeShape(psf.getAveragePosition()).getDeterminantRadius() * 2.0 * np.sqrt(2.0 * np.log(2.0))


def reference_grid(
    bbox: Box2I,
    cellSizeX: float,
    cellSizeY: float,
    gridStepX: float,
    gridStepY: float,
    borderSizeX: float,
    borderSizeY: float,
    adjustGridOption: str = "spacing",
    psfFwhm: float | None = None,
    cellCentroidsX: list[float] | None = None,
    cellCentroidsY: list[float] | None = None,
    forceEvenSized: bool = False,
) -> tuple[list[Box2I], list[Box2I]]:
    """LSST's ``_generateGrid``, transcribed; ``psfFwhm`` given means ``scaleByFwhm=True``."""
    if cellCentroidsX is None or len(cellCentroidsX) <= 0:

        def rescaleValue(val):
            if psfFwhm is not None:
                return np.rint(val * psfFwhm).astype(int)
            return np.rint(val).astype(int)

        cellSizeX = rescaleValue(cellSizeX)
        cellSizeY = rescaleValue(cellSizeY)
        gridStepX = rescaleValue(gridStepX)
        gridStepY = rescaleValue(gridStepY)
        borderSizeX = rescaleValue(borderSizeX)
        borderSizeY = rescaleValue(borderSizeY)

        if adjustGridOption == "spacing":
            nGridX = bbox.getWidth() // cellSizeX + 1
            nGridY = bbox.getHeight() // cellSizeY + 1
            xLinSpace = np.linspace(cellSizeX // 2, bbox.getWidth() - cellSizeX // 2, nGridX)
            yLinSpace = np.linspace(cellSizeY // 2, bbox.getHeight() - cellSizeY // 2, nGridY)
        elif adjustGridOption == "size":
            cellSizeX = gridStepX
            cellSizeY = gridStepY
            xLinSpace = np.arange(cellSizeX // 2, bbox.getWidth() + cellSizeX // 2, cellSizeX)
            yLinSpace = np.arange(cellSizeY // 2, bbox.getHeight() + cellSizeY // 2, cellSizeY)
            cellSizeX += 1  # add 1 to make sure there are no gaps
            cellSizeY += 1
        else:
            xLinSpace = np.arange(cellSizeX // 2, bbox.getWidth() + cellSizeX // 2, gridStepX)
            yLinSpace = np.arange(cellSizeY // 2, bbox.getHeight() + cellSizeY // 2, gridStepY)

        cellCentroids = [(x, y) for x in xLinSpace for y in yLinSpace]
    else:
        cellCentroids = [(cellCentroidsX[i], cellCentroidsY[i]) for i in range(len(cellCentroidsX))]
        cellSizeX, cellSizeY = int(cellSizeX), int(cellSizeY)
        borderSizeX, borderSizeY = int(borderSizeX), int(borderSizeY)

    # first "main" box at 0,0
    bbox0 = Box2I(Point2I(bbox.getBegin()), Extent2I(int(cellSizeX), int(cellSizeY)))
    # first expanded box
    bbox1 = Box2I(bbox0)
    bbox1.grow(Extent2I(int(borderSizeX), int(borderSizeY)))

    boxes0, boxes1 = [], []

    def _makeBoxEvenSized(bb):
        if bb.getWidth() % 2 == 1:  # grow to the right
            bb.include(Point2I(bb.getMaxX() + 1, bb.getMaxY()))
            bb.clip(bbox)
            if bb.getWidth() % 2 == 1:  # clipped at right -- so grow to the left
                bb.include(Point2I(bb.getMinX() - 1, bb.getMaxY()))
                bb.clip(bbox)
        if bb.getHeight() % 2 == 1:  # grow upwards
            bb.include(Point2I(bb.getMaxX(), bb.getMaxY() + 1))
            bb.clip(bbox)
            if bb.getHeight() % 2 == 1:  # clipped upwards -- so grow down
                bb.include(Point2I(bb.getMaxX(), bb.getMinY() - 1))
                bb.clip(bbox)
        if bb.getWidth() % 2 == 1 or bb.getHeight() % 2 == 1:
            raise RuntimeError("Cannot make bounding box even-sized. Probably too big.")
        return bb

    for x, y in cellCentroids:
        centroid = Point2D(x, y)
        bb0 = Box2I(bbox0)
        xoff = int(np.floor(centroid.getX())) - bb0.getWidth() // 2
        yoff = int(np.floor(centroid.getY())) - bb0.getHeight() // 2
        bb0.shift(Extent2I(xoff, yoff))
        bb0.clip(bbox)
        if forceEvenSized:
            bb0 = _makeBoxEvenSized(bb0)
        bb1 = Box2I(bbox1)
        bb1.shift(Extent2I(xoff, yoff))
        bb1.clip(bbox)
        if forceEvenSized:
            bb1 = _makeBoxEvenSized(bb1)
        if bb0.getArea() > 1 and bb1.getArea() > 1:
            boxes0.append(bb0)
            boxes1.append(bb1)
    return boxes0, boxes1


def reference_for_task(exposure, config: ImageMapReduceConfig, forceEvenSized: bool = False):
    """Return the reference grid for a task's config and an exposure."""
    given = config.cellCentroidsX is not None and len(config.cellCentroidsX) > 0
    fwhm = lsst_fwhm(exposure.getPsf()) if (config.scaleByFwhm and not given) else None
    return reference_grid(
        exposure.getBBox(),
        config.cellSizeX,
        config.cellSizeY,
        config.gridStepX,
        config.gridStepY,
        config.borderSizeX,
        config.borderSizeY,
        config.adjustGridOption,
        psfFwhm=fwhm,
        cellCentroidsX=config.cellCentroidsX,
        cellCentroidsY=config.cellCentroidsY,
        forceEvenSized=forceEvenSized,
    )


def outcome(fn):
    """``("ok", value)`` or ``("raises", exception type)``: compare paths that may both fail."""
    try:
        return ("ok", fn())
    except (RuntimeError, ValueError) as exc:
        return ("raises", type(exc))


def make_config(**fields) -> ImageMapReduceConfig:
    config = ImageMapReduceConfig()
    config.mapper.retarget(IdentityMapper)
    config.scheduler = "synchronous"
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def make_exposure(width: int, height: int, xy0=(0, 0), psf=None) -> ExposureF:
    exposure = ExposureF(Box2I(Point2I(*xy0), Extent2I(width, height)))
    if psf is not None:
        exposure.setPsf(psf)
    return exposure


def as_tuples(boxes):
    return [(b.getMinX(), b.getMinY(), b.getMaxX(), b.getMaxY()) for b in boxes]


def coverage(bbox: Box2I, boxes: np.ndarray) -> np.ndarray:
    """How many boxes cover each pixel (rows = y), by a 2-d difference array and cumulative sums."""
    diff = np.zeros((bbox.getHeight() + 1, bbox.getWidth() + 1), dtype=np.int64)
    x0 = boxes[:, 0] - bbox.getMinX()
    y0 = boxes[:, 1] - bbox.getMinY()
    x1 = boxes[:, 2] - bbox.getMinX() + 1
    y1 = boxes[:, 3] - bbox.getMinY() + 1
    np.add.at(diff, (y0, x0), 1)
    np.add.at(diff, (y0, x1), -1)
    np.add.at(diff, (y1, x0), -1)
    np.add.at(diff, (y1, x1), 1)
    return diff.cumsum(axis=0).cumsum(axis=1)[:-1, :-1]


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


# -- grid functions on their own ---------------------------------------------------------------------
def test_rescale_rounds_half_to_even():
    values = (1.5, 2.5, 3.5, 10.49, 10.5, 11.5)
    assert [rescale(v, None, "cellSizeX") for v in values] == [2, 2, 4, 10, 10, 12]
    assert rescale(2.5, 2.0, "cellSizeX") == 5
    assert rescale(1.25, 2.0, "gridStepX") == 2  # 2.5 -> 2
    assert rescale(1.75, 2.0, "gridStepX") == 4  # 3.5 -> 4


def test_rescale_border_may_round_to_zero():
    assert rescale(0.4, None, "borderSizeX") == 0
    assert rescale(0.1, 4.0, "borderSizeY") == 0
    with pytest.raises(ValueError, match="cellSizeX"):
        rescale(0.4, None, "cellSizeX")
    with pytest.raises(ValueError, match="scaleByFwhm=False"):
        rescale(0.1, 4.0, "gridStepY")


@pytest.mark.parametrize("adjust", ["spacing", "size", "none"])
def test_grid_centroids_axis_rules(adjust):
    bbox = Box2I(Point2I(100, 37), Extent2I(50, 23))
    cx, cy, cell = grid_centroids(bbox, (8, 6), (5, 7), adjust)
    if adjust == "spacing":
        xs, ys = np.linspace(4, 46, 50 // 8 + 1), np.linspace(3, 20, 23 // 6 + 1)
        assert cell == (8, 6)
    elif adjust == "size":
        xs, ys = np.arange(2, 52, 5), np.arange(3, 26, 7)
        assert cell == (6, 8)
    else:
        xs, ys = np.arange(4, 54, 5), np.arange(3, 26, 7)
        assert cell == (8, 6)
    # x-major: every y for the first x, then the next x
    np.testing.assert_array_equal(cx, np.repeat(xs, len(ys)))
    np.testing.assert_array_equal(cy, np.tile(ys, len(xs)))


def test_grid_centroids_rejects_unknown_option():
    with pytest.raises(ValueError, match="adjustGridOption"):
        grid_centroids(Box2I(Point2I(0, 0), Extent2I(10, 10)), (4, 4), (4, 4), "bogus")  # type: ignore[arg-type]


def test_cell_boxes_rejects_unequal_centroids():
    with pytest.raises(ValueError, match="equal length"):
        cell_boxes(Box2I(Point2I(0, 0), Extent2I(10, 10)), np.zeros(3), np.zeros(2), (4, 4), (1, 1))


def test_box_array_round_trip():
    boxes = [Box2I(Point2I(1, 2), Extent2I(3, 4)), Box2I(Point2I(-5, 0), Point2I(7, 9))]
    array = boxes_to_array(boxes)
    assert array.shape == (2, 4) and array.dtype == np.int64
    assert boxes_from_array(array) == boxes
    assert boxes_to_array([]).shape == (0, 4)
    assert boxes_from_array(np.zeros((0, 4), dtype=np.int64)) == []
    grid = CellGrid(array, array + np.array([-1, -1, 1, 1]))
    assert len(grid) == 2 and grid.boxes0() == boxes
    assert grid.boxes1()[0] == Box2I(Point2I(0, 1), Point2I(4, 6))


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


# -- 4. keeping and reusing the grid -----------------------------------------------------------------
def _run_bboxes(task, exposure):
    result = task.run(exposure)
    return [r.subExposure.getBBox() for r in result.result]


def test_grid_is_kept_and_reused_until_reset():
    config = make_config(scaleByFwhm=False, cellSizeX=12.0, cellSizeY=9.0, gridStepX=8.0, gridStepY=8.0)
    config.reducer.reduceOperation = "none"
    task = ImageMapReduceTask(config=config)
    assert task.boxes0 is None and task.boxes1 is None
    small = make_exposure(40, 30)
    bboxes = _run_bboxes(task, small)
    ref0, ref1 = reference_for_task(small, config)
    assert task.boxes0 == ref0 and task.boxes1 == ref1
    assert bboxes == ref0
    kept0, kept1 = task.boxes0, task.boxes1

    # A second run, on an exposure with the same bbox, reuses the kept grid.
    assert _run_bboxes(task, make_exposure(40, 30)) == ref0
    assert task.boxes0 is kept0 and task.boxes1 is kept1

    # On a larger exposure a new grid is laid (LSST would reuse the old one, leaving most of it NaN).
    large = make_exposure(90, 70)
    new0, new1 = reference_for_task(large, config)
    assert _run_bboxes(task, large) == new0 and new0 != ref0
    assert task.boxes0 == new0 and task.boxes1 == new1

    # Reset: the grid is generated again, for the new exposure.
    task.boxes0 = None
    new_bboxes = _run_bboxes(task, large)
    assert task.boxes0 == new0 and task.boxes1 == new1
    assert new_bboxes == new0

    # Resetting boxes1 alone also regenerates.
    task.boxes1 = None
    assert _run_bboxes(task, small) == ref0 and task.boxes1 == ref1


def test_hand_set_boxes_are_used_by_run():
    config = make_config(scaleByFwhm=False)
    config.reducer.reduceOperation = "none"
    task = ImageMapReduceTask(config=config)
    boxes0 = [Box2I(Point2I(3, 4), Extent2I(5, 6)), Box2I(Point2I(20, 1), Extent2I(7, 2))]
    boxes1 = [Box2I(Point2I(1, 2), Extent2I(9, 10)), Box2I(Point2I(18, 0), Extent2I(11, 4))]
    task.boxes0, task.boxes1 = boxes0, boxes1
    result = task.run(make_exposure(40, 30))
    assert [r.subExposure.getBBox() for r in result.result] == boxes0
    assert task.boxes0 is boxes0 and task.boxes1 is boxes1
    # Replacing the lists (same length) is honoured on the next run.
    task.boxes0 = list(reversed(boxes0))
    task.boxes1 = list(reversed(boxes1))
    result = task.run(make_exposure(40, 30))
    assert [r.subExposure.getBBox() for r in result.result] == boxes0[::-1]


def test_hand_set_boxes_with_xy0():
    config = make_config(scaleByFwhm=False)
    config.reducer.reduceOperation = "none"
    task = ImageMapReduceTask(config=config)
    task.boxes0 = [Box2I(Point2I(105, 40), Extent2I(4, 4))]
    task.boxes1 = [Box2I(Point2I(103, 38), Extent2I(8, 8))]
    result = task.run(make_exposure(20, 20, (100, 37)))
    assert [r.subExposure.getBBox() for r in result.result] == task.boxes0


# -- 5. properties -----------------------------------------------------------------------------------
@st.composite
def grid_params(draw, adjusts=("spacing", "size", "none")):
    width = draw(st.integers(2, 300))
    height = draw(st.integers(2, 300))
    xy0 = (draw(st.integers(-500, 500)), draw(st.integers(-500, 500)))
    # Keep at most ~17 cells per axis so the serial reference stays quick.
    cell = (draw(st.integers(max(2, width // 16), 80)), draw(st.integers(max(2, height // 16), 80)))
    step = (draw(st.integers(max(1, width // 16), 80)), draw(st.integers(max(1, height // 16), 80)))
    border = (draw(st.integers(0, 20)), draw(st.integers(0, 20)))
    adjust = draw(st.sampled_from(adjusts))
    return Box2I(Point2I(*xy0), Extent2I(width, height)), cell, step, border, adjust


def _vectorised(bbox, cell, step, border, adjust, force_even=False):
    cx, cy, cell = grid_centroids(bbox, cell, step, adjust)
    return cell_boxes(bbox, cx, cy, cell, border, force_even)


@PROPERTY_SETTINGS
@given(grid_params(adjusts=("spacing", "size")))
def test_cells_cover_every_pixel(params):
    bbox, cell, step, border, adjust = params
    grid = _vectorised(bbox, cell, step, border, adjust)
    assert len(grid) > 0
    counts = coverage(bbox, grid.cells)
    assert counts.shape == (bbox.getHeight(), bbox.getWidth())
    assert counts.min() >= 1
    # Every cell and expanded cell lies in the image; each expanded cell holds its cell.
    full = boxes_to_array([bbox])[0]
    for boxes in (grid.cells, grid.expanded):
        assert (boxes[:, :2] >= full[:2]).all() and (boxes[:, 2:] <= full[2:]).all()
    assert (grid.expanded[:, :2] <= grid.cells[:, :2]).all() and (grid.expanded[:, 2:] >= grid.cells[:, 2:]).all()


@PROPERTY_SETTINGS
@given(grid_params(), st.booleans())
def test_grid_functions_match_lsst_loop(params, force_even):
    bbox, cell, step, border, adjust = params
    expected = outcome(lambda: reference_grid(bbox, *cell, *step, *border, adjust, forceEvenSized=force_even))
    got = outcome(lambda: _vectorised(bbox, cell, step, border, adjust, force_even))
    if expected[0] == "raises":
        assert got == expected
    else:
        assert got[0] == "ok"
        assert (got[1].boxes0(), got[1].boxes1()) == expected[1]


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


@PROPERTY_SETTINGS
@given(
    st.integers(2, 120),
    st.integers(2, 120),
    st.lists(st.tuples(st.floats(-50, 200, allow_nan=False), st.floats(-50, 200, allow_nan=False)), max_size=30),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 15),
    st.integers(0, 15),
    st.booleans(),
)
def test_given_centroids_property(width, height, centroids, cw, ch, bx, by, force_even):
    bbox = Box2I(Point2I(100, 37), Extent2I(width, height))
    xs = [c[0] for c in centroids]
    ys = [c[1] for c in centroids]
    expected = outcome(
        lambda: reference_grid(
            bbox,
            cw,
            ch,
            0,
            0,
            bx,
            by,
            cellCentroidsX=xs or [0.0],
            cellCentroidsY=ys or [0.0],
            forceEvenSized=force_even,
        )
    )
    got = outcome(
        lambda: cell_boxes(bbox, np.array(xs or [0.0]), np.array(ys or [0.0]), (cw, ch), (bx, by), force_even)
    )
    if expected[0] == "raises":
        assert got == expected
    else:
        assert got[0] == "ok"
        assert (got[1].boxes0(), got[1].boxes1()) == expected[1]


# -- 6. plotBoxes ------------------------------------------------------------------------------------
def test_plot_boxes_needs_a_grid():
    task = ImageMapReduceTask(config=make_config())
    with pytest.raises(RuntimeError, match="_generateGrid"):
        task.plotBoxes(Box2I(Point2I(0, 0), Extent2I(10, 10)))


@pytest.mark.parametrize("skip", [1, 3, 4])
def test_plot_boxes_draws_every_skipth_cell(skip):
    task = ImageMapReduceTask(config=make_config(scaleByFwhm=False, cellSizeX=12.0, cellSizeY=9.0))
    exposure = make_exposure(70, 50, (100, 37))
    task._generateGrid(exposure)
    bbox = exposure.getBBox()
    fig, ax = plt.subplots()
    try:
        returned = task.plotBoxes(bbox, skip=skip, ax=ax)
        assert returned is ax
        lines = ax.get_lines()
        dashed = [line for line in lines if line.get_linestyle() == "--"]
        dotted = [line for line in lines if line.get_linestyle() == ":"]
        n = len(task.boxes0[::skip])
        assert n > 1
        assert len(dashed) == len(dotted) == n and len(lines) == 2 * n
        assert ax.get_xlim() == (bbox.getBeginX(), bbox.getEndX())
        assert ax.get_ylim() == (bbox.getBeginY(), bbox.getEndY())
        # Each dashed outline goes through the corners of its cell, closing on the first.
        for line, box in zip(dashed, task.boxes0[::skip], strict=True):
            xs, ys = line.get_data()
            corners = [(p.getX(), p.getY()) for p in box.getCorners()]
            assert list(zip(xs, ys, strict=True)) == corners + corners[:1]
        for line, box in zip(dotted, task.boxes1[::skip], strict=True):
            xs, _ = line.get_data()
            assert (min(xs), max(xs)) == (box.getMinX(), box.getMaxX())
        # A cell and its expanded cell share a colour.
        assert [line.get_color() for line in dashed] == [line.get_color() for line in dotted]
    finally:
        plt.close(fig)


def test_plot_boxes_default_skip_and_current_axes():
    task = ImageMapReduceTask(config=make_config(scaleByFwhm=False))
    exposure = make_exposure(60, 40)
    task._generateGrid(exposure)
    fig = plt.figure()
    try:
        ax = task.plotBoxes(exposure.getBBox())
        assert ax is plt.gca()
        n = len(task.boxes0[::3])
        styles = [line.get_linestyle() for line in ax.get_lines()]
        assert styles.count("--") == styles.count(":") == n == len(styles) // 2
    finally:
        plt.close(fig)


# -- 7. big grids ------------------------------------------------------------------------------------
def test_hundred_thousand_cells():
    bbox = Box2I(Point2I(-7, 11), Extent2I(4000, 2500))
    cx, cy, cell = grid_centroids(bbox, (10, 10), (10, 10), "size")
    assert cell == (11, 11) and cx.shape == cy.shape == (100_000,)
    grid = cell_boxes(bbox, cx, cy, cell, (4, 4), force_even_sized=True)
    assert len(grid) == 100_000
    assert grid.cells.shape == grid.expanded.shape == (100_000, 4)
    assert coverage(bbox, grid.cells).min() >= 1
    assert ((grid.cells[:, 2:] - grid.cells[:, :2] + 1) % 2 == 0).all()
    # A sample of cells agrees with the serial loop given the same centroids.
    rng = np.random.default_rng(42)
    pick = np.sort(rng.choice(len(cx), 300, replace=False))
    pick = np.concatenate([[0, len(cx) - 1], pick])
    ref0, ref1 = reference_grid(
        bbox,
        11,
        11,
        0,
        0,
        4,
        4,
        cellCentroidsX=list(cx[pick]),
        cellCentroidsY=list(cy[pick]),
        forceEvenSized=True,
    )
    assert boxes_from_array(grid.cells[pick]) == ref0
    assert boxes_from_array(grid.expanded[pick]) == ref1


def test_hundred_thousand_cells_through_the_task():
    config = make_config(scaleByFwhm=False, adjustGridOption="spacing", cellSizeX=10.0, cellSizeY=10.0)
    task = ImageMapReduceTask(config=config)
    boxes0, boxes1 = task._generateGrid(make_exposure(3990, 2490))
    assert len(boxes0) == len(boxes1) == 400 * 250
    # y centres: linspace(5, 2485, 250), the second at 14.96 -> floor 14 -> cell from 9
    assert as_tuples(boxes0[:2]) == [(0, 0, 9, 9), (0, 9, 9, 18)]
    assert as_tuples(boxes1[:2]) == [(0, 0, 14, 14), (0, 4, 14, 23)]
    assert as_tuples(boxes0[-1:]) == [(3980, 2480, 3989, 2489)]
