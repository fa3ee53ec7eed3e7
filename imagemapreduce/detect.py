"""Source detection and measurement that gives the same answer per cell as on the whole image.

`find_sources` thresholds the image smoothed by a Gaussian detection filter in units of the local
noise (from the variance plane), takes the local maxima above the threshold as peaks, and
measures around each peak: a Gaussian-weighted centroid, an aperture flux and, given a PSF, a
PSF flux fitted at the peak. `DetectMapper` is the same as a mapper (``--mapper detect``).

Why not photutils or sep: both measure whole *footprints* (connected pixels above threshold),
and a footprint has no size limit, so a cell cannot know that it sees all of one. Here every
number a row holds depends only on the pixels within `source_reach` of its peak. With a border
of at least that reach, the cell that owns a source (`imagemapreduce.catalog`) computes it from
exactly the pixels the whole image would, and so gets bitwise the same row; a footprint-based
catalog could only promise that for sources smaller than the border. The cost is deblending:
blended sources are separate peaks with overlapping apertures, not a deblended family.

The image is taken to be background-subtracted (run a background mapper first otherwise).
"""

from __future__ import annotations

import math
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np

from .geom import Box2I, Point2D
from .image import Exposure
from .mapper import ImageMapper, ImageMapperConfig
from .pipe_base import Struct

__all__ = ["DetectMapper", "DetectMapperConfig", "find_sources", "source_reach"]


def _radius(sigma: float, truncate: float = 4.0) -> int:
    return int(truncate * sigma + 0.5)  # scipy.ndimage's kernel radius


def _measure_radii(sigma: float, aperture_radius: float | None, psf_radius: int) -> tuple[int, int, float]:
    """(smoothing radius, centroid window half-width, aperture radius) in pixels."""
    aperture = 3.0 * sigma if aperture_radius is None else float(aperture_radius)
    return _radius(sigma), max(1, math.ceil(2.0 * sigma)), aperture


def source_reach(sigma: float, aperture_radius: float | None = None, psf_radius: int = 0) -> int:
    """How far (pixels) a row of `find_sources` looks from its pixel: the border a cell needs.

    A row's pixel (its rounded centroid) lies within the centroid window (plus rounding) of its
    peak; the peak needs the smoothed image on its 3x3 neighbourhood (the smoothing radius plus
    one) and the measurements need the aperture, the centroid window and the PSF stamp around it.

    Parameters
    ----------
    sigma : `float`
        The detection filter's Gaussian sigma (pixels).
    aperture_radius : `float`, optional
        The aperture radius (default 3 sigma).
    psf_radius : `int`
        Half-width of the PSF stamp used for PSF fluxes (0 without a PSF).
    """
    smoothing, window, aperture = _measure_radii(sigma, aperture_radius, psf_radius)
    return window + 1 + max(smoothing + 1, window, math.ceil(aperture), psf_radius)


def find_sources(
    image: np.ndarray,
    variance: np.ndarray,
    *,
    threshold: float = 5.0,
    sigma: float = 1.5,
    aperture_radius: float | None = None,
    mask: np.ndarray | None = None,
    bad_bits: int = 0,
    psf: Any = None,
    origin: tuple[int, int] = (0, 0),
) -> Any:
    """Detect peaks above ``threshold`` times the local noise and measure them.

    Parameters
    ----------
    image, variance : `numpy.ndarray`
        The (background-subtracted) pixels and their variance, same shape.
    threshold : `float`
        Detection threshold, in units of the smoothed image's noise at each pixel (from ``variance``).
    sigma : `float`
        Sigma (pixels) of the Gaussian detection filter, about the PSF's.
    aperture_radius : `float`, optional
        Radius of the circular aperture around the peak pixel; default ``3 * sigma``.
    mask : `numpy.ndarray`, optional
        Integer mask plane; a peak on a pixel with any of ``bad_bits`` is not a source, and a
        source with any of them in its aperture gets ``flag_masked``.
    bad_bits : `int`
        The mask bits that mark unusable pixels.
    psf : `imagemapreduce.psf.Psf`, optional
        For PSF fluxes: its kernel image at each peak (parent coordinates), fitted by least squares
        at the peak pixel with inverse-variance weights.
    origin : (`int`, `int`)
        Parent coordinates ``(x0, y0)`` of ``image[0, 0]``, added to the positions.

    Returns
    -------
    catalog : `~astropy.table.Table`
        One row per peak: ``x``, ``y`` (centroid), ``peak_x``, ``peak_y``, ``peak_snr``,
        ``flux_aperture``, ``flux_aperture_err``, ``flux_psf``, ``flux_psf_err`` (NaN without a
        PSF) and ``flag_masked``, sorted by ``(peak_y, peak_x)``.
    """
    from astropy.table import Table
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    variance = np.asarray(variance, dtype=np.float64)
    if image.ndim != 2 or variance.shape != image.shape:
        raise ValueError(f"image and variance must be 2-d arrays of one shape; got {image.shape} and {variance.shape}")
    if not sigma > 0 or not threshold > 0:
        raise ValueError(f"sigma and threshold must be positive; got sigma={sigma!r}, threshold={threshold!r}")
    smoothing, window, aperture = _measure_radii(sigma, aperture_radius, 0)
    offsets = np.arange(-smoothing, smoothing + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    # Zero beyond the array: at the image's own edge a cell and the whole image see the same zeros.
    smoothed = ndimage.correlate1d(
        ndimage.correlate1d(image, kernel, axis=0, mode="constant"), kernel, axis=1, mode="constant"
    )
    noise = ndimage.correlate1d(
        ndimage.correlate1d(variance, kernel**2, axis=0, mode="constant"), kernel**2, axis=1, mode="constant"
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noise > 0, smoothed / np.sqrt(np.maximum(noise, 0)), 0.0)
    local_max = smoothed == ndimage.maximum_filter(smoothed, size=3, mode="constant", cval=-np.inf)
    peaks = local_max & (snr >= threshold)
    bad = np.zeros(image.shape, bool) if mask is None or not bad_bits else (np.asarray(mask) & bad_bits) != 0
    peaks &= ~bad
    py, px = np.nonzero(peaks)  # row-major: sorted by (y, x)
    rows = [
        _measure(image, variance, bad, int(y), int(x), sigma, window, aperture, psf, origin) for y, x in zip(py, px)
    ]
    columns = ("x", "y", "flux_aperture", "flux_aperture_err", "flux_psf", "flux_psf_err", "flag_masked")
    values = {
        name: np.array([r[k] for r in rows], dtype=bool if name == "flag_masked" else np.float64)
        for k, name in enumerate(columns)
    }
    return Table(
        {
            "x": values["x"],
            "y": values["y"],
            "peak_x": (px + origin[0]).astype(np.int64),
            "peak_y": (py + origin[1]).astype(np.int64),
            "peak_snr": snr[py, px].astype(np.float64),
            **{name: values[name] for name in columns[2:]},
        }
    )


def _stamp(shape: tuple[int, int], y: int, x: int, half: int) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """The slices of a ``2 half + 1`` square around ``(y, x)``, clipped to the array, and its offsets."""
    y0, y1 = max(0, y - half), min(shape[0], y + half + 1)
    x0, x1 = max(0, x - half), min(shape[1], x + half + 1)
    return slice(y0, y1), slice(x0, x1), np.arange(y0, y1) - y, np.arange(x0, x1) - x


def _measure(image, variance, bad, y, x, sigma, window, aperture, psf, origin) -> tuple:
    """One peak's row: centroid, aperture flux, PSF flux, masked flag (pixels near the peak only)."""
    sy, sx, dy, dx = _stamp(image.shape, y, x, window)
    weight = np.exp(-0.5 * (dy[:, None] ** 2 + dx[None, :] ** 2) / sigma**2) * image[sy, sx]
    total = weight.sum()
    # The parent pixel first, then the offset: the same sum in a cell and in the whole image.
    cx = float(x + origin[0]) + ((weight * dx[None, :]).sum() / total if total > 0 else 0.0)
    cy = float(y + origin[1]) + ((weight * dy[:, None]).sum() / total if total > 0 else 0.0)
    half = math.ceil(aperture)
    sy, sx, dy, dx = _stamp(image.shape, y, x, half)
    inside = dy[:, None] ** 2 + dx[None, :] ** 2 <= aperture**2
    flux = float(image[sy, sx][inside].sum())
    flux_err = float(math.sqrt(max(variance[sy, sx][inside].sum(), 0.0)))
    masked = bool(bad[sy, sx][inside].any())
    psf_flux, psf_err = _psf_flux(image, variance, y, x, psf, origin) if psf is not None else (math.nan, math.nan)
    return (cx, cy, flux, flux_err, psf_flux, psf_err, masked)


def _psf_flux(image, variance, y, x, psf, origin) -> tuple[float, float]:
    """Least-squares amplitude of the PSF (unit sum) at the peak pixel, inverse-variance weighted."""
    kernel = psf.computeKernelImage(Point2D(x + origin[0], y + origin[1])).array
    kernel = kernel / kernel.sum()
    half_y, half_x = kernel.shape[0] // 2, kernel.shape[1] // 2
    y0, y1 = max(0, y - half_y), min(image.shape[0], y + half_y + 1)
    x0, x1 = max(0, x - half_x), min(image.shape[1], x + half_x + 1)
    model = kernel[y0 - (y - half_y) : y1 - (y - half_y), x0 - (x - half_x) : x1 - (x - half_x)]
    var = variance[y0:y1, x0:x1]
    usable = var > 0
    if not usable.any():
        return math.nan, math.nan
    inv = np.where(usable, 1.0 / np.where(usable, var, 1.0), 0.0)
    norm = float((model * model * inv).sum())
    if norm <= 0:
        return math.nan, math.nan
    return float((model * image[y0:y1, x0:x1] * inv).sum() / norm), 1.0 / math.sqrt(norm)


class DetectMapperConfig(ImageMapperConfig):
    """Configuration for `DetectMapper`."""

    # The annotations give each field's value type: pex_config fields are descriptors whose
    # untyped constructors leave the value type to be stated.
    threshold: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        default=5.0,
        check=lambda t: t > 0,
        doc="Detection threshold in units of the local noise (from the variance plane)",
    )
    sigma: pexConfig.Field[float | None] = pexConfig.Field(
        dtype=float,
        optional=True,
        default=None,
        check=lambda s: s is None or s > 0,
        doc="Detection filter sigma (px); default: the PSF's at the cell centre, rounded up to 0.1 px, else 1.5",
    )
    apertureRadius: pexConfig.Field[float | None] = pexConfig.Field(
        dtype=float, optional=True, default=None, doc="Aperture radius (px); default 3 sigma"
    )
    psfFlux: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool, default=True, doc="Fit PSF fluxes with the exposure's PSF (if it has one)"
    )
    badMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=("BAD", "SAT", "NO_DATA"),
        doc="Mask planes of unusable pixels: no peak there; flagged in apertures",
    )


class DetectMapper(ImageMapper):
    """Detect and measure sources in each cell; use with ``reduceOperation="catalog"``.

    Returns ``Struct(catalog=table)`` with positions in parent pixel coordinates (xy0 applied).
    With a border of at least `reach`, the reduced catalog equals `find_sources` on the whole
    exposure: the same rows, bit for bit, each once. The detection filter's sigma should be the
    same in every cell for that: set ``sigma``, or leave it to the PSF only when it is constant.
    """

    ConfigClass = DetectMapperConfig
    _DefaultName = "imr_DetectMapper"
    config: DetectMapperConfig

    def _sigma(self, exposure: Exposure | None) -> float:
        if self.config.sigma is not None:
            return float(self.config.sigma)
        if exposure is None or (psf := exposure.getPsf()) is None:
            return 1.5
        box = exposure.getBBox()
        centre = Point2D(box.getMinX() + (box.getWidth() - 1) / 2.0, box.getMinY() + (box.getHeight() - 1) / 2.0)
        return math.ceil(psf.computeShape(centre).getDeterminantRadius() * 10.0) / 10.0

    def _psf_radius(self, exposure: Exposure | None) -> int:
        if exposure is None or not self.config.psfFlux or (psf := exposure.getPsf()) is None:
            return 0
        box = exposure.getBBox()
        kernel = psf.computeKernelImage(Point2D(box.getMinX(), box.getMinY())).array
        return int(max(kernel.shape) // 2)

    def reach(self, exposure: Exposure | None = None) -> int:
        """The border that makes each owned row equal to the whole-image one (`source_reach`)."""
        return source_reach(self._sigma(exposure), self.config.apertureRadius, self._psf_radius(exposure))

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Detect in the expanded cell; return every row (the reducer keeps the cell's own)."""
        exposure = expandedSubExposure
        mask = exposure.mask
        bits = 0
        for plane in self.config.badMaskPlanes:
            if plane in mask.getMaskPlaneDict():
                bits |= mask.getPlaneBitMask(plane)
        psf = exposure.getPsf() if self.config.psfFlux else None
        box = exposure.getBBox()
        catalog = find_sources(
            exposure.image.array,
            exposure.variance.array,
            threshold=self.config.threshold,
            sigma=self._sigma(subExposure),
            aperture_radius=self.config.apertureRadius,
            mask=mask.array,
            bad_bits=bits,
            psf=psf,
            origin=(box.getMinX(), box.getMinY()),
        )
        return Struct(catalog=catalog)
