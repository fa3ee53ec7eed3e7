"""What one cell task does: run the mapper (or function), check its result, time it.

Each result is checked where it is produced, so an error names the cell. A `Piece` is the part of
a result the stitcher needs: a box and its planes (variance and mask may be absent for plain arrays).
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, NamedTuple, cast

import numpy as np
from dask.sizeof import sizeof

from ..geom import Box2I, Point2I
from ..image import Exposure
from ..pipe_base import Struct
from ..stitch import IMAGE_REDUCE_OPERATIONS, all_finite
from .shared_memory import SharedArrayRef
from .sizes import OBJECT_BYTES, nbytes_of
from .sources import ArrayCut, LazyCut, local_corners, materialize, read_only

__all__ = [
    "CellFailure",
    "CellTimeout",
    "FailedCell",
    "FailurePolicy",
    "WRITTEN",
    "CellSummary",
    "CellOutcome",
    "CellTask",
    "ArrayCellTask",
    "Piece",
    "run_cell",
    "run_cells_together",
    "runs_cells_together",
    "run_array_cell",
    "cell_array",
    "write_core",
    "exposure_piece",
    "array_piece",
    "CellBatch",
    "run_batch",
    "cores_of",
]


class CellFailure(RuntimeError):
    """A mapper raised on one cell; the message names the cell and the original exception."""


@dataclass(frozen=True)
class FailedCell:
    """A cell whose mapper raised (after any retries) in a run that masks failures."""

    index: int
    bbox: Box2I
    expandedBBox: Box2I
    error: str

    def __str__(self) -> str:
        return f"cell {self.index} (box {self.bbox}): {self.error}"


class Piece(NamedTuple):
    """The planes of one cell's result, covering ``bbox`` (parent coordinates)."""

    bbox: Box2I
    image: np.ndarray
    variance: np.ndarray | None
    mask: np.ndarray | None
    psf: Any = None
    #: The mask's plane dictionary (None without a mask), by which its bits are stitched.
    planes: dict[str, int] | None = None


class CellSummary(NamedTuple):
    """One cell's timing: small enough to travel with a region's answer."""

    #: The cell's grid index (named so as not to hide the tuple method ``index``).
    cell: int
    wall_time: float
    cpu_time: float
    #: Who ran the cell (see `_worker_name`).
    worker: str


@dataclass
class CellOutcome:
    """What one cell task returns: the result and how long it took."""

    index: int
    box0: Box2I
    result: Any
    wall_time: float
    cpu_time: float
    worker: str
    failure: FailedCell | None = None

    def summary(self) -> CellSummary:
        """The cell's grid index, wall time, CPU time and worker."""
        return CellSummary(self.index, self.wall_time, self.cpu_time, self.worker)


def _worker_name() -> str:
    """Who ran a cell: a Dask worker's address on a cluster, else ``"pid:thread name"``.

    The address is what ``Client.scheduler_info()["workers"]`` lists, so a user can tie a slow
    cell to a machine; locally the process id tells processes apart and the thread name threads.
    """
    if "distributed" in sys.modules:  # never import distributed just to ask
        try:
            return str(sys.modules["distributed"].get_worker().address)
        except ValueError:  # not inside a worker
            pass
    return f"{os.getpid()}:{threading.current_thread().name}"


def _fail(what: str, index: int, box0: Box2I, box1: Box2I, exc: BaseException) -> CellFailure:
    return CellFailure(
        f"{what} failed on cell {index} (box {box0}, expanded box {box1}): "
        f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    )


class CellTimeout(TimeoutError):
    """A mapper (or function) call on one cell ran past the run's cell timeout."""


@dataclass(frozen=True)
class FailurePolicy:
    """What to do when a cell's mapper raises or runs too long: retry it, then fail the run or mask the cell.

    ``timeout`` (seconds; None for no limit) bounds each call of the mapper on a cell, retries
    included, each on its own. Python cannot stop a thread, so a call that runs past it is
    abandoned, not stopped: it goes on in a daemon thread (using its core and memory, its result
    thrown away) until it returns or its process ends, while the cell is retried, failed or
    masked. Without a timeout the mapper runs in the task's own thread, at no extra cost.
    """

    retries: int = 0
    mask_failures: bool = False
    timeout: float | None = None


def _call_with_retries(policy: FailurePolicy, call: Callable[[], Any], helper_cpu: list[float]) -> Any:
    """Call ``call()``; on an exception (or a timeout) retry up to ``policy.retries`` times, then re-raise.

    The CPU time of calls run in a helper thread (with a timeout) is appended to ``helper_cpu``.
    """
    for attempt in range(policy.retries + 1):
        try:
            return call() if policy.timeout is None else _call_with_timeout(call, policy.timeout, helper_cpu)
        except Exception:
            if attempt == policy.retries:
                raise
    raise AssertionError("unreachable")


def _call_with_timeout(call: Callable[[], Any], timeout: float, helper_cpu: list[float]) -> Any:
    """Run ``call()`` in a daemon thread and wait for it at most ``timeout`` seconds (see `FailurePolicy`)."""
    answer: list[tuple[bool, Any]] = []

    def target() -> None:
        start = time.thread_time()
        try:
            answer.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            answer.append((False, exc))
        helper_cpu.append(time.thread_time() - start)

    # A daemon thread, so that an abandoned call never keeps its process from exiting.
    thread = threading.Thread(target=target, name=f"{threading.current_thread().name}-cell", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise CellTimeout(
            f"timed out after {timeout:g} s (cellTimeout / cell_timeout); the call was abandoned and may still "
            "be running in the background. Raise the timeout if the mapper is just slow"
        )
    returned, value = answer[0]
    if not returned:
        raise value
    return value


def _failed_outcome(
    index: int, box0: Box2I, box1: Box2I, exc: BaseException, start: tuple[float, float]
) -> CellOutcome:
    failure = FailedCell(index, box0, box1, f"{type(exc).__name__}: {exc}")
    return CellOutcome(
        index, box0, None, time.perf_counter() - start[0], time.thread_time() - start[1], _worker_name(), failure
    )


@dataclass(kw_only=True)
class CellTask:
    """One cell of an exposure map-reduce; kept in one object so Dask does not walk its contents."""

    mapper: Any
    index: int
    box0: Box2I
    box1: Box2I
    full_bbox: Box2I
    do_clone: bool
    return_sub_images: bool
    operation: str
    kwargs: dict[str, Any]
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    companion_names: tuple[str, ...] = ()
    #: Who runs the cell, when known before it runs (a batch asks once for all its cells); else
    #: asked when the cell ends (`_worker_name`).
    worker: str = ""


def _cell_inputs(task: CellTask, expanded: Exposure, companions: tuple[Any, ...]) -> tuple[Exposure, Exposure, dict]:
    """The mapper's arguments for one cell: its sub-exposure, expanded sub-exposure and keywords."""
    # Read-only however the cut arrived: a view (threads) or an unpickled copy (processes, a cluster),
    # so that a mapper writing into its input fails the same way on every scheduler.
    expanded = read_only(materialize(expanded))
    companions = tuple(read_only(materialize(c)) for c in companions)
    if task.do_clone:
        expanded = expanded.clone()
    sub = expanded.subset(task.box0)
    if task.do_clone:
        sub = sub.clone()  # private copies that do not share pixels with each other either
    return sub, expanded, {**task.kwargs, **dict(zip(task.companion_names, companions))}


def _checked_result(task: CellTask, result: Any, sub: Exposure, expanded: Exposure) -> Any:
    """The mapper's result for one cell, its inputs added if asked for, checked for the reducer."""
    if task.return_sub_images:
        result.mergeItems(
            Struct(inputSubExposure=sub, inputExpandedSubExposure=expanded),
            "inputSubExposure",
            "inputExpandedSubExposure",
        )
    if task.operation in IMAGE_REDUCE_OPERATIONS:
        _check_exposure_result(task, result)
    return result


def run_cell(task: CellTask, expanded: Exposure, *companions: Any) -> CellOutcome:
    """Run the mapper on one cell (``expanded`` is its read-only expanded sub-exposure).

    ``companions`` are the companion images cut to the expanded box, passed to the mapper under
    ``task.companion_names`` in place of the whole images.
    """
    start_wall, start_cpu = time.perf_counter(), time.thread_time()
    sub, expanded, kwargs = _cell_inputs(task, expanded, companions)
    helper_cpu: list[float] = []
    try:
        result = _call_with_retries(
            task.policy, lambda: task.mapper.run(sub, expanded, task.full_bbox, **kwargs), helper_cpu
        )
    except Exception as exc:  # noqa: BLE001 - re-raised with the cell named, or masked
        if task.policy.mask_failures:
            return _failed_outcome(task.index, task.box0, task.box1, exc, (start_wall, start_cpu))
        raise _fail(f"mapper {type(task.mapper).__name__}", task.index, task.box0, task.box1, exc) from exc
    result = _checked_result(task, result, sub, expanded)
    cpu = time.thread_time() - start_cpu + sum(helper_cpu)
    return CellOutcome(
        task.index, task.box0, result, time.perf_counter() - start_wall, cpu, task.worker or _worker_name()
    )


def runs_cells_together(mapper: Any) -> bool:
    """Whether ``mapper`` has its own `~imagemapreduce.mapper.ImageMapper.runCells` (not the base class's loop)."""
    from ..mapper import ImageMapper

    hook = getattr(type(mapper), "runCells", None)
    return callable(hook) and hook is not ImageMapper.runCells


def run_cells_together(tasks: list[CellTask], expandeds: list[Any]) -> list[CellOutcome]:
    """Run a batch's cells through one call of the mapper's ``runCells``, or one by one if it raises.

    The cells share the call's wall and CPU time evenly. If ``runCells`` raises, or a result
    fails its checks, every cell of the batch runs alone through `run_cell` instead (its own
    retries, failure, masking), so a failure is reported for its cell exactly as without the hook.
    """
    template = tasks[0]
    start_wall, start_cpu = time.perf_counter(), time.thread_time()
    inputs = [_cell_inputs(task, expanded, ()) for task, expanded in zip(tasks, expandeds, strict=True)]
    try:
        results = template.mapper.runCells(
            [(sub, exp) for sub, exp, _ in inputs], template.full_bbox, **template.kwargs
        )
        if len(results) != len(tasks):
            raise ValueError(f"runCells returned {len(results)} results for {len(tasks)} cells")
        checked = [
            _checked_result(task, result, sub, exp) for task, result, (sub, exp, _) in zip(tasks, results, inputs)
        ]
    except Exception:  # noqa: BLE001 - each cell again on its own, which names (or masks) the failing one
        return [run_cell(task, expanded) for task, expanded in zip(tasks, expandeds, strict=True)]
    wall = (time.perf_counter() - start_wall) / len(tasks)
    cpu = (time.thread_time() - start_cpu) / len(tasks)
    worker = _worker_name()
    return [CellOutcome(t.index, t.box0, result, wall, cpu, worker) for t, result in zip(tasks, checked, strict=True)]


def _check_exposure_result(task: CellTask, result: Any) -> None:
    item = getattr(result, "subExposure", None)
    if not isinstance(item, Exposure):
        raise TypeError(
            f"Expecting an Exposure type, got {type(item)} from cell {task.index} (box {task.box0}). "
            f'Consider using `reduceOperation="none"` to get the mapper results as a list.'
        )
    bbox = item.getBBox()
    if not task.box1.contains(bbox):
        raise ValueError(
            f"mapper result for cell {task.index} has bbox {bbox}, outside its expanded cell {task.box1}; "
            "return a subExposure within the expanded cell (the stitcher reads only those)"
        )
    for name, plane, kinds, allowed in (
        ("image", item.image, _REAL_KINDS, "real numbers (float or int)"),
        ("variance", item.variance, _REAL_KINDS, "real numbers (float or int)"),
        ("mask", item.mask, "iu", "integer bit planes"),
    ):
        dtype = np.dtype(plane.array.dtype)
        if dtype.kind not in kinds:
            raise TypeError(
                f"mapper result for cell {task.index} (box {task.box0}) has {name} pixels of dtype {dtype}, which "
                f"cannot be stitched: the subExposure's {name} must hold {allowed}. Convert them in the mapper, "
                'or use reduceOperation="none" to get the mapper results as a list'
            )


#: Pixel kinds the stitcher adds into a real image: integers and floats (not bool, complex, objects or text).
_REAL_KINDS = "iuf"


def exposure_piece(outcome: CellOutcome) -> Piece:
    """The stitchable planes of an exposure mapper's result."""
    item = outcome.result.subExposure
    mi = item.maskedImage
    return Piece(
        item.getBBox(), mi.image.array, mi.variance.array, mi.mask.array, item.getPsf(), mi.mask.getMaskPlaneDict()
    )


@dataclass(kw_only=True)
class ArrayCellTask:
    """One cell of a plain-array map-reduce: a function of the expanded cell's array."""

    func: Callable[..., Any]
    index: int
    box0: Box2I
    box1: Box2I
    operation: str
    kwargs: dict[str, Any]
    geometry: tuple[str, ...] = ()
    grid_index: tuple[int, int] | None = None
    companion_names: tuple[str, ...] = field(default=())
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    # Where the cell's core goes in the output, when the cell may write it itself (see `graph`).
    out: np.ndarray | None = None
    #: Who runs the cell, as `CellTask.worker`.
    worker: str = ""


class _Written(Enum):
    """The one value of `WRITTEN` (an enum member: the same object after pickling, never an array)."""

    WRITTEN = "written into the output"


#: The result of a cell that wrote its core straight into the output (compare with ``is``).
WRITTEN = _Written.WRITTEN


def cell_array(cell: Any) -> Any:
    """The array a function receives for one cell: C-contiguous and read-only.

    A cell cut from a larger in-memory image is a strided view whose rows lie a whole image
    width apart; filters that walk columns (``scipy.ndimage`` along axis 0, for one) then touch
    a new page for every pixel. One compact copy of the expanded cell costs less than that (see
    ``benchmarks/bench_map_overlap.py``: views against contiguous copies), and it is what a
    worker process receives anyway. Anything that is not a numpy array (or a cut of one, made
    into its pixels here) is passed as it is.
    """
    cell = materialize(cell)
    if not isinstance(cell, np.ndarray):
        return cell
    if not cell.flags.c_contiguous:
        cell = np.ascontiguousarray(cell)
    cell.flags.writeable = False
    return cell


def run_array_cell(task: ArrayCellTask, expanded: np.ndarray, *companions: np.ndarray) -> CellOutcome:
    """Call the function on one expanded cell and keep the cell's core of its answer."""
    start_wall, start_cpu = time.perf_counter(), time.thread_time()
    expanded = cell_array(expanded)
    kwargs = dict(task.kwargs)
    kwargs.update(zip(task.companion_names, map(cell_array, companions)))
    if task.geometry:
        geometry = {"cell_box": task.box0, "expanded_box": task.box1, "grid_index": task.grid_index}
        kwargs.update({name: geometry[name] for name in task.geometry})
    helper_cpu: list[float] = []
    try:
        result = _call_with_retries(task.policy, lambda: task.func(expanded, **kwargs), helper_cpu)
    except Exception as exc:  # noqa: BLE001 - re-raised with the cell named, or masked
        if task.policy.mask_failures:
            return _failed_outcome(task.index, task.box0, task.box1, exc, (start_wall, start_cpu))
        raise _fail(
            f"function {getattr(task.func, '__name__', task.func)!r}", task.index, task.box0, task.box1, exc
        ) from exc
    if task.operation in IMAGE_REDUCE_OPERATIONS:
        result = _core_of(task, result, expanded.shape)
        if task.out is not None and all_finite(result):
            write_core(task.operation, result, task.out)
            result = WRITTEN
    cpu = time.thread_time() - start_cpu + sum(helper_cpu)
    return CellOutcome(
        task.index, task.box0, result, time.perf_counter() - start_wall, cpu, task.worker or _worker_name()
    )


def write_core(operation: str, core: np.ndarray, out: np.ndarray) -> None:
    """Write a cell's all-finite core where no other cell reaches: the bits the stitcher would give.

    ``copy`` copies. ``sum`` and ``average`` start a pixel at zero and add its one value (an
    average then divides by a count of one, which changes nothing), and ``0 + x`` is ``x`` except
    that it turns -0.0 into +0.0, so they write ``x + 0``. Same cost as a copy: one pass.
    """
    if operation == "copy":
        out[...] = core
    else:
        np.add(core, out.dtype.type(0), out=out)


def _core_of(task: ArrayCellTask, result: Any, expanded_shape: tuple[int, ...]) -> np.ndarray:
    """The cell's core of a result the shape of the expanded cell (or the cell itself)."""
    result = _numbers_of(task, result)
    cell_shape = (task.box0.getHeight(), task.box0.getWidth())
    if result.shape == tuple(expanded_shape):
        return result[task.box0.slices(task.box1.getBegin())]
    if result.shape == cell_shape:
        return result
    raise ValueError(
        f"function returned shape {result.shape} for cell {task.index} (box {task.box0}); it must return an "
        f"array the shape of the expanded cell {tuple(expanded_shape)} (or of the cell {cell_shape}), or use "
        'reduce="none" to collect arbitrary results'
    )


def _numbers_of(task: ArrayCellTask, result: Any) -> np.ndarray:
    """A function's result as an array of numbers, masked pixels (of a masked array) as NaN: invalid."""
    if isinstance(result, np.ma.MaskedArray):
        if result.dtype.kind not in "fc":
            raise TypeError(
                f"function returned a masked array of dtype {result.dtype} for cell {task.index} (box {task.box0}); "
                "its masked pixels would become NaN, which that dtype cannot hold: return a float masked array"
            )
        result = result.filled(np.nan)
    result = np.asarray(result)
    if result.dtype.kind not in "biufc":  # a bool result is stitched as 0 / 1, as numpy would add it
        raise TypeError(
            f"function returned an array of dtype {result.dtype} for cell {task.index} (box {task.box0}), which "
            "cannot be stitched: return numbers (float, int, complex or bool; NaN marks an invalid pixel), or use "
            'reduce="none" to collect arbitrary results'
        )
    return result


def array_piece(outcome: CellOutcome) -> Piece:
    """The stitchable plane of a plain-array result (its core, covering the cell)."""
    return Piece(outcome.box0, outcome.result, None, None)


@dataclass
class CellBatch:
    """Neighbouring cells run one after another by one task, on one cut holding their expanded boxes.

    ``template`` is a `CellTask` or an `ArrayCellTask` with what every cell shares; each cell's
    own fields (index, boxes, grid index, output view) are filled in on the worker, so the graph
    carries a few small arrays per batch instead of objects per cell.
    """

    runner: Callable[..., CellOutcome]
    template: CellTask | ArrayCellTask
    indices: np.ndarray
    cells: np.ndarray
    expanded: np.ndarray
    #: The union of the expanded boxes, which the task's cuts cover: ``(minX, minY, maxX, maxY)``.
    box: tuple[int, int, int, int]
    grid_indices: np.ndarray | None = None
    #: Per cell, where its core goes in a shared output (plain arrays written directly), or None.
    outs: list[np.ndarray] | None = None
    #: The output in a same-host cluster's shared memory and its origin ``(x, y)``, mapped while the
    #: batch runs to give `outs` (plain arrays written directly); or None.
    shared_out: tuple[SharedArrayRef, tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def tasks(self) -> list[CellTask | ArrayCellTask]:
        """The cells' own tasks, in grid order."""
        from ..grid import boxes_from_array

        boxes0, boxes1 = boxes_from_array(self.cells), boxes_from_array(self.expanded)
        template, is_array = self.template, isinstance(self.template, ArrayCellTask)
        grid_indices = self.grid_indices.tolist() if is_array and self.grid_indices is not None else None
        # Every cell of a batch runs in this call, on this thread of this worker: ask who once.
        worker = _worker_name()
        tasks = []
        for k, index in enumerate(self.indices.tolist()):
            # A shallow copy with the cell's own fields set: the template's fields are already
            # checked, so `dataclasses.replace` (a full __init__ per cell) would only cost time.
            task = copy.copy(template)
            task.index, task.box0, task.box1, task.worker = index, boxes0[k], boxes1[k], worker
            if is_array:
                array_task = cast(ArrayCellTask, task)
                if grid_indices is not None:
                    array_task.grid_index = tuple(grid_indices[k])
                if self.outs is not None:
                    array_task.out = self.outs[k]
            tasks.append(task)
        return tasks


def run_batch(batch: CellBatch, *cuts: Any) -> list[CellOutcome]:
    """Run each cell of ``batch`` on its own expanded box of ``cuts`` (which cover ``batch.box``).

    Each cell gets exactly what a task of its own would get (a read-only view of its expanded
    box, or a deferred cut of it), so batching never changes a result. A mapper with its own
    ``runCells`` gets the batch's cells in one call (`run_cells_together`), which must return
    what ``run`` would for each. The outcomes come back in grid order.
    """
    if batch.shared_out is not None:
        ref, (ox, oy) = batch.shared_out
        with ref.open(writable=True) as output:
            mapped = replace(batch, outs=cores_of(output, batch.cells, Point2I(ox, oy)), shared_out=None)
            outcomes = run_batch(mapped, *cuts)
            del mapped  # its views of the mapping go before the mapping does
        return outcomes
    whole = [materialize(cut) for cut in cuts]
    x0, y0 = batch.box[0], batch.box[1]
    tasks = batch.tasks()
    owns = [[_sub_cut(plane, task.box1, x0, y0) for plane in whole] for task in tasks]
    if _together(batch, tasks):
        return run_cells_together(cast(list[CellTask], tasks), [own[0] for own in owns])
    return [batch.runner(task, *own) for task, own in zip(tasks, owns, strict=True)]


def _together(batch: CellBatch, tasks: list[CellTask | ArrayCellTask]) -> bool:
    """Whether a batch's cells go to the mapper in one ``runCells`` call.

    Only exposure cells without companions (whose keywords would differ per cell) or a timeout
    (which bounds one cell's call), two or more, and a mapper with its own ``runCells``.
    """
    template = batch.template
    return (
        len(tasks) > 1
        and batch.runner is run_cell
        and isinstance(template, CellTask)
        and not template.companion_names
        and template.policy.timeout is None
        and runs_cells_together(template.mapper)
    )


def cores_of(output: np.ndarray, cells: np.ndarray, origin: Point2I) -> list[np.ndarray]:
    """The view of ``output`` under each cell (``(n, 4)`` boxes, parent coordinates)."""
    return [output[y0 : y1 + 1, x0 : x1 + 1] for x0, y0, x1, y1 in local_corners(cells, origin)]


def _sub_cut(whole: Any, box: Box2I, x0: int, y0: int) -> Any:
    """The part of a batch's cut under one cell's expanded box, made into a view when the cell runs."""
    if isinstance(whole, np.ndarray):
        return ArrayCut(
            whole, slice(box.getMinY() - y0, box.getMaxY() - y0 + 1), slice(box.getMinX() - x0, box.getMaxX() - x0 + 1)
        )
    return LazyCut(whole, box)


@sizeof.register(CellOutcome)
def _outcome_bytes(outcome: CellOutcome) -> int:
    """A cell result's pixels, for Dask's placement and transfer counts (see `imagemapreduce.engine.sizes`)."""
    return nbytes_of(outcome.result) + OBJECT_BYTES
