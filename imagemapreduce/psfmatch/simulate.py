"""Simulated star fields with a spatially varying PSF, realistic noise and defects.

`simulate_exposure` renders stars with the PSF evaluated at each star's own position (stamps
added into the image, not a full-image convolution, so it is fast and the PSF can vary
arbitrarily), adds sky, Poisson and read noise, writes the matching variance plane, saturates a
few stars and adds a bad column. It is the test bench for `PsfMatchMapper`; `field_psf` makes
the field PSFs it is tested on (Gaussian, Moffat or Kolmogorov, pixel-integrated, widening and
growing elliptical towards the corners).

Units: the image is in ADU; ``gain`` is electrons per ADU; ``read_noise`` is in electrons.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..geom import Box2I, Extent2I, Point2D, Point2I
from ..image import ExposureF
from ..psf import Psf
from ..psf._varying import VaryingGaussianPsf, VaryingKolmogorovPsf, VaryingMoffatPsf

__all__ = ["STAR_DTYPE", "PROFILES", "default_varying_psf", "field_psf", "simulate_exposure"]

#: The profiles `field_psf` can make.
PROFILES = ("gaussian", "moffat", "kolmogorov")

#: FWHM of a Gaussian in units of its sigma.
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: The star catalogue's fields: parent-pixel centre, total flux in ADU (before saturation),
#: the PSF FWHM at the star in pixels, and whether the star saturated.
STAR_DTYPE = np.dtype(
    [
        ("id", np.int64),
        ("x", np.float64),
        ("y", np.float64),
        ("flux", np.float64),
        ("fwhm", np.float64),
        ("saturated", np.bool_),
    ]
)


def default_varying_psf(bbox: Box2I, sigma_center: float = 1.5, widening: float = 1.5) -> VaryingGaussianPsf:
    """Return the simulator's default PSF: a Gaussian widening ``widening`` times from centre to corners.

    Parameters
    ----------
    bbox : `Box2I`
        The image's box, which the PSF's normalised coordinates span.
    sigma_center : `float`
        Sigma at the centre of the box, pixels.
    widening : `float`
        Ratio of sigma at the corners to sigma at the centre.
    """
    sigma_corner = sigma_center * widening
    # +/- 6.5 sigma at the widest keeps the truncated wing below 1e-9 of the flux.
    size = 2 * math.ceil(6.5 * max(sigma_center, sigma_corner)) + 1
    return VaryingGaussianPsf.radial(size, size, bbox, sigma_center, sigma_corner)


def field_psf(
    bbox: Box2I,
    profile: str = "moffat",
    fwhm_center: float = 2.5,
    fwhm_corner: float = 4.5,
    *,
    beta: float = 3.5,
    g_max: float = 0.0,
    pixelIntegrated: bool = True,
    size: int | None = None,
) -> Psf:
    """Return a field PSF that widens radially and grows elliptical towards the corners.

    The FWHM is ``fwhm_center`` at the centre of ``bbox`` and ``fwhm_corner`` at its corners
    (quadratic in the normalised radius, like `VaryingGaussianPsf.radial`). The reduced shear is
    ``g = g_max (u, v) / sqrt(2)`` in normalised coordinates: round at the centre, ``|g| = g_max``
    at the corners, pointing away from the centre.

    Parameters
    ----------
    bbox : `Box2I`
        The image's box, which the PSF's normalised coordinates span.
    profile : `str`
        One of `PROFILES`: ``"gaussian"`` (`VaryingGaussianPsf`, its sigma set from the FWHM),
        ``"moffat"`` (`VaryingMoffatPsf` of index ``beta``) or ``"kolmogorov"``
        (`VaryingKolmogorovPsf`).
    fwhm_center, fwhm_corner : `float`
        FWHM at the centre and at the corners, pixels, > 0.
    beta : `float`
        The Moffat index (Moffat only).
    g_max : `float`
        Reduced shear at the corners, ``0 <= g_max < 1``.
    pixelIntegrated : `bool`
        Integrate the profile over the pixels (default), as a detector does.
    size : `int`, optional
        Width and height of the kernel images; default ``2 * ceil(4 * max FWHM) + 1``, about
        +/- 9 sigma for a Gaussian and most of a Moffat's wings.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if not (0.0 <= g_max < 1.0):
        raise ValueError(f"g_max must be in [0, 1), got {g_max!r}")
    f0, f1 = float(fwhm_center), float(fwhm_corner)
    if not (f0 > 0 and f1 > 0 and math.isfinite(f0) and math.isfinite(f1)):
        raise ValueError(f"fwhm_center and fwhm_corner must be finite and > 0, got {fwhm_center!r}, {fwhm_corner!r}")
    if size is None:
        size = 2 * math.ceil(4.0 * max(f0, f1)) + 1
    scale = 1.0 if profile != "gaussian" else 1.0 / _FWHM_PER_SIGMA
    half = 0.5 * (f1 - f0) * scale
    width = [[f0 * scale, 0.0, half], [0.0, 0.0, 0.0], [half, 0.0, 0.0]]
    g = g_max / math.sqrt(2.0)
    # The keyword arguments every varying profile shares (their values differ in type).
    shear: dict[str, Any] = {"g1_coeffs": [[0.0], [g]], "g2_coeffs": [[0.0, g]], "pixelIntegrated": pixelIntegrated}
    if profile == "gaussian":
        return VaryingGaussianPsf(size, size, width, bbox, **shear)
    if profile == "moffat":
        return VaryingMoffatPsf(size, size, width, bbox, beta, **shear)
    return VaryingKolmogorovPsf(size, size, width, bbox, **shear)


def _local_fwhm(psf: Psf, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the PSF's FWHM at each position: analytic where the PSF offers it, else from its moments."""
    if hasattr(psf, "fwhm_at"):
        return np.asarray(psf.fwhm_at(x, y), dtype=np.float64).reshape(x.shape)
    points = zip(x.tolist(), y.tolist(), strict=True)
    radii = [psf.computeShape(Point2D(a, b)).getDeterminantRadius() for a, b in points]
    return np.asarray(radii, dtype=np.float64) * _FWHM_PER_SIGMA


def _add_stamp(model: np.ndarray, bbox: Box2I, psf: Psf, x: float, y: float, flux: float) -> float:
    """Add ``flux`` times the PSF centred on ``(x, y)`` into ``model``, clipped at the edges.

    Returns the value the stamp adds at its peak pixel (for the saturation flag).
    """
    stamp = psf.computeImage(Point2D(x, y))
    overlap = stamp.getBBox().clipped_to(bbox)
    if overlap.isEmpty():
        return 0.0
    model[overlap.slices(bbox.getBegin())] += flux * stamp.array[overlap.slices(stamp.getXY0())]
    return float(flux * stamp.array.max())


def simulate_exposure(
    width: int,
    height: int,
    *,
    psf: Psf | None = None,
    n_stars: int = 300,
    seed: int = 0,
    sky: float = 100.0,
    read_noise: float = 5.0,
    gain: float = 2.0,
    flux_range: tuple[float, float] = (300.0, 3.0e5),
    n_saturated: int = 3,
    saturation: float = 60000.0,
    bad_column: bool = True,
    xy0: tuple[int, int] = (0, 0),
    noise: bool = True,
) -> tuple[ExposureF, np.ndarray]:
    """Simulate a star field with a spatially varying PSF.

    Parameters
    ----------
    width, height : `int`
        Image size in pixels.
    psf : `Psf`, optional
        The PSF, in the parent coordinates of the image. Default: `default_varying_psf`, a
        Gaussian with sigma 1.5 px at the centre widening to 2.25 px at the corners. It is also
        attached to the exposure.
    n_stars : `int`
        Number of ordinary stars, at uniform random positions over the image.
    seed : `int`
        Seed of the `numpy.random.Generator` objects: the same seed gives bitwise the same exposure.
        Stars, the bad column and the noise come from independent streams, so ``noise=False``
        with the same seed gives the noiseless model of the same field.
    sky : `float`
        Sky level, ADU per pixel.
    read_noise : `float`
        Gaussian read noise, electrons rms per pixel.
    gain : `float`
        Electrons per ADU.
    flux_range : `tuple` [`float`, `float`]
        Range of total star fluxes in ADU; fluxes are log-uniform in it.
    n_saturated : `int`
        Extra stars bright enough to saturate: peak 3 to 20 times ``saturation``.
    saturation : `float`
        Pixel values at or above it are clipped to it and flagged ``SAT``.
    bad_column : `bool`
        Whether to add a dead column (random, away from the edges): its pixels read 0 ADU, far
        below the sky, are flagged ``BAD``, and keep their nominal variance. Zero rather than NaN
        so that code which forgets the mask sees a visibly wrong but finite value.
    xy0 : `tuple` [`int`, `int`]
        The parent coordinates of the first pixel.
    noise : `bool`
        Whether to add noise; `False` gives the noiseless model (saturation and the bad column
        still applied) with the same stars.

    Returns
    -------
    exposure : `ExposureF`
        Image, mask (SAT, BAD), variance ``(sky + stars) / gain + (read_noise / gain)**2`` in
        ADU^2 from the noiseless model, and the PSF. Its metadata records the simulation
        parameters, including ``BADCOL`` (the bad column's parent x, or -1).
    stars : `numpy.ndarray`
        Structured array of `STAR_DTYPE`, one row per star (ordinary stars first).

    Raises
    ------
    ValueError
        If a parameter is out of range (named in the message).
    """
    _check_parameters(width, height, n_stars, sky, read_noise, gain, flux_range, n_saturated, saturation)
    bbox = Box2I(Point2I(*xy0), Extent2I(width, height))
    if psf is None:
        psf = default_varying_psf(bbox)
    star_rng, column_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    n_total = n_stars + n_saturated
    # Positions uniform over the pixel area: pixel i covers [i - 0.5, i + 0.5).
    x = star_rng.uniform(bbox.getMinX() - 0.5, bbox.getMaxX() + 0.5, n_total)
    y = star_rng.uniform(bbox.getMinY() - 0.5, bbox.getMaxY() + 0.5, n_total)
    lo, hi = math.log(flux_range[0]), math.log(flux_range[1])
    flux = np.exp(star_rng.uniform(lo, hi, n_total))
    overshoot = star_rng.uniform(3.0, 20.0, n_saturated)

    model = np.full((height, width), float(sky), dtype=np.float64)
    peak = np.zeros(n_total)
    for i in range(n_total):
        if i >= n_stars:
            # Scale the bright stars by their own stamp's peak so they saturate whatever the PSF.
            unit_peak = float(psf.computeImage(Point2D(x[i], y[i])).array.max())
            flux[i] = overshoot[i - n_stars] * saturation / unit_peak
        peak[i] = _add_stamp(model, bbox, psf, float(x[i]), float(y[i]), float(flux[i]))

    # Variance from the noiseless model: what a pipeline's variance plane estimates.
    variance = model / gain + (read_noise / gain) ** 2
    if noise:
        electrons = noise_rng.poisson(model * gain).astype(np.float64)
        image = (electrons + noise_rng.normal(0.0, read_noise, model.shape)) / gain
    else:
        image = model.copy()

    exposure = ExposureF(bbox, psf=psf)
    mask = exposure.mask
    column = -1
    if bad_column:
        # Away from the edges so the defect is surrounded by data on both sides.
        column = int(column_rng.integers(width // 8, width - width // 8))
        image[:, column] = 0.0
        mask.array[:, column] |= mask.getPlaneBitMask("BAD")
        column += bbox.getMinX()
    # After the bad column: a dead pixel reads 0 whatever falls on it, so it never saturates.
    saturated_pixels = image >= saturation
    image[saturated_pixels] = saturation
    mask.array[saturated_pixels] |= mask.getPlaneBitMask("SAT")
    exposure.image.array[...] = image
    exposure.variance.array[...] = variance

    stars = np.zeros(n_total, dtype=STAR_DTYPE)
    stars["id"] = np.arange(n_total)
    stars["x"], stars["y"], stars["flux"] = x, y, flux
    stars["fwhm"] = _local_fwhm(psf, x, y)
    stars["saturated"] = peak + sky >= saturation
    exposure.getMetadata().update(
        {
            "SIMSEED": seed,
            "SKY": sky,
            "GAIN": gain,
            "RDNOISE": read_noise,
            "SATURATE": saturation,
            "BADCOL": column,
            "NSTARS": n_total,
        }
    )
    return exposure, stars


def _check_parameters(
    width: Any,
    height: Any,
    n_stars: Any,
    sky: float,
    read_noise: float,
    gain: float,
    flux_range: tuple[float, float],
    n_saturated: Any,
    saturation: float,
) -> None:
    """Raise a `ValueError` naming the first parameter out of range."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("n_stars", n_stars), ("n_saturated", n_saturated)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    checks = (
        ("sky", sky, sky >= 0),
        ("read_noise", read_noise, read_noise >= 0),
        ("gain", gain, gain > 0),
        ("saturation", saturation, saturation > sky),
    )
    for name, value, ok in checks:
        if not (math.isfinite(value) and ok):
            raise ValueError(f"{name} is out of range: {value!r} (gain > 0, others >= 0, saturation > sky)")
    if len(flux_range) != 2 or not (0 < flux_range[0] <= flux_range[1] < math.inf):
        raise ValueError(f"flux_range must be (low, high) with 0 < low <= high, got {flux_range!r}")
