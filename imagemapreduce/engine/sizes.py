"""How many bytes the engine's objects hold, as Dask counts them.

A distributed scheduler places a task on the worker that already holds most of its inputs'
bytes, and counts what travels between workers; both read `dask.sizeof.sizeof`. Without these
registrations a batch of cell results or a box of an exposure would count as a few hundred
bytes of Python object, and a region's stitch would go wherever a worker was free rather than
where its cells are. The counts are what pickling would send: the pixels, plus a small fixed
amount for each object.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dask.sizeof import sizeof

from ..image import Exposure, Image, MaskedImage
from ..pipe_base import Struct
from .sources import ArrayCut, LazyCut

__all__ = ["nbytes_of"]

#: Bytes counted for an object besides the arrays it holds.
OBJECT_BYTES = 64


def nbytes_of(obj: Any, depth: int = 4) -> int:
    """The bytes of pixels (and other arrays) that ``obj`` holds, looking ``depth`` levels into containers."""
    if obj is None:
        return 0
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, Image):  # Image and Mask
        return int(np.asarray(obj.array).nbytes) + OBJECT_BYTES
    if isinstance(obj, (Exposure, MaskedImage)):
        return sum(nbytes_of(plane) for plane in (obj.image, obj.mask, obj.variance)) + OBJECT_BYTES
    if depth <= 0:
        return int(sizeof(obj))
    if isinstance(obj, Struct):
        return sum(nbytes_of(value, depth - 1) for value in obj.getDict().values()) + OBJECT_BYTES
    if isinstance(obj, dict):
        return sum(nbytes_of(value, depth - 1) for value in obj.values()) + OBJECT_BYTES
    if isinstance(obj, (list, tuple)):
        return sum(nbytes_of(value, depth - 1) for value in obj) + OBJECT_BYTES
    return int(sizeof(obj))


@sizeof.register(LazyCut)
def _lazy_cut_bytes(cut: LazyCut) -> int:
    height, width = cut.box.getHeight(), cut.box.getWidth()
    parent = cut.image
    planes = (parent.image, parent.mask, parent.variance) if isinstance(parent, (Exposure, MaskedImage)) else (parent,)
    return sum(np.asarray(p.array).itemsize for p in planes) * height * width + OBJECT_BYTES


@sizeof.register(ArrayCut)
def _array_cut_bytes(cut: ArrayCut) -> int:
    return int(cut.array[cut.rows, cut.cols].nbytes) + OBJECT_BYTES


for _type in (Exposure, MaskedImage, Image, Struct):
    sizeof.register(_type)(nbytes_of)
