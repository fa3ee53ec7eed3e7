"""A map-reduce's zarr output, written region by region: one owner, a record per region, verifiable.

Besides the planes (see `imagemapreduce.io.zarr_store`), an output store holds:

* ``regions_done``: one uint8 flag per output region (each its own chunk), set last;
* ``region_records``: one JSON string per region (each its own chunk), written just before its
  flag: the SHA-256 of the region's planes as written, its overlap statistics, and for the cells
  it reports (those whose expanded box starts in it) their timing, PSF components and failures.
  The final CoaddPsf and failure report are built from these records, so they cover every
  region whoever wrote it, across any number of interrupted runs;
* attributes ``fingerprint`` (the job's identity, part by part, see `imagemapreduce.run_identity`),
  ``regionSize`` and ``owner`` (the token of the run writing it now).

A store has one writer at a time (`imagemapreduce.io.zarr_lock`). On a local disk the writing
process holds an exclusive ``flock`` on the store's lock file for the whole run (released by the
kernel if the process dies); on object storage it holds a lease object, created exclusively
(a conditional put on S3) and renewed while it runs. A second run, or an ``overwrite`` of a
store being written, is refused at once. Every region write also checks that the store's
``owner`` is still its own run, so a writer that lost the store (on a file system without
exclusive create, or after its lease expired) stops instead of mixing its pixels with another
job's.

Region writes align with the store's chunks: each region is written by its own task, so the
unit written (the chunk, or with zarr v3 sharding the shard) must divide the region size, and
no two regions ever write the same chunk or shard object (`check_write_unit`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..geom import Box2I, Point2I
from ..psf._persist import PsfFormatError, is_persistable, psf_from_dict, psf_to_dict
from .locations import StoreLocation
from .zarr_lock import LOCK_NAME, LeaseLock, StoreBusyError, StoreLock, lock_for, probe_lock
from .zarr_store import PLANES, ZarrFormatError, check_write_unit, create_group, decode_psf, encode_psf, store_chunks

__all__ = [
    "ZarrRegionWriter",
    "StoreBusyError",
    "StoreOwnershipError",
    "StoreVerification",
    "verify_zarr_store",
    "LOCK_NAME",
]

_RECORD_VERSION = 1


class StoreOwnershipError(OSError):
    """The store was taken over by another run while this one was writing it."""


# -- records --------------------------------------------------------------------------------------
def planes_checksum(planes: dict[str, np.ndarray]) -> str:
    """SHA-256 of a region's planes in their stored types, in `PLANES` order."""
    digest = hashlib.sha256()
    for name in PLANES:
        if name in planes:
            array = np.ascontiguousarray(planes[name])
            digest.update(f"{name}:{array.shape}:{array.dtype.str}:".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _box_list(bbox: Box2I) -> list[int]:
    return [bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY()]


def _box(values: list[int]) -> Box2I:
    return Box2I(Point2I(values[0], values[1]), Point2I(values[2], values[3]))


def _record(outcome: Any, checksum: str, owner: str) -> str:
    """A region's record (see the module notes) as a JSON string."""
    psfs: list[dict] = []
    components = []
    unstorable = sorted({type(p).__name__ for p, _, _ in outcome.psf_components if not is_persistable(p)})
    for psf, bbox, weight in outcome.psf_components:
        slot = -1
        if psf is not None and is_persistable(psf):
            doc = psf_to_dict(psf)
            slot = psfs.index(doc) if doc in psfs else len(psfs)
            if slot == len(psfs):
                psfs.append(doc)
        components.append([slot, _box_list(bbox), float(weight)])
    stats = outcome.stats
    return json.dumps(
        {
            "version": _RECORD_VERSION,
            "owner": owner,
            "checksum": checksum,
            "bbox": _box_list(outcome.bbox),
            "stats": [stats.max_count, stats.min_count, stats.sum_count, stats.zero_pixels, stats.pixels],
            "summaries": [list(s) for s in outcome.summaries],
            "psfs": psfs,
            "components": components,
            "unstorablePsfs": unstorable,
            "failures": [[f.index, _box_list(f.bbox), _box_list(f.expandedBBox), f.error] for f in outcome.failures],
            "newPlanes": {name: [list(p.first), p.bit] for name, p in (outcome.new_planes or {}).items()},
        }
    )


@dataclass
class RegionRecord:
    """A region's record, read back and checked."""

    checksum: str
    outcome: Any  # a StitchOutcome without planes
    unstorable_psfs: list[str] = field(default_factory=list)


def parse_record(text: Any, where: str) -> RegionRecord:
    """Check and rebuild a region's record; `ZarrFormatError` naming ``where`` if it is malformed."""
    from ..engine.cells import CellSummary, FailedCell
    from ..engine.graph import StitchOutcome
    from ..stitch import RegionStats
    from ..stitch_planes import NewPlane

    try:
        doc = json.loads(str(text))
        if not isinstance(doc, dict) or doc.get("version") != _RECORD_VERSION:
            raise ValueError(f"unknown record version {doc.get('version') if isinstance(doc, dict) else doc!r:.40}")
        psfs = [psf_from_dict(p, f"{where}: psfs[{i}]") for i, p in enumerate(doc["psfs"])]
        components = [
            (psfs[slot] if slot >= 0 else None, _box(box), float(weight)) for slot, box, weight in doc["components"]
        ]
        summaries = [CellSummary(int(i), float(w), float(c), str(worker)) for i, w, c, worker in doc["summaries"]]
        failures = [FailedCell(int(i), _box(b), _box(e), str(err)) for i, b, e, err in doc["failures"]]
        stats = RegionStats(*(int(v) for v in doc["stats"]))
        new_planes = {
            str(name): NewPlane((int(first[0]), int(first[1])), int(bit))
            for name, (first, bit) in doc.get("newPlanes", {}).items()
        }
        outcome = StitchOutcome(_box(doc["bbox"]), stats, summaries, components, None, failures, new_planes)
        return RegionRecord(str(doc["checksum"]), outcome, [str(n) for n in doc.get("unstorablePsfs", [])])
    except PsfFormatError as error:
        raise ZarrFormatError(str(error)) from None
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ZarrFormatError(f"{where} is malformed ({type(error).__name__}: {error})") from None


# -- the writer -----------------------------------------------------------------------------------
class ZarrRegionWriter:
    """Where a map-reduce writes its output, one region at a time, recording each region.

    Regions are the stitcher's (``region_size`` squares from the bbox's begin), and the planes are
    chunked on the same grid (or on chunks, and shards, that divide it), so every region writes
    whole chunks of its own: tasks on different workers never write the same chunk. Picklable and
    small: a worker reopens the store from its URL and storage options (no open handle travels)
    and carries the run's ownership token, checked before every write.

    Parameters
    ----------
    where : `str`, path-like or `StoreLocation`
        The store: a local path or an fsspec URL.
    bbox : `Box2I`
        The output's box.
    region_size : `int`
        The side of the output regions, each written by one task.
    with_planes : `tuple` [`str`]
        The planes stored.
    storage_options : `dict`, optional
        For a URL: the fsspec file system's options.
    chunks, shards : `int` or (`int`, `int`), optional
        The planes' zarr chunks (default: one per region) and shards (default: none); the unit
        written must divide ``region_size``.
    """

    def __init__(
        self,
        where: Any,
        bbox: Box2I,
        region_size: int,
        with_planes: tuple[str, ...] = PLANES,
        *,
        storage_options: dict[str, Any] | None = None,
        chunks: Any = None,
        shards: Any = None,
    ):
        self.bbox = Box2I(bbox)
        self.region_size = int(region_size)
        self.chunks, self.shards = check_write_unit(chunks or self.region_size, shards, self.region_size)
        self.location = StoreLocation(where, storage_options)
        self.with_planes = tuple(with_planes)
        self.token = uuid.uuid4().hex
        self._group = None
        self._lock: StoreLock | LeaseLock | None = None

    @property
    def path(self) -> str:
        """The store's path or URL, for messages."""
        return self.location.url

    # -- owning ------------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        lock = lock_for(self.location)
        lock.acquire()
        self._lock = lock

    def release(self) -> None:
        """Give up the store's lock (the run is over, finished or not)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _claim(self) -> None:
        self.location.open_group("r+").attrs["owner"] = self.token

    # -- creating and checking -----------------------------------------------------------------------
    def create(self, dtype: Any, planes: dict[str, int], fingerprint: Any, overwrite: bool) -> None:
        """Make a new, empty store for this run and take it (refusing an existing path unless ``overwrite``).

        A store being written by another run is never replaced; a path that is not a zarr store
        is never deleted.
        """
        if overwrite and self.location.is_group():
            probe_lock(self.location)
        group = create_group(self.location, overwrite)
        self._take_lock()
        shape = (self.bbox.getHeight(), self.bbox.getWidth())
        chunks = store_chunks(shape, self.chunks)
        shards = None if self.shards is None else store_chunks(shape, self.shards)
        if shards is not None and any(s % c for s, c in zip(shards, chunks)):
            chunks = shards  # an image smaller than the shards: one chunk per shard
        for name in self.with_planes:
            plane_dtype = np.int32 if name == "mask" else dtype
            group.create_array(name, shape=shape, chunks=chunks, shards=shards, dtype=plane_dtype)
        grid = self.region_grid()
        group.create_array("regions_done", shape=grid, chunks=(1, 1), dtype=np.uint8, fill_value=0)
        group.create_array("region_records", shape=grid, chunks=(1, 1), dtype=str)
        group.attrs.update(
            {
                "xy0": [self.bbox.getMinX(), self.bbox.getMinY()],
                "maskPlanes": dict(planes),
                "psf": None,
                "complete": False,
                "fingerprint": fingerprint,
                "regionSize": self.region_size,
                "owner": self.token,
            }
        )

    def check_resumable(self, dtype: Any, fingerprint: dict[str, str]) -> None:
        """Take an existing store and check that it belongs to this very job, naming what differs."""
        from ..run_identity import fingerprint_differences

        if not self.location.exists():
            raise FileNotFoundError(f"cannot resume: no store at {self.path}; run without resume=True")
        if not self.location.is_group():
            raise ZarrFormatError(f"cannot resume {self.path}: it is not a zarr store")
        self._take_lock()
        group = self.location.open_group("r")
        shape = (self.bbox.getHeight(), self.bbox.getWidth())
        for name in (*self.with_planes, "regions_done", "region_records"):
            if name not in group:
                raise ValueError(f"cannot resume {self.path}: it has no {name!r} array (not a map-reduce output)")
        for name in self.with_planes:
            array = group[name]
            want = np.dtype(np.int32) if name == "mask" else np.dtype(dtype)
            if tuple(array.shape) != shape or np.dtype(array.dtype) != want:
                raise ValueError(
                    f"cannot resume {self.path}: its {name} plane is {tuple(array.shape)} {array.dtype}, "
                    f"but this run writes {shape} {want}; use a new path or overwrite=True"
                )
        if (
            group.attrs.get("regionSize") != self.region_size
            or tuple(group["regions_done"].shape) != self.region_grid()
        ):
            raise ValueError(
                f"cannot resume {self.path}: it was written in regions of {group.attrs.get('regionSize')} px, this "
                f"run uses {self.region_size} (stitchRegionSize / --region-size); use the same size or a new path"
            )
        for name in self.with_planes:
            self._check_alignment(group[name])
        differences = fingerprint_differences(group.attrs.get("fingerprint"), fingerprint)
        if differences:
            raise ValueError(
                f"cannot resume {self.path}: it was written by a different job; these differ: "
                f"{'; '.join(differences)}. Use a new path or overwrite=True"
            )
        self._claim()

    def _check_alignment(self, array: Any) -> None:
        """Refuse a store whose chunks (or shards) straddle regions: two regions would write one object."""
        unit = tuple(getattr(array, "shards", None) or array.chunks)
        edge = (self.bbox.getHeight(), self.bbox.getWidth())
        if any(self.region_size < e and self.region_size % u for u, e in zip(unit, edge)):
            raise ValueError(
                f"cannot resume {self.path}: its chunks or shards {unit} do not divide the regions of "
                f"{self.region_size} px (stitchRegionSize / --region-size), so regions written at once would "
                "write the same object; use a new path or overwrite=True"
            )

    def region_grid(self) -> tuple[int, int]:
        """How many regions there are, (rows, columns)."""
        size = self.region_size
        return (-(-self.bbox.getHeight() // size), -(-self.bbox.getWidth() // size))

    def region_box(self, index: tuple[int, int]) -> Box2I:
        """The box of region ``index`` (row, column), clipped to the image."""
        size = self.region_size
        x0, y0 = self.bbox.getMinX() + index[1] * size, self.bbox.getMinY() + index[0] * size
        x1, y1 = min(x0 + size, self.bbox.getEndX()) - 1, min(y0 + size, self.bbox.getEndY()) - 1
        return Box2I(Point2I(x0, y0), Point2I(x1, y1))

    def flagged_regions(self) -> set[tuple[int, int]]:
        """The (row, column) of every region whose done-flag is set."""
        flags = np.asarray(self._open()["regions_done"][...])
        return {(int(i), int(j)) for i, j in zip(*np.nonzero(flags))}

    def verified_regions(self) -> tuple[set[tuple[int, int]], dict[tuple[int, int], str]]:
        """The flagged regions whose record and pixels check out, and why each other flagged one does not.

        Every flagged region is read back and its checksum recomputed, so a region changed or a
        chunk deleted since it was written is found (and then recomputed by a resume).
        """
        good, bad = set(), {}
        for index in sorted(self.flagged_regions()):
            problem = self._check_region(index)
            if problem is None:
                good.add(index)
            else:
                bad[index] = problem
        return good, bad

    def _check_region(self, index: tuple[int, int]) -> str | None:
        group = self._open()
        try:
            record = parse_record(group["region_records"][index], f"{self.path}: record of region {index}")
        except ZarrFormatError as error:
            return str(error)
        rows, cols = self.region_box(index).slices(self.bbox.getBegin())
        stored = {name: np.asarray(group[name][rows, cols]) for name in self.with_planes}
        if planes_checksum(stored) != record.checksum:
            return f"region {index}: its pixels no longer match the checksum recorded when it was written"
        return None

    def records(self) -> list[RegionRecord]:
        """Every flagged region's record, in region order."""
        group = self._open()
        return [
            parse_record(group["region_records"][index], f"{self.path}: record of region {index}")
            for index in sorted(self.flagged_regions())
        ]

    # -- writing ---------------------------------------------------------------------------------
    def _open(self):
        if self._group is None:
            self._group = self.location.open_group("r+")
        return self._group

    def _check_owner(self) -> None:
        owner = self.location.open_group("r").attrs.get("owner")
        if owner != self.token:
            raise StoreOwnershipError(
                f"{self.path} was taken over by another run while this one was writing it; this run stops "
                "without writing more. Let one run finish, then check the store with verify_zarr_store"
            )

    def write(self, index: tuple[int, int], outcome: Any) -> None:
        """Write one region's planes, then its record, then its done-flag (a crash in between redoes it)."""
        self._check_owner()
        group = self._open()
        rows, cols = outcome.bbox.slices(self.bbox.getBegin())
        stored = {}
        for name, plane in zip(PLANES, outcome.planes):
            if name in self.with_planes and plane is not None:
                array = group[name]
                stored[name] = np.asarray(plane, dtype=array.dtype)
                array[rows, cols] = stored[name]
        group["region_records"][index[0], index[1]] = _record(outcome, planes_checksum(stored), self.token)
        group["regions_done"][index[0], index[1]] = 1

    def settle_mask_planes(self, planes: dict[str, int], moves: list[tuple[Box2I, dict[int, int]]]) -> None:
        """Give the store the mask planes every region added, renumbering the regions that differ.

        Each renumbered region's record is rewritten with its new checksum and the planes' output
        bits, so that a later resume finds nothing left to move.
        """
        from ..image._mask import remap_mask_bits

        self._check_owner()
        group = self._open()
        for bbox, move in moves:
            index = (
                (bbox.getMinY() - self.bbox.getMinY()) // self.region_size,
                (bbox.getMinX() - self.bbox.getMinX()) // self.region_size,
            )
            rows, cols = bbox.slices(self.bbox.getBegin())
            group["mask"][rows, cols] = remap_mask_bits(np.asarray(group["mask"][rows, cols]), move)
            doc = json.loads(str(group["region_records"][index]))
            doc["newPlanes"] = {name: [first, planes[name]] for name, (first, _) in doc["newPlanes"].items()}
            stored = {name: np.asarray(group[name][rows, cols]) for name in self.with_planes}
            doc["checksum"] = planes_checksum(stored)
            group["region_records"][index] = json.dumps(doc)
        group.attrs["maskPlanes"] = dict(planes)

    def finish(self, psf: Any) -> None:
        """Record the output PSF and mark the store complete.

        No whole-plane digests: the region records' checksums already cover every pixel, and
        `verify_zarr_store` checks those.
        """
        self._check_owner()
        self._open().attrs.update({"psf": encode_psf(psf), "complete": True})

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_group"] = None  # reopened by path in each worker
        state["_lock"] = None  # the lock stays with the process that runs the job
        return state


# -- verification ---------------------------------------------------------------------------------
@dataclass
class StoreVerification:
    """What `verify_zarr_store` found.

    Attributes
    ----------
    path : `str`
        The store.
    complete : `bool`
        Whether the store says its run finished.
    checked : `int`
        Regions (or, for a store written whole, planes) whose checksums were recomputed.
    problems : `list` [`str`]
        Each region or plane that does not check out, and why. Empty when the store is sound.
    """

    path: str
    complete: bool
    checked: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the store is complete and every checksum matches."""
        return self.complete and not self.problems

    def __str__(self) -> str:
        state = "complete" if self.complete else "INCOMPLETE"
        if self.ok:
            return f"{self.path}: OK ({state}, {self.checked} checksums verified)"
        lines = [f"{self.path}: {len(self.problems)} problem(s) ({state}, {self.checked} checked)"]
        return "\n".join(lines + [f"  {p}" for p in self.problems])


def verify_zarr_store(url: str | Path, *, storage_options: dict[str, Any] | None = None) -> StoreVerification:
    """Check a store against the checksums it recorded when it was written.

    For a map-reduce output, every region is read back and its checksum compared with its
    record; regions never written are listed. For a store written whole (`write_zarr_exposure`),
    each plane's digest is recomputed. The PSF attribute and the records are parsed as data
    (never unpickled). Nothing is changed.

    Parameters
    ----------
    url : `str` or path-like
        A local path, or an fsspec URL (``s3://...``).
    storage_options : `dict`, optional
        For a URL: the fsspec file system's options.

    Returns
    -------
    verification : `StoreVerification`
        ``ok`` is True when the store is complete and sound.
    """
    from .zarr_store import plane_digests

    location = StoreLocation(url, storage_options)
    path = location.url
    if not location.is_group():
        raise FileNotFoundError(f"no zarr store at {path}")
    group = location.open_group("r")
    attrs = dict(group.attrs)
    result = StoreVerification(str(path), attrs.get("complete") is True, 0)
    try:
        decode_psf(attrs.get("psf"), path)
    except ZarrFormatError as error:
        result.problems.append(str(error))
    if "region_records" in group:
        _verify_regions(location, group, attrs, result)
    else:
        recorded = attrs.get("planeDigests")
        if not isinstance(recorded, dict):
            result.problems.append("the store records no plane digests (written by an older version)")
            return result
        for name, digest in plane_digests(location, tuple(n for n in PLANES if n in group)).items():
            result.checked += 1
            if recorded.get(name) != digest:
                result.problems.append(f"plane {name!r} no longer matches the digest recorded when it was written")
    return result


def _verify_regions(location: StoreLocation, group: Any, attrs: dict, result: StoreVerification) -> None:
    size = attrs.get("regionSize")
    xy0 = attrs.get("xy0") or [0, 0]
    shape = tuple(group["image"].shape)
    if type(size) is not int or size < 1:
        result.problems.append(f"attribute 'regionSize' must be a positive integer, got {size!r:.40}")
        return
    bbox = Box2I(Point2I(int(xy0[0]), int(xy0[1])), Point2I(int(xy0[0]) + shape[1] - 1, int(xy0[1]) + shape[0] - 1))
    writer = ZarrRegionWriter(location, bbox, size, tuple(n for n in PLANES if n in group))
    writer._group = group
    rows, cols = writer.region_grid()
    flagged = writer.flagged_regions()
    for index in ((i, j) for i in range(rows) for j in range(cols)):
        if index not in flagged:
            result.problems.append(f"region {index} was never written")
            continue
        result.checked += 1
        problem = writer._check_region(index)
        if problem is not None:
            result.problems.append(problem)
