"""The afw "archive" of an Exposure file: an ARCHIVE_INDEX table and the ARCHIVE_DATA tables it points to.

afw persists an exposure's objects (PSF, SkyWcs, PhotoCalib, Detector, FilterLabel, transmission
curves, ValidPolygon, ...) as rows of binary tables. The index has one row per (object id, catalog)
pair: ``id``, ``cat.archive`` (the catalog, counted from the index = 0), ``cat.persistable`` (which of
the object's catalogs), ``row0``, ``nrows``, ``name`` (the class) and ``module``. The primary header
names each component's id (``ARCHIVE_ID_<COMPONENT>``, and the older ``<COMPONENT>_ID``).

Reading validates the index against the tables (`read_archive`) and returns an `AfwArchive`: the
tables as read, which a write carries to the new file (`ArchiveWriter`). Objects are carried
unchanged and keep their ids, because they refer to each other by id from columns whose meaning only
their own class knows (a Detector's ``transformMap``, a PhotoCalib's ``field``...): the only
renumbering that is safe for opaque objects is of the catalogs, which only the index refers to.
Only the PSF is interpreted (`imagemapreduce.io._archive_psf`).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits

from ._errors import FitsFormatError
from ._layout import ARCHIVE_ID_KEYS, make_card

__all__ = ["ARCHIVE_METADATA_KEY", "PSF_DEPENDENT", "AfwArchive", "ArchiveWriter", "IndexEntry", "read_archive"]

_log = logging.getLogger(__name__)

#: The key under which `read_exposure` puts the file's `AfwArchive` in ``exposure.getMetadata()``:
#: metadata travels with every copy and view of an exposure, and through a Task run, to the writer.
ARCHIVE_METADATA_KEY = "afw.archive"

#: Components that describe the PSF: replaced (or dropped) together when the exposure's PSF changes.
PSF_DEPENDENT = frozenset({"PSF", "AP_CORR_MAP", "SUMMARY_STATS"})

_AFW_TABLE_VERSION = 3
_BLOCK = 2880  # bytes in a FITS block
_CARD = 80

# (name, FITS format, doc, unit) of afw's archive index catalog.
INDEX_COLUMNS = (
    ("id", "1J", "Archive ID of the persistable object that owns the records pointed at by this entry", None),
    ("cat.archive", "1J", "index of the catalog this entry points to, from the perspective of the archive", None),
    (
        "cat.persistable",
        "1J",
        "index of the catalog this entry points to, from the perspective of the Persistable",
        None,
    ),  # noqa: E501
    ("row0", "1J", "first row used by the persistable object in this catalog", None),
    ("nrows", "1J", "number of rows used by the persistable object in this catalog", None),
    ("name", "64A", "unique name for the persistable object's class", None),
    ("module", "64A", "Python module that should be imported to register the object's factory", None),
)


@dataclass(frozen=True)
class IndexEntry:
    """One row of the archive index: ``nrows`` rows from ``row0`` of catalog ``catalog`` belong to ``id``."""

    id: int
    catalog: int
    persistable: int
    row0: int
    nrows: int
    name: str
    module: str


@dataclass
class AfwArchive:
    """The archive of an Exposure file, as read: carried unchanged to the files it is written to.

    Attributes
    ----------
    entries : `list` of `IndexEntry`
        The index rows, in file order.
    catalogs : `list` of `astropy.io.fits.BinTableHDU`
        The data catalogs as read (for the PSF reader); ``catalogs[k - 1]`` is catalog ``k``.
    raw : `list` of ``(header bytes, data bytes)``
        The same catalogs exactly as stored: a write copies these bytes, changing only ``AR_CATN``.
    keys : `dict` [`str`, `int`]
        The primary header's archive-id cards (``ARCHIVE_ID_PSF``, ``PSF_ID``, ``SKYWCS_ID``...).
    psf : object
        The PSF as read (`None` if the file has none, or one of a type not read): a write keeps the
        PSF's tables (and those of `PSF_DEPENDENT` components) only while the exposure's PSF is this one.
    source : `str`
        Where it was read, for messages.
    complete : `bool`
        False for a copy pickled to another process, which holds no tables and writes none.
    """

    entries: list[IndexEntry]
    catalogs: list[fits.BinTableHDU]
    raw: list[tuple[bytes, bytes]]
    keys: dict[str, int]
    psf: Any = None
    source: str = ""
    complete: bool = True
    _components: dict[str, set[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for key, value in self.keys.items():
            self._components.setdefault(component_of(key), set()).add(value)

    def component_ids(self, component: str) -> set[int]:
        """Return the archive ids the primary header gives ``component`` (``"PSF"``, ``"SKYWCS"``...)."""
        return set(self._components.get(component, set()))

    def names(self) -> dict[int, str]:
        """Return ``{archive id: class name}`` of every object in the index."""
        return {entry.id: entry.name for entry in self.entries}

    def __reduce__(self) -> tuple[Any, tuple]:
        # Cells of a map-reduce carry their exposure's metadata to the workers, which never write the
        # archive: send the small parts only. The tables stay with the caller's exposure.
        return (_detached, (self.keys, self.psf, self.source))


def _detached(keys: dict[str, int], psf: Any, source: str) -> AfwArchive:
    return AfwArchive([], [], [], {}, psf, source, complete=False)


def component_of(key: str) -> str:
    """Return the component an archive-id card names: ``ARCHIVE_ID_PSF`` and ``PSF_ID`` -> ``PSF``."""
    key = key.upper()
    return key[len("ARCHIVE_ID_") :] if key.startswith("ARCHIVE_ID_") else key[: -len("_ID")]


# -- reading ------------------------------------------------------------------------------------
def _header_int(header: fits.Header, key: str) -> int | None:
    value = header.get(key)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def _archive_keys(primary: fits.Header, path: str) -> dict[str, int]:
    keys: dict[str, int] = {}
    for card in primary.cards:
        key = card.keyword.upper()
        if key.startswith("ARCHIVE_ID_") or key in ARCHIVE_ID_KEYS:
            value = card.value
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise FitsFormatError(f"archive id card {key} = {value!r} is not a non-negative integer", path, 0)
            if value:
                keys[key] = int(value)
    return keys


def _find_index(hdul: fits.HDUList) -> int | None:
    ar_hdu = _header_int(hdul[0].header, "AR_HDU")
    if ar_hdu is not None and 1 <= ar_hdu <= len(hdul) and isinstance(hdul[ar_hdu - 1], fits.BinTableHDU):
        return ar_hdu - 1  # AR_HDU counts from 1
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, fits.BinTableHDU) and str(hdu.header.get("EXTTYPE", "")).strip() == "ARCHIVE_INDEX":
            return i
    return None


def _int_column(data: Any, names: tuple[str, ...], path: str, hdu: int) -> np.ndarray:
    for name in names:
        if name in data.columns.names:
            values = np.asarray(data[name])
            if values.dtype.kind not in "iu" or values.ndim != 1:
                raise FitsFormatError(f"archive index column {name!r} must hold integers", path, hdu)
            return values.astype(np.int64)
    raise FitsFormatError(f"archive index lacks column {names[0]!r} (has {data.columns.names})", path, hdu)


def _str_column(data: Any, name: str, path: str, hdu: int) -> list[str]:
    if name not in data.columns.names:
        raise FitsFormatError(f"archive index lacks column {name!r} (has {data.columns.names})", path, hdu)
    values = np.asarray(data[name])
    if values.dtype.kind not in "SU":
        raise FitsFormatError(f"archive index column {name!r} must hold strings", path, hdu)
    return [v.decode("ascii", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _index_entries(hdul: fits.HDUList, index_hdu: int, path: str) -> list[IndexEntry]:
    data = hdul[index_hdu].data
    if data is None:
        return []
    int_columns = (
        ("id",),
        ("cat.archive", "cat_archive"),
        ("cat.persistable", "cat_persistable"),
        ("row0",),
        ("nrows",),
    )
    columns = [_int_column(data, names, path, index_hdu) for names in int_columns]
    names, modules = (_str_column(data, name, path, index_hdu) for name in ("name", "module"))
    ids, cats, persistables, row0s, counts = (column.tolist() for column in columns)
    return [
        IndexEntry(ids[k], cats[k], persistables[k], row0s[k], counts[k], names[k].strip(), modules[k].strip())
        for k in range(len(names))
    ]


def _catalog_hdus(hdul: fits.HDUList, index_hdu: int, ncat: int, path: str) -> list[int]:
    """Return the HDU of each data catalog 1..ncat-1: by ``AR_CATN``, else in order after the index."""
    by_number: dict[int, int] = {}
    for i in range(index_hdu + 1, len(hdul)):
        number = _header_int(hdul[i].header, "AR_CATN")
        if number is not None and isinstance(hdul[i], fits.BinTableHDU):
            by_number.setdefault(number, i)
    found = []
    for number in range(1, ncat):
        i = by_number.get(number, index_hdu + number)
        if i >= len(hdul) or not isinstance(hdul[i], fits.BinTableHDU):
            raise FitsFormatError(f"archive catalog {number} (of {ncat - 1}) is missing", path, index_hdu)
        found.append(i)
    return found


def _validate(entries: list[IndexEntry], catalogs: list[fits.BinTableHDU], hdus: list[int], path: str, index_hdu: int):
    for entry in entries:
        if entry.id <= 0:
            raise FitsFormatError(
                f"archive index row for a {entry.name} has id {entry.id}; ids are > 0", path, index_hdu
            )
        if not 1 <= entry.catalog <= len(catalogs):
            raise FitsFormatError(
                f"archive object {entry.id} ({entry.name}) points to catalog {entry.catalog}, but the archive "
                f"has catalogs 1..{len(catalogs)}",
                path,
                index_hdu,
            )
        rows = catalogs[entry.catalog - 1].data
        length = 0 if rows is None else len(rows)
        if entry.row0 < 0 or entry.nrows < 0 or entry.row0 + entry.nrows > length:
            raise FitsFormatError(
                f"archive object {entry.id} ({entry.name}) claims rows {entry.row0}..{entry.row0 + entry.nrows - 1} "
                f"of catalog {entry.catalog}, which has {length} rows",
                path,
                hdus[entry.catalog - 1],
            )


def _raw_hdus(hdul: fits.HDUList, hdus: list[int], path: str) -> list[tuple[bytes, bytes]]:
    """Return the stored bytes (header, data with heap and padding) of each HDU in ``hdus``."""
    raw = []
    with open(path, "rb") as stream:
        for i in hdus:
            info = hdul[i].fileinfo()
            stream.seek(info["hdrLoc"])
            header = stream.read(info["datLoc"] - info["hdrLoc"])
            data = stream.read(info["datSpan"])
            if len(header) % _BLOCK or len(data) % _BLOCK:
                raise FitsFormatError("archive table is not a whole number of FITS blocks", path, i)
            raw.append((header, data))
    return raw


def read_archive(hdul: fits.HDUList, path: str, read_psf: Any = None) -> AfwArchive | None:
    """Read and validate the archive of ``hdul``; `None` if the file has none.

    ``read_psf(archive, psf_id)`` interprets the PSF. Raises `FitsFormatError` for an index whose
    columns, catalogs or row ranges do not hold together, or primary ids missing from the index.
    """
    keys = _archive_keys(hdul[0].header, path)
    index_hdu = _find_index(hdul)
    if index_hdu is None:
        if keys:
            raise FitsFormatError(
                f"the primary header gives archive ids ({', '.join(sorted(keys))}) but there is no ARCHIVE_INDEX table",
                path,
                0,
            )
        return None
    entries = _index_entries(hdul, index_hdu, path)
    ncat = _header_int(hdul[index_hdu].header, "AR_NCAT")
    if ncat is None or ncat < 1:
        ncat = 1 + max((e.catalog for e in entries), default=0)
    hdus = _catalog_hdus(hdul, index_hdu, ncat, path)
    catalogs = [hdul[i] for i in hdus]
    _validate(entries, catalogs, hdus, path, index_hdu)
    raw = _raw_hdus(hdul, hdus, path)
    known = {entry.id for entry in entries}
    for key, value in keys.items():
        if value not in known:
            raise FitsFormatError(f"primary card {key} = {value} names no object of the archive index", path, 0)
    archive = AfwArchive(entries, catalogs, raw, keys, None, os.fspath(path))
    if read_psf is not None:
        psf_ids = archive.component_ids("PSF")
        if len(psf_ids) > 1:
            raise FitsFormatError(f"the primary header gives the PSF two archive ids: {sorted(psf_ids)}", path, 0)
        if psf_ids:
            archive.psf = read_psf(archive, psf_ids.pop())
    return archive


def catalog_rows(archive: AfwArchive, entry: IndexEntry) -> Any:
    """Return the rows of ``entry`` (a slice of its catalog's table)."""
    data = archive.catalogs[entry.catalog - 1].data
    return data[entry.row0 : entry.row0 + entry.nrows]


# -- writing ------------------------------------------------------------------------------------
def make_table(columns: tuple, arrays: list, extra: list[tuple[str, Any, str]]) -> fits.BinTableHDU:
    """Build an afw-style table: columns ``(name, format, doc, unit)`` with TDOC/TCCLS cards, then ``extra``."""
    cols = [
        fits.Column(name=name, format=fmt, unit=unit, array=np.asarray(array))
        for (name, fmt, _doc, unit, *_), array in zip(columns, arrays, strict=True)
    ]
    hdu = fits.BinTableHDU.from_columns(cols)
    header = hdu.header
    # afw's per-field documentation and field class (astropy writes them after its own column cards).
    for n, (_name, fmt, doc, _unit, *_) in enumerate(columns, start=1):
        header.append(make_card(f"TDOC{n}", doc))
        field_class = "String" if fmt.endswith("A") else "Scalar"
        header.append(make_card(f"TCCLS{n}", field_class, "Field template used by lsst.afw.table"))
    for key, value, comment in extra:
        header.append(make_card(key, value, comment or None))
    return hdu


def _renumbered(header: bytes, number: int) -> bytes:
    """Return a stored table header with its ``AR_CATN`` card set to ``number`` (same length)."""
    cards = [header[i : i + _CARD] for i in range(0, len(header), _CARD)]
    card = fits.Card("AR_CATN", number, "# of this catalog relative to the start of this")
    for k, image in enumerate(cards):
        if image[:8] == b"AR_CATN ":
            cards[k] = card.image.encode("ascii")
            break
    return b"".join(cards)


class ArchiveWriter:
    """Assemble an archive: carried catalogs (renumbered) and objects, plus new ones.

    New objects of one class and schema share a catalog, as afw groups them.
    """

    def __init__(self) -> None:
        self.entries: list[IndexEntry] = []
        self.carried: list[bytes] = []
        self.keys: dict[str, int] = {}
        self._next_id = 1
        self._new: dict[tuple, tuple[int, list]] = {}  # (name, columns) -> (catalog number, rows)
        self._new_meta: dict[int, tuple[str, tuple]] = {}

    def carry(self, archive: AfwArchive, drop: frozenset[str]) -> None:
        """Copy ``archive``'s objects and primary keys, less the components in ``drop``."""
        dropped = set().union(*(archive.component_ids(c) for c in drop)) if drop else set()
        kept_keys = {k: v for k, v in archive.keys.items() if component_of(k) not in drop}
        dropped -= set(kept_keys.values())  # still named by a kept component
        entries = [e for e in archive.entries if e.id not in dropped]
        used = sorted({e.catalog for e in entries})
        renumber = {old: new for new, old in enumerate(used, start=1)}
        for old in used:
            header, data = archive.raw[old - 1]
            self.carried.append(_renumbered(header, renumber[old]) + data)
        self.entries += [
            IndexEntry(e.id, renumber[e.catalog], e.persistable, e.row0, e.nrows, e.name, e.module) for e in entries
        ]
        self.keys.update(kept_keys)
        self._next_id = max([self._next_id - 1, *(e.id for e in archive.entries)]) + 1

    def new_id(self) -> int:
        """Reserve the next free archive id."""
        self._next_id += 1
        return self._next_id - 1

    def add_rows(self, object_id: int, persistable: int, name: str, module: str, columns: tuple, rows: list) -> None:
        """Add ``rows`` (tuples in ``columns`` order) as catalog ``persistable`` of object ``object_id``."""
        key = (name, tuple(c[:2] for c in columns))
        if key not in self._new:
            number = len(self.carried) + len(self._new) + 1
            self._new[key] = (number, [])
            self._new_meta[number] = (name, columns)
        number, table = self._new[key]
        self.entries.append(IndexEntry(object_id, number, persistable, len(table), len(rows), name, module))
        table.extend(rows)

    def hdus(self) -> tuple[fits.BinTableHDU, bytes]:
        """Return the index, and the stored bytes of the catalogs that follow it (carried, then new)."""
        catalogs = []
        for number, table in sorted(self._new.values()):
            name, columns = self._new_meta[number]
            catalogs.append(
                make_table(
                    columns,
                    [list(column) for column in zip(*table, strict=True)],
                    [
                        ("EXTTYPE", "ARCHIVE_DATA", ""),
                        ("AR_CATN", number, "# of this catalog relative to the start of this archive"),
                        ("AR_NAME", name, "Class name for objects stored here"),
                        ("EXTNAME", name, ""),
                        ("AFW_TABLE_VERSION", _AFW_TABLE_VERSION, ""),
                    ],
                )
            )
        if self.entries:
            fields = ("id", "catalog", "persistable", "row0", "nrows", "name", "module")
            arrays: list[Any] = [[getattr(e, f) for e in self.entries] for f in fields]
        else:
            arrays = [np.zeros(0, np.int32)] * 5 + [np.zeros(0, "S64")] * 2
        index = make_table(
            INDEX_COLUMNS,
            arrays,
            [
                ("EXTTYPE", "ARCHIVE_INDEX", ""),
                ("EXTNAME", "ARCHIVE_INDEX", ""),
                ("AR_CATN", 0, "# of this catalog relative to the start of this archive"),
                (
                    "AR_NCAT",
                    1 + len(self.carried) + len(catalogs),
                    "# of catalogs in this archive, including the index",
                ),
                ("AFW_TABLE_VERSION", _AFW_TABLE_VERSION, ""),
            ],
        )
        return index, b"".join(self.carried) + _extension_bytes(catalogs)

    def cards(self) -> list[tuple[str, int, str]]:
        """Return the primary header's archive-id cards."""
        return [
            (key, value, f"archive ID for generic component '{component_of(key)}'") for key, value in self.keys.items()
        ]


def _extension_bytes(hdus: list[fits.BinTableHDU]) -> bytes:
    """Return ``hdus`` as stored after a primary HDU (astropy writes whole files: drop its empty primary)."""
    if not hdus:
        return b""
    stream = io.BytesIO()
    primary = fits.PrimaryHDU()
    fits.HDUList([primary, *hdus]).writeto(stream, output_verify="exception")
    return stream.getvalue()[len(primary.header.tostring()) :]
