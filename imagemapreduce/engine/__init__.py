"""All Dask graph building and scheduling lives in this subpackage."""

from .batches import auto_cells_per_task, check_cells_per_task
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
    stitch_graph,
)
from .scheduling import SCHEDULER_NAMES, TRAFFIC_KINDS, SchedulerChoice, choose_scheduler
from .sources import CompanionSource, ExposureSource, PlaneSource, companion_images, is_dask_array

__all__ = [
    "ArrayCellTask",
    "ArrayPlan",
    "auto_cells_per_task",
    "check_cells_per_task",
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
    "TRAFFIC_KINDS",
    "stitch_graph",
    "execute_cells",
    "execute_stitch",
    "execute_to_store",
    "is_dask_array",
    "lazy_stitch",
    "region_boxes",
    "run_array_cell",
    "run_cell",
]
