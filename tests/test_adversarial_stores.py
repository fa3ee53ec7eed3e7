"""Adversarial cases for zarr stores: nothing lost, nothing mixed, no code run from a file.

Each case asserts a clear error (type and the words that name the problem) or a correct result
compared with an in-memory run.
"""

# ruff: noqa: D103
from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from cell_mappers import CentreValueMapper, InterruptibleMapper, SlowAddMapper
from conftest import make_exposure
from test_zarr import config_for as zarr_config_for

import imagemapreduce as imr
from imagemapreduce.io import (
    StoreBusyError,
    StoreOwnershipError,
    ZarrFormatError,
    open_zarr_exposure,
    verify_zarr_store,
    write_zarr_exposure,
)
from imagemapreduce.io.zarr_regions import LOCK_NAME, StoreLock, ZarrRegionWriter
from imagemapreduce.psf._persist import PsfFormatError, psf_from_dict, psf_to_dict

TESTS = Path(__file__).resolve().parent


def config_for(mapper=CentreValueMapper, scheduler="synchronous", region=40, operation="average", **extra):
    """`test_zarr`'s grid (30 px cells on a 20 px step, 6 px borders) with a reduce operation."""
    config = zarr_config_for(mapper, scheduler, region, **extra)
    config.reducer.reduceOperation = operation
    return config


def planes_of(exposure):
    return [np.asarray(getattr(exposure, p).array).tobytes() for p in ("image", "mask", "variance")]


@pytest.fixture
def source(tmp_path):
    exposure = make_exposure(150, 110, xy0=(7, -3), seed=5)
    return exposure, write_zarr_exposure(exposure, tmp_path / "input.zarr", chunks=40)


@pytest.fixture(autouse=True)
def _reset_interruptible():
    InterruptibleMapper.LIMIT.update(calls=None, done=0)
    InterruptibleMapper.CALLS.clear()
    yield
    InterruptibleMapper.LIMIT.update(calls=None, done=0)


def crash_after(calls, task, *args, **kwargs):
    """Run ``task.runToZarr`` until ``calls`` cells have run, then crash it (as a kill would)."""
    InterruptibleMapper.LIMIT.update(calls=calls, done=0)
    with pytest.raises(KeyboardInterrupt):
        task.runToZarr(*args, **kwargs)
    InterruptibleMapper.LIMIT.update(calls=None, done=0)


# -- 1. a store never destroys its own input ---------------------------------------------------------
@pytest.mark.parametrize("spelling", ["same", "symlink", "dotdot", "parent"])
@pytest.mark.parametrize("mode", ["overwrite", "resume"])
def test_output_that_is_the_input_is_refused_and_the_input_survives(source, tmp_path, spelling, mode):
    exposure, path = source
    target = {
        "same": path,
        "dotdot": tmp_path / "sub" / ".." / "input.zarr",
        "parent": tmp_path,
    }.get(spelling)
    if spelling == "symlink":
        target = tmp_path / "link.zarr"
        target.symlink_to(path)
    (tmp_path / "sub").mkdir(exist_ok=True)
    task = imr.ImageMapReduceTask(config=config_for())
    with pytest.raises(ValueError, match="is the zarr store the input is read from"):
        task.runToZarr(open_zarr_exposure(path), target, **{mode: True})
    assert planes_of(open_zarr_exposure(path)) == planes_of(exposure)
    assert verify_zarr_store(path).ok


def test_a_companion_read_from_the_output_store_is_refused(source, tmp_path):
    exposure, path = source
    out = tmp_path / "out.zarr"
    write_zarr_exposure(exposure, out)
    task = imr.ImageMapReduceTask(config=config_for(), scheduler="synchronous")
    with pytest.raises(ValueError, match="is the zarr store the input is read from"):
        task.runToZarr(exposure, out, overwrite=True, template=open_zarr_exposure(out))


def test_overwrite_never_deletes_a_directory_that_is_not_a_store(tmp_path):
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    task = imr.ImageMapReduceTask(config=config_for())
    with pytest.raises(FileExistsError, match="is not a zarr store, so overwrite=True will not delete it"):
        task.runToZarr(make_exposure(60, 50), precious, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_overwrite_never_deletes_a_plain_file(tmp_path):
    file = tmp_path / "out.zarr"
    file.write_text("not a store")
    with pytest.raises(FileExistsError, match="not a zarr store"):
        write_zarr_exposure(make_exposure(20, 20), file, overwrite=True)
    assert file.read_text() == "not a store"


# -- 1. resume accepts only the same job -------------------------------------------------------------
def _cosine_config():
    config = config_for()
    config.reducer.weighting = "cosine"
    return config


def _other_pixels(exposure):
    other = exposure.clone()
    other.image.array[3, 4] += 1
    return other


def _other_psf(exposure):
    other = exposure.clone()
    other.setPsf(imr.GaussianPsf(11, 11, 1.7))
    return other


def _other_mask_planes(exposure):
    other = exposure.clone()
    other.mask.addMaskPlane("EXTRA")
    return other


@pytest.mark.parametrize(
    "change, differs",
    [
        (lambda e, c, k: (_other_pixels(e), c, k), "the input's pixels"),
        (lambda e, c, k: (_other_psf(e), c, k), "the input's pixels, mask planes or PSF"),
        (lambda e, c, k: (_other_mask_planes(e), c, k), "the input's pixels, mask planes or PSF"),
        (lambda e, c, k: (e, c, {"offset": 2.5}), "the arguments passed to run"),
        (lambda e, c, k: (e, c, {"offset": 1.0, "template": _other_pixels(e)}), "the arguments passed to run"),
        (lambda e, c, k: (e, config_for(CentreValueMapper, borderSizeX=7), k), "the grid of cells"),
        (lambda e, c, k: (e, config_for(SlowAddMapper), k), "the mapper class"),
        (lambda e, c, k: (e, _cosine_config(), k), "the task configuration"),
        (lambda e, c, k: (e, config_for(operation="sum"), k), "the task configuration"),
    ],
    ids=["pixels", "psf", "mask-planes", "run-kwarg", "companion", "grid", "mapper", "weighting", "operation"],
)
def test_resume_refuses_another_job_naming_what_differs(tmp_path, change, differs):
    exposure = make_exposure(90, 70, seed=2)
    config, kwargs = config_for(), {"offset": 1.0, "template": exposure.clone()}
    out = tmp_path / "out.zarr"
    imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, **kwargs)
    before = planes_of(open_zarr_exposure(out))
    other, other_config, other_kwargs = change(exposure, config, kwargs)
    with pytest.raises(ValueError, match=f"written by a different job; these differ: .*{differs}"):
        imr.ImageMapReduceTask(config=other_config).runToZarr(other, out, resume=True, **other_kwargs)
    assert planes_of(open_zarr_exposure(out)) == before


def test_resume_with_another_scheduler_is_the_same_job(tmp_path):
    exposure = make_exposure(90, 70, seed=2)
    out = tmp_path / "out.zarr"
    imr.ImageMapReduceTask(config=config_for()).runToZarr(exposure, out, offset=1.0)
    result = imr.ImageMapReduceTask(config=config_for(scheduler="threads", numWorkers=2)).runToZarr(
        exposure, out, resume=True, offset=1.0
    )
    assert result.regionsWritten == 0 and result.regionsReused == 6  # 3 x 2 regions of 40 px


def test_resume_with_another_region_size_says_so(tmp_path):
    exposure = make_exposure(90, 70, seed=2)
    out = tmp_path / "out.zarr"
    imr.ImageMapReduceTask(config=config_for(region=40)).runToZarr(exposure, out)
    with pytest.raises(ValueError, match="written in regions of 40 px, this run uses 32"):
        imr.ImageMapReduceTask(config=config_for(region=32)).runToZarr(exposure, out, resume=True)


def test_resume_of_a_store_that_is_no_run_output_says_so(source):
    exposure, path = source
    with pytest.raises(ValueError, match="not a map-reduce output"):
        imr.ImageMapReduceTask(config=config_for()).runToZarr(exposure, path, resume=True)


def test_a_run_argument_without_identity_is_refused_before_work(tmp_path):
    exposure = make_exposure(60, 50)
    out = tmp_path / "out.zarr"
    with pytest.raises(ValueError, match="run argument 'callback' .* has no deterministic identity"):
        imr.ImageMapReduceTask(config=config_for()).runToZarr(exposure, out, callback=threading.Lock())
    assert not out.exists()


# -- 1. one writer at a time -----------------------------------------------------------------------
def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_second_writer_is_refused_while_the_first_writes(tmp_path):
    exposure = make_exposure(90, 70, seed=3)
    out = tmp_path / "out.zarr"
    config = config_for(SlowAddMapper, scheduler="threads", numWorkers=1)
    first: dict = {}

    def run_first():
        first["result"] = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, sleep=0.03)

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert _wait_for(lambda: (out / "regions_done").exists())
        second = imr.ImageMapReduceTask(config=config_for(SlowAddMapper))
        for mode in ("overwrite", "resume"):
            with pytest.raises(StoreBusyError, match="is being written by pid"):
                second.runToZarr(exposure, out, sleep=0.03, **{mode: True})
        with pytest.raises(StoreBusyError, match="is being written"):
            imr.ImageMapReduceTask(config=config_for()).runToZarr(make_exposure(90, 70), out, overwrite=True)
    finally:
        thread.join(timeout=120)
    expected = imr.ImageMapReduceTask(config=config).run(exposure, sleep=0.0).exposure
    assert planes_of(first["result"].exposure) == planes_of(expected)
    assert verify_zarr_store(out).ok


def test_a_killed_writer_leaves_the_lock_free(tmp_path):
    exposure = make_exposure(90, 70, seed=3)
    out = tmp_path / "out.zarr"
    imr.ImageMapReduceTask(config=config_for()).runToZarr(exposure, out)
    script = f"import fcntl, os, time; fd = os.open({str(out / LOCK_NAME)!r}, os.O_RDWR); "
    script += "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError):
            imr.ImageMapReduceTask(config=config_for()).runToZarr(exposure, out, resume=True)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    result = imr.ImageMapReduceTask(config=config_for()).runToZarr(exposure, out, resume=True)
    assert result.regionsWritten == 0


def test_a_writer_that_lost_the_store_stops_before_writing(tmp_path):
    bbox = imr.Box2I(imr.Point2I(0, 0), imr.Extent2I(10, 10))
    writer = ZarrRegionWriter(tmp_path / "x.zarr", bbox, 5)
    writer.create(np.float32, {}, {}, overwrite=False)
    writer.release()
    zarr.open_group(str(tmp_path / "x.zarr"), mode="r+").attrs["owner"] = "another run"
    with pytest.raises(StoreOwnershipError, match="taken over by another run"):
        writer.write((0, 0), None)
    with pytest.raises(StoreOwnershipError):
        writer.finish(None)
    assert not zarr.open_group(str(tmp_path / "x.zarr"), mode="r")["regions_done"][...].any()


def test_the_lock_is_exclusive_within_one_process(tmp_path):
    (tmp_path / "s").mkdir()
    first, second = StoreLock(tmp_path / "s"), StoreLock(tmp_path / "s")
    first.acquire()
    with pytest.raises(StoreBusyError):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


# -- 1. resume verifies what it reuses -----------------------------------------------------------------
def _finished(tmp_path, operation="average"):
    exposure = make_exposure(90, 70, seed=4)
    out = tmp_path / "out.zarr"
    config = config_for(operation=operation)
    imr.ImageMapReduceTask(config=config).runToZarr(exposure, out)
    expected = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    return exposure, out, config, expected


def _overwrite_pixel(out):
    zarr.open_group(str(out), mode="r+")["image"][45, 50] = -1.0


def _delete_chunk(out):
    chunk = out / "variance" / "c" / "1" / "1"
    assert chunk.exists()
    chunk.unlink()


def _garble_record(out):
    zarr.open_group(str(out), mode="r+")["region_records"][1, 1] = '{"version": 1, "checksum": '


def _drop_record(out):
    zarr.open_group(str(out), mode="r+")["region_records"][1, 1] = ""


@pytest.mark.parametrize("tamper", [_overwrite_pixel, _delete_chunk, _garble_record, _drop_record],
                         ids=["pixel", "deleted-chunk", "garbled-record", "missing-record"])  # fmt: skip
def test_resume_recomputes_a_region_that_changed_since_it_was_written(tmp_path, tamper):
    exposure, out, config, expected = _finished(tmp_path)
    assert verify_zarr_store(out).ok
    tamper(out)
    report = verify_zarr_store(out)
    assert not report.ok and len(report.problems) == 1 and "region (1, 1)" in report.problems[0]
    result = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, resume=True)
    assert result.regionsRepaired == [(1, 1)]
    assert result.regionsWritten == 1
    assert planes_of(result.exposure) == planes_of(expected)
    assert result.exposure.getPsf() == expected.getPsf()
    assert verify_zarr_store(out).ok


def test_verify_lists_regions_never_written(tmp_path):
    exposure = make_exposure(90, 70, seed=4)
    out = tmp_path / "out.zarr"
    crash_after(6, imr.ImageMapReduceTask(config=config_for(InterruptibleMapper)), exposure, out)
    report = verify_zarr_store(out)
    assert not report.complete and not report.ok
    assert any("was never written" in p for p in report.problems)
    assert "INCOMPLETE" in str(report)


def test_verify_a_store_written_whole(source):
    exposure, path = source
    assert verify_zarr_store(path).ok and verify_zarr_store(path).checked == 3
    zarr.open_group(str(path), mode="r+")["mask"][0, 0] = 12345
    report = verify_zarr_store(path)
    assert report.problems == ["plane 'mask' no longer matches the digest recorded when it was written"]


def test_verify_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no zarr store"):
        verify_zarr_store(tmp_path)


def test_verify_on_the_command_line(tmp_path, source, capsys):
    from imagemapreduce.cli import main

    _, path = source
    # Once as the installed command, then in-process (the same code, without a Python start-up).
    run = [sys.executable, "-m", "imagemapreduce", "verify"]
    ok = subprocess.run([*run, str(path)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "OK" in ok.stdout
    zarr.open_group(str(path), mode="r+")["image"][0, 0] = 99.0
    assert main(["verify", str(path)]) == 1
    assert "plane 'image' no longer matches" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "nope.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no zarr store" in err


# -- 1. what the store says about itself survives a resume ---------------------------------------------
@pytest.mark.parametrize("crashes", [1, 2])
def test_psf_failures_and_metadata_survive_interrupted_runs(tmp_path, crashes):
    exposure = make_exposure(130, 100, seed=6)
    out = tmp_path / "out.zarr"
    fail_at = (15, 15)
    config = config_for(InterruptibleMapper, maskFailures=True)
    expected_task = imr.ImageMapReduceTask(config=config)
    expected = expected_task.run(exposure, failAt=fail_at)
    total_cells = expected_task.metadata["numCells"]
    crash_after(8, imr.ImageMapReduceTask(config=config), exposure, out, failAt=fail_at)
    if crashes == 2:  # a second crash, during a resume
        crash_after(10, imr.ImageMapReduceTask(config=config), exposure, out, resume=True, failAt=fail_at)
    task = imr.ImageMapReduceTask(config=config)
    result = task.runToZarr(exposure, out, resume=True, failAt=fail_at)
    assert planes_of(result.exposure) == planes_of(expected.exposure)
    psf = result.exposure.getPsf()
    assert isinstance(psf, imr.CoaddPsf)
    assert psf == expected.exposure.getPsf()
    assert psf.getComponentCount() == total_cells - len(expected.failures)
    assert [str(f) for f in result.failures] == [str(f) for f in expected.failures]
    assert task.metadata["numCells"] == total_cells
    assert task.metadata["numFailedCells"] == len(expected.failures) == 1
    # resuming the finished store changes nothing, its CoaddPsf included
    again = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, resume=True, failAt=fail_at)
    assert again.regionsWritten == 0
    assert again.exposure.getPsf() == expected.exposure.getPsf()
    assert [str(f) for f in again.failures] == [str(f) for f in expected.failures]


def _flagged(out):
    if not (out / "regions_done").exists():
        return 0
    return int(zarr.open_group(str(out), mode="r")["regions_done"][...].sum())


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import imagemapreduce as imr
from conftest import make_exposure
from test_zarr import config_for as zarr_config_for
from test_adversarial_stores import config_for
from cell_mappers import InterruptibleMapper
config = config_for(InterruptibleMapper, "threads", numWorkers=1, maskFailures=True)
imr.ImageMapReduceTask(config=config).runToZarr(make_exposure(130, 100, seed=6), {out!r}, failAt=(15, 15), sleep=0.04)
"""


def test_psf_and_failure_report_survive_a_sigkill(tmp_path):
    out = tmp_path / "out.zarr"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(tests=str(TESTS), out=str(out))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert _wait_for(lambda: _flagged(out) >= 4), "the run did not get going"
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.kill()
    finally:
        proc.wait(timeout=30)
    exposure = make_exposure(130, 100, seed=6)
    config = config_for(InterruptibleMapper, "threads", numWorkers=1, maskFailures=True)
    expected_task = imr.ImageMapReduceTask(config=config)
    expected = expected_task.run(exposure, failAt=(15, 15), sleep=0.0)
    task = imr.ImageMapReduceTask(config=config)
    result = task.runToZarr(exposure, out, resume=True, failAt=(15, 15), sleep=0.04)
    assert 0 < result.regionsReused < 12
    assert planes_of(result.exposure) == planes_of(expected.exposure)
    assert result.exposure.getPsf() == expected.exposure.getPsf()
    assert [str(f) for f in result.failures] == [str(f) for f in expected.failures]
    assert task.metadata["numCells"] == expected_task.metadata["numCells"]
    assert verify_zarr_store(out).ok


def test_a_copy_keeps_the_input_psf_after_resume(tmp_path):
    exposure = make_exposure(90, 70, seed=6)
    out = tmp_path / "out.zarr"
    config = config_for(InterruptibleMapper, operation="copy")
    crash_after(12, imr.ImageMapReduceTask(config=config), exposure, out)
    assert out.exists()
    result = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, resume=True)
    assert result.exposure.getPsf() == exposure.getPsf()


# -- 1. a run that fails before any cell ran leaves no store -------------------------------------------
def test_an_unreachable_scheduler_leaves_no_store(tmp_path, monkeypatch):
    from imagemapreduce.engine import scheduling

    monkeypatch.setattr(scheduling, "CONNECT_TIMEOUT_S", 1.0)  # the same refusal, sooner
    out = tmp_path / "out.zarr"
    task = imr.ImageMapReduceTask(config=config_for(), scheduler="tcp://127.0.0.1:9")
    with pytest.raises((OSError, ValueError, TimeoutError)):
        task.runToZarr(make_exposure(60, 50), out)
    assert not out.exists()


def test_a_mapper_that_fails_everywhere_leaves_no_store(tmp_path):
    out = tmp_path / "out.zarr"
    InterruptibleMapper.LIMIT.update(calls=0, done=0)
    with pytest.raises(KeyboardInterrupt):
        imr.ImageMapReduceTask(config=config_for(InterruptibleMapper)).runToZarr(make_exposure(60, 50), out)
    assert not out.exists()


def test_a_crash_after_some_regions_leaves_a_store_resume_accepts(tmp_path):
    exposure = make_exposure(90, 70, seed=8)
    out = tmp_path / "out.zarr"
    config = config_for(InterruptibleMapper)
    crash_after(6, imr.ImageMapReduceTask(config=config), exposure, out)
    flags = zarr.open_group(str(out), mode="r")["regions_done"][...]
    assert 0 < flags.sum() < flags.size
    result = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, resume=True)
    assert result.regionsWritten == flags.size - flags.sum()
    assert planes_of(result.exposure) == planes_of(imr.ImageMapReduceTask(config=config).run(exposure).exposure)


# -- 2. reading a file never runs code ---------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _evil_store(tmp_path, psf_value):
    path = write_zarr_exposure(make_exposure(30, 20), tmp_path / "evil.zarr")
    zarr.open_group(str(path), mode="r+").attrs["psf"] = psf_value
    return path


def test_a_pickled_psf_in_a_store_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = _evil_store(tmp_path, base64.b64encode(pickle.dumps(_Payload(str(marker)))).decode())
    with pytest.raises(ZarrFormatError, match="pickles are never loaded from files"):
        open_zarr_exposure(path)
    assert not marker.exists()


def test_the_cli_refuses_a_pickled_psf_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = _evil_store(tmp_path, base64.b64encode(pickle.dumps(_Payload(str(marker)))).decode())
    for command in (
        ["grid", str(path)],
        ["run", str(path), str(tmp_path / "o.zarr"), "--mapper", "identity"],
        ["verify", str(path)],
    ):
        proc = subprocess.run([sys.executable, "-m", "imagemapreduce", *command], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert not marker.exists()
        assert "pickles are never loaded" in proc.stderr + proc.stdout
        assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("psf", {"type": "os.system", "command": "touch pwned"}, "unknown PSF type 'os.system'"),
        ("psf", {"type": "GaussianPsf", "width": "21", "height": 21, "sigma": 2.0}, "'width' must be an integer"),
        ("psf", {"type": "GaussianPsf", "width": 21, "height": 21, "sigma": -2.0}, "sigma must be finite and > 0"),
        ("psf", {"type": "GaussianPsf", "width": 21, "height": 21}, "'sigma' must be a finite number"),
        ("psf", 5, "must be a JSON object"),
        ("psf", {"type": "CoaddPsf", "psfs": [], "index": [], "bboxes": [], "weights": []}, "non-empty list"),
        ("psf", {"type": "CoaddPsf", "psfs": [{"type": "GaussianPsf", "width": 5, "height": 5, "sigma": 1.0}],
                 "index": [3], "bboxes": [[0, 0, 4, 4]], "weights": [1.0]}, "refers to a PSF beyond"),
        ("xy0", "0,0", "'xy0' must be two integers"),
        ("xy0", [0.5, 1], "'xy0' must be two integers"),
        ("maskPlanes", {"BAD": 99}, "bits 0-31"),
        ("maskPlanes", {"BAD": 0, "SAT": 0}, "two planes one bit"),
        ("maskPlanes", ["BAD"], "must map plane names to bits"),
    ],
)  # fmt: skip
def test_malformed_attributes_are_clear_format_errors(tmp_path, name, value, message):
    path = write_zarr_exposure(make_exposure(30, 20), tmp_path / "bad.zarr")
    zarr.open_group(str(path), mode="r+").attrs[name] = value
    with pytest.raises(ZarrFormatError, match=message):
        open_zarr_exposure(path)


@pytest.mark.parametrize("flag", [False, "yes", 1, None])
def test_only_a_true_complete_flag_opens_without_allow_incomplete(tmp_path, flag):
    path = write_zarr_exposure(make_exposure(30, 20), tmp_path / "s.zarr")
    zarr.open_group(str(path), mode="r+").attrs["complete"] = flag
    with pytest.raises(imr.io.IncompleteStoreError):
        open_zarr_exposure(path)


def test_a_store_of_another_kind_is_a_clear_error(tmp_path):
    group = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    group.create_array("data", shape=(3, 3), dtype=np.float32)
    group.attrs["complete"] = True
    with pytest.raises(ZarrFormatError, match="lacks the plane"):
        open_zarr_exposure(tmp_path / "other.zarr")


def _box():
    return imr.Box2I(imr.Point2I(0, 0), imr.Point2I(99, 79))


@pytest.mark.parametrize(
    "psf",
    [
        imr.GaussianPsf(21, 21, 2.0),
        imr.DoubleGaussianPsf(15, 15, 1.5, 3.0, 0.2),
        imr.VaryingGaussianPsf(21, 21, [[2.0, 0.1], [0.05, 0.0]], _box()),
        imr.VaryingMoffatPsf(21, 21, [[3.0], [0.2]], _box(), beta=3.0),
        imr.CoaddPsf([(imr.GaussianPsf(9, 9, 1.0), _box(), 1.0), (imr.GaussianPsf(9, 9, 1.4), _box(), 0.5)]),
        imr.WindowedCoaddPsf([(imr.GaussianPsf(9, 9, 1.0), _box(), 1.0)], imr.weights.Weighting("cosine")),
    ],
    ids=lambda p: type(p).__name__,
)
def test_every_known_psf_round_trips_through_a_store_as_data(tmp_path, psf):
    exposure = make_exposure(30, 20)
    exposure.setPsf(psf)
    path = write_zarr_exposure(exposure, tmp_path / "s.zarr")
    stored = zarr.open_group(str(path), mode="r").attrs["psf"]
    assert json.loads(json.dumps(stored)) == psf_to_dict(psf)
    assert open_zarr_exposure(path).getPsf() == psf
    assert psf_from_dict(psf_to_dict(psf)) == psf


class _ThirdPartyPsf(imr.GaussianPsf):
    __slots__ = ()


def test_a_psf_with_no_data_form_is_left_out_and_said_so(tmp_path):
    exposure = make_exposure(30, 20)
    exposure.setPsf(_ThirdPartyPsf(11, 11, 2.0))
    path = write_zarr_exposure(exposure, tmp_path / "s.zarr")
    assert open_zarr_exposure(path).getPsf() is None
    assert "has no data-only form" in zarr.open_group(str(path), mode="r").attrs["psfNote"]
    with pytest.raises(TypeError, match="cannot be stored as data"):
        psf_to_dict(_ThirdPartyPsf(11, 11, 2.0))
    with pytest.raises(PsfFormatError, match="unknown PSF type"):
        psf_from_dict({"type": "_ThirdPartyPsf"})


def test_the_library_never_calls_pickle_load():
    """No module of the package unpickles (a file's contents are never trusted)."""
    package = TESTS.parent / "imagemapreduce"
    offenders = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if any(word in p.read_text() for word in ("pickle.load", "pickle.loads", "cloudpickle.load"))
    ]
    assert offenders == []


def test_removing_the_source_checkout_of_a_store_is_not_needed_to_read_it(tmp_path):
    """A store is self-describing data: it reads in a fresh process that imports nothing of the writer's."""
    exposure = make_exposure(30, 20)
    path = write_zarr_exposure(exposure, tmp_path / "s.zarr")
    moved = tmp_path / "moved.zarr"
    shutil.move(str(path), moved)
    code = (
        f"from imagemapreduce.io import open_zarr_exposure; e = open_zarr_exposure({str(moved)!r}); print(e.getPsf())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert proc.returncode == 0 and "DoubleGaussianPsf" in proc.stdout


# -- 3. mask planes a mapper adds reach the store by name ------------------------------------------
@pytest.mark.parametrize("mapper_name", ["AddPlaneMapper", "LeftRightMapper", "RenumberedMapper"])
def test_mask_planes_added_by_cells_are_stored_by_name_and_survive_resume(tmp_path, mapper_name):
    import test_adversarial_masks

    mapper = getattr(test_adversarial_masks, mapper_name)
    exposure = make_exposure(90, 70, seed=9)
    config = config_for(mapper, region=16, operation="copy")
    expected = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    out = tmp_path / "out.zarr"
    result = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out)
    assert result.exposure.mask.getMaskPlaneDict() == expected.mask.getMaskPlaneDict()
    assert planes_of(result.exposure) == planes_of(expected)
    assert verify_zarr_store(out).ok
    again = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, resume=True)
    assert again.regionsWritten == 0 and planes_of(again.exposure) == planes_of(expected)


def test_an_unnamed_input_bit_stays_unnamed_in_the_store(tmp_path):
    exposure = make_exposure(60, 50, seed=9)
    free = 1 << 20
    exposure.mask.array[5, 5] |= free  # a bit no plane names
    config = config_for(operation="copy")
    result = imr.ImageMapReduceTask(config=config).runToZarr(exposure, tmp_path / "out.zarr")
    planes = result.exposure.mask.getMaskPlaneDict()
    assert 20 not in planes.values()
    assert int(np.asarray(result.exposure.mask.array)[5, 5]) & free
