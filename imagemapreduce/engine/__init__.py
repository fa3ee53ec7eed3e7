"""All Dask graph building and scheduling lives in this subpackage."""

from .cells import (
    ArrayCellTask,
    CellFailure,
    CellOutcome,
    CellTask,
    CellTimeout,
    FailedCell,
    FailurePolicy,
    Piece,
    run_array_cell,
    run_cell,
)
from .graph import (
    ArrayPlan,
    ExposurePlan,
    StitchOutcome,
    StitchReport,
    execute_cells,
    execute_stitch,
    execute_to_store,
    lazy_stitch,
    region_boxes,
)
from .scheduling import SCHEDULER_NAMES, SchedulerChoice, choose_scheduler
from .sources import CompanionSource, ExposureSource, PlaneSource, companion_images, is_dask_array

__all__ = [
    "ArrayCellTask",
    "ArrayPlan",
    "CellFailure",
    "CellOutcome",
    "CellTimeout",
    "CellTask",
    "CompanionSource",
    "FailedCell",
    "FailurePolicy",
    "StitchReport",
    "companion_images",
    "ExposurePlan",
    "ExposureSource",
    "Piece",
    "PlaneSource",
    "SCHEDULER_NAMES",
    "SchedulerChoice",
    "StitchOutcome",
    "choose_scheduler",
    "execute_cells",
    "execute_stitch",
    "execute_to_store",
    "is_dask_array",
    "lazy_stitch",
    "region_boxes",
    "run_array_cell",
    "run_cell",
]
