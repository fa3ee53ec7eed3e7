"""Failures in cells: named by default, masked and reported on request, retried when flaky; companions."""

# ruff: noqa: D103
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from cell_mappers import EchoMapper, FailingMapper, FlakyMapper, SlowAddMapper, TemplateDifferenceMapper
from conftest import make_exposure

import imagemapreduce as imr


def make_task(mapper, operation="average", scheduler="synchronous", **fields):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    config.reducer.reduceOperation = operation
    config.scheduler = scheduler
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    config.cellSizeX = config.cellSizeY = 20
    config.gridStepX = config.gridStepY = 15
    config.borderSizeX = config.borderSizeY = 3
    config.stitchRegionSize = 32
    for name, value in fields.items():
        setattr(config, name, value)
    return imr.ImageMapReduceTask(config=config)


@pytest.mark.parametrize(
    "operation", ["copy", "sum", "average", "cosine-weighted average"], ids=["copy", "sum", "average", "cosine"]
)
@pytest.mark.parametrize("scheduler", ["synchronous", "threads", "processes"])
def test_masked_failure_leaves_nan_only_where_no_other_cell_covers(operation, scheduler):
    exposure = make_exposure(90, 70, xy0=(4, 6), seed=41)
    point = imr.Point2I(50, 40)
    weighted = operation.startswith("cosine")
    operation = "average" if weighted else operation
    task = make_task(FailingMapper, operation, scheduler, maskFailures=True)
    if weighted:
        task.reducer.config.weighting = "cosine"
    result = task.run(exposure, failAt=(point.x, point.y))
    failed = [b for b in task.boxes0 if b.contains(point)]
    assert failed and [f.bbox for f in result.failures] == failed
    assert all(f.error == "ZeroDivisionError: boom in this cell" for f in result.failures)
    assert task.metadata["numFailedCells"] == len(failed)
    assert task.metadata.getArray("failedCells") == [str(f) for f in result.failures]
    healthy = [b for b in task.boxes0 if b not in failed]
    count = np.zeros(exposure.image.array.shape)
    for box in healthy:
        count[box.slices(exposure.getXY0())] += 1
    covered = count > 0
    lost = np.zeros_like(covered)
    for box in failed:
        lost[box.slices(exposure.getXY0())] = True
    lost &= ~covered
    assert lost.sum() > 0
    out = result.exposure
    bad = out.mask.getPlaneBitMask("INVALID_MAPREDUCE")
    assert np.all(np.isnan(out.image.array[lost])) and np.all(out.mask.array[lost] & bad)
    expected = exposure.image.array * (count if operation == "sum" else 1)
    np.testing.assert_allclose(out.image.array[covered], expected[covered], rtol=1e-5)
    if operation != "copy":  # copy leaves other uncovered pixels NaN too; sum and average do not here
        assert np.all(np.isfinite(out.image.array[covered]))


def test_failure_is_fatal_by_default_and_names_the_cell():
    task = make_task(FailingMapper, scheduler="threads")
    with pytest.raises(imr.CellFailure, match=r"cell \d+ \(box \(minimum=\(\d+, \d+\).*boom in this cell"):
        task.run(make_exposure(60, 50), failAt=(30, 25))


def test_masked_failures_with_reduce_none_give_none_results():
    exposure = make_exposure(60, 50, seed=42)
    task = make_task(FailingMapper, "none", maskFailures=True)
    result = task.run(exposure, failAt=(30, 25))
    failed = {f.index for f in result.failures}
    assert failed and all((r is None) == (i in failed) for i, r in enumerate(result.result))


def test_retries_rescue_flaky_cells(tmp_path):
    exposure = make_exposure(50, 40, seed=43)
    task = make_task(FlakyMapper, "copy", numRetries=2)
    out = task.run(exposure, markers=str(tmp_path / "a"), failures=2).exposure
    np.testing.assert_array_equal(out.image.array, exposure.image.array)
    with pytest.raises(imr.CellFailure, match="flaky failure 1"):
        make_task(FlakyMapper, "copy", numRetries=1).run(exposure, markers=str(tmp_path / "b"), failures=2)


def test_progress_bar_on_local_schedulers(capsys):
    exposure = make_exposure(60, 50)
    task = make_task(SlowAddMapper, scheduler="threads", progressBar=True)
    task.run(exposure)
    err = capsys.readouterr().err
    assert f"{len(task.boxes0)}/{len(task.boxes0)} cells" in err
    make_task(SlowAddMapper, scheduler="threads").run(exposure)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_companion_images_are_cut_per_cell(scheduler):
    exposure = make_exposure(80, 60, xy0=(7, 3), seed=44)
    template = make_exposure(80, 60, xy0=(7, 3), seed=45)
    task = make_task(TemplateDifferenceMapper, "copy", scheduler)
    out = task.run(exposure, template=template).exposure
    np.testing.assert_allclose(out.image.array, exposure.image.array - template.image.array)
    results = make_task(TemplateDifferenceMapper, "none", scheduler).run(exposure, template=template).result
    for res, box1 in zip(results, task.boxes1):
        assert res.templateBBox == box1, "the mapper receives the template cut to its expanded cell"
    whole = make_task(TemplateDifferenceMapper, "none", scheduler, cutCompanions=False)
    assert all(r.templateBBox == exposure.getBBox() for r in whole.run(exposure, template=template).result)


def test_lazy_companion_and_masked_image_companion():
    exposure = make_exposure(64, 48, seed=46)
    template = make_exposure(64, 48, seed=47)
    lazy = imr.ExposureF.from_arrays(
        da.from_array(template.image.array, chunks=20), da.from_array(template.mask.array, chunks=20),
        da.from_array(template.variance.array, chunks=20), psf=template.getPsf(),
    )  # fmt: skip
    out = make_task(TemplateDifferenceMapper, "copy").run(exposure, template=lazy).exposure
    np.testing.assert_allclose(out.image.array, exposure.image.array - template.image.array)
    results = make_task(EchoMapper, "none").run(exposure, other=template.maskedImage).result
    assert all(r.kwargs["other"].getBBox() == r.expandedBBox for r in results)


def test_companion_with_another_box_is_refused_before_work():
    exposure = make_exposure(64, 48)
    with pytest.raises(ValueError, match=r"companion image template= has bbox .* config\.cutCompanions = False"):
        make_task(TemplateDifferenceMapper).run(exposure, template=make_exposure(60, 48))
