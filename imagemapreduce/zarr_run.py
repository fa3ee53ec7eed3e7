"""`ImageMapReduceTask.runToZarr`: a map-reduce written region by region into a resumable zarr store.

What the store guarantees (see ``docs/guarantees.rst``): one writer at a time; a resume continues
only the very job that wrote it (the fingerprint covers the input's content, grid, mapper, config
and run arguments) and recomputes any region whose pixels no longer match their checksum; the
output PSF and failure report are built from every region's record, whichever run wrote it; a
run that fails before writing any region leaves no store behind; and the input is never the
store being replaced. All of it holds on object storage too (``s3://`` and other fsspec URLs,
see `imagemapreduce.io.locations`): the workers that run the region tasks write the store
themselves, each reopening it from its URL and storage options.

Layers: this module sits below `imagemapreduce.mapreduce`, which calls it; it drives the task only
through its public steps (`ImageMapReduceTask.prepare`, ``scheduling``, ``recordCells``,
``attachFailures``) and imports the task's module for type checkers only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine import execute_to_store
from .engine.graph import StitchReport
from .engine.progress import progress_bar
from .engine.sources import is_dask_array
from .image import Exposure
from .io.locations import StoreLocation
from .io.zarr_regions import ZarrRegionWriter
from .io.zarr_store import open_zarr_exposure
from .pipe_base import Struct
from .psf._persist import is_persistable
from .run_identity import run_fingerprint
from .stitch import IMAGE_REDUCE_OPERATIONS
from .stitch_planes import PlaneLayout

if TYPE_CHECKING:
    from .mapreduce import ImageMapReduceTask

__all__ = ["run_to_zarr"]


def run_to_zarr(
    task: ImageMapReduceTask,
    exposure: Exposure,
    path: Any,
    *,
    storage_options: dict[str, Any] | None = None,
    chunks: Any = None,
    shards: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    **kwargs: Any,
) -> Struct:
    """Run ``task`` on ``exposure`` into the zarr store ``path`` (see `ImageMapReduceTask.runToZarr`).

    ``path`` may be an fsspec URL, with ``storage_options`` for its file system; ``chunks`` and
    ``shards`` set the output planes' zarr chunks (default: one per region) and shards (default:
    none), which must divide ``stitchRegionSize``.
    """
    operation = task.reducer.config.reduceOperation
    if operation not in IMAGE_REDUCE_OPERATIONS or not task.hasStandardReducer():
        raise ValueError(
            f"runToZarr writes an exposure, so it needs reduceOperation copy, sum or average and the "
            f"standard reducer; got {operation!r}. Use run() for the others"
        )
    if overwrite and resume:
        raise ValueError("pass overwrite=True or resume=True, not both")
    location = StoreLocation(path, storage_options)
    writer = ZarrRegionWriter(
        location, exposure.getBBox(), task.config.stitchRegionSize, chunks=chunks, shards=shards
    )  # checks the chunks against the regions before any work
    refuse_own_input(location, exposure, *kwargs.values())
    prepared = task.prepare(exposure, kwargs, operation)
    grid = prepared.grid
    unnamed = exposure.mask.getUnnamedBitMask()  # kept unnamed: never given to a plane
    output, badBits = task.reducer.prepareOutput(_planeless(exposure), unnamedBits=unnamed)
    layout = PlaneLayout(output.mask.getMaskPlaneDict(), unnamed)
    fingerprint = run_fingerprint(task, exposure, grid, kwargs)
    created = False
    try:
        if resume:
            writer.check_resumable(exposure.dtype, fingerprint)
            skip, repaired = writer.verified_regions()
            for index, why in sorted(repaired.items()):
                task.log.warning("Recomputing region %s: %s", index, why)
        else:
            writer.create(exposure.dtype, output.mask.getMaskPlaneDict(), fingerprint, overwrite)
            created, skip, repaired = True, set(), {}
        with task.scheduling() as scheduler:
            with progress_bar(task.config.progressBar, len(grid), scheduler) as onRegion:
                report = execute_to_store(
                    prepared.plan,
                    writer,
                    exposure.dtype,
                    badBits,
                    task.config.stitchRegionSize,
                    scheduler,
                    skip,
                    onRegion,
                    layout=layout,
                )
        stored, unstorable = _report_from_store(writer)
        writer.settle_mask_planes(*stored.mask_planes(layout))
        task.recordCells(stored.summaries, stored.failures)
        writer.finish(_output_psf(task, output, stored, unstorable))
    except BaseException:
        if created and not writer.flagged_regions():
            writer.release()
            location.remove_store()  # nothing was written: leave no store that looks like a run
        raise
    finally:
        writer.release()
    result = Struct(
        exposure=open_zarr_exposure(location),
        path=location.url,
        regionsWritten=report.region_count,
        regionsReused=len(skip),
        regionsRepaired=sorted(repaired),
    )
    return task.attachFailures(result, stored.failures)


def _report_from_store(writer: ZarrRegionWriter) -> tuple[StitchReport, list[str]]:
    """The whole job's report, from every written region's record (not only this run's regions).

    Also returns the classes of the cells' PSFs that have no data-only form (then the output
    PSF cannot be stored).
    """
    records = writer.records()
    report = StitchReport()
    for record in records:
        report.add(record.outcome)
    return report.finish(), sorted({name for r in records for name in r.unstorable_psfs})


def _output_psf(task: ImageMapReduceTask, output: Exposure, report: StitchReport, unstorable: list[str]) -> Any:
    """The output PSF built from the store's records, or None (logged) where it has no data-only form."""
    if unstorable:
        task.log.warning(
            "The output PSF is not stored: the cells' PSFs (%s) have no data-only form", ", ".join(unstorable)
        )
        return None
    psf = task.reducer.finishOutput(output, report.stats, report.components).getPsf()
    if psf is not None and not is_persistable(psf):
        task.log.warning("The output PSF (a %s) has no data-only form and is not stored", type(psf).__name__)
        return None
    return psf


def _planeless(exposure: Exposure) -> Exposure:
    """A one-pixel stand-in carrying the exposure's PSF, WCS and mask planes (for the reducer's setup)."""
    stub = type(exposure)(1, 1, psf=exposure.getPsf(), wcs=exposure.getWcs())
    stub.mask.setMaskPlaneDict(exposure.mask.getMaskPlaneDict())
    return stub


def _store_identity(store: Any) -> str | None:
    """The `StoreLocation.identity` of a zarr store object (local or fsspec), or None for others."""
    root = getattr(store, "root", None)
    if root is not None:  # a LocalStore
        return StoreLocation(str(root)).identity()
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is None or path is None:
        return None
    fs = getattr(fs, "sync_fs", fs)  # zarr wraps synchronous file systems (memory://)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return StoreLocation(str(path)).identity()
    return f"{protocol}://{str(path).strip('/')}"


def _zarr_sources(value: Any) -> set[str]:
    """The identities (`StoreLocation.identity`) of the zarr stores a (lazy) image or array reads from."""
    arrays = []
    for name in ("image", "mask", "variance"):
        plane = getattr(value, name, None)
        if plane is not None:
            arrays.append(getattr(plane, "array", plane))
    if hasattr(value, "array"):
        arrays.append(value.array)
    elif not arrays:
        arrays.append(value)
    found = set()
    for array in arrays:
        if not is_dask_array(array):
            continue
        for node in dict(array.__dask_graph__()).values():
            store = getattr(node, "store", None) if type(node).__module__.startswith("zarr") else None
            identity = _store_identity(store) if store is not None else None
            if identity:
                found.add(identity)
    return found


def refuse_own_input(location: StoreLocation, *inputs: Any) -> None:
    """Refuse an output location that is (or holds) a store one of the inputs reads from.

    ``overwrite`` would delete the input before reading it; a resume would overwrite it. Local
    paths are compared after resolving symlinks and ``..``; URLs by protocol and path.
    """
    target = location.identity()
    for value in inputs:
        for source in _zarr_sources(value):
            if source == target or source.startswith(target.rstrip("/") + "/"):
                raise ValueError(
                    f"the output {location} is the zarr store the input is read from ({source}); writing it would "
                    "destroy the input: choose another output path"
                )
