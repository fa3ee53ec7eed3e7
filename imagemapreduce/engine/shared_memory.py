"""Same-host shared memory: a cluster's workers on this machine read the input and write the output in place.

On a cluster, in-memory pixels normally travel over the network twice: scattered to the workers
(every batch's cut, pickled and sent) and gathered back (every region's planes). When the
workers run on this machine (a ``LocalCluster``, or workers started on the same host), that is
two copies through sockets that the machine's memory makes unnecessary. Here the caller puts
each input plane once into a POSIX shared-memory segment (a file under ``/dev/shm`` on Linux),
the tasks carry references (`SharedArrayCut`: a segment name and a box), and each worker copies
the box it needs straight out of the segment. Regions write their planes into an output segment
(`SharedRegionWriter`), or cells that tile the image their cores, and each region (or core) is
copied into the caller's output as its answer arrives (`SharedOutput`). The pixels, and so the
output bits, are the same as over the network.

Rules that keep it safe:

* Used only when every worker proves it sees this process's segments: `probe_workers` writes a
  random token into a new segment and asks each worker to read it back. Workers on other hosts,
  in other containers or under other users fail the probe, and the run uses the network as before.
* Segments are reserved with ``posix_fallocate`` before any pixel is written, so a full
  ``/dev/shm`` (small by default in containers) is a clean fallback, never a crash on first touch.
* The caller creates and unlinks every segment (in ``finally``), and registers it with
  multiprocessing's resource tracker, which unlinks it if the caller is killed. Workers only open
  the file, copy, and close it within one task: they hold no mapping between tasks, so an
  unlinked segment's memory is freed as soon as the run ends.
* Off with ``dask.config.set({"imagemapreduce.shared-memory": False})``.
"""

from __future__ import annotations

import mmap
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from ..geom import Box2I, Point2I
from ..image import Exposure

if TYPE_CHECKING:
    from .scheduling import SchedulerChoice

__all__ = [
    "SHARED_MEMORY_DIR",
    "SharedSegment",
    "SharedArrayRef",
    "SharedArrayCut",
    "SharedRegionWriter",
    "SharedOutput",
    "shared_memory_enabled",
    "probe_workers",
]

#: Where POSIX shared memory lives as files (Linux). Elsewhere the feature is off.
SHARED_MEMORY_DIR = "/dev/shm"
#: The dask config key that turns the feature off.
CONFIG_KEY = "imagemapreduce.shared-memory"
_PREFIX = "imr-"
#: Room left free in the shared-memory file system, beyond what a run asks for.
_HEADROOM = 64 * 2**20


def shared_memory_enabled() -> bool:
    """Whether this machine has POSIX shared memory as files and the dask config does not turn it off."""
    return bool(dask.config.get(CONFIG_KEY, True)) and os.path.isdir(SHARED_MEMORY_DIR)


def _path(name: str) -> str:
    return os.path.join(SHARED_MEMORY_DIR, name)


class SharedSegment:
    """A shared-memory segment created (and later unlinked) by this process.

    Raises `OSError` if ``/dev/shm`` cannot hold ``nbytes`` (with room to spare): the caller
    then keeps to the network.
    """

    def __init__(self, nbytes: int):
        self.nbytes = max(1, int(nbytes))
        free = os.statvfs(SHARED_MEMORY_DIR)
        if free.f_bavail * free.f_frsize < self.nbytes + _HEADROOM:
            raise OSError(f"{SHARED_MEMORY_DIR} has too little free space for {self.nbytes} bytes")
        self.name = f"{_PREFIX}{uuid.uuid4().hex}"
        fd = os.open(_path(self.name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            _track(self.name, register=True)
            try:
                os.posix_fallocate(fd, 0, self.nbytes)
                self._map: mmap.mmap | None = mmap.mmap(fd, self.nbytes)
            except BaseException:
                self._unlink()
                raise
        finally:
            os.close(fd)

    def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable view of the segment's first bytes as an array (C order)."""
        assert self._map is not None, "the segment is closed"
        return np.ndarray(shape, dtype=np.dtype(dtype), buffer=self._map)

    def ref(self, shape: tuple[int, ...], dtype: Any) -> SharedArrayRef:
        """A reference to `array` that travels to the workers."""
        return SharedArrayRef(self.name, tuple(int(n) for n in shape), np.dtype(dtype).str)

    def close(self) -> None:
        """Unlink the segment; its memory goes when the last view of it does."""
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still alive: the mapping goes with it
                pass
            self._map = None
            self._unlink()

    def _unlink(self) -> None:
        try:
            os.unlink(_path(self.name))
        except FileNotFoundError:
            pass
        _track(self.name, register=False)

    def __enter__(self) -> SharedSegment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _track(name: str, *, register: bool) -> None:
    """Tell multiprocessing's resource tracker about a segment, so that it is unlinked if we are killed."""
    try:
        from multiprocessing import resource_tracker
    except ImportError:  # pragma: no cover - a platform without it only loses the clean-up after a kill
        return
    try:
        (resource_tracker.register if register else resource_tracker.unregister)(f"/{name}", "shared_memory")
    except Exception:  # noqa: BLE001 - the tracker is a safety net; the run does not depend on it
        pass


@dataclass(frozen=True)
class SharedArrayRef:
    """Where an array lies in a `SharedSegment`: the segment's name, the shape and the dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @contextmanager
    def open(self, *, writable: bool = False) -> Iterator[np.ndarray]:
        """The array, mapped for the block's duration only (views of it must not outlive the block)."""
        nbytes = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        fd = os.open(_path(self.name), os.O_RDWR if writable else os.O_RDONLY)
        try:
            mapping = mmap.mmap(fd, nbytes, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        try:
            array = np.ndarray(self.shape, dtype=np.dtype(self.dtype), buffer=mapping)
            yield array
            del array
        finally:
            try:
                mapping.close()
            except BufferError:  # a view escaped: the mapping goes with it
                pass


class SharedArrayCut:
    """A box of an array in shared memory, copied out when a cell runs: the shared-memory `ArrayCut`.

    Materialised, it is a read-only array of the box's pixels, which never refers to the segment.
    """

    __slots__ = ("ref", "rows", "cols")

    def __init__(self, ref: SharedArrayRef, rows: slice, cols: slice):
        self.ref, self.rows, self.cols = ref, rows, cols

    def materialize(self) -> np.ndarray:
        """The box's pixels, copied out of the segment, read-only."""
        with self.ref.open() as array:
            pixels = np.array(array[self.rows, self.cols])
        pixels.flags.writeable = False
        return pixels

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (SharedArrayCut, (self.ref, self.rows, self.cols))


@dataclass(frozen=True)
class SharedRegionWriter:
    """A region task's writer (see `imagemapreduce.engine.graph.RegionTask`): planes into shared memory.

    ``planes`` are references to the output's (image, mask, variance) segments, None for a plane
    the output lacks; ``origin`` is the output's ``xy0``.
    """

    planes: tuple[SharedArrayRef | None, SharedArrayRef | None, SharedArrayRef | None]
    origin: tuple[int, int]

    def write(self, index: tuple[int, int], outcome: Any) -> None:
        """Write one region's planes into the output segments (the region's report travels as usual)."""
        rows, cols = outcome.bbox.slices(Point2I(*self.origin))
        for ref, plane in zip(self.planes, outcome.planes, strict=True):
            if ref is not None and plane is not None:
                with ref.open(writable=True) as array:
                    array[rows, cols] = plane


class SharedOutput:
    """An in-memory output's planes in shared memory while a cluster's regions write them.

    Open with `open`; each region is copied into the caller's output when its answer arrives
    (`copy_region`), as it would be from the network.
    """

    def __init__(self, planes: list[np.ndarray | None], segments: list[SharedSegment | None], origin: Point2I):
        self._views = [
            None if s is None or p is None else s.array(p.shape, p.dtype) for p, s in zip(planes, segments, strict=True)
        ]
        refs = tuple(
            None if s is None or p is None else s.ref(p.shape, p.dtype) for p, s in zip(planes, segments, strict=True)
        )
        self.origin = Point2I(origin)
        self.writer = SharedRegionWriter(refs, (self.origin.getX(), self.origin.getY()))  # type: ignore[arg-type]
        #: The image plane: its reference for the workers, and this process's view of it.
        self.image_ref: SharedArrayRef | None = refs[0]
        self.image: np.ndarray = self._views[0]  # type: ignore[assignment]  # an output always has an image
        self.nbytes = 0

    @classmethod
    @contextmanager
    def open(
        cls, output: Exposure | np.ndarray, origin: Point2I, scheduler: SchedulerChoice | None
    ) -> Iterator[SharedOutput | None]:
        """Yield a `SharedOutput` for ``output`` on a same-host cluster, else None (regions return their planes).

        ``scheduler`` None also gives None (a scheduler sharing this process's memory writes in place).
        """
        planes = _planes_of(output)
        in_memory = all(p is None or (isinstance(p, np.ndarray) and not isinstance(p, np.memmap)) for p in planes)
        if scheduler is None or not in_memory or not scheduler.same_host_memory():
            yield None
            return
        segments: list[SharedSegment | None] = []
        shared = None
        try:
            try:
                for plane in planes:
                    segments.append(None if plane is None else SharedSegment(plane.nbytes))
            except OSError:  # no room: the regions come back over the network
                yield None
                return
            shared = cls(planes, segments, origin)
            yield shared
            scheduler.shared_bytes += shared.nbytes
        finally:
            if shared is not None:
                shared._views, shared.image = [], None  # type: ignore[assignment]  # no view may outlive the mappings
            for segment in segments:
                if segment is not None:
                    segment.close()

    def copy_region(self, output: Exposure | np.ndarray, bbox: Box2I) -> None:
        """Copy one written region from the segments into ``output``."""
        rows, cols = bbox.slices(self.origin)
        for plane, view in zip(_planes_of(output), self._views, strict=True):
            if view is not None and plane is not None:
                part = view[rows, cols]
                plane[rows, cols] = part
                self.nbytes += part.nbytes


def _planes_of(output: Exposure | np.ndarray) -> list[Any]:
    """An output's (image, mask, variance) planes; a plain array is an image alone."""
    if isinstance(output, Exposure):
        return [output.image.array, output.mask.array, output.variance.array]
    return [output, None, None]


def _read_token(name: str, size: int) -> bytes | None:
    """Run on a worker: the first ``size`` bytes of segment ``name``, or None if it cannot be opened."""
    try:
        with SharedArrayRef(name, (size,), "|u1").open() as array:
            return bytes(array)
    except OSError:
        return None


def probe_workers(client: Any, workers: list[str]) -> bool:
    """Whether every one of ``workers`` reads this process's shared memory (a token written here, read there)."""
    if not workers or not shared_memory_enabled():
        return False
    token = secrets.token_bytes(32)
    try:
        with SharedSegment(len(token)) as segment:
            segment.array((len(token),), np.uint8)[:] = np.frombuffer(token, dtype=np.uint8)
            answers = client.run(_read_token, segment.name, len(token), workers=workers, on_error="return")
    except Exception:  # noqa: BLE001 - no shared memory, or a worker that cannot answer: use the network
        return False
    return len(answers) == len(workers) and all(answer == token for answer in answers.values())
