"""`map_reduce`: tile a plain 2-d array (numpy, Dask or xarray) into bordered cells, map, stitch.

This is `ImageMapReduceTask` without the Exposure: the same LSST grid, the same per-cell Dask
tasks and the same bitwise-reproducible stitching, for a function of an array. There is no mask
and no variance plane (none is made), so the only validity rule is LSST's with the variance left
out: a pixel where ``func`` returns NaN does not count.

Sizes are in array order, ``(rows, cols)``, as numpy users write shapes. Boxes handed to ``func``
are LSST `Box2I` in array indices, with x the column and y the row: ``array[box.slices()]`` is
the box's pixels.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._arrays_args import (
    ADJUST_OPTIONS,
    GEOMETRY_NAMES,
    REDUCE_CHOICES,
    as_pair,
    check_choice,
    check_func,
    check_image_array,
    check_timeout,
    check_weights,
    fill_masked,
    output_dtype,
    prepare_companions,
    requested_geometry,
)
from .catalog import CatalogCell, reduce_catalog
from .engine import (
    ArrayPlan,
    FailurePolicy,
    check_cells_per_task,
    choose_scheduler,
    execute_cells,
    execute_stitch,
    is_dask_array,
    lazy_catalog,
    lazy_stitch,
)
from .engine.progress import progress_bar
from .grid import array_bbox, regular_grid, uncovered_pixels

__all__ = ["map_reduce"]


def map_reduce(
    image: Any,
    func: Callable[..., Any],
    *,
    cell_size: int | tuple[int, int],
    grid_step: int | tuple[int, int] | None = None,
    border: int | tuple[int, int] | str = 0,
    adjust: str = "none",
    reduce: str = "average",
    weights: Any = "uniform",
    scheduler: Any = None,
    num_workers: int | None = None,
    compute: bool | None = None,
    companions: Mapping[str, Any] | None = None,
    func_kwargs: Mapping[str, Any] | None = None,
    region_size: int = 512,
    force_even_sized: bool = False,
    dtype: Any = None,
    cell_timeout: float | None = None,
    cells_per_task: int | str = "auto",
    progress: bool | Callable[[int, int], None] = False,
) -> Any:
    """Apply ``func`` to every cell of a grid over a 2-d array and stitch the results.

    The image is tiled with LSST's grid of cells; each cell is grown by ``border`` pixels (clipped
    to the image) into its *expanded cell*, and ``func`` runs on each expanded cell as its own Dask
    task. The core of each answer (the cell without its border) is stitched back into a new image.
    The output is bitwise identical whatever the scheduler, worker count or ``region_size``.

    **All sizes are in array order, (rows, cols)** -- ``cell_size=(32, 64)`` means cells 32 rows
    high and 64 columns wide. (LSST's config, and `ImageMapReduceTask`, use (x, y) instead.)

    Parameters
    ----------
    image : `numpy.ndarray`, `numpy.ma.MaskedArray`, `dask.array.Array` or `xarray.DataArray`
        The 2-d input. Anything ``numpy.asarray`` accepts is taken as numpy. The masked pixels of
        a (floating-point) masked array reach ``func`` as NaN, and the result is then a masked
        array (see Notes); a masked array of integers is refused.
    func : callable
        ``func(cell, **kwargs) -> array``. ``cell`` is the expanded cell as a read-only,
        C-contiguous numpy array (a compact copy of a box of an in-memory image: copy it again
        before writing into it). It returns an array of numbers the shape of ``cell`` (its core
        is kept) or the shape of the cell itself, where NaN, or a masked pixel of a masked array,
        marks an invalid pixel; with ``reduce="none"``, anything. Besides ``func_kwargs``
        and ``companions`` it receives, if it names them as parameters (not via ``**kwargs``):
        ``cell_box`` and ``expanded_box`` (`Box2I` in array indices: x = column, y = row) and
        ``grid_index`` (``(ix, iy)``, the cell's column and row in the grid).
    cell_size : `int` or (`int`, `int`)
        Cell size in pixels, (rows, cols); at least 1.
    grid_step : `int` or (`int`, `int`), optional
        Distance between cell starts, (rows, cols). Defaults to ``cell_size``: the cells tile the
        image exactly. Smaller steps overlap cells; larger ones leave gaps.
    border : `int` or (`int`, `int`)
        Pixels added on each side of a cell to make its expanded cell, (rows, cols); at least 0.
        Make it at least the reach of ``func`` (e.g. 4 sigma for a Gaussian filter with
        ``truncate=4``) so that cores match a whole-image computation. ``"auto"`` takes the
        reach ``func`` declares as a ``reach`` attribute (pixels, an int or (rows, cols)).
    adjust : {'none', 'spacing', 'size'}
        LSST's ``adjustGridOption``: keep sizes and step (``'none'``, cells at the far edges are
        clipped); re-space the cells to fit (``'spacing'``, overlapping); or resize them to the step
        plus one pixel (``'size'``).
    reduce : {'average', 'copy', 'sum', 'none', 'catalog'}
        How overlapping cores combine: mean of the valid values, the last valid value in grid
        order, their sum, or no stitching (return the per-cell results as a list in grid order).
        ``'catalog'``: ``func`` returns a table per cell (an astropy ``Table``, a pandas
        ``DataFrame`` or a dict of equal-length 1-d arrays) with float columns ``x`` (column) and
        ``y`` (row) in the expanded cell's array; the result is one astropy ``Table`` with ``x``,
        ``y`` in the image's frame, a ``grid_index`` column, and each row kept only by the cell
        that owns its pixel (see Notes), so a source detected by several cells appears once.
    weights : `str`, callable or `Weighting`
        Per-pixel weights for ``reduce="average"``: ``'uniform'`` (LSST), ``'linear'``,
        ``'cosine'`` or ``'gaussian'`` taper windows over each cell, or ``weights(bbox, image,
        variance) -> weights`` (variance is None here). Inverse-variance needs an Exposure.
    scheduler : `str`, ``distributed.Client``, address or `None`
        Where cells run: ``'synchronous'``, ``'threads'``, ``'processes'``, ``'distributed'``, a
        client, ``'tcp://host:port'``; None for Dask's current default. Not allowed when the
        result is lazy (compute it with ``result.compute(scheduler=...)`` instead).
    num_workers : `int`, optional
        Threads or processes for the local schedulers.
    compute : `bool`, optional
        None: return the kind of array given (numpy computed now, Dask lazy). True: always a
        computed numpy result. False: always a lazy Dask result.
    companions : mapping of `str` to array, optional
        Extra arrays of the image's shape, cut with the same expanded boxes and passed to ``func``
        by keyword: ``companions={"weight": w}`` calls ``func(cell, weight=w_cell)``.
    func_kwargs : mapping, optional
        Constant keyword arguments for ``func``.
    region_size : `int`
        Side of the output regions stitched as separate tasks (the chunks of a lazy result).
    force_even_sized : `bool`
        Grow odd-sized boxes by one pixel, as LSST's ``forceEvenSized``.
    dtype : numpy dtype, optional
        Output type: floating or complex. Default: the input's, or float64 for integer input.
    cell_timeout : `float`, optional
        Seconds ``func`` may run on one cell (None: no limit). A cell past it fails the run with a
        `CellFailure` saying it timed out. Python cannot stop a thread, so the late call is
        abandoned, not stopped: it keeps running in the background until it returns or its
        process ends. With a timeout each call runs in a helper thread; without, at no extra cost.
    cells_per_task : ``"auto"`` or `int`
        How many neighbouring cells one Dask task runs, one after another (each cell still on its
        own, with its own failure and timing): ``"auto"`` packs about 100 ms of estimated work per
        task on a cluster or worker processes (10 ms on threads), keeping at least 4 tasks per
        worker; an int sets the most cells per task, ``1`` one task per cell. Never changes the
        output.
    progress : `bool` or callable
        True draws a bar of the cells done on stderr (redrawn on a terminal, a line every few
        seconds elsewhere); a callable is called as ``progress(cells_done, cells_total)`` as
        results come back. Ignored for a lazy result, which runs when it is computed.

    Returns
    -------
    result : array or `list`
        Stitched image of the input's shape and kind: `numpy.ndarray`, lazy `dask.array.Array`
        (chunks are ``region_size`` squares), or `xarray.DataArray` with the input's dims, coords,
        name and attrs; for a masked array, a masked array (numpy or Dask) masking the NaN pixels.
        For ``reduce="none"``, a computed list of ``func``'s results. For ``reduce="catalog"``,
        an astropy ``Table`` (``meta`` counts the rows dropped: ``dropped_outside_cores``,
        ``dropped_duplicates``), or, when the result is lazy, a ``dask.dataframe.DataFrame``
        with one partition per task of cells.

    Raises
    ------
    TypeError, ValueError
        For bad arguments, before anything runs; the message names the parameter.
    imagemapreduce.CellFailure
        If ``func`` raises on a cell; the message names the cell and its boxes.

    Notes
    -----
    NaN marks invalid pixels (LSST's rule with no variance): where ``func`` returns NaN, that cell
    does not contribute -- ``copy`` keeps the previous cell's value, ``average`` leaves it out of
    the mean, ``sum`` adds nothing. A pixel valid in no cell is NaN (``copy``, ``average``) or 0
    (``sum``). NaN in the input reaches ``func`` unchanged. A pixel covered by no cell at all (gaps
    from a large ``grid_step``, or a one-pixel corner cell, which LSST's grid drops) is treated the
    same way, and a `UserWarning` says how many there are.

    Catalog ownership (``reduce="catalog"``): a row belongs to the cell whose core contains its
    pixel ``(round(x), round(y))`` (halves round up); where cores overlap, to the one whose centre
    is nearest, ties to the first in grid order. Every pixel has one owner, so a source found by
    several cells at the same position is kept once; a row whose pixel lies in no core is
    dropped and counted. Give a border of at least the detector's reach, so that the owning cell
    sees all that its measurement needs (:doc:`/detection`).

    A masked input is the same as its data with the masked pixels NaN; the result masks the
    pixels valid in no cell (NaN). ``reduce="sum"`` is refused for it: such pixels sum to 0 there,
    so the result could not tell them from a zero sum.

    Examples
    --------
    >>> import numpy as np
    >>> from imagemapreduce import map_reduce
    >>> image = np.arange(12.0).reshape(3, 4)
    >>> map_reduce(image, lambda cell: cell * 2, cell_size=2, scheduler="synchronous")
    array([[ 0.,  2.,  4.,  6.],
           [ 8., 10., 12., 14.],
           [16., 18., 20., 22.]])

    A cell-dependent function, with the geometry it asks for:

    >>> def label(cell, grid_index):
    ...     return np.full(cell.shape, 10 * grid_index[0] + grid_index[1])
    >>> map_reduce(np.zeros((4, 6)), label, cell_size=(2, 3), reduce="copy", scheduler="sync")
    array([[ 0.,  0.,  0., 10., 10., 10.],
           [ 0.,  0.,  0., 10., 10., 10.],
           [ 1.,  1.,  1., 11., 11., 11.],
           [ 1.,  1.,  1., 11., 11., 11.]])
    """
    template = image if _is_data_array(image) else None
    if template is not None and template.ndim != 2:
        raise ValueError(f"image must be 2-d, got a DataArray with dims {template.dims}; select one plane first")
    data = check_image_array(template.data if template is not None else image)
    data, masked = fill_masked(data)
    if not callable(func):
        raise TypeError(f"func must be callable, as func(cell, **kwargs) -> array; got {type(func).__name__}")
    reduce = check_choice(reduce, "reduce", REDUCE_CHOICES)
    if masked and reduce == "sum":
        raise ValueError(
            "reduce='sum' of a masked array would give 0, not a masked pixel, where no cell has a valid value; "
            "use reduce='average' or 'copy', or pass image.filled(np.nan) for plain sums"
        )
    adjust = check_choice(adjust, "adjust", ADJUST_OPTIONS)
    cell_xy = as_pair(cell_size, "cell_size", 1)
    step_xy = cell_xy if grid_step is None else as_pair(grid_step, "grid_step", 1)
    border_xy = as_pair(_auto_border(func) if isinstance(border, str) and border == "auto" else border, "border", 0)
    weighting = check_weights(weights, reduce)
    kwargs = _check_func_kwargs(func_kwargs)
    geometry = requested_geometry(func)
    reserved = {name: "a geometry keyword" for name in GEOMETRY_NAMES}
    reserved.update({name: "a func_kwargs entry" for name in kwargs})
    clash = sorted(set(geometry) & set(kwargs))
    if clash:
        raise ValueError(f"func_kwargs {clash} clash with the geometry keywords func asks for; rename them")
    extra = prepare_companions(companions, data.shape, template.dims if template is not None else None, reserved)
    check_func(func, (*kwargs, *extra, *geometry))
    if not isinstance(region_size, (int, np.integer)) or isinstance(region_size, bool) or region_size < 1:
        raise ValueError(f"region_size must be a positive int (pixels per output region side), got {region_size!r}")
    if compute not in (None, True, False):
        raise TypeError(f"compute must be None, True or False, got {compute!r}")
    if not isinstance(force_even_sized, (bool, np.bool_)):
        raise TypeError(f"force_even_sized must be True or False, got {force_even_sized!r}")
    lazy = is_dask_array(data) if compute is None else not compute
    if reduce == "none" and compute is False:
        raise ValueError("reduce='none' returns a computed list of per-cell results; drop compute=False")
    lazy = lazy and reduce != "none"
    if reduce == "catalog" and masked:
        raise ValueError("reduce='catalog' of a masked array: pass image.filled(np.nan) and skip NaN in func")
    if lazy and (scheduler is not None or num_workers is not None):
        raise ValueError(
            "scheduler and num_workers apply only when map_reduce computes the result, but this result is "
            "lazy (Dask input or compute=False): pass compute=True, or call result.compute(scheduler=...)"
        )
    out_dtype = output_dtype(dtype, data.dtype)
    policy = FailurePolicy(timeout=check_timeout(cell_timeout, "cell_timeout"))
    cells_per_task = check_cells_per_task(cells_per_task)
    if weighting is not None and out_dtype.kind == "c":
        # The weighted stitcher accumulates in float64 and would drop the imaginary part.
        raise ValueError(f"weights={weights!r} needs a real output; got dtype {out_dtype}: use weights='uniform'")

    grid, indices = regular_grid(data.shape, cell_xy, step_xy, border_xy, adjust, bool(force_even_sized))
    if reduce not in ("none", "catalog"):
        _warn_uncovered(grid.cells, data.shape, reduce)
    if reduce == "catalog":
        func, geometry = CatalogCell(func, geometry), GEOMETRY_NAMES
    mapped = func if reduce in ("none", "catalog") else _AsDtype(func, out_dtype)
    plan = ArrayPlan(
        func=mapped,
        array=data,
        grid=grid,
        kwargs=kwargs,
        operation=reduce,
        companions=extra,
        geometry=geometry,
        grid_indices=indices,
        weighting=weighting,
        policy=policy,
        cells_per_task=cells_per_task,
    )
    if reduce == "catalog":
        labels = [f"cell {tuple(index)}" for index in indices.tolist()]
        if lazy:
            return lazy_catalog(plan, region_size, labels)
        with choose_scheduler(scheduler, num_workers) as chosen, progress_bar(progress, len(grid), chosen):
            outcomes = execute_cells(plan, chosen, region_size)
        return reduce_catalog([o.result for o in outcomes], grid.cells, indices, labels)
    if reduce == "none":
        with choose_scheduler(scheduler, num_workers) as chosen:
            return [outcome.result for outcome in execute_cells(plan, chosen, region_size)]
    if lazy:
        result = lazy_stitch(plan, out_dtype, 0, region_size)[0]
    else:
        result = np.empty(data.shape, dtype=out_dtype)  # every region overwrites all of its pixels
        with choose_scheduler(scheduler, num_workers) as chosen, progress_bar(progress, len(grid), chosen) as report:
            execute_stitch(plan, result, 0, region_size, chosen, report)
    return _like(template, _masked_invalid(result) if masked else result)


def _auto_border(func: Callable[..., Any]) -> Any:
    """The border ``border="auto"`` stands for: the reach ``func`` declares."""
    reach = getattr(func, "reach", None)
    if reach is None:
        name = getattr(func, "__name__", type(func).__name__)
        raise ValueError(
            f"border='auto' needs func to declare its reach in pixels (func.reach = 8, or (rows, cols)); "
            f"{name} has no reach attribute: give border=N instead"
        )
    return reach


def _masked_invalid(result: Any) -> Any:
    """``result`` as a masked array (numpy or Dask) masking its invalid (NaN) pixels."""
    if is_dask_array(result):
        import dask.array as da

        return da.ma.masked_where(da.isnan(result), result)
    return np.ma.masked_array(result, mask=np.isnan(result))


class _AsDtype:
    """``func`` with its numeric result converted to the output dtype (a masked array stays masked).

    A bool result becomes 0 / 1; one that is not numbers (objects, text) is left as it is, for the
    engine to refuse naming the cell; complex values for a real output are refused here (their
    imaginary part would be dropped). A module-level class, not a closure, so that it pickles for worker processes; it
    carries the function's name so that the engine's errors still name the user's function.
    """

    def __init__(self, func: Callable[..., Any], dtype: np.dtype):
        self.func = func
        self.dtype = dtype
        self.__name__ = getattr(func, "__name__", repr(func))
        self.__wrapped__ = func  # so that the pre-flight check on a cluster imports func's module

    def __call__(self, cell: Any, **kwargs: Any) -> np.ndarray:
        result = np.asanyarray(self.func(cell, **kwargs))  # a masked array keeps its mask
        if result.dtype.kind == "c" and self.dtype.kind != "c":
            raise TypeError(
                f"func returned complex values (dtype {result.dtype}) but the output dtype is {self.dtype}: "
                f"pass dtype=np.complex128 to map_reduce, or return real values"
            )
        if result.dtype.kind not in "biufc":
            return result
        return result.astype(self.dtype, copy=False)  # no copy when the dtype matches


def _check_func_kwargs(func_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    if func_kwargs is None:
        return {}
    if not isinstance(func_kwargs, Mapping) or not all(isinstance(k, str) for k in func_kwargs):
        raise TypeError(f"func_kwargs must be a mapping of keyword names to values, got {func_kwargs!r}")
    return dict(func_kwargs)


def _warn_uncovered(cells: np.ndarray, shape: tuple[int, int], reduce: str) -> None:
    missing = uncovered_pixels(cells, array_bbox(shape))
    if missing:
        fill = "0" if reduce == "sum" else "NaN"
        warnings.warn(
            f"{missing} pixel{'s' if missing != 1 else ''} of the {shape[0]}x{shape[1]} image lie in no cell "
            f"and will be {fill}: the grid leaves gaps (grid_step larger than cell_size) or drops one-pixel "
            "cells (LSST's grid keeps only cells of more than one pixel, so cell_size=1 keeps none). Choose "
            "cell_size/grid_step to cover the image, or adjust='spacing'",
            UserWarning,
            stacklevel=3,
        )


def _is_data_array(value: Any) -> bool:
    """Whether ``value`` is an `xarray.DataArray` (without importing xarray, which takes half a second)."""
    xarray = sys.modules.get("xarray")
    return xarray is not None and isinstance(value, xarray.DataArray)


def _like(template: Any, result: Any) -> Any:
    """Wrap ``result`` as a DataArray like ``template`` (dims, coords, name, attrs), if there is one."""
    if template is None:
        return result
    import xarray as xr

    return xr.DataArray(
        result, coords=template.coords, dims=template.dims, name=template.name, attrs=dict(template.attrs)
    )
