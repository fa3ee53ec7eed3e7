"""Second-moment shapes: `Quadrupole` and Gaussian-weighted `adaptive_moments`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..geom import Point2D

__all__ = ["Quadrupole", "adaptive_moments", "adaptive_moments_many"]


class Quadrupole:
    """The second moments of a profile, as ``lsst.afw.geom.ellipses.Quadrupole``.

    Parameters
    ----------
    ixx, iyy, ixy : `float`
        The moments ``<x^2>``, ``<y^2>`` and ``<xy>`` in pixels squared.

    Examples
    --------
    >>> q = Quadrupole(4.0, 4.0, 0.0)
    >>> q.getDeterminantRadius(), q.getTraceRadius()
    (2.0, 2.0)
    """

    __slots__ = ("_ixx", "_iyy", "_ixy")
    _ixx: float
    _iyy: float
    _ixy: float

    def __init__(self, ixx: float = 1.0, iyy: float = 1.0, ixy: float = 0.0) -> None:
        # afw's default-constructed Quadrupole is the unit circle, hence the defaults.
        object.__setattr__(self, "_ixx", float(ixx))
        object.__setattr__(self, "_iyy", float(iyy))
        object.__setattr__(self, "_ixy", float(ixy))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Quadrupole is immutable")

    def getIxx(self) -> float:  # noqa: D102 - LSST accessor
        return self._ixx

    def getIyy(self) -> float:  # noqa: D102 - LSST accessor
        return self._iyy

    def getIxy(self) -> float:  # noqa: D102 - LSST accessor
        return self._ixy

    def getDeterminant(self) -> float:
        """Return ``ixx * iyy - ixy**2``."""
        return self._ixx * self._iyy - self._ixy * self._ixy

    def getDeterminantRadius(self) -> float:
        """Return ``det**(1/4)``, the radius of the circle of equal area; NaN for a negative determinant.

        NaN rather than an exception mirrors C++ ``std::pow`` of a negative number, which afw returns.
        """
        det = self.getDeterminant()
        return det**0.25 if det >= 0 else math.nan

    def getTraceRadius(self) -> float:
        """Return ``sqrt((ixx + iyy) / 2)``; NaN for a negative trace."""
        half_trace = 0.5 * (self._ixx + self._iyy)
        return math.sqrt(half_trace) if half_trace >= 0 else math.nan

    def getMatrix(self) -> np.ndarray:
        """Return the moments as the symmetric 2x2 matrix ``[[ixx, ixy], [ixy, iyy]]``."""
        return np.array([[self._ixx, self._ixy], [self._ixy, self._iyy]])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quadrupole):
            return NotImplemented
        return (self._ixx, self._iyy, self._ixy) == (other._ixx, other._iyy, other._ixy)

    def __hash__(self) -> int:
        return hash(("Quadrupole", self._ixx, self._iyy, self._ixy))

    def __reduce__(self) -> tuple[type[Quadrupole], tuple[float, float, float]]:
        return (Quadrupole, (self._ixx, self._iyy, self._ixy))

    def __repr__(self) -> str:
        return f"Quadrupole(ixx={self._ixx!r}, iyy={self._iyy!r}, ixy={self._ixy!r})"


def _fail(reason: str) -> ValueError:
    return ValueError(f"adaptive moments failed: {reason}")


def adaptive_moments(
    array: Any,
    center: tuple[float, float] | None = None,
    *,
    recentroid: bool = True,
    max_iter: int = 200,
    tol: float = 1e-8,
    start: tuple[float, float, float] | None = None,
    relaxation: float = 1.0,
) -> tuple[Quadrupole, Point2D]:
    """Measure Gaussian-weighted adaptive second moments, as SdssShape and HSM do.

    The weight is an elliptical Gaussian with the current estimate of the moments, centred on the
    current centroid. Weighting a Gaussian of covariance ``C`` by a Gaussian of covariance ``M``
    gives moments ``(C^-1 + M^-1)^-1``, so ``M <- 2 * weighted moments`` has ``M = C`` as its fixed
    point: a Gaussian returns its own covariance. The centroid is moved by twice the weighted
    first moment for the same reason.

    Parameters
    ----------
    array : array-like, 2-d
        The pixels, rows = y. Must be finite.
    center : `tuple` of `float`, optional
        ``(x, y)`` starting centroid in array index coordinates (``x`` = column). Defaults to the
        brightest pixel.
    recentroid : `bool`
        Whether to iterate the centroid too; when `False` it stays at ``center``.
    max_iter : `int`
        Iterations allowed before giving up.
    tol : `float`
        Convergence threshold on the change of the moments relative to their trace, and of the
        centroid in pixels.
    start : `tuple` of `float`, optional
        ``(ixx, iyy, ixy)`` of the first weight; default SdssShape's ``(1.5, 1.5, 0)``. Starting
        from a nearby answer (the PSF of the neighbouring cell) saves a fifth of the iterations.
    relaxation : `float`
        Step ``M <- M + relaxation * (2 W(M) - M)``; 1 is the plain iteration. Near the answer
        the plain step shrinks the error by about half each time (exactly half for a Gaussian),
        so 2 removes most of it at once: a third of the iterations for PSF-like profiles. Kept
        at 1 for noisy sources, where the plain step is the robust one. A relaxed step that
        would leave the moments not positive-definite is replaced by the plain one.

    Returns
    -------
    shape : `Quadrupole`
        The adaptive moments.
    centroid : `lsst.geom.Point2D`-like `Point2D`
        The final centroid in array index coordinates.

    Raises
    ------
    ValueError
        If the array is not 2-d and finite, the weighted flux is not positive, the moments stop
        being positive-definite, the centroid leaves the array, or the iteration does not converge.
    """
    if not 0.0 < relaxation <= 2.0:
        raise ValueError(f"adaptive_moments: relaxation must be in (0, 2], got {relaxation}")
    data = np.asarray(array, dtype=np.float64)
    if data.ndim != 2 or data.size == 0:
        raise ValueError(f"adaptive_moments needs a non-empty 2-d array, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("adaptive_moments needs finite pixels; mask or interpolate NaN/inf first")
    ny, nx = data.shape
    if center is None:
        yc_i, xc_i = np.unravel_index(int(np.argmax(data)), data.shape)
        xc, yc = float(xc_i), float(yc_i)
    else:
        xc, yc = float(center[0]), float(center[1])
    xs = np.arange(nx, dtype=np.float64)
    ys = np.arange(ny, dtype=np.float64)
    # SdssShape's starting weight: sigma^2 = 1.5 pixel^2; small weights grow geometrically to fit.
    ixx, iyy, ixy = (1.5, 1.5, 0.0) if start is None else (float(start[0]), float(start[1]), float(start[2]))
    # Moments larger than this mean the weight no longer fits in the array: the fit has run away.
    max_moment = float(max(nx, ny)) ** 2
    for _ in range(max_iter):
        det = ixx * iyy - ixy * ixy
        if not det > 0:
            raise _fail(f"moments not positive-definite (ixx={ixx}, iyy={iyy}, ixy={ixy})")
        dx = xs - xc
        dy = ys - yc
        # Inverse of [[ixx, ixy], [ixy, iyy]] applied as a quadratic form, built by broadcasting.
        quad = (iyy * dx[np.newaxis, :] ** 2 + ixx * dy[:, np.newaxis] ** 2) / det
        quad = quad - 2.0 * ixy / det * np.outer(dy, dx)
        weighted = data * np.exp(-0.5 * quad)
        flux = weighted.sum()
        if not flux > 0:
            raise _fail(f"weighted flux {flux} is not positive")
        row = weighted.sum(axis=0)  # marginal over y, a function of x
        col = weighted.sum(axis=1)
        mx = float(row @ dx) / flux
        my = float(col @ dy) / flux
        mxx = float(row @ dx**2) / flux
        myy = float(col @ dy**2) / flux
        mxy = float(dy @ weighted @ dx) / flux
        new_ixx, new_iyy, new_ixy = 2.0 * mxx, 2.0 * myy, 2.0 * mxy
        if recentroid:
            # Moments about the weight centre include the offset of the mean; remove it so a
            # still-moving centroid does not inflate the shape.
            new_ixx -= 2.0 * mx * mx
            new_iyy -= 2.0 * my * my
            new_ixy -= 2.0 * mx * my
            shift_x, shift_y = 2.0 * mx, 2.0 * my
        else:
            shift_x = shift_y = 0.0
        scale = max(new_ixx + new_iyy, 1e-300)
        change = max(abs(new_ixx - ixx), abs(new_iyy - iyy), abs(new_ixy - ixy)) / scale
        if relaxation != 1.0:
            relaxed_xx = ixx + relaxation * (new_ixx - ixx)
            relaxed_yy = iyy + relaxation * (new_iyy - iyy)
            relaxed_xy = ixy + relaxation * (new_ixy - ixy)
            if relaxed_xx * relaxed_yy - relaxed_xy * relaxed_xy > 0:
                new_ixx, new_iyy, new_ixy = relaxed_xx, relaxed_yy, relaxed_xy
        ixx, iyy, ixy = new_ixx, new_iyy, new_ixy
        xc, yc = xc + shift_x, yc + shift_y
        if not (math.isfinite(ixx) and math.isfinite(iyy) and math.isfinite(ixy)):
            raise _fail("moments are not finite")
        if ixx > max_moment or iyy > max_moment:
            raise _fail(f"moments ({ixx}, {iyy}) outgrew the {nx}x{ny} array")
        if not (-0.5 <= xc <= nx - 0.5 and -0.5 <= yc <= ny - 0.5):
            raise _fail(f"centroid ({xc}, {yc}) left the {nx}x{ny} array")
        if change < tol and math.hypot(shift_x, shift_y) < tol:
            if ixx * iyy - ixy * ixy <= 0:
                raise _fail(f"moments not positive-definite (ixx={ixx}, iyy={iyy}, ixy={ixy})")
            return Quadrupole(ixx, iyy, ixy), Point2D(xc, yc)
    raise _fail(f"did not converge in {max_iter} iterations (last relative change {change:.3g})")


def adaptive_moments_many(
    arrays: Any,
    center: tuple[float, float],
    *,
    max_iter: int = 200,
    tol: float = 1e-8,
    start: tuple[float, float, float] | None = None,
    relaxation: float = 1.0,
) -> np.ndarray:
    """`adaptive_moments` of a stack of equally shaped images (kernel images of a PSF), iterated together.

    Each image follows the iteration `adaptive_moments` takes from ``center`` (recentroiding) and
    stops when it has converged, so each result is that function's to float64 rounding; an
    image that would make it fail is measured by it alone, which raises its error.

    Parameters
    ----------
    arrays : array-like, 3-d
        The images, stacked on the first axis; finite.
    center : `tuple` of `float`
        ``(x, y)`` starting centroid of every image, in array index coordinates.
    max_iter, tol, start, relaxation
        As `adaptive_moments`.

    Returns
    -------
    moments : `numpy.ndarray`
        ``(n, 3)``: ``(ixx, iyy, ixy)`` per image.
    """
    if not 0.0 < relaxation <= 2.0:
        raise ValueError(f"adaptive_moments_many: relaxation must be in (0, 2], got {relaxation}")
    data = np.asarray(arrays, dtype=np.float64)
    if data.ndim != 3 or data.shape[1] == 0 or data.shape[2] == 0:
        raise ValueError(f"adaptive_moments_many needs a stack of non-empty 2-d arrays, got shape {data.shape}")
    count, ny, nx = data.shape
    begin = (1.5, 1.5, 0.0) if start is None else (float(start[0]), float(start[1]), float(start[2]))
    moments = np.tile(np.array(begin, dtype=np.float64), (count, 1))
    centres = np.tile(np.array([float(center[0]), float(center[1])]), (count, 1))
    done = np.zeros(count, dtype=bool)
    failed: np.ndarray = np.logical_not(np.isfinite(data).all(axis=(1, 2)))
    xs, ys = np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64)
    max_moment = float(max(nx, ny)) ** 2
    for _ in range(max_iter):
        todo = np.flatnonzero(~done & ~failed)
        if not len(todo):
            break
        ixx, iyy, ixy = moments[todo].T
        det = ixx * iyy - ixy * ixy
        dx = xs[None, :] - centres[todo, :1]
        dy = ys[None, :] - centres[todo, 1:]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # -quad / 2 of the inverse moments, its separable terms folded into the 1-d offsets
            # first, so that few operations run over the full stamps.
            half_x = (-0.5 * iyy / det)[:, None] * dx**2
            half_y = (-0.5 * ixx / det)[:, None] * dy**2
            exponent = (ixy / det)[:, None, None] * dy[:, :, None] * dx[:, None, :]
            exponent += half_y[:, :, None]
            exponent += half_x[:, None, :]
            weighted = data[todo] * np.exp(exponent)
            row, col = weighted.sum(axis=1), weighted.sum(axis=2)
            flux = row.sum(axis=1)
            mx = np.einsum("ni,ni->n", row, dx) / flux
            my = np.einsum("ni,ni->n", col, dy) / flux
            new_xx = 2.0 * np.einsum("ni,ni->n", row, dx**2) / flux - 2.0 * mx * mx
            new_yy = 2.0 * np.einsum("ni,ni->n", col, dy**2) / flux - 2.0 * my * my
            new_xy = 2.0 * np.einsum("ni,nij,nj->n", dy, weighted, dx) / flux - 2.0 * mx * my
            scale = np.maximum(new_xx + new_yy, 1e-300)
            change = np.maximum.reduce([abs(new_xx - ixx), abs(new_yy - iyy), abs(new_xy - ixy)]) / scale
            if relaxation != 1.0:
                relaxed = [old + relaxation * (new - old) for old, new in ((ixx, new_xx), (iyy, new_yy), (ixy, new_xy))]
                positive = relaxed[0] * relaxed[1] - relaxed[2] ** 2 > 0
                new_xx, new_yy, new_xy = (np.where(positive, r, n) for r, n in zip(relaxed, (new_xx, new_yy, new_xy)))
        moments[todo] = np.stack([new_xx, new_yy, new_xy], axis=1)
        centres[todo] += 2.0 * np.stack([mx, my], axis=1)
        cx, cy = centres[todo].T
        bad = (
            ~(det > 0)
            | ~(flux > 0)
            | ~np.isfinite(moments[todo]).all(axis=1)
            | (new_xx > max_moment)
            | (new_yy > max_moment)
            | ~((-0.5 <= cx) & (cx <= nx - 0.5) & (-0.5 <= cy) & (cy <= ny - 0.5))
        )
        converged = (change < tol) & (np.hypot(2.0 * mx, 2.0 * my) < tol) & (new_xx * new_yy - new_xy**2 > 0)
        failed[todo[bad]] = True
        done[todo[converged & ~bad]] = True
    for index in np.flatnonzero(~done):
        # Not converged, or failing: the one-image iteration says why (it raises).
        shape, _ = adaptive_moments(
            data[index],
            (float(center[0]), float(center[1])),
            max_iter=max_iter,
            tol=tol,
            start=start,
            relaxation=relaxation,
        )
        moments[index] = (shape.getIxx(), shape.getIyy(), shape.getIxy())
    return moments
