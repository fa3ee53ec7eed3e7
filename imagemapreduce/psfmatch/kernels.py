"""Matching kernels: solve ``PSF ⊗ K ≈ target`` from kernel images, and convolve a cell with ``K``.

`solve_matching_kernels` solves many PSF images against one target together: the FFTs, the
normal equations and their factorisations run on stacks of cells, so a tile of neighbouring cells
costs a few numpy calls rather than a few per cell. `solve_matching_kernel` is the one-image
case of the same code. `convolve_core` convolves only what a cell keeps (its core), reading the
kernel's radius around it.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "KERNEL_SOLVERS",
    "MatchingKernel",
    "solve_matching_kernel",
    "solve_matching_kernels",
    "convolve_cell",
    "convolve_core",
    "convolve_cores",
]

#: numpy.pad modes equivalent to the scipy.ndimage edge modes of `EDGE_MODES`.
_PAD_MODES: dict[str, Literal["edge", "symmetric", "reflect"]] = {
    "nearest": "edge",
    "reflect": "symmetric",
    "mirror": "reflect",
}

#: Radii tried, in turn, by the least-squares solve until the match is within tolerance.
_LSQ_RADII = (2, 3, 4, 5, 6, 7, 8, 10, 12)
_LSQ_START = 2  # the index of 4 px, where the search starts
#: Images solved together by `solve_matching_kernels`.
_IMAGES_AT_ONCE = 16
#: Solvers of `solve_matching_kernel`.
KERNEL_SOLVERS = {
    "leastSquares": "pixel-space least squares on a delta-function basis (as ModelPsfMatchTask), "
    "normal equations from the Fourier-space autocorrelation: the most compact kernel",
    "wiener": "Wiener-style Fourier-space solve conj(P) T / (abs(P)^2 + regularization), cropped",
}


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
    side its cross-correlation with the target, both from one FFT. It puts the kernel's freedom
    where the PSF has power, so a kernel that must narrow a wingy core or add less than a pixel of
    width stays a few pixels wide. ``"wiener"`` takes
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

    See Also
    --------
    solve_matching_kernels : many PSF images against one target, solved together.
    """
    psf_image = np.asarray(psf_image, dtype=np.float64)
    if psf_image.ndim != 2:
        raise ValueError(f"psf_image must be a 2-d kernel image, got shape {psf_image.shape}")
    (kernel,) = solve_matching_kernels(
        [psf_image],
        target_image,
        solver=solver,
        regularization=regularization,
        tolerance=tolerance,
        max_radius=max_radius,
        radius=radius,
    )
    return kernel


def solve_matching_kernels(
    psf_images: Sequence[np.ndarray] | np.ndarray,
    target_image: np.ndarray,
    *,
    solver: str = "leastSquares",
    regularization: float = 1e-10,
    tolerance: float = 5e-3,
    max_radius: int | None = None,
    radius: int | None = None,
) -> list[MatchingKernel]:
    """Solve `solve_matching_kernel` for each of ``psf_images`` against one target, together.

    The least-squares solve runs on stacks: one FFT of all the images, normal equations gathered
    for every cell at once, batched Cholesky factorisations, and the radius search advancing all
    cells a step at a time. Each kernel is the one `solve_matching_kernel` finds for its image
    (to float64 rounding). Parameters as there; ``psf_images`` are equally shaped 2-d arrays (or a
    3-d stack).

    Returns
    -------
    kernels : `list` [`MatchingKernel`]
        One per image, in order.
    """
    if solver not in KERNEL_SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(KERNEL_SOLVERS)}, got {solver!r}")
    stack = np.asarray(psf_images, dtype=np.float64)
    if stack.ndim != 3:
        raise ValueError(f"psf_images must be equally shaped 2-d kernel images, got an array of shape {stack.shape}")
    if len(stack) == 0:
        return []
    stack = stack / stack.sum(axis=(1, 2), keepdims=True)
    target = np.asarray(target_image, dtype=np.float64)
    target = target / target.sum()
    if solver == "wiener":
        return [_solve_wiener(image, target, regularization, tolerance, max_radius, radius) for image in stack]
    kernels: list[MatchingKernel] = []
    start_radius = None
    # A few images at a time: their normal equations and grids stay in the processor's cache,
    # which halves the time of one stack of 64.
    for start in range(0, len(stack), _IMAGES_AT_ONCE):
        part = stack[start : start + _IMAGES_AT_ONCE]
        found = _solve_least_squares(part, target, regularization, tolerance, max_radius, radius, start_radius)
        # Neighbouring images need similar kernels: the next few start where these ended.
        start_radius = min(kernel.radius for kernel in found)
        kernels += found
    return kernels


# -- the FFT grid ---------------------------------------------------------------------------------


def _on_grid(images: np.ndarray, size: int) -> np.ndarray:
    """Embed images (centre at ``[h // 2, w // 2]``, stacked on the first axis) in zero grids.

    The grids are ``size`` square, with the images' centres at ``[0, 0]``, wrapping around.
    """
    h, w = images.shape[-2:]
    rows = (np.arange(h) - h // 2) % size
    cols = (np.arange(w) - w // 2) % size
    out = np.zeros((*images.shape[:-2], size, size))
    out[..., rows[:, None], cols[None, :]] = images
    return out


def _point_symmetric(images: np.ndarray) -> np.ndarray:
    """Per kernel image (centre at ``[h // 2, w // 2]``, stacked), whether it equals itself turned by 180 degrees.

    An even side is padded with a zero row (column) at its end, which puts the centre in the
    middle: the turn is then a flip.
    """
    h, w = images.shape[-2:]
    padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(0, 1 - h % 2), (0, 1 - w % 2)])
    scale = np.abs(padded).max(axis=(-2, -1))
    return np.abs(padded - padded[..., ::-1, ::-1]).max(axis=(-2, -1)) <= 1e-12 * scale


class _Grid:
    """The FFT grid of a solve: the images' transforms, the target on the grid, and scores."""

    def __init__(self, psf_images: np.ndarray, target_image: np.ndarray, extra: int) -> None:
        from scipy import fft

        size = fft.next_fast_len(max(*psf_images.shape[1:], *target_image.shape) + 2 * extra + 2, real=True)
        self.size = size
        self.shape = (size, size)
        self.target = _on_grid(target_image, size)
        self.p_hat = fft.rfft2(_on_grid(psf_images, size))
        self.t_hat = fft.rfft2(self.target)
        self.peak = float(self.target.max())
        self.norm = float(np.sum(self.target**2))

    def results(self, arrays: Sequence[np.ndarray], members: np.ndarray) -> list[MatchingKernel]:
        """Score kernels (``arrays[k]`` for image ``members[k]``): transfer peak, noise gain, residual match."""
        from scipy import fft

        kernel_hat = np.empty((len(arrays), self.size, self.size // 2 + 1), dtype=complex)
        noise = np.empty(len(arrays))
        by_size: dict[int, list[int]] = {}
        for k, array in enumerate(arrays):
            by_size.setdefault(array.shape[0], []).append(k)
        for ks in by_size.values():
            stack = np.stack([arrays[k] for k in ks])
            kernel_hat[ks] = _kernel_spectra(stack, self.shape, centred=True)
            noise[ks] = np.sum(stack**2, axis=(1, 2))
        difference = fft.irfft2(self.p_hat[members] * kernel_hat, s=self.shape) - self.target
        residual = np.abs(difference).max(axis=(1, 2)) / self.peak
        misfit = np.sqrt(np.sum(difference**2, axis=(1, 2)) / self.norm)
        gain = np.abs(kernel_hat).max(axis=(1, 2))
        return [
            MatchingKernel(
                array, array.shape[0] // 2, float(gain[k]), float(noise[k]), float(residual[k]), float(misfit[k])
            )
            for k, array in enumerate(arrays)
        ]


# -- least squares ----------------------------------------------------------------------------------


def _solve_least_squares(
    stack: np.ndarray,
    target_image: np.ndarray,
    regularization: float,
    tolerance: float,
    max_radius: int | None,
    radius: int | None,
    start_radius: int | None = None,
) -> list[MatchingKernel]:
    from scipy import fft

    top = _LSQ_RADII[-1] if max_radius is None else max(1, int(max_radius))
    radii = [int(radius)] if radius is not None else [r for r in _LSQ_RADII if r < top] + [top]
    grid = _Grid(stack, target_image, max(radii))
    # Autocorrelation of each PSF and its cross-correlation with the target, at every lag on the grid.
    auto = fft.irfft2(grid.p_hat * np.conj(grid.p_hat), s=grid.shape)
    cross = fft.irfft2(np.conj(grid.p_hat) * grid.t_hat, s=grid.shape)
    # Centred PSF models are nearly always symmetric under a half turn; so is their kernel, which
    # halves the unknowns. Each image is solved in the basis its own symmetry allows.
    symmetric = _point_symmetric(stack) & bool(_point_symmetric(target_image))
    chosen: dict[int, np.ndarray] = {}
    for flag in (True, False):
        members = np.flatnonzero(symmetric == flag)
        if len(members):
            found = _search_radii(
                auto,
                cross,
                members,
                radii,
                regularization,
                tolerance,
                grid.norm,
                flag,
                _start_rung(radii, start_radius),
            )
            chosen.update(zip(members.tolist(), found, strict=True))
    return grid.results([chosen[k] for k in range(len(stack))], np.arange(len(stack)))


def _start_rung(radii: list[int], start_radius: int | None) -> int:
    """Where a radius search starts on ``radii``: at ``start_radius`` (the rung at or above it), else at 4 px."""
    if start_radius is None:
        return min(_LSQ_START, len(radii) - 1)
    return min(bisect.bisect_left(radii, start_radius), len(radii) - 1)


def _search_radii(
    auto: np.ndarray,
    cross: np.ndarray,
    members: np.ndarray,
    radii: list[int],
    regularization: float,
    tolerance: float,
    norm: float,
    symmetric: bool,
    start: int,
) -> list[np.ndarray]:
    """The smallest radius of the ladder that fits, for each member image, all advanced together.

    Searched from the rung ``start`` down or up, as one image's search would go: the middle of
    the usual range (4 px), or where the stack's previous images ended (a neighbour's kernel is
    a good guess); two or three solves for most PSFs, and the same answer as a full scan. Each step solves,
    in one batch, every image still searching at the same rung.
    """
    count = len(members)
    index = np.full(count, start)
    best: list[np.ndarray] = [np.empty(0)] * count
    step = np.zeros(count, dtype=int)  # 0: first attempt, -1: searching down, +1: searching up
    active = np.ones(count, dtype=bool)
    while active.any():
        for rung in np.unique(index[active]).tolist():
            todo = np.flatnonzero(active & (index == rung))
            arrays, misfits = _least_squares_kernels(auto, cross, members[todo], radii[rung], regularization, symmetric)
            fits = np.sqrt(np.maximum(misfits + norm, 0.0) / norm) <= tolerance
            first, down, up = step[todo] == 0, step[todo] < 0, step[todo] > 0
            # A first attempt or a step up always takes its kernel; a step down only if it fits.
            for k, array in zip(todo[first | up | (down & fits)].tolist(), arrays[first | up | (down & fits)]):
                best[k] = array
            step[todo[first]] = np.where(fits[first], -1, 1)
            stop = (down & ~fits) | (up & fits)
            active[todo[stop]] = False
            going = todo[~stop]
            following = index[going] + step[going]
            inside = (following >= 0) & (following < len(radii))
            index[going[inside]] = following[inside]
            active[going[~inside]] = False
    return best


@dataclasses.dataclass(frozen=True)
class _Basis:
    """A radius-``r`` kernel's unknowns and where its normal equations read the correlations.

    ``uy, ux``: each unknown's offset; ``pair``: 1 where the unknown stands for two pixels (the
    point-symmetric basis), else 0; ``minus``/``plus``: flat lag indices on the grid of
    ``u - v`` and ``u + v`` for every pair of unknowns, with the factors their terms carry;
    ``at``/``opposite``: the flat indices of ``u`` and ``-u``.
    """

    uy: np.ndarray
    ux: np.ndarray
    pair: np.ndarray
    minus: np.ndarray
    minus_factor: np.ndarray
    plus: np.ndarray
    plus_factor: np.ndarray
    at: np.ndarray
    opposite: np.ndarray


@functools.lru_cache(maxsize=64)
def _basis(r: int, symmetric: bool, size: int) -> _Basis:
    """The unknowns of a radius-``r`` kernel on a ``size`` grid, cached: every solve at that radius reads them."""
    offsets = np.arange(-r, r + 1)
    dy, dx = np.repeat(offsets, 2 * r + 1), np.tile(offsets, 2 * r + 1)
    if symmetric:
        half = (dy > 0) | ((dy == 0) & (dx >= 0))
        uy, ux = dy[half], dx[half]
        pair = ((uy != 0) | (ux != 0)).astype(np.float64)  # 1 where the basis has two pixels
    else:
        uy, ux, pair = dy, dx, np.zeros(len(dy))

    def flat(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (y % size) * size + x % size

    basis = _Basis(
        uy,
        ux,
        pair,
        flat(uy[:, None] - uy[None, :], ux[:, None] - ux[None, :]),
        1.0 + pair[:, None] * pair[None, :],
        flat(uy[:, None] + uy[None, :], ux[:, None] + ux[None, :]),
        pair[:, None] + pair[None, :],
        flat(uy, ux),
        flat(-uy, -ux),
    )
    for array in dataclasses.astuple(basis):
        array.flags.writeable = False
    return basis


def _least_squares_kernels(
    auto: np.ndarray, cross: np.ndarray, rows: np.ndarray, r: int, regularization: float, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``|P ⊗ K - T|^2 + reg |K|^2`` under ``sum(K) = 1`` over kernels of radius ``r``, per image.

    ``auto`` and ``cross`` are stacks (one image per row) of the PSFs' autocorrelations and their
    cross-correlations with the target; ``rows`` picks the images solved. The unknowns are the kernel's pixels, or with
    ``symmetric`` one of each pair ``K(d) = K(-d)``: basis ``delta_u + delta_-u`` for ``u`` in a
    half plane, ``delta_0`` at the centre. Returns the kernels and, per image,
    ``|P ⊗ K - T|^2 - |T|^2``: the squared misfit less the target's squared norm.
    """
    size = auto.shape[-1]
    basis = _basis(r, symmetric, size)
    uy, ux, pair = basis.uy, basis.ux, basis.pair
    # <P ⊗ b_u, P ⊗ b_v> summed over the basis' signed copies; the autocorrelation is even.
    # Gathered straight from the flattened stacks by flat lag index: no copy of a whole
    # correlation per image, one index array per gather.
    flat_auto, flat_cross = auto.reshape(len(auto), -1), cross.reshape(len(cross), -1)
    picked = flat_auto[rows]
    normal = np.take(picked, basis.minus, axis=1)
    normal *= basis.minus_factor
    if symmetric:
        normal += np.take(picked, basis.plus, axis=1) * basis.plus_factor
    weight = 1.0 + pair  # pixels per basis function: sum(K) and |K|^2 in the coefficients
    crossed = flat_cross[rows]
    rhs = np.take(crossed, basis.at, axis=1)
    rhs += pair * np.take(crossed, basis.opposite, axis=1)
    diagonal = np.arange(len(uy))
    ridge = regularization * picked[:, :1] * weight
    normal[:, diagonal, diagonal] += ridge
    # One factorisation per image (batched) solves for both right-hand sides: the data and the
    # flux constraint.
    both = np.stack([rhs, np.broadcast_to(weight, rhs.shape)], axis=-1)
    free, unit = np.moveaxis(np.linalg.solve(normal, both), -1, 0)
    # Lagrange multiplier for sum(K) = 1: flux is kept exactly.
    multiplier = (free @ weight - 1.0) / (unit @ weight)
    coefficients = free - multiplier[:, None] * unit
    # |P ⊗ K - T|^2 - |T|^2 = c.A c - 2 rhs.c, with A the normal matrix less the ridge; since
    # (A + ridge) c = rhs - multiplier weight and weight.c = 1, that is -rhs.c - multiplier -
    # c.ridge c: no quadratic form over the whole matrix.
    misfits = (
        -np.einsum("ni,ni->n", rhs, coefficients)
        - multiplier
        - np.einsum("ni,ni->n", ridge * coefficients, coefficients)
    )
    kernels = np.zeros((len(rows), 2 * r + 1, 2 * r + 1))
    kernels[:, uy + r, ux + r] = coefficients
    if symmetric:
        kernels[:, -uy + r, -ux + r] = coefficients
    return kernels, misfits


# -- Wiener ---------------------------------------------------------------------------------------


def _solve_wiener(
    psf_image: np.ndarray,
    target_image: np.ndarray,
    regularization: float,
    tolerance: float,
    max_radius: int | None,
    radius: int | None,
) -> MatchingKernel:
    from scipy import fft

    grid = _Grid(psf_image[None], target_image, max(*psf_image.shape, *target_image.shape) // 2 + 1)
    k_hat = np.conj(grid.p_hat[0]) * grid.t_hat / (np.abs(grid.p_hat[0]) ** 2 + regularization)
    full = np.fft.fftshift(fft.irfft2(k_hat, s=grid.shape))
    centre = grid.shape[0] // 2
    limit = centre - 1 if max_radius is None else max(0, min(int(max_radius), centre - 1))
    only = np.zeros(1, dtype=int)

    def crop(r: int) -> MatchingKernel:
        array = full[centre - r : centre + r + 1, centre - r : centre + r + 1].copy()
        return grid.results([array / array.sum()], only)[0]

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


# -- convolution ----------------------------------------------------------------------------------


def convolve_cell(array: np.ndarray, kernel: np.ndarray, edge_mode: str = "nearest") -> np.ndarray:
    """Convolve ``array`` with a centred odd ``kernel`` by FFT, same size, edges extended by ``edge_mode``.

    Equal to ``scipy.ndimage.convolve(array, kernel, mode=edge_mode)`` to float64 rounding, and
    like it a NaN pixel makes every output pixel within the kernel's footprint NaN.
    """
    whole = (slice(0, array.shape[0]), slice(0, array.shape[1]))
    return convolve_core([array], [kernel], whole, edge_mode)[0]


def convolve_core(
    arrays: Sequence[np.ndarray],
    kernels: Sequence[np.ndarray],
    core: tuple[slice, slice],
    edge_mode: str = "nearest",
    dtype: type[np.floating] = np.float64,
) -> list[np.ndarray]:
    """Convolve equally shaped arrays, each with its own equally shaped kernel, and return only ``core``.

    Each output is ``convolve_cell(array, kernel, edge_mode)[core]``, computed from the pixels
    within the kernel's radius of ``core`` (extended by ``edge_mode`` where the array ends), in one
    FFT of the stacked planes: a cell's core needs no more than its own size plus the kernel.

    Parameters
    ----------
    arrays : sequence of `numpy.ndarray`
        The planes (an expanded cell's image and variance), 2-d, one shape.
    kernels : sequence of `numpy.ndarray`
        One centred, odd-sized kernel per plane, one shape.
    core : `tuple` [`slice`, `slice`]
        The rows and columns kept (a cell within its expanded cell), steps of 1.
    edge_mode : `str`
        ``"nearest"``, ``"reflect"`` or ``"mirror"``, as scipy.ndimage names them.
    dtype : `type`
        The FFTs' precision: `numpy.float64` (default), or `numpy.float32`, about three times
        faster, with errors near 1e-7 of the largest pixel the FFT sees.

    See Also
    --------
    convolve_cores : many cells' cores, their FFTs stacked.
    """
    return convolve_cores([(arrays, kernels, core)], edge_mode, dtype)[0]


#: Planes transformed by one FFT call in `convolve_cores`: the stack stays in the processor's cache.
_PLANES_AT_ONCE = 32


def convolve_cores(
    cells: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray], tuple[slice, slice]]],
    edge_mode: str = "nearest",
    dtype: type[np.floating] = np.float64,
) -> list[list[np.ndarray]]:
    """`convolve_core` for each of ``cells`` (``(arrays, kernels, core)``), their FFTs stacked.

    Cells whose padded cores and kernels have the same shapes are transformed together, a few
    dozen planes per FFT call: one call's fixed costs for many planes, and a long stretch of
    work without Python's global lock, so that threads run in parallel. Each output is bit for
    bit what `convolve_core` gives for its cell alone (the FFTs transform every plane on its own).

    Returns
    -------
    outputs : `list` [`list` [`numpy.ndarray`]]
        Per cell, its planes' convolved cores.
    """
    padded = [_padded_core(arrays, kernels, core, edge_mode, dtype) for arrays, kernels, core in cells]
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}
    for k, cell in enumerate(padded):
        groups.setdefault((cell.stack.shape[1:], cell.kernels.shape[1:]), []).append(k)
    fulls: list[list[np.ndarray]] = [[] for _ in padded]
    for members in groups.values():
        planes = [(k, plane, kernel) for k in members for plane, kernel in zip(padded[k].stack, padded[k].kernels)]
        for start in range(0, len(planes), _PLANES_AT_ONCE):
            part = planes[start : start + _PLANES_AT_ONCE]
            transformed = _fft_convolve(np.stack([p for _, p, _ in part]), np.stack([q for _, _, q in part]))
            for (k, _, _), plane in zip(part, transformed, strict=True):
                fulls[k].append(plane)
    return [cell.cropped(full) for cell, full in zip(padded, fulls, strict=True)]


@dataclasses.dataclass(frozen=True)
class _PaddedCore:
    """A cell's planes cut to its core plus the kernel's radius (padded where the array ends), NaNs zeroed."""

    stack: np.ndarray
    kernels: np.ndarray
    bads: list[np.ndarray | None]
    out_shape: tuple[int, int]

    def cropped(self, fulls: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The core of each plane's circular convolution, NaN within the kernel's reach of a bad pixel."""
        from scipy import ndimage

        (out_h, out_w), (size_y, size_x) = self.out_shape, self.kernels.shape[1:]
        radius_y, radius_x = size_y // 2, size_x // 2
        outs = []
        for plane, plane_bad in zip(fulls, self.bads, strict=True):
            out = plane[2 * radius_y : 2 * radius_y + out_h, 2 * radius_x : 2 * radius_x + out_w]
            if plane_bad is not None:
                spread = ndimage.maximum_filter(plane_bad, size=(size_y, size_x), mode="constant", cval=False)
                out = np.where(spread[radius_y : radius_y + out_h, radius_x : radius_x + out_w], np.nan, out)
            outs.append(out)
        return outs


def _padded_core(
    arrays: Sequence[np.ndarray],
    kernels: Sequence[np.ndarray],
    core: tuple[slice, slice],
    edge_mode: str,
    dtype: type[np.floating],
) -> _PaddedCore:
    height, width = arrays[0].shape
    kernel_stack = np.stack(kernels)
    radius_y, radius_x = kernel_stack.shape[1] // 2, kernel_stack.shape[2] // 2
    rows, pad_y = _reach(core[0], radius_y, height)
    cols, pad_x = _reach(core[1], radius_x, width)
    pad = (pad_y, pad_x)
    mode = _PAD_MODES[edge_mode]
    padding = any(pad_y + pad_x)
    length_y = rows.stop - rows.start + pad_y[0] + pad_y[1]
    length_x = cols.stop - cols.start + pad_x[0] + pad_x[1]
    stack = np.empty((len(arrays), length_y, length_x), dtype=dtype)
    inner = (slice(pad_y[0], length_y - pad_y[1]), slice(pad_x[0], length_x - pad_x[1]))
    bads: list[np.ndarray | None] = []
    for plane, array in zip(stack, arrays, strict=True):
        plane[inner] = array[rows, cols]  # to the FFTs' precision, in place
        bad = ~np.isfinite(plane[inner])
        if bad.any():
            plane[inner][bad] = 0.0
            bads.append(np.pad(bad, pad, mode=mode) if padding else bad)
        else:
            bads.append(None)
        if padding:
            plane[...] = np.pad(plane[inner], pad, mode=mode)
    out_shape = (core[0].stop - core[0].start, core[1].stop - core[1].start)
    return _PaddedCore(stack, kernel_stack, bads, out_shape)


def _fft_convolve(stack: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Circular convolution of each plane of ``stack`` with its kernel (at the grid's corner), on fast FFT sizes."""
    from scipy import fft

    # The input spans the core plus the kernel's radius each side: a circular FFT that size wraps
    # only into the first 2 * radius outputs, which the core (shifted by the kernel) never reads.
    shape = (fft.next_fast_len(stack.shape[1], real=True), fft.next_fast_len(stack.shape[2], real=True))
    spectra = _kernel_spectra(kernels, shape).astype(np.result_type(stack.dtype, np.complex64), copy=False)
    return fft.irfft2(fft.rfft2(stack, shape) * spectra, shape)


def _kernel_spectra(kernels: np.ndarray, shape: tuple[int, int], *, centred: bool = False) -> np.ndarray:
    """``rfft2`` on a ``shape`` grid of small kernels (stacked), as two products with the DFT's few columns.

    A kernel of ``2 r + 1`` pixels a side fills a sliver of the FFT grid: multiplying by the DFT
    matrices' ``2 r + 1`` columns costs a fraction of transforming the zero-padded grid. The
    kernels sit at the grid's corner (as ``rfft2(kernels, shape)`` pads them), or with
    ``centred`` with their centres at ``[0, 0]``, wrapping around.
    """
    height, width = kernels.shape[-2:]
    rows = _dft_columns(shape[0], height, False, centred)
    cols = _dft_columns(shape[1], width, True, centred)
    return rows @ kernels @ cols.T


@functools.lru_cache(maxsize=64)
def _dft_columns(size: int, used: int, half: bool, centred: bool) -> np.ndarray:
    """Columns of the ``size``-point DFT matrix for ``used`` pixels (rows up to ``size // 2`` if ``half``)."""
    frequencies = np.arange(size // 2 + 1 if half else size)
    pixels = np.arange(used) - (used // 2 if centred else 0)
    matrix = np.exp(-2j * np.pi * np.outer(frequencies, pixels) / size)
    matrix.flags.writeable = False
    return matrix


def _reach(kept: slice, radius: int, length: int) -> tuple[slice, tuple[int, int]]:
    """The rows (or columns) within ``radius`` of ``kept`` that exist, and how far short they fall each side."""
    start, stop = kept.start - radius, kept.stop + radius
    return slice(max(start, 0), min(stop, length)), (max(0, -start), max(0, stop - length))
