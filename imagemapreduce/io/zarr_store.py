"""Exposures in zarr stores: read lazily, written whole or region by region, checked on every read.

Layout of a store (a zarr group):

* arrays ``image``, ``mask`` (int32) and ``variance`` with the exposure's shape;
* attributes ``xy0`` ``[x0, y0]``, ``maskPlanes`` ``{name: bit}``, ``psf`` (a data-only description
  of the PSF, see `imagemapreduce.psf.psf_to_dict`, or null), ``complete`` (True once every
  region is written) and, for a store written whole, ``planeDigests`` (SHA-256 of each plane,
  block by block on the store's chunks, for `verify_zarr_store`);
* for map-reduce output (`imagemapreduce.io.zarr_regions`), the job's ``fingerprint``, the
  ``regionSize``, the current ``owner`` and one record per output region.

Nothing in a store is executed or unpickled: attributes are JSON, checked field by field, and a
malformed one is a `ZarrFormatError` naming the store and the attribute.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..geom import Point2I
from ..psf._persist import PsfFormatError, is_persistable, psf_from_dict, psf_to_dict

__all__ = [
    "write_zarr_exposure",
    "open_zarr_exposure",
    "IncompleteStoreError",
    "ZarrFormatError",
    "PLANES",
    "encode_psf",
    "decode_psf",
    "store_chunks",
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


def is_zarr_group(path: Path) -> bool:
    """Whether ``path`` holds a zarr group (v3 ``zarr.json`` or v2 ``.zgroup``)."""
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def remove_store(path: Path) -> None:
    """Delete a zarr store, refusing anything that is not one (a store never destroys other data)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and (is_zarr_group(path) or not any(path.iterdir())):
        shutil.rmtree(path)
        return
    raise FileExistsError(
        f"{path} exists and is not a zarr store, so overwrite=True will not delete it; choose another path"
    )


def create_group(path: Path, overwrite: bool) -> Any:
    """A new, empty zarr group at ``path`` (an existing store replaced only with ``overwrite``)."""
    import zarr

    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        remove_store(path)
    return zarr.open_group(str(path), mode="w")


def plane_digests(path: Path, planes: tuple[str, ...] = PLANES, get: Any = None) -> dict[str, str]:
    """SHA-256 of each plane as stored, read block by block on the store's chunks."""
    import dask.array as da

    from ..run_identity import array_digest

    return {name: array_digest(da.from_zarr(str(path), component=name), get) for name in planes}


def write_zarr_exposure(exposure: Any, path: str | Path, *, chunks: int | tuple[int, int] = 1024,
                        overwrite: bool = False) -> Path:  # fmt: skip
    """Write an exposure's planes and metadata to a zarr store (Dask planes are written block by block).

    The store records each plane's digest, read back from what was written, so that
    `verify_zarr_store` can tell later changes. A PSF that has no data-only form (a third-party
    class) is not stored, and the store says so in its ``psfNote`` attribute.

    Returns the path. Refuses an existing path unless ``overwrite``, and never deletes a path
    that is not a zarr store.
    """
    import dask.array as da

    path = Path(path)
    group = create_group(path, overwrite)
    shape = exposure.image.array.shape
    for name in PLANES:
        plane = getattr(exposure, name).array
        dtype = np.int32 if name == "mask" else plane.dtype
        array = group.create_array(name, shape=shape, chunks=store_chunks(shape, chunks), dtype=dtype)
        if hasattr(plane, "__dask_graph__"):
            da.store(plane.astype(dtype), array, lock=False)
        else:
            array[...] = np.asarray(plane, dtype=dtype)
    psf = exposure.getPsf()
    attrs = {
        "xy0": [exposure.getX0(), exposure.getY0()],
        "maskPlanes": exposure.mask.getMaskPlaneDict(),
        "psf": encode_psf(psf),
        "planeDigests": plane_digests(path),
        "complete": True,
    }
    if psf is not None and attrs["psf"] is None:
        attrs["psfNote"] = f"a {type(psf).__name__} has no data-only form and was not stored"
    group.attrs.update(attrs)
    return path


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


def open_zarr_exposure(path: str | Path, *, allow_incomplete: bool = False, chunks: Any = None, cls: Any = None):
    """Open a zarr store as an `Exposure` whose planes are lazy Dask arrays (nothing is read yet).

    ``chunks`` sets the Dask blocks; by default they are the store's own chunks, so a cell reads
    (and keeps in memory while it waits) only the few chunks its box touches.

    Raises `IncompleteStoreError` for the output of an unfinished run unless ``allow_incomplete``,
    and `ZarrFormatError` (a `ValueError`) naming the problem when the planes disagree in shape,
    have the wrong type, or an attribute is malformed.
    """
    import dask.array as da
    import zarr

    from ..image import Exposure, ExposureD, ExposureF

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no zarr store at {path}")
    try:
        group = zarr.open_group(str(path), mode="r")
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
    planes = {name: da.from_zarr(str(path), component=name, chunks=chunks) for name in PLANES}
    if cls is None:
        cls = ExposureD if np.dtype(group["image"].dtype) == np.float64 else ExposureF
    exposure: Exposure = cls.from_arrays(
        planes["image"], planes["mask"].astype(np.int32), planes["variance"], xy0=xy0, psf=psf, planeDict=planeDict
    )
    return exposure
