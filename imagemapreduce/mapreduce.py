"""`ImageMapReduceTask`: split an exposure into cells, map each on Dask, reduce the results.

Layers: this module is the top of the run machinery. It builds on the engine, the grid and the
image classes, and on `imagemapreduce.zarr_run` and `imagemapreduce.catalog_run` for the runs
written to a store; those run modules never import this one (they get a task and its `RunPlan`),
and this one imports them only when such a run starts, as they load zarr, fsspec and astropy.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import lsst.pex.config as pexConfig
import numpy as np

from .engine import (
    TRAFFIC_KINDS,
    ExposurePlan,
    FailedCell,
    FailurePolicy,
    SchedulerChoice,
    check_cells_per_task,
    choose_scheduler,
    companion_images,
    execute_cells,
    execute_stitch,
)
from .engine.progress import progress_bar
from .geom import Box2I
from .grid import (
    AdjustGridOption,
    CellGrid,
    boxes_to_array,
    cell_boxes,
    dropped_pixels,
    grid_centroids,
    psf_fwhm,
    rescale,
    truncate_pixels,
)
from .image import Exposure
from .mapper import ImageMapper, ImageMapperConfig
from .pipe_base import Struct, Task, timeMethod
from .plotting import plot_box_grid
from .reducer import ImageReducer, ImageReducerConfig
from .stitch import IMAGE_REDUCE_OPERATIONS
from .stitch_planes import PlaneLayout

__all__ = ["ImageMapReduceConfig", "ImageMapReduceTask", "RunPlan"]


def _positive(value: float) -> bool:
    return value > 0


class _AutoOrCountField(pexConfig.Field):
    """A config field holding ``"auto"`` or a positive int (pex_config fields have one dtype)."""

    def _validateValue(self, value: Any) -> None:
        if value is not None:
            check_cells_per_task(value, f"config.{self.name}")

    @staticmethod
    def parse_text(text: str) -> int | str:
        """The value that command-line text stands for: an int for digits, else the text ("auto")."""
        return int(text) if text.strip().isdigit() else text


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


class ImageMapReduceConfig(pexConfig.Config):
    """Configuration of `ImageMapReduceTask`: LSST's fields and defaults, plus how to schedule."""

    # The annotations give each field's value type: pex_config fields are descriptors whose
    # untyped constructors leave the value type to be stated. An optional ListField's value may
    # also be None, which its type cannot say.
    mapper: pexConfig.ConfigurableField[ImageMapperConfig] = pexConfig.ConfigurableField(
        doc="Task to run on each subimage", target=ImageMapper
    )
    reducer: pexConfig.ConfigurableField[ImageReducerConfig] = pexConfig.ConfigurableField(
        doc="Task to combine results of mapper task", target=ImageReducer
    )
    cellCentroidsX: pexConfig.ListField[float] = pexConfig.ListField(
        dtype=float,
        doc="Input X centroids around which to place subimages, relative to the bbox begin. "
        "If None, use grid config options below.",
        optional=True,
        default=None,
    )
    cellCentroidsY: pexConfig.ListField[float] = pexConfig.ListField(
        dtype=float,
        doc="Input Y centroids around which to place subimages, relative to the bbox begin. "
        "If None, use grid config options below.",
        optional=True,
        default=None,
    )
    cellSizeX: pexConfig.Field[float] = pexConfig.Field(
        dtype=float, doc="Dimensions of each grid cell in x direction", default=10.0, check=_finite_positive
    )
    cellSizeY: pexConfig.Field[float] = pexConfig.Field(
        dtype=float, doc="Dimensions of each grid cell in y direction", default=10.0, check=_finite_positive
    )
    gridStepX: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="Spacing between subsequent grid cells in x direction. "
        "If equal to cellSizeX, then there is no overlap in the x direction.",
        default=10.0,
        check=_finite_positive,
    )
    gridStepY: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="Spacing between subsequent grid cells in y direction. "
        "If equal to cellSizeY, then there is no overlap in the y direction.",
        default=10.0,
        check=_finite_positive,
    )
    borderSizeX: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="Dimensions of grid cell border in +/- x direction, to be used for generating `expanded` sub-exposures.",
        default=5.0,
        check=_finite_positive,
    )
    borderSizeY: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="Dimensions of grid cell border in +/- y direction, to be used for generating `expanded` sub-exposures.",
        default=5.0,
        check=_finite_positive,
    )
    adjustGridOption: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="Whether and how to adjust grid to fit evenly within, and cover entire image",
        default="spacing",
        allowed={
            "spacing": "adjust spacing between centers of grid cells (allowing overlaps)",
            "size": "adjust the sizes of the grid cells (disallowing overlaps)",
            "none": "do not adjust the grid sizes or spacing",
        },
    )
    scaleByFwhm: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool, doc="Scale cellSize/gridStep/borderSize/overlapSize by PSF FWHM rather than pixels?", default=True
    )
    returnSubImages: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool, doc="Return the input subExposures alongside the processed ones (for debugging)", default=False
    )
    ignoreMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        doc="Mask planes to ignore for sigma-clipped statistics",
        default=("INTRP", "EDGE", "DETECTED", "SAT", "CR", "BAD", "NO_DATA", "DETECTED_NEGATIVE"),
    )
    # -- not in LSST: how to run in parallel ----------------------------------------------------
    scheduler: pexConfig.Field[str | None] = pexConfig.Field(
        dtype=str,
        optional=True,
        default=None,
        doc="Dask scheduler: 'synchronous', 'threads', 'processes', 'distributed' (the active client), a "
        "scheduler address such as 'tcp://127.0.0.1:8786', or None for Dask's current default "
        "(an active distributed.Client if there is one, else threads).",
    )
    numWorkers: pexConfig.Field[int | None] = pexConfig.Field(
        dtype=int,
        optional=True,
        default=None,
        check=_positive,
        doc="Threads or processes for the local schedulers (None: one per core).",
    )
    maskFailures: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=False,
        doc="If a mapper raises on a cell (after numRetries retries), finish the run anyway: the cell's pixels "
        "that no other cell covers become NaN with the badMaskPlanes (INVALID_MAPREDUCE) set, and the result's "
        "`failures` and the metadata list each failed cell. If False, the run fails naming the cell.",
    )
    numRetries: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        default=0,
        check=lambda n: n >= 0,
        doc="Times to retry a cell whose mapper raises (for flaky mappers)",
    )
    cellTimeout: pexConfig.Field[float | None] = pexConfig.Field(
        dtype=float,
        optional=True,
        default=None,
        check=_finite_positive,
        doc="Seconds a mapper call on one cell may run (finite, > 0; None: no limit). A cell past it fails "
        "like a mapper that raised: it is retried (numRetries), then fails the run or is masked "
        "(maskFailures). Python cannot stop a thread, so the late call is abandoned, not stopped: it "
        "keeps running in the background (using a core) until it returns or its process ends.",
    )
    cutCompanions: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Cut images passed to run() as keyword arguments (an Exposure, MaskedImage or Image with the "
        "exposure's bbox, e.g. template=) to each cell's expanded box before they travel to the mapper. "
        "Mappers that address them by bbox see no difference.",
    )
    progressBar: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool, default=False, doc="Show a progress bar on stderr (and the dashboard link on a cluster)"
    )
    cellsPerTask: pexConfig.Field[int | str] = _AutoOrCountField(
        dtype=str,
        default="auto",
        doc="Cells one Dask task runs, one after another (each still on its own, with its own retries, timing "
        'and failure): "auto" packs about 100 ms of estimated work per task on a cluster or worker processes '
        "(10 ms on threads), keeping at least 4 tasks per worker; a positive int sets the most cells per "
        "task, 1 one task per cell. Never changes the output.",
    )
    stitchRegionSize: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        default=512,
        check=_positive,
        doc="Side in pixels of the output regions stitched as separate Dask tasks. Any value gives the "
        "same output bits; smaller regions use less memory per task, larger ones fewer tasks.",
    )


@dataclass(frozen=True)
class RunPlan:
    """One run, checked and planned by `ImageMapReduceTask.prepare` before any cell runs.

    Attributes
    ----------
    grid : `CellGrid`
        The run's cells and expanded cells.
    plan : `imagemapreduce.engine.ExposurePlan`
        What the engine runs: the mapper, the exposure, the mapper's arguments (the companion
        images cut per cell), the failure policy and the batching.
    operation : `str`
        The reduce operation the plan is for (``copy``, ``sum``, ``average``, ``none``,
        ``coaddPsf`` or ``catalog``).
    """

    grid: CellGrid
    plan: ExposurePlan
    operation: str


class ImageMapReduceTask(Task):
    """Split an Exposure into subExposures on a grid and perform the same operation on each.

    The mapper subtask runs on every cell, each cell as its own Dask task, and the reducer
    subtask stitches the results back into a new full-size exposure (``copy``, ``sum``,
    ``average``) or returns them (``none``, ``coaddPsf``). The output is bitwise identical
    whatever the scheduler and number of workers.

    Parameters
    ----------
    config : `ImageMapReduceConfig`, optional
        The configuration; ``config.mapper`` must be retargeted to a concrete `ImageMapper`.
    scheduler : `str` or ``distributed.Client``, optional
        Overrides ``config.scheduler`` (a client cannot live in a config).
    **kwargs
        Passed to `Task` (``name``, ``parentTask``, ``log``).

    Examples
    --------
    >>> config = ImageMapReduceConfig()
    >>> config.mapper.retarget(MyMapper)  # doctest: +SKIP
    >>> task = ImageMapReduceTask(config=config)  # doctest: +SKIP
    >>> newExposure = task.run(exposure).exposure  # doctest: +SKIP
    """

    ConfigClass = ImageMapReduceConfig
    _DefaultName = "ip_diffim_imageMapReduce"
    config: ImageMapReduceConfig
    # made by makeSubtask in __init__
    mapper: ImageMapper
    reducer: ImageReducer

    def __init__(self, *args: Any, scheduler: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        target = self.config.mapper.target
        if inspect.isabstract(target):
            raise TypeError(
                f"config.mapper targets the abstract {target.__name__}; subclass ImageMapper, implement "
                "run(), and select it with config.mapper.retarget(YourMapper)"
            )
        self._scheduler = scheduler
        self.boxes0: list[Box2I] | None = None
        self.boxes1: list[Box2I] | None = None
        self.makeSubtask("mapper")
        self.makeSubtask("reducer")

    # -- the grid --------------------------------------------------------------------------------
    def _generateGrid(
        self, exposure: Exposure, forceEvenSized: bool = False, **kwargs: Any
    ) -> tuple[list[Box2I], list[Box2I]]:
        """Compute the cells (``boxes0``) and expanded cells (``boxes1``) for an exposure.

        Returns
        -------
        boxes0, boxes1 : `list` [`Box2I`]
            Also kept in ``self.boxes0`` and ``self.boxes1`` and reused by later runs on exposures
            with the same bbox (and ``forceEvenSized``) until they are set to None; see `run`.
        """
        grid = self._computeGrid(exposure, forceEvenSized)
        # The task's lists are its own (users may edit them); the grid keeps the shared ones.
        boxes0, boxes1 = list(grid.boxes0), list(grid.boxes1)
        self.boxes0, self.boxes1 = boxes0, boxes1
        self._gridCache = _KeptGrid(grid.boxes0, grid.boxes1, grid, exposure.getBBox(), bool(forceEvenSized), True)
        return boxes0, boxes1

    generateGrid = _generateGrid

    def _computeGrid(self, exposure: Exposure, forceEvenSized: bool) -> CellGrid:
        config = self.config
        bbox = exposure.getBBox()
        if config.cellCentroidsX is not None and len(config.cellCentroidsX) > 0:
            centroidsY = config.cellCentroidsY if config.cellCentroidsY is not None else []
            if len(config.cellCentroidsX) != len(centroidsY):
                raise ValueError(
                    f"cellCentroidsX and cellCentroidsY must have equal length; got "
                    f"{len(config.cellCentroidsX)} and {len(centroidsY)}"
                )
            # LSST truncates here (int()), where the regular grid below rounds.
            cell = (truncate_pixels(config.cellSizeX, "cellSizeX"), truncate_pixels(config.cellSizeY, "cellSizeY"))
            border = (
                truncate_pixels(config.borderSizeX, "borderSizeX"),
                truncate_pixels(config.borderSizeY, "borderSizeY"),
            )
            return cell_boxes(
                bbox, np.asarray(config.cellCentroidsX), np.asarray(centroidsY), cell, border, forceEvenSized
            )
        fwhm = None
        if config.scaleByFwhm:
            if not exposure.hasPsf():
                raise ValueError(
                    "config.scaleByFwhm is True, so the grid is sized by the PSF's FWHM, but the exposure "
                    "has no PSF: set one with exposure.setPsf(...) or set config.scaleByFwhm = False"
                )
            fwhm = psf_fwhm(exposure.getPsf())
            self.log.info("Scaling grid parameters by %f", fwhm)
        cell = (rescale(config.cellSizeX, fwhm, "cellSizeX"), rescale(config.cellSizeY, fwhm, "cellSizeY"))
        step = (rescale(config.gridStepX, fwhm, "gridStepX"), rescale(config.gridStepY, fwhm, "gridStepY"))
        border = (rescale(config.borderSizeX, fwhm, "borderSizeX"), rescale(config.borderSizeY, fwhm, "borderSizeY"))
        # a ChoiceField: validate() keeps it to the allowed options
        adjust = cast(AdjustGridOption, config.adjustGridOption)
        cx, cy, cell = grid_centroids(bbox, cell, step, adjust)
        return cell_boxes(bbox, cx, cy, cell, border, forceEvenSized)

    def _currentGrid(self, exposure: Exposure, forceEvenSized: bool = False) -> CellGrid:
        """The grid for this run (see `run`): the kept one if it fits this exposure, else a new one.

        Raises `ValueError` for an empty exposure, and for boxes set by hand that do not lie inside it.
        """
        bbox = exposure.getBBox()
        if bbox.isEmpty():
            raise ValueError(
                f"the exposure is empty ({exposure.getWidth()} x {exposure.getHeight()} pixels); "
                "there is nothing to map"
            )
        boxes0, boxes1 = self.boxes0, self.boxes1
        if boxes0 is None or boxes1 is None:
            boxes0, boxes1 = self._generateGrid(exposure, forceEvenSized=forceEvenSized)
        if len(boxes0) != len(boxes1):
            raise ValueError("Bounding boxes list and expanded bounding boxes list are of different lengths")
        kept: _KeptGrid | None = getattr(self, "_gridCache", None)
        if kept is None or not kept.holds(boxes0, boxes1):
            # Boxes set (or edited) by hand: used as given, as LSST does.
            grid = CellGrid(boxes_to_array(boxes0), boxes_to_array(boxes1))
            _check_inside(grid, bbox)
            self._gridCache = _KeptGrid(list(boxes0), list(boxes1), grid, bbox, bool(forceEvenSized), False)
            return grid
        if kept.generated and (kept.bbox, kept.forceEvenSized) != (bbox, bool(forceEvenSized)):
            # LSST reuses a grid laid for another bbox, which leaves most of a larger exposure NaN.
            self.log.info("Laying a new grid: the kept one is for bbox %s, this exposure has bbox %s", kept.bbox, bbox)
            self._generateGrid(exposure, forceEvenSized=forceEvenSized)
            return self._gridCache.grid
        if not kept.generated and kept.bbox != bbox:
            _check_inside(kept.grid, bbox)
            warnings.warn(
                f"task.boxes0/boxes1 were set by hand and last used for an exposure with bbox {kept.bbox}; they "
                f"are used as given for this one, with bbox {bbox}. Set task.boxes0 = task.boxes1 = None to lay "
                "a grid for this exposure, or assign boxes made for it",
                UserWarning,
                stacklevel=5,  # past prepare and the run method, as the runs reach this through prepare
            )
            kept.bbox = bbox
        return kept.grid

    def plotBoxes(self, fullBBox: Box2I, skip: int = 3, ax: Any = None) -> Any:
        """Plot every ``skip``-th cell (dashed) and expanded cell (dotted) with matplotlib.

        Returns the matplotlib Axes. Raises `RuntimeError` if no grid has been generated.
        """
        if self.boxes0 is None or self.boxes1 is None:
            raise RuntimeError("Cannot plot boxes. Run _generateGrid first.")
        ax = plot_box_grid(self.boxes0[::skip], fullBBox, ax=ax, ls="--")
        ax.set_prop_cycle(None)  # the same colour for a cell and its expanded cell
        return plot_box_grid(self.boxes1[::skip], fullBBox, ax=ax, ls=":")

    # -- running ---------------------------------------------------------------------------------
    @timeMethod
    def run(self, exposure: Exposure, **kwargs: Any) -> Struct:
        """Perform a map-reduce operation on the given exposure.

        Parameters
        ----------
        exposure : `Exposure`
            The full exposure to process.
        **kwargs
            Passed to the mapper's and the reducer's ``run``. ``doClone=True`` gives each mapper
            private copies of its sub-exposures; ``forceEvenSized=True`` makes every box even-sized.

        Returns
        -------
        result : `Struct`
            The reducer's output: ``exposure`` for copy/sum/average, ``result`` for none/coaddPsf,
            ``catalog`` (an astropy ``Table``, each source kept once) for catalog.

        Raises
        ------
        ValueError
            For an empty exposure, or boxes set by hand that do not lie inside it.
        TypeError
            For an integer exposure when the reduce writes NaN (copy, average, or ``maskFailures``).

        Warns
        -----
        UserWarning
            When LSST's grid drops one-pixel cells and so leaves pixels (or the whole grid) without a
            cell, and when boxes set by hand are reused for an exposure with another bbox.

        Notes
        -----
        The grid is laid on the first run and kept in ``boxes0`` and ``boxes1``. A later run on an
        exposure with the same bbox and ``forceEvenSized`` reuses it; one with another bbox lays a new
        grid (LSST reuses the old one, which leaves most of a larger exposure NaN). Boxes assigned by
        hand are used as given, as in LSST, provided they lie inside the exposure.
        """
        self.log.info("Mapper sub-task: %s", self.mapper._DefaultName)
        prepared = self.prepare(exposure, kwargs)
        grid, plan, operation = prepared.grid, prepared.plan, prepared.operation
        self.log.info("Processing %d sub-exposures", len(grid))
        with self.scheduling() as scheduler:
            self.log.info("Reducer sub-task: %s", self.reducer._DefaultName)
            if operation not in IMAGE_REDUCE_OPERATIONS or not self.hasStandardReducer():
                with progress_bar(self.config.progressBar, len(grid), scheduler):
                    outcomes = execute_cells(plan, scheduler, self.config.stitchRegionSize)
                self.recordCells([o.summary() for o in outcomes], [o.failure for o in outcomes if o.failure])
                extra = {"boxes0": grid.boxes0} if operation == "catalog" else {}
                result = self.reducer.run([o.result for o in outcomes], exposure, **kwargs, **extra)
                return self.attachFailures(result, [o.failure for o in outcomes if o.failure])
            unnamed = exposure.mask.getUnnamedBitMask()  # read once, for the bad planes and the cells' planes
            output, badBits = self.reducer.prepareOutput(exposure, unnamedBits=unnamed)
            layout = PlaneLayout(output.mask.getMaskPlaneDict(), unnamed)
            with progress_bar(self.config.progressBar, len(grid), scheduler) as onRegion:
                report = execute_stitch(
                    plan, output, badBits, self.config.stitchRegionSize, scheduler, onRegion, layout=layout
                )
        self.recordCells(report.summaries, report.failures)
        result = Struct(exposure=self.reducer.finishOutput(output, report.stats, report.components))
        return self.attachFailures(result, report.failures)

    # -- the steps every run shares (`run`, and `runToZarr` and `runToParquet` in their modules) --
    def prepare(
        self, exposure: Exposure, kwargs: Mapping[str, Any] | None = None, operation: str | None = None
    ) -> RunPlan:
        """Check a run and plan it, before any cell runs.

        Lays (or reuses) the grid as `run` describes, refuses what the reduce could not do, warns
        about pixels no cell covers, calls the mapper's ``prepareRun`` hook and cuts the companion
        images: everything `run`, `runToZarr` and `runToParquet` do before they schedule.

        Parameters
        ----------
        exposure : `Exposure`
            The run's input.
        kwargs : mapping, optional
            The run's keyword arguments, as given to `run` (``doClone``, ``forceEvenSized`` and the
            mapper's own).
        operation : `str`, optional
            The reduce operation to plan for; default ``config.reducer.reduceOperation``.

        Returns
        -------
        prepared : `RunPlan`
            The grid, the engine's plan and the operation.

        Raises
        ------
        ValueError, TypeError
            As `run`, before any work starts.
        """
        kwargs = dict(kwargs or {})
        operation = self.reducer.config.reduceOperation if operation is None else operation
        grid = self._currentGrid(exposure, kwargs.get("forceEvenSized", False))
        return RunPlan(grid, self._makePlan(exposure, grid, kwargs, operation), operation)

    @contextlib.contextmanager
    def scheduling(self) -> Iterator[SchedulerChoice]:
        """The run's scheduler (``scheduler=``, else ``config.scheduler``), described in the metadata.

        Yields
        ------
        scheduler : `imagemapreduce.engine.SchedulerChoice`
            Open while the block runs; ``metadata["scheduler"]`` names it, and on leaving the
            bytes it moved go into the metadata (``bytesMoved`` and its parts).
        """
        with self._chooseScheduler() as scheduler:
            self.metadata["scheduler"] = scheduler.describe()
            yield scheduler

    def hasStandardReducer(self) -> bool:
        """Whether the reducer subtask runs `ImageReducer`'s own ``run`` (the engine then stitches).

        A reducer that overrides ``run`` is given the mapper results, as in LSST, so the runs that
        stitch region by region (`runToZarr`, `runToParquet`) need the standard one.
        """
        return type(self.reducer).run is ImageReducer.run

    def recordCells(
        self, cells: Sequence[tuple[int, float, float, str]], failures: Sequence[FailedCell] | None = None
    ) -> None:
        """Put per-cell timing (and any masked failures) into the metadata, in grid order.

        Parameters
        ----------
        cells : sequence of (`int`, `float`, `float`, `str`)
            Each cell's grid index, wall time, CPU time and worker, in grid order.
        failures : sequence of `imagemapreduce.engine.FailedCell`, optional
            The cells that failed (with ``maskFailures``).
        """
        self.metadata["numCells"] = len(cells)
        self.metadata["numFailedCells"] = len(failures or [])
        self.metadata["failedCells"] = [str(f) for f in failures or []]
        self.metadata["cellWallTime"] = [float(c[1]) for c in cells]
        self.metadata["cellCpuTime"] = [float(c[2]) for c in cells]
        self.metadata["cellWorker"] = [str(c[3]) for c in cells]
        if cells:
            self.metadata["cellWallTimeTotal"] = float(sum(c[1] for c in cells))

    def attachFailures(self, result: Struct, failures: Sequence[FailedCell]) -> Struct:
        """Return ``result`` with ``failures`` (a list, logged) when ``config.maskFailures``, else as it is."""
        if self.config.maskFailures:
            result.failures = list(failures)
            for failure in failures:
                self.log.warning("Masked failed %s", failure)
        return result

    def _makePlan(self, exposure: Exposure, grid: CellGrid, kwargs: dict[str, Any], operation: str) -> ExposurePlan:
        """Everything the engine needs for one run, checked before any work starts."""
        if operation in IMAGE_REDUCE_OPERATIONS:
            if self.hasStandardReducer():
                _check_holds_nan(exposure, operation, self.config.maskFailures)
            _warn_dropped(grid, exposure.getBBox())
        doClone = bool(kwargs.get("doClone", False))
        mapperKwargs = {k: v for k, v in kwargs.items() if k != "doClone"}
        self.mapper.prepareRun(exposure, grid.boxes0, **mapperKwargs)
        companions = companion_images(mapperKwargs, exposure.getBBox()) if self.config.cutCompanions else {}
        for name in companions:
            del mapperKwargs[name]
        makeWeighting = getattr(self.reducer.config, "makeWeighting", None)
        return ExposurePlan(
            mapper=self.mapper,
            exposure=exposure,
            grid=grid,
            kwargs=mapperKwargs,
            operation=operation,
            do_clone=doClone,
            return_sub_images=self.config.returnSubImages,
            weighting=makeWeighting() if makeWeighting is not None else None,
            policy=FailurePolicy(self.config.numRetries, self.config.maskFailures, self.config.cellTimeout),
            companions=companions,
            cells_per_task=check_cells_per_task(self.config.cellsPerTask, "config.cellsPerTask"),
        )

    @timeMethod
    def runToZarr(
        self,
        exposure: Exposure,
        path: str,
        *,
        overwrite: bool = False,
        resume: bool = False,
        storage_options: dict | None = None,
        chunks: Any = None,
        shards: Any = None,
        **kwargs: Any,
    ) -> Struct:
        """Map-reduce ``exposure`` into a zarr store, region by region, never holding the output in memory.

        Each output region is stitched and written by its own task, with a record of its
        checksum, PSF components and failures, so a run interrupted by a crash or a kill resumes
        with ``resume=True``, computing only what is missing, with the identical result, PSF and
        failure report. The store has one writer at a time; a resume accepts only the same job
        (the same input pixels, grid, mapper, configuration and run arguments) and recomputes any
        region that no longer matches its checksum. See :ref:`guarantees`.

        Parameters
        ----------
        exposure : `Exposure`
            The input; its planes may be lazy (Dask arrays, e.g. from `open_zarr_exposure`).
        path : `str`
            The output store: a directory, or an fsspec URL (``s3://bucket/out.zarr``, ``gs://``,
            ``memory://``, ``file://``). An existing store is refused unless ``overwrite`` or
            ``resume``; it may not be a store an input is read from.
        overwrite : `bool`
            Replace an existing store (never a store being written, nor a path that is no store).
        resume : `bool`
            Continue an interrupted run of the same job (same input, grid, mapper and config).
        storage_options : `dict`, optional
            For a URL: the fsspec file system's options (e.g. ``endpoint_url``, ``key``); without
            them credentials come from the standard environment (``AWS_*`` for S3).
        chunks, shards : `int` or (`int`, `int`), optional
            The output planes' zarr chunks (default: one per region) and shards (default: none).
            The unit written (the shard, else the chunk) must divide ``stitchRegionSize``, so
            that regions written at once never share an object.
        **kwargs
            As for `run`.

        Returns
        -------
        result : `Struct`
            ``exposure`` (lazy, read from the store), ``path``, ``regionsWritten`` (by this
            call), ``regionsReused`` (verified and kept), ``regionsRepaired`` (found changed and
            recomputed) and, with ``maskFailures``, ``failures`` (of the whole job).

        Raises
        ------
        imagemapreduce.io.StoreBusyError
            Another run is writing the store.
        ValueError
            The store belongs to another job (the message names what differs), or is the input.
        """
        from .zarr_run import run_to_zarr  # deferred: it loads zarr, fsspec and astropy

        return run_to_zarr(
            self,
            exposure,
            path,
            overwrite=overwrite,
            resume=resume,
            storage_options=storage_options,
            chunks=chunks,
            shards=shards,
            **kwargs,
        )

    @timeMethod
    def runToParquet(
        self,
        exposure: Exposure,
        path: str,
        *,
        overwrite: bool = False,
        resume: bool = False,
        storage_options: dict | None = None,
        **kwargs: Any,
    ) -> Struct:
        """Map ``exposure`` to a catalog (``reduceOperation="catalog"``) written as a Parquet dataset.

        The cells are grouped into parts by where their cores lie (one part per
        ``stitchRegionSize`` square); each part's owned rows (see `imagemapreduce.catalog`) are
        written, with a record of the job and the file's checksum, as soon as its cells finish.
        An interrupted run resumes with ``resume=True``, running only the cells of the parts
        that are missing or fail their check, with the identical result; another job is refused.
        One writer at a time, as for `runToZarr`.

        Parameters
        ----------
        exposure : `Exposure`
            The input; its planes may be lazy.
        path : `str`
            The dataset's folder (``catalog.parquet``) or an fsspec URL.
        overwrite, resume : `bool`
            Replace an existing catalog, or finish its interrupted run.
        storage_options : `dict`, optional
            For a URL: the fsspec file system's options.
        **kwargs
            As for `run`.

        Returns
        -------
        result : `Struct`
            ``catalog`` (a lazy ``dask.dataframe.DataFrame`` of the dataset, one partition per
            part; `imagemapreduce.io.read_catalog` reads it as an astropy ``Table``), ``path``,
            ``partsWritten``, ``partsReused``, ``partsRepaired``, ``rows``,
            ``dropped_outside_cores``, ``dropped_duplicates`` and, with ``maskFailures``,
            ``failures``.
        """
        from .catalog_run import run_to_parquet  # deferred: it loads fsspec and astropy

        return run_to_parquet(
            self, exposure, path, overwrite=overwrite, resume=resume, storage_options=storage_options, **kwargs
        )

    def _runMapper(self, exposure: Exposure, doClone: bool = False, **kwargs: Any) -> list[Struct]:
        """Run the mapper on every cell (in parallel) and return the results in grid order.

        With ``maskFailures``, a failed cell's result is None.
        """
        plan = self.prepare(exposure, {**kwargs, "doClone": doClone}, "none").plan
        with self._chooseScheduler() as scheduler:
            outcomes = execute_cells(plan, scheduler, self.config.stitchRegionSize)
        self.recordCells([o.summary() for o in outcomes], [o.failure for o in outcomes if o.failure])
        return [o.result for o in outcomes]

    def _reduceImage(self, mapperResults: list[Struct], exposure: Exposure, **kwargs: Any) -> Struct:
        """Reduce mapper results with the reducer subtask (serially)."""
        return self.reducer.run(mapperResults, exposure, **kwargs)

    @contextlib.contextmanager
    def _chooseScheduler(self) -> Iterator[SchedulerChoice]:
        """The run's scheduler; on leaving, the bytes it moved go into the metadata."""
        scheduler = self._scheduler if self._scheduler is not None else self.config.scheduler
        with choose_scheduler(scheduler, self.config.numWorkers) as choice:
            try:
                yield choice
            finally:
                self._recordTraffic(choice.traffic())

    def _recordTraffic(self, traffic: dict[str, int]) -> None:
        """``bytesMoved`` (the total) and its parts: ``bytesScattered``, ``bytesGathered``, ``bytesBetweenWorkers``.

        Also ``bytesSharedMemory``: pixels a same-host cluster read and wrote through shared memory.
        """
        self.metadata["bytesMoved"] = traffic["total"]
        for kind in TRAFFIC_KINDS:
            self.metadata["bytes" + kind[0].upper() + kind[1:]] = traffic[kind]
        self.metadata["bytesSharedMemory"] = traffic.get("sharedMemory", 0)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if isinstance(state, dict):
            state = dict(state)
            state["_scheduler"] = None  # a client does not travel with the task
            state.pop("_gridCache", None)
        return state


@dataclass
class _KeptGrid:
    """The grid a task keeps between runs, with the boxes lists it was made from and what it was laid for.

    ``boxes0``/``boxes1`` are snapshots (new lists holding the same boxes), so that comparing them
    with the task's lists is cheap (element identity) and notices lists edited in place.
    ``generated``: laid by `ImageMapReduceTask._generateGrid` (else the boxes were set by hand).
    """

    boxes0: list[Box2I]
    boxes1: list[Box2I]
    grid: CellGrid
    bbox: Box2I
    forceEvenSized: bool
    generated: bool

    def holds(self, boxes0: list[Box2I], boxes1: list[Box2I]) -> bool:
        """Whether these are (still) the boxes the grid was made from."""
        return boxes0 == self.boxes0 and boxes1 == self.boxes1


def _check_inside(grid: CellGrid, bbox: Box2I) -> None:
    """Refuse boxes set by hand that are empty or reach outside the exposure (no cell could be cut)."""
    for name, boxes in (("boxes0", grid.cells), ("boxes1", grid.expanded)):
        bad = (
            (boxes[:, 0] < bbox.getMinX())
            | (boxes[:, 1] < bbox.getMinY())
            | (boxes[:, 2] > bbox.getMaxX())
            | (boxes[:, 3] > bbox.getMaxY())
            | (boxes[:, 2] < boxes[:, 0])
            | (boxes[:, 3] < boxes[:, 1])
        )
        if np.any(bad):
            index = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"task.{name}[{index}] = {grid.boxes0[index] if name == 'boxes0' else grid.boxes1[index]} is "
                f"empty or not inside the exposure's bbox {bbox}; boxes set by hand are used as given, so they "
                "must lie inside the exposure: clip them to it, or set task.boxes0 = task.boxes1 = None to lay "
                "a grid for this exposure"
            )


def _check_holds_nan(exposure: Exposure, operation: str, maskFailures: bool) -> None:
    """Refuse, before any cell runs, an integer exposure that the reduce would have to write NaN into.

    copy and average mark pixels without a valid result NaN (and average divides); a masked failure
    makes its cell's pixels NaN whatever the operation. An integer plane holds neither.
    """
    if operation not in ("copy", "average") and not maskFailures:
        return
    for plane in ("image", "variance"):
        dtype = np.dtype(getattr(exposure, plane).dtype)
        if dtype.kind not in "fc":
            why = f"reduceOperation={operation!r}" if operation in ("copy", "average") else "maskFailures=True"
            raise TypeError(
                f"the exposure's {plane} plane is {dtype}, but {why} writes NaN (pixels without a valid result), "
                "which an integer plane cannot hold; convert the exposure to floating point first, e.g. "
                "ExposureF.from_arrays(exposure.image.array.astype(np.float32), exposure.mask.array, "
                "exposure.variance.array.astype(np.float32), xy0=exposure.getXY0(), psf=exposure.getPsf())"
            )


def _warn_dropped(grid: CellGrid, bbox: Box2I) -> None:
    """Warn when LSST's rule (cells of one pixel or less are dropped) leaves pixels, or the whole grid, empty.

    Gaps of a grid step larger than the cells, or centroids that cover part of the image, are
    what the user asked for, as in LSST, and draw no warning; nor do boxes set by hand, unless
    there are none.
    """
    lost = dropped_pixels(grid, bbox)
    if len(grid) and not lost:
        return
    size = f"{bbox.getWidth()} x {bbox.getHeight()}"
    outcome = "the output holds no mapper result (NaN for copy and average, 0 for sum)"
    if not len(grid) and grid.dropped is None:
        message = f"task.boxes0 is empty, so no mapper runs and {outcome}: assign boxes, or set them to None"
    else:
        where = (
            f"the grid over the exposure's {size} bbox has no cells: every cell is one pixel or less, and LSST's "
            "grid drops those"
            if not len(grid)
            else f"{lost} pixel{'s' if lost != 1 else ''} of the exposure's {size} bbox lie only in one-pixel cells, "
            f"which LSST's grid drops ({0 if grid.dropped is None else len(grid.dropped)} dropped)"
        )
        message = (
            f"{where}, so {outcome} there: make the cells at least 2 pixels (cellSizeX/cellSizeY, in units of "
            "the PSF FWHM when scaleByFwhm), or lay a grid that does not end in a one-pixel cell "
            "(adjustGridOption='spacing')"
        )
    warnings.warn(message, UserWarning, stacklevel=5)  # from _makePlan, through prepare and the run method
