"""Read the FITS layout afw writes (and plain single-image files) into pixel planes and metadata."""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any

import numpy as np
from astropy.io import fits

from ._archive import ARCHIVE_METADATA_KEY, read_archive
from ._archive_psf import read_archive_psf
from ._errors import FitsFormatError, FitsLayoutWarning
from ._layout import ROLES, reserved_keys
from ._pixels import PixelSpec, PlaneSource
from ._wcs import wcs_from_header

__all__ = ["FitsContents", "read_fits"]

_log = logging.getLogger(__name__)


@dataclass
class FitsContents:
    """What `read_fits` found: planes (numpy or dask), xy0, mask planes and exposure extras."""

    image: Any
    mask: Any
    variance: Any
    xy0: tuple[int, int]
    plane_dict: dict[str, int] | None
    metadata: dict[str, Any]
    psf: Any = None
    wcs: Any = None


# -- opening and checking -----------------------------------------------------------------------
def _open(path: str) -> tuple[fits.HDUList, list[str]]:
    """Open ``path`` with every header read; return the HDU list and astropy's complaints about damage."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such FITS file: {path!r}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdul = fits.open(path, memmap=False, do_not_scale_image_data=True, mode="readonly")
            try:
                hdul.readall()
            except BaseException:
                hdul.close()
                raise
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - astropy raises OSError, ValueError, TypeError...
        raise FitsFormatError(f"not a readable FITS file ({type(exc).__name__}: {exc})", path, 0) from exc
    damage = []
    for warning in caught:
        text = str(warning.message)
        if re.search(r"HDU #\d+", text) or "truncated" in text or "corrupt" in text:
            damage.append(text)
        else:
            _log.debug("%s: astropy said: %s", path, text)
    return hdul, damage


def _raise_damage(damage: list[str], hdul: fits.HDUList, path: str) -> None:
    for text in damage:
        match = re.search(r"HDU #(\d+)", text)
        hdu = int(match.group(1)) if match else len(hdul) - 1
        reason = " ".join(line.strip() for line in text.splitlines() if line.strip())
        raise FitsFormatError(f"corrupt or truncated file: {reason}", path, hdu)


def _check_sizes(hdul: fits.HDUList, path: str) -> None:
    """Raise if an HDU's data run past the end of the file (a truncated file)."""
    file_size = os.path.getsize(path)
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, fits.CompImageHDU):
            continue  # its header describes the uncompressed image, not the bytes on disk
        header = hdu.header
        try:
            naxis = int(header.get("NAXIS", 0))
            count = math.prod(int(header.get(f"NAXIS{n}", 0)) for n in range(1, naxis + 1)) if naxis else 0
            nbytes = (
                abs(int(header.get("BITPIX", 8)))
                // 8
                * int(header.get("GCOUNT", 1))
                * (int(header.get("PCOUNT", 0)) + count)
            )
        except (TypeError, ValueError) as exc:
            raise FitsFormatError(f"malformed structural cards (NAXIS, BITPIX...): {exc}", path, i) from None
        end = hdu.fileinfo()["datLoc"] + nbytes
        if end > file_size:
            raise FitsFormatError(
                f"truncated file: the data of this HDU end at byte {end} but the file has {file_size} bytes",
                path,
                i,
            )


def _is_image(hdu: Any) -> bool:
    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))


def _has_pixels(hdu: Any) -> bool:
    return _is_image(hdu) and hdu.header.get("NAXIS", 0) > 0 and all(n > 0 for n in hdu.shape)


def _tag(hdu: Any) -> str | None:
    for key in ("EXTTYPE", "EXTNAME"):
        value = str(hdu.header.get(key, "")).strip().upper()
        if value in ROLES:
            return value
    return None


def _describe_hdus(hdul: fits.HDUList) -> str:
    described = []
    for i, h in enumerate(hdul):
        name = str(h.header.get("EXTNAME", "PRIMARY" if i == 0 else "")).strip()
        what = "x".join(str(n) for n in reversed(h.shape)) + " image" if _has_pixels(h) else "no pixels"
        if isinstance(h, (fits.BinTableHDU, fits.TableHDU)):
            what = "table"
        described.append(f"{i} {name!r} ({what})" if name else f"{i} ({what})")
    return ", ".join(described)


def _requested_hdu(hdul: fits.HDUList, path: str, hdu: Any) -> int:
    """Return the index of ``hdu=`` (an index or an EXTNAME), or raise naming the parameter and the HDUs."""
    if isinstance(hdu, bool) or not isinstance(hdu, (int, np.integer, str)):
        raise TypeError(f"hdu= must be an HDU index (int) or an EXTNAME (str), not {type(hdu).__name__} {hdu!r}")
    try:
        index = hdul.index_of(hdu if isinstance(hdu, str) else int(hdu))
        hdul[index]
    except (KeyError, IndexError):
        raise FitsFormatError(
            f"hdu={hdu!r}: no such HDU; the file has {len(hdul)}: {_describe_hdus(hdul)}", path
        ) from None
    if not _has_pixels(hdul[index]):
        raise FitsFormatError(
            f"hdu={hdu!r} holds no image pixels; the file's HDUs are {_describe_hdus(hdul)}", path, index
        )
    return index


def _foreign_name(hdu: Any) -> str:
    """The EXTNAME of an HDU named neither for a plane role nor PRIMARY ('' if none)."""
    name = str(hdu.header.get("EXTNAME", "")).strip()
    return "" if name.upper() in (*ROLES, "PRIMARY", "") else name


def _select_planes(hdul: fits.HDUList, path: str, hdu: int | str | None) -> dict[str, int]:
    """Return {role: HDU index}: by EXTTYPE, else EXTNAME, else position; only IMAGE for a plain file."""
    if hdu is not None:
        return {"IMAGE": _requested_hdu(hdul, path, hdu)}
    roles: dict[str, int] = {}
    for i, h in enumerate(hdul):
        role = _tag(h)
        if role is None:
            continue
        if not _is_image(h):
            raise FitsFormatError(
                f"the {role} plane is a {type(h).__name__}, not an image HDU: pixels of this type "
                "(table, complex or string data) cannot be read as an image plane",
                path,
                i,
            )
        if role in roles:
            raise FitsFormatError(f"two HDUs ({roles[role]} and {i}) claim to be the {role} plane", path, i)
        roles[role] = i
    with_pixels = [i for i, h in enumerate(hdul) if _has_pixels(h)]
    # Old afw files have no EXTNAME; an untagged HDU named otherwise (SCI, ERR, DQ...) is another layout.
    untagged = [i for i in with_pixels if _tag(hdul[i]) is None and not _foreign_name(hdul[i])]
    foreign = [_foreign_name(hdul[i]) for i in with_pixels if _foreign_name(hdul[i])]
    if foreign and not roles and len(with_pixels) > 1:
        raise FitsFormatError(
            f"not in the LSST layout: the image HDUs are named {', '.join(map(repr, foreign))}, not IMAGE, MASK "
            f"and VARIANCE; pass hdu=N (an index) or hdu='{foreign[0]}' (an EXTNAME) to read one image HDU "
            f"(HDUs: {_describe_hdus(hdul)})",
            path,
        )
    if len(with_pixels) == 3:  # the classic layout: fill untagged planes by position
        for role, i in zip(ROLES, with_pixels, strict=True):
            if role not in roles and i in untagged:
                roles[role] = i
    if not roles and len(with_pixels) == 1:
        return {"IMAGE": with_pixels[0]}
    if set(roles) == {"IMAGE"}:
        return roles
    missing = [role for role in ROLES if role not in roles]
    if missing:
        found = ", ".join(f"{role} in HDU {i}" for role, i in roles.items()) or "no tagged planes"
        expected = roles.get("IMAGE", 1) + ROLES.index(missing[0])  # where afw would have put it
        raise FitsFormatError(
            f"missing extension: no {' or '.join(missing)} plane (expected at HDU {expected}; found {found}; "
            f"image HDUs with pixels: {with_pixels}); pass hdu=N to read a single image HDU",
            path,
            expected,
        )
    return roles


def _pixel_spec(hdu: Any, role: str, index: int, path: str, dtype: np.dtype | None) -> PixelSpec:
    header = hdu.header
    bitpix = int(header["BITPIX"])
    shape = tuple(int(n) for n in hdu.shape)
    if len(shape) < 2 or any(n != 1 for n in shape[:-2]):
        raise FitsFormatError(f"the {role} plane has shape {shape}; a 2-d image is needed", path, index)
    bzero_card, bscale_card = header.get("BZERO", 0), header.get("BSCALE", 1)
    if not isinstance(bzero_card, Real) or not isinstance(bscale_card, Real):
        raise FitsFormatError(f"non-numeric BZERO/BSCALE ({bzero_card!r}, {bscale_card!r})", path, index)
    bzero, bscale = float(bzero_card), float(bscale_card)
    blank = header.get("BLANK")
    target: np.dtype
    if role == "MASK":
        if bitpix < 0:
            raise FitsFormatError(f"the mask holds floating-point pixels (BITPIX {bitpix})", path, index)
        if bscale != 1 or bzero != int(bzero):
            raise FitsFormatError(f"the mask is scaled (BSCALE {bscale}, BZERO {bzero})", path, index)
        target = np.dtype(np.int32)
    elif dtype is not None:
        target = dtype
    elif (bitpix == -32 and bscale == 1 and bzero == 0) or bitpix in (8, 16):
        target = np.dtype(np.float32)
    else:
        target = np.dtype(np.float64)
    blank = int(blank) if isinstance(blank, (int, np.integer)) and bitpix > 0 else None
    return PixelSpec(role, bitpix, shape, bzero, bscale, blank, target)


# -- xy0, mask planes, metadata -----------------------------------------------------------------
def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, Real) and not isinstance(value, bool) else None


def _plane_xy0(header: fits.Header, inherited: fits.Header | None) -> tuple[tuple[int, int], str]:
    def get(key: str) -> float | None:
        value = _number(header.get(key))
        if value is None and inherited is not None:
            value = _number(inherited.get(key))
        return value

    crpix1, crpix2, crval1, crval2 = (get(k) for k in ("CRPIX1A", "CRPIX2A", "CRVAL1A", "CRVAL2A"))
    if crpix1 == 1.0 and crpix2 == 1.0 and crval1 is not None and crval2 is not None:
        # afw trusts the "A" WCS only with both CRPIXnA = 1, and rounds CRVALnA.
        return (math.floor(crval1 + 0.5), math.floor(crval2 + 0.5)), "CRVAL1A/CRVAL2A"
    ltv1, ltv2 = get("LTV1"), get("LTV2")
    if ltv1 is not None and ltv2 is not None:
        return (-math.floor(ltv1 + 0.5), -math.floor(ltv2 + 0.5)), "LTV1/LTV2"
    return (0, 0), "no xy0 cards"


def _resolve_xy0(hdul: fits.HDUList, roles: dict[str, int], path: str) -> tuple[int, int]:
    found = {}
    for role, i in roles.items():
        header = hdul[i].header
        inherited = hdul[0].header if i > 0 and header.get("INHERIT") is True else None
        found[role] = (i, *_plane_xy0(header, inherited))
    image_index, xy0, _ = found["IMAGE"]
    if any(other[1] != xy0 for other in found.values()):
        described = "; ".join(f"{role} (HDU {i}) says {tuple(v)} from {src}" for role, (i, v, src) in found.items())
        warnings.warn(
            FitsLayoutWarning(
                f"FITS file {path!r}: the planes disagree on xy0: {described}. "
                f"Using the IMAGE plane's xy0 {tuple(xy0)} (HDU {image_index}) for all planes."
            ),
            stacklevel=4,
        )
    return xy0


def _plane_dict(header: fits.Header, path: str, index: int) -> dict[str, int] | None:
    planes: dict[str, int] = {}
    owner: dict[int, str] = {}
    for card in header.cards:
        key = card.keyword
        if not key.upper().startswith("MP_"):
            continue
        name, bit = key[3:], card.value
        if isinstance(bit, bool) or not isinstance(bit, (int, np.integer)) or not 0 <= bit < 32:
            raise FitsFormatError(f"mask plane card {key} = {bit!r} is not a bit index in 0..31", path, index)
        if name in planes:
            raise FitsFormatError(f"mask plane {name!r} appears twice (MP_{name} cards)", path, index)
        bit = int(bit)
        if bit in owner:
            raise FitsFormatError(
                f"mask planes {owner[bit]!r} and {name!r} both claim bit {bit} (MP_ cards)", path, index
            )
        planes[name], owner[bit] = bit, name
    return planes or None


def _metadata(hdul: fits.HDUList, image_index: int) -> dict[str, Any]:
    cards = list(hdul[0].header.cards)
    if image_index > 0:
        cards += list(hdul[image_index].header.cards)
    reserved = reserved_keys(card.keyword for card in cards)
    metadata: dict[str, Any] = {}
    for card in cards:
        if card.keyword in reserved:
            continue
        value = card.value
        metadata[card.keyword] = None if isinstance(value, fits.card.Undefined) else value
    return metadata


# -- pixels -------------------------------------------------------------------------------------
def _plane_array(hdul, index, spec, path, lazy, chunks, stamp):
    if lazy:
        import dask.array as da
        from dask.base import tokenize

        source = PlaneSource(path, index, spec, stamp)
        name = f"fits-{spec.role.lower()}-{tokenize(source)}"
        meta = np.empty((0, 0), dtype=source.dtype)
        return da.from_array(source, chunks=chunks, name=name, meta=meta, asarray=False, fancy=False)
    try:
        raw = np.asarray(hdul[index].data)
    except Exception as exc:  # noqa: BLE001 - astropy fails in many ways on damaged data
        raise FitsFormatError(f"cannot read the {spec.role} pixels: {exc}", path, index) from exc
    return spec.convert(raw.reshape(spec.raw_shape[-2:]))


def _fill_variance(image: Any, variance: Any, lazy: bool) -> Any:
    """Make the variance of a file without one: zeros, a constant, an array, or 'image' (Poisson-like)."""
    shape, dtype = image.shape, image.dtype
    xp: Any = np
    kwargs: dict[str, Any] = {}
    if lazy:
        import dask.array as da

        xp, kwargs = da, {"chunks": image.chunks}
    if variance is None:
        return xp.zeros(shape, dtype=dtype, **kwargs)
    if isinstance(variance, str):
        if variance != "image":
            raise ValueError(f"variance must be None, a number, an array or 'image', not {variance!r}")
        return image if lazy else image.copy()
    if isinstance(variance, Real) and not isinstance(variance, bool):
        return xp.full(shape, variance, dtype=dtype, **kwargs)
    if hasattr(variance, "shape") and hasattr(variance, "dtype"):
        if tuple(variance.shape) != tuple(shape):
            raise ValueError(f"variance array has shape {tuple(variance.shape)}; the image has {tuple(shape)}")
        if lazy:
            return xp.asarray(variance).astype(dtype).rechunk(image.chunks)
        return np.array(variance, dtype=dtype)
    raise TypeError(f"variance must be None, a number, an array or 'image', not {type(variance).__name__}")


def read_fits(
    path: str,
    *,
    dtype: np.dtype | None,
    lazy: bool,
    chunks: Any,
    variance: Any,
    hdu: int | str | None,
    extras: bool,
) -> FitsContents:
    """Read the planes (and, if ``extras``, metadata, PSF and WCS) of an afw-layout or plain file."""
    hdul, damage = _open(path)
    try:
        _check_sizes(hdul, path)
        _raise_damage(damage, hdul, path)
        roles = _select_planes(hdul, path, hdu)
        specs = {role: _pixel_spec(hdul[i], role, i, path, dtype) for role, i in roles.items()}
        if "VARIANCE" in specs:
            image_dtype = specs["IMAGE"].dtype
            specs["VARIANCE"] = replace(specs["VARIANCE"], dtype=image_dtype)
        shapes = {role: spec.raw_shape[-2:] for role, spec in specs.items()}
        odd = [role for role, shape in shapes.items() if shape != shapes["IMAGE"]]
        if odd:
            raise FitsFormatError(
                f"the {odd[0]} plane does not match the IMAGE plane: (width, height) "
                + ", ".join(f"{role} (HDU {roles[role]}) {shape[::-1]}" for role, shape in shapes.items()),
                path,
                roles[odd[0]],
            )
        xy0 = _resolve_xy0(hdul, roles, path)
        plane_dict = _plane_dict(hdul[roles["MASK"]].header, path, roles["MASK"]) if "MASK" in roles else None
        stat = os.stat(path)
        stamp = (stat.st_size, stat.st_mtime_ns)
        arrays = {
            role: _plane_array(hdul, roles[role], spec, path, lazy, chunks, stamp) for role, spec in specs.items()
        }
        image = arrays["IMAGE"]
        if "MASK" not in arrays:
            if lazy:
                import dask.array as da

                arrays["MASK"] = da.zeros(image.shape, dtype=np.int32, chunks=image.chunks)
            else:
                arrays["MASK"] = np.zeros(image.shape, dtype=np.int32)
            arrays["VARIANCE"] = _fill_variance(image, variance, lazy)
        elif variance is not None:
            _log.debug("%s has a VARIANCE plane; ignoring variance=%r", path, variance)
        contents = FitsContents(image, arrays["MASK"], arrays["VARIANCE"], xy0, plane_dict, {})
        if extras:
            where = f"{path}, HDU {roles['IMAGE']}"
            contents.metadata = _metadata(hdul, roles["IMAGE"])
            contents.wcs = wcs_from_header(hdul[roles["IMAGE"]].header, xy0, where)
            archive = read_archive(hdul, path, read_archive_psf)
            if archive is not None:
                contents.psf = archive.psf
                contents.metadata[ARCHIVE_METADATA_KEY] = archive
        return contents
    finally:
        hdul.close()
