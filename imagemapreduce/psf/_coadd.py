"""`CoaddPsf`: the weighted mean of the PSFs of the exposures that went into a coadd."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

import numpy as np

from ..geom import Box2I, Extent2I, Point2D, Point2I
from ..image._image import ImageD
from ._base import Psf, kernel_origin, nearest_pixel

__all__ = ["CoaddPsf"]

# How many component boxes an error message lists before summarising the rest.
_BOXES_IN_MESSAGE = 5


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _rebuild_coadd_psf(
    psfs: tuple[Psf, ...], psf_index: np.ndarray, bboxes: np.ndarray, weights: np.ndarray
) -> CoaddPsf:
    """Unpickle a `CoaddPsf` from its arrays, skipping the per-component validation loop."""
    return CoaddPsf._from_arrays(psfs, psf_index, bboxes, weights)


def _record_field(record: Any, name: str) -> Any:
    """Read ``name`` from a mapping, an attribute, or an afw-style ``getName()`` accessor."""
    if isinstance(record, Mapping):
        return record[name]
    if hasattr(record, name):
        return getattr(record, name)
    getter = getattr(record, "get" + ("BBox" if name == "bbox" else name[:1].upper() + name[1:]), None)
    if getter is not None:
        return getter()
    try:
        return record[name]  # afw table records index by field name
    except (TypeError, KeyError, IndexError):
        raise TypeError(f"record {record!r} has no field {name!r}") from None


class CoaddPsf(Psf):
    """The PSF of a coadd: at each position, the weighted mean of the component PSFs covering it.

    As ``lsst.meas.algorithms.CoaddPsf``, but every component is already in the coadd's pixel
    coordinates (no WCS): a component contributes at ``position`` when its box contains
    ``Point2I(floor(x + 0.5), floor(y + 0.5))``. Component images of different sizes are added on
    the union of their boxes, aligned on the PSF centre, and the sum is normalised to 1.

    Parameters
    ----------
    components : iterable of ``(psf, bbox, weight)``
        Each input's `Psf`, its non-empty `Box2I` in coadd pixels, and its finite weight >= 0.
        The weights must have a positive total.

    Raises
    ------
    ValueError
        If there are no components, a box is empty, a weight is negative or not finite, or the
        weights sum to zero.
    TypeError
        If a component is not a ``(Psf, Box2I, weight)`` triple.

    Notes
    -----
    Components with equal PSFs are evaluated once per position with their weights summed, so ten
    thousand inputs sharing a handful of PSF models cost a handful of evaluations.
    """

    __slots__ = ("_psfs", "_psf_index", "_bboxes", "_weights", "_average")
    _psfs: tuple[Psf, ...]  # the distinct component PSFs
    _psf_index: np.ndarray  # (n,) index into _psfs of each component
    _bboxes: np.ndarray  # (n, 4) inclusive x0, y0, x1, y1 of each component
    _weights: np.ndarray  # (n,)
    _average: Point2D

    def __init__(self, components: Iterable[tuple[Psf, Box2I, float]]) -> None:
        unique: dict[Any, int] = {}
        psfs: list[Psf] = []
        index: list[int] = []
        boxes: list[tuple[int, int, int, int]] = []
        weights: list[float] = []
        for i, component in enumerate(components):
            try:
                psf, bbox, weight = component
            except (TypeError, ValueError):
                raise TypeError(f"CoaddPsf component {i} must be a (psf, bbox, weight) triple") from None
            if not isinstance(psf, Psf):
                raise TypeError(f"CoaddPsf component {i}: psf must be a Psf, not {type(psf).__name__}")
            if not isinstance(bbox, Box2I):
                raise TypeError(f"CoaddPsf component {i}: bbox must be a Box2I, not {type(bbox).__name__}")
            if bbox.isEmpty():
                raise ValueError(f"CoaddPsf component {i}: bbox is empty")
            weight = float(weight)
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"CoaddPsf component {i}: weight must be finite and >= 0, got {weight}")
            # Equal PSFs share one slot; an unhashable third-party Psf is keyed by identity instead.
            try:
                slot = unique.setdefault(psf, len(psfs))
            except TypeError:
                slot = unique.setdefault(("id", id(psf)), len(psfs))
            if slot == len(psfs):
                psfs.append(psf)
            index.append(slot)
            boxes.append((bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY()))
            weights.append(weight)
        if not psfs:
            raise ValueError("CoaddPsf needs at least one (psf, bbox, weight) component")
        self._init_arrays(
            tuple(psfs),
            np.asarray(index, dtype=np.intp),
            np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
            np.asarray(weights, dtype=np.float64),
        )

    @classmethod
    def _from_arrays(
        cls, psfs: tuple[Psf, ...], psf_index: np.ndarray, bboxes: np.ndarray, weights: np.ndarray
    ) -> Self:
        self = cls.__new__(cls)
        self._init_arrays(tuple(psfs), np.array(psf_index), np.array(bboxes), np.array(weights))
        return self

    def _init_arrays(
        self, psfs: tuple[Psf, ...], psf_index: np.ndarray, bboxes: np.ndarray, weights: np.ndarray
    ) -> None:
        total = float(weights.sum())
        if not (math.isfinite(total) and total > 0):
            raise ValueError(f"CoaddPsf weights must have a finite, positive total, got {total}")
        self._set("_psfs", psfs)
        self._set("_psf_index", _readonly(psf_index))
        self._set("_bboxes", _readonly(bboxes))
        self._set("_weights", _readonly(weights))
        # LSST's CoaddPsf averages the component box centres, weighted, at construction.
        centers_x = 0.5 * (bboxes[:, 0] + bboxes[:, 2])
        centers_y = 0.5 * (bboxes[:, 1] + bboxes[:, 3])
        self._set("_average", Point2D(float(weights @ centers_x) / total, float(weights @ centers_y) / total))

    @classmethod
    def from_records(cls, records: Iterable[Any], weight_field: str = "weight") -> CoaddPsf:
        """Build from records carrying a PSF, a box and a weight.

        Parameters
        ----------
        records : iterable
            Mappings with keys ``"psf"``, ``"bbox"`` and ``weight_field``, or objects with those
            attributes (or afw-style ``getPsf()`` / ``getBBox()`` accessors).
        weight_field : `str`
            Name of the weight field, as LSST's ``weightFieldName``.
        """
        return cls((_record_field(r, "psf"), _record_field(r, "bbox"), _record_field(r, weight_field)) for r in records)

    # -- accessors --------------------------------------------------------------------------------
    def getComponentCount(self) -> int:
        """Return the number of input components."""
        return int(self._weights.shape[0])

    def _check_index(self, i: int) -> int:
        n = self.getComponentCount()
        if not 0 <= i < n:
            raise IndexError(f"component index {i} out of range for a CoaddPsf of {n} components")
        return int(i)

    def getPsf(self, i: int) -> Psf:
        """Return the PSF of component ``i``."""
        return self._psfs[self._psf_index[self._check_index(i)]]

    def getBBox(self, i: int) -> Box2I:
        """Return the box of component ``i`` in coadd pixels."""
        x0, y0, x1, y1 = (int(v) for v in self._bboxes[self._check_index(i)])
        return Box2I(Point2I(x0, y0), Point2I(x1, y1))

    def getWeight(self, i: int) -> float:
        """Return the weight of component ``i``."""
        return float(self._weights[self._check_index(i)])

    def getAveragePosition(self) -> Point2D:
        """Return the weight-weighted mean of the component box centres."""
        return self._average

    def getDimensions(self) -> Extent2I:
        """Return the size of the union of the component kernel boxes (the largest kernel image)."""
        union = Box2I()
        for psf in self._psfs:
            dims = psf.getDimensions()
            union.include(Box2I(kernel_origin(dims), dims))
        return union.getDimensions()

    # -- evaluation -------------------------------------------------------------------------------
    def _covering_weights(self, position: Point2D) -> np.ndarray:
        """Return the summed weight of each distinct PSF whose components cover ``position``."""
        pixel = nearest_pixel(position)
        boxes = self._bboxes
        covered = (
            (boxes[:, 0] <= pixel.x) & (pixel.x <= boxes[:, 2]) & (boxes[:, 1] <= pixel.y) & (pixel.y <= boxes[:, 3])
        )
        if not covered.any():
            raise ValueError(
                f"no component PSF covers position ({position.x}, {position.y}); "
                f"the CoaddPsf covers boxes {self._describe_boxes()}"
            )
        weights = np.bincount(
            self._psf_index[covered], weights=self._component_weights(covered, pixel), minlength=len(self._psfs)
        )
        if not weights.sum() > 0:
            raise ValueError(f"the component PSFs covering position ({position.x}, {position.y}) all have zero weight")
        return weights

    def _component_weights(self, covered: np.ndarray, pixel: Point2I) -> np.ndarray:
        """The weights of the covering components at ``pixel`` (a hook for position-dependent weights)."""
        return self._weights[covered]

    def _describe_boxes(self) -> str:
        shown = [str(self.getBBox(i)) for i in range(min(self.getComponentCount(), _BOXES_IN_MESSAGE))]
        rest = self.getComponentCount() - len(shown)
        text = ", ".join(shown)
        if rest > 0:
            x0, y0 = self._bboxes[:, 0].min(), self._bboxes[:, 1].min()
            x1, y1 = self._bboxes[:, 2].max(), self._bboxes[:, 3].max()
            text += f" and {rest} more, within (minimum=({x0}, {y0}), maximum=({x1}, {y1}))"
        return text

    @staticmethod
    def _weighted_mean(images: Sequence[ImageD], weights: Sequence[float]) -> ImageD:
        """Add images on the union of their boxes with weights, and normalise the sum to 1."""
        # Plain integer corners rather than Box2I arithmetic: with thousands of distinct component
        # PSFs the per-image geometry objects would cost more than the pixels.
        corners = np.array([(im.getX0(), im.getY0(), *im.array.shape) for im in images], dtype=np.int64)
        x0, y0 = corners[:, 0].min(), corners[:, 1].min()
        x1, y1 = (corners[:, 0] + corners[:, 3]).max(), (corners[:, 1] + corners[:, 2]).max()
        total = np.zeros((y1 - y0, x1 - x0), dtype=np.float64)
        for image, weight, (ix, iy, ny, nx) in zip(images, weights, corners.tolist(), strict=True):
            total[iy - y0 : iy - y0 + ny, ix - x0 : ix - x0 + nx] += weight * image.array
        # Each component sums to 1, so this only removes rounding; it also keeps the promise for
        # a third-party component that is not normalised.
        total /= total.sum()
        return ImageD(total, xy0=Point2I(int(x0), int(y0)))

    def _combine(self, position: Point2D, kernel: bool) -> ImageD:
        weights = self._covering_weights(position)
        used = np.flatnonzero(weights > 0)
        if kernel:
            images = [self._psfs[k].computeKernelImage(position) for k in used]
        else:
            images = [self._psfs[k].computeImage(position) for k in used]
        return self._weighted_mean(images, weights[used].tolist())

    def _doComputeKernelImage(self, position: Point2D) -> ImageD:
        return self._combine(position, kernel=True)

    def _doComputeImage(self, position: Point2D) -> ImageD:
        return self._combine(position, kernel=False)

    # -- value semantics ------------------------------------------------------------------------
    def _key(self) -> tuple:
        return (self._psfs, self._psf_index.tobytes(), self._bboxes.tobytes(), self._weights.tobytes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Psf):
            return NotImplemented
        if type(other) is not type(self):
            return False
        return (
            self._psfs == other._psfs
            and np.array_equal(self._psf_index, other._psf_index)
            and np.array_equal(self._bboxes, other._bboxes)
            and np.array_equal(self._weights, other._weights)
        )

    def __hash__(self) -> int:
        return hash(("CoaddPsf",) + self._key())

    def __reduce__(self) -> tuple[Any, tuple]:
        return (_rebuild_coadd_psf, (self._psfs, self._psf_index, self._bboxes, self._weights))

    def __repr__(self) -> str:
        return (
            f"CoaddPsf({self.getComponentCount()} components, {len(self._psfs)} distinct PSFs, "
            f"average position ({self._average.x}, {self._average.y}))"
        )
