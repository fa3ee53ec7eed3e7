"""Where a store lives: a local path or an fsspec URL (``s3://``, ``gs://``, ``memory://``, ``file://``).

A `StoreLocation` is what the zarr functions hand around instead of a path. It holds only the
URL and the storage options (never an open file system or store handle), so it pickles small and
each Dask worker that unpickles it opens the store itself. ``file://`` URLs and plain paths are
local: they keep every local behaviour (``flock`` locks, symlink-resolving comparisons).

Credentials and endpoints come from the storage options or, when these leave them out, from the
file system's standard environment (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, ``AWS_PROFILE``...), read where the store is opened.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

__all__ = ["StoreLocation", "is_url", "read_exposure_url"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LOCAL_PROTOCOLS = ("file", "local")
#: The marker objects of a zarr group (v3, v2).
GROUP_MARKERS = ("zarr.json", ".zgroup")
#: The modes `zarr.open_group` accepts.
ZarrMode = Literal["r", "r+", "a", "w", "w-"]


def is_url(where: Any) -> bool:
    """Whether ``where`` is a URL (``protocol://...``) rather than a local path."""
    return isinstance(where, str) and bool(_URL.match(where))


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


class StoreLocation:
    """A store's place: a local path, or a URL with its fsspec storage options.

    Parameters
    ----------
    where : `str`, path-like or `StoreLocation`
        A local path, or an fsspec URL.
    storage_options : `dict`, optional
        Passed to the fsspec file system of a URL (e.g. ``endpoint_url``, ``key``, ``secret``,
        ``anon`` for S3). Refused for a local path, where they would be silently ignored.
    """

    def __init__(self, where: Any, storage_options: dict[str, Any] | None = None):
        if isinstance(where, StoreLocation):
            storage_options = {**where.storage_options, **(storage_options or {})}
            where = where.url if where.local is None else where.local
        options = dict(storage_options or {})
        self.local: Path | None = None
        self.url: str
        self.storage_options: dict[str, Any]
        if is_url(where) and _protocol(where) not in _LOCAL_PROTOCOLS:
            self.url = where.rstrip("/")
        else:
            if options:
                raise ValueError(
                    f"storage_options apply to object storage URLs (s3://, gs://, ...), and {where} is a local "
                    "path: leave storage_options out"
                )
            if is_url(where):  # file://
                from fsspec.implementations.local import LocalFileSystem

                where = LocalFileSystem._strip_protocol(where)
            self.local = Path(where)
            self.url = str(where)
        self.storage_options = options
        self._fs: Any = None

    # -- the file system -----------------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec file system (opened on first use in each process)."""
        if self._fs is None:
            import fsspec

            if self.local is not None:
                self._fs = fsspec.filesystem("file")
            else:
                self._fs = fsspec.core.url_to_fs(self.url, **self.storage_options)[0]
        return self._fs

    @property
    def root(self) -> str:
        """The store's path inside its file system (``bucket/key`` for S3)."""
        if self.local is not None:
            return str(self.local.absolute())
        return self.fs._strip_protocol(self.url).rstrip("/")

    def child(self, name: str) -> str:
        """The file system path of the object ``name`` inside the store."""
        return f"{self.root}/{name}"

    def identity(self) -> str:
        """A normalised name for comparing locations (symlinks and ``..`` resolved for local paths)."""
        if self.local is not None:
            return os.path.realpath(self.local)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{self.root.lstrip('/')}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"StoreLocation({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None}  # never ship an open file system to a worker

    # -- what is there ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether anything is at the location (a file, a folder, or objects under the prefix)."""
        if self.local is not None:
            return self.local.exists() or self.local.is_symlink()
        self.fs.invalidate_cache(self.root)  # listings cached earlier may predate another writer's objects
        return bool(self.fs.exists(self.root))

    def is_group(self) -> bool:
        """Whether the location holds a zarr group (v3 ``zarr.json`` or v2 ``.zgroup``)."""
        if self.local is not None:
            return self.local.is_dir() and any((self.local / m).is_file() for m in GROUP_MARKERS)
        self.fs.invalidate_cache(self.root)
        return any(self.fs.isfile(self.child(m)) for m in GROUP_MARKERS)

    def is_local_dir(self) -> bool:
        """Whether the location is a local folder (not a symlink)."""
        return self.local is not None and self.local.is_dir() and not self.local.is_symlink()

    def remove_store(self) -> None:
        """Delete a zarr store, refusing anything that is not one (a store never destroys other data)."""
        if not self.exists():
            return
        if self.local is not None:
            if self.is_local_dir() and (self.is_group() or not any(self.local.iterdir())):
                shutil.rmtree(self.local)
                return
        elif self.is_group():
            self.fs.rm(self.root, recursive=True)
            self.fs.invalidate_cache(self.root)
            return
        raise FileExistsError(
            f"{self} exists and is not a zarr store, so overwrite=True will not delete it; choose another path"
        )

    # -- zarr -----------------------------------------------------------------------------------------
    def open_group(self, mode: ZarrMode) -> Any:
        """Open the zarr group at the location (``mode`` as for `zarr.open_group`)."""
        import zarr

        if self.local is not None:
            return zarr.open_group(str(self.local), mode=mode)
        options = self.storage_options or None
        try:  # zarr v3 first: looking for v2 and consolidated metadata costs a request each
            return zarr.open_group(self.url, mode=mode, storage_options=options, zarr_format=3, use_consolidated=False)
        except (FileNotFoundError, ValueError, KeyError) as error:
            if mode in ("w", "w-"):
                raise
            first = error
        try:
            return zarr.open_group(self.url, mode=mode, storage_options=options)
        except (FileNotFoundError, ValueError, KeyError):
            raise first from None

    def dask_array(self, component: str, chunks: Any = None, group: Any = None) -> Any:
        """A lazy Dask array of one array of the store, read where it is computed.

        The graph holds the zarr array's store, i.e. this URL and the storage options, never
        pixels: a Dask worker reads its blocks from the store itself. ``group`` is the store's
        group if already open.
        """
        import dask.array as da

        if self.local is not None:
            return da.from_zarr(str(self.local), component=component, chunks=chunks)
        return da.from_zarr((group or self.open_group("r"))[component], chunks=chunks)


def read_exposure_url(url: str, *, storage_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Read a FITS exposure from an fsspec URL (or a local path) with `imagemapreduce.io.read_exposure`.

    A URL's file is copied to a temporary local file, read whole (``lazy`` is refused: a lazy
    read needs the file to stay in place; zarr is the lazy format for object storage), and the
    copy deleted. Other keyword arguments are passed to `read_exposure`.
    """
    from .fits import FitsFormatError, read_exposure

    if not is_url(url) or _protocol(url) in _LOCAL_PROTOCOLS:
        return read_exposure(StoreLocation(url, storage_options).url, **kwargs)
    if kwargs.get("lazy"):
        raise ValueError(
            f"a FITS file at a URL ({url}) is read whole: pass lazy=False, or convert it to zarr "
            "(write_zarr_exposure) for lazy reads from object storage"
        )
    import fsspec

    with tempfile.TemporaryDirectory(prefix="imr-fits-") as folder:
        local = os.path.join(folder, os.path.basename(url.rstrip("/")) or "input.fits")
        with fsspec.open(url, "rb", **(storage_options or {})) as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 22)
        try:
            return read_exposure(local, **kwargs)
        except FitsFormatError as error:  # name the URL, not the temporary copy
            raise FitsFormatError(str(error).replace(local, url)) from None
