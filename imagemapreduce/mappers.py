"""Ready-made mappers: useful on their own, and small examples of writing one."""

from __future__ import annotations

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
]


class IdentityMapper(ImageMapper):
    """Return each cell unchanged (a view of the input): ``copy`` then rebuilds the input exactly."""

    _DefaultName = "imr_IdentityMapper"

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Return the cell as it is."""
        return Struct(subExposure=subExposure)


class AddAmountMapperConfig(ImageMapperConfig):
    """Configuration for `AddAmountMapper`."""

    addAmount = pexConfig.Field(dtype=float, doc="Amount to add to the image", default=3.0)


class AddAmountMapper(ImageMapper):
    """Add a constant to each cell's image (LSST's ``AddAmountImageMapper`` test mapper).

    A ``addAmount`` keyword argument to ``run`` overrides the config.
    """

    ConfigClass = AddAmountMapperConfig
    _DefaultName = "imr_AddAmountMapper"

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Return a copy of the cell with ``addAmount`` added to its image."""
        out = subExposure.clone()
        out.maskedImage += kwargs.get("addAmount", self.config.addAmount)
        return Struct(subExposure=out)


class GaussianSmoothMapperConfig(ImageMapperConfig):
    """Configuration for `GaussianSmoothMapper`."""

    sigma = pexConfig.Field(dtype=float, doc="Gaussian sigma in pixels", default=2.0, check=lambda s: s > 0)
    truncate = pexConfig.Field(dtype=float, doc="Kernel radius in sigmas", default=4.0, check=lambda s: s > 0)


class GaussianSmoothMapper(ImageMapper):
    """Smooth the expanded cell with a Gaussian (``scipy.ndimage``) and keep the cell's core.

    The variance is propagated through the kernel (convolved with the squared kernel), so it
    stays exact for independent pixels. With a border of at least ``truncate * sigma`` pixels the
    core equals smoothing the whole image.
    """

    ConfigClass = GaussianSmoothMapperConfig
    _DefaultName = "imr_GaussianSmoothMapper"

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
