"""Mask planes reconciled by name when cell results are stitched, as afw's ``Mask`` does.

A mapper may add mask planes of its own, and each cell's result carries its plane dictionary.
The output mask's dictionary is the union of the input's (with the reducer's bad planes, see
`PlaneLayout`) and every result's, and each result's bits are moved to the output's bit numbers
for their names before they are ORed in. ORing bits by number instead would put a new plane on
whatever plane the output has at that bit (typically ``INVALID_MAPREDUCE``) and lose its name.

Regions are stitched independently. Each gives the new planes it sees the lowest free bits, in
a fixed order: by the first cell (in grid order) that has the plane, then by its bit there.
Where every cell adds the same planes (or none) every region picks the same bits. Where cells
add different planes, two regions may number them differently: `merge_new_planes` works out
the output's numbering from what each region reports, and `bit_moves` the renumbering that
brings such a region in line afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .image import Mask
from .image._mask import MAX_MASK_PLANES, conform_mask_bits, lowest_free_bit

__all__ = ["NewPlane", "PlaneLayout", "region_planes", "conform_piece_mask", "merge_new_planes", "bit_moves"]


class NewPlane(NamedTuple):
    """A plane that a cell's result has and the output did not, as one region numbered it."""

    #: (cell index, the plane's bit in that cell): the first cell of the region that has it.
    first: tuple[int, int]
    #: The bit the region gave it.
    bit: int


@dataclass(frozen=True)
class PlaneLayout:
    """The output mask's planes before any cell has run.

    Parameters
    ----------
    planes : mapping of `str` to `int`
        The output's named planes: the input's and the reducer's bad planes.
    reserved : `int`
        Bits set in the input's pixels that no plane names (`Mask.getUnnamedBitMask`): they are
        never given to a new plane, so that an unnamed bit stays unnamed.
    """

    planes: Mapping[str, int]
    reserved: int = 0
    _taken: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        taken = self.reserved
        for bit in self.planes.values():
            taken |= 1 << bit
        object.__setattr__(self, "_taken", taken)

    @classmethod
    def of(cls, mask: Mask, reserved: int | None = None) -> PlaneLayout:
        """The layout of ``mask``'s planes; ``reserved`` defaults to its unnamed pixel bits (read once)."""
        return cls(mask.getMaskPlaneDict(), mask.getUnnamedBitMask() if reserved is None else reserved)

    def with_planes(self, names: Iterable[str], origin: str = "") -> dict[str, int]:
        """The planes plus each of ``names`` not among them, in order, on the lowest free bit.

        A free bit is one no plane names and no input pixel sets unnamed (``reserved``).
        ``origin`` says where the new planes come from, for the error.

        Raises
        ------
        RuntimeError
            If the 32 bits of the mask do not hold them all.
        """
        planes, taken = dict(self.planes), self._taken
        for name in names:
            if name in planes:
                continue
            bit = lowest_free_bit(taken)
            if bit is None:
                raise RuntimeError(
                    f"cannot add mask plane {name!r}{origin}: all {MAX_MASK_PLANES} bits of the output mask are "
                    f"taken (planes {sorted(planes)}; unnamed bits set in the input: {self.reserved:#x}). Have the "
                    "mapper remove the planes it does not need (mask.removeMaskPlane) or clear unused input bits"
                )
            planes[name] = bit
            taken |= 1 << bit
        return planes


def region_planes(
    layout: PlaneLayout, pieces: Sequence[tuple[int, Mapping[str, int] | None]]
) -> tuple[dict[str, int], dict[str, NewPlane]]:
    """The planes of one region: the layout's, and the new planes of its pieces on free bits.

    ``pieces`` are ``(cell index, plane dictionary)`` in grid order (a dictionary may be None: a
    piece without a mask). Returns the region's plane dictionary and its new planes.
    """
    order: dict[str, tuple[int, int]] = {}
    for index, planes in pieces:
        for name, bit in sorted((planes or {}).items(), key=lambda item: item[1]):
            if name not in layout.planes and name not in order:
                order[name] = (index, bit)
    if not order:
        return dict(layout.planes), {}
    names = sorted(order, key=order.__getitem__)
    planes = layout.with_planes(names, f" (set by the mapper in cell {order[names[0]][0]})")
    return planes, {name: NewPlane(where, planes[name]) for name, where in order.items()}


def conform_piece_mask(
    mask: np.ndarray | None, piece_planes: Mapping[str, int] | None, planes: Mapping[str, int]
) -> np.ndarray | None:
    """A piece's mask renumbered to the region's ``planes`` (itself when nothing moves)."""
    if mask is None or not piece_planes:
        return mask
    return conform_mask_bits(mask, piece_planes, planes)


def merge_new_planes(layout: PlaneLayout, regions: Iterable[Mapping[str, NewPlane]]) -> dict[str, int]:
    """The output's planes: the layout's and every region's new planes, numbered in the regions' order."""
    first: dict[str, tuple[int, int]] = {}
    for new in regions:
        for name, plane in new.items():
            first[name] = min(first.get(name, plane.first), plane.first)
    names = sorted(first, key=lambda name: first[name])
    origin = f" (set by the mapper in cell {first[names[0]][0]})" if names else ""
    return layout.with_planes(names, origin)


def bit_moves(new: Mapping[str, NewPlane], planes: Mapping[str, int]) -> dict[int, int]:
    """The moves (region bit -> output bit) that renumber a region's new planes to ``planes``."""
    return {plane.bit: planes[name] for name, plane in new.items() if plane.bit != planes[name]}
