"""Per-pixel weights for seamless stitching: taper windows, inverse variance, or a user function.

LSST's ``average`` gives every overlapping cell the same weight, so wherever a mapper's answer
changes from cell to cell the stitched image steps at cell edges. A taper window that falls off
towards each cell's edges blends neighbours smoothly instead (as MONAI's Gaussian blending and
tiler's windows do). Windows are sampled at pixel centres, ``u = (i + 0.5) / n``, so they are
positive on every pixel of the cell: a pixel covered by a single cell keeps that cell's value
after normalising by the sum of weights, and the image edge is never lost.

Variance: overlapping cells are computed from the same input pixels, so their errors are
correlated, not independent. The default (``"correlated"``) propagates the variance as the
weighted mean of the cells' variances, ``sum(w v) / sum(w)``: an upper bound whatever the
correlation (it never understates the noise), exact for fully correlated results of equal
variance (the same input pixels passed through similar mappers), and LSST's ``average``
(``sum(v) / n``) for uniform weights. ``"independent"`` uses
``sum(w^2 v) / sum(w)^2``, right only when overlapping results have independent noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .geom import Box2I

__all__ = ["WEIGHTINGS", "VARIANCE_FORMULAS", "Weighting", "make_weighting", "window_1d"]

#: Weighting names accepted by `make_weighting` (``"custom"`` is a callable).
WEIGHTINGS = ("uniform", "linear", "cosine", "gaussian", "inverseVariance", "custom")
#: How the variance of a weighted mean is propagated.
VARIANCE_FORMULAS = ("correlated", "independent")
_ALIASES = {
    "uniform": "uniform",
    "average": "uniform",
    "linear": "linear",
    "triangular": "linear",
    "cosine": "cosine",
    "hann": "cosine",
    "gaussian": "gaussian",
    "inverseVariance": "inverseVariance",
    "inverse_variance": "inverseVariance",
    "inverse-variance": "inverseVariance",
}


def window_1d(kind: str, n: int, gaussian_width: float = 0.125) -> np.ndarray:
    """A taper window over ``n`` pixels, sampled at pixel centres; positive everywhere, peak 1.

    Parameters
    ----------
    kind : {'linear', 'cosine', 'gaussian'}
        Triangular, Hann (``sin^2``), or Gaussian with sigma ``gaussian_width * n``.
    n : `int`
        Number of pixels.
    gaussian_width : `float`
        Sigma of the Gaussian window as a fraction of the cell size.
    """
    u = (np.arange(n, dtype=np.float64) + 0.5) / n
    return _window_of(kind, u, gaussian_width)


@lru_cache(maxsize=256)
def _cached_window(kind: str, n: int, gaussian_width: float) -> np.ndarray:
    """`window_1d`, kept (read-only) for the few cell sizes of a grid."""
    window = window_1d(kind, n, gaussian_width)
    window.flags.writeable = False
    return window


@lru_cache(maxsize=32)
def _cached_plane(kind: str, shape: tuple[int, int], gaussian_width: float, dtype: str, squared: bool) -> np.ndarray:
    """The 2-d window of one cell shape (outer product of the 1-d ones, in float64, then rounded once)."""
    plane = np.outer(_cached_window(kind, shape[0], gaussian_width), _cached_window(kind, shape[1], gaussian_width))
    if squared:
        plane *= plane
    plane = plane.astype(dtype)
    plane.flags.writeable = False
    return plane


#: Below this, the corner value of a Gaussian window (``exp(-0.25 / width**2)``) would leave float32's range.
MIN_FLOAT32_GAUSSIAN_WIDTH = 0.06


def _window_of(kind: str, u: np.ndarray, gaussian_width: float) -> np.ndarray:
    if kind == "linear":
        return 1.0 - np.abs(2.0 * u - 1.0)
    if kind == "cosine":
        return np.sin(np.pi * u) ** 2
    if kind == "gaussian":
        return np.exp(-0.5 * ((u - 0.5) / gaussian_width) ** 2)
    raise ValueError(f"unknown window {kind!r}; use 'linear', 'cosine' or 'gaussian'")


@dataclass(frozen=True)
class Weighting:
    """How each cell's result is weighted when cells overlap (picklable; travels to workers).

    Parameters
    ----------
    kind : `str`
        One of `WEIGHTINGS`.
    gaussian_width : `float`
        Sigma of the Gaussian window as a fraction of the cell size.
    function : callable, optional
        For ``kind="custom"``: ``function(bbox, image, variance) -> weights`` with ``bbox`` the
        result's `Box2I` and the planes its arrays (variance None for plain arrays); it returns
        non-negative weights the shape of ``image`` (or a scalar).
    variance_formula : {'correlated', 'independent'}
        How the output variance is propagated (see the module notes).
    """

    kind: str = "uniform"
    gaussian_width: float = 0.125
    function: Callable[..., Any] | None = None
    variance_formula: str = "correlated"

    def __post_init__(self) -> None:
        if self.kind not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {self.kind!r}")
        if self.kind == "custom" and not callable(self.function):
            raise TypeError(
                "a custom weighting needs a callable function(bbox, image, variance) -> weights, got "
                f"{type(self.function).__name__} {self.function!r}"
            )
        if not (math.isfinite(self.gaussian_width) and self.gaussian_width > 0):
            raise ValueError(f"gaussian_width must be a positive fraction of the cell size, got {self.gaussian_width}")
        if self.variance_formula not in VARIANCE_FORMULAS:
            raise ValueError(f"variance_formula must be one of {VARIANCE_FORMULAS}; got {self.variance_formula!r}")

    @property
    def is_uniform(self) -> bool:
        """Whether this is LSST's plain average (stitched by the exact LSST path)."""
        return self.kind == "uniform"

    @property
    def is_window(self) -> bool:
        """Whether the weight depends only on the position within the result's box."""
        return self.kind in ("linear", "cosine", "gaussian")

    def accumulation_dtype(self, dtype: Any) -> np.dtype:
        """The type a window's weighted sums are kept in, for an output of ``dtype``.

        float32 for a float32 output, as LSST's ``average`` accumulates in the image's type; the
        error this adds is bounded in the stitching docs. float64 otherwise, and for Gaussian
        windows so narrow that their corner weights would fall out of float32's range.
        """
        narrow = self.kind == "gaussian" and self.gaussian_width < MIN_FLOAT32_GAUSSIAN_WIDTH
        return np.dtype(np.float32 if np.dtype(dtype) == np.float32 and not narrow else np.float64)

    def window_plane(self, shape: tuple[int, int], dtype: Any, squared: bool = False) -> np.ndarray:
        """The window over a result of ``shape`` (rows, columns) in ``dtype``, cached and read-only.

        Each value is the float64 product of the two 1-d windows (squared with ``squared``),
        rounded once to ``dtype``. Only for windows (`is_window`).
        """
        if not self.is_window:
            raise ValueError(
                f"window_plane needs a window weighting ('linear', 'cosine', 'gaussian'), not {self.kind!r}"
            )
        return _cached_plane(
            self.kind, (int(shape[0]), int(shape[1])), self.gaussian_width, np.dtype(dtype).str, squared
        )

    def window_line(self, n: int) -> np.ndarray:
        """The cached, read-only 1-d window over ``n`` pixels (float64). Only for windows."""
        return _cached_window(self.kind, int(n), self.gaussian_width)

    def pixel_weights(
        self, bbox: Box2I, image: np.ndarray, variance: np.ndarray | None, part: Box2I | None = None
    ) -> np.ndarray:
        """Weights (float64, the shape of ``image``) of one result covering ``bbox``.

        With ``part`` (a box inside ``bbox``), only the weights of that part: a window is then
        evaluated on the part alone (the same values), which is all a stitching region needs.
        """
        if self.is_window:
            rows, cols = (bbox if part is None else part).slices(bbox.getBegin())
            wy = _cached_window(self.kind, bbox.getHeight(), self.gaussian_width)
            wx = _cached_window(self.kind, bbox.getWidth(), self.gaussian_width)
            return np.outer(wy[rows], wx[cols])
        weights = self._data_weights(bbox, image, variance)
        return weights if part is None else weights[part.slices(bbox.getBegin())]

    def _data_weights(self, bbox: Box2I, image: np.ndarray, variance: np.ndarray | None) -> np.ndarray:
        if self.kind == "inverseVariance":
            if variance is None:
                raise ValueError("inverse-variance weighting needs a variance plane; plain arrays have none")
            with np.errstate(divide="ignore", invalid="ignore"):
                weights = 1.0 / variance.astype(np.float64)
            # Zero, negative or NaN variance carries no usable weight.
            return np.where(np.isfinite(weights) & (weights > 0), weights, 0.0)
        if self.kind == "custom":
            function = self.function
            # __post_init__ refuses a custom weighting without a callable; this narrows the type.
            assert function is not None
            return _checked_weights(function, function(bbox, image, variance), bbox, image.shape)
        return np.ones(image.shape)

    def psf_weight(self, weights: np.ndarray) -> float:
        """The scalar weight of a cell's PSF in the output CoaddPsf: its mean pixel weight."""
        return float(np.mean(weights)) if weights.size else 0.0

    def window_at(self, bboxes: np.ndarray, x: float, y: float) -> np.ndarray:
        """The window value at pixel (x, y) of each box in an ``(n, 4)`` array (for the CoaddPsf)."""
        width = bboxes[:, 2] - bboxes[:, 0] + 1
        height = bboxes[:, 3] - bboxes[:, 1] + 1
        u = (x - bboxes[:, 0] + 0.5) / width
        v = (y - bboxes[:, 1] + 0.5) / height
        return _window_of(self.kind, u, self.gaussian_width) * _window_of(self.kind, v, self.gaussian_width)


def _checked_weights(function: Callable[..., Any], weights: Any, bbox: Box2I, shape: tuple[int, ...]) -> np.ndarray:
    """A custom weight function's answer for the result covering ``bbox``, as float64 of ``shape``.

    Checked where it is produced, so that a wrong answer is one error naming the function, the
    cell and what is expected, not a broadcasting error (or NaN pixels) later.
    """
    name = getattr(function, "__name__", repr(function))

    def wrong(what: str) -> str:
        return (
            f"weight function {name!r} returned {what} for the cell whose result covers {bbox}; it must return "
            f"finite weights >= 0 (0 leaves a pixel out) as real numbers of shape {shape}, or one number for the cell"
        )

    try:
        array = np.asarray(weights)
    except Exception:  # noqa: BLE001 - whatever it is, it is not an array of weights
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        what = type(weights).__name__ if array.dtype.kind == "O" else f"{type(weights).__name__} of dtype {array.dtype}"
        raise TypeError(wrong(what))
    try:
        array = np.broadcast_to(array.astype(np.float64, copy=False), shape)
    except ValueError:
        raise ValueError(wrong(f"an array of shape {array.shape}")) from None
    bad = ~np.isfinite(array) | (array < 0)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(wrong(f"{int(bad.sum())} negative or non-finite weights ({array[first]} at index {first})"))
    return array


def make_weighting(
    weights: Any = "uniform", *, gaussian_width: float = 0.125, variance_formula: str = "correlated"
) -> Weighting:
    """Turn a user's ``weights`` argument (a name, a callable or a `Weighting`) into a `Weighting`."""
    if isinstance(weights, Weighting):
        return weights
    if callable(weights):
        return Weighting("custom", gaussian_width, weights, variance_formula)
    if isinstance(weights, str):
        kind = _ALIASES.get(weights)
        if kind is None:
            raise ValueError(
                f"unknown weights {weights!r}; use 'uniform', 'linear', 'cosine', 'gaussian', 'inverseVariance' "
                "or a function(bbox, image, variance) -> weights"
            )
        return Weighting(kind, gaussian_width, None, variance_formula)
    raise TypeError(f"weights must be a name, a callable or a Weighting, not {type(weights).__name__}")
