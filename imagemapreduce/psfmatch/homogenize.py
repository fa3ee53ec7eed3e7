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

import bisect
import dataclasses
import functools
import logging
import math
import operator
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import lsst.pex.config as pexConfig
import numpy as np

from ..builtin_mappers import EDGE_MODES
from ..geom import Box2I, Point2D
from ..image import Exposure
from ..mapper import ImageMapper, ImageMapperConfig
from ..pipe_base import Struct
from ..psf import EllipticalGaussianPsf, GaussianPsf, Psf, adaptive_moments, adaptive_moments_many
from ..psf._gaussian import _AnalyticPsf
from ..psf._profiles import FWHM_PER_SIGMA, PIXEL_VARIANCE
from .kernels import (
    KERNEL_SOLVERS,
    MatchingKernel,
    convolve_core,
    convolve_cores,
    solve_matching_kernel,
    solve_matching_kernels,
)

__all__ = [
    "PsfMatchMapperConfig",
    "PsfMatchMapper",
    "PsfSurvey",
    "TargetTooNarrowError",
    "psf_sigma",
    "max_psf_sigma",
    "matching_sigma",
    "matching_kernel_1d",
    "cell_kernel_image",
    "KernelTiles",
    "KERNEL_TILE",
    "tile_kernel_images",
    "survey_psf",
    "choose_target",
    "make_target",
    "check_target",
]

_log = logging.getLogger(__name__)

# Kernel variances below this (pixels^2) are treated as no convolution at all: the kernel would
# be a delta function to within float32 rounding anyway.
_MIN_KERNEL_VARIANCE = 1e-6


def _cached(function: Any, *args: Any) -> Any:
    """``function(*args)`` through its ``functools`` cache; uncached if an argument (a PSF) cannot be hashed."""
    try:
        return function(*args)
    except TypeError as error:
        if "unhashable" not in str(error):
            raise
        return function.__wrapped__(*args)


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
    return _cached(_max_psf_sigma_cached, psf, box, int(points))


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
    """Spread each bit to every pixel within ``radius`` (a square: the separable kernel's support).

    Returns a new array, or ``mask`` itself where none of ``bits`` is set.
    """
    from scipy import ndimage

    if not bits or not np.bitwise_and(mask, functools.reduce(operator.or_, bits)).any():
        return mask  # nothing to spread (most cells): the mask itself, which callers copy
    grown = mask.copy()
    size = 2 * radius + 1
    for bit in bits:
        flagged = (mask & bit) != 0
        if flagged.any():
            spread = ndimage.maximum_filter(flagged, size=size, mode="constant", cval=False)
            grown[spread] |= bit
    return grown


# -- the exact method: kernels solved from kernel images ----------------------------------------

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
    return _cached(_kernel_image_cached, psf, float(position.x), float(position.y))


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


#: Grid positions a side of a tile of cells whose kernels are solved together.
KERNEL_TILE = 8


@dataclasses.dataclass(frozen=True)
class KernelTiles:
    """A run's cell centres in fixed tiles of neighbours, whose kernels are solved together.

    A cell's tile is the block of `KERNEL_TILE` x `KERNEL_TILE` grid positions (distinct centre
    coordinates, sorted) holding its centre: a function of the grid and the position alone. So a
    kernel comes out bitwise the same whichever cell, thread, process or worker first asks for
    it, whatever the batching of cells into tasks, while a tile costs a few stacked numpy calls
    (`solve_matching_kernels`) instead of a few per cell.

    Attributes
    ----------
    xs, ys : `tuple` [`float`]
        The grid's distinct cell-centre coordinates, ascending.
    """

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    @classmethod
    def from_boxes(cls, boxes: Sequence[Box2I]) -> KernelTiles:
        """The tiles of a run's cells (``boxes0``), by their centres."""
        centres = [box.getCenter() for box in boxes]
        return cls.from_points([(float(c.x), float(c.y)) for c in centres])

    @classmethod
    def from_points(cls, points: Sequence[tuple[float, float]]) -> KernelTiles:
        """The tiles of positions ``(x, y)``."""
        return cls(tuple(sorted({x for x, _ in points})), tuple(sorted({y for _, y in points})))

    def tile_of(self, x: float, y: float) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The tile's x and y coordinates holding the position ``(x, y)``; None if it is no grid position."""
        ix, iy = bisect.bisect_left(self.xs, x), bisect.bisect_left(self.ys, y)
        if ix == len(self.xs) or iy == len(self.ys) or self.xs[ix] != x or self.ys[iy] != y:
            return None
        bx, by = ix // KERNEL_TILE * KERNEL_TILE, iy // KERNEL_TILE * KERNEL_TILE
        return self.xs[bx : bx + KERNEL_TILE], self.ys[by : by + KERNEL_TILE]


#: Locks striped over tiles: cells of one tile running at once on threads compute it once.
_TILE_LOCKS = tuple(threading.Lock() for _ in range(64))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _tile_lock(tile: tuple[tuple[float, ...], tuple[float, ...]]) -> threading.Lock:
    return _TILE_LOCKS[hash(tile) % len(_TILE_LOCKS)]


#: Tiles whose kernel images, and whose kernels, are kept per process (a 2048^2 image's 4096 cells).
_TILE_CACHE_SIZE = _CACHE_SIZE // KERNEL_TILE**2


@functools.lru_cache(maxsize=_TILE_CACHE_SIZE)
def _tile_images_cached(
    psf: Psf, xs: tuple[float, ...], ys: tuple[float, ...]
) -> dict[tuple[float, float], np.ndarray]:
    """The PSF's kernel images at every position of a tile (`KernelTiles`), read-only.

    Kept per tile rather than per position, so that a run's survey and its cells' solves share
    them however many cells the run has: a per-position cache smaller than the run would be
    emptied by the survey before the first cell asks.
    """
    positions = [(x, y) for y in ys for x in xs]
    images = psf.computeKernelImages([Point2D(x, y) for x, y in positions])
    images.flags.writeable = False
    return dict(zip(positions, images, strict=True))


def tile_kernel_images(psf: Psf, xs: tuple[float, ...], ys: tuple[float, ...]) -> dict[tuple[float, float], np.ndarray]:
    """`_tile_images_cached`, or computed afresh for a PSF that cannot be hashed."""
    with _tile_lock((xs, ys)):
        return _cached(_tile_images_cached, psf, xs, ys)


@functools.lru_cache(maxsize=_TILE_CACHE_SIZE)
def _solve_tile_cached(
    psf: Psf,
    target: Psf,
    xs: tuple[float, ...],
    ys: tuple[float, ...],
    solver: str,
    regularization: float,
    tolerance: float,
    size: int | None,
    max_radius: int | None,
) -> dict[tuple[float, float], MatchingKernel]:
    """The kernels at every position of a tile (`KernelTiles`), solved in stacks of equal images."""
    images = _tile_images_cached(psf, xs, ys)
    constant_target = isinstance(target, _AnalyticPsf)
    groups: dict[bytes | None, list[tuple[float, float]]] = {}
    for x, y in images:
        # Positions solve together where their target is the same (the images are one stack).
        target_key = None if constant_target else cell_kernel_image(target, Point2D(x, y)).tobytes()
        groups.setdefault(target_key, []).append((x, y))
    kernels: dict[tuple[float, float], MatchingKernel] = {}
    for members in groups.values():
        solved = solve_matching_kernels(
            np.stack([images[position] for position in members]),
            cell_kernel_image(target, Point2D(*members[0])),
            solver=solver,
            regularization=regularization,
            tolerance=tolerance,
            radius=None if size is None else size // 2,
            max_radius=max_radius,
        )
        kernels.update(zip(members, solved, strict=True))
    return kernels


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
#: nearly Gaussian, where the plain step halves the error): the moments come out within about 4e-7
#: of the trace of `adaptive_moments`' default, far below what `check_target` resolves (1e-4 of
#: the trace), in a fifth of the iterations.
_SURVEY_TOLERANCE = 1e-6
_SURVEY_RELAXATION = 2.0
#: Threads at most that survey a PSF's tiles side by side.
_SURVEY_THREADS = 8


@functools.lru_cache(maxsize=64)
def _survey_cached(psf: Psf, points: tuple[tuple[float, float], ...], labels: tuple[str, ...]) -> PsfSurvey:
    moments = np.empty((len(points), 3))
    if type(psf).computeShape is not Psf.computeShape:  # an analytic shape: as cheap as it is exact
        for index, (x, y) in enumerate(points):
            shape = psf.computeShape(Point2D(x, y))
            moments[index] = shape.getIxx(), shape.getIyy(), shape.getIxy()
        return PsfSurvey(np.array(points, dtype=np.float64), moments, labels)
    # `Psf.computeShape` (adaptive moments of the kernel image) at every point, a tile of
    # neighbouring points at a time: their images (the ones the cells' kernel solves read, so each
    # is computed once a run) iterate together, in relaxed steps, from the first tile's mean.
    tiles = KernelTiles.from_points(points)
    rows: dict[tuple[tuple[float, ...], tuple[float, ...]], list[int]] = {}
    for index, (x, y) in enumerate(points):
        rows.setdefault(cast(tuple, tiles.tile_of(x, y)), []).append(index)

    def measure(
        tile: tuple[tuple[float, ...], tuple[float, ...]], start: tuple[float, float, float] | None
    ) -> np.ndarray:
        images = tile_kernel_images(psf, *tile)
        # The tile's images are one stack (`Psf.computeKernelImages`): one shape.
        stack = np.stack([images[points[i]] for i in rows[tile]])
        centre = (stack.shape[2] // 2, stack.shape[1] // 2)
        if start is None:
            first, _ = adaptive_moments(stack[0], centre, tol=_SURVEY_TOLERANCE, relaxation=_SURVEY_RELAXATION)
            start = (first.getIxx(), first.getIyy(), first.getIxy())
        return adaptive_moments_many(stack, centre, start=start, tol=_SURVEY_TOLERANCE, relaxation=_SURVEY_RELAXATION)

    first, *others = rows
    moments[rows[first]] = measure(first, None)
    start = cast(tuple[float, float, float], tuple(float(v) for v in moments[rows[first]].mean(axis=0)))
    # The tiles are independent stacks of numpy work that mostly runs without the global lock:
    # a few threads measure them side by side (each tile's result is the same in any order).
    threads = min(len(others), os.cpu_count() or 1, _SURVEY_THREADS)
    if threads > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="imr-psf-survey") as pool:
            found = list(pool.map(lambda tile: measure(tile, start), others))
    else:
        found = [measure(tile, start) for tile in others]
    for tile, values in zip(others, found, strict=True):
        moments[rows[tile]] = values
    return PsfSurvey(np.array(points, dtype=np.float64), moments, labels)


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
    return _cached(_survey_cached, psf, pts, labels)


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
    if isinstance(target, _AnalyticPsf):  # one shape everywhere
        shape = target.computeShape(Point2D(*map(float, survey.positions[0])))
        wanted = np.array([[shape.getIxx(), shape.getIyy(), shape.getIxy()]])
    else:
        shapes = [target.computeShape(Point2D(float(x), float(y))) for x, y in survey.positions]
        wanted = np.array([[q.getIxx(), q.getIyy(), q.getIxy()] for q in shapes])
    dxx, dyy, dxy = (wanted - survey.moments).T
    # The smaller eigenvalue of each symmetric 2 x 2 difference, in closed form.
    smallest = 0.5 * (dxx + dyy) - np.sqrt(0.25 * (dxx - dyy) ** 2 + dxy**2)
    failing = np.flatnonzero(smallest < -tolerance * (survey.moments[:, 0] + survey.moments[:, 1])).tolist()
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
    convolutionPrecision: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="image",
        doc="Exact method: the precision of the FFTs that convolve each cell.",
        allowed={
            "image": "the image plane's: float32 FFTs for a float32 image (about three times faster than "
            "float64; errors near 1e-7 of the cell's brightest pixel, below the image's own rounding "
            "for everything but its faintest pixels), float64 for any other image",
            "double": "float64 FFTs whatever the image",
        },
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
    for cached in (
        _kernel_image_cached,
        _tile_images_cached,
        _solve_cached,
        _solve_tile_cached,
        _survey_cached,
        _resolve_exact_cached,
        _max_psf_sigma_cached,
    ):
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
        return _cached(_resolve_exact_cached, psf, *args)

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
            # Set before the graph is built, so the mapper takes the tiles to every worker.
            self._kernelTiles = KernelTiles.from_boxes(boxes0)

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
        """Return the exact method's matching kernel at ``position`` (cached per PSF, target and position).

        At a cell centre of the run that `prepareRun` saw, the kernel is solved with its tile's
        (`KernelTiles`); elsewhere on its own.
        """
        x, y = float(position.x), float(position.y)
        params = (
            self.config.kernelSolver,
            self.config.regularization,
            self.config.kernelTolerance,
            self.config.kernelSize,
            self.config.maxKernelRadius,
        )
        tile = self._tileOf(position, psf, target)
        if tile is not None:
            with _tile_lock(tile):  # one thread solves a tile; its neighbours wait, then read it
                return _solve_tile_cached(psf, target, *tile, *params)[(x, y)]
        return _cached(_solve_cached, psf, target, x, y, *params)

    def _tileOf(self, position: Point2D, *psfs: Psf) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The tile of the run `prepareRun` saw holding ``position``; None off its cell centres.

        None too if one of ``psfs`` cannot be hashed: nothing could keep its tile's work for the
        tile's other cells, so each cell evaluates and solves its own position.
        """
        tiles: KernelTiles | None = getattr(self, "_kernelTiles", None)
        if tiles is None or not all(_hashable(psf) for psf in psfs):
            return None
        return tiles.tile_of(float(position.x), float(position.y))

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
            ``timings`` (seconds: ``psf``, ``solve``, ``convolve``; the cell that first asks for
            its tile's images or kernels carries the whole tile's evaluation or solve, the others
            read them). Gaussian: ``localSigma`` and ``kernelSigma`` (pixels).
        """
        psf = self._psfOf(expandedSubExposure)
        if self.config.method == "gaussian":
            return self._runGaussian(subExposure, expandedSubExposure, fullBBox, psf, **kwargs)
        return self._runExact(subExposure, expandedSubExposure, fullBBox, psf, **kwargs)

    def runCells(self, cells: Sequence[tuple[Exposure, Exposure]], fullBBox: Box2I, **kwargs: Any) -> list[Struct]:
        """Match several neighbouring cells (a task's) to the target PSF: `run` on each, bit for bit.

        The exact method convolves the cells together (`convolve_cores`: their FFTs stacked), a
        few long numpy calls instead of a few short ones per cell, so that threads run in
        parallel; each cell's ``timings["convolve"]`` is its share of the stacked convolution.
        The gaussian method runs cell by cell.
        """
        if self.config.method == "gaussian" or not cells:
            return super().runCells(cells, fullBBox, **kwargs)
        prepared = [
            self._exactKernel(sub, expanded, fullBBox, self._psfOf(expanded), kwargs) for sub, expanded in cells
        ]
        start = time.perf_counter()
        convolved = convolve_cores(
            [self._convolutionJob(sub, expanded, kernel) for (sub, expanded), (_, kernel, _) in zip(cells, prepared)],
            self.config.edgeMode,
            self._fftDtype(cells[0][1]),
        )
        share = (time.perf_counter() - start) / len(cells)
        return [
            self._matchedCell(sub, expanded, target, kernel, planes, {**timings, "convolve": share})
            for (sub, expanded), (target, kernel, timings), planes in zip(cells, prepared, convolved, strict=True)
        ]

    def _runExact(
        self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, psf: Psf, **kwargs: Any
    ) -> Struct:
        target, kernel, timings = self._exactKernel(subExposure, expandedSubExposure, fullBBox, psf, kwargs)
        start = time.perf_counter()
        job = self._convolutionJob(subExposure, expandedSubExposure, kernel)
        planes = convolve_core(*job, self.config.edgeMode, self._fftDtype(expandedSubExposure))
        timings["convolve"] = time.perf_counter() - start
        return self._matchedCell(subExposure, expandedSubExposure, target, kernel, planes, timings)

    def _exactKernel(
        self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, psf: Psf, kwargs: dict[str, Any]
    ) -> tuple[Psf, MatchingKernel, dict[str, float]]:
        """A cell's target and matching kernel, with the time spent evaluating PSFs and solving."""
        start = time.perf_counter()
        target, _ = self._resolveExact(psf, fullBBox, kwargs)
        cellBBox = subExposure.getBBox()
        centre = cellBBox.getCenter()
        # Evaluated here (and cached) so that the timings tell PSF evaluation from the solve.
        tile = self._tileOf(centre, psf)
        if tile is not None:
            tile_kernel_images(psf, *tile)
        else:
            cell_kernel_image(psf, centre)
        if not isinstance(target, _AnalyticPsf):  # a constant target's image is computed once
            cell_kernel_image(target, centre)
        evaluated = time.perf_counter()
        kernel = self.solveKernel(psf, target, centre)
        solved = time.perf_counter()
        self._checkBorder(cellBBox, expandedSubExposure.getBBox(), fullBBox, kernel.radius)
        return target, kernel, {"psf": evaluated - start, "solve": solved - evaluated}

    @staticmethod
    def _convolutionJob(
        subExposure: Exposure, expandedSubExposure: Exposure, kernel: MatchingKernel
    ) -> tuple[list[np.ndarray], list[np.ndarray], tuple[slice, slice]]:
        """What `convolve_core` takes for a cell: its image and variance, their kernels, and its core."""
        mi = expandedSubExposure.maskedImage
        core = subExposure.getBBox().slices(expandedSubExposure.getXY0())
        return [mi.image.array, mi.variance.array], [kernel.array, kernel.array**2], core

    def _fftDtype(self, expandedSubExposure: Exposure) -> type[np.floating]:
        single = expandedSubExposure.image.array.dtype == np.float32
        return np.float32 if single and self.config.convolutionPrecision == "image" else np.float64

    def _matchedCell(
        self,
        subExposure: Exposure,
        expandedSubExposure: Exposure,
        target: Psf,
        kernel: MatchingKernel,
        planes: Sequence[np.ndarray],
        timings: dict[str, float],
    ) -> Struct:
        """The exact method's result for a cell from its convolved image and variance."""
        image, variance = planes
        np.maximum(variance, 0.0, out=variance)
        cellBBox = subExposure.getBBox()
        mi = expandedSubExposure.maskedImage
        core = cellBBox.slices(expandedSubExposure.getXY0())
        radius = kernel.radius
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
        radius_t = float(target.computeShape(cellBBox.getCenter()).getDeterminantRadius())
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
