"""PSFs in afw's archive: GaussianPsf, DoubleGaussianPsf, CoaddPsf and WindowedCoaddPsf, and ours.

Column names and types are those of afw's persistence helpers (``GaussianPsf``: dimensions_x,
dimensions_y, sigma; ``DoubleGaussianPsf``: dimensions, sigma1, sigma2, b).

``CoaddPsf`` is written as ``lsst.meas.algorithms.CoaddPsf`` writes itself: two catalogs. The first
has one row: ``coaddwcs`` (the archive id of the coadd's SkyWcs), ``cachesize`` and
``warpingkernelname`` (afw's warping defaults, 10000 and ``lanczos3``: nothing is warped here) and
``avgpos_x/y`` (the weighted mean component position). The second is afw's ExposureCatalog, one row
per component: the archive ids ``wcs``, ``psf``, ``photoCalib``, ``apCorrMap``, ``validPolygon``,
``visitInfo``, ``transmissionCurve``, ``detector`` (0 = none), then ``id``, the box
``bbox_min_x ... bbox_max_y`` and ``weight``. Each distinct component PSF is its own archive object.
Our components are already in coadd pixels, so each component's WCS is the coadd's own: when the
exposure carries a SkyWcs in its archive, both ``coaddwcs`` and every ``wcs`` name it (an identity
warp for afw); otherwise they are 0.

``WindowedCoaddPsf`` has no afw counterpart; it is written in the same spirit under the class name
``WindowedCoaddPsf`` (module ``imagemapreduce.psf``): the same two catalogs, the first with two more
columns, ``windowkind`` (linear, cosine or gaussian) and ``windowgaussianwidth``.

The other built-in PSFs (`EllipticalGaussianPsf`, `MoffatPsf`, `KolmogorovPsf` and the varying
models: everything `psf_to_dict` describes) have no afw counterpart either. Each is one object
under its own class name (module ``imagemapreduce.psf``) with one catalog of one row and one
string column, ``document``: the JSON of `psf_to_dict`, read back by `psf_from_dict`, which
checks every field (data, never code). They may be coadd components too. afw reads none of these
classes: a file whose PSF is one is read by afw without its PSF.

Reading accepts only these classes and checks every value; a CoaddPsf whose components have WCSes
other than the coadd's (a real afw coadd, whose inputs need warping) is not read (logged).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np

from ..geom import Box2I, Point2I
from ..psf import CoaddPsf, DoubleGaussianPsf, GaussianPsf, PsfFormatError, WindowedCoaddPsf, psf_from_dict, psf_to_dict
from ..psf._persist import PERSISTABLE_PSFS
from ._archive import PSF_DEPENDENT, AfwArchive, ArchiveWriter, catalog_rows
from ._errors import FitsFormatError

__all__ = ["build_archive", "can_persist", "read_archive_psf", "write_archive_psf"]

_log = logging.getLogger(__name__)

_WARPING_CACHE_SIZE = 10000
_WARPING_KERNEL = "lanczos3"

_GAUSSIAN = (
    ("dimensions_x", "1J", "width/height of realization of Psf", "pixel"),
    ("dimensions_y", "1J", "width/height of realization of Psf", "pixel"),
    ("sigma", "1D", "radius of Gaussian", "pixel"),
)
_DOUBLE = (
    ("dimensions_x", "1J", "width/height of kernel", "pixel"),
    ("dimensions_y", "1J", "width/height of kernel", "pixel"),
    ("sigma1", "1D", "radius of inner Gaussian", "pixel"),
    ("sigma2", "1D", "radius of outer Gaussian", "pixel"),
    ("b", "1D", "central amplitude of outer Gaussian (inner amplitude == 1)", None),
)
_COADD = (
    ("coaddwcs", "1J", "archive ID of the coadd's WCS", None),
    ("cachesize", "1J", "size of the warping cache", None),
    ("avgpos_x", "1D", "PSF accessors default position", "pixel"),
    ("avgpos_y", "1D", "PSF accessors default position", "pixel"),
    ("warpingkernelname", "32A", "warping kernel name", None),
)
_WINDOW = (
    ("windowkind", "16A", "taper window of the component weights (linear, cosine, gaussian)", None),
    ("windowgaussianwidth", "1D", "sigma of a gaussian window, as a fraction of the box size", None),
)
_EXPOSURE_IDS = ("wcs", "psf", "photoCalib", "apCorrMap", "validPolygon", "visitInfo", "transmissionCurve", "detector")
_COMPONENTS = (
    *((name, "1J", f"archive ID for {name[:1].upper() + name[1:]} object", None) for name in _EXPOSURE_IDS),
    ("id", "1K", "unique ID", None),
    ("bbox_min_x", "1J", "bounding box (minimum)", "pixel"),
    ("bbox_min_y", "1J", "bounding box (minimum)", "pixel"),
    ("bbox_max_x", "1J", "bounding box (maximum)", "pixel"),
    ("bbox_max_y", "1J", "bounding box (maximum)", "pixel"),
    ("weight", "1D", "Coadd weight", None),
)

_SIMPLE: dict[type, tuple[str, str]] = {
    GaussianPsf: ("GaussianPsf", "lsst.afw.detection"),
    DoubleGaussianPsf: ("DoubleGaussianPsf", "lsst.meas.algorithms"),
}
_COADDS: dict[type, tuple[str, str]] = {
    CoaddPsf: ("CoaddPsf", "lsst.meas.algorithms"),
    WindowedCoaddPsf: ("WindowedCoaddPsf", "imagemapreduce.psf"),
}


#: Our PSF classes without an afw layout, written as their `psf_to_dict` document.
_DOCUMENTED: dict[type, str] = {
    cls: name for name, (cls, *_) in PERSISTABLE_PSFS.items() if cls not in _SIMPLE and cls not in _COADDS
}
_DOCUMENT_MODULE = "imagemapreduce.psf"
#: Longest document read back (a varying PSF's coefficients take a few hundred characters).
_MAX_DOCUMENT = 1 << 16


def _is_component(psf: Any) -> bool:
    return type(psf) in _SIMPLE or type(psf) in _DOCUMENTED


def can_persist(psf: Any) -> bool:
    """Whether ``psf`` (and, for a coadd PSF, every component) has an archive layout here."""
    if _is_component(psf):
        return True
    return type(psf) in _COADDS and all(_is_component(p) for p in psf._psfs)


# -- writing ------------------------------------------------------------------------------------
def _write_document(psf: Any, writer: ArchiveWriter) -> int:
    document = json.dumps(psf_to_dict(psf), sort_keys=True, allow_nan=False)
    # One fixed width per catalog: round up, so that documents of similar length share one.
    width = 64 * math.ceil(len(document) / 64)
    columns = (("document", f"{width}A", "the PSF as imagemapreduce.psf.psf_to_dict describes it (JSON)", None),)
    object_id = writer.new_id()
    writer.add_rows(object_id, 0, _DOCUMENTED[type(psf)], _DOCUMENT_MODULE, columns, [(document,)])
    return object_id


def _write_component(psf: Any, writer: ArchiveWriter) -> int:
    """Write a PSF that is not a coadd: in afw's layout where afw has one, else as its document."""
    return _write_document(psf, writer) if type(psf) in _DOCUMENTED else _write_simple(psf, writer)


def _write_simple(psf: Any, writer: ArchiveWriter) -> int:
    name, module = _SIMPLE[type(psf)]
    dims = psf.getDimensions()
    row: tuple[Any, ...]
    columns: tuple[tuple[str, str, str, str | None], ...]
    if isinstance(psf, GaussianPsf):
        row, columns = (dims.x, dims.y, psf.getSigma()), _GAUSSIAN
    else:
        row, columns = (dims.x, dims.y, psf.getSigma1(), psf.getSigma2(), psf.getB()), _DOUBLE
    object_id = writer.new_id()
    writer.add_rows(object_id, 0, name, module, columns, [row])
    return object_id


def write_archive_psf(psf: Any, writer: ArchiveWriter, wcs_id: int = 0) -> int:
    """Add ``psf`` to ``writer`` and return its archive id (``can_persist(psf)`` must hold)."""
    if _is_component(psf):
        return _write_component(psf, writer)
    name, module = _COADDS[type(psf)]
    object_id = writer.new_id()
    ids = [_write_component(p, writer) for p in psf._psfs]
    average = psf.getAveragePosition()
    header: tuple[Any, ...] = (wcs_id, _WARPING_CACHE_SIZE, average.x, average.y, _WARPING_KERNEL)
    columns: tuple[tuple[str, str, str, str | None], ...] = _COADD
    if isinstance(psf, WindowedCoaddPsf):
        weighting = getattr(psf, "_weighting")  # noqa: B009 - a slot mypy does not see
        header += (weighting.kind, float(weighting.gaussian_width))
        columns = _COADD + _WINDOW
    writer.add_rows(object_id, 0, name, module, columns, [header])
    rows = [
        (wcs_id, ids[int(k)], 0, 0, 0, 0, 0, 0, n, *(int(v) for v in box), float(weight))
        for n, (k, box, weight) in enumerate(zip(psf._psf_index, psf._bboxes, psf._weights, strict=True))
    ]
    writer.add_rows(object_id, 1, name, module, _COMPONENTS, rows)
    return object_id


# -- reading ------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, archive: AfwArchive) -> None:
        self.archive = archive
        self.path = archive.source
        self.by_id: dict[int, list] = {}
        for entry in archive.entries:
            self.by_id.setdefault(entry.id, []).append(entry)

    def fail(self, reason: str, entry: Any = None) -> FitsFormatError:
        where = f" (catalog {entry.catalog})" if entry is not None else ""
        return FitsFormatError(f"archive PSF{where}: {reason}", self.path)

    def entries(self, object_id: int, count: int) -> list:
        found = sorted(self.by_id.get(object_id, []), key=lambda e: e.persistable)
        if len(found) != count or [e.persistable for e in found] != list(range(count)):
            raise self.fail(f"object {object_id} needs {count} catalog(s) numbered 0..{count - 1}, has {len(found)}")
        return found

    def column(self, rows: Any, name: str, entry: Any) -> np.ndarray:
        names = rows.columns.names if hasattr(rows, "columns") else rows.dtype.names
        for candidate in (name, name.replace("_", ".")):
            if candidate in names:
                return np.asarray(rows[candidate])
        raise self.fail(f"{entry.name} table lacks column {name!r}", entry)

    def numbers(self, rows: Any, names: tuple[str, ...], entry: Any, integer: tuple[str, ...] = ()) -> list[list]:
        values = []
        for name in names:
            column = self.column(rows, name, entry)
            if column.dtype.kind not in ("iu" if name in integer else "iuf") or column.ndim != 1:
                raise self.fail(
                    f"{entry.name} column {name!r} must hold {'integers' if name in integer else 'numbers'}"
                )
            if column.dtype.kind == "f" and not np.isfinite(column).all():
                raise self.fail(f"{entry.name} column {name!r} holds a non-finite value", entry)
            values.append(column.tolist())
        return values

    def component(self, object_id: int) -> Any:
        """A PSF that is not a coadd: one catalog of one row, in afw's layout or ours (a document)."""
        (entry,) = self.entries(object_id, 1)
        rows = catalog_rows(self.archive, entry)
        if entry.nrows != 1:
            raise self.fail(f"{entry.name} {object_id} must have one row, has {entry.nrows}", entry)
        if entry.name in _DOCUMENTED.values():
            return self.document(rows, entry)
        return self.simple(rows, entry)

    def simple(self, rows: Any, entry: Any) -> Any:
        """A GaussianPsf or DoubleGaussianPsf in afw's layout."""
        names: tuple[str, ...]
        if entry.name == "GaussianPsf":
            names = ("dimensions_x", "dimensions_y", "sigma")
        elif entry.name == "DoubleGaussianPsf":
            names = ("dimensions_x", "dimensions_y", "sigma1", "sigma2", "b")
        else:
            raise self.fail(
                f"a coadd PSF component must be a GaussianPsf, a DoubleGaussianPsf or one of "
                f"{', '.join(sorted(_DOCUMENTED.values()))}, not {entry.name!r}"
            )
        values = [v[0] for v in self.numbers(rows, names, entry, integer=("dimensions_x", "dimensions_y"))]
        cls = GaussianPsf if entry.name == "GaussianPsf" else DoubleGaussianPsf
        try:
            return cls(*values)
        except (TypeError, ValueError) as exc:
            raise self.fail(f"invalid {entry.name} parameters {values}: {exc}", entry) from None

    def document(self, rows: Any, entry: Any) -> Any:
        """A PSF written as its `psf_to_dict` document: JSON, every field checked by `psf_from_dict`."""
        text = self.column(rows, "document", entry)[0]
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if len(text) > _MAX_DOCUMENT:
            raise self.fail(f"{entry.name} document is {len(text)} characters, more than {_MAX_DOCUMENT}", entry)
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise self.fail(f"{entry.name} document is not JSON: {exc}", entry) from None
        if not isinstance(doc, dict) or doc.get("type") != entry.name:
            raise self.fail(f"{entry.name} document must describe a {entry.name}", entry)
        try:
            return psf_from_dict(doc, f"{entry.name} document")
        except PsfFormatError as exc:
            raise self.fail(str(exc), entry) from None

    def coadd(self, object_id: int, name: str) -> Any:
        first, second = self.entries(object_id, 2)
        head = catalog_rows(self.archive, first)
        if first.nrows != 1:
            raise self.fail(f"{name} {object_id}: its first catalog must have one row, has {first.nrows}", first)
        (coadd_wcs,) = self.numbers(head, ("coaddwcs",), first, integer=("coaddwcs",))
        rows = catalog_rows(self.archive, second)
        if second.nrows == 0:
            raise self.fail(f"{name} {object_id} has no components", second)
        boxes = ("bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y")
        psf_ids, wcs_ids, *corners, weights = self.numbers(
            rows, ("psf", "wcs", *boxes, "weight"), second, integer=("psf", "wcs", *boxes)
        )
        if any(w != coadd_wcs[0] for w in wcs_ids):
            _log.warning(
                "%s: the %s's components have WCSes other than the coadd's (inputs that afw warps); "
                "imagemapreduce cannot evaluate it, and the exposure gets no PSF",
                self.path,
                name,
            )
            return None
        psfs: dict[int, Any] = {}
        components = []
        for k, psf_id in enumerate(psf_ids):
            if psf_id not in psfs:
                psfs[psf_id] = self.component(psf_id)
            x0, y0, x1, y1 = (c[k] for c in corners)
            components.append((psfs[psf_id], Box2I(Point2I(x0, y0), Point2I(x1, y1)), weights[k]))
        try:
            if name == "CoaddPsf":
                return CoaddPsf(components)
            return WindowedCoaddPsf(components, self.window(head, first))
        except (TypeError, ValueError) as exc:
            raise self.fail(f"invalid {name} {object_id}: {exc}", second) from None

    def window(self, head: Any, entry: Any) -> Any:
        from ..weights import Weighting

        kind = self.column(head, "windowkind", entry)[0]
        kind = (kind.decode("ascii", "replace") if isinstance(kind, bytes) else str(kind)).strip()
        (width,) = self.numbers(head, ("windowgaussianwidth",), entry)
        if kind not in ("linear", "cosine", "gaussian") or not (math.isfinite(width[0]) and width[0] > 0):
            raise self.fail(f"WindowedCoaddPsf window must be linear, cosine or gaussian, got {kind!r}", entry)
        return Weighting(kind, float(width[0]))


def read_archive_psf(archive: AfwArchive, psf_id: int) -> Any:
    """Return the PSF ``psf_id`` of ``archive``; `None` (logged) for a class not read here.

    Raises `FitsFormatError` for a table of a known class with missing columns or bad values.
    """
    reader = _Reader(archive)
    entries = reader.by_id.get(psf_id, [])
    if not entries:
        raise reader.fail(f"PSF archive id {psf_id} is not in the archive index")
    name = entries[0].name
    if name in ("GaussianPsf", "DoubleGaussianPsf", *_DOCUMENTED.values()):
        return reader.component(psf_id)
    if name in ("CoaddPsf", "WindowedCoaddPsf"):
        return reader.coadd(psf_id, name)
    _log.warning(
        "%s: the PSF (archive id %d) is a %s, which imagemapreduce cannot read; the exposure gets no PSF "
        "(its tables are still carried to a file written from it)",
        archive.source,
        psf_id,
        name,
    )
    return None


# -- the archive of a written exposure ----------------------------------------------------------
def _same_psf(psf: Any, carried: Any) -> bool:
    if psf is carried:
        return True
    try:
        return psf is not None and type(psf) is type(carried) and bool(psf == carried)
    except Exception:  # noqa: BLE001 - a third-party PSF's __eq__ may fail; then it is not the same
        return False


def build_archive(psf: Any, carried: AfwArchive | None, where: str) -> tuple[Any, bytes, list[tuple[str, int, str]]]:
    """Return the archive of a written exposure: its index, the catalogs' bytes, and the primary cards.

    The objects of ``carried`` (the archive the exposure was read with) are copied with their ids and
    primary keys. While the exposure's PSF is the one read, its tables and those of the
    `PSF_DEPENDENT` components are copied too; otherwise they are dropped, and ``psf`` is written in
    their place. A PSF without an archive layout is skipped with a logged warning.
    """
    writer = ArchiveWriter()
    keep_psf = False
    if carried is not None:
        if carried.complete:
            keep_psf = _same_psf(psf, carried.psf)
            writer.carry(carried, frozenset() if keep_psf else PSF_DEPENDENT)
        else:
            _log.warning(
                "%s: the exposure's afw archive (from %s) was copied to another process without its tables; "
                "its objects (SkyWcs, PhotoCalib, Detector...) are not written",
                where,
                carried.source,
            )
    if psf is not None and not keep_psf:
        if can_persist(psf):
            wcs_id = writer.keys.get("ARCHIVE_ID_SKYWCS", writer.keys.get("SKYWCS_ID", 0))
            psf_id = write_archive_psf(psf, writer, wcs_id)
            writer.keys["PSF_ID"] = writer.keys["ARCHIVE_ID_PSF"] = psf_id
        else:
            _log.warning(
                "%s: a %s cannot be persisted in an afw archive (the built-in PSFs, and CoaddPsf or "
                "WindowedCoaddPsf of those, can); the PSF is not written",
                where,
                type(psf).__name__,
            )
    index, catalogs = writer.hdus()
    return index, catalogs, writer.cards()
