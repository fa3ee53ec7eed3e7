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
from .grid import block_areas, boxes_to_array, coverage_counts
from .window_stitch import WindowSums

__all__ = [
    "REDUCE_OPERATIONS",
    "IMAGE_REDUCE_OPERATIONS",
    "RegionStats",
    "RegionAccumulator",
    "WeightedRegionAccumulator",
    "mark_lost",
    "all_finite",
    "ContributionCounts",
    "covers",
]

#: Every reduce operation of LSST's ``ImageReducerConfig.reduceOperation``.
REDUCE_OPERATIONS = ("none", "copy", "sum", "average", "coaddPsf", "catalog")
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
    def of(count: np.ndarray, zero: np.ndarray | None) -> RegionStats:
        """The statistics of one region's contribution counts (``zero``: pixels with no weight, None: none)."""
        return RegionStats(
            max_count=int(count.max()) if count.size else 0,
            min_count=int(count.min()) if count.size else 0,
            sum_count=int(count.sum(dtype=np.int64)),
            zero_pixels=0 if zero is None else int(zero.sum()),
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
        if plane.dtype.kind != "f":
            return False
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing total is an answer, not a warning
            total = plane.sum()
        if not np.isfinite(total):
            return False
    return True


def covers(region: Box2I, boxes: list[Box2I]) -> bool:
    """Whether the union of ``boxes`` covers every pixel of ``region``."""
    return bool(coverage_counts(region, boxes_to_array(boxes))[2].all())


def _stats_of_box_counts(ys: np.ndarray, xs: np.ndarray, counts: np.ndarray, zero_pixels: int) -> RegionStats:
    """`RegionStats` of a region from its compressed counts (see `coverage_counts`)."""
    areas = block_areas(ys, xs)
    return RegionStats(
        max_count=int(counts.max()),
        min_count=int(counts.min()),
        sum_count=int((counts * areas).sum()),
        zero_pixels=zero_pixels,
        pixels=int(areas.sum()),
    )


#: Above this many blocks of equal count, an average divides by a count plane instead of block by block.
MAX_COUNT_BLOCKS = 256


class ContributionCounts:
    """How many valid results have reached each pixel of a region.

    Kept as a count plane; or, while every result added is all valid (and the caller allows it),
    as the list of their boxes, which `coverage_counts` turns into counts at the end without touching
    a pixel. The first result with an invalid pixel brings the count plane in.
    """

    def __init__(self, bbox: Box2I, per_pixel: bool = True):
        self.bbox = bbox
        self.boxes: list[Box2I] = []
        self.plane = np.zeros((bbox.getHeight(), bbox.getWidth()), dtype=np.int32) if per_pixel else None

    def add(self, overlap: Box2I, valid: np.ndarray | None) -> None:
        """Count one result over ``overlap`` (inside the region); ``valid``: its validity, None if all valid."""
        if self.plane is None:
            if valid is None:
                self.boxes.append(overlap)
                return
            self.plane = self.as_plane()
        self.plane[overlap.slices(self.bbox.getBegin())] += 1 if valid is None else valid

    def blocks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The counts as blocks (see `coverage_counts`); only while no plane is kept."""
        return coverage_counts(self.bbox, boxes_to_array(self.boxes))

    def as_plane(self) -> np.ndarray:
        """The count plane, made from the boxes if there is none yet (and kept from then on)."""
        if self.plane is None:
            ys, xs, counts = self.blocks()
            self.plane = np.repeat(np.repeat(counts.astype(np.int32), np.diff(ys), axis=0), np.diff(xs), axis=1)
        return self.plane

    def stats(self, zero: np.ndarray | None) -> RegionStats:
        """The region's `RegionStats`; ``zero`` marks the pixels left with no weight (None: there are none)."""
        if self.plane is not None:
            return RegionStats.of(self.plane, zero)
        return _stats_of_box_counts(*self.blocks(), 0 if zero is None else int(zero.sum()))


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


def _output_planes(
    image: np.ndarray | None, variance: np.ndarray | None, with_variance: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """An accumulator's output image and, with a variance plane, its variance (None without one).

    The accumulators' ``__post_init__`` makes the planes that were not given, so both are there.
    """
    assert image is not None and (variance is not None or not with_variance)
    return image, variance if with_variance else None


def _input_variance(variance: np.ndarray | None, with_variance: bool) -> np.ndarray | None:
    """A result's variance plane where the accumulator keeps one (None otherwise, whatever was given)."""
    if not with_variance:
        return None
    if variance is None:
        raise TypeError("the accumulator has a variance plane (with_variance=True), so results need one too")
    return variance


@dataclass(kw_only=True)
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
    per_pixel_counts : `bool`
        For ``average``: count contributions pixel by pixel in a count plane. With False, the
        boxes added are recorded instead and `finish` works the counts out from them (one
        division per block of equal count, no count plane), which holds while every result added
        is all valid; the first result with an invalid pixel brings the count plane in.
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
    per_pixel_counts: bool = True
    counts: ContributionCounts | None = field(init=False)

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
        per_pixel = self.per_pixel_counts or self.track_count
        track = self.operation == "average" or self.track_count
        self.counts = ContributionCounts(self.bbox, per_pixel) if track else None

    @property
    def count(self) -> np.ndarray | None:
        """The count plane of valid contributions, where one is kept (see `ContributionCounts`)."""
        return None if self.counts is None else self.counts.plane

    def add(
        self,
        bbox: Box2I,
        image: np.ndarray,
        variance: np.ndarray | None,
        mask: np.ndarray | None,
        weights: np.ndarray | None = None,
        all_valid: bool | None = None,
    ) -> None:
        """Add one cell's result (planes covering ``bbox``) to the part of the region it overlaps.

        ``weights`` is accepted for symmetry with `WeightedRegionAccumulator` and must be None.
        ``all_valid`` says (when known) whether every pixel of the overlap is valid.
        """
        overlap = bbox.clipped_to(self.bbox)
        if overlap.isEmpty():
            return
        cell = overlap.slices(bbox.getBegin())
        here = overlap.slices(self.bbox.getBegin())
        out_image, out_variance = _output_planes(self.image, self.variance, self.with_variance)
        in_variance = _input_variance(variance, self.with_variance)
        patch_image = image[cell]
        patch_variance = None if in_variance is None else in_variance[cell]
        if all_valid is None:
            all_valid = all_finite(patch_image, patch_variance)
        # Where every pixel is valid, plain copies and adds give the same bits as the masked ones.
        valid = (
            None if all_valid else ~np.isnan(patch_image if patch_variance is None else patch_image * patch_variance)
        )
        planes = [(out_image[here], patch_image)]
        if out_variance is not None and patch_variance is not None:  # both there with a variance plane
            planes.append((out_variance[here], patch_variance))
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
        if self.counts is not None:
            self.counts.add(overlap, valid)
        if self.mask is not None and mask is not None:
            self.mask[here] |= mask[cell]

    def sums_finite(self) -> bool:
        """Whether every pixel accumulated so far is finite (before `finish`; see `all_finite`)."""
        return all_finite(*_output_planes(self.image, self.variance, self.with_variance))

    def finish(self, bad_bits: int) -> RegionStats:
        """Flag NaN pixels, divide an ``average`` by its counts, and return the overlap counts."""
        image, variance = _output_planes(self.image, self.variance, self.with_variance)
        if self.mask is not None:
            nan = np.isnan(image if variance is None else image * variance)
            self.mask[nan] |= bad_bits
        if self.operation != "average":
            return RegionStats()
        contributions = self.counts
        assert contributions is not None  # an average always counts its contributions (see __post_init__)
        if contributions.plane is None:
            ys, xs, counts = contributions.blocks()
            if counts.size <= MAX_COUNT_BLOCKS:
                return self._divide_by_blocks(ys, xs, counts, bad_bits)
        weights = contributions.as_plane().astype(np.float64)
        zero = weights == 0.0
        for plane in (image,) if variance is None else (image, variance):
            np.divide(plane, weights, out=plane, where=~zero)
            plane[zero] = np.nan
        if self.mask is not None:
            self.mask[zero] |= bad_bits
        return contributions.stats(zero)

    def _divide_by_blocks(self, ys: np.ndarray, xs: np.ndarray, counts: np.ndarray, bad_bits: int) -> RegionStats:
        """`finish` for an average of all-valid results: divide each block of equal count by it.

        The same bits as dividing by a count plane (each pixel's sum over its float64 count), for
        one small loop over blocks; a count of one changes nothing and is skipped.
        """
        image, variance = _output_planes(self.image, self.variance, self.with_variance)
        planes = (image,) if variance is None else (image, variance)
        y0, x0 = self.bbox.getBeginY(), self.bbox.getBeginX()
        zero_pixels = 0
        for i, j in zip(*np.nonzero(counts != 1)):
            block = (slice(ys[i] - y0, ys[i + 1] - y0), slice(xs[j] - x0, xs[j + 1] - x0))
            count = counts[i, j]
            for plane in planes:
                if count == 0:
                    plane[block] = np.nan
                else:
                    np.divide(plane[block], np.float64(count), out=plane[block])
            if count == 0:
                zero_pixels += (ys[i + 1] - ys[i]) * (xs[j + 1] - xs[j])
                if self.mask is not None:
                    self.mask[block] |= bad_bits
        return _stats_of_box_counts(ys, xs, counts, int(zero_pixels))


@dataclass(kw_only=True)
class WeightedRegionAccumulator:
    """An ``average`` with per-pixel weights (taper windows, inverse variance, a user function).

    Each valid pixel adds ``w * image`` and ``w * variance`` (or ``w**2 * variance`` for
    independent errors); `finish` divides by the sum of weights. Pixels whose weights sum to
    zero (no valid, weighted contribution) become NaN and get the bad-pixel bits. Masks are ORed
    from every overlapping cell, as in LSST's average.

    A window (linear, cosine, Gaussian) is summed by `WindowSums`: in the image's type for a
    float32 image (as LSST's average sums), the sum of weights from 1-d window sums wherever the
    results covering a pixel form a full grid; its weights follow from each result's box, and
    weights handed to `add` are not used. Other weightings are summed in float64.
    """

    bbox: Box2I
    mask: np.ndarray | None
    dtype: Any
    weighting: Any
    image: np.ndarray | None = None
    variance: np.ndarray | None = None
    with_variance: bool = True
    per_pixel_counts: bool = True

    def __post_init__(self) -> None:
        shape = (self.bbox.getHeight(), self.bbox.getWidth())
        self.counts = ContributionCounts(self.bbox, self.per_pixel_counts)
        if self.image is None:
            self.image = np.empty(shape, dtype=self.dtype)
        if self.with_variance and self.variance is None:
            self.variance = np.empty(shape, dtype=self.dtype)
        self.windows: WindowSums | None = None
        # The float64 sums of a weighting that is not a window (None for a window).
        self.sum_weights: np.ndarray | None
        self.sum_image: np.ndarray | None
        self.sum_variance: np.ndarray | None
        if self.weighting.is_window:
            variance = self.variance if self.with_variance else None
            self.windows = WindowSums(self.weighting, self.bbox, self.dtype, self.image, variance)
            self.sum_weights = self.sum_image = self.sum_variance = None
            return
        self.sum_weights = np.zeros(shape)
        self.sum_image = np.zeros(shape)
        self.sum_variance = np.zeros(shape) if self.with_variance else None

    def _sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The float64 sums of weights, image and (with a variance plane) variance; not for a window."""
        assert self.sum_weights is not None and self.sum_image is not None  # made by __post_init__
        return self.sum_weights, self.sum_image, self.sum_variance

    def add(
        self,
        bbox: Box2I,
        image: np.ndarray,
        variance: np.ndarray | None,
        mask: np.ndarray | None,
        weights: np.ndarray | None = None,
        all_valid: bool | None = None,
    ) -> None:
        """Add one cell's result; ``weights`` are its pixel weights over the whole of ``bbox``.

        Without ``weights``, only those of the part inside the region are worked out (a window's
        always are).

        ``all_valid`` says (when known) whether every pixel of the overlap is valid.
        """
        overlap = bbox.clipped_to(self.bbox)
        if overlap.isEmpty():
            return
        cell = overlap.slices(bbox.getBegin())
        here = overlap.slices(self.bbox.getBegin())
        if self.windows is not None:
            in_variance = _input_variance(variance, self.with_variance)
            patch_variance = None if in_variance is None else in_variance[cell]
            self._add_window(self.windows, bbox, overlap, image[cell], patch_variance, all_valid)
        else:
            self._add_weighted(bbox, overlap, image, variance, weights, all_valid)
        if self.mask is not None and mask is not None:
            self.mask[here] |= mask[cell]

    def _add_window(
        self,
        windows: WindowSums,
        bbox: Box2I,
        overlap: Box2I,
        patch_image: np.ndarray,
        patch_variance: np.ndarray | None,
        all_valid: bool | None,
    ) -> None:
        if all_valid is None:
            all_valid = all_finite(patch_image, patch_variance)
        valid = None
        if not all_valid:
            valid = ~np.isnan(patch_image * patch_variance if self.with_variance else patch_image)
        self.counts.add(overlap, valid)
        windows.add(bbox, overlap, patch_image, patch_variance, valid)

    def _add_weighted(
        self,
        bbox: Box2I,
        overlap: Box2I,
        image: np.ndarray,
        variance: np.ndarray | None,
        weights: np.ndarray | None,
        all_valid: bool | None,
    ) -> None:
        cell = overlap.slices(bbox.getBegin())
        here = overlap.slices(self.bbox.getBegin())
        sum_weights, sum_image, sum_variance = self._sums()
        own = weights is None  # weights worked out here may be overwritten
        w = self.weighting.pixel_weights(bbox, image, variance, overlap) if weights is None else weights[cell]
        in_variance = _input_variance(variance, self.with_variance)
        patch_image, patch_variance = image[cell], None if in_variance is None else in_variance[cell]
        if all_valid is None:
            all_valid = all_finite(patch_image, patch_variance)
        factor = w * w if self.with_variance and self.weighting.variance_formula == "independent" else w
        # (sum_variance and patch_variance are both there exactly with a variance plane)
        if all_valid:
            # No pixel to leave out: the products below are the masked path's, without its temporaries.
            sum_weights[here] += w
            if sum_variance is not None and patch_variance is not None:
                sum_variance[here] += factor * patch_variance
            sum_image[here] += np.multiply(w, patch_image, out=w if own else None)
            self.counts.add(overlap, None)
        else:
            patch_image = patch_image.astype(np.float64)
            patch_variance = None if patch_variance is None else patch_variance.astype(np.float64)
            valid = ~np.isnan(patch_image if patch_variance is None else patch_image * patch_variance)
            sum_weights[here] += np.where(valid, w, 0.0)
            sum_image[here] += np.where(valid, w * patch_image, 0.0)
            if sum_variance is not None and patch_variance is not None:
                sum_variance[here] += np.where(valid, factor * patch_variance, 0.0)
            self.counts.add(overlap, valid)

    def sums_finite(self) -> bool:
        """Whether every weighted sum accumulated so far is finite (see `all_finite`)."""
        if self.windows is not None:
            return self.windows.run(self.counts.plane)
        _, sum_image, sum_variance = self._sums()
        return all_finite(sum_image, sum_variance)

    def finish(self, bad_bits: int) -> RegionStats:
        """Divide by the summed weights; flag pixels with none."""
        image, variance = _output_planes(self.image, self.variance, self.with_variance)
        planes = (image,) if variance is None else (image, variance)
        if self.windows is not None:
            self.windows.run(self.counts.plane)
            zero = self.windows.zero
        else:
            zero = self._divide()
        if zero is not None and zero.any():
            for plane in planes:
                plane[zero] = np.nan
        if self.mask is not None:
            nan = np.isnan(image if variance is None else image * variance)
            self.mask[nan if zero is None else nan | zero] |= bad_bits
        return self.counts.stats(zero)

    def _divide(self) -> np.ndarray:
        """The float64 sums divided by the summed weights into the output; the pixels with no weight."""
        sum_weights, sum_image, sum_variance = self._sums()
        image, variance = _output_planes(self.image, self.variance, self.with_variance)
        zero = sum_weights == 0.0
        some = ~zero
        with np.errstate(divide="ignore", invalid="ignore"):
            # float64 quotients, rounded once into the output's type
            np.divide(sum_image, sum_weights, out=image, where=some)
            if variance is not None and sum_variance is not None:  # both there with a variance plane
                norm = sum_weights**2 if self.weighting.variance_formula == "independent" else sum_weights
                np.divide(sum_variance, norm, out=variance, where=some)
        return zero

    @property
    def count(self) -> np.ndarray | None:
        """The count plane of valid contributions, where one is kept (see `ContributionCounts`)."""
        return self.counts.plane
