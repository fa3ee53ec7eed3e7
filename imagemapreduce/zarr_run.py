"""`ImageMapReduceTask.runToZarr`: a map-reduce written region by region into a resumable zarr store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine import execute_to_store
from .engine.progress import progress_bar
from .grid import CellGrid
from .image import Exposure
from .io.zarr_store import ZarrRegionWriter, open_zarr_exposure
from .pipe_base import Struct
from .stitch import IMAGE_REDUCE_OPERATIONS

if TYPE_CHECKING:
    from .mapreduce import ImageMapReduceTask

__all__ = ["run_to_zarr"]


def run_to_zarr(
    task: ImageMapReduceTask, exposure: Exposure, path: Any, *, overwrite: bool = False, resume: bool = False,
    **kwargs: Any,
) -> Struct:  # fmt: skip
    """Run ``task`` on ``exposure`` into the zarr store ``path`` (see `ImageMapReduceTask.runToZarr`)."""
    operation = task.reducer.config.reduceOperation
    if operation not in IMAGE_REDUCE_OPERATIONS or task._reducerIsCustom():
        raise ValueError(
            f"runToZarr writes an exposure, so it needs reduceOperation copy, sum or average and the "
            f"standard reducer; got {operation!r}. Use run() for the others"
        )
    if overwrite and resume:
        raise ValueError("pass overwrite=True or resume=True, not both")
    grid = task._currentGrid(exposure, kwargs.get("forceEvenSized", False))
    plan = task._makePlan(exposure, grid, kwargs, operation)
    output, badBits = task.reducer.prepareOutput(_planeless(exposure))
    writer = ZarrRegionWriter(path, exposure.getBBox(), task.config.stitchRegionSize)
    fingerprint = _fingerprint(task, exposure, grid)
    if resume:
        writer.check_resumable(exposure.dtype, fingerprint)
        skip = writer.done_regions()
    else:
        writer.create(exposure.dtype, output.mask.getMaskPlaneDict(), fingerprint, overwrite)
        skip = set()
    with task._chooseScheduler() as scheduler:
        task.metadata["scheduler"] = scheduler.describe()
        with progress_bar(task.config.progressBar, len(grid), scheduler) as onRegion:
            report = execute_to_store(
                plan, writer, exposure.dtype, badBits, task.config.stitchRegionSize, scheduler, skip, onRegion
            )
    task._recordCells(report.summaries, report.failures)
    task.reducer.finishOutput(output, report.stats, report.components)
    writer.finish(output.getPsf())
    result = Struct(exposure=open_zarr_exposure(path), path=str(path), regionsWritten=len(report._parts))
    return task._withFailures(result, report.failures)


def _planeless(exposure: Exposure) -> Exposure:
    """A one-pixel stand-in carrying the exposure's PSF, WCS and mask planes (for the reducer's setup)."""
    stub = type(exposure)(1, 1, psf=exposure.getPsf(), wcs=exposure.getWcs())
    stub.mask._planes = exposure.mask.getMaskPlaneDict()
    return stub


def _fingerprint(task: ImageMapReduceTask, exposure: Exposure, grid: CellGrid) -> str:
    """A digest of everything that decides a run's output pixels, to refuse resuming a different run."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(grid.cells.tobytes())
    digest.update(grid.expanded.tobytes())
    settings = task.config.toDict()
    for how_not_what in ("scheduler", "numWorkers", "progressBar"):  # these never change the pixels
        settings.pop(how_not_what, None)
    for part in (
        str(exposure.getBBox()), str(exposure.dtype), type(task.mapper).__module__, type(task.mapper).__qualname__,
        repr(settings), repr(sorted(exposure.mask.getMaskPlaneDict().items())),
    ):  # fmt: skip
        digest.update(part.encode())
    return digest.hexdigest()
