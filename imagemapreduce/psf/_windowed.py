"""A CoaddPsf whose component weights follow a taper window, as the stitched pixels do."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geom import Box2I, Point2I
from ._base import Psf
from ._coadd import CoaddPsf

if TYPE_CHECKING:
    from ..weights import Weighting

__all__ = ["WindowedCoaddPsf"]


def _rebuild_windowed(psfs, psf_index, bboxes, weights, weighting) -> WindowedCoaddPsf:
    self = WindowedCoaddPsf._from_arrays(psfs, psf_index, bboxes, weights)
    object.__setattr__(self, "_weighting", weighting)
    return self


class WindowedCoaddPsf(CoaddPsf):
    """The PSF of an image stitched with a taper window.

    At each position, each covering component weighs ``weight * window(position in its box)``:
    the same weights the stitcher gave that component's pixels there, so the PSF matches the
    pixels it describes.

    Parameters
    ----------
    components : iterable of ``(psf, bbox, weight)``
        As for `CoaddPsf`.
    weighting : `imagemapreduce.weights.Weighting`
        A window weighting (linear, cosine or gaussian).
    """

    __slots__ = ("_weighting",)
    _weighting: Weighting

    def __init__(self, components: Iterable[tuple[Psf, Box2I, float]], weighting: Any) -> None:
        if not weighting.is_window:
            raise ValueError(f"WindowedCoaddPsf needs a taper window weighting, not {weighting.kind!r}")
        super().__init__(components)
        object.__setattr__(self, "_weighting", weighting)

    def _component_weights(self, covered: np.ndarray, pixel: Point2I) -> np.ndarray:
        window = self._weighting.window_at(self._bboxes[covered], pixel.x, pixel.y)
        return self._weights[covered] * window

    def __eq__(self, other: object) -> bool:
        result = super().__eq__(other)
        if result is not True:
            return result
        return self._weighting == other._weighting  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("WindowedCoaddPsf", self._weighting) + self._key())

    def __reduce__(self) -> tuple[Any, tuple]:
        return (_rebuild_windowed, (self._psfs, self._psf_index, self._bboxes, self._weights, self._weighting))

    def __repr__(self) -> str:
        return super().__repr__().replace("CoaddPsf(", f"WindowedCoaddPsf({self._weighting.kind} window, ", 1)
