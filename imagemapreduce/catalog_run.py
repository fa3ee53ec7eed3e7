"""``ImageMapReduceTask.runToParquet``: a catalog run written part by part, resumable like a zarr run.

The cells are grouped into parts by where their cores start: the cells whose core begins in
the same ``stitchRegionSize`` square of the image form one part, so the parts do not depend on
how a run is scheduled or batched, and a resume finds the same ones. Each part's task gathers
its cells' outcomes as they finish, keeps the rows each cell owns (`imagemapreduce.catalog`)
and writes them with a record (`imagemapreduce.io.parquet_catalog`). A resume verifies every
record (the job's fingerprint, the file's checksum) and runs only the cells of the parts that
are missing or fail that check.

Layers: this module sits below `imagemapreduce.mapreduce`, which calls it; it drives the task only
through its public steps (`ImageMapReduceTask.prepare`, ``scheduling``, ``recordCells``,
``attachFailures``) and imports the task's module for type checkers only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .catalog import CELL_NUMBER, CatalogError, candidate_owners, mapper_catalog, owned_catalog
from .engine import execute_parts
from .engine.cells import CellOutcome, CellSummary, FailedCell
from .engine.progress import progress_bar
from .geom import Box2I
from .grid import CellGrid, boxes_from_array
from .image import Exposure
from .io.parquet_catalog import CatalogStore, PartRecord, open_catalog
from .io.zarr_lock import lock_for
from .pipe_base import Struct
from .run_identity import fingerprint_differences, run_fingerprint

if TYPE_CHECKING:
    from .mapreduce import ImageMapReduceTask

__all__ = ["catalog_parts", "run_to_parquet"]


def catalog_parts(grid: CellGrid, bbox: Box2I, region_size: int) -> list[list[int]]:
    """The cells of each part, in grid order: cells whose core starts in the same region square.

    Parts are ordered by their square, column-major like the grid (x, then y).
    """
    cores = grid.cells
    kx = (cores[:, 0] - bbox.getMinX()) // region_size
    ky = (cores[:, 1] - bbox.getMinY()) // region_size
    parts: dict[tuple[int, int], list[int]] = {}
    for number, key in enumerate(zip(kx.tolist(), ky.tolist())):
        parts.setdefault(key, []).append(number)
    return [parts[key] for key in sorted(parts)]


@dataclass
class PartWriter:
    """Writes one part from its cells' outcomes; runs where the cells ran (it pickles to workers)."""

    store: CatalogStore
    fingerprint: dict[str, str]
    cores: np.ndarray
    expanded: np.ndarray
    parts: list[list[int]]

    def __call__(self, number: int, outcomes: list[CellOutcome]) -> dict[str, Any]:
        near = candidate_owners(self.cores, self.expanded[np.asarray(self.parts[number], dtype=np.int64)])
        cells = []
        for outcome in outcomes:
            if outcome.failure is None and outcome.result is not None:
                label = f"cell {outcome.index} ({outcome.box0})"
                cells.append((outcome.index, label, mapper_catalog(outcome.result, label), outcome.index))
        catalog = owned_catalog(cells, self.cores, near, CELL_NUMBER)
        record = PartRecord(
            number,
            self.fingerprint,
            "",
            0,
            int(catalog.meta["dropped_outside_cores"]),
            int(catalog.meta["dropped_duplicates"]),
            [list(o.summary()) for o in outcomes],
            [_failure_json(o.failure) for o in outcomes if o.failure is not None],
        )
        catalog.meta = {}
        record = self.store.write_part(number, catalog, record)
        return {
            "record": record,
            "columns": [[name, catalog[name].dtype.str] for name in catalog.colnames],
            "rows": len(catalog),
        }


def _failure_json(failure: FailedCell) -> dict[str, Any]:
    return {
        "index": failure.index,
        "bbox": list(_box(failure.bbox)),
        "expanded": list(_box(failure.expandedBBox)),
        "error": failure.error,
    }


def _box(box: Box2I) -> tuple[int, int, int, int]:
    return (box.getMinX(), box.getMinY(), box.getMaxX(), box.getMaxY())


def _failure_from_json(data: dict[str, Any]) -> FailedCell:
    bbox, expanded = boxes_from_array(np.array([data["bbox"], data["expanded"]], dtype=np.int64))
    return FailedCell(int(data["index"]), bbox, expanded, str(data["error"]))


def run_to_parquet(
    task: ImageMapReduceTask,
    exposure: Exposure,
    path: Any,
    *,
    overwrite: bool = False,
    resume: bool = False,
    storage_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Struct:
    """Run ``task`` (``reduceOperation="catalog"``) on ``exposure`` into the Parquet dataset ``path``.

    See `ImageMapReduceTask.runToParquet`.
    """
    if task.reducer.config.reduceOperation != "catalog" or not task.hasStandardReducer():
        raise ValueError(
            "runToParquet writes a catalog, so it needs config.reducer.reduceOperation = 'catalog' and the "
            f"standard reducer; got {task.reducer.config.reduceOperation!r}. Use runToZarr for images"
        )
    if overwrite and resume:
        raise ValueError("pass overwrite=True or resume=True, not both")
    store = CatalogStore(path, storage_options)
    prepared = task.prepare(exposure, kwargs, "catalog")
    grid = prepared.grid
    parts = catalog_parts(grid, exposure.getBBox(), task.config.stitchRegionSize)
    fingerprint = run_fingerprint(task, exposure, grid, kwargs)
    if resume:
        _check_resumable(store, fingerprint, parts)
    else:
        store.create(fingerprint, parts, overwrite)
    lock = lock_for(store.location)
    lock.acquire()
    try:
        if resume:
            _check_resumable(store, fingerprint, parts)  # again, now that no other run can change it
        good, repaired = store.verified_parts(fingerprint, len(parts)) if resume else ({}, {})
        for number, why in sorted(repaired.items()):
            task.log.warning("Recomputing catalog part %d: %s", number, why)
        missing = [n for n in range(len(parts)) if n not in good]
        writer = PartWriter(store, fingerprint, grid.cells, grid.expanded, parts)
        with task.scheduling() as scheduler:
            with progress_bar(task.config.progressBar, sum(len(parts[n]) for n in missing), scheduler):
                written = execute_parts(
                    prepared.plan,
                    [parts[n] for n in missing],
                    _Numbered(writer, missing),
                    task.config.stitchRegionSize,
                    scheduler,
                )
        _check_columns(written, missing)
        records = store.records(len(parts))
        totals = {
            "rows": sum(r.rows for r in records),
            "dropped_outside_cores": sum(r.outside for r in records),
            "dropped_duplicates": sum(r.duplicates for r in records),
        }
        store.finish(fingerprint, parts, **totals)
    finally:
        lock.release()
    summaries = sorted(
        (CellSummary(int(i), float(w), float(c), str(worker)) for r in records for i, w, c, worker in r.summaries),
        key=lambda s: s.cell,
    )
    failures = sorted((_failure_from_json(f) for r in records for f in r.failures), key=lambda f: f.index)
    task.recordCells(summaries, failures)
    result = Struct(
        catalog=open_catalog(store.location),
        path=store.location.url,
        partsWritten=len(missing),
        partsReused=len(good),
        partsRepaired=sorted(repaired),
        **totals,
    )
    return task.attachFailures(result, failures)


@dataclass
class _Numbered:
    """``writer`` called with the part's own number (`execute_parts` numbers only the parts it runs)."""

    writer: PartWriter
    numbers: list[int]

    def __call__(self, position: int, outcomes: list[CellOutcome]) -> dict[str, Any]:
        return self.writer(self.numbers[position], outcomes)


def _check_resumable(store: CatalogStore, fingerprint: dict[str, str], parts: list[list[int]]) -> None:
    manifest = store.manifest()
    if manifest is None:
        raise ValueError(f"{store.location} holds no catalog run to resume: run without resume=True")
    differences = fingerprint_differences(manifest.get("fingerprint"), fingerprint)
    if differences:
        raise ValueError(
            f"{store.location} was written by another job ({'; '.join(differences)}): resume only the same job, "
            "or pass overwrite=True to start again"
        )
    if manifest.get("parts") != parts:
        raise ValueError(
            f"{store.location} was written with other parts (another stitchRegionSize): pass overwrite=True"
        )


def _check_columns(written: list[dict[str, Any]], numbers: list[int]) -> None:
    """Every part written with rows has the same columns; else name two that differ."""
    reference = None
    for number, answer in zip(numbers, written):
        if not answer["rows"]:
            continue
        if reference is None:
            reference = (number, answer["columns"])
        elif answer["columns"] != reference[1]:
            raise CatalogError(
                f"catalog part {number} has columns {answer['columns']}, part {reference[0]} has {reference[1]}: "
                "every cell must return the same columns and dtypes"
            )
