"""FITS files in the layout the LSST stack (``lsst.afw``) writes, with astropy.

An Exposure or MaskedImage file is an empty primary HDU followed by IMAGE, MASK and VARIANCE image
extensions (and, for an Exposure, the archive tables that hold its PSF, WCS, calibration...). Each
plane carries:

- ``EXTTYPE`` and ``EXTNAME`` (the plane's role) and ``INHERIT = T`` (merge the primary header);
- the pixel origin xy0 as the trivial linear WCS "A": ``CRVAL1A = x0``, ``CRVAL2A = y0``,
  ``CRPIX1A = CRPIX2A = 1``, ``CTYPE1A = CTYPE2A = 'LINEAR'``, ``CUNIT1A = CUNIT2A = 'PIXEL'``;
  an Exposure also writes ``LTV1 = -x0``, ``LTV2 = -y0`` for display tools;
- on MASK, one ``MP_<NAME> = <bit>`` card per mask plane (``HIERARCH`` for long names).

Reading accepts a decade of afw files: planes are found by ``EXTTYPE``, else ``EXTNAME``, else
position (the oldest files put the image in the primary HDU); masks are read as raw integers (int32,
or uint16 stored with ``BZERO = 32768``; ``BLANK`` is ignored) and returned as int32; xy0 comes from
the "A" WCS when both ``CRPIXnA`` are 1 (as afw), else from ``LTV1/LTV2``, else is ``(0, 0)``. Planes
that disagree on xy0 follow the IMAGE plane, with a `FitsLayoutWarning`. A plain FITS image (a single
image HDU) opens too, with a zero mask and the variance chosen by ``variance=``; in a file of
another layout (``SCI``/``ERR``/``DQ`` extensions, say) ``hdu=`` picks the image HDU to read.

Exposure extras:

- Archive: afw persists an exposure's objects (PSF, SkyWcs, PhotoCalib, Detector, FilterLabel,
  transmission curves, ValidPolygon, CoaddInputs, ...) in binary tables: ``ARCHIVE_INDEX`` and the
  ``ARCHIVE_DATA`` catalogs it points to, found through the primary's ``AR_HDU``, with each
  component's id in ``ARCHIVE_ID_<COMPONENT>`` / ``<COMPONENT>_ID``. Reading checks the index
  against the tables (columns, catalog numbers, row ranges, primary ids; `FitsFormatError` if they
  do not hold together; nothing is unpickled or imported) and keeps the archive, as read, in
  ``exposure.getMetadata()["afw.archive"]``. Metadata travels with copies, views and a Task's
  output, so writing any of them copies every object byte for byte, with its archive id and
  primary cards (the catalogs are renumbered when some are left out; ids are kept, since objects
  refer to each other by id from columns only their own class understands). Pop that key to write
  without it. A copy pickled to another process (a cell on a worker) leaves the tables behind.
- PSF: a `GaussianPsf`, `DoubleGaussianPsf`, `CoaddPsf` or `WindowedCoaddPsf` (of Gaussian or
  double Gaussian components) is read from, and written to, the archive, ``CoaddPsf`` in
  ``lsst.meas.algorithms``' layout (see `imagemapreduce.io._archive_psf`). While the exposure's PSF
  is the one read, its tables are copied as they are; once it changes (a Task run sets a
  `CoaddPsf`), the new PSF is written under a new id and the components that describe the old PSF
  (``AP_CORR_MAP``, ``SUMMARY_STATS``) are left out. Other PSF types are skipped with a logged
  warning (an unreadable PSF in a file read is still carried while the exposure has no other).
- Metadata: ``exposure.getMetadata()`` gets the primary header merged with the IMAGE HDU's cards (the
  plane's win), as a dict of keyword to value, less the cards that describe the layout (structural
  cards, EXTTYPE/EXTNAME/INHERIT, LTV, the "A" WCS, ``MP_`` cards and archive ids). On write the
  metadata goes to the primary header, as afw does (``BUNIT`` goes on the IMAGE plane); values FITS
  cannot hold are skipped with a logged warning.
- Sky WCS: when the IMAGE HDU has a celestial WCS, ``exposure.getWcs()`` is an `astropy.wcs.WCS` in
  LSST *parent* pixel coordinates (0-based; parent pixel ``(x, y)`` is array element
  ``[y - y0, x - x0]``): ``CRPIX`` is the file's plus xy0. Writing an astropy WCS subtracts xy0
  again, as afw's ``copyAtShiftedPixelOrigin(-xy0)``, and writes ``wcs.to_header(relax=True)`` to
  all three planes (astropy writes ``PC``/``CDELT`` where afw writes ``CD``; SIP is kept). Other WCS
  objects are not written (logged).

Writes are atomic: the file is written under a temporary name in the target's folder and renamed,
so a failed write leaves nothing behind; an existing file is replaced only with ``overwrite=True``.
Problems with a file's content raise `FitsFormatError` (a `ValueError`) naming the file and the HDU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..geom import Point2I
from ..image import Exposure, Image, ImageD, ImageF, Mask, MaskedImage, MaskedImageD, MaskedImageF
from ._errors import FitsFormatError, FitsLayoutWarning
from ._fits_read import FitsContents, read_fits
from ._fits_write import write_fits

__all__ = [
    "FitsFormatError",
    "FitsLayoutWarning",
    "read_exposure",
    "read_masked_image",
    "write_exposure",
    "write_masked_image",
]

PathLike = str | os.PathLike


def _target_dtype(cls: type, base: type, dtype: Any) -> np.dtype | None:
    """Return the pixel type asked for: ``dtype``, else the class's (ExposureF: float32), else the file's."""
    if dtype is None and cls is not base:
        dtype = getattr(cls, "_default_dtype", None)
    if dtype is None:
        return None
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"image and variance pixels are read as float32 or float64, not {dtype}")
    return dtype


def _planes(contents: FitsContents, masked_image_cls: type | None = None) -> MaskedImage:
    image_cls = {np.dtype(np.float32): ImageF, np.dtype(np.float64): ImageD}.get(contents.image.dtype, Image)
    xy0 = Point2I(*contents.xy0)
    image = image_cls(contents.image, xy0=xy0)
    mask = Mask(contents.mask, xy0=xy0, planeDict=contents.plane_dict)
    variance = image_cls(contents.variance, xy0=xy0)
    if masked_image_cls is None:
        masked_image_cls = {np.dtype(np.float32): MaskedImageF, np.dtype(np.float64): MaskedImageD}.get(
            contents.image.dtype, MaskedImage
        )
    return masked_image_cls(image, mask, variance)


def read_exposure(
    path: PathLike,
    *,
    cls: type[Exposure] = Exposure,
    dtype: Any = None,
    lazy: bool = False,
    chunks: Any = "auto",
    variance: Any = None,
    hdu: int | str | None = None,
) -> Exposure:
    """Read an Exposure written by the LSST stack (or by `write_exposure`), or a plain FITS image.

    Parameters
    ----------
    path : `str` or path-like
        The file.
    cls : `type`
        The class to return: `ExposureF` / `ExposureD` convert the image and variance to float32 /
        float64; the default `Exposure` keeps the file's float type (integer images become float32
        for 8- and 16-bit pixels, else float64).
    dtype : numpy float dtype, optional
        Overrides the pixel type chosen by ``cls``.
    lazy : `bool`
        Return dask arrays over memory-mapped astropy ``section`` reads instead of numpy arrays:
        nothing is read until a chunk is computed, and each chunk reads only its own bytes. The file
        must stay in place (and unchanged) while the arrays are in use.
    chunks
        Dask chunks for a lazy read (``"auto"``, an int, or ``(rows, columns)``); ignored otherwise.
    variance : `None`, number, array or ``"image"``
        Only for a file without a VARIANCE plane (a plain FITS image): `None` gives a zero variance,
        a number a constant, an array of the image's shape that array, and ``"image"`` the image
        values themselves (a Poisson-like variance for images in electrons). Ignored otherwise.
    hdu : `int` or `str`, optional
        Read only this HDU (0-based index, or EXTNAME in any case) as a plain image, whatever else
        the file holds: for files not in the LSST layout (``hdu="SCI"``). The mask is zero and the
        variance follows ``variance=``; metadata are the primary's and this HDU's cards.

    Returns
    -------
    exposure : ``cls``
        With its PSF, WCS and metadata as described in this module's documentation.

    Raises
    ------
    FitsFormatError
        For a corrupt or truncated file, missing or unreadable planes, planes of different shapes,
        or bad mask plane cards; the message names the file and the HDU.
    FileNotFoundError
        If there is no such file.
    TypeError
        If ``hdu`` is neither an int nor a str.
    """
    path = os.fspath(path)
    contents = read_fits(
        path,
        dtype=_target_dtype(cls, Exposure, dtype),
        lazy=lazy,
        chunks=chunks,
        variance=variance,
        hdu=hdu,
        extras=True,
    )
    return cls(_planes(contents), psf=contents.psf, wcs=contents.wcs, metadata=contents.metadata)


def read_masked_image(
    path: PathLike,
    *,
    cls: type[MaskedImage] = MaskedImage,
    dtype: Any = None,
    lazy: bool = False,
    chunks: Any = "auto",
    variance: Any = None,
    hdu: int | str | None = None,
) -> MaskedImage:
    """Read a MaskedImage (or the planes of an Exposure file, or a plain FITS image).

    The parameters are those of `read_exposure`; ``cls`` is `MaskedImage`, `MaskedImageF` or
    `MaskedImageD`. PSF, WCS and metadata are not read.
    """
    path = os.fspath(path)
    contents = read_fits(
        path,
        dtype=_target_dtype(cls, MaskedImage, dtype),
        lazy=lazy,
        chunks=chunks,
        variance=variance,
        hdu=hdu,
        extras=False,
    )
    return _planes(contents, cls)


def write_exposure(
    exposure: Exposure, path: PathLike, *, overwrite: bool = False, variance_dtype: Any = np.float32
) -> None:
    """Write ``exposure`` as the LSST stack does: empty primary, IMAGE, MASK, VARIANCE, archive.

    Parameters
    ----------
    exposure : `Exposure`
        Its planes may be numpy or dask arrays (a dask plane is computed, one plane at a time).
    path : `str` or path-like
        The file to write (uncompressed, whatever its suffix).
    overwrite : `bool`
        Replace an existing file; without it an existing file raises `FileExistsError`.
    variance_dtype : numpy dtype or `None`
        The variance's type on disk: float32 as afw's ``VariancePixel`` for every Exposure type
        (so afw reads the file back); `None` keeps the in-memory type (float64 for `ExposureD`).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    TypeError
        If a plane's pixels cannot be written (complex, boolean, string...).
    """
    if not isinstance(exposure, Exposure):
        raise TypeError(f"write_exposure writes an Exposure, not a {type(exposure).__name__}")
    mi = exposure.getMaskedImage()
    write_fits(
        os.fspath(path),
        mi.image.array,
        mi.mask.array,
        mi.variance.array,
        (exposure.getX0(), exposure.getY0()),
        mi.mask.getMaskPlaneDict(),
        overwrite=overwrite,
        variance_dtype=variance_dtype,
        metadata=exposure.getMetadata(),
        exposure=True,
        psf=exposure.getPsf(),
        wcs=exposure.getWcs(),
    )


def write_masked_image(
    masked_image: MaskedImage,
    path: PathLike,
    *,
    overwrite: bool = False,
    variance_dtype: Any = np.float32,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``masked_image`` as afw's ``MaskedImage.writeFits``: empty primary, IMAGE, MASK, VARIANCE.

    ``metadata`` (optional) goes to the primary header. See `write_exposure` for the other parameters.
    """
    if not isinstance(masked_image, MaskedImage):
        raise TypeError(f"write_masked_image writes a MaskedImage, not a {type(masked_image).__name__}")
    mi = masked_image
    write_fits(
        os.fspath(path),
        mi.image.array,
        mi.mask.array,
        mi.variance.array,
        (mi.getX0(), mi.getY0()),
        mi.mask.getMaskPlaneDict(),
        overwrite=overwrite,
        variance_dtype=variance_dtype,
        metadata=metadata,
    )
