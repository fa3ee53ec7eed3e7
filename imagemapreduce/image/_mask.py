"""Bit-plane masks with named planes, as ``lsst.afw.image.Mask`` has them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self

import numpy as np

from ..geom import Box2I, Point2I
from ._image import Image

__all__ = [
    "Mask",
    "MaskX",
    "DEFAULT_MASK_PLANES",
    "MAX_MASK_PLANES",
    "lowest_free_bit",
    "pixel_bits",
    "remap_mask_bits",
    "conform_mask_bits",
]

#: afw's default planes, in bit order.
DEFAULT_MASK_PLANES: tuple[str, ...] = (
    "BAD",
    "SAT",
    "INTRP",
    "CR",
    "EDGE",
    "DETECTED",
    "DETECTED_NEGATIVE",
    "SUSPECT",
    "NO_DATA",
)
#: An int32 pixel holds 32 bit planes.
MAX_MASK_PLANES = 32


class Mask(Image):
    """An int32 image whose bits are named planes.

    Each mask owns a plane dictionary (name -> bit index) that starts as afw's default set. Views
    made with ``mask[bbox]`` share the dictionary of their parent, so a plane added to a view is
    known to the parent too; `clone` copies it.

    Parameters
    ----------
    *args
        As for `Image`.
    planeDict : `dict` [`str`, `int`], optional
        The plane dictionary to use; defaults to a copy of afw's default planes.
    """

    _default_dtype = np.dtype(np.int32)

    def __init__(self, *args: Any, planeDict: dict[str, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.array.dtype.kind not in "iu":
            raise TypeError(f"a Mask holds integer bit planes; got pixels of type {self.array.dtype}")
        if planeDict is not None:
            self._planes = planeDict
        elif not hasattr(self, "_planes"):
            self._planes = {name: bit for bit, name in enumerate(DEFAULT_MASK_PLANES)}
        _check_plane_dict(self._planes)

    def _init_plane(self, array: Any, xy0: Point2I, parent: Image | None = None) -> None:
        super()._init_plane(array, xy0, parent)
        if isinstance(parent, Mask):
            self._planes = parent._planes  # views share the parent's planes, as afw masks do

    # -- planes -----------------------------------------------------------------------------
    def addMaskPlane(self, name: str) -> int:
        """Add a plane (if new) and return its bit index."""
        if name in self._planes:
            return self._planes[name]
        free = lowest_free_bit(_bits_of(self._planes))
        if free is None:
            raise RuntimeError(f"cannot add mask plane {name!r}: all {MAX_MASK_PLANES} bits are in use")
        self._planes[name] = free
        return free

    def setMaskPlaneDict(self, planeDict: Mapping[str, int]) -> None:
        """Replace the plane dictionary (name -> bit index); the pixels are not touched.

        The dictionary is updated in place, so views of this mask, which share it, see the new
        planes too. This relabels bits; to move pixel bits to other plane numbers instead, use
        `conformMaskPlanes`.

        Raises
        ------
        ValueError
            If two planes share a bit, or a bit lies outside 0..31.
        """
        planes = dict(planeDict)
        _check_plane_dict(planes)
        self._planes.clear()
        self._planes.update(planes)

    def conformMaskPlanes(self, currentPlaneDict: Mapping[str, int]) -> None:
        """Renumber pixels written with ``currentPlaneDict`` to this mask's planes, by name (afw's method).

        Planes of ``currentPlaneDict`` that this mask lacks are added (`addMaskPlane`); then each
        plane's bits move from its bit in ``currentPlaneDict`` to its bit here. When every plane
        keeps its bit the pixels are left as they are. Otherwise, as in afw, a bit that
        ``currentPlaneDict`` does not name is cleared if this mask names that bit (it would read as
        that plane); unlike afw, other unnamed bits are kept, so that no unnamed bit is lost.
        """
        for name, _ in sorted(currentPlaneDict.items(), key=lambda item: item[1]):
            self.addMaskPlane(name)
        self.array[...] = conform_mask_bits(self.array, currentPlaneDict, self._planes)

    def getUnnamedBitMask(self) -> int:
        """Return the OR of the bits set in some pixel that no plane names.

        Such bits come, for example, from a FITS file whose ``MP_`` cards do not list every bit in
        use. A lazy (Dask) mask is read once to find them.
        """
        return pixel_bits(self.array) & ~_bits_of(self._planes)

    def removeMaskPlane(self, name: str) -> None:
        """Forget a plane's name (its bits stay in the pixels, as in afw)."""
        self.getMaskPlane(name)
        del self._planes[name]

    def getMaskPlane(self, name: str) -> int:
        """Return the bit index of a plane."""
        try:
            return self._planes[name]
        except KeyError:
            raise KeyError(
                f"mask has no plane {name!r}; known planes: {sorted(self._planes)}. Add it with mask.addMaskPlane(name)"
            ) from None

    def getPlaneBitMask(self, names: str | Iterable[str]) -> int:
        """Return the bit mask of one plane or the OR of several."""
        if isinstance(names, str):
            names = [names]
        bits = 0
        for name in names:
            bits |= 1 << self.getMaskPlane(name)
        return bits

    def getMaskPlaneDict(self) -> dict[str, int]:
        """Return a copy of the plane dictionary (name -> bit index)."""
        return dict(self._planes)

    def getNumPlanesUsed(self) -> int:  # noqa: D102
        return len(self._planes)

    def clone(self) -> Self:
        """Return a deep copy, with its own copy of the plane dictionary."""
        return type(self)(self.array.copy(), xy0=self.getXY0(), planeDict=dict(self._planes))

    def subset(self, bbox: Box2I) -> Self:  # noqa: D102
        return type(self)(self, bbox)

    def __ior__(self, other: Any) -> Self:
        self.array |= other.array if isinstance(other, Image) else other
        return self

    def __iand__(self, other: Any) -> Self:
        self.array &= other.array if isinstance(other, Image) else other
        return self

    def __repr__(self) -> str:
        return f"Mask(bbox={self.getBBox()}, planes={self.getMaskPlaneDict()})"


def _bits_of(planes: Mapping[str, int]) -> int:
    """The OR of the bits of the planes in a plane dictionary."""
    bits = 0
    for bit in planes.values():
        bits |= 1 << bit
    return bits


def lowest_free_bit(taken: int) -> int | None:
    """The lowest bit below `MAX_MASK_PLANES` not set in ``taken``; None when all are."""
    return next((bit for bit in range(MAX_MASK_PLANES) if not taken >> bit & 1), None)


def _unsigned(dtype: np.dtype) -> np.dtype:
    # Bit arithmetic on an unsigned view, so that bit 31 of an int32 mask is a bit like the others.
    return np.dtype(f"u{dtype.itemsize}")


def _block_bits(block: np.ndarray) -> np.ndarray:
    return np.array([[pixel_bits(block)]], dtype=np.uint64)


def pixel_bits(array: Any) -> int:
    """The OR of every pixel of an integer mask array (numpy, or Dask: computed), as a non-negative int."""
    if hasattr(array, "__dask_graph__"):
        ones = tuple((1,) * len(c) for c in array.chunks)
        per_block = array.map_blocks(_block_bits, chunks=ones, dtype=np.uint64)
        return pixel_bits(np.asarray(per_block.compute()))
    array = np.asarray(array)
    if array.size == 0:
        return 0
    return int(np.bitwise_or.reduce(array.view(_unsigned(array.dtype)), axis=None))


def remap_mask_bits(array: np.ndarray, moves: Mapping[int, int], drop: int = 0) -> np.ndarray:
    """Move each bit ``s`` of ``moves`` to bit ``moves[s]`` (all at once) and clear the bits in ``drop``.

    Other bits are kept. Returns ``array`` itself when there is nothing to do, else a new array
    of its dtype.
    """
    moves = {src: dst for src, dst in moves.items() if src != dst}
    if not moves and not drop:
        return array
    unsigned = _unsigned(array.dtype)
    width = 8 * unsigned.itemsize
    if max(moves.values(), default=0) >= width:
        raise ValueError(
            f"cannot move mask bits to bit {max(moves.values())}: a {array.dtype} mask holds {width} bits; "
            "use an int32 mask (afw's MaskX)"
        )
    bits = array.view(unsigned)
    cleared = drop
    for src in moves:
        cleared |= 1 << src
    out = bits & unsigned.type(~cleared & ((1 << width) - 1))
    one = unsigned.type(1)
    for src, dst in moves.items():
        out |= ((bits >> unsigned.type(src)) & one) << unsigned.type(dst)
    return out.view(array.dtype)


def conform_mask_bits(array: np.ndarray, source: Mapping[str, int], target: Mapping[str, int]) -> np.ndarray:
    """Pixels written with the planes ``source``, renumbered to ``target`` (which names all of them).

    As `Mask.conformMaskPlanes`: ``array`` itself when every plane keeps its bit; otherwise a new
    array, with the bits that ``source`` leaves unnamed and ``target`` names cleared.
    """
    moves = {bit: target[name] for name, bit in source.items()}
    if all(src == dst for src, dst in moves.items()):
        return array
    return remap_mask_bits(array, moves, drop=_bits_of(target) & ~_bits_of(source))


def _check_plane_dict(planes: dict[str, int]) -> None:
    bits = list(planes.values())
    if len(set(bits)) != len(bits):
        raise ValueError(f"mask plane dictionary gives two planes the same bit: {planes}")
    bad = [b for b in bits if not 0 <= b < MAX_MASK_PLANES]
    if bad:
        raise ValueError(f"mask plane bits must lie in 0..{MAX_MASK_PLANES - 1}, got {bad}")


#: afw's name for the int32 mask type.
MaskX = Mask
