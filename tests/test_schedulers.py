"""Bitwise-identical output whatever the scheduler, worker count and stitching region size."""

# ruff: noqa: D103
from __future__ import annotations

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
    assert len({w.split(":")[0] for w in workers}) == 2, "both worker processes took cells"


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
