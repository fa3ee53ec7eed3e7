"""A real cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1, started here.

Covers running by address, surviving a killed worker, the import check, masked failures and
the large-graph guard (in-memory pixels are scattered, never put in the graph).
"""

# ruff: noqa: D103
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cell_mappers import FailingMapper, SlowAddMapper
from conftest import make_exposure

import imagemapreduce as imr

TESTS = Path(__file__).resolve().parent


def _dask_command() -> list[str]:
    exe = Path(sys.executable).with_name("dask")
    return [str(exe)] if exe.exists() else [shutil.which("dask") or "dask"]


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """Start a scheduler and two single-threaded workers from the command line; stop them after."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    logs = [open(folder / f"log{i}.txt", "w") for i in range(3)]  # noqa: SIM115 - closed below
    dask = _dask_command()
    procs = [
        subprocess.Popen(
            [
                *dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )  # fmt: skip
    ]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    for i in (1, 2):
        procs.append(
            subprocess.Popen(
                [
                    *dask,
                    "worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ],
                stdout=logs[i],
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )  # fmt: skip
        )
    client = Client(scheduler_file=str(scheduler_file), set_as_default=False, timeout=30)
    try:
        client.wait_for_workers(2, timeout=60)
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        yield client
    finally:
        try:
            client.shutdown()  # scheduler and workers close at once, rather than each on its signal
        except Exception:  # noqa: BLE001 - the signals below still end them
            client.close()
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                # A nanny restarted after the kill test can take many seconds to close: end its
                # whole process group (the nanny and its worker), which the tests started alone.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in logs:
            log.close()


def make_config(mapper, **fields):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    config.cellSizeX = config.cellSizeY = 40
    config.gridStepX = config.gridStepY = 30
    config.borderSizeX = config.borderSizeY = 5
    config.stitchRegionSize = 64
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def reference(exposure, mapper, **kwargs):
    config = make_config(mapper, scheduler="synchronous")
    return imr.ImageMapReduceTask(config=config).run(exposure, **kwargs).exposure


def assert_bitwise(out, expected):
    for plane in ("image", "mask", "variance"):
        assert getattr(out, plane).array.tobytes() == getattr(expected, plane).array.tobytes()


def test_run_by_scheduler_address(cli_cluster):
    exposure = make_exposure(230, 170, seed=31)
    config = make_config(SlowAddMapper, scheduler=cli_cluster.scheduler.address)
    task = imr.ImageMapReduceTask(config=config)
    out = task.run(exposure).exposure
    assert_bitwise(out, reference(exposure, SlowAddMapper))
    assert task.metadata["scheduler"] == f"distributed ({cli_cluster.scheduler.address})"
    workers = set(task.metadata.getArray("cellWorker"))
    assert workers == set(cli_cluster.scheduler_info()["workers"]), "each cell names the worker address that ran it"


def test_large_in_memory_image_never_enters_the_graph(cli_cluster):
    """45 MB of planes: in the graph, distributed would warn of a large graph (an error under pytest)."""
    exposure = make_exposure(2200, 1700, seed=32)
    config = make_config(SlowAddMapper, cellSizeX=400, cellSizeY=400, gridStepX=400, gridStepY=400,
                         stitchRegionSize=512)  # fmt: skip
    out = imr.ImageMapReduceTask(config=config, scheduler=cli_cluster).run(exposure).exposure
    np.testing.assert_array_equal(out.image.array, exposure.image.array + np.float32(1))


def test_killed_worker_run_still_finishes_bitwise(cli_cluster):
    exposure = make_exposure(300, 240, seed=33)
    expected = reference(exposure, SlowAddMapper)  # the sleep changes no pixel: no need to wait here
    pids = cli_cluster.run(os.getpid)
    task = imr.ImageMapReduceTask(config=make_config(SlowAddMapper), scheduler=cli_cluster)
    result: dict = {}

    def target():
        try:
            result["out"] = task.run(exposure, sleep=0.05).exposure
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        processing = cli_cluster.processing()
        if sum(len(v) for v in processing.values()) > 0:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # let some cells finish on both workers
    victim = next(iter(pids.values()))
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=180)
    assert not thread.is_alive(), "the run did not finish after a worker was killed"
    assert "error" not in result, result.get("error")
    assert_bitwise(result["out"], expected)
    cli_cluster.wait_for_workers(2, timeout=60)  # the nanny restarts the worker for later tests


def test_worker_that_cannot_import_the_mapper_gets_a_clear_error(cli_cluster, tmp_path, monkeypatch):
    module = tmp_path / "client_only_mapper.py"
    module.write_text(
        "import imagemapreduce as imr\n"
        "class ClientOnlyMapper(imr.ImageMapper):\n"
        "    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):\n"
        "        return imr.Struct(subExposure=subExposure)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from client_only_mapper import ClientOnlyMapper

    task = imr.ImageMapReduceTask(config=make_config(ClientOnlyMapper), scheduler=cli_cluster)
    with pytest.raises(ImportError, match=r"cannot import module 'client_only_mapper'.*client.upload_file"):
        task.run(make_exposure(100, 80))


def test_masked_failures_on_the_cluster(cli_cluster):
    exposure = make_exposure(200, 150, seed=34)
    config = make_config(FailingMapper, maskFailures=True, numRetries=1)
    task = imr.ImageMapReduceTask(config=config, scheduler=cli_cluster)
    result = task.run(exposure, failAt=(100, 75))
    failed = [b for b in task.boxes0 if b.contains(imr.Point2I(100, 75))]
    assert [f.bbox for f in result.failures] == failed
    assert all("ZeroDivisionError: boom in this cell" in f.error for f in result.failures)
    assert task.metadata["numFailedCells"] == len(failed)
    assert np.isnan(result.exposure.image.array[75, 100])
    bad = result.exposure.mask.getPlaneBitMask("INVALID_MAPREDUCE")
    assert result.exposure.mask.array[75, 100] & bad


def test_progress_bar_on_the_cluster(cli_cluster, capsys):
    config = make_config(SlowAddMapper, progressBar=True)
    task = imr.ImageMapReduceTask(config=config, scheduler=cli_cluster)
    task.run(make_exposure(150, 120))
    err = capsys.readouterr().err
    assert f"{len(task.boxes0)}/{len(task.boxes0)} cells" in err, "the bar counts cells, to the end"
