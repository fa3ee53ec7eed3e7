"""``runToParquet``: the catalog of ``run``, written part by part, resumed at the cost of what is missing."""

# ruff: noqa: D101, D102, D103
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import imagemapreduce as imr
from imagemapreduce.catalog_run import catalog_parts
from imagemapreduce.detect import DetectMapper
from imagemapreduce.io import StoreBusyError, open_catalog, read_catalog
from imagemapreduce.io.zarr_lock import StoreLock
from imagemapreduce.psf import GaussianPsf

CALLS = {"count": 0, "crash_after": None}
_LOCK = threading.Lock()


class CountingDetectMapper(DetectMapper):
    """DetectMapper that counts its calls and can crash the run after a number of them."""

    _DefaultName = "test_CountingDetectMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        with _LOCK:
            CALLS["count"] += 1
            crash = CALLS["crash_after"] is not None and CALLS["count"] > CALLS["crash_after"]
        if crash:
            raise RuntimeError("simulated crash")
        return super().run(subExposure, expandedSubExposure, fullBBox, **kwargs)


@pytest.fixture(scope="module")
def exposure():
    exposure, _ = imr.psfmatch.simulate_exposure(
        384, 320, psf=GaussianPsf(25, 25, 1.5), n_stars=150, seed=5, sky=0.0, flux_range=(400.0, 2e4),
        n_saturated=0, bad_column=False, xy0=(100, 40),
    )  # fmt: skip
    return exposure


def make_task(threshold=5.0, scheduler="threads"):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(CountingDetectMapper)
    config.mapper.sigma = 1.5
    config.mapper.threshold = threshold
    config.reducer.reduceOperation = "catalog"
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = 32
    config.gridStepX = config.gridStepY = 32
    config.borderSizeX = config.borderSizeY = 16
    config.adjustGridOption = "none"
    config.stitchRegionSize = 64
    config.scheduler = scheduler
    config.numWorkers = 2
    return imr.ImageMapReduceTask(config=config)


def _sorted(table):
    table = table.copy()
    table.sort(["peak_y", "peak_x"])
    return table


def assert_same_catalog(got, expected):
    got, expected = _sorted(got), _sorted(expected)
    assert len(got) == len(expected) > 50
    for column in expected.colnames:
        assert np.array_equal(got[column], expected[column], equal_nan=True), column


@pytest.fixture(scope="module")
def reference(exposure):
    return make_task().run(exposure).catalog


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.update(count=0, crash_after=None)


def test_parts_group_cells_by_the_region_their_core_starts_in(exposure):
    task = make_task()
    grid = task._currentGrid(exposure)
    parts = catalog_parts(grid, exposure.getBBox(), 64)
    assert sorted(n for part in parts for n in part) == list(range(len(grid)))
    for part in parts:
        starts = {((grid.cells[n, 0] - 100) // 64, (grid.cells[n, 1] - 40) // 64) for n in part}
        assert len(starts) == 1
    assert len(parts) == 6 * 5


def test_parquet_catalog_is_the_run_catalog(exposure, reference, tmp_path):
    path = tmp_path / "catalog.parquet"
    result = make_task().runToParquet(exposure, str(path))
    assert result.partsWritten == 30 and result.partsReused == 0 and result.rows == len(reference)
    assert_same_catalog(read_catalog(path), reference)
    frame = open_catalog(path).compute()
    assert len(frame) == len(reference) and set(reference.colnames) <= set(frame.columns)
    lazy = result.catalog.compute()
    np.testing.assert_array_equal(np.sort(lazy["x"].to_numpy()), np.sort(np.asarray(reference["x"])))
    manifest = json.loads((path / "_imagemapreduce.json").read_text())
    assert manifest["complete"] is True
    assert manifest["dropped_duplicates"] == reference.meta["dropped_duplicates"] > 0


def test_crash_then_resume_runs_only_what_is_missing(exposure, reference, tmp_path):
    path = tmp_path / "catalog.parquet"
    task = make_task()
    cells = len(task._currentGrid(exposure))
    CALLS["crash_after"] = cells // 2
    with pytest.raises(imr.CellFailure, match="simulated crash"):
        task.runToParquet(exposure, str(path))
    first = CALLS["count"]
    with pytest.raises(ValueError, match="unfinished run"):
        read_catalog(path)
    CALLS.update(count=0, crash_after=None)
    result = make_task().runToParquet(exposure, str(path), resume=True)
    assert result.partsReused > 0 and result.partsWritten < 30
    assert first + CALLS["count"] <= 1.15 * cells, (first, CALLS["count"], cells)
    assert_same_catalog(read_catalog(path), reference)


def test_a_changed_part_is_recomputed(exposure, reference, tmp_path):
    path = tmp_path / "catalog.parquet"
    make_task().runToParquet(exposure, str(path))
    data = bytearray((path / "part-000003.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "part-000003.parquet").write_bytes(bytes(data))
    (path / "part-000007.json").unlink()
    CALLS["count"] = 0
    result = make_task().runToParquet(exposure, str(path), resume=True)
    assert result.partsRepaired == [3, 7] and result.partsWritten == 2
    assert CALLS["count"] <= 8  # the cells of two parts
    assert_same_catalog(read_catalog(path), reference)


def test_resume_refuses_another_job(exposure, tmp_path):
    path = tmp_path / "catalog.parquet"
    make_task().runToParquet(exposure, str(path))
    with pytest.raises(ValueError, match=r"another job \(the task configuration"):
        make_task(threshold=7.0).runToParquet(exposure, str(path), resume=True)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_task().runToParquet(exposure, str(path))
    with pytest.raises(ValueError, match="overwrite=True or resume=True, not both"):
        make_task().runToParquet(exposure, str(path), overwrite=True, resume=True)


def test_overwrite_never_deletes_other_data(exposure, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a catalog written by imagemapreduce"):
        make_task().runToParquet(exposure, str(folder), overwrite=True)
    assert (folder / "mine.txt").read_text() == "keep me"


def test_a_second_writer_is_refused(exposure, tmp_path):
    path = tmp_path / "catalog.parquet"
    make_task().runToParquet(exposure, str(path))
    lock = StoreLock(path)
    lock.acquire()
    try:
        with pytest.raises(StoreBusyError):
            make_task().runToParquet(exposure, str(path), resume=True)
    finally:
        lock.release()


def test_runToParquet_needs_the_catalog_reduce(exposure, tmp_path):
    task = make_task()
    task.config.reducer.reduceOperation = "average"
    with pytest.raises(ValueError, match="reduceOperation = 'catalog'"):
        task.runToParquet(exposure, str(tmp_path / "c.parquet"))
    assert not (tmp_path / "c.parquet").exists()


def test_parquet_catalog_on_a_local_cluster(exposure, reference, tmp_path, local_cluster):
    path = tmp_path / "catalog.parquet"
    task = imr.ImageMapReduceTask(config=make_task().config, scheduler=local_cluster)
    task.config.mapper.retarget(DetectMapper)  # the workers import the package, not this test module
    task = imr.ImageMapReduceTask(config=task.config, scheduler=local_cluster)
    task.runToParquet(exposure, str(path))
    assert_same_catalog(read_catalog(path), reference)
