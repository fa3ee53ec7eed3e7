"""Ready-made mappers: useful on their own, and small examples of writing one."""

from __future__ import annotations

import math
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np

from .geom import Box2I
from .image import Exposure
from .mapper import ImageMapper, ImageMapperConfig
from .pipe_base import Struct

__all__ = [
    "IdentityMapper",
    "AddAmountMapperConfig",
    "AddAmountMapper",
    "GaussianSmoothMapperConfig",
    "GaussianSmoothMapper",
    "MedianFilterMapperConfig",
    "MedianFilterMapper",
    "BackgroundSubtractMapperConfig",
    "BackgroundSubtractMapper",
    "sigma_clipped_median",
]


#: The scipy.ndimage edge modes offered by the filtering mappers, with what each does.
EDGE_MODES = {
    "nearest": "repeat the edge pixel",
    "reflect": "mirror about the edge, edge repeated",
    "mirror": "mirror about the edge pixel",
}


class IdentityMapper(ImageMapper):
    """Return each cell unchanged (a view of the input): ``copy`` then rebuilds the input exactly."""

    _DefaultName = "imr_IdentityMapper"

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Return the cell as it is."""
        return Struct(subExposure=subExposure)


class AddAmountMapperConfig(ImageMapperConfig):
    """Configuration for `AddAmountMapper`."""

    # The annotations give each field's value type: pex_config fields are descriptors whose
    # untyped constructors leave the value type to be stated.
    addAmount: pexConfig.Field[float] = pexConfig.Field(dtype=float, doc="Amount to add to the image", default=3.0)


class AddAmountMapper(ImageMapper):
    """Add a constant to each cell's image (LSST's ``AddAmountImageMapper`` test mapper).

    A ``addAmount`` keyword argument to ``run`` overrides the config.
    """

    ConfigClass = AddAmountMapperConfig
    _DefaultName = "imr_AddAmountMapper"
    config: AddAmountMapperConfig

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Return a copy of the cell with ``addAmount`` added to its image."""
        out = subExposure.clone()
        out.maskedImage += kwargs.get("addAmount", self.config.addAmount)
        return Struct(subExposure=out)


class GaussianSmoothMapperConfig(ImageMapperConfig):
    """Configuration for `GaussianSmoothMapper`."""

    sigma: pexConfig.Field[float] = pexConfig.Field(
        dtype=float, doc="Gaussian sigma in pixels", default=2.0, check=lambda s: s > 0
    )
    truncate: pexConfig.Field[float] = pexConfig.Field(
        dtype=float, doc="Kernel radius in sigmas", default=4.0, check=lambda s: s > 0
    )


class GaussianSmoothMapper(ImageMapper):
    """Smooth the expanded cell with a Gaussian (``scipy.ndimage``) and keep the cell's core.

    The variance is propagated through the kernel (convolved with the squared kernel), so it
    stays exact for independent pixels. With a border of at least ``truncate * sigma`` pixels the
    core equals smoothing the whole image.
    """

    ConfigClass = GaussianSmoothMapperConfig
    _DefaultName = "imr_GaussianSmoothMapper"
    config: GaussianSmoothMapperConfig

    def reach(self, exposure: Exposure | None = None) -> int:
        """Return how far in pixels an output pixel sees: the kernel radius, ``truncate * sigma``.

        A border of at least this makes the cells' cores equal to smoothing the whole image.
        """
        return int(self.config.truncate * self.config.sigma + 0.5)  # scipy's radius

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Return the smoothed cell."""
        from scipy import ndimage

        sigma, truncate = self.config.sigma, self.config.truncate
        image = ndimage.gaussian_filter(expandedSubExposure.image.array, sigma, truncate=truncate, mode="nearest")
        radius = int(truncate * sigma + 0.5)
        kernel1d = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        kernel1d /= kernel1d.sum()
        squared = kernel1d**2
        variance = ndimage.correlate1d(expandedSubExposure.variance.array, squared, axis=0, mode="nearest")
        variance = ndimage.correlate1d(variance, squared, axis=1, mode="nearest")
        out = expandedSubExposure.clone()
        out.image.array[...] = image
        out.variance.array[...] = variance
        return Struct(subExposure=out.subset(subExposure.getBBox()))


class MedianFilterMapperConfig(ImageMapperConfig):
    """Configuration for `MedianFilterMapper`."""

    size: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        default=3,
        check=lambda n: n >= 1 and n % 2 == 1,
        doc="Side of the square median window in pixels (odd, so the window is centred on its pixel)",
    )
    mode: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="nearest",
        doc="How the window is filled beyond the image's edges (scipy.ndimage modes)",
        allowed=EDGE_MODES,
    )


class MedianFilterMapper(ImageMapper):
    """Median-filter the expanded cell with a ``size`` x ``size`` window and keep the cell's core.

    With a border of at least ``size // 2`` pixels the core equals median-filtering the whole image
    (``scipy.ndimage.median_filter`` with the same ``mode``): at the image's edges the expanded cell
    ends where the image does, so the edge mode applies exactly as on the whole image.

    The variance is the median-filtered variance times ``pi / (2 n)`` for a window of ``n > 1``
    pixels: the variance of the median of ``n`` independent Gaussian pixels, exact as ``n`` grows
    and within 5% already for a 3 x 3 window. The output pixels are correlated; the variance plane
    holds each pixel's own variance only. The mask is unchanged: the median is robust to the odd
    flagged pixel, so spreading every flag over the window would flag far too much.
    """

    ConfigClass = MedianFilterMapperConfig
    _DefaultName = "imr_MedianFilterMapper"
    config: MedianFilterMapperConfig

    def reach(self, exposure: Exposure | None = None) -> int:
        """Return how far in pixels an output pixel sees: half the window, ``size // 2``."""
        return self.config.size // 2

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Return the median-filtered cell."""
        from scipy import ndimage

        size, mode = self.config.size, self.config.mode
        core = subExposure.getBBox().slices(expandedSubExposure.getXY0())
        image = ndimage.median_filter(expandedSubExposure.image.array, size=size, mode=mode)[core]
        variance = ndimage.median_filter(expandedSubExposure.variance.array, size=size, mode=mode)[core]
        n = size * size
        out = subExposure.clone()
        out.image.array[...] = image
        out.variance.array[...] = variance * (math.pi / (2.0 * n) if n > 1 else 1.0)
        return Struct(subExposure=out)


def sigma_clipped_median(values: np.ndarray, nSigma: float = 3.0, maxIters: int = 5) -> tuple[float, int]:
    """Return the median of ``values`` after iterative sigma clipping, and how many values remain.

    Each iteration keeps the values within ``nSigma`` standard deviations of the median (bounds
    included) and stops early when nothing more is clipped, as ``astropy.stats.sigma_clip`` does
    with its default median centre and standard deviation.

    Parameters
    ----------
    values : `numpy.ndarray`
        The values, any shape; they must be finite and not empty.
    nSigma : `float`
        The clipping threshold in standard deviations.
    maxIters : `int`
        The most clipping iterations; 0 gives the plain median.

    Returns
    -------
    median : `float`
        The median of the values that survive the clipping.
    count : `int`
        The number of those values.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("sigma_clipped_median needs at least one value")
    for _ in range(maxIters):
        median, std = np.median(data), data.std()
        keep = np.abs(data - median) <= nSigma * std
        if keep.all():
            break
        data = data[keep]
    return float(np.median(data)), int(data.size)


class BackgroundSubtractMapperConfig(ImageMapperConfig):
    """Configuration for `BackgroundSubtractMapper`."""

    ignoreMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        doc="Mask planes whose pixels are left out of the background estimate (planes the "
        "mask does not have are skipped)",
        default=("INTRP", "EDGE", "DETECTED", "SAT", "CR", "BAD", "NO_DATA", "DETECTED_NEGATIVE"),
    )
    nSigma: pexConfig.Field[float] = pexConfig.Field(
        dtype=float, default=3.0, check=lambda s: s > 0, doc="Sigma-clipping threshold in standard deviations"
    )
    maxIters: pexConfig.Field[int] = pexConfig.Field(
        dtype=int, default=5, check=lambda n: n >= 0, doc="Most sigma-clipping iterations (0: the plain median)"
    )


class BackgroundSubtractMapper(ImageMapper):
    """Subtract a local background: the sigma-clipped median of each expanded cell, from the cell.

    The background is measured on the expanded cell, so that neighbouring cells share pixels and
    their levels agree more closely, leaving out non-finite pixels and those flagged in any of
    ``ignoreMaskPlanes`` (stars flagged DETECTED, saturated or bad pixels...). Stars left unflagged
    are mostly removed by the clipping. The variance is unchanged: the background is a constant
    per cell, estimated from many pixels. With overlapping cells and the ``average`` reducer the
    background varies smoothly between cells.

    A cell with no usable pixel has no background: its image becomes NaN (with a warning), so that
    the reducer flags those pixels as invalid unless another cell covers them.

    The result also holds ``background`` (the value subtracted) and ``numPixels`` (the pixels that
    survived the clipping).
    """

    ConfigClass = BackgroundSubtractMapperConfig
    _DefaultName = "imr_BackgroundSubtractMapper"
    config: BackgroundSubtractMapperConfig

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Return the cell minus its background."""
        values = self.usablePixels(expandedSubExposure)
        out = subExposure.clone()
        if values.size == 0:
            self.log.warning(
                "Cell %s: no unmasked finite pixel to measure the background on; it is set to NaN",
                subExposure.getBBox(),
            )
            out.image.array[...] = np.nan
            return Struct(subExposure=out, background=math.nan, numPixels=0)
        background, count = sigma_clipped_median(values, self.config.nSigma, self.config.maxIters)
        out.image.array -= out.image.array.dtype.type(background)
        return Struct(subExposure=out, background=background, numPixels=count)

    def usablePixels(self, exposure: Exposure) -> np.ndarray:
        """Return the finite image pixels of ``exposure`` that carry none of the ignored mask planes."""
        mask = exposure.mask
        planes = mask.getMaskPlaneDict()
        ignored = [name for name in self.config.ignoreMaskPlanes if name in planes]
        bits = mask.getPlaneBitMask(ignored) if ignored else 0
        image = np.asarray(exposure.image.array)
        good = np.isfinite(image)
        if bits:
            good &= (np.asarray(mask.array) & bits) == 0
        return image[good]
