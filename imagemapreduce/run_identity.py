"""What identifies a run's output: content digests of its inputs, and the fingerprint of the whole job.

A resumable store records the fingerprint of the job that wrote it, part by part, so that a
resume can refuse another job and say which part differs. The parts cover everything that
decides the output pixels: the input's content (not its name: a content hash of every plane),
the grid, the mapper class and its configuration, the reducer and weighting, and the arguments
passed to ``run``. How a run is scheduled (scheduler, workers, progress bar) is left out: it
never changes the bits.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .engine.sources import is_dask_array

__all__ = ["content_digest", "array_digest", "run_fingerprint", "fingerprint_differences", "HOW_NOT_WHAT"]

#: Task configuration fields that decide how a run is scheduled, never its output.
HOW_NOT_WHAT = ("scheduler", "numWorkers", "progressBar", "cellTimeout")


def _block_digest(block: np.ndarray) -> bytes:
    block = np.ascontiguousarray(block)
    return hashlib.sha256(str((block.shape, block.dtype.str)).encode() + block.tobytes()).digest()


def array_digest(array: Any, get: Any = None) -> str:
    """A SHA-256 of an array's shape, type and values (a Dask array is hashed block by block).

    ``get`` computes a Dask graph (``get(graph, keys)``); by default Dask's threads. Blocks are
    read, hashed and dropped one after another, so memory stays bounded for inputs larger than
    memory. The digest depends on the chunking of a Dask array, which is the store's own.
    """
    digest = hashlib.sha256(str((tuple(array.shape), np.dtype(array.dtype).str)).encode())
    if not is_dask_array(array):
        digest.update(_block_digest(np.asarray(array)))
        return digest.hexdigest()
    import dask

    blocks = array.to_delayed().ravel().tolist()
    hashed = [dask.delayed(_block_digest, pure=True)(b) for b in blocks]
    values = dask.compute(*hashed, scheduler=get) if get is not None else dask.compute(*hashed, scheduler="threads")
    for value in values:
        digest.update(value)
    return digest.hexdigest()


def content_digest(image_like: Any, get: Any = None) -> str:
    """A digest of an exposure's, masked image's or image's pixels and xy0 (PSF and mask planes too)."""
    parts = [str(image_like.getBBox())]
    for name in ("image", "mask", "variance"):
        plane = getattr(image_like, name, None)
        if plane is not None:
            parts.append(f"{name}:{array_digest(plane.array, get)}")
    if hasattr(image_like, "mask") and hasattr(image_like.mask, "getMaskPlaneDict"):
        parts.append(json.dumps(sorted(image_like.mask.getMaskPlaneDict().items())))
    if hasattr(image_like, "getPsf"):
        parts.append(_psf_identity(image_like.getPsf()))
    if not any(hasattr(image_like, n) for n in ("image", "mask")):  # a bare Image
        parts.append(array_digest(image_like.array, get))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _psf_identity(psf: Any) -> str:
    from .psf._persist import is_persistable, psf_to_dict

    if psf is None:
        return "psf:none"
    if is_persistable(psf):
        return json.dumps(psf_to_dict(psf), sort_keys=True)
    return _argument_digest("psf", psf, None)


def _argument_digest(name: str, value: Any, get: Any) -> str:
    """A digest of one ``run`` argument: pixels by content, anything else by Dask's deterministic tokenize."""
    from dask.base import tokenize

    from .image import Exposure, Image, MaskedImage

    if isinstance(value, (Exposure, MaskedImage, Image)):
        return content_digest(value, get)
    if isinstance(value, np.ndarray) or is_dask_array(value):
        return array_digest(value, get)
    import dask

    try:
        with dask.config.set({"tokenize.ensure-deterministic": True}):
            return tokenize(value)
    except Exception as error:  # noqa: BLE001 - any object may refuse
        raise ValueError(
            f"run argument {name!r} ({type(value).__name__}) has no deterministic identity ({error}), so a "
            "store cannot record which job wrote it; pass numbers, strings, arrays or images"
        ) from None


def run_fingerprint(task: Any, exposure: Any, grid: Any, kwargs: dict[str, Any], get: Any = None) -> dict[str, str]:
    """The parts of a job's identity, each a short string or digest (see the module notes)."""
    settings = task.config.toDict()
    for how_not_what in HOW_NOT_WHAT:
        settings.pop(how_not_what, None)
    mapper = type(task.mapper)
    arguments = {name: _argument_digest(name, value, get) for name, value in sorted(kwargs.items())}
    return {
        "input": content_digest(exposure, get),
        "shape": f"{exposure.getBBox()} {np.dtype(exposure.dtype).name}",
        "grid": hashlib.sha256(grid.cells.tobytes() + grid.expanded.tobytes()).hexdigest(),
        "mapper": f"{mapper.__module__}.{mapper.__qualname__}",
        "configuration": hashlib.sha256(repr(sorted(_flatten(settings))).encode()).hexdigest(),
        "runArguments": hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest(),
    }


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, str]]:
    items = []
    for key, value in settings.items():
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", repr(value)))
    return items


#: How each fingerprint part is named in a refusal.
_PART_NAMES = {
    "input": "the input's pixels, mask planes or PSF",
    "shape": "the input's bbox or pixel type",
    "grid": "the grid of cells",
    "mapper": "the mapper class",
    "configuration": "the task configuration (mapper, reducer, weighting or grid settings)",
    "runArguments": "the arguments passed to run (e.g. offset=, template=)",
}


def fingerprint_differences(recorded: Any, current: dict[str, str]) -> list[str]:
    """The parts in which a recorded fingerprint differs from ``current``, described for a message."""
    if not isinstance(recorded, dict):
        return ["the store records no job fingerprint this version can read"]
    differences = []
    for part, value in current.items():
        if recorded.get(part) != value:
            detail = f" ({recorded.get(part)} vs {value})" if part in ("mapper", "shape") else ""
            differences.append(_PART_NAMES.get(part, part) + detail)
    return differences
