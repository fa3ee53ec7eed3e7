"""Larger than memory: lazy zarr input, output written region by region, resumption after a kill."""

# ruff: noqa: D103
from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from cell_mappers import CentreValueMapper, SlowAddMapper
from conftest import make_exposure

import imagemapreduce as imr
from imagemapreduce.engine import ExposurePlan
from imagemapreduce.io.zarr_store import IncompleteStoreError, open_zarr_exposure, write_zarr_exposure

TESTS = Path(__file__).resolve().parent


def config_for(mapper, scheduler="threads", region=48, **extra):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    config.cellSizeX = config.cellSizeY = 30
    config.gridStepX = config.gridStepY = 20
    config.borderSizeX = config.borderSizeY = 6
    config.stitchRegionSize = region
    config.scheduler = scheduler
    for name, value in extra.items():
        setattr(config, name, value)
    return config


def assert_same(lazy_exposure, exposure):
    for plane in ("image", "mask", "variance"):
        assert np.asarray(getattr(lazy_exposure, plane).array).tobytes() == getattr(exposure, plane).array.tobytes()


@pytest.fixture
def stored(tmp_path):
    exposure = make_exposure(170, 130, xy0=(11, -4), seed=21)
    exposure.mask.addMaskPlane("CUSTOM")
    path = write_zarr_exposure(exposure, tmp_path / "input.zarr", chunks=40)
    return exposure, path


def test_zarr_round_trip_is_lazy(stored):
    exposure, path = stored
    lazy = open_zarr_exposure(path)
    assert all(isinstance(getattr(lazy, p).array, da.Array) for p in ("image", "mask", "variance"))
    assert lazy.getXY0() == exposure.getXY0()
    assert lazy.mask.getMaskPlaneDict() == exposure.mask.getMaskPlaneDict()
    assert lazy.getPsf() == exposure.getPsf()
    assert_same(lazy, exposure)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads", "processes"])
@pytest.mark.parametrize("operation", ["copy", "average"])
def test_lazy_input_to_zarr_output_equals_in_memory_run(stored, tmp_path, scheduler, operation):
    exposure, path = stored
    config = config_for(CentreValueMapper, scheduler)
    config.reducer.reduceOperation = operation
    expected = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    result = imr.ImageMapReduceTask(config=config).runToZarr(open_zarr_exposure(path), tmp_path / "out.zarr")
    assert_same(result.exposure, expected)
    assert result.exposure.getXY0() == exposure.getXY0()
    assert result.exposure.mask.getMaskPlaneDict() == expected.mask.getMaskPlaneDict()
    if operation == "average":
        assert result.exposure.getPsf() == expected.getPsf()
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert group.attrs["complete"] is True
    assert np.all(group["regions_done"][...] == 1)


def test_lazy_input_in_memory_output_matches(stored):
    exposure, path = stored
    config = config_for(CentreValueMapper, "threads")
    expected = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    out = imr.ImageMapReduceTask(config=config).run(open_zarr_exposure(path)).exposure
    assert isinstance(out.image.array, np.ndarray)
    assert_same(out, expected)


def _arrays_pickled_with(obj):
    """The numpy arrays that pickling ``obj`` writes out (what would travel to a worker)."""
    found = []

    class Finder(pickle.Pickler):
        def reducer_override(self, value):
            if isinstance(value, np.ndarray):
                found.append(value)
            return NotImplemented

    Finder(io.BytesIO()).dump(obj)
    return found


def test_graph_of_a_lazy_exposure_holds_no_pixels(tmp_path):
    exposure = make_exposure(1500, 1200, seed=3)  # 21 MB of planes
    lazy = open_zarr_exposure(write_zarr_exposure(exposure, tmp_path / "big.zarr", chunks=256))
    task = imr.ImageMapReduceTask(config=config_for(CentreValueMapper))
    grid = task._currentGrid(lazy)
    plan = ExposurePlan(mapper=task.mapper, exposure=lazy, grid=grid, kwargs={}, operation="average")
    graph = plan.batch_graph("cells", [np.array([index]) for index in range(len(grid))])
    cells = {k: v for k, v in graph.items() if isinstance(k, tuple) and k[0] == "cells"}
    assert len(cells) == len(grid)
    # Every array that would travel with the tasks, wherever it sits: only the batches' int64
    # boxes and indices, never a plane of the exposure's pixel or mask types.
    pixel_types = {getattr(exposure, p).array.dtype for p in ("image", "mask", "variance")}
    assert np.dtype(np.int64) not in pixel_types
    travelling = _arrays_pickled_with(cells)
    assert travelling and not {a.dtype for a in travelling} & pixel_types
    size = len(pickle.dumps(cells))
    planes = sum(getattr(exposure, p).array.nbytes for p in ("image", "mask", "variance"))
    assert size / len(cells) < 1000, f"{size / len(cells):.0f} bytes of graph per cell"
    assert size < planes / 5


def test_existing_output_is_refused_then_overwritten(stored, tmp_path):
    exposure, _ = stored
    out = tmp_path / "out.zarr"
    task = imr.ImageMapReduceTask(config=config_for(CentreValueMapper))
    task.runToZarr(exposure, out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        task.runToZarr(exposure, out)
    assert sorted(p.name for p in out.rglob("*")) == before
    assert task.runToZarr(exposure, out, overwrite=True).regionsWritten > 0
    with pytest.raises(ValueError, match="not both"):
        task.runToZarr(exposure, out, overwrite=True, resume=True)


def test_bad_inputs_fail_before_any_work(stored, tmp_path):
    exposure, _ = stored
    out = tmp_path / "out.zarr"
    config = config_for(CentreValueMapper)
    config.reducer.reduceOperation = "none"
    with pytest.raises(ValueError, match="reduceOperation copy, sum or average"):
        imr.ImageMapReduceTask(config=config).runToZarr(exposure, out)
    other = make_exposure(50, 40)
    with pytest.raises(ValueError, match="companion image template="):
        imr.ImageMapReduceTask(config=config_for(CentreValueMapper)).runToZarr(exposure, out, template=other)
    assert not out.exists(), "nothing is written when the input is refused"
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        imr.ImageMapReduceTask(config=config_for(CentreValueMapper)).runToZarr(exposure, out, resume=True)


def test_resume_refuses_a_different_run_or_a_wrong_store(stored, tmp_path):
    exposure, _ = stored
    out = tmp_path / "out.zarr"
    imr.ImageMapReduceTask(config=config_for(CentreValueMapper)).runToZarr(exposure, out)
    changed = config_for(CentreValueMapper, cellSizeX=31)
    with pytest.raises(ValueError, match="written by a different job; these differ: the grid of cells"):
        imr.ImageMapReduceTask(config=changed).runToZarr(exposure, out, resume=True)
    wrong = make_exposure(170, 130, xy0=(11, -4), dtype=np.float64)
    with pytest.raises(ValueError, match="its image plane is .* float32, but this run writes .* float64"):
        imr.ImageMapReduceTask(config=config_for(CentreValueMapper)).runToZarr(wrong, out, resume=True)


def test_incomplete_store_is_not_opened_by_accident(tmp_path):
    from imagemapreduce.io.zarr_regions import ZarrRegionWriter

    writer = ZarrRegionWriter(tmp_path / "x.zarr", imr.Box2I(imr.Point2I(0, 0), imr.Extent2I(10, 10)), 5)
    writer.create(np.float32, {}, "abc", overwrite=False)
    with pytest.raises(IncompleteStoreError, match="resume=True"):
        open_zarr_exposure(tmp_path / "x.zarr")
    assert open_zarr_exposure(tmp_path / "x.zarr", allow_incomplete=True).getWidth() == 10


def test_open_zarr_rejects_inconsistent_planes(tmp_path):
    group = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w")
    group.create_array("image", shape=(4, 5), dtype=np.float32)
    group.create_array("mask", shape=(4, 6), dtype=np.int32)
    group.create_array("variance", shape=(4, 5), dtype=np.float32)
    group.attrs["complete"] = True
    with pytest.raises(ValueError, match="must be 2-d and of one shape"):
        open_zarr_exposure(tmp_path / "bad.zarr")


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import imagemapreduce as imr
    from imagemapreduce.io.zarr_store import open_zarr_exposure
    from test_zarr import config_for
    from cell_mappers import SlowAddMapper
    config = config_for(SlowAddMapper, "threads", region=40, numWorkers=1)
    imr.ImageMapReduceTask(config=config).runToZarr(open_zarr_exposure({src!r}), {out!r}, sleep=0.05)
    """
)


@pytest.mark.slow  # the sigkill-and-resume guarantee is also tested (faster) in test_adversarial_stores; --runslow
def test_resume_after_the_process_is_killed(stored, tmp_path):
    exposure, path = stored
    out = tmp_path / "out.zarr"
    script = RESUME_SCRIPT.format(tests=str(TESTS), src=str(path), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "regions_done").exists():
                flags = zarr.open_group(str(out), mode="r")["regions_done"][...]
                done = int(flags.sum())
                if done >= 2:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    total = zarr.open_group(str(out), mode="r")["regions_done"].size
    done = int(zarr.open_group(str(out), mode="r")["regions_done"][...].sum())
    assert 2 <= done < total
    with pytest.raises(IncompleteStoreError):
        open_zarr_exposure(out)
    config = config_for(SlowAddMapper, "threads", region=40)
    resumed = imr.ImageMapReduceTask(config=config).runToZarr(open_zarr_exposure(path), out, resume=True, sleep=0.05)
    assert resumed.regionsWritten == total - done
    expected = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    assert_same(resumed.exposure, expected)
    assert resumed.exposure.getPsf() == expected.getPsf()  # built from every region's record
    assert imr.io.verify_zarr_store(out).ok
