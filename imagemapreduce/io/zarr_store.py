"""Exposures in zarr stores: read lazily, written region by region, resumable.

Layout of a store (a zarr group):

* arrays ``image``, ``mask`` (int32) and ``variance`` with the exposure's shape;
* attributes ``xy0`` ``[x0, y0]``, ``maskPlanes`` ``{name: bit}``, ``psf`` (the PSF pickled and
  base64-encoded, only ever read back from stores you wrote), ``complete`` (True once every
  region is written) and, for map-reduce output, ``fingerprint`` and ``regionSize``;
* for map-reduce output, an array ``regions_done`` (one uint8 flag per output region, each its
  own chunk) that records finished regions so an interrupted run can resume.
"""

from __future__ import annotations

import base64
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..geom import Box2I, Point2I

__all__ = ["write_zarr_exposure", "open_zarr_exposure", "ZarrRegionWriter", "IncompleteStoreError"]

_PLANES = ("image", "mask", "variance")


class IncompleteStoreError(RuntimeError):
    """The store's run did not finish: resume it (``resume=True``) or pass ``allow_incomplete=True``."""


def _encode_psf(psf: Any) -> str | None:
    return None if psf is None else base64.b64encode(pickle.dumps(psf)).decode("ascii")


def _decode_psf(text: str | None) -> Any:
    return None if not text else pickle.loads(base64.b64decode(text))  # noqa: S301 - our own stores


def _chunks(shape: tuple[int, int], chunk: int | tuple[int, int]) -> tuple[int, int]:
    rows, cols = (chunk, chunk) if isinstance(chunk, int) else chunk
    return (max(1, min(rows, shape[0])), max(1, min(cols, shape[1])))


def _create_group(path: Path, overwrite: bool):
    import zarr

    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return zarr.open_group(str(path), mode="w")


def write_zarr_exposure(exposure: Any, path: str | Path, *, chunks: int | tuple[int, int] = 1024,
                        overwrite: bool = False) -> Path:  # fmt: skip
    """Write an exposure's planes and metadata to a zarr store (Dask planes are written block by block).

    Returns the path. Refuses an existing path unless ``overwrite``.
    """
    import dask.array as da

    path = Path(path)
    group = _create_group(path, overwrite)
    shape = exposure.image.array.shape
    for name in _PLANES:
        plane = getattr(exposure, name).array
        dtype = np.int32 if name == "mask" else plane.dtype
        array = group.create_array(name, shape=shape, chunks=_chunks(shape, chunks), dtype=dtype)
        if hasattr(plane, "__dask_graph__"):
            da.store(plane.astype(dtype), array, lock=False)
        else:
            array[...] = np.asarray(plane, dtype=dtype)
    group.attrs.update(
        {
            "xy0": [exposure.getX0(), exposure.getY0()],
            "maskPlanes": exposure.mask.getMaskPlaneDict(),
            "psf": _encode_psf(exposure.getPsf()),
            "complete": True,
        }
    )
    return path


def open_zarr_exposure(path: str | Path, *, allow_incomplete: bool = False, chunks: Any = None, cls: Any = None):
    """Open a zarr store as an `Exposure` whose planes are lazy Dask arrays (nothing is read yet).

    ``chunks`` sets the Dask blocks; by default they are the store's own chunks, so a cell reads
    (and keeps in memory while it waits) only the few chunks its box touches.

    Raises `IncompleteStoreError` for the output of an unfinished run unless ``allow_incomplete``,
    and `ValueError` naming the problem when the planes disagree in shape or have the wrong type.
    """
    import dask.array as da
    import zarr

    from ..image import Exposure, ExposureD, ExposureF

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no zarr store at {path}")
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    if not attrs.get("complete", False) and not allow_incomplete:
        raise IncompleteStoreError(
            f"{path} holds an unfinished run; resume it with resume=True, or open it with allow_incomplete=True"
        )
    missing = [name for name in _PLANES if name not in group]
    if missing:
        raise ValueError(f"zarr store {path} lacks the plane(s) {missing}; an exposure store has {_PLANES}")
    arrays = {name: group[name] for name in _PLANES}
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1 or len(shapes["image"]) != 2:
        raise ValueError(f"zarr store {path}: image, mask and variance must be 2-d and of one shape; got {shapes}")
    if np.dtype(arrays["mask"].dtype).kind not in "iu":
        raise ValueError(f"zarr store {path}: the mask must hold integers, not {arrays['mask'].dtype}")
    for name in ("image", "variance"):
        if np.dtype(arrays[name].dtype).kind != "f":
            raise ValueError(f"zarr store {path}: {name} must be floating point, not {arrays[name].dtype}")
    planes = {name: da.from_zarr(str(path), component=name, chunks=chunks) for name in _PLANES}
    if cls is None:
        cls = ExposureD if np.dtype(arrays["image"].dtype) == np.float64 else ExposureF
    exposure: Exposure = cls.from_arrays(
        planes["image"], planes["mask"].astype(np.int32), planes["variance"],
        xy0=Point2I(*attrs.get("xy0", (0, 0))), psf=_decode_psf(attrs.get("psf")),
        planeDict={k: int(v) for k, v in attrs.get("maskPlanes", {}).items()} or None,
    )  # fmt: skip
    return exposure


class ZarrRegionWriter:
    """Where a map-reduce writes its output, one region at a time, recording finished regions.

    Regions are the stitcher's (``region_size`` squares from the bbox's begin), and the planes are
    chunked on the same grid, so every region writes whole chunks of its own: tasks on different
    workers never write the same chunk. Picklable: workers reopen the store by path.
    """

    def __init__(self, path: str | Path, bbox: Box2I, region_size: int, with_planes: tuple[str, ...] = _PLANES):
        self.path = Path(path)
        self.bbox = Box2I(bbox)
        self.region_size = int(region_size)
        self.with_planes = tuple(with_planes)
        self._group = None

    # -- creating and checking -----------------------------------------------------------------------
    def create(self, dtype: Any, planes: dict[str, int], fingerprint: str, overwrite: bool) -> None:
        """Make a new, empty store for this run (refusing an existing path unless ``overwrite``)."""
        group = _create_group(self.path, overwrite)
        shape = (self.bbox.getHeight(), self.bbox.getWidth())
        chunks = _chunks(shape, self.region_size)
        for name in self.with_planes:
            plane_dtype = np.int32 if name == "mask" else dtype
            group.create_array(name, shape=shape, chunks=chunks, dtype=plane_dtype)
        grid = self.region_grid()
        group.create_array("regions_done", shape=grid, chunks=(1, 1), dtype=np.uint8, fill_value=0)
        group.attrs.update(
            {
                "xy0": [self.bbox.getMinX(), self.bbox.getMinY()],
                "maskPlanes": dict(planes),
                "psf": None,
                "complete": False,
                "fingerprint": fingerprint,
                "regionSize": self.region_size,
            }
        )

    def check_resumable(self, dtype: Any, fingerprint: str) -> None:
        """Check that an existing store belongs to this very run (same grid, mapper, shape and type)."""
        import zarr

        if not self.path.exists():
            raise FileNotFoundError(f"cannot resume: no store at {self.path}; run without resume=True")
        group = zarr.open_group(str(self.path), mode="r")
        shape = (self.bbox.getHeight(), self.bbox.getWidth())
        for name in self.with_planes:
            if name not in group:
                raise ValueError(f"cannot resume {self.path}: it has no {name!r} plane")
            array = group[name]
            want = np.dtype(np.int32) if name == "mask" else np.dtype(dtype)
            if tuple(array.shape) != shape or np.dtype(array.dtype) != want:
                raise ValueError(
                    f"cannot resume {self.path}: its {name} plane is {tuple(array.shape)} {array.dtype}, "
                    f"but this run writes {shape} {want}; use a new path or overwrite=True"
                )
        if group.attrs.get("fingerprint") != fingerprint:
            raise ValueError(
                f"cannot resume {self.path}: it was written by a different run (grid, mapper, configuration or "
                "input differ); use a new path or overwrite=True"
            )

    def region_grid(self) -> tuple[int, int]:
        """How many regions there are, (rows, columns)."""
        size = self.region_size
        return (-(-self.bbox.getHeight() // size), -(-self.bbox.getWidth() // size))

    def done_regions(self) -> set[tuple[int, int]]:
        """The (row, column) of every region already written."""
        flags = np.asarray(self._open()["regions_done"][...])
        return {(int(i), int(j)) for i, j in zip(*np.nonzero(flags))}

    # -- writing ---------------------------------------------------------------------------------
    def _open(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(str(self.path), mode="r+")
        return self._group

    def write(self, index: tuple[int, int], bbox: Box2I, image: np.ndarray, mask: Any, variance: Any) -> None:
        """Write one region's planes, then mark it done (so a crash in between only redoes it)."""
        group = self._open()
        rows, cols = bbox.slices(self.bbox.getBegin())
        for name, plane in zip(_PLANES, (image, mask, variance)):
            if name in self.with_planes and plane is not None:
                group[name][rows, cols] = plane
        group["regions_done"][index[0], index[1]] = 1

    def finish(self, psf: Any) -> None:
        """Record the output PSF and mark the store complete."""
        group = self._open()
        group.attrs.update({"psf": _encode_psf(psf), "complete": True})

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_group"] = None  # reopened by path in each worker
        return state
