"""Bitwise-identical output whatever the scheduler, worker count and stitching region size."""

# ruff: noqa: D103
from __future__ import annotations

import math
import os

import dask
import numpy as np
import pytest
from cell_mappers import CentreValueMapper, EchoMapper
from conftest import make_exposure
from lsst_reference import reference_map, reference_reduce

import imagemapreduce as imr
from imagemapreduce.engine import choose_scheduler

GRID = dict(scaleByFwhm=False, cellSizeX=24, cellSizeY=20, gridStepX=15, gridStepY=13,
            borderSizeX=5, borderSizeY=4, adjustGridOption="none")  # fmt: skip


def run_task(exposure, operation, scheduler=None, num_workers=None, region=1024, client=None):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(CentreValueMapper)
    config.reducer.reduceOperation = operation
    config.scheduler = scheduler
    config.numWorkers = num_workers
    config.stitchRegionSize = region
    for name, value in GRID.items():
        setattr(config, name, value)
    task = imr.ImageMapReduceTask(config=config, scheduler=client)
    return task, task.run(exposure, offset=1.25).exposure


@pytest.fixture(scope="module")
def big_exposure():
    return make_exposure(203, 157, xy0=(-31, 12), seed=7)


@pytest.fixture(scope="module")
def references(big_exposure):
    """The LSST serial loop's answer for each operation."""
    out = {}
    for operation in ("copy", "sum", "average"):
        task, _ = run_task(big_exposure, operation, "synchronous")
        results = reference_map(big_exposure, task.boxes0, task.boxes1, CentreValueMapper(), offset=1.25)
        out[operation] = reference_reduce(results, big_exposure, operation)[:3]
    return out


def assert_bitwise(out, reference):
    image, mask, variance = reference
    assert out.image.array.tobytes() == image.tobytes()
    assert out.mask.array.tobytes() == mask.tobytes()
    assert out.variance.array.tobytes() == variance.tobytes()


@pytest.mark.parametrize("operation", ["copy", "sum", "average"])
@pytest.mark.parametrize(
    "scheduler, workers, region",
    [
        ("synchronous", None, 1024),
        ("synchronous", None, 17),
        ("threads", 1, 64),
        ("threads", 2, 33),
        ("threads", 4, 1024),
        ("processes", 2, 50),
    ],
)
def test_local_schedulers_bitwise_identical(big_exposure, references, operation, scheduler, workers, region):
    _, out = run_task(big_exposure, operation, scheduler, workers, region)
    assert_bitwise(out, references[operation])


@pytest.mark.parametrize("operation", ["copy", "sum", "average"])
def test_local_cluster_bitwise_identical(big_exposure, references, local_cluster, operation):
    task, out = run_task(big_exposure, operation, region=64, client=local_cluster)
    assert_bitwise(out, references[operation])
    assert task.metadata["scheduler"].startswith("distributed (tcp://127.0.0.1:")
    workers = set(task.metadata.getArray("cellWorker"))
    assert workers == set(local_cluster.scheduler_info()["workers"]), "both workers took cells, named by address"


def test_active_client_is_used_by_default(big_exposure, references, local_cluster):
    with local_cluster.as_current():
        task, out = run_task(big_exposure, "average")
    assert task.metadata["scheduler"].startswith("distributed")
    assert_bitwise(out, references["average"])


def test_dask_config_scheduler_is_respected(big_exposure, references):
    with dask.config.set(scheduler="synchronous"):
        task, out = run_task(big_exposure, "average")
    assert task.metadata["scheduler"] == "synchronous"
    assert_bitwise(out, references["average"])
    task, _ = run_task(big_exposure, "average")
    assert task.metadata["scheduler"].startswith("threads")


def test_reduce_none_same_results_on_every_scheduler(big_exposure, local_cluster):
    def sums(scheduler=None, client=None):
        config = imr.ImageMapReduceConfig()
        config.mapper.retarget(EchoMapper)
        config.reducer.reduceOperation = "none"
        config.scheduler = scheduler
        for name, value in GRID.items():
            setattr(config, name, value)
        results = imr.ImageMapReduceTask(config=config, scheduler=client).run(big_exposure).result
        return [(r.bbox, r.sum) for r in results]

    expected = sums("synchronous")
    assert sums("threads") == expected
    assert sums("processes") == expected
    assert sums(client=local_cluster) == expected


@pytest.mark.parametrize(
    "scheduler, error, match",
    [
        ("bogus", ValueError, "unknown scheduler 'bogus'"),
        ("distributed", ValueError, "needs an active distributed.Client"),
        (42, TypeError, "scheduler must be"),
    ],
)
def test_bad_scheduler_arguments(scheduler, error, match):
    with pytest.raises(error, match=match):
        choose_scheduler(scheduler)


def test_bad_worker_count():
    with pytest.raises(ValueError, match="num_workers must be a positive integer"):
        choose_scheduler("threads", 0)


def test_unreachable_address_is_a_clear_error():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"cannot reach a Dask scheduler at 'tcp://127.0.0.1:{port}'"):
        choose_scheduler(f"tcp://127.0.0.1:{port}", timeout=1)


def test_scheduler_address_in_config(big_exposure, references, local_cluster):
    task, out = run_task(big_exposure, "sum", scheduler=local_cluster.scheduler.address)
    assert_bitwise(out, references["sum"])
    assert np.isfinite(out.image.array).any()


# -- the processes scheduler keeps its worker pool -----------------------------------------------
def pid_and_sum(cell):
    """The worker process's id and the cell's exactly rounded sum (module level: workers import it)."""
    return os.getpid(), math.fsum(cell.ravel().tolist())


def fail_on_wide(cell):
    """Raise on every cell wider than 5 pixels."""
    if cell.shape[1] > 5:
        raise RuntimeError("too wide")
    return os.getpid(), 0.0


def run_pids(image, func=pid_and_sum):
    return imr.map_reduce(image, func, cell_size=8, reduce="none", scheduler="processes", num_workers=2)


@pytest.fixture
def small_image():
    return np.random.default_rng(3).standard_normal((32, 40)).astype(np.float32)


def test_processes_scheduler_reuses_its_worker_processes(small_image):
    first, second = run_pids(small_image), run_pids(small_image)
    pids_first, pids_second = {pid for pid, _ in first}, {pid for pid, _ in second}
    assert os.getpid() not in pids_first, "cells ran in worker processes"
    assert pids_second <= pids_first, "the second run used the first run's workers"
    expected = [math.fsum(small_image[y : y + 8, x : x + 8].ravel().tolist())
                for y in range(0, 32, 8) for x in range(0, 40, 8)]  # fmt: skip
    assert sorted(s for _, s in first) == sorted(expected)
    assert [s for _, s in second] == [s for _, s in first]


def test_processes_scheduler_recovers_after_a_failed_run(small_image):
    before = {pid for pid, _ in run_pids(small_image)}
    with pytest.raises(RuntimeError, match="too wide"):
        run_pids(small_image, fail_on_wide)
    after = run_pids(small_image)
    # The failed run ended its workers (a stuck cell must not outlive it); the next run has new ones.
    assert not before & {pid for pid, _ in after}
    assert [s for _, s in after] == [s for _, s in run_pids(small_image)]


def test_processes_scheduler_replaces_a_pool_whose_worker_died(small_image):
    import signal
    import time

    pids = {pid for pid, _ in run_pids(small_image)}
    os.kill(next(iter(pids)), signal.SIGKILL)
    time.sleep(1.0)  # the pool notices the death and marks itself broken
    after = run_pids(small_image)
    assert len(after) == 20
    assert not pids & {pid for pid, _ in after}
