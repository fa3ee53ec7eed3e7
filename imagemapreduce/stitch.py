"""Pure numpy stitching: combine cell results into one output region, exactly as LSST's reducer does.

LSST's ``ImageReducer._reduceImage`` walks the mapper results in grid order and, for each, adds
(or copies) the pixels whose ``image * variance`` is not NaN into a clone of the input, ORs the
cell's mask in, then flags NaN and (for ``average``) zero-count pixels. Every step is per pixel, so
the output can be built region by region: a region that takes, in grid order, only the cells that
overlap it gets the same bits as the whole-image loop. The functions here do one region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geom import Box2I

__all__ = ["REDUCE_OPERATIONS", "IMAGE_REDUCE_OPERATIONS", "RegionStats", "RegionAccumulator"]

#: Every reduce operation of LSST's ``ImageReducerConfig.reduceOperation``.
REDUCE_OPERATIONS = ("none", "copy", "sum", "average", "coaddPsf")
#: The operations that produce a stitched exposure.
IMAGE_REDUCE_OPERATIONS = ("copy", "sum", "average")


@dataclass
class RegionStats:
    """Overlap counts of one region of an ``average``, to be merged into LSST's log lines."""

    max_count: int = 0
    min_count: int = 0
    sum_count: int = 0
    zero_pixels: int = 0
    pixels: int = 0

    @staticmethod
    def merge(parts: list[RegionStats]) -> RegionStats:
        """Combine the statistics of disjoint regions."""
        parts = [p for p in parts if p.pixels]
        if not parts:
            return RegionStats()
        return RegionStats(
            max_count=max(p.max_count for p in parts),
            min_count=min(p.min_count for p in parts),
            sum_count=sum(p.sum_count for p in parts),
            zero_pixels=sum(p.zero_pixels for p in parts),
            pixels=sum(p.pixels for p in parts),
        )


@dataclass
class RegionAccumulator:
    """The output planes of one region while cells are being added.

    Parameters
    ----------
    bbox : `Box2I`
        The region, in parent coordinates.
    mask : `numpy.ndarray` or `None`
        The region's output mask, initialised from the input mask (the output is a clone of the
        input) and written in place; None for plain arrays, which have no mask.
    dtype : numpy dtype
        Pixel type of the output image and variance (the input's).
    operation : {'copy', 'sum', 'average'}
        The reduce operation.
    image, variance : `numpy.ndarray`, optional
        Arrays to accumulate into (for example views of the output exposure); new ones otherwise.
    with_variance : `bool`
        Whether there is a variance plane. Without one, a pixel is valid when its image value is
        not NaN (LSST's rule, ``image * variance`` not NaN, with the variance left out).
    """

    bbox: Box2I
    mask: np.ndarray | None
    dtype: Any
    operation: str
    image: np.ndarray | None = None
    variance: np.ndarray | None = None
    with_variance: bool = True
    count: np.ndarray | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.operation not in IMAGE_REDUCE_OPERATIONS:
            raise ValueError(f"cannot stitch with reduceOperation={self.operation!r}")
        shape = (self.bbox.getHeight(), self.bbox.getWidth())
        # copy starts from NaN so that uncovered pixels stay NaN; sum and average start from zero.
        start = np.nan if self.operation == "copy" else 0.0
        for name in ("image", "variance") if self.with_variance else ("image",):
            plane = getattr(self, name)
            if plane is None:
                setattr(self, name, np.full(shape, start, dtype=self.dtype))
            else:
                plane[...] = start
        if self.operation == "average":
            self.count = np.zeros(shape, dtype=np.int32)

    def add(self, bbox: Box2I, image: np.ndarray, variance: np.ndarray | None, mask: np.ndarray | None) -> None:
        """Add one cell's result (planes covering ``bbox``) to the part of the region it overlaps."""
        overlap = bbox.clipped_to(self.bbox)
        if overlap.isEmpty():
            return
        cell = overlap.slices(bbox.getBegin())
        here = overlap.slices(self.bbox.getBegin())
        patch_image = image[cell]
        patch_variance = variance[cell] if self.with_variance else None
        valid = ~np.isnan(patch_image * patch_variance if self.with_variance else patch_image)
        planes = [(self.image[here], patch_image)]
        if self.with_variance:
            planes.append((self.variance[here], patch_variance))
        for out, patch in planes:
            if self.operation == "copy":
                np.copyto(out, patch, where=valid)
            else:
                # Same arithmetic and casting as LSST's ``a[valid] += b[valid]``, without the gathers.
                np.add(out, patch, out=out, where=valid)
        if self.count is not None:
            self.count[here] += valid
        if self.mask is not None and mask is not None:
            self.mask[here] |= mask[cell]

    def finish(self, bad_bits: int) -> RegionStats:
        """Flag NaN pixels, divide an ``average`` by its counts, and return the overlap counts."""
        if self.mask is not None:
            nan = np.isnan(self.image * self.variance if self.with_variance else self.image)
            self.mask[nan] |= bad_bits
        if self.count is None:
            return RegionStats()
        weights = self.count.astype(np.float64)
        zero = weights == 0.0
        for plane in (self.image, self.variance) if self.with_variance else (self.image,):
            np.divide(plane, weights, out=plane, where=~zero)
            plane[zero] = np.nan
        if self.mask is not None:
            self.mask[zero] |= bad_bits
        return RegionStats(
            max_count=int(self.count.max()) if self.count.size else 0,
            min_count=int(self.count.min()) if self.count.size else 0,
            sum_count=int(self.count.sum(dtype=np.int64)),
            zero_pixels=int(zero.sum()),
            pixels=int(self.count.size),
        )
