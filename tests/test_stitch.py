"""The region stitcher's shortcuts give the very bits of its careful paths.

An average of all-valid results divides by counts worked out from the boxes (no count plane);
a weighted average of all-valid results skips the masking. Each is compared, bit for bit, with
the per-pixel path on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import imagemapreduce as imr
from imagemapreduce.grid import boxes_to_array, coverage_counts
from imagemapreduce.stitch import MAX_COUNT_BLOCKS, RegionAccumulator, WeightedRegionAccumulator, covers
from imagemapreduce.weights import make_weighting

REGION = imr.Box2I(imr.Point2I(10, 20), imr.Extent2I(60, 40))  # x 10..69, y 20..59
BAD = 1 << 5


def _box(x0, y0, w, h):
    return imr.Box2I(imr.Point2I(x0, y0), imr.Extent2I(w, h))


def _random_boxes(rng, n, size=(10, 30)):
    boxes = []
    for _ in range(n):
        w, h = rng.integers(*size, size=2)
        boxes.append(_box(int(rng.integers(0, 70)), int(rng.integers(10, 60)), int(w), int(h)))
    return boxes


def _brute_counts(region, boxes):
    counts = np.zeros((region.getHeight(), region.getWidth()), np.int64)
    for box in boxes:
        overlap = box.clipped_to(region)
        if not overlap.isEmpty():
            counts[overlap.slices(region.getBegin())] += 1
    return counts


@pytest.mark.parametrize("seed", range(5))
def test_box_counts_match_counting_pixel_by_pixel(seed):
    boxes = _random_boxes(np.random.default_rng(seed), 12)
    ys, xs, counts = coverage_counts(REGION, boxes_to_array(boxes))
    assert (ys[0], ys[-1], xs[0], xs[-1]) == (20, 60, 10, 70)
    full = np.repeat(np.repeat(counts, np.diff(ys), axis=0), np.diff(xs), axis=1)
    np.testing.assert_array_equal(full, _brute_counts(REGION, boxes))
    assert covers(REGION, boxes) == bool(_brute_counts(REGION, boxes).all())


def test_covers_edge_cases():
    assert not covers(REGION, [])
    assert covers(REGION, [_box(0, 0, 100, 100)])
    assert not covers(REGION, [_box(10, 20, 60, 39)])  # one row short
    assert covers(REGION, [_box(10, 20, 30, 40), _box(40, 20, 30, 40)])


def _pieces(rng, boxes, nan_at=None):
    pieces = []
    for k, box in enumerate(boxes):
        shape = (box.getHeight(), box.getWidth())
        image = rng.normal(size=shape).astype(np.float32)
        variance = rng.uniform(0.5, 2.0, size=shape).astype(np.float32)
        mask = rng.integers(0, 4, size=shape).astype(np.int32)
        if k == nan_at:
            image[5, 15] = np.nan  # inside REGION for the boxes used here
        pieces.append((box, image, variance, mask))
    return pieces


def _average(pieces, per_pixel_counts, with_variance=True, mask=True):
    shape = (REGION.getHeight(), REGION.getWidth())
    acc = RegionAccumulator(
        bbox=REGION,
        mask=np.zeros(shape, np.int32) if mask else None,
        dtype=np.float32,
        operation="average",
        with_variance=with_variance,
        per_pixel_counts=per_pixel_counts,
    )
    for box, image, variance, m in pieces:
        acc.add(box, image, variance if with_variance else None, m if mask else None)
    stats = acc.finish(BAD)
    return acc, stats


def _assert_same(a, b):
    for name in ("image", "variance", "mask"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.tobytes() == y.tobytes(), name


@pytest.mark.parametrize("with_variance", [True, False])
@pytest.mark.parametrize(
    "boxes",
    [
        [_box(0, 10, 40, 30), _box(30, 10, 40, 30), _box(0, 35, 40, 30), _box(30, 35, 40, 30)],  # overlaps
        [_box(12, 22, 20, 20), _box(40, 30, 20, 20)],  # leaves pixels uncovered
        "many small boxes",
    ],
)
def test_average_from_box_counts_equals_the_count_plane(boxes, with_variance):
    rng = np.random.default_rng(1)
    if boxes == "many small boxes":
        boxes = _random_boxes(rng, 80, size=(2, 7))
        assert coverage_counts(REGION, boxes_to_array(boxes))[2].size > MAX_COUNT_BLOCKS  # the rasterised fallback
    pieces = _pieces(rng, boxes)
    fast, fast_stats = _average(pieces, per_pixel_counts=False, with_variance=with_variance)
    exact, exact_stats = _average(pieces, per_pixel_counts=True, with_variance=with_variance)
    assert fast.count is None or fast.count.shape == exact.count.shape
    _assert_same(fast, exact)
    assert fast_stats == exact_stats
    counts = _brute_counts(REGION, boxes)
    assert fast_stats.zero_pixels == int((counts == 0).sum())
    assert np.all(np.isnan(fast.image[counts == 0])) and np.all(fast.mask[counts == 0] & BAD)


def test_the_first_invalid_result_brings_in_the_count_plane():
    boxes = [_box(0, 10, 40, 30), _box(30, 10, 40, 30), _box(0, 35, 40, 30), _box(30, 35, 40, 30)]
    pieces = _pieces(np.random.default_rng(2), boxes, nan_at=2)
    fast, fast_stats = _average(pieces, per_pixel_counts=False)
    exact, exact_stats = _average(pieces, per_pixel_counts=True)
    assert fast.count is not None
    _assert_same(fast, exact)
    assert fast_stats == exact_stats


@pytest.mark.parametrize("formula", ["correlated", "independent"])
@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_weighted_average_skips_the_masking_with_the_same_bits(kind, formula):
    weighting = make_weighting(kind, variance_formula=formula)
    boxes = [_box(0, 10, 40, 30), _box(30, 10, 40, 30), _box(0, 35, 40, 30), _box(12, 22, 20, 20)]
    pieces = _pieces(np.random.default_rng(3), boxes)
    results = []
    # all valid and counted from the boxes; the masked path (as with some NaN) with a count plane
    for all_valid, per_pixel_counts in ((True, False), (False, True)):
        shape = (REGION.getHeight(), REGION.getWidth())
        acc = WeightedRegionAccumulator(
            bbox=REGION,
            mask=np.zeros(shape, np.int32),
            dtype=np.float32,
            weighting=weighting,
            per_pixel_counts=per_pixel_counts,
        )
        for box, image, variance, mask in pieces:
            acc.add(box, image, variance, mask, None, all_valid)
        results.append((acc, acc.finish(BAD)))
    (fast, fast_stats), (careful, careful_stats) = results
    assert fast.count is None and careful.count is not None
    _assert_same(fast, careful)
    assert fast_stats == careful_stats
    covered = _brute_counts(REGION, boxes) > 0
    assert np.all(np.isfinite(fast.image[covered])) and np.all(np.isnan(fast.image[~covered]))


def test_all_finite_says_false_quietly_when_only_the_total_overflows():
    from imagemapreduce.stitch import all_finite

    big = np.full((64, 64), 3e37, np.float32)  # every pixel finite; their float32 sum is not
    assert not all_finite(big)  # filterwarnings=error: an overflow warning would fail this test
    assert all_finite(np.ones((4, 4), np.float32)) and not all_finite(np.array([1.0, np.nan]))
    assert not all_finite(np.ones(3, np.int32))  # only floating planes take the fast paths


def test_a_region_whose_total_overflows_still_averages_exactly():
    values = np.full((40, 40), 3e37, np.float32)
    out = imr.map_reduce(values, lambda c: c, cell_size=20, grid_step=10, border=0, scheduler="synchronous")
    np.testing.assert_array_equal(out, values)


def test_weights_handed_in_are_not_overwritten():
    weighting = make_weighting(lambda bbox, image, variance: np.full(image.shape, 2.0))
    box = _box(10, 20, 30, 20)
    image, variance = np.ones((20, 30), np.float32), np.ones((20, 30), np.float32)
    weights = weighting.pixel_weights(box, image, variance)
    before = weights.copy()
    acc = WeightedRegionAccumulator(
        bbox=REGION, mask=None, dtype=np.float32, weighting=weighting, per_pixel_counts=False
    )
    acc.add(box, image * 3, variance, None, weights, True)
    acc.finish(BAD)
    np.testing.assert_array_equal(weights, before)
    np.testing.assert_array_equal(acc.image[0:20, 0:30], 3.0)


def _grid_boxes(drop=None, repeat=None):
    """A full grid of 20-px boxes on a 10-px step over REGION, in grid order (columns first)."""
    boxes = [_box(x0, y0, 20, 20) for x0 in range(0, 70, 10) for y0 in range(10, 60, 10)]
    if drop is not None:
        del boxes[drop]
    if repeat is not None:
        boxes.insert(repeat + 1, boxes[repeat])
    return boxes


def _stitch_window(region, pieces, weighting, careful):
    """A weighted average of ``region`` the way the engine does it: optimistic first, then careful."""
    shape = (region.getHeight(), region.getWidth())
    if not careful:
        acc = WeightedRegionAccumulator(
            bbox=region, mask=np.zeros(shape, np.int32), dtype=np.float32, weighting=weighting, per_pixel_counts=False
        )
        for box, image, variance, mask in pieces:
            acc.add(box, image, variance, mask, None, True)
        if acc.sums_finite():
            acc.finish(BAD)
            return acc
    acc = WeightedRegionAccumulator(bbox=region, mask=np.zeros(shape, np.int32), dtype=np.float32, weighting=weighting)
    for box, image, variance, mask in pieces:
        acc.add(box, image, variance, mask, None, None)
    acc.finish(BAD)
    return acc


@pytest.mark.parametrize("formula", ["correlated", "independent"])
@pytest.mark.parametrize("kind", ["cosine", "linear", "gaussian"])
@pytest.mark.parametrize("case", ["full grid", "missing cell", "repeated box", "NaN pixel", "careful"])
def test_window_pixels_get_the_same_bits_in_any_region(case, kind, formula):
    """Whether the weights are summed from 1-d sums or per pixel depends on the pixel alone.

    The whole region against the same pixels stitched in four uneven parts: the parts far from a
    missing cell, a repeated box or a NaN pixel take the 1-d sums, the whole region the per-pixel
    path for those same pixels, and every pixel must agree bit for bit.
    """
    weighting = make_weighting(kind, variance_formula=formula)
    boxes = _grid_boxes(drop=17 if case == "missing cell" else None, repeat=9 if case == "repeated box" else None)
    pieces = _pieces(np.random.default_rng(4), boxes, nan_at=6 if case == "NaN pixel" else None)
    careful = case == "careful"
    whole = _stitch_window(REGION, pieces, weighting, careful)
    assert np.isfinite(whole.image).sum() > 0.99 * whole.image.size
    x0, y0 = REGION.getBeginX(), REGION.getBeginY()
    for x_cut, y_cut in ((23, 11), (41, 29)):
        for x, w in ((x0, x_cut), (x0 + x_cut, REGION.getWidth() - x_cut)):
            for y, h in ((y0, y_cut), (y0 + y_cut, REGION.getHeight() - y_cut)):
                part = _box(x, y, w, h)
                acc = _stitch_window(part, pieces, weighting, careful)
                here = part.slices(REGION.getBegin())
                for name in ("image", "variance", "mask"):
                    assert getattr(acc, name).tobytes() == np.ascontiguousarray(getattr(whole, name)[here]).tobytes()


def test_window_sums_follow_a_plain_float64_loop():
    """Both ways of summing the weights (full grid, and a missing cell) against float64 numpy."""
    weighting = make_weighting("cosine")
    for drop in (None, 17):
        boxes = _grid_boxes(drop=drop)
        pieces = _pieces(np.random.default_rng(5), boxes)
        acc = _stitch_window(REGION, pieces, weighting, careful=False)
        shape = (REGION.getHeight(), REGION.getWidth())
        sum_w, sum_wx, sum_wabs = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for box, image, _, _ in pieces:
            u = [(np.arange(n) + 0.5) / n for n in (box.getHeight(), box.getWidth())]
            w = np.outer(np.sin(np.pi * u[0]) ** 2, np.sin(np.pi * u[1]) ** 2)
            overlap = box.clipped_to(REGION)
            cell, here = overlap.slices(box.getBegin()), overlap.slices(REGION.getBegin())
            sum_w[here] += w[cell]
            sum_wx[here] += w[cell] * image[cell]
            sum_wabs[here] += w[cell] * np.abs(image[cell])
        covered = sum_w > 0
        error = np.abs(acc.image[covered] - sum_wx[covered] / sum_w[covered]) / (sum_wabs[covered] / sum_w[covered])
        assert error.max() < 1e-6
        assert np.all(np.isnan(acc.image[~covered])) and np.all(acc.mask[~covered] & BAD)
