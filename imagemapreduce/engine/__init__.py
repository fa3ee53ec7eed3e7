"""All Dask graph building and scheduling lives in this subpackage."""

from .cells import ArrayCellTask, CellFailure, CellOutcome, CellTask, Piece, run_array_cell, run_cell
from .graph import ArrayPlan, ExposurePlan, StitchOutcome, execute_cells, execute_stitch, lazy_stitch, region_boxes
from .scheduling import SCHEDULER_NAMES, SchedulerChoice, choose_scheduler
from .sources import ExposureSource, PlaneSource, is_dask_array

__all__ = [
    "ArrayCellTask",
    "ArrayPlan",
    "CellFailure",
    "CellOutcome",
    "CellTask",
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
    "is_dask_array",
    "lazy_stitch",
    "region_boxes",
    "run_array_cell",
    "run_cell",
]
