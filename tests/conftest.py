"""Shared fixtures: synthetic exposures and a real local Dask cluster on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest

import imagemapreduce as imr


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


#: The files that take longest, started first: with the files shared among worker processes
#: (pytest-xdist, whole files per worker), a long file collected last would run on alone at the end.
LONGEST_FILES = (
    "test_s3.py",
    "test_docs.py",
    "test_cli.py",
    "test_adversarial_faults.py",
    "test_cluster.py",
    "test_adversarial_stores.py",
    "test_zarr.py",
    "test_schedulers.py",
)


def _longest_first(item) -> int:
    name = item.path.name
    return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_longest_first)  # stable: each file's tests keep their order
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def make_exposure(width=96, height=80, xy0=(0, 0), seed=0, dtype=np.float32, psf=True):
    """A random exposure: noise image, positive variance, a few mask bits, a DoubleGaussianPsf."""
    rng = np.random.default_rng(seed)
    cls = imr.ExposureF if np.dtype(dtype) == np.float32 else imr.ExposureD
    exp = cls(imr.Box2I(imr.Point2I(*xy0), imr.Extent2I(width, height)))
    exp.image.array[...] = rng.normal(10.0, 3.0, size=(height, width))
    exp.variance.array[...] = rng.uniform(0.5, 2.0, size=(height, width))
    exp.mask.array[...] = np.where(rng.uniform(size=(height, width)) < 0.05, exp.mask.getPlaneBitMask("SAT"), 0)
    if psf:
        exp.setPsf(imr.DoubleGaussianPsf(11, 11, 2.0, 3.7))
    return exp


@pytest.fixture
def exposure():
    return make_exposure(xy0=(17, -5))


def cluster_client(n_workers, threads_per_worker):
    """Yield a client of a new LocalCluster of worker processes on 127.0.0.1; close both afterwards."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )  # fmt: skip
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def local_cluster():
    """A LocalCluster of two worker processes on 127.0.0.1, shut down after the session."""
    yield from cluster_client(2, 1)
