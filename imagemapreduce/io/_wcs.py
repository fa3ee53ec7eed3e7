"""Sky WCS helpers: astropy `~astropy.wcs.WCS` objects in LSST parent pixel coordinates.

afw keeps an exposure's WCS in *parent* pixel coordinates (array index + xy0) and writes it to FITS
shifted to the file's local array. Here the exposure's WCS is an astropy ``WCS`` in parent
coordinates, 0-based as astropy's pixel API is: ``wcs.pixel_to_world(x, y)`` for parent pixel
``(x, y)``, which is array element ``[y - y0, x - x0]``. Reading adds xy0 to ``CRPIX``; writing
subtracts it again, as afw's ``copyAtShiftedPixelOrigin(-xy0)`` does.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning, Sip

__all__ = ["wcs_from_header", "shift_wcs", "wcs_header", "is_sky_wcs_key"]

_log = logging.getLogger(__name__)

# The primary (unnamed, no letter suffix) FITS-WCS keywords, SIP included; "A" is the xy0 WCS.
_SKY_WCS_KEY = re.compile(
    r"^(WCSAXES|WCSNAME|WCSDIM|CTYPE\d+|CRPIX\d+|CRVAL\d+|CDELT\d+|CUNIT\d+|CROTA\d+|CRDER\d+|CSYER\d+"
    r"|CD\d+_\d+|PC\d+_\d+|PV\d+_\d+|PS\d+_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH"
    r"|MJDREF|MJDREFI|MJDREFF|DATEREF|(A|B|AP|BP)_ORDER|(A|B|AP|BP)_\d+_\d+|A_DMAX|B_DMAX)$"
)


def is_sky_wcs_key(key: str) -> bool:
    """Return whether ``key`` is a keyword of the primary (sky) FITS WCS."""
    return bool(_SKY_WCS_KEY.match(key.upper()))


def shift_wcs(wcs: WCS, dx: float, dy: float) -> WCS:
    """Return a copy of ``wcs`` whose pixel coordinates are shifted by ``(dx, dy)`` (CRPIX += d).

    SIP distortions are relative to CRPIX, so their reference point moves too.
    """
    new = wcs.deepcopy()
    if dx or dy:
        crpix = new.wcs.crpix.copy()
        crpix[0] += dx
        crpix[1] += dy
        new.wcs.crpix = crpix
        if new.sip is not None:
            sip = new.sip
            new.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, crpix)
        new.wcs.set()
    return new


def wcs_from_header(header: fits.Header, xy0: tuple[int, int], where: str) -> WCS | None:
    """Return the celestial WCS of ``header`` in parent coordinates, or `None` if it has none.

    astropy's ``FITSFixedWarning`` (deprecated keywords it repairs) is silenced here; a WCS that
    cannot be built is logged and skipped, since the pixels are still usable without it.
    """
    if not any(is_sky_wcs_key(key) and key.upper().startswith("CTYPE") for key in header):
        return None
    cleaned = fits.Header([card for card in header.cards if card.keyword not in ("", "COMMENT", "HISTORY")])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(cleaned, naxis=2)
            for warning in caught:
                _log.debug("%s: astropy said while reading the WCS: %s", where, warning.message)
    except Exception as exc:  # noqa: BLE001 - any astropy failure means "no usable WCS"
        _log.warning("%s: ignoring a sky WCS that astropy cannot interpret: %s", where, exc)
        return None
    if not wcs.has_celestial:
        return None
    return shift_wcs(wcs, xy0[0], xy0[1])


def wcs_header(wcs: Any, xy0: tuple[int, int], where: str) -> fits.Header | None:
    """Return the FITS cards for ``wcs`` (parent coordinates) written relative to the local array.

    Returns `None` (and logs why) for a WCS that is not an astropy ``WCS``.
    """
    if not isinstance(wcs, WCS):
        _log.warning(
            "%s: the exposure's WCS is a %s, not an astropy.wcs.WCS; it is not written",
            where,
            type(wcs).__name__,
        )
        return None
    local = shift_wcs(wcs, -xy0[0], -xy0[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = local.to_header(relax=True)
        for warning in caught:
            _log.debug("%s: astropy said while writing the WCS: %s", where, warning.message)
    return header
