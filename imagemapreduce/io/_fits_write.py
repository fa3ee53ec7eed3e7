"""Write planes in the layout afw writes, atomically: a temporary file in the target's folder, then rename."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from typing import Any

import numpy as np
from astropy.io import fits

from ._archive import ARCHIVE_METADATA_KEY, AfwArchive
from ._archive_psf import build_archive
from ._layout import ROLES, make_card, reserved_keys, xy0_cards
from ._wcs import is_sky_wcs_key, wcs_header

__all__ = ["write_fits"]

_log = logging.getLogger(__name__)

#: afw's ExposureInfo FITS serialization version (2: FilterLabel as a generic component).
EXPINFO_VERSION = 2


def _big_endian(array: np.ndarray) -> np.ndarray:
    """Return a big-endian copy, so astropy never byte-swaps the caller's array in place."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">"))


def _image_pixels(array: Any, role: str, dtype: Any = None) -> np.ndarray:
    array = np.asarray(array)  # computes a dask array
    if array.ndim != 2:
        raise ValueError(f"the {role} plane must be 2-d, not of shape {array.shape}")
    if array.dtype.kind not in "fiu" or array.dtype.itemsize > 8:
        raise TypeError(
            f"cannot write the {role} plane: FITS images hold integers or float32/float64 pixels, not {array.dtype}"
        )
    if dtype is not None and array.dtype != np.dtype(dtype):
        array = array.astype(dtype)
    return _big_endian(array)


def _mask_pixels(array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"the MASK plane must be 2-d, not of shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"cannot write the MASK plane: afw masks are int32 bit planes, not {array.dtype}")
    if array.dtype.itemsize > 4:
        if array.size and (array.min() < -(2**31) or array.max() >= 2**32):
            raise ValueError("cannot write the MASK plane: values do not fit in 32 bits")
        array = (array.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
    if array.dtype == np.uint32:
        array = array.view(np.int32)  # afw's MaskPixel is int32: bit 31 is the sign bit
    return _big_endian(array.astype(np.int32, copy=False))


def _metadata_cards(metadata: dict[str, Any], skip: set[str], where: str) -> list[fits.Card]:
    cards = []
    reserved = reserved_keys(metadata) | skip | {ARCHIVE_METADATA_KEY}
    for key, value in metadata.items():
        if key in reserved or not isinstance(key, str):
            continue
        try:
            cards.append(make_card(key, value))
        except (ValueError, TypeError) as exc:
            _log.warning("%s: metadata %r = %r is not written: %s", where, key, value, exc)
    return cards


def _plane_header(
    role: str, xy0: tuple[int, int], common: list[fits.Card], plane_dict: dict[str, int] | None
) -> fits.Header:
    """Cards in afw's order: sky WCS and LTV, INHERIT, EXTTYPE, EXTNAME, MP_*, the "A" WCS."""
    header = fits.Header(list(common))
    header.append(fits.Card("INHERIT", True))
    header.append(fits.Card("EXTTYPE", role))
    header.append(fits.Card("EXTNAME", role))
    if plane_dict is not None:
        for name, bit in sorted(plane_dict.items()):
            try:
                header.append(make_card("MP_" + name, int(bit)))
            except ValueError as exc:
                raise ValueError(f"mask plane name {name!r} cannot be written to FITS: {exc}") from None
    header.extend(xy0_cards(*xy0))
    return header


def _atomic_write(hdul: fits.HDUList, path: str, overwrite: bool, tail: bytes = b"") -> None:
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
    try:
        with os.fdopen(fd, "wb") as stream:
            hdul.writeto(stream, output_verify="exception")
            stream.write(tail)  # HDUs already in their stored form (the archive's catalogs)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never clobber
            except FileExistsError:
                raise FileExistsError(_exists_message(path)) from None
            except OSError:  # a filesystem without hard links
                if os.path.lexists(path):
                    raise FileExistsError(_exists_message(path)) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _exists_message(path: str) -> str:
    return f"{path!r} already exists; pass overwrite=True to replace it"


def write_fits(
    path: str,
    image: Any,
    mask: Any,
    variance: Any,
    xy0: tuple[int, int],
    plane_dict: dict[str, int] | None,
    *,
    overwrite: bool,
    variance_dtype: Any,
    metadata: dict[str, Any] | None = None,
    exposure: bool = False,
    psf: Any = None,
    wcs: Any = None,
) -> None:
    """Write the planes (and for an exposure: LTV, WCS, metadata and the archive) to ``path``.

    An exposure's archive holds ``psf`` and the objects of the `AfwArchive` that ``metadata`` carries
    under `ARCHIVE_METADATA_KEY` (see `build_archive`).
    """
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(_exists_message(path))
    image_px = _image_pixels(image, "IMAGE")
    mask_px = _mask_pixels(mask)
    variance_px = _image_pixels(variance, "VARIANCE", variance_dtype)
    shapes = {"IMAGE": image_px.shape, "MASK": mask_px.shape, "VARIANCE": variance_px.shape}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"the planes must have one shape; got {shapes}")
    metadata = dict(metadata or {})
    where = f"writing {path!r}"
    common: list[fits.Card] = []
    skip: set[str] = set()
    image_extra: list[fits.Card] = []
    if exposure:
        if wcs is not None and (wcs_cards := wcs_header(wcs, xy0, where)) is not None:
            common += list(wcs_cards.cards)
            skip |= {key for key in metadata if isinstance(key, str) and is_sky_wcs_key(key)}
        common += [fits.Card("LTV1", float(-xy0[0])), fits.Card("LTV2", float(-xy0[1]))]
    if "BUNIT" in metadata:  # afw puts the unit on the IMAGE plane
        skip.add("BUNIT")
        with contextlib.suppress(ValueError):
            image_extra.append(make_card("BUNIT", metadata["BUNIT"]))
    primary = fits.PrimaryHDU()
    primary.header.extend(_metadata_cards(metadata, skip, where))
    archive: list[fits.BinTableHDU] = []
    tail = b""
    if exposure:
        carried = metadata.get(ARCHIVE_METADATA_KEY)
        if carried is not None and not isinstance(carried, AfwArchive):
            _log.warning(
                "%s: metadata[%r] is a %s, not an archive read from a file; it is ignored",
                where,
                ARCHIVE_METADATA_KEY,
                type(carried).__name__,
            )
            carried = None
        index, tail, psf_cards = build_archive(psf, carried, where)
        archive = [index]
        primary.header.append(make_card("EXPINFO_V", EXPINFO_VERSION))
        primary.header.append(
            make_card("AR_HDU", 5, "HDU (1-indexed) containing the archive used to store ancillary objects")
        )
        for key, value, comment in psf_cards:
            primary.header.append(make_card(key, value, comment))
    planes = []
    for role, pixels in zip(ROLES, (image_px, mask_px, variance_px), strict=True):
        header = _plane_header(
            role,
            xy0,
            common + (image_extra if role == "IMAGE" else []),
            plane_dict if role == "MASK" else None,
        )
        planes.append(fits.ImageHDU(data=pixels, header=header))
    _atomic_write(fits.HDUList([primary, *planes, *archive]), path, overwrite, tail)
