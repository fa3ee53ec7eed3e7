"""File input and output: FITS in the layout the LSST stack writes (`imagemapreduce.io.fits`)."""

from .fits import (
    FitsFormatError,
    FitsLayoutWarning,
    read_exposure,
    read_masked_image,
    write_exposure,
    write_masked_image,
)

__all__ = [
    "FitsFormatError",
    "FitsLayoutWarning",
    "read_exposure",
    "read_masked_image",
    "write_exposure",
    "write_masked_image",
]
