"""Stitching with a taper window: sums in the image's type, band by band, normalised from 1-d sums.

A window weighting (linear, cosine, Gaussian) weights pixel ``(y, x)`` of a result whose box has
the row interval ``r`` and the column interval ``k`` by ``w = wy_r(y) * wx_k(x)``. The output of
a pixel is ``acc / W``: ``acc`` the sum, in grid order and in the accumulation type (float32 for
a float32 image, as LSST's ``average`` sums in the image's type), of ``round(w~ * x)`` over the
valid results covering it, with ``w~`` the float64 weight rounded once to that type; ``W`` the
sum of their weights, found one of two ways, chosen per pixel from the results that cover it:

* **product pixels**: every result covering the pixel is valid there, and those results are all
  the pairings of a set of row intervals ``R`` and of column intervals ``K`` (as everywhere on a
  full regular grid). Then ``W = Sy(y) * Sx(x)`` with ``Sy`` the float64 sum, over ``R`` in sorted
  order, of the 1-d windows, and the output is ``round(acc * round(round(1 / Sy) * round(1 / Sx)))``:
  no weight plane at all, and the factors follow from two 1-d arrays.
* **other pixels** (a result invalid there, a failed or missing cell, boxes repeated):
  ``round(acc / W)`` with ``W`` the float64 sum of the ``w~`` of the valid results, in grid order.

Both depend only on what covers the pixel, never on the region around it, so every pixel gets the
same bits whatever the region size, batching or scheduler. The work is done in bands of rows that
stay in cache while every result adds its part to them, and a band is checked and normalised
while still there; each result costs one multiplication and one addition per pixel. In float32
the result stays within 1e-6 of a float64 computation, relative to the weighted mean of the
results' magnitudes at the pixel (the bound the tests check; at most 3.7e-7 seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .geom import Box2I
from .weights import Weighting

__all__ = ["BAND_BYTES", "WindowSums"]

#: Bytes of one accumulated plane per band: the band stays in cache while every result adds to it.
BAND_BYTES = 1 << 19


def _finite(buffer: np.ndarray) -> bool:
    """Whether every value of a contiguous buffer is finite: one dot product with ones (a NaN or inf shows in it).

    A total that overflows says False for finite values, which only sends the region down the careful path.
    """
    flat = buffer.reshape(-1)
    return bool(np.isfinite(np.dot(flat, _ones(flat.size, flat.dtype.str))))


def _runs(parts: list[_Part]) -> list[tuple[tuple[int, int], list[_Part]]]:
    """The parts in order, grouped into runs of consecutive parts over the same columns.

    Grid order runs down each column of cells first, so on a grid a run is one column of cells.
    """
    runs: list[tuple[tuple[int, int], list[_Part]]] = []
    for part in parts:
        if runs and runs[-1][0] == part.cols:
            runs[-1][1].append(part)
        else:
            runs.append((part.cols, [part]))
    return runs


@lru_cache(maxsize=16)
def _factor_plane(rows: bytes, cols: bytes, dtype: str) -> np.ndarray:
    """``round(row factor * column factor)`` over a band, kept: a grid's bands repeat a few patterns."""
    plane = np.multiply.outer(np.frombuffer(rows, dtype), np.frombuffer(cols, dtype))
    plane.flags.writeable = False
    return plane


@lru_cache(maxsize=8)
def _ones(size: int, dtype: str) -> np.ndarray:
    ones = np.ones(size, dtype)
    ones.flags.writeable = False
    return ones


@dataclass
class _Part:
    """One result's part of the region (views into its planes), in the order results were added."""

    rows: tuple[int, int]  # region rows, end excluded
    cols: tuple[int, int]
    window: np.ndarray  # the window over the part, in the accumulation type
    variance_factor: np.ndarray | None  # the window, or its square for independent errors
    image: np.ndarray
    variance: np.ndarray | None
    valid: np.ndarray | None  # None: every pixel valid
    box: tuple[int, int, int, int]  # (y0, height, x0, width) of the result's whole box


class WindowSums:
    """The weighted sums of one region for a window weighting, normalised when they are complete.

    Parameters
    ----------
    weighting : `Weighting`
        A window weighting (`Weighting.is_window`).
    bbox : `Box2I`
        The region.
    dtype : numpy dtype
        The output's pixel type; the sums are kept in ``weighting.accumulation_dtype(dtype)``.
    image, variance : `numpy.ndarray` or `None`
        The output planes of the region (variance None without one). Sums are kept in them
        when they have the accumulation type, and the result is written to them.
    """

    def __init__(
        self, weighting: Weighting, bbox: Box2I, dtype: Any, image: np.ndarray, variance: np.ndarray | None
    ) -> None:
        self.weighting = weighting
        self.bbox = bbox
        self.shape = (bbox.getHeight(), bbox.getWidth())
        self.dtype = weighting.accumulation_dtype(dtype)
        self.out = (image, variance)
        # Every row of the sums is written band by band (no zeroing first); a product region is
        # normalised band by band straight into the output, so only the other kind needs them whole.
        self.sums = tuple(
            None if plane is None else plane if plane.dtype == self.dtype else np.empty(self.shape, self.dtype)
            for plane in (image, variance)
        )
        self.independent = weighting.variance_formula == "independent"
        self.parts: list[_Part] = []
        self.finite: bool | None = None
        #: Pixels whose weights sum to zero (set by `run`; None where there are none).
        self.zero: np.ndarray | None = None

    def add(
        self, bbox: Box2I, overlap: Box2I, image: np.ndarray, variance: np.ndarray | None, valid: np.ndarray | None
    ) -> None:
        """Record a result's part over ``overlap`` (``image``, ``variance``: its planes there).

        ``valid``: which of its pixels count (None: all). Nothing is summed before `run`.
        """
        if self.finite is not None:
            raise RuntimeError("cannot add a result to a region whose weighted sums are already complete")
        shape = (bbox.getHeight(), bbox.getWidth())
        cell = overlap.slices(bbox.getBegin())
        here = overlap.slices(self.bbox.getBegin())
        window = self.weighting.window_plane(shape, self.dtype)[cell]
        factor = None
        if variance is not None:
            factor = self.weighting.window_plane(shape, self.dtype, squared=True)[cell] if self.independent else window
        box = (bbox.getBeginY(), bbox.getHeight(), bbox.getBeginX(), bbox.getWidth())
        rows, cols = here
        self.parts.append(
            _Part((rows.start, rows.stop), (cols.start, cols.stop), window, factor, image, variance, valid, box)
        )

    def run(self, count: np.ndarray | None) -> bool:
        """Sum every part and normalise (once); whether the sums were all finite (checked band by band).

        ``count``: the count plane of valid contributions, where one is kept.
        """
        if self.finite is not None:
            return self.finite
        with np.errstate(over="ignore", invalid="ignore"):  # overflow and inf - inf are answers here
            if self._is_product():
                self.finite = self._sweep(self._line_factors())
            else:
                weights = np.zeros(self.shape)
                self.finite = self._sweep(None, weights)
                self._normalise_per_pixel(weights, count)
        self.parts = []  # the results' planes are no longer needed
        return self.finite

    def _is_product(self) -> bool:
        """Whether every part is valid and the parts are all the pairings of their row and column intervals."""
        if any(p.valid is not None for p in self.parts):
            return False
        boxes = {p.box for p in self.parts}
        rows, cols = {(b[0], b[1]) for b in boxes}, {(b[2], b[3]) for b in boxes}
        return len(boxes) == len(self.parts) == len(rows) * len(cols)

    def _line_sums(self, axis: int) -> np.ndarray:
        """``Sy`` (axis 0) or ``Sx`` (axis 1) over the region: 1-d windows summed, intervals in sorted order."""
        begin = self.bbox.getBeginY() if axis == 0 else self.bbox.getBeginX()
        total = np.zeros(self.shape[axis])
        for start, length in sorted({(p.box[2 * axis], p.box[2 * axis + 1]) for p in self.parts}):
            a, b = max(start - begin, 0), min(start + length - begin, self.shape[axis])
            if a < b:
                total[a:b] += self.weighting.window_line(length)[a + begin - start : b + begin - start]
        return total

    def _factors(self, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The image and variance factors ``round(1 / S)`` (``1 / S**2`` for independent errors); 0 where ``S`` is 0."""
        some = sums > 0
        image = np.divide(1.0, sums, out=np.zeros_like(sums), where=some)
        variance = np.divide(1.0, sums * sums, out=np.zeros_like(sums), where=some) if self.independent else image
        return image.astype(self.dtype), variance.astype(self.dtype)

    def _line_factors(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The row and column factors of a product region; records its zero-weight pixels."""
        rows, cols = self._line_sums(0), self._line_sums(1)
        some_rows, some_cols = rows > 0, cols > 0
        # None: no pixel without weight (the usual case), known without a plane
        self.zero = None if some_rows.all() and some_cols.all() else np.logical_or.outer(~some_rows, ~some_cols)
        return self._factors(rows), self._factors(cols)

    def _sweep(self, line_factors, weights: np.ndarray | None = None) -> bool:
        """Add every part band by band; check each band, and normalise it when ``line_factors`` are given.

        A band is summed in a contiguous buffer (numpy's loops are several times faster on
        contiguous operands than on strided views) and copied into the region's planes when it is
        complete.
        """
        height, width = self.shape
        rows = max(1, BAND_BYTES // max(1, width * self.dtype.itemsize))
        buffers = [None if s is None else np.empty((rows, width), self.dtype) for s in self.sums]
        widest = max((p.cols[1] - p.cols[0] for p in self.parts), default=0)
        scratch = np.empty(rows * widest, self.dtype)
        columns = [None if s is None else np.empty(rows * widest, self.dtype) for s in self.sums]
        runs = _runs(self.parts)
        finite = True
        for b0 in range(0, height, rows):
            b1 = min(b0 + rows, height)
            bands = []
            for buffer in buffers:
                if buffer is not None:
                    buffer[: b1 - b0].fill(0)
                bands.append(None if buffer is None else buffer[: b1 - b0])
            for cols, parts in runs:
                active = [(p, max(p.rows[0], b0), min(p.rows[1], b1)) for p in parts]
                active = [(p, r0, r1) for p, r0, r1 in active if r0 < r1]
                if len(active) == 1:
                    part, r0, r1 = active[0]
                    self._add_rows(part, r0, r1, (b0, 0), bands, scratch, weights)
                elif active:
                    self._add_run(active, cols, b0, bands, columns, scratch, weights)
            finite = finite and all(_finite(band) for band in bands if band is not None)
            if line_factors is not None:
                self._normalise_band(b0, b1, bands, line_factors)
            else:
                for sums, band in zip(self.sums, bands):
                    if sums is not None:
                        sums[b0:b1] = band
        return finite

    def _add_run(
        self,
        active: list,
        cols: tuple[int, int],
        b0: int,
        bands: list,
        columns: list,
        scratch: np.ndarray,
        weights: np.ndarray | None,
    ) -> None:
        """Add parts that share their columns through a contiguous copy of those columns of the bands.

        The same additions, pixel by pixel and in the same order, as adding each part to the
        bands; but only the copy in and out is strided, not every part's addition.
        """
        lo, hi = min(r0 for _, r0, _ in active), max(r1 for _, _, r1 in active)
        width = cols[1] - cols[0]
        here = (slice(lo - b0, hi - b0), slice(*cols))
        views = []
        for band, buffer in zip(bands, columns):
            view = None if band is None else buffer[: (hi - lo) * width].reshape(hi - lo, width)
            if view is not None:
                np.copyto(view, band[here])
            views.append(view)
        for part, r0, r1 in active:
            self._add_rows(part, r0, r1, (lo, cols[0]), views, scratch, weights)
        for band, view in zip(bands, views):
            if band is not None:
                band[here] = view

    def _add_rows(
        self,
        part: _Part,
        r0: int,
        r1: int,
        origin: tuple[int, int],
        planes: list,
        scratch: np.ndarray,
        weights: np.ndarray | None,
    ) -> None:
        """Add the rows ``r0`` to ``r1`` (region rows) of one part to ``planes``, whose pixel (0, 0) is ``origin``."""
        rows = slice(r0 - part.rows[0], r1 - part.rows[0])
        here = (slice(r0 - origin[0], r1 - origin[0]), slice(part.cols[0] - origin[1], part.cols[1] - origin[1]))
        where = True if part.valid is None else part.valid[rows]
        window = part.window[rows]
        product = scratch[: window.size].reshape(window.shape)
        image, variance = planes
        np.multiply(window, part.image[rows], out=product)
        np.add(image[here], product, out=image[here], where=where)
        if variance is not None:
            # a region with a variance plane is given every result's variance (see `add`)
            assert part.variance_factor is not None and part.variance is not None
            np.multiply(part.variance_factor[rows], part.variance[rows], out=product)
            np.add(variance[here], product, out=variance[here], where=where)
        if weights is not None:
            plane = weights[r0:r1, slice(*part.cols)]
            np.add(plane, window, out=plane, where=where)

    def _normalise_band(self, b0: int, b1: int, bands: list, line_factors) -> None:
        """Multiply a band of a product region by its factors (``round(row * column)``), into the output."""
        (row_image, row_variance), (col_image, col_variance) = line_factors
        for out, band, rows, cols in zip(self.out, bands, (row_image, row_variance), (col_image, col_variance)):
            if band is None:
                continue
            assert out is not None  # a plane has a band exactly when it is there
            # in place in the contiguous band, then one copy: arithmetic on strided views is slow
            np.multiply(band, _factor_plane(rows[b0:b1].tobytes(), cols.tobytes(), self.dtype.str), out=band)
            out[b0:b1] = band

    def _normalise_per_pixel(self, weights: np.ndarray, count: np.ndarray | None) -> None:
        """Normalise a region that is not a product: product pixels from 1-d sums, the others by ``weights``."""
        rows, row_count = self._plane_sums(0)
        cols, col_count = self._plane_sums(1)
        covering, distinct = self._cover_counts()
        product = (covering > 0) & (distinct == covering) & (covering == row_count * col_count)
        if count is not None:
            product &= count == covering
        row_factors, col_factors = self._factors(rows), self._factors(cols)
        some = weights > 0
        self.zero = np.where(product, (rows == 0) | (cols == 0), ~some)
        norm = weights * weights if self.independent else weights
        for k, (out, sums) in enumerate(zip(self.out, self.sums)):
            if sums is None:
                continue
            assert out is not None  # a plane has sums exactly when it is there
            by_lines = sums * (row_factors[k] * col_factors[k])  # as `_normalise_band` does
            direct = np.divide(sums, weights if k == 0 else norm, out=np.zeros(self.shape), where=some)
            np.copyto(out, np.where(product, by_lines, direct.astype(self.dtype)))

    def _plane_sums(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel: the sum of the 1-d windows (axis 0: rows) of the distinct intervals covering it, and their number.

        The intervals are added in sorted order, each where one of its results covers the pixel, so
        a pixel whose covering results form a product gets exactly `_line_sums`'s value.
        """
        height, width = self.shape
        begin = self.bbox.getBeginY() if axis == 0 else self.bbox.getBeginX()
        groups: dict[tuple[int, int], np.ndarray] = {}
        for p in self.parts:  # each interval's cover across the other axis
            key = (p.box[2 * axis], p.box[2 * axis + 1])
            across = groups.setdefault(key, np.zeros(width if axis == 0 else height, bool))
            across[slice(*(p.cols if axis == 0 else p.rows))] = True
        total, number = np.zeros(self.shape), np.zeros(self.shape, np.int32)
        for (start, length), across in sorted(groups.items()):
            a, b = max(start - begin, 0), min(start + length - begin, self.shape[axis])
            line = self.weighting.window_line(length)[a + begin - start : b + begin - start]
            if axis == 0:
                np.add(total[a:b], line[:, None], out=total[a:b], where=across[None, :])
                number[a:b] += across[None, :]
            else:
                np.add(total[:, a:b], line[None, :], out=total[:, a:b], where=across[:, None])
                number[:, a:b] += across[:, None]
        return total, number

    def _cover_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel: how many parts cover it, and how many distinct boxes."""
        covering, distinct = np.zeros(self.shape, np.int32), np.zeros(self.shape, np.int32)
        seen = set()
        for p in self.parts:
            here = (slice(*p.rows), slice(*p.cols))
            covering[here] += 1
            if p.box not in seen:
                seen.add(p.box)
                distinct[here] += 1
        return covering, distinct
