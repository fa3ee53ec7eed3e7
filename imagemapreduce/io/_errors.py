"""The exception and warning raised by `imagemapreduce.io.fits`."""

from __future__ import annotations

import os

__all__ = ["FitsFormatError", "FitsLayoutWarning"]


class FitsFormatError(ValueError):
    """A FITS file that cannot be read as an LSST image: corrupt, truncated or inconsistent.

    The message names the file and, where one is to blame, the HDU (0-based, as astropy counts).

    Attributes
    ----------
    path : `str` or `None`
        The file.
    hdu : `int` or `None`
        The 0-based index of the offending HDU.
    reason : `str`
        The problem, without the file and HDU.
    """

    def __init__(self, reason: str, path: str | os.PathLike | None = None, hdu: int | None = None):
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        self.hdu = hdu
        where = []
        if self.path is not None:
            where.append(f"FITS file {self.path!r}")
        if hdu is not None:
            where.append(f"HDU {hdu}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)

    def __reduce__(self):  # keep the attributes across pickling (dask workers)
        return (type(self), (self.reason, self.path, self.hdu))


class FitsLayoutWarning(UserWarning):
    """A FITS file deviates from the LSST layout and the reader had to choose; the message says how."""
