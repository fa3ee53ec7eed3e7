"""Keywords of afw's FITS layout: plane roles, the xy0 "A" WCS, reserved keys, safe card writing."""

from __future__ import annotations

import logging
import math
import re
import warnings
from typing import Any

import numpy as np
from astropy.io import fits

__all__ = ["ROLES", "ARCHIVE_ID_KEYS", "reserved_keys", "card_key", "make_card", "xy0_cards"]

_log = logging.getLogger(__name__)

ROLES = ("IMAGE", "MASK", "VARIANCE")

#: Old-style primary keywords afw writes for archive ids (``<COMPONENT>_ID``), besides ``ARCHIVE_ID_*``.
ARCHIVE_ID_KEYS = frozenset(
    {
        "PSF_ID",
        "WCS_ID",
        "SKYWCS_ID",
        "CALIB_ID",
        "PHOTOCALIB_ID",
        "COADD_INPUTS_ID",
        "AP_CORR_MAP_ID",
        "VALID_POLYGON_ID",
        "TRANSMISSION_CURVE_ID",
        "DETECTOR_ID",
        "FILTER_ID",
        "VISIT_INFO_ID",
        "SUMMARY_STATS_ID",
    }
)

_STRUCTURAL = frozenset(
    "SIMPLE BITPIX NAXIS EXTEND XTENSION PCOUNT GCOUNT BZERO BSCALE BLANK CHECKSUM DATASUM END "
    "COMMENT HISTORY CONTINUE EXTTYPE EXTNAME EXTVER INHERIT LTV1 LTV2 LTM1_1 LTM1_2 LTM2_1 LTM2_2 "
    "EXPINFO_V AR_HDU".split()
    + [""]
)
# NAXISn, mask planes, archive ids, and the "A" WCS afw uses for xy0: all regenerated on write.
_LAYOUT_KEY = re.compile(
    r"^(NAXIS\d+|MP_.*|ARCHIVE_ID_.*|(WCSAXES|WCSNAME|CTYPE\d|CRPIX\d|CRVAL\d|CUNIT\d|CDELT\d|CD\d_\d|PC\d_\d)A)$"
)
_STANDARD_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")


def reserved_keys(header_keys: Any) -> set[str]:
    """Return the keys among ``header_keys`` that describe the file layout rather than the exposure.

    They are dropped from an exposure's metadata on read and never copied from it on write: structural
    cards, EXTTYPE/EXTNAME/INHERIT, LTV, the "A" WCS, MP_ cards, and archive ids (``AR_HDU``,
    ``ARCHIVE_ID_<X>`` and ``<X>_ID``), which the writer regenerates from the archive it writes.
    """
    keys = {str(k) for k in header_keys}
    reserved = {k for k in keys if k.upper() in _STRUCTURAL or k.upper() in ARCHIVE_ID_KEYS}
    reserved |= {k for k in keys if _LAYOUT_KEY.match(k.upper())}
    components = {k.upper()[len("ARCHIVE_ID_") :] for k in keys if k.upper().startswith("ARCHIVE_ID_")}
    reserved |= {k for k in keys if k.upper().endswith("_ID") and k.upper()[:-3] in components}
    return reserved


def card_key(key: str) -> str:
    """Return ``key`` as astropy wants it: plain if a standard keyword, else with ``HIERARCH``."""
    return key if _STANDARD_KEY.match(key) else "HIERARCH " + key


def make_card(key: str, value: Any, comment: str | None = None) -> fits.Card:
    """Build a card and render it now, so that a card FITS cannot hold fails here, not mid-write.

    Raises
    ------
    ValueError
        If the key or value cannot be written (non-ASCII text, NaN, too long for a HIERARCH card...).
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"FITS headers cannot hold the float {value}")
    if value is not None and not isinstance(value, (bool, int, float, complex, str)):
        raise ValueError(f"FITS headers cannot hold a {type(value).__name__}")
    value = fits.card.UNDEFINED if value is None else value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        card = fits.Card(card_key(key), value)
        card.verify("exception")
        image = str(card)  # render it: astropy reports an impossible card here
        if comment and len(image) == fits.Card.length:  # room left on a one-line card: add the comment
            room = fits.Card.length - len(image.rstrip()) - 3
            if room > 0:
                card = fits.Card(card_key(key), value, comment[:room])
                str(card)
    if caught:
        raise ValueError("; ".join(str(w.message) for w in caught))
    return card


def xy0_cards(x0: int, y0: int) -> list[fits.Card]:
    """Return afw's trivial linear WCS "A" giving the plane origin (the only xy0 afw reads back)."""
    return [
        fits.Card("CTYPE1A", "LINEAR", "Type of projection"),
        fits.Card("CTYPE2A", "LINEAR", "Type of projection"),
        fits.Card("CRPIX1A", 1.0, "Column Pixel Coordinate of Reference"),
        fits.Card("CRPIX2A", 1.0, "Row Pixel Coordinate of Reference"),
        fits.Card("CRVAL1A", float(x0), "Column pixel of Reference Pixel"),
        fits.Card("CRVAL2A", float(y0), "Row pixel of Reference Pixel"),
        fits.Card("CUNIT1A", "PIXEL", "Column unit"),
        fits.Card("CUNIT2A", "PIXEL", "Row unit"),
    ]
