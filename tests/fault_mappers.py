"""Mappers and functions that hang or misbehave, for tests/test_adversarial_faults.py.

A module of its own so that worker processes (processes scheduler, a cluster, a CLI run in a
subprocess) can import them by name.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import lsst.pex.config as pexConfig
import numpy as np

import imagemapreduce as imr
from imagemapreduce.engine import scheduling as _scheduling
from imagemapreduce.pipe_base import Struct


class HangConfig(imr.ImageMapperConfig):
    """Where to say that a cell has started, which cells hang, and how."""

    startedDir = pexConfig.Field(dtype=str, default="", doc="folder in which each cell touches a file first")
    hangAt = pexConfig.ListField(dtype=int, default=[], doc="a pixel (x, y): only the cells holding it hang")
    mode = pexConfig.ChoiceField(
        dtype=str, default="sleep", doc="how to hang",
        allowed={"sleep": "sleep forever", "busy": "spin forever in Python", "none": "never hang"},
    )  # fmt: skip
    hangSeconds = pexConfig.Field(dtype=float, default=1e9, doc="how long a hang lasts")


class HangingMapper(imr.ImageMapper):
    """Touch ``startedDir/<pid>-<minX>-<minY>``, then hang (the cells holding ``hangAt``, or all), then add 1."""

    ConfigClass = HangConfig
    _DefaultName = "test_HangingMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        box = subExposure.getBBox()
        if self.config.startedDir:
            Path(self.config.startedDir, f"{os.getpid()}-{box.getMinX()}-{box.getMinY()}").touch()
        hangs = not self.config.hangAt or box.contains(imr.Point2I(*self.config.hangAt))
        if hangs and self.config.mode != "none":
            hang(self.config.mode, self.config.hangSeconds)
        out = subExposure.clone()
        out.image.array += np.float32(1.0)
        return Struct(subExposure=out)


def hang(mode: str, seconds: float) -> None:
    """Sleep, or spin in Python, for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if mode == "sleep":
            time.sleep(min(0.05, seconds))


class SlowThenFastMapper(imr.ImageMapper):
    """Hang on the first call for each cell (counted in marker files under ``markers``), then add 1."""

    _DefaultName = "test_SlowThenFastMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, markers=None, seconds=5.0, **kwargs):
        box = subExposure.getBBox()
        marker = Path(markers, f"{box.getMinX()}_{box.getMinY()}")
        if not marker.exists():
            marker.touch()
            time.sleep(seconds)
        out = subExposure.clone()
        out.image.array += np.float32(1.0)
        return Struct(subExposure=out)


class LockHoldingMapper(imr.ImageMapper):
    """A mapper that keeps a lock: it cannot be pickled for worker processes."""

    _DefaultName = "test_LockHoldingMapper"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        with self.lock:
            return Struct(subExposure=subExposure.clone())


def sleepy(cell, seconds=0.0, hang_on=None, cell_box=None):
    """Return ``cell * 2``; sleep ``seconds`` first on the cell starting at column ``hang_on`` (all if None)."""
    if hang_on is None or cell_box.getMinX() == hang_on:
        time.sleep(seconds)
    return cell * 2.0


def double(cell):
    """Return ``cell * 2``."""
    return cell * 2.0


# -- custom weight functions, each wrong in its own way -------------------------------------------


def weights_wrong_shape(bbox, image, variance):
    """One weight too few along x."""
    return np.ones((image.shape[0], image.shape[1] - 1))


def weights_negative(bbox, image, variance):
    """A negative weight in one corner."""
    weights = np.ones(image.shape)
    weights[0, 0] = -1.0
    return weights


def weights_nan(bbox, image, variance):
    """A NaN weight in one corner."""
    weights = np.ones(image.shape)
    weights[0, 0] = np.nan
    return weights


def weights_inf(bbox, image, variance):
    """An infinite weight in one corner."""
    weights = np.ones(image.shape)
    weights[-1, -1] = np.inf
    return weights


def weights_none(bbox, image, variance):
    """Forgets to return."""


def weights_text(bbox, image, variance):
    """Returns strings."""
    return np.full(image.shape, "1")


def weights_complex(bbox, image, variance):
    """Returns complex weights."""
    return np.ones(image.shape, dtype=complex)


def weights_scalar(bbox, image, variance):
    """Returns one number."""
    return 1.0


def weights_raises(bbox, image, variance):
    """Raises."""
    raise ZeroDivisionError("weight boom")


def weights_zero(bbox, image, variance):
    """All zeros: legal, the pixels get no weight from this cell."""
    return np.zeros(image.shape)


# -- a worker that dies during the pre-flight import check ----------------------------------------

_REAL_IMPORT_CHECK = _scheduling._import_modules
#: Names of the workers that `die_in_check` closes when the check reaches them.
DOOMED: set = set()


async def die_in_check(names, dask_worker=None):
    """Stand-in for the import check run on the scheduler and workers: a doomed worker closes itself mid-call.

    Its connection to the scheduler closes before it answers, exactly as when a worker dies.
    """
    import asyncio

    from distributed import Worker

    if isinstance(dask_worker, Worker) and dask_worker.name in DOOMED:
        dask_worker.loop.add_callback(dask_worker.close)
        await asyncio.sleep(30)  # cancelled by the close
    return _REAL_IMPORT_CHECK(names)
