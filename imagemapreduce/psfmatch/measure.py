"""Star measurements for checking PSF homogenisation: adaptive-moment widths, shapes and aperture fluxes.

`measure_star_widths` measures, for each usable star, the adaptive-moments determinant radius
(the PSF's Gaussian-equivalent sigma, as LSST measures it), the reduced shear of the same
moments, and the flux in a large aperture minus the local sky. `width_map` bins widths over
the image for plotting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..geom import Box2I
from ..image import Exposure
from ..psf import adaptive_moments, moments_to_shear

__all__ = ["MEASUREMENT_DTYPE", "DEFAULT_BAD_PLANES", "measure_star_widths", "width_map"]

#: One row per measured star. ``index`` is the row of the input catalogue; ``x, y`` the adaptive
#: centroid (parent pixels); ``sigma`` the determinant radius; ``flux`` the aperture flux minus
#: sky; ``sky`` the local sky per pixel; ``snr`` the aperture flux over its error from the variance
#: plane, as for independent pixels (too high on a smoothed image, whose noise is correlated);
#: ``g1, g2`` the reduced shear ``e / (1 + sqrt(1 - |e|^2))`` of the adaptive moments.
MEASUREMENT_DTYPE = np.dtype(
    [
        ("index", np.int64),
        ("x", np.float64),
        ("y", np.float64),
        ("sigma", np.float64),
        ("flux", np.float64),
        ("sky", np.float64),
        ("snr", np.float64),
        ("g1", np.float64),
        ("g2", np.float64),
    ]
)

#: Mask planes that disqualify a star when any pixel of its stamp carries them.
DEFAULT_BAD_PLANES: tuple[str, ...] = ("BAD", "SAT", "NO_DATA", "EDGE", "INVALID_MAPREDUCE")


def _positions(stars: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``x``, ``y`` and the saturated flags of a catalogue or an ``(n, 2)`` array."""
    if isinstance(stars, np.ndarray) and stars.dtype.names is not None:
        x = np.asarray(stars["x"], dtype=np.float64)
        y = np.asarray(stars["y"], dtype=np.float64)
        names = stars.dtype.names
        saturated = np.asarray(stars["saturated"], bool) if "saturated" in names else np.zeros(len(x), bool)
        return x, y, saturated
    if hasattr(stars, "x") and hasattr(stars, "y"):  # a dataclass or table of columns
        x = np.asarray(stars.x, dtype=np.float64)
        y = np.asarray(stars.y, dtype=np.float64)
        saturated = np.asarray(getattr(stars, "saturated", np.zeros(len(x), bool)), bool)
        return x, y, saturated
    array = np.asarray(stars, dtype=np.float64).reshape(-1, 2)
    return array[:, 0], array[:, 1], np.zeros(len(array), bool)


def _isolated(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Return which stars have no other star within ``radius`` pixels."""
    from scipy.spatial import cKDTree

    if len(x) < 2:
        return np.ones(len(x), bool)
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius, output_type="ndarray")
    isolated = np.ones(len(x), bool)
    isolated[pairs.ravel()] = False
    return isolated


def _clipped_mean(values: np.ndarray, nsigma: float = 3.0) -> float:
    """Mean after one pass of clipping at ``nsigma`` robust sigmas about the median.

    One pass removes a faint neighbour or a cosmic ray from the sky annulus; a plain mean
    keeps the estimate linear in the pixels, so a flux-preserving convolution preserves it too.
    """
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    if mad == 0:
        return float(values.mean())
    keep = np.abs(values - median) <= nsigma * mad
    return float(values[keep].mean())


def measure_star_widths(
    exposure: Exposure,
    stars: Any,
    *,
    stamp_radius: int = 15,
    aperture_radius: float = 9.0,
    sky_annulus: tuple[float, float] = (11.0, 15.0),
    isolated_only: bool = True,
    isolation_radius: float | None = None,
    bad_mask_planes: Sequence[str] = DEFAULT_BAD_PLANES,
    min_snr: float = 0.0,
) -> np.ndarray:
    """Measure the width and flux of every usable star.

    Parameters
    ----------
    exposure : `Exposure`
        The image; its mask and variance are used.
    stars : structured array, dataclass of columns, or ``(n, 2)`` array
        Star positions ``x, y`` in parent pixels (a catalogue from `simulate_exposure` works);
        a ``saturated`` field, when present, skips those stars.
    stamp_radius : `int`
        Half-size of the square stamp cut around each star; it must hold the sky annulus.
    aperture_radius : `float`
        Radius of the circular flux aperture, pixels. Make it several times the widest PSF's
        sigma so that broadening the PSF moves no flux out of it.
    sky_annulus : `tuple` [`float`, `float`]
        Inner and outer radii of the sky annulus, pixels.
    isolated_only : `bool`
        Skip stars with another star within ``isolation_radius``.
    isolation_radius : `float`, optional
        Default: ``sky_annulus[1] + aperture_radius``, so that no other star's aperture reaches
        into this star's sky annulus.
    bad_mask_planes : sequence of `str`
        Skip stars with any stamp pixel in these planes (unknown planes are ignored).
    min_snr : `float`
        Skip stars whose aperture signal-to-noise is below this.

    Returns
    -------
    measurements : `numpy.ndarray`
        Structured array of `MEASUREMENT_DTYPE`, one row per measured star, in input order.
        Stars off the image, within ``stamp_radius`` of an edge, saturated, with bad or non-finite
        pixels, crowded, or where adaptive moments fail are left out.
    """
    r_in, r_out = sky_annulus
    if not (0 < aperture_radius < r_in < r_out <= stamp_radius):
        raise ValueError(
            f"need 0 < aperture_radius ({aperture_radius}) < sky_annulus[0] ({r_in}) < sky_annulus[1] "
            f"({r_out}) <= stamp_radius ({stamp_radius})"
        )
    x, y, saturated = _positions(stars)
    usable = ~saturated
    if isolated_only:
        radius = r_out + aperture_radius if isolation_radius is None else isolation_radius
        usable &= _isolated(x, y, float(radius))
    mask_plane = exposure.mask
    known = mask_plane.getMaskPlaneDict()
    bad_bits = mask_plane.getPlaneBitMask([p for p in bad_mask_planes if p in known]) if bad_mask_planes else 0
    image, mask, variance = exposure.image.array, mask_plane.array, exposure.variance.array
    x0, y0 = exposure.getX0(), exposure.getY0()
    height, width = image.shape
    offsets = np.arange(-stamp_radius, stamp_radius + 1, dtype=np.float64)

    rows = []
    for i in np.flatnonzero(usable):
        # Centre pixel of the stamp, in array indices.
        cx, cy = math.floor(x[i] - x0 + 0.5), math.floor(y[i] - y0 + 0.5)
        if not (stamp_radius <= cx < width - stamp_radius and stamp_radius <= cy < height - stamp_radius):
            continue
        rows_slice = slice(cy - stamp_radius, cy + stamp_radius + 1)
        cols_slice = slice(cx - stamp_radius, cx + stamp_radius + 1)
        pixels = image[rows_slice, cols_slice].astype(np.float64)
        if bad_bits and np.any(mask[rows_slice, cols_slice] & bad_bits):
            continue
        var = variance[rows_slice, cols_slice].astype(np.float64)
        if not (np.all(np.isfinite(pixels)) and np.all(np.isfinite(var))):
            continue
        dx = offsets[np.newaxis, :] - (x[i] - x0 - cx)
        dy = offsets[:, np.newaxis] - (y[i] - y0 - cy)
        r = np.hypot(dx, dy)
        in_aperture = r <= aperture_radius
        annulus = (r >= r_in) & (r <= r_out)
        sky = _clipped_mean(pixels[annulus])
        n_ap, n_sky = int(in_aperture.sum()), int(annulus.sum())
        flux = float(pixels[in_aperture].sum()) - sky * n_ap
        # Pixel variances in the aperture plus the error of the sky estimate, scaled to the aperture.
        flux_var = float(var[in_aperture].sum()) + n_ap**2 * float(var[annulus].mean()) / n_sky
        snr = flux / math.sqrt(flux_var) if flux_var > 0 else math.inf
        if not snr >= min_snr:
            continue
        start = (stamp_radius + x[i] - x0 - cx, stamp_radius + y[i] - y0 - cy)
        try:
            shape, centroid = adaptive_moments(pixels - sky, start)
        except ValueError:
            continue  # faint, blended or defective: nothing to measure
        rows.append(
            (
                i,
                centroid.x - stamp_radius + cx + x0,
                centroid.y - stamp_radius + cy + y0,
                shape.getDeterminantRadius(),
                flux,
                sky,
                snr,
                *moments_to_shear(shape),
            )
        )
    return np.array(rows, dtype=MEASUREMENT_DTYPE)


def width_map(
    measurements: np.ndarray,
    bbox: Box2I,
    bins: int | tuple[int, int] = 8,
    *,
    field: str = "sigma",
    statistic: str = "median",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin a measured quantity over the image, for an ``imshow``/``pcolormesh`` of the PSF width.

    Parameters
    ----------
    measurements : `numpy.ndarray`
        Rows of `MEASUREMENT_DTYPE` (or any structured array with ``x``, ``y`` and ``field``).
    bbox : `Box2I`
        The image's box; the bins tile it exactly.
    bins : `int` or `tuple` [`int`, `int`]
        Number of bins in x and y.
    field : `str`
        The field to bin.
    statistic : `str`
        Any statistic of `scipy.stats.binned_statistic_2d` ("median", "mean", "count", ...).

    Returns
    -------
    values : `numpy.ndarray`
        Shape ``(ny, nx)``, rows = y as an image; NaN where a bin holds no star.
    x_edges, y_edges : `numpy.ndarray`
        Bin edges in parent pixel coordinates (pixel edges, ``min - 0.5`` to ``max + 0.5``).
    """
    from scipy.stats import binned_statistic_2d

    nx, ny = (bins, bins) if isinstance(bins, (int, np.integer)) else bins
    x_edges = np.linspace(bbox.getMinX() - 0.5, bbox.getMaxX() + 0.5, int(nx) + 1)
    y_edges = np.linspace(bbox.getMinY() - 0.5, bbox.getMaxY() + 0.5, int(ny) + 1)
    if len(measurements) == 0:
        return np.full((int(ny), int(nx)), np.nan), x_edges, y_edges
    result = binned_statistic_2d(
        measurements["x"],
        measurements["y"],
        measurements[field],
        statistic=statistic,
        bins=[x_edges, y_edges],
    )
    values = np.asarray(result.statistic, dtype=np.float64).T  # scipy returns (x, y); images are (y, x)
    return values, x_edges, y_edges
