"""`CallablePsf`: any PSF model given as a function ``f(x, y) -> kernel image``."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..geom import Extent2I, Point2D, Point2I
from ..image._image import ImageD
from ._base import PositionLike, Psf, kernel_origin, nearest_pixel

__all__ = ["CallablePsf"]

KernelFunction = Callable[[float, float], Any]


def _rebuild(func: KernelFunction, average: tuple[float, float] | None, cache_size: int) -> CallablePsf:
    return CallablePsf(func, averagePosition=average, cacheSize=cache_size)


class CallablePsf(Psf):
    """A PSF defined by a function returning its kernel image at a position.

    This is the way to bring an external PSF model (GalSim, PSFEx, piff...) to imagemapreduce:
    wrap a function of the parent position ``(x, y)`` that returns a 2-d array centred on the
    star, with the PSF's centre on the array's pixel ``(h // 2, w // 2)``. The array is normalised
    to sum 1 here. Every kernel image is cached per position (``cacheSize`` of them, least
    recently used dropped first), so a slow model is evaluated once per cell, however often the
    image is asked for.

    Parameters
    ----------
    func : callable
        ``func(x, y) -> array``; the array's shape must not depend on the position. It is called
        with Python floats.
    averagePosition : `tuple` [`float`, `float`], optional
        What `getAveragePosition` returns (and where a position of `None` evaluates the PSF);
        default ``(0, 0)``, as afw's.
    cacheSize : `int`
        How many kernel images to keep; 0 keeps none.

    Notes
    -----
    Pickling is handled: a module-level function (or any picklable object) travels by
    reference, a lambda or closure by value on every Dask scheduler (Dask pickles tasks with
    ``cloudpickle``; plain `pickle` refuses a lambda, as for any object holding one). Two `CallablePsf` are equal
    when their functions are equal (for plain functions: the same function).

    `computeImage` at a sub-pixel position shifts the kernel image with the Fourier shift
    theorem, exact for a band-limited (well-sampled) PSF; the slight ringing of a truncated stamp
    is clipped at zero for a non-negative PSF. A model that can draw itself at an
    offset should be given the position and do so; ``func`` then decides.

    Examples
    --------
    >>> import numpy as np
    >>> def model(x, y):
    ...     r2 = np.add.outer(np.arange(-7, 8) ** 2, np.arange(-7, 8) ** 2)
    ...     return np.exp(-r2 / (2 * (1.5 + x / 1000) ** 2))
    >>> psf = CallablePsf(model, averagePosition=(500.0, 500.0))
    >>> psf.getDimensions(), round(float(psf.computeKernelImage((100.0, 0.0)).array.sum()), 12)
    (Extent2I(15, 15), 1.0)
    """

    __slots__ = ("_func", "_average", "_cache_size", "_cache", "_lock", "_dimensions")
    _func: KernelFunction
    _average: tuple[float, float] | None
    _cache_size: int
    _cache: OrderedDict
    _lock: Any
    _dimensions: Extent2I | None

    def __init__(
        self, func: KernelFunction, *, averagePosition: tuple[float, float] | None = None, cacheSize: int = 256
    ) -> None:
        if not callable(func):
            raise TypeError(f"CallablePsf needs a callable func(x, y) -> kernel image, got {type(func).__name__}")
        if isinstance(cacheSize, bool) or not isinstance(cacheSize, (int, np.integer)) or cacheSize < 0:
            raise ValueError(f"cacheSize must be an integer >= 0, got {cacheSize!r}")
        average = None
        if averagePosition is not None:
            average = (float(averagePosition[0]), float(averagePosition[1]))
            if not all(math.isfinite(v) for v in average):
                raise ValueError(f"averagePosition must be finite, got {averagePosition!r}")
        self._set("_func", func)
        self._set("_average", average)
        self._set("_cache_size", int(cacheSize))
        self._set("_cache", OrderedDict())
        self._set("_lock", threading.Lock())
        self._set("_dimensions", None)

    # -- evaluation ---------------------------------------------------------------------------------
    def _evaluate(self, position: Point2D) -> np.ndarray:
        """Return the normalised kernel array at ``position`` (cached; the caller must not modify it)."""
        key = (position.x, position.y)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        array = self._check(np.array(self._func(float(position.x), float(position.y)), dtype=np.float64), position)
        array.flags.writeable = False
        if self._cache_size:
            with self._lock:
                self._cache[key] = array
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return array

    def _check(self, array: np.ndarray, position: Point2D) -> np.ndarray:
        where = f"CallablePsf: func({position.x}, {position.y})"
        if array.ndim != 2 or array.size == 0:
            raise ValueError(f"{where} returned an array of shape {array.shape}; it must be a non-empty 2-d image")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{where} returned non-finite pixels")
        total = float(array.sum())
        if not total > 0:
            raise ValueError(f"{where} returned an image of sum {total}; it must be positive to normalise")
        dims = Extent2I(array.shape[1], array.shape[0])
        if self._dimensions is None:
            self._set("_dimensions", dims)
        elif dims != self._dimensions:
            raise ValueError(f"{where} returned shape {array.shape}; earlier calls gave {self._dimensions}")
        return array / total

    def _doComputeKernelImage(self, position: Point2D) -> ImageD:
        array = self._evaluate(position)
        return ImageD(array.copy(), xy0=kernel_origin(Extent2I(array.shape[1], array.shape[0])))

    def _doComputeImage(self, position: Point2D) -> ImageD:
        array = self._evaluate(position)
        center = nearest_pixel(position)
        dims = Extent2I(array.shape[1], array.shape[0])
        origin = kernel_origin(dims)
        shifted = _fourier_shift(array, position.x - center.x, position.y - center.y)
        return ImageD(shifted, xy0=Point2I(int(center.x + origin.x), int(center.y + origin.y)))

    def getDimensions(self) -> Extent2I:
        """Return the size of the kernel images (evaluating the function once if it has not run yet)."""
        if self._dimensions is None:
            self._evaluate(self.getAveragePosition())
        dims = self._dimensions
        assert dims is not None  # the evaluation above recorded the kernel's size
        return Extent2I(dims)

    def getAveragePosition(self) -> Point2D:
        """Return ``averagePosition``, default ``(0, 0)``."""
        return Point2D(0.0, 0.0) if self._average is None else Point2D(*self._average)

    def getFunction(self) -> KernelFunction:
        """Return the wrapped function."""
        return self._func

    def clearCache(self) -> None:
        """Drop the cached kernel images (after the wrapped model changed, say)."""
        with self._lock:
            self._cache.clear()

    def computeBBox(self, position: PositionLike | None = None) -> Any:
        """Return the kernel image's bounding box."""
        from ..geom import Box2I

        dims = self.getDimensions()
        return Box2I(kernel_origin(dims), dims)

    # -- value semantics --------------------------------------------------------------------------
    def _key(self) -> tuple:
        return (self._func, self._average, self._cache_size)

    def __reduce__(self) -> tuple[Any, tuple]:
        # The function travels as the pickler sends it: Dask's (cloudpickle) sends a lambda or a
        # closure by value, a module-level function by reference. Nothing here unpickles.
        return (_rebuild, (self._func, self._average, self._cache_size))


def _fourier_shift(array: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift ``array`` by ``(dx, dy)`` pixels (x = columns) with the Fourier shift theorem, keeping its sum."""
    if dx == 0.0 and dy == 0.0:
        return array.copy()
    from scipy import fft

    ny, nx = array.shape
    # Pad to twice the size so that what leaves one side does not wrap onto the other.
    py, px = fft.next_fast_len(2 * ny), fft.next_fast_len(2 * nx)
    padded = np.zeros((py, px))
    oy, ox = (py - ny) // 2, (px - nx) // 2
    padded[oy : oy + ny, ox : ox + nx] = array
    kx = 2.0 * math.pi * np.fft.rfftfreq(px)[np.newaxis, :]
    ky = 2.0 * math.pi * np.fft.fftfreq(py)[:, np.newaxis]
    shifted = fft.irfft2(fft.rfft2(padded) * np.exp(-1j * (kx * dx + ky * dy)), s=(py, px))
    out = shifted[oy : oy + ny, ox : ox + nx]
    if array.min() >= 0:
        # A stamp truncated where the PSF is not yet zero rings slightly when shifted (1e-5 of the
        # peak); a non-negative PSF stays non-negative, so a bright star cannot dig below the sky.
        out = np.maximum(out, 0.0)
    return out * (array.sum() / out.sum())
