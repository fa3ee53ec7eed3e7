"""A catalog written as a Parquet dataset, part by part, that a resume can trust.

Layout of ``catalog.parquet/`` (a folder, or a prefix on object storage)::

    _imagemapreduce.json        the job: format, fingerprint, the parts and their cells
    part-000000.parquet         the rows the cells of part 0 own (astropy's Parquet layout:
    part-000000.json            units and metadata kept); its record: the job's fingerprint,
    ...                         the file's SHA-256, its rows and cells' timings and failures

Any Parquet reader reads the folder as one dataset (files starting with ``_`` and the ``.json``
records are not Parquet; `read_catalog` and `open_catalog` pass only the parts). A part's
Parquet file is written first under a temporary name and moved into place, then its record; a
part counts as done only when its record holds the job's fingerprint and the file's checksum
matches the record. Records are JSON: nothing read back is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

from .locations import StoreLocation

__all__ = ["CatalogStore", "PartRecord", "open_catalog", "read_catalog", "MANIFEST_NAME", "FORMAT"]

#: The job file at the top of a catalog dataset.
MANIFEST_NAME = "_imagemapreduce.json"
#: What the job file says the folder is.
FORMAT = "imagemapreduce-catalog"


def part_name(number: int) -> str:
    """The file name of part ``number`` (without its extension)."""
    return f"part-{number:06d}"


@dataclass
class PartRecord:
    """What a written part's record holds (its ``.json``)."""

    part: int
    fingerprint: dict[str, str]
    sha256: str
    rows: int
    outside: int
    duplicates: int
    summaries: list[list[Any]]  # (cell, wall s, cpu s, worker) per cell of the part
    failures: list[dict[str, Any]]

    def to_json(self) -> bytes:
        """The record as UTF-8 JSON."""
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PartRecord:
        """Read a record; raise `ValueError` for anything that is not one."""
        try:
            fields = json.loads(data.decode())
            return cls(**{name: fields[name] for name in cls.__dataclass_fields__})
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a part record: {exc}") from exc


class CatalogStore:
    """The Parquet dataset of one catalog run, on a local disk or object storage.

    Parameters
    ----------
    where : `str`, path-like or `StoreLocation`
        The folder (``catalog.parquet``) or an fsspec URL.
    storage_options : `dict`, optional
        For a URL: the fsspec file system's options.
    """

    def __init__(self, where: Any, storage_options: dict[str, Any] | None = None):
        self.location = StoreLocation(where, storage_options)

    # -- the job ---------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        """The job file's contents, or None when there is none (no catalog here)."""
        fs = self.location.fs
        path = self.location.child(MANIFEST_NAME)
        fs.invalidate_cache(self.location.root)
        if not fs.exists(path):
            return None
        try:
            manifest = json.loads(fs.cat_file(path).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{self.location}: {MANIFEST_NAME} is not valid JSON ({exc}); it is no catalog of ours"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"{self.location} holds a {MANIFEST_NAME} of another kind; it is no catalog of ours")
        return manifest

    def create(self, fingerprint: dict[str, str], parts: list[list[int]], overwrite: bool) -> None:
        """Start a new catalog: refuse an existing one unless ``overwrite`` (and never other data)."""
        if self.location.exists():
            if not overwrite:
                raise FileExistsError(
                    f"{self.location} exists: pass overwrite=True to replace it, or resume=True to finish its run"
                )
            self.remove()
        self.location.fs.makedirs(self.location.root, exist_ok=True)
        self._write_manifest(fingerprint, parts, complete=False)

    def remove(self) -> None:
        """Delete a catalog written by us; refuse anything else."""
        if not self.location.exists():
            return
        if self.manifest() is None and not self._is_empty():
            raise FileExistsError(
                f"{self.location} exists and is not a catalog written by imagemapreduce, so it is not deleted; "
                "choose another path"
            )
        self.location.fs.rm(self.location.root, recursive=True)
        self.location.fs.invalidate_cache(self.location.root)

    def _is_empty(self) -> bool:
        fs = self.location.fs
        return fs.isdir(self.location.root) and not fs.ls(self.location.root)

    def _write_manifest(
        self, fingerprint: dict[str, str], parts: list[list[int]], complete: bool, **extra: Any
    ) -> None:
        body = {"format": FORMAT, "version": 1, "fingerprint": fingerprint, "parts": parts, "complete": complete}
        body.update(extra)
        self._put(MANIFEST_NAME, json.dumps(body, sort_keys=True).encode())

    def finish(self, fingerprint: dict[str, str], parts: list[list[int]], **totals: Any) -> None:
        """Mark the run complete, with its totals."""
        self._write_manifest(fingerprint, parts, complete=True, **totals)

    # -- parts -------------------------------------------------------------------------------------------
    def write_part(self, number: int, table: Any, record: PartRecord) -> PartRecord:
        """Write part ``number``'s rows, then its record (with the file's checksum filled in)."""
        with tempfile.TemporaryDirectory(prefix="imr-part-") as folder:
            local = os.path.join(folder, "part.parquet")
            table.write(local, format="parquet")
            with open(local, "rb") as handle:
                data = handle.read()
        record.sha256 = hashlib.sha256(data).hexdigest()
        record.rows = len(table)
        self._put(part_name(number) + ".parquet", data)
        self._put(part_name(number) + ".json", record.to_json())
        return record

    def verified_parts(self, fingerprint: dict[str, str], count: int) -> tuple[dict[int, PartRecord], dict[int, str]]:
        """The parts that are done and intact, and why each other written part is not.

        Returns ``(good, repaired)``: ``good`` maps a part to its record; ``repaired`` maps a part
        whose file or record is there but cannot be trusted to the reason.
        """
        fs = self.location.fs
        fs.invalidate_cache(self.location.root)
        good: dict[int, PartRecord] = {}
        repaired: dict[int, str] = {}
        for number in range(count):
            base = self.location.child(part_name(number))
            has_record, has_data = fs.exists(base + ".json"), fs.exists(base + ".parquet")
            if not has_record:
                if has_data:
                    repaired[number] = "its rows were written but not its record (the run stopped in between)"
                continue
            try:
                record = PartRecord.from_json(fs.cat_file(base + ".json"))
            except ValueError as exc:
                repaired[number] = str(exc)
                continue
            if record.fingerprint != fingerprint or record.part != number:
                repaired[number] = "its record belongs to another job"
            elif not has_data:
                repaired[number] = "its Parquet file is missing"
            elif hashlib.sha256(fs.cat_file(base + ".parquet")).hexdigest() != record.sha256:
                repaired[number] = "its Parquet file does not match its checksum"
            else:
                good[number] = record
        return good, repaired

    def records(self, count: int) -> list[PartRecord]:
        """Every part's record, in part order (after a complete run)."""
        fs = self.location.fs
        return [PartRecord.from_json(fs.cat_file(self.location.child(part_name(n) + ".json"))) for n in range(count)]

    def part_paths(self, count: int) -> list[str]:
        """The Parquet files of the parts, in order, as the file system names them."""
        return [self.location.child(part_name(n) + ".parquet") for n in range(count)]

    def _put(self, name: str, data: bytes) -> None:
        """Write ``data`` as ``name``: to a temporary object first, then moved, so no reader sees half."""
        fs = self.location.fs
        target = self.location.child(name)
        if self.location.local is not None:
            temporary = f"{target}.{uuid.uuid4().hex}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.replace(temporary, target)  # atomic on one file system
        else:
            fs.pipe_file(target, data)  # an object store's put is atomic per object


def read_catalog(where: Any, *, storage_options: dict[str, Any] | None = None) -> Any:
    """Read a whole catalog written by ``runToParquet`` as one astropy `~astropy.table.Table`.

    Parameters
    ----------
    where : `str` or path-like
        The catalog's folder or URL.
    storage_options : `dict`, optional
        For a URL: the fsspec file system's options.

    Raises
    ------
    ValueError
        When the folder holds no complete catalog run.
    """
    from astropy.table import Table, vstack

    store, count = _complete(where, storage_options)
    fs = store.location.fs
    tables = []
    for path in store.part_paths(count):
        with fs.open(path, "rb") as handle, tempfile.TemporaryDirectory(prefix="imr-part-") as folder:
            local = os.path.join(folder, "part.parquet")
            with open(local, "wb") as out:
                out.write(handle.read())
            tables.append(Table.read(local, format="parquet"))
    manifest = store.manifest() or {}
    catalog = vstack(tables, join_type="exact", metadata_conflicts="silent") if tables else Table()
    catalog.meta = {key: manifest[key] for key in ("dropped_outside_cores", "dropped_duplicates") if key in manifest}
    return catalog


def open_catalog(where: Any, *, storage_options: dict[str, Any] | None = None) -> Any:
    """A catalog written by ``runToParquet`` as a lazy ``dask.dataframe.DataFrame`` (one partition per part).

    Each partition is one part's Parquet file, read with pyarrow where it is computed.
    """
    import dask.dataframe as dd

    store, count = _complete(where, storage_options)
    return dd.from_map(_PartReader(store.location), range(count))


class _PartReader:
    """Reads one part as a pandas DataFrame (picklable: the location opens its file system where used)."""

    def __init__(self, location: StoreLocation):
        self.location = location

    def __call__(self, number: int) -> Any:
        import pyarrow.parquet as pq

        with self.location.fs.open(self.location.child(part_name(number) + ".parquet"), "rb") as handle:
            return pq.read_table(handle).to_pandas()


def _complete(where: Any, storage_options: dict[str, Any] | None) -> tuple[CatalogStore, int]:
    store = CatalogStore(where, storage_options)
    manifest = store.manifest()
    if manifest is None:
        raise ValueError(f"{store.location} holds no catalog written by imagemapreduce ({MANIFEST_NAME} is missing)")
    if not manifest.get("complete"):
        raise ValueError(f"{store.location} holds an unfinished run: finish it with runToParquet(..., resume=True)")
    return store, len(manifest["parts"])
