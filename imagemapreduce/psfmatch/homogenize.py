"""PSF homogenisation: a mapper that brings every cell of an exposure to one target PSF.

This is the operation `ImageMapReduceTask` exists for: it changes across the field. Each cell is
convolved with its own matching kernel so that stars everywhere end up with the target's
profile. By default (``method="exact"``) the kernel ``K`` is solved from the PSF's and the
target's kernel images at the cell's centre, ``PSF ⊗ K ≈ target`` (`solve_matching_kernel`:
regularised least squares over the kernel's pixels, as LSST's delta-function basis, with its
normal equations built in Fourier space; or a Wiener-style Fourier solve): exact for any PSF the
target is wider than, and the output's PSF model is the target. ``method="gaussian"`` is the fast approximation
for Gaussian PSFs: a Gaussian kernel of variance ``target^2 - local^2`` from the PSF's
adaptive-moments sigma, which leaves non-Gaussian PSFs a few percent too wide.

The target is a FWHM, a sigma or any `Psf`; by default the smallest round Gaussian that every
part of the field reaches without deconvolution, plus a margin (`choose_target`). A target
narrower than the PSF anywhere, in any direction, is refused before any cell is convolved
(`check_target`). With overlapping cells and ``reduceOperation='average'`` the kernel varies
smoothly between cells. See `PsfMatchMapper`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Literal, cast

import lsst.pex.config as pexConfig
import numpy as np

from ..builtin_mappers import EDGE_MODES
from ..geom import Box2I, Point2D
from ..image import Exposure
from ..mapper import ImageMapper, ImageMapperConfig
from ..pipe_base import Struct
from ..psf import EllipticalGaussianPsf, GaussianPsf, Psf, adaptive_moments
from ..psf._profiles import FWHM_PER_SIGMA, PIXEL_VARIANCE

__all__ = [
    "PsfMatchMapperConfig",
    "PsfMatchMapper",
    "MatchingKernel",
    "PsfSurvey",
    "TargetTooNarrowError",
    "psf_sigma",
    "max_psf_sigma",
    "matching_sigma",
    "matching_kernel_1d",
    "cell_kernel_image",
    "solve_matching_kernel",
    "convolve_cell",
    "survey_psf",
    "choose_target",
    "make_target",
    "check_target",
]

_log = logging.getLogger(__name__)

# Kernel variances below this (pixels^2) are treated as no convolution at all: the kernel would
# be a delta function to within float32 rounding anyway.
_MIN_KERNEL_VARIANCE = 1e-6


def psf_sigma(psf: Psf, position: Point2D) -> float:
    """Return the PSF's Gaussian-equivalent sigma at ``position``: the determinant radius of `computeShape`.

    Analytic for (varying) Gaussian PSFs; adaptive moments of the kernel image for others.
    """
    return float(psf.computeShape(position).getDeterminantRadius())


@functools.lru_cache(maxsize=64)
def _max_psf_sigma_cached(psf: Psf, box: tuple[int, int, int, int], points: int) -> float:
    x0, y0, x1, y1 = box
    xs, ys = np.linspace(x0, x1, points), np.linspace(y0, y1, points)
    analytic = hasattr(psf, "sigma_at") and hasattr(psf, "sigma_range")
    # An elliptical or pixel-integrated profile's sigma is not its moments' radius: measure those.
    if analytic and not (getattr(psf, "isElliptical", bool)() or getattr(psf, "isPixelIntegrated", bool)()):
        # An analytic sigma is cheap: search a fine grid, the corners and edges included.
        fine_x, fine_y = np.linspace(x0, x1, 129), np.linspace(y0, y1, 129)
        return float(np.max(cast(Any, psf).sigma_at(*np.meshgrid(fine_x, fine_y))))  # checked by hasattr
    return max(psf_sigma(psf, Point2D(float(x), float(y))) for x in xs for y in ys)


def max_psf_sigma(psf: Psf, bbox: Box2I, points: int = 9) -> float:
    """Return the largest PSF sigma over ``bbox``, sampled on a ``points`` x ``points`` grid.

    The target that every cell can be matched to without sharpening. Results are cached per
    (PSF, box), since every cell of a run asks the same question.
    """
    box = (bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY())
    try:
        return _max_psf_sigma_cached(psf, box, int(points))
    except TypeError:  # an unhashable third-party PSF: no cache
        return _max_psf_sigma_cached.__wrapped__(psf, box, int(points))


def matching_sigma(local_sigma: float, target_sigma: float) -> float:
    """Return the Gaussian kernel sigma taking ``local_sigma`` to ``target_sigma``, 0 if none is needed.

    Gaussians convolve by adding variances, so the kernel has ``sqrt(target^2 - local^2)``.
    A local PSF already at least as wide as the target cannot be sharpened by a kernel: 0.
    """
    variance = target_sigma**2 - local_sigma**2
    return math.sqrt(variance) if variance > _MIN_KERNEL_VARIANCE else 0.0


def matching_kernel_1d(sigma: float, radius: int) -> np.ndarray:
    """Return a normalised sampled 1-d Gaussian on ``[-radius, radius]`` of discrete variance ``sigma^2``.

    A Gaussian sampled at pixel centres has a variance below ``sigma^2`` when ``sigma`` is well
    under a pixel (and, slightly, when truncated). Since variances add exactly under discrete
    convolution, the sampling width is solved for so that the kernel adds exactly ``sigma^2``:
    a cell whose PSF is a hair narrower than the target then reaches the target, not less.

    Parameters
    ----------
    sigma : `float`
        The required standard deviation, pixels, > 0.
    radius : `int`
        Half-width of the kernel, >= 1; its variance can be at most ``radius (radius + 1) / 3``.
    """
    from scipy.optimize import brentq

    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    target = sigma * sigma
    if not 0 < target < radius * (radius + 1) / 3.0:
        raise ValueError(f"a {2 * radius + 1}-pixel kernel cannot have sigma {sigma}; increase the radius")

    def kernel(width: float) -> np.ndarray:
        values = np.exp(-0.5 * (offsets / width) ** 2)
        return values / values.sum()

    def excess(width: float) -> float:
        return float(kernel(width) @ offsets**2) - target

    # The discrete variance rises monotonically from 0 to the flat kernel's as the width grows.
    upper = max(2.0 * sigma, 1.0)
    while excess(upper) < 0:
        upper *= 2.0
    return kernel(brentq(excess, 1e-3, upper, xtol=1e-14, rtol=1e-14))


def correlate_separable(array: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Correlate along both axes with a symmetric 1-d kernel (separable 2-d convolution).

    The Gaussian method's convolution step, on one plane.

    Parameters
    ----------
    array : `numpy.ndarray`
        The 2-d plane.
    kernel : `numpy.ndarray`
        The symmetric 1-d kernel (`matching_kernel_1d`; its square for a variance plane).
    mode : `str`
        The edge mode, as `scipy.ndimage.correlate1d` takes it.

    Returns
    -------
    out : `numpy.ndarray`
        The correlated plane, of ``array``'s shape.
    """
    from scipy import ndimage

    out = ndimage.correlate1d(array, kernel, axis=0, mode=mode)
    return ndimage.correlate1d(out, kernel, axis=1, mode=mode)


def _grow_bits(mask: np.ndarray, bits: list[int], radius: int) -> np.ndarray:
    """Spread each bit to every pixel within ``radius`` (a square: the separable kernel's support)."""
    from scipy import ndimage

    grown = mask.copy()
    size = 2 * radius + 1
    for bit in bits:
        flagged = (mask & bit) != 0
        if flagged.any():
            spread = ndimage.maximum_filter(flagged, size=size, mode="constant", cval=False)
            grown[spread] |= bit
    return grown


# -- the exact method: kernels solved from kernel images ----------------------------------------

#: numpy.pad modes equivalent to the scipy.ndimage edge modes of `EDGE_MODES`.
_PAD_MODES: dict[str, Literal["edge", "symmetric", "reflect"]] = {
    "nearest": "edge",
    "reflect": "symmetric",
    "mirror": "reflect",
}
#: Kernel images and solved kernels kept per process (cells of a 2048^2 image on a 32 px step: 4096).
_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _kernel_image_cached(psf: Psf, x: float, y: float) -> np.ndarray:
    array = np.array(psf.computeKernelImage(Point2D(x, y)).array, dtype=np.float64)
    array.flags.writeable = False
    return array


def cell_kernel_image(psf: Psf, position: Point2D) -> np.ndarray:
    """Return the PSF's kernel image at ``position`` as a read-only array, cached per position.

    Every cell asks for the PSF at its centre, a run's target check and kernel solve ask again,
    and a second run on the same exposure asks for the same cells: the image is computed once.
    A PSF that cannot be hashed is evaluated every time.
    """
    try:
        return _kernel_image_cached(psf, float(position.x), float(position.y))
    except TypeError:  # an unhashable third-party PSF
        return _kernel_image_cached.__wrapped__(psf, float(position.x), float(position.y))


@dataclasses.dataclass(frozen=True)
class MatchingKernel:
    """A matching kernel solved by `solve_matching_kernel`.

    Attributes
    ----------
    array : `numpy.ndarray`
        The kernel, ``(2 radius + 1)`` square, centre at ``[radius, radius]``, sum 1.
    radius : `int`
        Its half-width in pixels.
    gain : `float`
        Largest amplitude of its transfer function, ``max |K(k)|``: above 1 the kernel sharpens
        some frequencies (reshaping a wingy PSF's core), far above 1 it deconvolves.
    noise : `float`
        ``sum(K^2)``: the variance of white noise after the kernel, relative to before.
    residual : `float`
        ``max |PSF ⊗ K - target| / max(target)`` on the solve's grid.
    misfit : `float`
        The rms misfit ``|PSF ⊗ K - target| / |target|`` (2-norms over the grid), which
        ``tolerance`` bounds.
    """

    array: np.ndarray
    radius: int
    gain: float
    noise: float
    residual: float
    misfit: float


def _centred_on_origin(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Embed a kernel image (centre at ``[h // 2, w // 2]``) in a zero array with its centre at [0, 0]."""
    out = np.zeros(shape)
    h, w = image.shape
    out[:h, :w] = image
    return np.roll(out, (-(h // 2), -(w // 2)), axis=(0, 1))


#: Radii tried, in turn, by the least-squares solve until the match is within tolerance.
_LSQ_RADII = (2, 3, 4, 5, 6, 7, 8, 10, 12)
_LSQ_START = 2  # the index of 4 px, where the search starts
#: Solvers of `solve_matching_kernel`.
KERNEL_SOLVERS = {
    "leastSquares": "pixel-space least squares on a delta-function basis (as ModelPsfMatchTask), "
    "normal equations from the Fourier-space autocorrelation: the most compact kernel",
    "wiener": "Wiener-style Fourier-space solve conj(P) T / (abs(P)^2 + regularization), cropped",
}


def solve_matching_kernel(
    psf_image: np.ndarray,
    target_image: np.ndarray,
    *,
    solver: str = "leastSquares",
    regularization: float = 1e-10,
    tolerance: float = 5e-3,
    max_radius: int | None = None,
    radius: int | None = None,
) -> MatchingKernel:
    """Solve ``psf ⊗ K ≈ target`` for a compact kernel ``K`` of flux 1.

    Two solvers. ``"leastSquares"`` (default) minimises ``sum (psf ⊗ K - target)^2 +
    regularization * sum(psf^2) * sum(K^2)`` over the pixels of a ``(2 r + 1)^2`` kernel, under
    ``sum(K) = 1``: the normal equations' matrix is the PSF's autocorrelation and their right-hand
    side its cross-correlation with the target, both from one FFT, solved by Cholesky. It puts
    the kernel's freedom where the PSF has power, so a kernel that must narrow a wingy core or add
    less than a pixel of width stays a few pixels wide. ``"wiener"`` takes
    ``K(k) = conj(P(k)) T(k) / (|P(k)|^2 + regularization)`` on a grid twice the images' size,
    crops it and renormalises: exact before cropping, but a kernel whose transform does not vanish
    at the Nyquist frequency rings far out, so it needs a larger radius for the same match.

    Without ``radius`` the smallest radius whose match has an rms misfit
    ``|psf ⊗ K - target| / |target|`` within ``tolerance`` is used (up to ``max_radius``); the
    least-squares solve reads the misfit off its normal equations, so trying a radius costs no
    convolution.

    Parameters
    ----------
    psf_image, target_image : `numpy.ndarray`
        Kernel images, each with its centre at pixel ``[h // 2, w // 2]`` (as `Psf.computeKernelImage`
        gives them), any sizes; normalised here.
    solver : `str`
        One of `KERNEL_SOLVERS`.
    regularization : `float`
        Tikhonov (least squares) or Wiener term, relative to the PSF's power.
    tolerance : `float`
        Largest rms misfit allowed when ``radius`` is not given. The default, 5e-3, leaves the
        largest pixel of the misfit near 1e-3 of the target's peak and widths within 0.1%.
    max_radius : `int`, optional
        Largest radius to use; default 12 (least squares) or the solve grid's (Wiener).
    radius : `int`, optional
        A fixed radius instead of the ``tolerance`` rule.

    Returns
    -------
    kernel : `MatchingKernel`
    """
    if solver not in KERNEL_SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(KERNEL_SOLVERS)}, got {solver!r}")
    psf_image = np.asarray(psf_image, dtype=np.float64)
    target_image = np.asarray(target_image, dtype=np.float64)
    psf_image = psf_image / psf_image.sum()
    target_image = target_image / target_image.sum()
    if solver == "wiener":
        return _solve_wiener(psf_image, target_image, regularization, tolerance, max_radius, radius)
    return _solve_least_squares(psf_image, target_image, regularization, tolerance, max_radius, radius)


class _Grid:
    """The FFT grid of a solve: both images' transforms, the target on the grid, and residuals."""

    def __init__(self, psf_image: np.ndarray, target_image: np.ndarray, extra: int) -> None:
        from scipy import fft

        size = fft.next_fast_len(max(*psf_image.shape, *target_image.shape) + 2 * extra + 2, real=True)
        self.shape = (size, size)
        self.psf = _centred_on_origin(psf_image, self.shape)
        self.target = _centred_on_origin(target_image, self.shape)
        self.p_hat = fft.rfft2(self.psf)
        self.t_hat = fft.rfft2(self.target)
        self.peak = float(self.target.max())

    def result(self, array: np.ndarray) -> MatchingKernel:
        """Score a kernel: its transfer function's peak, noise gain and residual match."""
        from scipy import fft

        kernel_hat = fft.rfft2(_centred_on_origin(array, self.shape))
        difference = fft.irfft2(self.p_hat * kernel_hat, s=self.shape) - self.target
        residual = float(np.abs(difference).max()) / self.peak
        misfit = float(np.sqrt(np.sum(difference**2) / np.sum(self.target**2)))
        return MatchingKernel(
            array, array.shape[0] // 2, float(np.abs(kernel_hat).max()), float(np.sum(array**2)), residual, misfit
        )


def _point_symmetric(grid_image: np.ndarray) -> bool:
    """Whether an image centred on the grid's origin equals itself rotated by 180 degrees."""
    flipped = np.roll(grid_image[::-1, ::-1], 1, axis=(0, 1))
    return bool(np.abs(grid_image - flipped).max() <= 1e-12 * np.abs(grid_image).max())


def _solve_least_squares(
    psf_image: np.ndarray,
    target_image: np.ndarray,
    regularization: float,
    tolerance: float,
    max_radius: int | None,
    radius: int | None,
) -> MatchingKernel:
    from scipy import fft

    top = _LSQ_RADII[-1] if max_radius is None else max(1, int(max_radius))
    radii = [int(radius)] if radius is not None else [r for r in _LSQ_RADII if r < top] + [top]
    grid = _Grid(psf_image, target_image, max(radii))
    # Autocorrelation of the PSF and its cross-correlation with the target, at every lag on the grid.
    auto = fft.irfft2(grid.p_hat * np.conj(grid.p_hat), s=grid.shape)
    cross = fft.irfft2(np.conj(grid.p_hat) * grid.t_hat, s=grid.shape)
    # Centred PSF models are nearly always symmetric under a half turn; so is their kernel, which
    # halves the unknowns (and keeps the Cholesky factorisation small enough to stay single-threaded).
    symmetric = _point_symmetric(grid.psf) and _point_symmetric(grid.target)
    norm = float(np.sum(grid.target**2))

    def attempt(index: int) -> tuple[np.ndarray, bool]:
        array, misfit = _least_squares_kernel(auto, cross, radii[index], regularization, symmetric)
        # The match's rms misfit, from the normal equations: no convolution needed to judge a radius.
        return array, math.sqrt(max(misfit + norm, 0.0) / norm) <= tolerance

    # The smallest radius of the ladder that fits, searched from the middle of the usual range
    # (4 px) down or up: two or three solves for most PSFs, and the same answer as a full scan.
    index = min(_LSQ_START, len(radii) - 1)
    array, fits = attempt(index)
    step = -1 if fits else 1
    while 0 <= index + step < len(radii):
        trial, trial_fits = attempt(index + step)
        if step < 0 and not trial_fits:
            break
        index, array = index + step, trial
        if step > 0 and trial_fits:
            break
    return grid.result(array)


@functools.lru_cache(maxsize=64)
def _basis(r: int, symmetric: bool, size: int) -> tuple[np.ndarray, ...]:
    """Offsets of a radius-``r`` kernel's unknowns and the lag indices of its normal equations."""
    offsets = np.arange(-r, r + 1)
    dy, dx = np.repeat(offsets, 2 * r + 1), np.tile(offsets, 2 * r + 1)
    if symmetric:
        half = (dy > 0) | ((dy == 0) & (dx >= 0))
        uy, ux = dy[half], dx[half]
        pair = ((uy != 0) | (ux != 0)).astype(np.float64)  # 1 where the basis has two pixels
    else:
        uy, ux, pair = dy, dx, np.zeros(len(dy))
    minus = ((uy[:, None] - uy[None, :]) % size, (ux[:, None] - ux[None, :]) % size)
    plus = ((uy[:, None] + uy[None, :]) % size, (ux[:, None] + ux[None, :]) % size)
    for array in (uy, ux, pair, *minus, *plus):
        array.flags.writeable = False
    return uy, ux, pair, minus[0], minus[1], plus[0], plus[1]


def _least_squares_kernel(
    auto: np.ndarray, cross: np.ndarray, r: int, regularization: float, symmetric: bool
) -> tuple[np.ndarray, float]:
    """Minimise ``|P ⊗ K - T|^2 + reg |K|^2`` under ``sum(K) = 1`` over kernels of radius ``r``.

    The unknowns are the kernel's pixels, or with ``symmetric`` one of each pair ``K(d) = K(-d)``:
    basis ``delta_u + delta_-u`` for ``u`` in a half plane, ``delta_0`` at the centre. Returns the
    kernel and ``|P ⊗ K - T|^2 - |T|^2``: the squared misfit less the target's squared norm.
    """
    from scipy import linalg

    size = auto.shape[0]
    uy, ux, pair, my, mx, py, px = _basis(r, symmetric, size)
    # <P ⊗ b_u, P ⊗ b_v> summed over the basis' signed copies; the autocorrelation is even.
    normal = auto[my, mx] * (1.0 + pair[:, None] * pair[None, :])
    if symmetric:
        normal += auto[py, px] * (pair[:, None] + pair[None, :])
    weight = 1.0 + pair  # pixels per basis function: sum(K) and |K|^2 in the coefficients
    rhs = cross[uy % size, ux % size] + pair * cross[-uy % size, -ux % size]
    plain = normal.copy()
    normal[np.diag_indices_from(normal)] += regularization * auto[0, 0] * weight
    factor = linalg.cho_factor(normal, check_finite=False)
    free = linalg.cho_solve(factor, rhs, check_finite=False)
    unit = linalg.cho_solve(factor, weight, check_finite=False)
    # Lagrange multiplier for sum(K) = 1: flux is kept exactly.
    coefficients = free - (weight @ free - 1.0) / (weight @ unit) * unit
    kernel = np.zeros((2 * r + 1, 2 * r + 1))
    kernel[uy + r, ux + r] = coefficients
    if symmetric:
        kernel[-uy + r, -ux + r] = coefficients
    return kernel, float(coefficients @ plain @ coefficients - 2.0 * rhs @ coefficients)


def _solve_wiener(
    psf_image: np.ndarray,
    target_image: np.ndarray,
    regularization: float,
    tolerance: float,
    max_radius: int | None,
    radius: int | None,
) -> MatchingKernel:
    from scipy import fft

    grid = _Grid(psf_image, target_image, max(*psf_image.shape, *target_image.shape) // 2 + 1)
    k_hat = np.conj(grid.p_hat) * grid.t_hat / (np.abs(grid.p_hat) ** 2 + regularization)
    full = np.fft.fftshift(fft.irfft2(k_hat, s=grid.shape))
    centre = grid.shape[0] // 2
    limit = centre - 1 if max_radius is None else max(0, min(int(max_radius), centre - 1))

    def crop(r: int) -> MatchingKernel:
        array = full[centre - r : centre + r + 1, centre - r : centre + r + 1].copy()
        return grid.result(array / array.sum())

    if radius is not None:
        return crop(max(0, min(int(radius), centre - 1)))
    # The misfit falls (nearly) monotonically with the radius: bisect for the smallest that fits.
    lo, hi = 0, limit
    chosen = crop(hi)
    while lo < hi:
        mid = (lo + hi) // 2
        trial = crop(mid)
        if trial.misfit <= tolerance:
            hi, chosen = mid, trial
        else:
            lo = mid + 1
    return chosen


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _solve_cached(
    psf: Psf,
    target: Psf,
    x: float,
    y: float,
    solver: str,
    regularization: float,
    tolerance: float,
    size: int | None,
    max_radius: int | None,
) -> MatchingKernel:
    position = Point2D(x, y)
    return solve_matching_kernel(
        cell_kernel_image(psf, position),
        cell_kernel_image(target, position),
        solver=solver,
        regularization=regularization,
        tolerance=tolerance,
        radius=None if size is None else size // 2,
        max_radius=max_radius,
    )


def convolve_cell(array: np.ndarray, kernel: np.ndarray, edge_mode: str = "nearest") -> np.ndarray:
    """Convolve ``array`` with a centred odd ``kernel`` by FFT, same size, edges extended by ``edge_mode``.

    Equal to ``scipy.ndimage.convolve(array, kernel, mode=edge_mode)`` to float64 rounding, and
    like it a NaN pixel makes every output pixel within the kernel's footprint NaN.
    """
    return _convolve_planes([array], [kernel], edge_mode)[0]


def _convolve_planes(arrays: Sequence[np.ndarray], kernels: Sequence[np.ndarray], edge_mode: str) -> list[np.ndarray]:
    """`convolve_cell` of equally shaped arrays, each with its own equally shaped kernel, in one FFT."""
    from scipy import fft, ndimage

    radius_y, radius_x = kernels[0].shape[0] // 2, kernels[0].shape[1] // 2
    pad = ((radius_y, radius_y), (radius_x, radius_x))
    height, width = arrays[0].shape
    padded: list[np.ndarray] = []
    bads: list[np.ndarray | None] = []
    for array in arrays:
        data = np.asarray(array, dtype=np.float64)
        bad = ~np.isfinite(data)
        bads.append(bad if bad.any() else None)
        padded.append(np.pad(np.where(bad, 0.0, data) if bad.any() else data, pad, mode=_PAD_MODES[edge_mode]))
    stack = np.stack(padded)
    # The linear convolution fits in the padded size plus the kernel's: no circular wrap reaches the core.
    shape = (
        fft.next_fast_len(stack.shape[1] + kernels[0].shape[0] - 1, real=True),
        fft.next_fast_len(stack.shape[2] + kernels[0].shape[1] - 1, real=True),
    )
    product = fft.rfft2(stack, shape) * fft.rfft2(np.stack(kernels), shape)
    full = fft.irfft2(product, shape)
    outs = []
    for plane, plane_bad in zip(full, bads, strict=True):
        out = plane[2 * radius_y : 2 * radius_y + height, 2 * radius_x : 2 * radius_x + width]
        if plane_bad is not None:
            spread = ndimage.maximum_filter(
                np.pad(plane_bad, pad, mode=_PAD_MODES[edge_mode]), size=kernels[0].shape, mode="constant", cval=False
            )
            out = np.where(spread[radius_y : radius_y + height, radius_x : radius_x + width], np.nan, out)
        outs.append(out)
    return outs


@dataclasses.dataclass(frozen=True)
class PsfSurvey:
    """The PSF's second moments at points over a field, from `survey_psf`.

    Attributes
    ----------
    positions : `numpy.ndarray`
        ``(n, 2)`` parent positions ``(x, y)``.
    moments : `numpy.ndarray`
        ``(n, 3)`` adaptive moments ``(ixx, iyy, ixy)`` of the kernel images there.
    labels : `tuple` [`str`]
        What each position is, for messages: a cell's box, or "near (x, y)".
    """

    positions: np.ndarray
    moments: np.ndarray
    labels: tuple[str, ...]

    def major_radii(self) -> np.ndarray:
        """Square root of each position's largest moment eigenvalue: the PSF's width along its major axis."""
        ixx, iyy, ixy = self.moments.T
        half_trace = 0.5 * (ixx + iyy)
        return np.sqrt(half_trace + np.sqrt(0.25 * (ixx - iyy) ** 2 + ixy**2))

    def widest(self) -> int:
        """Index of the position where the PSF is widest along its major axis."""
        return int(np.argmax(self.major_radii()))


#: Convergence of the survey's moments, relaxed steps (a PSF's kernel image is noise-free and
#: nearly Gaussian, where the plain step halves the error): the moments come out within about 1e-7
#: of `adaptive_moments`' default, far below what `check_target` resolves (1e-4 of the trace), in
#: a third of the iterations.
_SURVEY_TOLERANCE = 1e-7
_SURVEY_RELAXATION = 2.0


@functools.lru_cache(maxsize=64)
def _survey_cached(psf: Psf, points: tuple[tuple[float, float], ...], labels: tuple[str, ...]) -> PsfSurvey:
    moments = np.empty((len(points), 3))
    previous = None
    for index, (x, y) in enumerate(points):
        moments[index] = previous = _moments(psf, x, y, previous)
    return PsfSurvey(np.array(points, dtype=np.float64), moments, labels)


def _moments(psf: Psf, x: float, y: float, start: tuple[float, float, float] | None) -> tuple[float, float, float]:
    """`Psf.computeShape` at ``(x, y)``: the adaptive moments of the kernel image unless the PSF knows better.

    The image comes from the per-position cache that the cells' kernel solves read, so a survey
    of every cell evaluates each PSF once for the whole run; the iteration starts from the
    neighbouring point's moments (``start``) and takes relaxed steps.
    """
    if type(psf).computeShape is not Psf.computeShape:  # an analytic shape: as cheap as it is exact
        shape = psf.computeShape(Point2D(x, y))
        return shape.getIxx(), shape.getIyy(), shape.getIxy()
    image = cell_kernel_image(psf, Point2D(x, y))
    height, width = image.shape
    centre = (width // 2, height // 2)
    shape, _ = adaptive_moments(image, centre, start=start, tol=_SURVEY_TOLERANCE, relaxation=_SURVEY_RELAXATION)
    return shape.getIxx(), shape.getIyy(), shape.getIxy()


def survey_psf(
    psf: Psf, bbox: Box2I | None = None, points: int = 9, *, boxes: Sequence[Box2I] | None = None
) -> PsfSurvey:
    """Measure the PSF's moments (`Psf.computeShape`) on a grid over ``bbox``, or at each of ``boxes``' centres.

    Parameters
    ----------
    psf : `Psf`
        The PSF.
    bbox : `Box2I`, optional
        The field; sampled on a ``points`` x ``points`` grid, corners included.
    points : `int`
        Grid points per axis over ``bbox``.
    boxes : sequence of `Box2I`, optional
        Cells: sampled at their centres instead, and named by their boxes in messages.

    Returns
    -------
    survey : `PsfSurvey`
        Cached per PSF and positions: every cell of a run asks the same question.
    """
    if boxes is not None:
        centres = [box.getCenter() for box in boxes]
        pts = tuple((float(c.x), float(c.y)) for c in centres)
        labels = tuple(f"cell {box}" for box in boxes)
    else:
        if bbox is None:
            raise ValueError("survey_psf needs a bbox or boxes")
        xs = np.linspace(bbox.getMinX(), bbox.getMaxX(), points)
        ys = np.linspace(bbox.getMinY(), bbox.getMaxY(), points)
        pts = tuple((float(x), float(y)) for y in ys for x in xs)
        labels = tuple(f"the cells near ({x:.1f}, {y:.1f})" for x, y in pts)
    try:
        return _survey_cached(psf, pts, labels)
    except TypeError:  # unhashable PSF
        return _survey_cached.__wrapped__(psf, pts, labels)


class TargetTooNarrowError(ValueError):
    """The target PSF is narrower than the PSF somewhere, in some direction: matching would deconvolve."""


def make_target(
    sigma: float | None = None, fwhm: float | None = None, *, pixelIntegrated: bool = True, size: int | None = None
) -> EllipticalGaussianPsf:
    """Return a round Gaussian target PSF of profile ``sigma`` or ``fwhm`` (exactly one of them).

    Parameters
    ----------
    sigma, fwhm : `float`
        The Gaussian's width before pixel integration, pixels.
    pixelIntegrated : `bool`
        Integrate over the pixels, as a star on a detector is: the kernel image's moments are then
        ``sigma^2 + 1/12``.
    size : `int`, optional
        Width and height of its kernel images; default ``2 * ceil(6 sigma) + 1``.
    """
    if (sigma is None) == (fwhm is None):
        raise ValueError("give exactly one of a target sigma and a target FWHM")
    value = float(sigma if sigma is not None else fwhm / FWHM_PER_SIGMA)  # type: ignore[operator]
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the target width must be finite and > 0, got sigma {value}")
    side = size if size is not None else 2 * math.ceil(6.0 * value) + 1
    return EllipticalGaussianPsf(side, side, value, pixelIntegrated=pixelIntegrated)


def choose_target(
    survey: PsfSurvey, margin: float = 0.01, *, pixelIntegrated: bool = True, size: int | None = None
) -> EllipticalGaussianPsf:
    """Return the smallest round Gaussian every surveyed PSF reaches without deconvolution, widened by ``margin``.

    A round Gaussian of moments ``r^2`` is at least as wide as a PSF in every direction when
    ``r`` is the PSF's major-axis radius (`PsfSurvey.major_radii`); the target is
    ``(1 + margin)`` times the largest of those, so the PSF between the surveyed points (and the
    regularised solve) has room. With ``pixelIntegrated`` its profile sigma is
    ``sqrt(r^2 - 1/12)``, since the pixel adds 1/12 to the moments.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"the target margin must be finite and >= 0, got {margin}")
    radius = float(survey.major_radii().max()) * (1.0 + margin)
    variance = radius * radius - (PIXEL_VARIANCE if pixelIntegrated else 0.0)
    if not variance > 0:
        raise ValueError(f"the PSF is narrower than a pixel (major-axis radius {radius:.4g} px): no Gaussian target")
    return make_target(math.sqrt(variance), pixelIntegrated=pixelIntegrated, size=size)


def _describe(target: Psf) -> str:
    if isinstance(target, (EllipticalGaussianPsf, GaussianPsf)):
        kind = "pixel-integrated " if getattr(target, "isPixelIntegrated", lambda: False)() else ""
        sigma = target.getSigma()
        return f"{kind}Gaussian sigma {sigma:.4g} px (FWHM {sigma * FWHM_PER_SIGMA:.4g} px)"
    return repr(target)


def check_target(target: Psf, survey: PsfSurvey, *, tolerance: float = 1e-4) -> None:
    """Raise `TargetTooNarrowError` if ``target`` is narrower than the PSF, in any direction, anywhere surveyed.

    At each surveyed position the target's moments minus the PSF's must have no negative
    eigenvalue (below ``-tolerance`` times the PSF's trace): otherwise the matching kernel
    would have to sharpen the image along that direction. The message names the positions (or
    cells) that fail, the widest PSF, and the smallest round Gaussian target that would do.
    """
    failing = []
    for i, (x, y) in enumerate(survey.positions):
        shape = target.computeShape(Point2D(float(x), float(y)))
        diff = np.array([[shape.getIxx(), shape.getIxy()], [shape.getIxy(), shape.getIyy()]])
        ixx, iyy, ixy = survey.moments[i]
        diff -= np.array([[ixx, ixy], [ixy, iyy]])
        if np.linalg.eigvalsh(diff)[0] < -tolerance * (ixx + iyy):
            failing.append(i)
    if not failing:
        return
    radii = survey.major_radii()
    widest = survey.widest()
    least = choose_target(survey, 0.0, pixelIntegrated=True)
    shown = ", ".join(survey.labels[i] for i in failing[:5]) + (
        f" and {len(failing) - 5} more" if len(failing) > 5 else ""
    )
    x, y = survey.positions[widest]
    raise TargetTooNarrowError(
        f"the target PSF ({_describe(target)}) is narrower than the PSF in {len(failing)} of "
        f"{len(survey.labels)} places: {shown}. The widest PSF has a major-axis moments radius of "
        f"{radii[widest]:.4g} px, at ({x:.1f}, {y:.1f}) ({survey.labels[widest]}); the narrowest target every "
        f"cell reaches without deconvolution is a round {_describe(least)}. Choose a wider target, or leave "
        f"it unset for that plus a margin."
    )


class PsfMatchMapperConfig(ImageMapperConfig):
    """Configuration for `PsfMatchMapper`."""

    # The annotations give each field's value type: pex_config fields are descriptors whose
    # untyped constructors leave the value type to be stated.
    method: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="exact",
        doc="How each cell's matching kernel is made.",
        allowed={
            "exact": "solved from the PSF's and the target's kernel images (solve_matching_kernel): any PSF",
            "gaussian": "fast approximation: a Gaussian of variance target^2 - local^2 from adaptive moments, "
            "exact for Gaussian PSFs only",
        },
    )
    targetSigma: pexConfig.Field[float | None] = pexConfig.Field(
        dtype=float,
        optional=True,
        default=None,
        check=lambda s: s > 0,
        doc="Sigma of the round Gaussian target PSF, pixels (exact: the profile's, before pixel integration "
        "when targetPixelIntegrated). None: see targetFwhm. A target, targetFwhm or targetSigma keyword to "
        "ImageMapReduceTask.run overrides the config.",
    )
    targetFwhm: pexConfig.Field[float | None] = pexConfig.Field(
        dtype=float,
        optional=True,
        default=None,
        check=lambda s: s > 0,
        doc="FWHM of the round Gaussian target PSF, pixels; exclusive with targetSigma. With neither: "
        "exact: the smallest round Gaussian every part of the field reaches without deconvolution, widened "
        "by targetMargin; gaussian: the largest PSF sigma over the exposure.",
    )
    targetMargin: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        default=0.01,
        check=lambda m: 0 <= m < 1,
        doc="Exact method, default target: how much wider (fraction of the radius) than the widest PSF.",
    )
    targetPixelIntegrated: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Exact method: a target given as a sigma or FWHM (or chosen) is integrated over the pixels, as "
        "stars on a detector are. False: sampled at pixel centres, as afw's GaussianPsf.",
    )
    targetSearchPoints: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        default=9,
        check=lambda n: n >= 2,
        doc="Grid points per axis on which the PSF is surveyed to choose and check the target "
        "(the gaussian method searches PSFs with an analytic sigma_at on a fine grid instead).",
    )
    kernelSolver: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="leastSquares",
        allowed=KERNEL_SOLVERS,
        doc="Exact method: how the matching kernel is solved (solve_matching_kernel).",
    )
    regularization: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        default=1e-10,
        check=lambda r: r > 0,
        doc="Exact method: the Tikhonov (least squares) or Wiener term of the solve, relative to the PSF's power.",
    )
    kernelTolerance: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        default=5e-3,
        check=lambda t: 0 < t < 1,
        doc="Exact method, kernelSize None: the kernel is the smallest square whose match (the PSF convolved "
        "with it) has an rms misfit ``|PSF * K - target| / |target|`` within this.",
    )
    maxKernelRadius: pexConfig.Field[int | None] = pexConfig.Field(
        dtype=int,
        optional=True,
        default=None,
        check=lambda n: n >= 1,
        doc="Exact method, kernelSize None: the largest radius the solve may choose. None: 12 (least squares) "
        "or the solve grid's (Wiener).",
    )
    kernelTruncate: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        default=4.0,
        check=lambda t: t >= 2,
        doc="Gaussian method: radius of the matching kernel in kernel sigmas, when kernelSize is None.",
    )
    kernelSize: pexConfig.Field[int | None] = pexConfig.Field(
        dtype=int,
        optional=True,
        default=None,
        check=lambda n: n >= 3 and n % 2 == 1,
        doc="Full width of the matching kernel in pixels (odd). None: gaussian, 2 * ceil(kernelTruncate * "
        "sigma) + 1; exact, from kernelTolerance.",
    )
    maskGrowBits: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=("BAD", "SAT"),
        doc="Mask planes spread by the kernel radius, since the convolution smears those pixels into "
        "their neighbours. Planes the mask does not have are skipped.",
    )
    edgeMode: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="nearest",
        doc="How the convolution extends the expanded cell beyond its edges (scipy.ndimage modes).",
        allowed=EDGE_MODES,
    )
    outputPsfSize: pexConfig.Field[int | None] = pexConfig.Field(
        dtype=int,
        optional=True,
        default=None,
        check=lambda n: n >= 3,
        doc="Width and height of the target PSF (exact) or of the GaussianPsf attached to each output cell "
        "(gaussian). None: exact, the larger of 2 * ceil(6 * sigma) + 1 and the PSF's kernel size; "
        "gaussian, 2 * ceil(5 * sigma) + 1.",
    )


@functools.lru_cache(maxsize=64)
def _resolve_exact_cached(
    psf: Psf,
    box: tuple[int, int, int, int],
    spec: tuple,
    points: int,
    margin: float,
    pixel: bool,
    size: int | None,
    check: bool = True,
) -> tuple[Psf, bool]:
    """Return the exact method's target for a field, checked; log it once per process when chosen."""
    bbox = _box(box)
    survey = survey_psf(psf, bbox, points)
    dims = psf.getDimensions()

    def side(sigma: float) -> int:
        # outputPsfSize if set, else room for +/- 6 sigma and at least the PSF's own stamp.
        return size if size is not None else max(int(dims.x), int(dims.y), 2 * math.ceil(6.0 * sigma) + 1)

    kind, value = spec
    chosen = kind == "auto"
    if chosen:
        sigma = choose_target(survey, margin, pixelIntegrated=pixel).getSigma()
        target = make_target(sigma, pixelIntegrated=pixel, size=side(sigma))
        widest = survey.widest()
        x, y = survey.positions[widest]
        _log.info(
            "PsfMatchMapper: target chosen: round %s, the widest PSF (major-axis radius %.4g px near "
            "(%.1f, %.1f)) plus a %.3g%% margin",
            _describe(target),
            survey.major_radii()[widest],
            x,
            y,
            100.0 * margin,
        )
    elif kind == "psf":
        target = value
    else:
        sigma = value if kind == "sigma" else value / FWHM_PER_SIGMA
        target = make_target(sigma, pixelIntegrated=pixel, size=side(sigma))
    if check:
        check_target(target, survey)
    return target, chosen


def clear_caches() -> None:
    """Forget every cached PSF image, survey, target and kernel of this process.

    The mapper keeps them per process, so later cells and runs on the same PSF reuse them;
    after this call the next run pays for all of them again (as a first run does).
    """
    for cached in (_kernel_image_cached, _solve_cached, _survey_cached, _resolve_exact_cached, _max_psf_sigma_cached):
        cached.cache_clear()


def _box(box: tuple[int, int, int, int]) -> Box2I:
    from ..geom import Point2I

    return Box2I(Point2I(box[0], box[1]), Point2I(box[2], box[3]))


class PsfMatchMapper(ImageMapper):
    """Convolve each cell so that its PSF becomes one target PSF.

    ``method="exact"`` (the default): the PSF's kernel image at the cell's centre (`cell_kernel_image`)
    and the target's are matched by a kernel solved from the two (`solve_matching_kernel`: least
    squares by default, or Wiener-style in Fourier space), as small as ``kernelTolerance`` allows
    and normalised to flux 1; the expanded cell is convolved with it by FFT and its core returned.
    The output PSF is the target, for any PSF profile: Gaussian, Moffat, Kolmogorov, elliptical,
    pixel-integrated. The target is a ``target`` `Psf`, a
    ``targetFwhm`` or a ``targetSigma`` (run keywords, then the config), else `choose_target`'s:
    the smallest round Gaussian every part of the field reaches, plus ``targetMargin``. The field's
    PSF is surveyed on a ``targetSearchPoints`` grid before the first cell is convolved (once per
    process), and a target narrower anywhere, in any direction, raises `TargetTooNarrowError`;
    `checkTarget` does the same for a task's own cells before a run.

    ``method="gaussian"``, the fast approximation: the local PSF sigma at the cell's centre
    (`psf_sigma`), a separable Gaussian kernel of sigma ``sqrt(target^2 - local^2)`` (none if the
    local PSF is already at least as wide), and a `GaussianPsf` of the target sigma as output PSF
    (of the local sigma where it could not be matched). Exact for Gaussian PSFs only: a Moffat
    comes out a few percent wider than the target.

    Both convolve the variance with the squared kernel (exact for independent pixels) and spread
    the ``maskGrowBits`` planes by the kernel radius. The task's ``sum``/``average`` reducer turns
    the cells' PSFs into a `CoaddPsf`.

    Notes
    -----
    The output core equals convolving the whole image (with the same kernel) only if the border
    is at least the kernel radius on every side that is not the image's edge; a smaller border is
    logged as a warning. At the image's edges the expanded cell ends where the image does, so
    ``edgeMode`` applies exactly as on the whole image.

    Within a cell the kernel is constant while the PSF still varies, so a star off the cell's
    centre is matched with its neighbour's kernel; overlapping cells averaged together cancel this
    to first order, and a taper (``reducer.weighting = "linear"``) blends the kernels smoothly
    between cells. Keep cells small compared to the scale on which the PSF changes. NaN pixels
    spread over the kernel's footprint; the reducer skips them where another cell covers the pixel.
    """

    ConfigClass = PsfMatchMapperConfig
    _DefaultName = "imr_PsfMatchMapper"
    config: PsfMatchMapperConfig

    # -- targets ------------------------------------------------------------------------------------
    def _targetSpec(self, kwargs: dict[str, Any]) -> tuple[str, Any]:
        """Return ``(kind, value)`` of the requested target: a run keyword first, then the config, else auto."""
        if kwargs.get("target") is not None:
            target = kwargs["target"]
            if not isinstance(target, Psf):
                raise TypeError(f"target must be a Psf, not {type(target).__name__}")
            return ("psf", target)
        for kind, source in (
            ("fwhm", kwargs.get("targetFwhm")),
            ("sigma", kwargs.get("targetSigma")),
            ("fwhm", self.config.targetFwhm),
            ("sigma", self.config.targetSigma),
        ):
            if source is not None:
                if kind == "fwhm" and source is self.config.targetFwhm and self.config.targetSigma is not None:
                    raise ValueError("set one of config.targetSigma and config.targetFwhm, not both")
                value = float(source)
                if not (math.isfinite(value) and value > 0):
                    raise ValueError(f"the target {kind} must be finite and > 0, got {source}")
                return (kind, value)
        return ("auto", None)

    def resolveTarget(self, psf: Psf, fullBBox: Box2I, **kwargs: Any) -> Psf:
        """Return the exact method's target PSF for an exposure's ``psf`` over ``fullBBox``, checked.

        Raises
        ------
        TargetTooNarrowError
            If the target is narrower than the PSF anywhere on the survey grid, in any direction.
        """
        return self._resolveExact(psf, fullBBox, kwargs)[0]

    def _resolveExact(self, psf: Psf, fullBBox: Box2I, kwargs: dict[str, Any], check: bool = True) -> tuple[Psf, bool]:
        box = (fullBBox.getMinX(), fullBBox.getMinY(), fullBBox.getMaxX(), fullBBox.getMaxY())
        args = (
            box,
            self._targetSpec(kwargs),
            self.config.targetSearchPoints,
            self.config.targetMargin,
            self.config.targetPixelIntegrated,
            self.config.outputPsfSize,
            check,
        )
        try:
            return _resolve_exact_cached(psf, *args)
        except TypeError as error:
            if "unhashable" not in str(error):
                raise
            return _resolve_exact_cached.__wrapped__(psf, *args)

    def checkTarget(self, exposure: Exposure, boxes: Sequence[Box2I], **kwargs: Any) -> Psf:
        """Check the target against the PSF at the centre of each of ``boxes`` (a task's ``boxes0``), before a run.

        Returns the target; raises `TargetTooNarrowError` naming the cells where it is too narrow.
        """
        psf = self._psfOf(exposure)
        target = self._resolveExact(psf, exposure.getBBox(), kwargs, check=False)[0]
        check_target(target, survey_psf(psf, boxes=list(boxes)))
        return self.resolveTarget(psf, exposure.getBBox(), **kwargs)

    def prepareRun(self, exposure: Exposure, boxes0: list[Box2I], **kwargs: Any) -> None:
        """Before any cell runs: with the exact method, refuse a target that some cell cannot reach.

        Raises `TargetTooNarrowError` naming those cells and the widest PSF.
        """
        if self.config.method == "exact" and exposure.getPsf() is not None:
            self.checkTarget(exposure, boxes0, **kwargs)

    def resolveTargetSigma(self, psf: Psf, fullBBox: Box2I, **kwargs: Any) -> float:
        """Return the gaussian method's target sigma: a keyword, else the config, else `max_psf_sigma`.

        A ``target`` PSF or a FWHM give the sigma of their moments (``fwhm / 2.3548``).
        """
        kind, value = self._targetSpec(kwargs)
        if kind == "psf":
            target = float(value.computeShape(fullBBox.getCenter()).getDeterminantRadius())
        elif kind == "fwhm":
            target = value / FWHM_PER_SIGMA
        elif kind == "sigma":
            target = value
        else:
            target = max_psf_sigma(psf, fullBBox, self.config.targetSearchPoints)
        target = float(target)
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"targetSigma must be finite and > 0, got {target}")
        return target

    # -- kernels ------------------------------------------------------------------------------------
    def solveKernel(self, psf: Psf, target: Psf, position: Point2D) -> MatchingKernel:
        """Return the exact method's matching kernel at ``position`` (cached per PSF, target and position)."""
        args = (
            float(position.x),
            float(position.y),
            self.config.kernelSolver,
            self.config.regularization,
            self.config.kernelTolerance,
            self.config.kernelSize,
            self.config.maxKernelRadius,
        )
        try:
            return _solve_cached(psf, target, *args)
        except TypeError as error:
            if "unhashable" not in str(error):
                raise
            return _solve_cached.__wrapped__(psf, target, *args)

    def reach(self, exposure: Exposure | None = None) -> int | None:
        """Return the widest matching kernel's half-width in pixels over ``exposure`` (None: unknown).

        ``kernelSize // 2`` when the kernel size is fixed; otherwise the kernels are solved on the
        ``targetSearchPoints`` grid (the gaussian method's is widest where the PSF is narrowest).
        An exposure without a PSF, or no exposure, gives None.
        """
        if self.config.kernelSize is not None:
            return self.config.kernelSize // 2
        if exposure is None or (psf := exposure.getPsf()) is None:
            return None
        bbox = exposure.getBBox()
        n = self.config.targetSearchPoints
        xs = np.linspace(bbox.getMinX(), bbox.getMaxX(), n)
        ys = np.linspace(bbox.getMinY(), bbox.getMaxY(), n)
        if self.config.method == "exact":
            target = self.resolveTarget(psf, bbox)
            return max(self.solveKernel(psf, target, Point2D(float(x), float(y))).radius for x in xs for y in ys)
        target_sigma = self.resolveTargetSigma(psf, bbox)
        narrowest = min(psf_sigma(psf, Point2D(float(x), float(y))) for x in xs for y in ys)
        return self.kernelRadius(matching_sigma(narrowest, target_sigma))

    def kernelRadius(self, sigma: float) -> int:
        """Return the gaussian method's kernel half-width in pixels for a kernel of ``sigma`` (0: no kernel)."""
        if sigma <= 0:
            return 0
        if self.config.kernelSize is not None:
            return self.config.kernelSize // 2
        return max(1, math.ceil(self.config.kernelTruncate * sigma))

    # -- running ------------------------------------------------------------------------------------
    @staticmethod
    def _psfOf(exposure: Exposure) -> Psf:
        psf = exposure.getPsf()
        if psf is None:
            raise ValueError("PsfMatchMapper needs an exposure with a PSF: set one with exposure.setPsf(...)")
        return psf

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Match one cell to the target PSF.

        Returns
        -------
        result : `Struct`
            ``subExposure`` (the matched cell, with the cell's bbox, its PSF the target) and
            ``targetSigma`` (the target's moments radius for the exact method, its sigma for the
            gaussian one). Exact: also ``target`` (the `Psf`), ``kernel`` (`MatchingKernel`) and
            ``timings`` (seconds: ``psf``, ``solve``, ``convolve``). Gaussian: ``localSigma`` and
            ``kernelSigma`` (pixels).
        """
        psf = self._psfOf(expandedSubExposure)
        if self.config.method == "gaussian":
            return self._runGaussian(subExposure, expandedSubExposure, fullBBox, psf, **kwargs)
        return self._runExact(subExposure, expandedSubExposure, fullBBox, psf, **kwargs)

    def _runExact(
        self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, psf: Psf, **kwargs: Any
    ) -> Struct:
        start = time.perf_counter()
        target, _ = self._resolveExact(psf, fullBBox, kwargs)
        cellBBox = subExposure.getBBox()
        centre = cellBBox.getCenter()
        # Evaluated here (and cached) so that the timings tell PSF evaluation from the solve.
        cell_kernel_image(psf, centre)
        cell_kernel_image(target, centre)
        evaluated = time.perf_counter()
        kernel = self.solveKernel(psf, target, centre)
        solved = time.perf_counter()
        radius = kernel.radius
        self._checkBorder(cellBBox, expandedSubExposure.getBBox(), fullBBox, radius)
        mi = expandedSubExposure.maskedImage
        core = cellBBox.slices(expandedSubExposure.getXY0())
        mode = self.config.edgeMode
        image, variance = _convolve_planes([mi.image.array, mi.variance.array], [kernel.array, kernel.array**2], mode)
        image, variance = image[core], np.maximum(variance[core], 0.0)
        mask = _grow_bits(mi.mask.array, self._growBits(mi.mask), radius)[core] if radius else mi.mask.array[core]
        out = type(expandedSubExposure).from_arrays(
            np.array(image, dtype=mi.image.array.dtype),
            np.array(mask, dtype=mi.mask.array.dtype),
            np.array(variance, dtype=mi.variance.array.dtype),
            xy0=cellBBox.getBegin(),
            psf=target,
            wcs=expandedSubExposure.getWcs(),
            planeDict=mi.mask.getMaskPlaneDict(),
        )
        timings = {"psf": evaluated - start, "solve": solved - evaluated, "convolve": time.perf_counter() - solved}
        radius_t = float(target.computeShape(centre).getDeterminantRadius())
        return Struct(subExposure=out, target=target, targetSigma=radius_t, kernel=kernel, timings=timings)

    def _runGaussian(
        self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, psf: Psf, **kwargs: Any
    ) -> Struct:
        cellBBox = subExposure.getBBox()
        target = self.resolveTargetSigma(psf, fullBBox, **kwargs)
        local = psf_sigma(psf, cellBBox.getCenter())
        kernelSigma = matching_sigma(local, target)
        if local > target * (1.0 + 1e-3):
            self.log.warning(
                "Cell %s: local PSF sigma %.4g exceeds the target %.4g; it cannot be sharpened and is left as is",
                cellBBox,
                local,
                target,
            )
        radius = self.kernelRadius(kernelSigma)
        self._checkBorder(cellBBox, expandedSubExposure.getBBox(), fullBBox, radius)

        mi = expandedSubExposure.maskedImage
        core = cellBBox.slices(expandedSubExposure.getXY0())
        if radius > 0:
            kernel = matching_kernel_1d(kernelSigma, radius)
            mode = self.config.edgeMode
            image = correlate_separable(mi.image.array.astype(np.float64), kernel, mode)[core]
            variance = correlate_separable(mi.variance.array.astype(np.float64), kernel**2, mode)[core]
            mask = _grow_bits(mi.mask.array, self._growBits(mi.mask), radius)[core]
        else:
            image, variance, mask = mi.image.array[core], mi.variance.array[core], mi.mask.array[core]
        outSigma = max(target, local)
        size = self.config.outputPsfSize or 2 * math.ceil(5.0 * outSigma) + 1
        out = type(expandedSubExposure).from_arrays(
            np.array(image, dtype=mi.image.array.dtype),
            np.array(mask, dtype=mi.mask.array.dtype),
            np.array(variance, dtype=mi.variance.array.dtype),
            xy0=cellBBox.getBegin(),
            psf=GaussianPsf(size, size, outSigma),
            wcs=expandedSubExposure.getWcs(),
            planeDict=mi.mask.getMaskPlaneDict(),
        )
        return Struct(subExposure=out, localSigma=local, kernelSigma=kernelSigma, targetSigma=target)

    def _growBits(self, mask: Any) -> list[int]:
        planes = mask.getMaskPlaneDict()
        return [1 << planes[name] for name in self.config.maskGrowBits if name in planes]

    def _checkBorder(self, cell: Box2I, expanded: Box2I, full: Box2I, radius: int) -> None:
        """Warn when the border is thinner than the kernel radius on a side inside the image."""
        sides = (
            (cell.getMinX() - expanded.getMinX(), expanded.getMinX() == full.getMinX()),
            (expanded.getMaxX() - cell.getMaxX(), expanded.getMaxX() == full.getMaxX()),
            (cell.getMinY() - expanded.getMinY(), expanded.getMinY() == full.getMinY()),
            (expanded.getMaxY() - cell.getMaxY(), expanded.getMaxY() == full.getMaxY()),
        )
        thinnest = min((border for border, at_edge in sides if not at_edge), default=radius)
        if thinnest < radius:
            self.log.warning(
                "Cell %s: border %d px is thinner than the matching kernel radius %d px; the cell's "
                "edges will differ from convolving the whole image. Increase borderSizeX/Y.",
                cell,
                thinnest,
                radius,
            )
