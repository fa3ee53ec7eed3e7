"""All Dask graph building and scheduling lives in this subpackage."""

from .graph import (
    CellFailure,
    CellOutcome,
    CellTask,
    MapReducePlan,
    StitchOutcome,
    execute_cells,
    execute_stitch,
    region_boxes,
    run_cell,
)
from .scheduling import SCHEDULER_NAMES, SchedulerChoice, choose_scheduler

__all__ = [
    "CellFailure",
    "CellOutcome",
    "CellTask",
    "MapReducePlan",
    "StitchOutcome",
    "execute_cells",
    "execute_stitch",
    "region_boxes",
    "run_cell",
    "SCHEDULER_NAMES",
    "SchedulerChoice",
    "choose_scheduler",
]
