"""Argument checking for `imagemapreduce.map_reduce` (plain arrays); `imagemapreduce.grid` lays the grid.

Everything here runs before any cell does, so a bad argument fails at once with a message that
names the parameter and the fix, instead of deep inside a Dask worker.

Conventions: the public function takes sizes in array order, ``(rows, cols)``; the grid module
(LSST's) takes ``(x, y)``. `as_pair` is the one place that swaps them.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np

from ._lazy import is_dask_array
from .grid import MAX_PIXELS
from .weights import Weighting, make_weighting

__all__ = [
    "ADJUST_OPTIONS",
    "GEOMETRY_NAMES",
    "REDUCE_CHOICES",
    "as_pair",
    "check_choice",
    "check_func",
    "check_image_array",
    "check_timeout",
    "check_weights",
    "fill_masked",
    "output_dtype",
    "prepare_companions",
    "requested_geometry",
]

#: LSST's ``adjustGridOption`` values.
ADJUST_OPTIONS = ("none", "spacing", "size")
#: Reduce operations that make sense for plain arrays (``coaddPsf`` needs PSFs).
REDUCE_CHOICES = ("copy", "sum", "average", "none", "catalog")
#: Keyword parameters through which ``func`` may ask for its cell's geometry.
GEOMETRY_NAMES = ("cell_box", "expanded_box", "grid_index")


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but cell_size=True is surely a mistake.
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def as_pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """Read an int or a ``(rows, cols)`` pair and return it as ``(x, y)`` for the grid module.

    Raises
    ------
    TypeError
        If ``value`` is neither an int nor a pair of ints.
    ValueError
        If either entry is below ``minimum`` or above `MAX_PIXELS`.
    """
    if _is_int(value):
        rows = cols = int(value)
    elif isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2 and all(_is_int(v) for v in value):
        rows, cols = int(value[0]), int(value[1])
    else:
        raise TypeError(f"{name} must be an int or a (rows, cols) pair of ints, got {value!r}")
    if min(rows, cols) < minimum:
        unit = "pixel" if minimum == 1 else "pixels"
        raise ValueError(f"{name} must be at least {minimum} {unit} along each axis, got {value!r}; increase {name}")
    if max(rows, cols) > MAX_PIXELS:
        # Larger values overflow the int64 box arithmetic; no image is that large anyway.
        raise ValueError(f"{name} must be at most {MAX_PIXELS} pixels along each axis, got {value!r}; decrease {name}")
    return cols, rows


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; raise a `ValueError` listing them otherwise."""
    if value == "coaddPsf" and name == "reduce":
        raise ValueError(
            "reduce='coaddPsf' builds a CoaddPsf from the PSFs of Exposure mapper results; plain arrays "
            "have no PSF. Use ImageMapReduceTask on an Exposure for that, or reduce='copy', 'sum', "
            "'average' or 'none'"
        )
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_image_array(data: Any, name: str = "image") -> Any:
    """Return a 2-d numpy or Dask array for ``data``, raising clear errors for anything else."""
    if hasattr(data, "getBBox") and hasattr(data, "getXY0"):
        raise TypeError(
            f"{name} is an imagemapreduce {type(data).__name__}; map_reduce takes plain arrays. Pass its "
            "pixels (e.g. exposure.image.array), convert it with exposure.to_xarray(), or use "
            "ImageMapReduceTask"
        )
    if not (isinstance(data, np.ndarray) or is_dask_array(data)):
        try:
            data = np.asarray(data)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is the same user error
            raise TypeError(
                f"{name} must be a numpy array, a Dask array or an xarray.DataArray; got {type(data).__name__} ({exc})"
            ) from None
    if data.ndim != 2:
        raise ValueError(
            f"{name} must be 2-d (rows, cols), got shape {tuple(data.shape)}; map one plane at a time "
            "(e.g. image[..., k]) or squeeze length-1 axes"
        )
    if any(np.isnan(n) for n in data.shape):
        raise ValueError(
            f"{name} is a Dask array of unknown shape {tuple(data.shape)} (NaN chunk sizes, e.g. after boolean "
            f"indexing); the grid needs its size: call {name}.compute_chunk_sizes() first"
        )
    if 0 in data.shape:
        raise ValueError(f"{name} is empty (shape {tuple(data.shape)}); there is nothing to map")
    if data.dtype.kind not in "biufc":
        raise TypeError(f"{name} must hold numbers, got dtype {data.dtype}")
    return data


def is_masked_array(data: Any) -> bool:
    """Whether ``data`` is a numpy masked array or a Dask array of masked chunks."""
    if is_dask_array(data):
        return isinstance(getattr(data, "_meta", None), np.ma.MaskedArray)
    return isinstance(data, np.ma.MaskedArray)


def fill_masked(data: Any, name: str = "image") -> tuple[Any, bool]:
    """A masked array's pixels with the masked ones NaN (invalid), and whether ``data`` was masked.

    Anything but a masked array (numpy, or Dask of masked chunks) is returned as it is.

    Raises
    ------
    TypeError
        For a masked array of a dtype that cannot hold NaN (integers, bool).
    """
    if not is_masked_array(data):
        return data, False
    if data.dtype.kind not in "fc":
        raise TypeError(
            f"{name} is a masked array of dtype {data.dtype}: its masked pixels would reach func as NaN, which "
            f"{data.dtype} cannot hold. Convert it first (.astype(np.float64)), or drop the mask (.filled(value))"
        )
    if is_dask_array(data):
        import dask.array as da

        return da.ma.filled(data, np.nan), True
    return data.filled(np.nan), True


def check_func(func: Any, keywords: tuple[str, ...]) -> None:
    """Check that ``func(cell, **{k: ... for k in keywords})`` is a valid call, when we can tell."""
    if not callable(func):
        raise TypeError(f"func must be callable, as func(cell, **kwargs) -> array; got {type(func).__name__}")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins and ufuncs (np.sqrt) may have no signature: just call them
        return
    try:
        signature.bind(None, **dict.fromkeys(keywords))
    except TypeError as exc:
        given = ", ".join(keywords) if keywords else "no keywords"
        raise TypeError(
            f"func cannot be called as func(cell, {given}): {exc}. Give func a first positional parameter "
            "for the cell and a parameter for every companion and func_kwargs entry (or **kwargs)"
        ) from None


def requested_geometry(func: Callable[..., Any]) -> tuple[str, ...]:
    """Return the geometry keywords (`GEOMETRY_NAMES`) that ``func`` names as parameters.

    Only parameters named explicitly count: a ``**kwargs`` catch-all does not ask for geometry,
    so functions that forward their keywords elsewhere are not handed surprises.
    """
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return ()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(n for n in GEOMETRY_NAMES if n in parameters and parameters[n].kind in named)


def check_weights(weights: Any, reduce: str) -> Weighting | None:
    """Return the engine's `Weighting` for ``weights``; None when the plain (LSST) path applies."""
    weighting = make_weighting(weights)
    if weighting.kind == "inverseVariance":
        raise ValueError(
            "weights='inverseVariance' needs a variance plane, and plain arrays have none: pass per-pixel "
            "weights as a function weights(bbox, image, variance), or use ImageMapReduceTask on an Exposure"
        )
    if weighting.is_uniform:
        return None
    if reduce != "average":
        raise ValueError(f"weights={weights!r} only applies to reduce='average'; got reduce={reduce!r}")
    return weighting


def prepare_companions(
    companions: Mapping[str, Any] | None,
    shape: tuple[int, int],
    dims: tuple[Hashable, ...] | None,
    reserved: Mapping[str, str],
) -> dict[str, Any]:
    """Check companion arrays and return them as numpy or Dask arrays, keyed by keyword name.

    ``dims`` are the image's dimension names when it is a DataArray: a companion DataArray with the
    same dimensions in another order is transposed to match (xarray matches dimensions by name).
    ``reserved`` maps names that companions may not take to what already uses them.
    """
    if companions is None:
        return {}
    if not isinstance(companions, Mapping):
        raise TypeError(f"companions must be a mapping {{name: array}}, got {type(companions).__name__}")
    out = {}
    for name, value in companions.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"companion name {name!r} must be a valid Python identifier (it becomes a keyword)")
        if name in reserved:
            raise ValueError(f"companion name {name!r} clashes with {reserved[name]}; rename the companion")
        if dims is not None and hasattr(value, "dims") and set(value.dims) == set(dims):
            value = value.transpose(*dims)
        value = getattr(value, "data", value) if hasattr(value, "dims") else value
        value = check_image_array(value, f"companion {name!r}")
        value, _ = fill_masked(value, f"companion {name!r}")
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"companion {name!r} has shape {tuple(value.shape)} but the image has shape {tuple(shape)}; "
                "companions are cut with the same boxes, so they must match the image pixel for pixel"
            )
        out[name] = value
    return out


def output_dtype(dtype: Any, image_dtype: np.dtype) -> np.dtype:
    """Return the output dtype: as asked, else the input's if it can hold NaN, else float64."""
    if dtype is None:
        return image_dtype if image_dtype.kind in "fc" else np.dtype(np.float64)
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(
            f"dtype must be a numpy floating or complex dtype such as 'float32', got {dtype!r} ({exc})"
        ) from None
    if dtype.kind not in "fc":
        raise ValueError(
            f"dtype must be a floating or complex type (uncovered and invalid pixels are NaN), got {dtype}"
        )
    return dtype


def check_timeout(value: Any, name: str) -> float | None:
    """Return ``value`` as seconds (a finite number above 0), or None (no limit)."""
    if value is None:
        return None
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number of seconds or None (no limit), got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number of seconds above 0, or None for no limit; got {value!r}")
    return float(value)
