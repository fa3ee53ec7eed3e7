"""PSFs as plain data (JSON-ready dicts): how stores record a PSF without pickling it.

Only the PSF classes named in `PERSISTABLE_PSFS` are written or read. A document names its class
by that short name and gives the constructor's numbers; reading one looks the name up in the
table, checks every field, and never imports a module or unpickles anything, so a crafted file
can at worst fail to load, with a `PsfFormatError` that says what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..geom import Box2I, Point2I
from ._base import Psf
from ._coadd import CoaddPsf
from ._gaussian import DoubleGaussianPsf, GaussianPsf
from ._profiles import EllipticalGaussianPsf, KolmogorovPsf, MoffatPsf
from ._varying import VaryingGaussianPsf, VaryingKolmogorovPsf, VaryingMoffatPsf
from ._windowed import WindowedCoaddPsf

__all__ = ["PERSISTABLE_PSFS", "PsfFormatError", "psf_to_dict", "psf_from_dict", "is_persistable"]


class PsfFormatError(ValueError):
    """A stored PSF document that cannot be read: unknown type, missing or malformed field."""


def _box_list(bbox: Box2I) -> list[int]:
    return [bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY()]


def _box(value: Any, where: str) -> Box2I:
    numbers = _int_list(value, where, 4)
    return Box2I(Point2I(numbers[0], numbers[1]), Point2I(numbers[2], numbers[3]))


def _int_list(value: Any, where: str, length: int | None = None) -> list[int]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise PsfFormatError(f"{where} must be a list of {length or 'some'} integers, got {value!r:.80}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise PsfFormatError(f"{where} must hold integers only, got {value!r:.80}")
    return value


def _number(doc: dict, name: str, where: str) -> float:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PsfFormatError(f"{where}: field {name!r} must be a finite number, got {value!r:.80}")
    return float(value)


def _integer(doc: dict, name: str, where: str) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PsfFormatError(f"{where}: field {name!r} must be an integer, got {value!r:.80}")
    return value


def _coefficients(doc: dict, name: str, where: str) -> list[list[float]]:
    value = doc.get(name)
    rows = value if isinstance(value, list) and value and all(isinstance(r, list) for r in value) else None
    if rows is None or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for r in rows for v in r
    ):
        raise PsfFormatError(f"{where}: field {name!r} must be a non-empty list of lists of numbers")
    return rows


# -- one writer and one reader per class ------------------------------------------------------------
def _gaussian_doc(psf: GaussianPsf) -> dict:
    width, height, sigma = psf._key()
    return {"width": width, "height": height, "sigma": sigma}


def _gaussian(doc: dict, where: str) -> GaussianPsf:
    return GaussianPsf(_integer(doc, "width", where), _integer(doc, "height", where), _number(doc, "sigma", where))


def _double_gaussian_doc(psf: DoubleGaussianPsf) -> dict:
    width, height, sigma1, sigma2, b = psf._key()
    return {"width": width, "height": height, "sigma1": sigma1, "sigma2": sigma2, "b": b}


def _double_gaussian(doc: dict, where: str) -> DoubleGaussianPsf:
    numbers = [_number(doc, name, where) for name in ("sigma1", "sigma2", "b")]
    return DoubleGaussianPsf(_integer(doc, "width", where), _integer(doc, "height", where), *numbers)


def _varying_doc(psf: VaryingGaussianPsf | VaryingMoffatPsf | VaryingKolmogorovPsf) -> dict:
    width, height, coeffs, _, *rest = psf._key()
    doc = {"width": width, "height": height, "coefficients": [list(r) for r in coeffs], "bbox": _box_list(psf._bbox)}
    if isinstance(psf, VaryingMoffatPsf):
        doc["beta"] = rest[0]
    # Shear and pixel response only when used, so that documents of round, sampled PSFs are as before.
    g1, g2 = psf.getShearCoefficients()
    if psf.isElliptical():
        doc["g1"], doc["g2"] = g1.tolist(), g2.tolist()
    if psf.isPixelIntegrated() != isinstance(psf, VaryingKolmogorovPsf):
        doc["pixelIntegrated"] = psf.isPixelIntegrated()
    return doc


def _flag(doc: dict, name: str, where: str, default: bool) -> bool:
    value = doc.get(name, default)
    if not isinstance(value, bool):
        raise PsfFormatError(f"{where}: field {name!r} must be true or false, got {value!r:.80}")
    return value


def _varying_extras(
    doc: dict, where: str, pixel_default: bool
) -> tuple[float | list[list[float]], float | list[list[float]], bool]:
    g1 = _coefficients(doc, "g1", where) if "g1" in doc else 0.0
    g2 = _coefficients(doc, "g2", where) if "g2" in doc else 0.0
    return g1, g2, _flag(doc, "pixelIntegrated", where, pixel_default)


def _varying_common(doc: dict, where: str) -> tuple[int, int, list[list[float]], Box2I]:
    return (
        _integer(doc, "width", where),
        _integer(doc, "height", where),
        _coefficients(doc, "coefficients", where),
        _box(doc.get("bbox"), f"{where}: bbox"),
    )


def _varying_gaussian(doc: dict, where: str) -> VaryingGaussianPsf:
    return VaryingGaussianPsf(*_varying_common(doc, where), *_varying_extras(doc, where, False))


def _varying_moffat(doc: dict, where: str) -> VaryingMoffatPsf:
    return VaryingMoffatPsf(
        *_varying_common(doc, where), _number(doc, "beta", where), *_varying_extras(doc, where, False)
    )


def _varying_kolmogorov(doc: dict, where: str) -> VaryingKolmogorovPsf:
    return VaryingKolmogorovPsf(*_varying_common(doc, where), *_varying_extras(doc, where, True))


#: The constant profile PSFs: their constructor's number fields after width and height.
_PROFILE_FIELDS: dict[type, tuple[str, ...]] = {
    EllipticalGaussianPsf: ("sigma",),
    MoffatPsf: ("fwhm", "beta"),
    KolmogorovPsf: ("fwhm",),
}


def _profile_doc(psf: EllipticalGaussianPsf | MoffatPsf | KolmogorovPsf) -> dict:
    width, height, *numbers, g1, g2, pixel = psf._key()
    doc = {"width": width, "height": height, **dict(zip(_PROFILE_FIELDS[type(psf)], numbers, strict=True))}
    doc.update({"g1": g1, "g2": g2, "pixelIntegrated": pixel})
    return doc


def _profile_reader(cls: type) -> Callable[[dict, str], Psf]:
    def read(doc: dict, where: str) -> Psf:
        numbers = [_number(doc, name, where) for name in (*_PROFILE_FIELDS[cls], "g1", "g2")]
        pixel = _flag(doc, "pixelIntegrated", where, True)
        return cls(_integer(doc, "width", where), _integer(doc, "height", where), *numbers, pixelIntegrated=pixel)

    return read


def _coadd_doc(psf: CoaddPsf) -> dict:
    doc = {
        "psfs": [psf_to_dict(p) for p in psf._psfs],
        "index": psf._psf_index.tolist(),
        "bboxes": psf._bboxes.tolist(),
        "weights": psf._weights.tolist(),
    }
    if isinstance(psf, WindowedCoaddPsf):
        weighting = psf._weighting
        doc["window"] = {"kind": weighting.kind, "gaussianWidth": weighting.gaussian_width}
    return doc


def _coadd_components(doc: dict, where: str) -> list[tuple[Psf, Box2I, float]]:
    psfs_doc, index, boxes, weights = (doc.get(k) for k in ("psfs", "index", "bboxes", "weights"))
    if not isinstance(psfs_doc, list) or not psfs_doc:
        raise PsfFormatError(f"{where}: field 'psfs' must be a non-empty list of PSF documents")
    psfs = [psf_from_dict(p, f"{where}: psfs[{i}]") for i, p in enumerate(psfs_doc)]
    index = _int_list(index, f"{where}: index")
    if not isinstance(boxes, list) or not isinstance(weights, list) or not len(index) == len(boxes) == len(weights):
        raise PsfFormatError(f"{where}: 'index', 'bboxes' and 'weights' must be lists of one length")
    if any(not 0 <= i < len(psfs) for i in index):
        raise PsfFormatError(f"{where}: 'index' refers to a PSF beyond the {len(psfs)} in 'psfs'")
    components = []
    for k, (i, box, weight) in enumerate(zip(index, boxes, weights)):
        weight = _number({"weight": weight}, "weight", f"{where}: component {k}")
        components.append((psfs[i], _box(box, f"{where}: bboxes[{k}]"), weight))
    return components


def _coadd(doc: dict, where: str) -> CoaddPsf:
    components = _coadd_components(doc, where)
    window = doc.get("window")
    try:
        if window is None:
            return CoaddPsf(components)
        from ..weights import Weighting

        if not isinstance(window, dict) or window.get("kind") not in ("linear", "cosine", "gaussian"):
            raise PsfFormatError(f"{where}: field 'window' must name a linear, cosine or gaussian window")
        weighting = Weighting(window["kind"], _number(window, "gaussianWidth", f"{where}: window"))
        return WindowedCoaddPsf(components, weighting)
    except (TypeError, ValueError) as error:
        if isinstance(error, PsfFormatError):
            raise
        raise PsfFormatError(f"{where}: {error}") from None


#: The PSF classes a store can hold: name -> (class, to document, from document).
PERSISTABLE_PSFS: dict[str, tuple[type, Callable[[Any], dict], Callable[[dict, str], Psf]]] = {
    "GaussianPsf": (GaussianPsf, _gaussian_doc, _gaussian),
    "DoubleGaussianPsf": (DoubleGaussianPsf, _double_gaussian_doc, _double_gaussian),
    "VaryingGaussianPsf": (VaryingGaussianPsf, _varying_doc, _varying_gaussian),
    "VaryingMoffatPsf": (VaryingMoffatPsf, _varying_doc, _varying_moffat),
    "VaryingKolmogorovPsf": (VaryingKolmogorovPsf, _varying_doc, _varying_kolmogorov),
    "EllipticalGaussianPsf": (EllipticalGaussianPsf, _profile_doc, _profile_reader(EllipticalGaussianPsf)),
    "MoffatPsf": (MoffatPsf, _profile_doc, _profile_reader(MoffatPsf)),
    "KolmogorovPsf": (KolmogorovPsf, _profile_doc, _profile_reader(KolmogorovPsf)),
    "CoaddPsf": (CoaddPsf, _coadd_doc, _coadd),
    "WindowedCoaddPsf": (WindowedCoaddPsf, _coadd_doc, _coadd),
}


def _name_of(psf: Any) -> str | None:
    return next((name for name, (cls, _, _) in PERSISTABLE_PSFS.items() if type(psf) is cls), None)


def is_persistable(psf: Any) -> bool:
    """Whether `psf_to_dict` can write ``psf`` (its class, and every component's, is known)."""
    if psf is None:
        return True
    if _name_of(psf) is None:
        return False
    return not isinstance(psf, CoaddPsf) or all(is_persistable(p) for p in psf._psfs)


def psf_to_dict(psf: Psf) -> dict:
    """Describe ``psf`` as a JSON-ready dict ``{"type": name, ...constructor fields}``.

    Raises
    ------
    TypeError
        For a PSF class not in `PERSISTABLE_PSFS` (a third-party model): it cannot be stored
        as data. Stores then record no PSF, and say so.
    """
    name = _name_of(psf)
    if name is None:
        raise TypeError(
            f"a {type(psf).__name__} cannot be stored as data; storable PSFs are {', '.join(PERSISTABLE_PSFS)}"
        )
    return {"type": name, **PERSISTABLE_PSFS[name][1](psf)}


def psf_from_dict(doc: Any, where: str = "PSF document") -> Psf:
    """Rebuild a PSF from `psf_to_dict`'s description, checking every field.

    Raises
    ------
    PsfFormatError
        Naming ``where`` and the field, for an unknown type or a missing or malformed field.
    """
    if not isinstance(doc, dict):
        raise PsfFormatError(f"{where} must be a JSON object, got {type(doc).__name__}")
    name = doc.get("type")
    if name not in PERSISTABLE_PSFS:
        raise PsfFormatError(f"{where}: unknown PSF type {name!r}; known types are {', '.join(PERSISTABLE_PSFS)}")
    try:
        return PERSISTABLE_PSFS[name][2](doc, f"{where} ({name})")
    except PsfFormatError:
        raise
    except (TypeError, ValueError) as error:  # the constructor's own checks (sizes, widths)
        raise PsfFormatError(f"{where} ({name}): {error}") from None
