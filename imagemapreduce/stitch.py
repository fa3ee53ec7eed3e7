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

__all__ = [
    "REDUCE_OPERATIONS",
    "IMAGE_REDUCE_OPERATIONS",
    "RegionStats",
    "RegionAccumulator",
    "WeightedRegionAccumulator",
    "mark_lost",
    "all_finite",
    "covers",
]

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
    def of(count: np.ndarray, zero: np.ndarray) -> RegionStats:
        """The statistics of one region's contribution counts (``zero``: pixels with no weight)."""
        return RegionStats(
            max_count=int(count.max()) if count.size else 0,
            min_count=int(count.min()) if count.size else 0,
            sum_count=int(count.sum(dtype=np.int64)),
            zero_pixels=int(zero.sum()),
            pixels=int(count.size),
        )

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


def all_finite(image: np.ndarray, variance: np.ndarray | None = None) -> bool:
    """Whether every pixel is finite, from one fast reduction (the sum) per plane, no temporaries.

    A NaN or infinity anywhere makes the sum non-finite; a sum that overflows says False for finite
    pixels too, which only sends them down the careful (masked) path. Finite image and variance
    guarantee ``image * variance`` is never NaN (LSST's validity test).
    """
    for plane in (image, variance):
        if plane is None or plane.size == 0:
            continue
        if plane.dtype.kind != "f" or not np.isfinite(plane.sum()):
            return False
    return True


def covers(region: Box2I, boxes: list[Box2I]) -> bool:
    """Whether the union of ``boxes`` covers every pixel of ``region`` (by coordinate compression)."""
    clipped = [b.clipped_to(region) for b in boxes]
    clipped = [b for b in clipped if not b.isEmpty()]
    if not clipped:
        return False
    xs = np.unique([region.getBeginX(), region.getEndX()] + [v for b in clipped for v in (b.getBeginX(), b.getEndX())])
    ys = np.unique([region.getBeginY(), region.getEndY()] + [v for b in clipped for v in (b.getBeginY(), b.getEndY())])
    hit = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for b in clipped:
        i0, i1 = np.searchsorted(ys, [b.getBeginY(), b.getEndY()])
        j0, j1 = np.searchsorted(xs, [b.getBeginX(), b.getEndX()])
        hit[i0:i1, j0:j1] = True
    return bool(hit.all())


def mark_lost(acc: Any, bbox: Box2I, bad_bits: int) -> None:
    """After `finish`: pixels of a failed cell's ``bbox`` that no valid result covered become NaN and bad.

    The accumulator must have counted contributions (``track_count`` or ``average``).
    """
    overlap = bbox.clipped_to(acc.bbox)
    if overlap.isEmpty():
        return
    here = overlap.slices(acc.bbox.getBegin())
    lost = acc.count[here] == 0
    acc.image[here][lost] = np.nan
    if acc.with_variance:
        acc.variance[here][lost] = np.nan
    if acc.mask is not None:
        acc.mask[here][lost] |= bad_bits


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
    track_count : `bool`
        Count valid contributions even when not averaging (to find a failed cell's lost pixels).
    prefilled : `bool`
        For ``copy``: the caller has checked that valid results cover every pixel, so the NaN
        fill that marks uncovered pixels can be skipped.
    """

    bbox: Box2I
    mask: np.ndarray | None
    dtype: Any
    operation: str
    image: np.ndarray | None = None
    variance: np.ndarray | None = None
    with_variance: bool = True
    track_count: bool = False
    prefilled: bool = False
    count: np.ndarray | None = field(init=False)

    def __post_init__(self) -> None:
        if self.operation not in IMAGE_REDUCE_OPERATIONS:
            raise ValueError(f"cannot stitch with reduceOperation={self.operation!r}")
        shape = (self.bbox.getHeight(), self.bbox.getWidth())
        # copy starts from NaN so that uncovered pixels stay NaN; sum and average start from zero.
        start = np.nan if self.operation == "copy" else 0.0
        for name in ("image", "variance") if self.with_variance else ("image",):
            plane = getattr(self, name)
            if plane is None:
                plane = np.empty(shape, dtype=self.dtype)
                setattr(self, name, plane)
            if not (self.prefilled and self.operation == "copy"):
                plane[...] = start
        track = self.operation == "average" or self.track_count
        self.count = np.zeros(shape, dtype=np.int32) if track else None

    def add(self, bbox: Box2I, image: np.ndarray, variance: np.ndarray | None, mask: np.ndarray | None,
            weights: None = None, all_valid: bool | None = None) -> None:  # fmt: skip
        """Add one cell's result (planes covering ``bbox``) to the part of the region it overlaps.

        ``weights`` is accepted for symmetry with `WeightedRegionAccumulator` and must be None.
        ``all_valid`` says (when known) whether every pixel of the overlap is valid.
        """
        overlap = bbox.clipped_to(self.bbox)
        if overlap.isEmpty():
            return
        cell = overlap.slices(bbox.getBegin())
        here = overlap.slices(self.bbox.getBegin())
        patch_image = image[cell]
        patch_variance = variance[cell] if self.with_variance else None
        if all_valid is None:
            all_valid = all_finite(patch_image, patch_variance)
        # Where every pixel is valid, plain copies and adds give the same bits as the masked ones.
        valid = None if all_valid else ~np.isnan(patch_image * patch_variance if self.with_variance else patch_image)
        planes = [(self.image[here], patch_image)]
        if self.with_variance:
            planes.append((self.variance[here], patch_variance))
        for out, patch in planes:
            if self.operation == "copy":
                if valid is None:
                    out[...] = patch
                else:
                    np.copyto(out, patch, where=valid)
            elif valid is None:
                np.add(out, patch, out=out)
            else:
                # Same arithmetic and casting as LSST's ``a[valid] += b[valid]``, without the gathers.
                np.add(out, patch, out=out, where=valid)
        if self.count is not None:
            self.count[here] += 1 if valid is None else valid
        if self.mask is not None and mask is not None:
            self.mask[here] |= mask[cell]

    def finish(self, bad_bits: int) -> RegionStats:
        """Flag NaN pixels, divide an ``average`` by its counts, and return the overlap counts."""
        if self.mask is not None:
            nan = np.isnan(self.image * self.variance if self.with_variance else self.image)
            self.mask[nan] |= bad_bits
        if self.operation != "average":
            return RegionStats()
        weights = self.count.astype(np.float64)
        zero = weights == 0.0
        for plane in (self.image, self.variance) if self.with_variance else (self.image,):
            np.divide(plane, weights, out=plane, where=~zero)
            plane[zero] = np.nan
        if self.mask is not None:
            self.mask[zero] |= bad_bits
        return RegionStats.of(self.count, zero)


@dataclass
class WeightedRegionAccumulator:
    """An ``average`` with per-pixel weights (taper windows, inverse variance, a user function).

    Each valid pixel adds ``w * image`` and ``w * variance`` (or ``w**2 * variance`` for
    independent errors) in float64; `finish` divides by the sum of weights. Pixels whose weights
    sum to zero (no valid, weighted contribution) become NaN and get the bad-pixel bits. Masks are
    ORed from every overlapping cell, as in LSST's average.
    """

    bbox: Box2I
    mask: np.ndarray | None
    dtype: Any
    weighting: Any
    image: np.ndarray | None = None
    variance: np.ndarray | None = None
    with_variance: bool = True

    def __post_init__(self) -> None:
        shape = (self.bbox.getHeight(), self.bbox.getWidth())
        self.sum_weights = np.zeros(shape)
        self.sum_image = np.zeros(shape)
        self.sum_variance = np.zeros(shape) if self.with_variance else None
        self.count = np.zeros(shape, dtype=np.int32)
        if self.image is None:
            self.image = np.empty(shape, dtype=self.dtype)
        if self.with_variance and self.variance is None:
            self.variance = np.empty(shape, dtype=self.dtype)

    def add(self, bbox: Box2I, image: np.ndarray, variance: np.ndarray | None, mask: np.ndarray | None,
            weights: np.ndarray | None = None) -> None:  # fmt: skip
        """Add one cell's result; ``weights`` are its pixel weights over the whole of ``bbox``."""
        overlap = bbox.clipped_to(self.bbox)
        if overlap.isEmpty():
            return
        cell = overlap.slices(bbox.getBegin())
        here = overlap.slices(self.bbox.getBegin())
        if weights is None:
            weights = self.weighting.pixel_weights(bbox, image, variance)
        w = weights[cell]
        patch_image = image[cell].astype(np.float64)
        patch_variance = variance[cell].astype(np.float64) if self.with_variance else None
        valid = ~np.isnan(patch_image * patch_variance if self.with_variance else patch_image)
        w = np.where(valid, w, 0.0)
        self.sum_weights[here] += w
        self.sum_image[here] += np.where(valid, w * patch_image, 0.0)
        if self.with_variance:
            factor = w * w if self.weighting.variance_formula == "independent" else w
            self.sum_variance[here] += np.where(valid, factor * patch_variance, 0.0)
        self.count[here] += valid
        if self.mask is not None and mask is not None:
            self.mask[here] |= mask[cell]

    def finish(self, bad_bits: int) -> RegionStats:
        """Divide by the summed weights; flag pixels with none."""
        zero = self.sum_weights == 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            self.image[...] = np.where(zero, np.nan, self.sum_image / self.sum_weights)
            if self.with_variance:
                norm = self.sum_weights**2 if self.weighting.variance_formula == "independent" else self.sum_weights
                self.variance[...] = np.where(zero, np.nan, self.sum_variance / norm)
        if self.mask is not None:
            nan = np.isnan(self.image * self.variance if self.with_variance else self.image)
            self.mask[nan | zero] |= bad_bits
        return RegionStats.of(self.count, zero)
