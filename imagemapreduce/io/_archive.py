"""The afw "archive" of an Exposure file: ARCHIVE_INDEX and ARCHIVE_DATA binary tables.

Only the PSF is interpreted: a `GaussianPsf` (``lsst.afw.detection``) or a `DoubleGaussianPsf`
(``lsst.meas.algorithms``), with the column names and types afw's persistence helpers use.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from astropy.io import fits

from ..psf import DoubleGaussianPsf, GaussianPsf
from ._errors import FitsFormatError
from ._layout import make_card

__all__ = ["read_psf", "archive_hdus"]

_log = logging.getLogger(__name__)

_AFW_TABLE_VERSION = 3

# (name, FITS format, doc, unit, afw field class) of afw's archive index catalog.
_INDEX_COLUMNS = (
    ("id", "1J", "Archive ID of the persistable object that owns the records pointed at by this entry", None),
    (
        "cat.archive",
        "1J",
        "index of the catalog this entry points to, from the perspective of the archive",
        None,
    ),
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

# Per PSF class: afw persistence name, python module, and columns (name, format, doc, unit, getter).
_PSF_SCHEMAS: dict[type, tuple[str, str, tuple]] = {
    GaussianPsf: (
        "GaussianPsf",
        "lsst.afw.detection",
        (
            (
                "dimensions_x",
                "1J",
                "width/height of realization of Psf",
                "pixel",
                lambda p: p.getDimensions().x,
            ),
            (
                "dimensions_y",
                "1J",
                "width/height of realization of Psf",
                "pixel",
                lambda p: p.getDimensions().y,
            ),
            ("sigma", "1D", "radius of Gaussian", "pixel", lambda p: p.getSigma()),
        ),
    ),
    DoubleGaussianPsf: (
        "DoubleGaussianPsf",
        "lsst.meas.algorithms",
        (
            ("dimensions_x", "1J", "width/height of kernel", "pixel", lambda p: p.getDimensions().x),
            ("dimensions_y", "1J", "width/height of kernel", "pixel", lambda p: p.getDimensions().y),
            ("sigma1", "1D", "radius of inner Gaussian", "pixel", lambda p: p.getSigma1()),
            ("sigma2", "1D", "radius of outer Gaussian", "pixel", lambda p: p.getSigma2()),
            (
                "b",
                "1D",
                "central amplitude of outer Gaussian (inner amplitude == 1)",
                None,
                lambda p: p.getB(),
            ),
        ),
    ),
}


# -- reading ------------------------------------------------------------------------------------
def _header_int(header: fits.Header, key: str) -> int | None:
    value = header.get(key)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def _find_index(hdul: fits.HDUList, path: str) -> int:
    ar_hdu = _header_int(hdul[0].header, "AR_HDU")
    if ar_hdu is not None and 1 <= ar_hdu <= len(hdul):
        candidate = hdul[ar_hdu - 1]  # AR_HDU counts from 1
        if isinstance(candidate, fits.BinTableHDU):
            return ar_hdu - 1
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, fits.BinTableHDU) and str(hdu.header.get("EXTTYPE", "")).strip() == "ARCHIVE_INDEX":
            return i
    raise FitsFormatError(
        f"the primary header gives a PSF archive id but there is no ARCHIVE_INDEX table (AR_HDU = {ar_hdu})",
        path,
        0,
    )


def _column(data: Any, names: tuple[str, ...], path: str, hdu: int) -> Any:
    for name in names:
        if name in data.columns.names:
            return data[name]
    raise FitsFormatError(f"archive table lacks column {names[0]!r} (has {data.columns.names})", path, hdu)


def _data_hdu(hdul: fits.HDUList, index_hdu: int, catalog: int, path: str) -> int:
    for i in range(index_hdu + 1, len(hdul)):
        if _header_int(hdul[i].header, "AR_CATN") == catalog:
            return i
    i = index_hdu + catalog  # files without AR_CATN: catalogs follow the index in order
    if catalog >= 1 and i < len(hdul) and isinstance(hdul[i], fits.BinTableHDU):
        return i
    raise FitsFormatError(f"archive catalog {catalog} named in the index is missing", path, index_hdu)


def read_psf(hdul: fits.HDUList, path: str) -> Any:
    """Return the exposure's PSF from the archive, `None` if it has none or of a type not supported."""
    primary = hdul[0].header
    psf_id = _header_int(primary, "ARCHIVE_ID_PSF") or _header_int(primary, "PSF_ID")
    if not psf_id:
        return None
    index_hdu = _find_index(hdul, path)
    index = hdul[index_hdu].data
    ids = np.asarray(_column(index, ("id",), path, index_hdu))
    rows = np.flatnonzero(ids == psf_id)
    if rows.size == 0:
        raise FitsFormatError(f"PSF archive id {psf_id} is not in the archive index", path, index_hdu)
    row = index[int(rows[0])]
    name = str(row["name"]).strip()
    schema = next((s for s in _PSF_SCHEMAS.values() if s[0] == name), None)
    if schema is None:
        _log.warning(
            "%s: the PSF (archive id %d) is a %s, which imagemapreduce cannot read; the exposure gets no PSF",
            path,
            psf_id,
            name,
        )
        return None
    catalog = int(_column(index, ("cat.archive", "cat_archive"), path, index_hdu)[rows[0]])
    row0 = int(_column(index, ("row0",), path, index_hdu)[rows[0]])
    data_hdu = _data_hdu(hdul, index_hdu, catalog, path)
    data = hdul[data_hdu].data
    if data is None or not 0 <= row0 < len(data):
        raise FitsFormatError(f"{name} row {row0} is missing from the archive table", path, data_hdu)
    values = []
    for column, *_ in schema[2]:
        alternatives = (column, column.replace("_", "."))
        values.append(_column(data, alternatives, path, data_hdu)[row0].item())
    cls = GaussianPsf if name == "GaussianPsf" else DoubleGaussianPsf
    try:
        return cls(*values)
    except (TypeError, ValueError) as exc:
        raise FitsFormatError(f"invalid {name} parameters {values}: {exc}", path, data_hdu) from None


# -- writing ------------------------------------------------------------------------------------
def _table(columns: tuple, arrays: list, extra: list[tuple[str, Any, str]]) -> fits.BinTableHDU:
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


def archive_hdus(psf: Any, where: str) -> tuple[list[fits.BinTableHDU], list[tuple[str, Any, str]]]:
    """Return afw's archive tables holding ``psf`` and the primary cards that point to it.

    The index is always written, as afw does for every Exposure. A PSF of another type is skipped
    with a logged warning.
    """
    catalogs: list[fits.BinTableHDU] = []
    index_rows: list[tuple] = []
    cards: list[tuple[str, Any, str]] = []
    schema = _PSF_SCHEMAS.get(type(psf)) if psf is not None else None
    if psf is not None and schema is None:
        _log.warning(
            "%s: a %s cannot be persisted in an afw archive (only GaussianPsf and DoubleGaussianPsf); "
            "the PSF is not written",
            where,
            type(psf).__name__,
        )
    if schema is not None:
        name, module, columns = schema
        psf_id, catalog = 1, 1
        data = _table(
            columns,
            [[getter(psf)] for *_, getter in columns],
            [
                ("EXTTYPE", "ARCHIVE_DATA", ""),
                ("AR_CATN", catalog, "# of this catalog relative to the start of this archive"),
                ("AR_NAME", name, "Class name for objects stored here"),
                ("EXTNAME", name, ""),
                ("AFW_TABLE_VERSION", _AFW_TABLE_VERSION, ""),
            ],
        )
        catalogs.append(data)
        index_rows.append((psf_id, catalog, 0, 0, 1, name, module))
        comment = "archive ID for generic component 'PSF'"
        cards += [("PSF_ID", psf_id, comment), ("ARCHIVE_ID_PSF", psf_id, comment)]
    index_arrays: list[Any] = [list(column) for column in zip(*index_rows, strict=True)]
    if not index_rows:
        index_arrays = [np.zeros(0, np.int32)] * 5 + [np.zeros(0, "S64")] * 2
    index = _table(
        _INDEX_COLUMNS,
        index_arrays,
        [
            ("EXTTYPE", "ARCHIVE_INDEX", ""),
            ("EXTNAME", "ARCHIVE_INDEX", ""),
            ("AR_CATN", 0, "# of this catalog relative to the start of this archive"),
            ("AR_NCAT", 1 + len(catalogs), "# of catalogs in this archive, including the index"),
            ("AFW_TABLE_VERSION", _AFW_TABLE_VERSION, ""),
        ],
    )
    return [index, *catalogs], cards
