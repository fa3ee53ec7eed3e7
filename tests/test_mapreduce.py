"""ImageMapReduceTask end to end: every reduce operation against LSST's serial algorithm."""

# ruff: noqa: D101, D102, D103
from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest
from cell_mappers import (
    CentreValueMapper,
    EchoMapper,
    ExpandedResultMapper,
    FailingMapper,
    HugeValueMapper,
    InPlaceMapper,
    NotAnExposureMapper,
    PsfPerCellMapper,
)
from conftest import make_exposure
from lsst_reference import reference_map, reference_reduce

import imagemapreduce as imr
from imagemapreduce.builtin_mappers import AddAmountMapper, IdentityMapper


def make_task(mapper, operation="average", scheduler="synchronous", region=1024, **fields):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    config.reducer.reduceOperation = operation
    config.scheduler = scheduler
    config.stitchRegionSize = region
    for name, value in fields.items():
        setattr(config, name, value)
    return imr.ImageMapReduceTask(config=config)


OVERLAPPING = dict(scaleByFwhm=False, cellSizeX=20, cellSizeY=16, gridStepX=13, gridStepY=11,
                   borderSizeX=4, borderSizeY=3, adjustGridOption="none")  # fmt: skip
GAPPY = dict(scaleByFwhm=False, cellSizeX=10, cellSizeY=10, gridStepX=17, gridStepY=15,
             borderSizeX=2, borderSizeY=2, adjustGridOption="none")  # fmt: skip


def assert_same_as_reference(out, exposure, task, mapper_cls, operation, **kwargs):
    results = reference_map(exposure, task.boxes0, task.boxes1, mapper_cls(), **kwargs)
    image, mask, variance, planes = reference_reduce(results, exposure, operation)
    np.testing.assert_array_equal(out.image.array, image)
    np.testing.assert_array_equal(out.variance.array, variance)
    np.testing.assert_array_equal(out.mask.array, mask)
    assert out.mask.getMaskPlaneDict() == planes
    assert out.getBBox() == exposure.getBBox()
    assert out.image.array.dtype == exposure.image.array.dtype


@pytest.mark.parametrize("operation", ["copy", "sum", "average"])
@pytest.mark.parametrize("grid", [OVERLAPPING, GAPPY], ids=["overlapping", "gappy"])
@pytest.mark.parametrize("mapper_cls", [CentreValueMapper, ExpandedResultMapper, AddAmountMapper])
def test_reduce_matches_lsst_serial_loop(exposure, operation, grid, mapper_cls):
    task = make_task(mapper_cls, operation, region=23, **grid)
    out = task.run(exposure, offset=0.5).exposure
    assert_same_as_reference(out, exposure, task, mapper_cls, operation, offset=0.5)


@pytest.mark.parametrize("operation", ["sum", "average"])
def test_sums_that_overflow_or_meet_opposite_infinities_match_lsst(exposure, operation):
    task = make_task(HugeValueMapper, operation, region=23, **OVERLAPPING)
    with np.errstate(over="ignore", invalid="ignore"):
        out = task.run(exposure).exposure
        assert_same_as_reference(out, exposure, task, HugeValueMapper, operation)
    assert np.isinf(out.image.array).any() and np.isnan(out.image.array).any()


def test_reduce_with_nan_input_pixels_flags_them(exposure):
    exposure.image.array[3:6, 10:40] = np.nan
    exposure.variance.array[50, :] = np.nan
    for operation in ("copy", "sum", "average"):
        task = make_task(IdentityMapper, operation, **OVERLAPPING)
        out = task.run(exposure).exposure
        assert_same_as_reference(out, exposure, task, IdentityMapper, operation)
        bad = out.mask.getPlaneBitMask(["INVALID_MAPREDUCE", "BAD", "NO_DATA"])
        if operation == "sum":  # LSST's sum skips invalid pixels and keeps no count: they stay 0
            assert np.all(out.image.array[3:6, 10:40] == 0)
            continue
        assert np.all(np.isnan(out.image.array[3:6, 10:40]))
        assert np.all(out.mask.array[3:6, 10:40] & bad == bad)
        assert np.all(out.mask.array[50, :] & bad == bad)


def test_uncovered_pixels(exposure):
    """Pixels no cell covers: NaN and flagged for copy and average; left at 0 for sum, as LSST does."""
    for operation in ("copy", "average", "sum"):
        task = make_task(AddAmountMapper, operation, **GAPPY)
        out = task.run(exposure).exposure
        covered = np.zeros(exposure.image.array.shape, bool)
        for box in task.boxes0:
            covered[box.slices(exposure.getXY0())] = True
        assert (~covered).sum() > 100
        bad = out.mask.getPlaneBitMask(["INVALID_MAPREDUCE", "BAD", "NO_DATA"])
        if operation == "sum":
            assert np.all(out.image.array[~covered] == 0)
            assert np.all(out.mask.array[~covered] == exposure.mask.array[~covered])
        else:
            assert np.all(np.isnan(out.image.array[~covered]))
            assert np.all(np.isnan(out.variance.array[~covered]))
            assert np.all(out.mask.array[~covered] & bad == bad)
        np.testing.assert_allclose(out.image.array[covered], exposure.image.array[covered] + 3, rtol=1e-6)
        assert not np.any(out.mask.array[covered] & out.mask.getPlaneBitMask("INVALID_MAPREDUCE"))


def test_average_divides_by_number_of_valid_contributions(exposure):
    exposure.image.array[...] = 1.0
    exposure.variance.array[...] = 1.0
    task = make_task(AddAmountMapper, "sum", **OVERLAPPING)
    total = task.run(exposure).exposure.image.array
    task = make_task(AddAmountMapper, "average", **OVERLAPPING)
    mean = task.run(exposure).exposure.image.array
    count = np.zeros(total.shape)
    for box in task.boxes0:
        count[box.slices(exposure.getXY0())] += 1
    assert count.max() >= 4
    np.testing.assert_allclose(total, 4.0 * count)
    np.testing.assert_allclose(mean, 4.0)


def test_sum_and_average_set_coaddpsf_copy_keeps_input_psf(exposure):
    task = make_task(AddAmountMapper, "average", **OVERLAPPING)
    out = task.run(exposure).exposure
    assert isinstance(out.getPsf(), imr.CoaddPsf)
    assert out.getPsf().getComponentCount() == len(task.boxes0)
    expected = exposure.getPsf().computeKernelImage(imr.Point2D(40, 30)).array
    np.testing.assert_allclose(out.getPsf().computeKernelImage(imr.Point2D(40, 30)).array, expected, atol=1e-12)
    copy = make_task(AddAmountMapper, "copy", **OVERLAPPING).run(exposure).exposure
    assert copy.getPsf() is exposure.getPsf()


def test_input_exposure_is_not_modified(exposure):
    before = exposure.clone()
    make_task(CentreValueMapper, "average", **OVERLAPPING).run(exposure)
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(exposure, plane).array, getattr(before, plane).array)


def test_reduce_none_returns_results_in_grid_order_with_kwargs(exposure):
    task = make_task(EchoMapper, "none", **OVERLAPPING)
    results = task.run(exposure, offset=2.5, label="x").result
    assert [r.bbox for r in results] == task.boxes0
    assert [r.expandedBBox for r in results] == task.boxes1
    assert all(r.fullBBox == exposure.getBBox() for r in results)
    assert all(r.kwargs == {"offset": 2.5, "label": "x"} for r in results)
    sums = [float(np.sum(exposure[b].image.array)) for b in task.boxes0]
    np.testing.assert_allclose([r.sum for r in results], sums)
    assert not any(r.writeable for r in results), "mappers get read-only views by default"


def test_do_clone_gives_private_writable_copies(exposure):
    before = exposure.image.array.copy()
    task = make_task(InPlaceMapper, "copy", **OVERLAPPING)
    with pytest.raises(imr.CellFailure, match="read-only"):
        task.run(exposure)
    out = task.run(exposure, doClone=True).exposure
    np.testing.assert_array_equal(exposure.image.array, before)
    covered = ~np.isnan(out.image.array)
    np.testing.assert_array_equal(out.image.array[covered], before[covered] + 1)
    results = make_task(EchoMapper, "none", **OVERLAPPING).run(exposure, doClone=True).result
    assert all(r.writeable for r in results)
    assert all("doClone" not in r.kwargs for r in results), "doClone is for the task, not the mapper"


def test_return_sub_images(exposure):
    task = make_task(AddAmountMapper, "none", returnSubImages=True, **OVERLAPPING)
    results = task.run(exposure).result
    for res, box0, box1 in zip(results, task.boxes0, task.boxes1):
        assert res.inputSubExposure.getBBox() == box0
        assert res.inputExpandedSubExposure.getBBox() == box1
        np.testing.assert_array_equal(res.inputSubExposure.image.array, exposure[box0].image.array)


def test_coaddpsf_reduce_operation(exposure):
    task = make_task(PsfPerCellMapper, "coaddPsf", **OVERLAPPING)
    psf = task.run(exposure).result
    assert isinstance(psf, imr.CoaddPsf)
    assert psf.getComponentCount() == len(task.boxes0)
    position = imr.Point2D(exposure.getBBox().getMinX() + 30.0, exposure.getBBox().getMinY() + 20.0)
    point = imr.Point2I(30 + exposure.getX0(), 20 + exposure.getY0())
    members = [b for b in task.boxes0 if b.contains(point)]
    assert len(members) >= 2
    full = exposure.getBBox()
    images = [
        imr.GaussianPsf(21, 21, 1.5 + b.getCenter().x / full.getWidth()).computeKernelImage(position).array
        for b in members
    ]
    expected = np.mean(images, axis=0)
    np.testing.assert_allclose(psf.computeKernelImage(position).array, expected / expected.sum(), atol=1e-12)


def test_reducer_run_directly_matches_task(exposure):
    task = make_task(CentreValueMapper, "average", **OVERLAPPING)
    parallel = task.run(exposure).exposure
    results = task._runMapper(exposure)
    serial = task._reduceImage(results, exposure).exposure
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(serial, plane).array, getattr(parallel, plane).array)


def test_mapper_failure_names_the_cell(exposure):
    task = make_task(FailingMapper, "average", **OVERLAPPING)
    with pytest.raises(imr.CellFailure, match=r"cell \d+ \(box .*ZeroDivisionError: boom in this cell") as info:
        task.run(exposure, failAt=(40, 30))
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_result_that_is_not_an_exposure_suggests_none(exposure):
    task = make_task(NotAnExposureMapper, "average", **OVERLAPPING)
    with pytest.raises(TypeError, match='reduceOperation="none"'):
        task.run(exposure)
    results = make_task(NotAnExposureMapper, "none", **OVERLAPPING).run(exposure).result
    assert all(isinstance(r.subExposure, float) for r in results)


def test_overlap_statistics_are_logged(exposure, caplog):
    task = make_task(AddAmountMapper, "average", **GAPPY)
    with caplog.at_level(logging.INFO, logger=task.getFullName()):
        task.run(exposure)
    messages = [r.getMessage() for r in caplog.records]
    assert "AVERAGE: Maximum overlap: 1.000000" in messages
    assert "AVERAGE: Minimum overlap: 0.000000" in messages
    zero = [m for m in messages if m.startswith("AVERAGE: Number of zero pixels")]
    assert zero and not zero[0].startswith("AVERAGE: Number of zero pixels: 0.000000")
    assert any(m.startswith("Processing ") and "sub-exposures" in m for m in messages)


def test_per_cell_timing_in_metadata(exposure):
    task = make_task(AddAmountMapper, "average", scheduler="threads", **OVERLAPPING)
    task.run(exposure)
    n = len(task.boxes0)
    assert task.metadata["numCells"] == n
    walls = task.metadata.getArray("cellWallTime")
    assert len(walls) == n and all(t >= 0 for t in walls)
    assert len(task.metadata.getArray("cellCpuTime")) == n
    workers = task.metadata.getArray("cellWorker")
    assert len(workers) == n
    assert all(w.startswith(f"{os.getpid()}:") for w in workers), "threads: this process's id, then the thread"
    assert task.metadata["scheduler"].startswith("threads")
    full = task.getFullMetadata()
    assert "ip_diffim_imageMapReduce" in full
    assert full["ip_diffim_imageMapReduce"]["runEndCpuTime"] >= full["ip_diffim_imageMapReduce"]["runStartCpuTime"]


def test_task_pickles_and_runs_after(exposure):
    task = make_task(AddAmountMapper, "average", **OVERLAPPING)
    expected = task.run(exposure).exposure
    clone = pickle.loads(pickle.dumps(task))
    assert clone.getFullName() == task.getFullName()
    assert clone.mapper.getFullName() == "ip_diffim_imageMapReduce.mapper"
    out = clone.run(exposure).exposure
    np.testing.assert_array_equal(out.image.array, expected.image.array)


def test_abstract_mapper_is_refused():
    with pytest.raises(TypeError, match="retarget"):
        imr.ImageMapReduceTask()


def test_custom_reducer_run_is_honoured(exposure):
    class DoublingReducer(imr.ImageReducer):
        def run(self, mapperResults, exposure, **kwargs):
            out = super().run(mapperResults, exposure, **kwargs)
            out.exposure.image.array *= 2
            return out

    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(AddAmountMapper)
    config.reducer.retarget(DoublingReducer)
    config.scaleByFwhm = False
    out = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    np.testing.assert_allclose(out.image.array, 2 * (exposure.image.array + 3), rtol=1e-6)


def test_lsst_default_config_on_128_square():
    """LSST's defaults on a 128x128 image with DoubleGaussianPsf(11, 11, 2.0, 3.7)."""
    exposure = make_exposure(128, 128, seed=3)
    task = make_task(AddAmountMapper, "average")
    out = task.run(exposure).exposure
    fwhm = exposure.getPsf().computeShape(exposure.getPsf().getAveragePosition()).getDeterminantRadius() * 2.3548
    size = int(np.rint(10 * fwhm))
    assert all(b.getWidth() <= size and b.getHeight() <= size for b in task.boxes0)
    assert len(task.boxes0) == (128 // size + 1) ** 2
    assert_same_as_reference(out, exposure, task, AddAmountMapper, "average")
    np.testing.assert_allclose(out.image.array, exposure.image.array + 3, rtol=1e-6)
