"""Raw FITS values to plane pixels, eagerly or chunk by chunk for dask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from ._errors import FitsFormatError

__all__ = ["PixelSpec", "PlaneSource"]


@dataclass(frozen=True)
class PixelSpec:
    """How to turn the raw integers or floats of one HDU into a plane's pixels."""

    role: str
    bitpix: int
    raw_shape: tuple[int, ...]
    bzero: float
    bscale: float
    blank: int | None
    dtype: np.dtype

    def convert(self, raw: np.ndarray) -> np.ndarray:
        """Convert raw (unscaled, big-endian) FITS values to native-endian pixels of `dtype`.

        Masks stay integers: BZERO is added in integer arithmetic (uint16 masks are stored as int16
        with BZERO 32768) and BLANK is ignored, as afw does. Other planes are scaled by BSCALE and
        BZERO, with BLANK integers becoming NaN.
        """
        if self.role == "MASK":
            if self.bzero == 0 and raw.dtype.itemsize <= 4:
                return raw.astype(np.int32)
            values = raw.astype(np.int64) + int(self.bzero)
            if values.size and (values.min() < -(2**31) or values.max() >= 2**32):
                raise FitsFormatError(f"mask values do not fit in 32 bits (BZERO {self.bzero})")
            return (values & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
        if self.bitpix < 0 and self.bscale == 1 and self.bzero == 0:
            return raw.astype(self.dtype)
        scaled = raw.astype(np.float64) * self.bscale + self.bzero
        if self.bitpix > 0 and self.blank is not None:
            scaled[raw == self.blank] = np.nan
        return scaled.astype(self.dtype)


class PlaneSource:
    """An array-like over one image HDU for `dask.array.from_array`.

    Each read opens the file memory-mapped, takes astropy's ``section`` of the requested chunk (so
    only that chunk's bytes are read), converts it and closes the file. The object pickles to a few
    strings and numbers, so distributed workers read their own chunks, and holds no open file.
    """

    def __init__(self, path: str, index: int, spec: PixelSpec, stamp: tuple[int, int]):
        self.path, self.index, self.spec, self.stamp = path, index, spec, stamp
        self.shape = spec.raw_shape[-2:]
        self.ndim = 2
        self.dtype = spec.dtype

    def __dask_tokenize__(self) -> tuple:
        return (type(self).__name__, self.path, self.index, self.spec, self.stamp)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        lead = (0,) * (len(self.spec.raw_shape) - 2)
        with fits.open(self.path, memmap=True, do_not_scale_image_data=True, mode="readonly") as hdul:
            hdu = hdul[self.index]
            if hdu.header.get("BITPIX") != self.spec.bitpix or tuple(hdu.shape) != self.spec.raw_shape:
                raise FitsFormatError("the file changed after it was opened lazily", self.path, self.index)
            raw = np.array(hdu.section[lead + key])
        return self.spec.convert(raw)
