"""Exposures in zarr stores: read lazily, written whole or region by region, checked on every read.

Layout of a store (a zarr group):

* arrays ``image``, ``mask`` (int32) and ``variance`` with the exposure's shape;
* attributes ``xy0`` ``[x0, y0]``, ``maskPlanes`` ``{name: bit}``, ``psf`` (a data-only description
  of the PSF, see `imagemapreduce.psf.psf_to_dict`, or null), ``complete`` (True once every
  region is written) and, for a store written whole, ``planeDigests`` (SHA-256 of each plane,
  block by block on the store's chunks, for `verify_zarr_store`);
* for map-reduce output (`imagemapreduce.io.zarr_regions`), the job's ``fingerprint``, the
  ``regionSize``, the current ``owner`` and one record per output region.

A store may be a local folder or live at an fsspec URL (``s3://``, ``gs://``, ``memory://``,
``file://``, see `imagemapreduce.io.locations`); the functions take ``storage_options`` for the
URL's file system.

Nothing in a store is executed or unpickled: attributes are JSON, checked field by field, and a
malformed one is a `ZarrFormatError` naming the store and the attribute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..geom import Point2I
from ..psf._persist import PsfFormatError, is_persistable, psf_from_dict, psf_to_dict
from .locations import StoreLocation

__all__ = [
    "write_zarr_exposure",
    "open_zarr_exposure",
    "IncompleteStoreError",
    "ZarrFormatError",
    "PLANES",
    "encode_psf",
    "decode_psf",
    "store_chunks",
    "check_write_unit",
    "create_group",
    "plane_digests",
]

#: The planes of an exposure store, in order.
PLANES = ("image", "mask", "variance")


class IncompleteStoreError(RuntimeError):
    """The store's run did not finish: resume it (``resume=True``) or pass ``allow_incomplete=True``."""


class ZarrFormatError(ValueError):
    """A zarr store whose layout or attributes cannot be read as an exposure; the message says which."""


def encode_psf(psf: Any) -> dict | None:
    """The store attribute for ``psf``: its data-only description, or None when it has none."""
    return psf_to_dict(psf) if psf is not None and is_persistable(psf) else None


def decode_psf(value: Any, path: Any) -> Any:
    """Read a store's ``psf`` attribute (never unpickling: a string is an old pickled PSF, refused)."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ZarrFormatError(
            f"zarr store {path}: attribute 'psf' is a string (a pickled PSF, as written before version 0.2); "
            "pickles are never loaded from files: write the store again with this version"
        )
    try:
        return psf_from_dict(value, f"zarr store {path}: attribute 'psf'")
    except PsfFormatError as error:
        raise ZarrFormatError(str(error)) from None


def store_chunks(shape: tuple[int, int], chunk: int | tuple[int, int]) -> tuple[int, int]:
    """The chunk shape of a plane: ``chunk`` pixels square (or (rows, columns)), at most the plane."""
    rows, cols = (chunk, chunk) if isinstance(chunk, int) else chunk
    return (max(1, min(rows, shape[0])), max(1, min(cols, shape[1])))


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or (rows, columns) of positive ints, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def check_write_unit(chunks: Any, shards: Any, region_size: int | None = None) -> tuple[Any, Any]:
    """Check that chunks and shards tile the writes, so that no two concurrent writes share an object.

    A zarr chunk is the unit stored (one object on object storage); with sharding the shard is the
    unit written, its chunks rewritten together. So the chunks must divide the shards, and with
    ``region_size`` (a map-reduce's output regions, each written by its own task) the unit written
    must divide the region. Returns ``(chunks, shards)`` as (rows, columns) pairs (shards may be None).
    """
    chunk_pair = _pair(chunks, "chunks")
    shard_pair = None if shards is None else _pair(shards, "shards")
    if shard_pair is not None and any(s % c for s, c in zip(shard_pair, chunk_pair)):
        raise ValueError(
            f"shards={shard_pair} is not a whole number of chunks={chunk_pair}: choose shards that are "
            "multiples of the chunks"
        )
    unit, name = (shard_pair, "shards") if shard_pair is not None else (chunk_pair, "chunks")
    if region_size is not None and any(region_size % u for u in unit):
        raise ValueError(
            f"{name}={unit} does not divide the output regions of {region_size} px (stitchRegionSize / "
            f"--region-size), so two regions written at once would write the same {name[:-1]} and one "
            f"would lose pixels: choose {name} that divide {region_size} (e.g. {region_size} or "
            f"{max(1, region_size // 2)}), or a region size that is a multiple of the {name}"
        )
    return chunk_pair, shard_pair


def create_group(location: StoreLocation, overwrite: bool) -> Any:
    """A new, empty zarr group at ``location`` (an existing store replaced only with ``overwrite``)."""
    if location.exists():
        if not overwrite:
            raise FileExistsError(f"{location} already exists; pass overwrite=True to replace it")
        location.remove_store()
    return location.open_group("w")


def plane_digests(
    location: StoreLocation, planes: tuple[str, ...] = PLANES, get: Any = None, group: Any = None
) -> dict[str, str]:
    """SHA-256 of each plane as stored, read block by block on the store's chunks."""
    from ..run_identity import array_digest

    return {name: array_digest(location.dask_array(name, group=group), get) for name in planes}


def _created_name(location: StoreLocation) -> Path | str:
    """What the write functions return: the `Path` of a local store, else its URL."""
    return location.local if location.local is not None else location.url


def write_zarr_exposure(
    exposure: Any,
    url: str | Path,
    *,
    storage_options: dict[str, Any] | None = None,
    chunks: int | tuple[int, int] = 1024,
    shards: int | tuple[int, int] | None = None,
    overwrite: bool = False,
) -> Path | str:
    """Write an exposure's planes and metadata to a zarr store (Dask planes are written block by block).

    Parameters
    ----------
    exposure : `Exposure`
        Its planes may be numpy or Dask arrays.
    url : `str` or path-like
        A local path, or an fsspec URL (``s3://bucket/key.zarr``, ``gs://...``, ``memory://...``,
        ``file://...``).
    storage_options : `dict`, optional
        For a URL: the fsspec file system's options (e.g. ``endpoint_url``, ``key``, ``secret``).
        Without them, credentials come from the standard environment (``AWS_*`` for S3).
    chunks : `int` or (`int`, `int`)
        The zarr chunks (one object each on object storage).
    shards : `int` or (`int`, `int`), optional
        Zarr v3 shards (each a whole number of chunks), to store many chunks in one object.
    overwrite : `bool`
        Replace an existing store (never a path that is not a zarr store).

    Returns
    -------
    where : `pathlib.Path` or `str`
        The path of a local store, or the URL.

    Notes
    -----
    The store records each plane's digest, read back from what was written, so that
    `verify_zarr_store` can tell later changes. A PSF that has no data-only form (a third-party
    class) is not stored, and the store says so in its ``psfNote`` attribute. Dask planes are
    rechunked to the unit written (the shards, else the chunks), so that blocks written at once
    never share a chunk.
    """
    import dask.array as da

    location = StoreLocation(url, storage_options)
    shape = exposure.image.array.shape
    chunk_pair, shard_pair = check_write_unit(chunks, shards)
    chunk_pair = store_chunks(shape, chunk_pair)
    shard_pair = None if shard_pair is None else store_chunks(shape, shard_pair)
    if shard_pair is not None and any(s % c for s, c in zip(shard_pair, chunk_pair)):
        chunk_pair = shard_pair  # a plane smaller than the shards: one chunk per shard
    group = create_group(location, overwrite)
    for name in PLANES:
        plane = getattr(exposure, name).array
        dtype = np.int32 if name == "mask" else plane.dtype
        array = group.create_array(name, shape=shape, chunks=chunk_pair, shards=shard_pair, dtype=dtype)
        if hasattr(plane, "__dask_graph__"):
            da.store(plane.astype(dtype).rechunk(shard_pair or chunk_pair), array, lock=False)
        else:
            array[...] = np.asarray(plane, dtype=dtype)
    psf = exposure.getPsf()
    attrs = {
        "xy0": [exposure.getX0(), exposure.getY0()],
        "maskPlanes": exposure.mask.getMaskPlaneDict(),
        "psf": encode_psf(psf),
        "planeDigests": plane_digests(location, group=group),
        "complete": True,
    }
    if psf is not None and attrs["psf"] is None:
        attrs["psfNote"] = f"a {type(psf).__name__} has no data-only form and was not stored"
    group.attrs.update(attrs)
    return _created_name(location)


def _xy0(value: Any, path: Any) -> Point2I:
    if value is None:
        return Point2I(0, 0)
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        raise ZarrFormatError(f"zarr store {path}: attribute 'xy0' must be two integers [x0, y0], got {value!r:.80}")
    return Point2I(*value)


def _mask_planes(value: Any, path: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and type(v) is int and 0 <= v < 32 for k, v in value.items()
    ):
        raise ZarrFormatError(
            f"zarr store {path}: attribute 'maskPlanes' must map plane names to bits 0-31, got {value!r:.80}"
        )
    if len(set(value.values())) != len(value):
        raise ZarrFormatError(f"zarr store {path}: attribute 'maskPlanes' gives two planes one bit: {value!r:.80}")
    return dict(value) or None


def _check_planes(group: Any, path: Any) -> None:
    missing = [name for name in PLANES if name not in group]
    if missing:
        raise ZarrFormatError(f"zarr store {path} lacks the plane(s) {missing}; an exposure store has {PLANES}")
    arrays = {name: group[name] for name in PLANES}
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1 or len(shapes["image"]) != 2:
        raise ZarrFormatError(f"zarr store {path}: image, mask and variance must be 2-d and of one shape; got {shapes}")
    if np.dtype(arrays["mask"].dtype).kind not in "iu":
        raise ZarrFormatError(f"zarr store {path}: the mask must hold integers, not {arrays['mask'].dtype}")
    for name in ("image", "variance"):
        if np.dtype(arrays[name].dtype).kind != "f":
            raise ZarrFormatError(f"zarr store {path}: {name} must be floating point, not {arrays[name].dtype}")


def open_zarr_exposure(
    url: str | Path | StoreLocation,
    *,
    storage_options: dict[str, Any] | None = None,
    allow_incomplete: bool = False,
    chunks: Any = None,
    cls: Any = None,
) -> Any:
    """Open a zarr store as an `Exposure` whose planes are lazy Dask arrays (nothing is read yet).

    Parameters
    ----------
    url : `str` or path-like
        A local path, or an fsspec URL (``s3://bucket/key.zarr``, ``gs://...``, ``memory://...``).
    storage_options : `dict`, optional
        For a URL: the fsspec file system's options (else the standard environment, ``AWS_*``).
    allow_incomplete : `bool`
        Open the output of an unfinished run too.
    chunks
        The Dask blocks; by default the store's own chunks, so a cell reads (and keeps in memory
        while it waits) only the few chunks its box touches.
    cls : `type`, optional
        The exposure class (by default `ExposureF` or `ExposureD` after the image's type).

    Returns
    -------
    exposure : `Exposure`
        Its Dask planes' graphs hold the store's URL and options, never pixels: whoever computes
        a block (a Dask worker) reads it from the store.

    Raises
    ------
    IncompleteStoreError
        For the output of an unfinished run, unless ``allow_incomplete``.
    ZarrFormatError
        A `ValueError` naming the problem when the planes disagree in shape, have the wrong type,
        or an attribute is malformed.
    """
    from ..image import Exposure, ExposureD, ExposureF

    location = StoreLocation(url, storage_options)
    path = location.url
    if not location.exists():
        raise FileNotFoundError(f"no zarr store at {path}")
    try:
        group = location.open_group("r")
    except (ValueError, KeyError, OSError) as error:
        raise ZarrFormatError(f"{path} is not a readable zarr group: {error}") from None
    attrs = dict(group.attrs)
    if attrs.get("complete", False) is not True and not allow_incomplete:
        raise IncompleteStoreError(
            f"{path} holds an unfinished run; resume it with resume=True, or open it with allow_incomplete=True"
        )
    _check_planes(group, path)
    xy0, planeDict = _xy0(attrs.get("xy0"), path), _mask_planes(attrs.get("maskPlanes"), path)
    psf = decode_psf(attrs.get("psf"), path)
    planes = {name: location.dask_array(name, chunks, group) for name in PLANES}
    if cls is None:
        cls = ExposureD if np.dtype(group["image"].dtype) == np.float64 else ExposureF
    exposure: Exposure = cls.from_arrays(
        planes["image"], planes["mask"].astype(np.int32), planes["variance"], xy0=xy0, psf=psf, planeDict=planeDict
    )
    return exposure
