"""Building the graph: one task per batch of neighbouring cells, one task per output region.

A map-reduce becomes a graph with one task per batch of cells (`batches`: the mapper on each
cell's expanded box in turn, from one cut holding the batch's boxes) and one task per output
region (stitching, in grid order, the cells whose expanded box overlaps the region). Regions are
disjoint and every stitching step is per pixel, so the output is bitwise identical to one
whole-image loop whatever the scheduler, the number of workers, the batching or the region size.

On the shared-memory schedulers (synchronous, threads) each region writes straight into the
output and reads whole batches; on the others (processes, a cluster) a small "pick" task next to
each batch hands a region just the cells it needs, so no cell result moves more than once, and
regions come back as arrays that are copied in as they arrive, so no path ever holds every
cell's result at once. Plain-array cells that tile the image without overlap write their own
cores instead, and the graph is the batches alone. Regions can also be the chunks of a lazy
Dask array (for Dask input, or for writing to zarr region by region).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
from dask.sizeof import sizeof

from .._gc_pause import builds_graph
from ..geom import Box2I, Point2I
from ..image import Exposure, Mask
from ..image._mask import remap_mask_bits
from ..stitch import RegionAccumulator, RegionStats, WeightedRegionAccumulator, all_finite, covers, mark_lost
from ..stitch_planes import NewPlane, PlaneLayout, bit_moves, conform_piece_mask, merge_new_planes, region_planes
from ..weights import Weighting
from .batches import auto_cells_per_task, pack_cells
from .cells import WRITTEN, CellOutcome, CellSummary, FailedCell, Piece
from .plans import ArrayPlan, ExposurePlan
from .scheduling import SchedulerChoice
from .shared_memory import SharedOutput
from .sizes import OBJECT_BYTES, nbytes_of
from .sources import materialize

__all__ = [
    "StitchReport",
    "StitchOutcome",
    "region_boxes",
    "execute_cells",
    "execute_parts",
    "execute_stitch",
    "execute_to_store",
    "lazy_catalog",
    "lazy_stitch",
    "default_layout",
    "settle_mask_planes",
]

Plan = ExposurePlan | ArrayPlan


@dataclass(kw_only=True)
class RegionTask:
    """One output region: its box, how to stitch, and either where to write or the input mask."""

    bbox: Box2I
    operation: str
    dtype: Any
    bad_bits: int
    extract: Callable[[CellOutcome], Piece]
    with_variance: bool
    #: The cells (grid indices) whose summaries, PSF components and failures the region reports:
    #: those whose result box starts in it, so that each cell is reported by one region only.
    reported_cells: tuple[int, ...]
    #: Views of the output's (image, mask, variance) under the region, written in place (shared
    #: memory); None: the region returns its planes instead.
    output_views: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None
    weighting: Weighting | None = None
    writer: Any = None
    index: tuple[int, int] = (0, 0)
    # The output mask's planes, to which each result's mask is renumbered (None: results have no mask).
    layout: PlaneLayout | None = None
    #: The cells (grid indices) the region stitches; its inputs may hold others, which it leaves out.
    cells: frozenset[int] = frozenset()

    @property
    def weighted(self) -> bool:
        """Whether this is a non-uniform ``average`` (stitched by the weighted accumulator)."""
        return self.operation == "average" and self.weighting is not None and not self.weighting.is_uniform

    def accumulator(
        self,
        image: np.ndarray | None,
        mask: np.ndarray | None,
        variance: np.ndarray | None,
        *,
        track_count: bool = False,
        prefilled: bool = False,
        per_pixel_counts: bool = True,
    ) -> RegionAccumulator | WeightedRegionAccumulator:
        """LSST's exact accumulator, or the weighted one for a non-uniform ``average``."""
        if self.weighted:
            return WeightedRegionAccumulator(
                bbox=self.bbox,
                mask=mask,
                dtype=self.dtype,
                weighting=self.weighting,
                image=image,
                variance=variance,
                with_variance=self.with_variance,
                per_pixel_counts=per_pixel_counts or track_count,
            )
        return RegionAccumulator(
            bbox=self.bbox,
            mask=mask,
            dtype=self.dtype,
            operation=self.operation,
            image=image,
            variance=variance,
            with_variance=self.with_variance,
            track_count=track_count,
            prefilled=prefilled,
            per_pixel_counts=per_pixel_counts,
        )


@dataclass
class StitchOutcome:
    """What a region task returns: overlap statistics, its reported cells' summaries, arrays when not shared."""

    bbox: Box2I
    stats: RegionStats
    summaries: list[CellSummary] = field(default_factory=list)
    psf_components: list[tuple[Any, Box2I, float]] = field(default_factory=list)
    planes: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None
    failures: list[FailedCell] = field(default_factory=list)
    #: Mask planes the region's results have and the output had not, with the bits it gave them.
    new_planes: dict[str, NewPlane] = field(default_factory=dict)


@sizeof.register(StitchOutcome)
def _stitch_outcome_bytes(outcome: StitchOutcome) -> int:
    """A region's planes, for Dask's transfer counts (see `imagemapreduce.engine.sizes`)."""
    return nbytes_of(outcome.planes) + OBJECT_BYTES


def stitch_region(task: RegionTask, input_mask: np.ndarray | None, outcomes: Sequence[CellOutcome]) -> StitchOutcome:
    """Stitch, in grid order, the cells that overlap one region."""
    if task.output_views is not None:  # shared memory: the output is a clone of the input, mask included
        image, mask, variance = task.output_views
    else:
        image, variance = None, None
        mask = None if input_mask is None else np.array(input_mask, dtype=np.int32, copy=True)
    failed = [o.failure for o in outcomes if o.failure is not None]
    done = [(o, task.extract(o)) for o in outcomes if o.failure is None]
    done, new_planes = _conform_masks(task.layout, done)
    weights = [_data_weights(task, piece) for _, piece in done]
    acc = _accumulate(task, [p for _, p in done], weights, (image, mask, variance), bool(failed))
    reported_cells = set(task.reported_cells)
    summaries, components = [], []
    for (outcome, piece), w in zip(done, weights):
        if outcome.index in reported_cells:
            summaries.append(outcome.summary())
            components.append((piece.psf, piece.bbox, 1.0 if w is None else _psf_weight(task, w)))
    summaries += [o.summary() for o in outcomes if o.failure is not None and o.index in reported_cells]
    stats = acc.finish(task.bad_bits)
    for failure in failed:
        mark_lost(acc, failure.bbox, task.bad_bits)
    planes = None
    if task.output_views is None:
        assert acc.image is not None  # the accumulator made its image (its __post_init__)
        planes = (acc.image, acc.mask, acc.variance)
    reported_failures = [f for f in failed if f.index in reported_cells]
    stitched = StitchOutcome(task.bbox, stats, summaries, components, planes, reported_failures, new_planes)
    if task.writer is not None:  # the writer records the region's report with its pixels
        task.writer.write(task.index, stitched)
        stitched.planes = None
    return stitched


def _psf_weight(task: RegionTask, weights: np.ndarray) -> float:
    """The CoaddPsf weight of a piece with data weights (only a weighted task has those)."""
    assert task.weighting is not None  # `_data_weights` gives weights only with a weighting
    return task.weighting.psf_weight(weights)


def _conform_masks(
    layout: PlaneLayout | None, done: list[tuple[CellOutcome, Piece]]
) -> tuple[list[tuple[CellOutcome, Piece]], dict[str, NewPlane]]:
    """Renumber each result's mask bits to the region's planes, by name (see `stitch_planes`)."""
    if layout is None:
        return done, {}
    planes, new = region_planes(layout, [(o.index, piece.planes) for o, piece in done])
    conformed = [(o, piece._replace(mask=conform_piece_mask(piece.mask, piece.planes, planes))) for o, piece in done]
    return conformed, new


def _data_weights(task: RegionTask, piece: Piece) -> np.ndarray | None:
    """A piece's weights when they depend on its pixels (custom, inverse variance); else None.

    Windows depend on position only: the accumulator works them out on the part of each piece
    inside the region, and their PSF weight is 1.
    """
    if not task.weighted or task.weighting is None or task.weighting.is_window:  # weighted: there is one
        return None
    return task.weighting.pixel_weights(piece.bbox, piece.image, piece.variance)


def _accumulate(
    task: RegionTask, pieces: list[Piece], weights: list[np.ndarray | None], planes: tuple, lost: bool
) -> RegionAccumulator | WeightedRegionAccumulator:
    """Add the pieces to a new accumulator for the region, in grid order, and finish it.

    A sum or an average adds optimistically: every piece as if all its pixels were valid, then
    one check that the region's sums are finite (a NaN or infinity anywhere in a piece would show
    there). That is one pass over the region instead of one over each piece; if the check fails,
    the region is stitched again the careful way, pixel validity first. ``lost``: some cell of the
    region failed, whose pixels must be found (so counts are kept per pixel).
    """
    image, mask, variance = planes
    if task.operation in ("sum", "average") and not lost:
        acc = task.accumulator(image, mask, variance, per_pixel_counts=False)
        for piece, w in zip(pieces, weights):
            acc.add(piece.bbox, piece.image, piece.variance, piece.mask, w, all_valid=True)
        if acc.sums_finite():
            return acc
    valid = [all_finite(*_overlap_planes(piece, task.bbox)) for piece in pieces]
    # copy fills the region with NaN first, to mark what no cell covers; skip that when valid
    # results are known to cover all of it.
    prefilled = task.operation == "copy" and all(valid) and covers(task.bbox, [p.bbox for p in pieces])
    # With every result valid and none lost, an average's counts follow from the boxes alone.
    acc = task.accumulator(
        image, mask, variance, track_count=lost, prefilled=prefilled, per_pixel_counts=lost or not all(valid)
    )
    for piece, w, all_valid in zip(pieces, weights, valid):
        acc.add(piece.bbox, piece.image, piece.variance, piece.mask, w, all_valid=all_valid)
    return acc


def _overlap_planes(piece: Piece, region: Box2I) -> tuple[np.ndarray, np.ndarray | None]:
    """The piece's image and variance inside ``region`` (empty arrays where they do not meet)."""
    overlap = piece.bbox.clipped_to(region)
    if overlap.isEmpty():
        return np.zeros(0, np.float32), None
    cell = overlap.slices(piece.bbox.getBegin())
    return piece.image[cell], None if piece.variance is None else piece.variance[cell]


def region_boxes(bbox: Box2I, region_size: int) -> list[list[Box2I]]:
    """Tile ``bbox`` with square regions of ``region_size`` pixels (smaller at the far edges), by row."""
    if region_size < 1:
        raise ValueError(f"stitchRegionSize must be at least 1 pixel, got {region_size}")
    rows = []
    for y0 in range(bbox.getBeginY(), bbox.getEndY(), region_size):
        y1 = min(y0 + region_size, bbox.getEndY()) - 1
        row = []
        for x0 in range(bbox.getBeginX(), bbox.getEndX(), region_size):
            x1 = min(x0 + region_size, bbox.getEndX()) - 1
            row.append(Box2I(Point2I(x0, y0), Point2I(x1, y1)))
        rows.append(row)
    return rows


def _region_members(boxes: np.ndarray, bbox: Box2I, region_size: int) -> tuple[dict, dict]:
    """The cells of each region (row, column), in grid order, and the cells each region reports.

    ``boxes`` (``(n, 4)``) are where each cell's result may lie (`ExposurePlan.result_boxes`). A
    region takes every cell whose box overlaps it; it reports the cells whose box starts in it,
    so each cell is reported once. Both map a region to an int array of cells.
    """
    ex = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    x0, y0 = bbox.getBeginX(), bbox.getBeginY()
    c0, r0 = (ex[:, 0] - x0) // region_size, (ex[:, 1] - y0) // region_size
    c1, r1 = (ex[:, 2] - x0) // region_size, (ex[:, 3] - y0) // region_size
    width = int(c1.max()) + 1 if len(ex) else 1
    # Every (cell, region) pair: each cell repeated once per region its box spans, then grouped by region.
    across = c1 - c0 + 1
    count = (r1 - r0 + 1) * across
    cell = np.repeat(np.arange(len(ex)), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    spans = np.repeat(across, count)
    rows, cols = np.repeat(r0, count) + offset // spans, np.repeat(c0, count) + offset % spans
    return _grouped(rows * width + cols, cell, width), _grouped(r0 * width + c0, np.arange(len(ex)), width)


def _grouped(keys: np.ndarray, cells: np.ndarray, width: int) -> dict[tuple[int, int], np.ndarray]:
    """``cells`` grouped by region key (``row * width + column``), each group in grid order."""
    if not len(keys):
        return {}
    order = np.lexsort((cells, keys))
    keys, cells = keys[order], cells[order]
    edges = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate([[0], edges]).tolist()
    return {divmod(int(keys[start]), width): group for start, group in zip(starts, np.split(cells, edges))}


def region_membership(plan: Plan, region_size: int) -> tuple[dict, dict]:
    """`_region_members` for a plan's cells: the cells each region stitches, and those it reports."""
    return _region_members(plan.result_boxes, plan.bbox, region_size)


@dataclass
class CellLayer:
    """The batch tasks of a graph: which cells run, packed how, under which key name."""

    name: str
    batches: list[np.ndarray]
    graph: dict
    #: For each cell of the grid, the batch that runs it (-1: not run).
    batch_of: np.ndarray
    #: Side (pixels) of the square tiles the batches were packed by; 0 for one cell per batch.
    tile: int = 0

    @property
    def keys(self) -> list[tuple[str, int]]:
        """The batch tasks' keys, in batch order."""
        return [(self.name, number) for number in range(len(self.batches))]

    @property
    def cell_count(self) -> int:
        """How many cells the batches run."""
        return int(sum(len(b) for b in self.batches))


def cell_layer(
    plan: Plan,
    name: str,
    region_size: int,
    scheduler: SchedulerChoice | None,
    cells: np.ndarray | None = None,
    direct_out: Any = None,
    largest_tile: int | None = None,
) -> CellLayer:
    """Pack the cells ``cells`` (all when None) into batches for ``scheduler`` and build their tasks.

    ``plan.cells_per_task`` decides the packing: an int (at most that many cells per task), or
    ``"auto"`` (`auto_cells_per_task`: by estimated work and the scheduler's workers).
    ``largest_tile`` caps the side of the tiles batches are packed by (see `pack_cells`).
    """
    if cells is None:
        cells = np.arange(len(plan.grid))
    if plan.cells_per_task == "auto":
        kind = scheduler.kind if scheduler is not None else "threads"
        workers = scheduler.worker_count() if scheduler is not None else 1
        per_task = auto_cells_per_task(plan.grid.expanded[cells], workers, kind)
    else:
        per_task = cast(int, plan.cells_per_task)  # "auto" or a positive int (check_cells_per_task)
    origin = plan.bbox.getBegin()
    batches, tile = pack_cells(plan.grid.cells, cells, (origin.x, origin.y), region_size, per_task, largest_tile)
    batch_of = np.full(len(plan.grid), -1, dtype=np.int64)
    if batches:  # one scatter for all batches, not one per batch (a million of them, unbatched)
        sizes = np.fromiter(map(len, batches), dtype=np.int64, count=len(batches))
        batch_of[np.concatenate(batches)] = np.repeat(np.arange(len(batches)), sizes)
    return CellLayer(name, batches, plan.batch_graph(name, batches, direct_out), batch_of, tile)


def flat_outcomes(parts: Sequence[Sequence[CellOutcome]]) -> list[CellOutcome]:
    """The cell outcomes of several batches (or picks of them), in grid order."""
    outcomes = [o for part in parts for o in part]
    outcomes.sort(key=lambda o: o.index)
    return outcomes


def pick_cells(outcomes: Sequence[CellOutcome], wanted: frozenset[int]) -> list[CellOutcome]:
    """The outcomes of one batch that a region needs (run next to the batch, so only those travel)."""
    return [o for o in outcomes if o.index in wanted]


@dataclass
class RegionGroup:
    """Neighbouring regions stitched one after another by one task (the regions of one batch tile)."""

    regions: list[RegionTask]
    #: The union of the regions' boxes (what the task's input mask covers).
    bbox: Box2I


def stitch_group(
    group: RegionGroup, parts: Sequence[Sequence[CellOutcome]], input_mask: np.ndarray | None = None
) -> list[StitchOutcome]:
    """`stitch_region` for each region of the group, on its cells gathered from the batches (or picks)."""
    outcomes = flat_outcomes(parts)
    origin = group.bbox.getBegin()
    whole = None if input_mask is None else np.asarray(materialize(input_mask))
    answers = []
    for task in group.regions:
        mask = None if whole is None else whole[task.bbox.slices(origin)]
        answers.append(stitch_region(task, mask, [o for o in outcomes if o.index in task.cells]))
    return answers


@builds_graph
def _stitch_graph(
    plan: Plan,
    cells: CellLayer,
    region_name: str,
    region_size: int,
    dtype: Any,
    bad_bits: int,
    *,
    output: Exposure | np.ndarray | None = None,
    writer: Any = None,
    regions: list[tuple[int, int]] | None = None,
    layout: PlaneLayout | None = None,
    picks: bool = False,
    membership: tuple[dict, dict] | None = None,
) -> tuple[dict, list[tuple[str, int, int]], list[list[Box2I]], dict[tuple[int, int], tuple[Any, int]]]:
    """The region tasks: writing into ``output`` (shared memory), into ``writer``, or returning arrays.

    Only the regions ``regions`` (all when None) are stitched, reading the batches of ``cells``
    (which must run every cell they need). Regions are grouped as the batches were packed, one
    task per tile of regions. With ``picks``, a task takes from a batch of which it needs only
    some cells through a small task that picks them out next to the batch, so that only those
    travel. ``layout``: the output mask's planes (`default_layout` when None).

    Returns the graph, its task keys, the region boxes by row, and for each region the key of
    its task and its position in that task's answer.
    """
    if layout is None:
        layout = default_layout(plan, bad_bits, output)
    bbox = plan.bbox
    members, reported = membership if membership is not None else region_membership(plan, region_size)
    rows = region_boxes(bbox, region_size)
    if regions is None:
        regions = [(i, j) for i, row in enumerate(rows) for j in range(len(row))]
    mask_source = plan.input_mask() if output is None else None
    graph: dict[Any, Any] = dict(mask_source.graph()) if mask_source is not None else {}
    per_side = max(1, cells.tile // region_size)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in regions:
        groups.setdefault((i // per_side, j // per_side), []).append((i, j))
    sizes = np.fromiter(map(len, cells.batches), dtype=np.int64, count=len(cells.batches))
    empty = np.zeros(0, dtype=np.int64)
    keys: list[tuple[str, int, int]] = []
    where: dict[tuple[int, int], tuple[Any, int]] = {}
    for (gi, gj), group in groups.items():
        tasks, wanted = [], []
        for i, j in group:
            region = rows[i][j]
            mine = members.get((i, j), empty)
            wanted.append(mine)
            tasks.append(
                RegionTask(
                    bbox=region,
                    operation=plan.operation,
                    dtype=dtype,
                    bad_bits=bad_bits,
                    extract=plan.extract,
                    with_variance=plan.with_variance,
                    reported_cells=tuple(reported.get((i, j), empty).tolist()),
                    output_views=_output_views(output, region, bbox.getBegin()),
                    weighting=plan.weighting,
                    writer=writer,
                    index=(i, j),
                    layout=layout,
                    cells=frozenset(mine.tolist()),
                )
            )
        union = _union(task.bbox for task in tasks)
        key = (region_name, gi, gj)
        needed = np.unique(np.concatenate(wanted)) if wanted else empty
        inputs = _group_inputs(graph, cells, needed, sizes, picks, key)
        # A deferred cut (numpy) or a block task (Dask): a cluster reads a deferred one from shared memory.
        mask = mask_source.cell_cuts(np.array([_corners(union)]))[0] if mask_source is not None else None
        graph[key] = (stitch_group, RegionGroup(tasks, union), inputs, mask)
        keys.append(key)
        where.update((task.index, (key, position)) for position, task in enumerate(tasks))
    return graph, keys, rows, where


def _group_inputs(
    graph: dict, cells: CellLayer, needed: np.ndarray, sizes: np.ndarray, picks: bool, key: tuple
) -> list[Any]:
    """The keys a region task reads its cells from: whole batches, or picks of them (added to ``graph``)."""
    numbers, counts = np.unique(cells.batch_of[needed], return_counts=True)
    if len(numbers) and numbers[0] < 0:
        raise AssertionError(f"regions {key[1:]} need cells that no batch runs")
    partly = counts < sizes[numbers] if picks else np.zeros(len(numbers), dtype=bool)
    if not partly.any():  # whole batches only: one key each (a million of them, unbatched)
        name = cells.name
        return [(name, number) for number in numbers.tolist()]
    inputs = []
    for number, part_only in zip(numbers.tolist(), partly.tolist()):
        if part_only:
            part = cells.batches[number]
            pick = (f"imr-pick-{key[0]}", number, *key[1:])
            graph[pick] = (pick_cells, (cells.name, number), frozenset(part[np.isin(part, needed)].tolist()))
            inputs.append(pick)
        else:
            inputs.append((cells.name, number))
    return inputs


def _corners(box: Box2I) -> tuple[int, int, int, int]:
    return (box.getMinX(), box.getMinY(), box.getMaxX(), box.getMaxY())


def _union(boxes: Any) -> Box2I:
    boxes = list(boxes)
    return Box2I(
        Point2I(min(b.getMinX() for b in boxes), min(b.getMinY() for b in boxes)),
        Point2I(max(b.getMaxX() for b in boxes), max(b.getMaxY() for b in boxes)),
    )


def needed_cells(members: dict, regions: list[tuple[int, int]]) -> np.ndarray:
    """The cells (grid indices, sorted) that the regions ``regions`` stitch."""
    parts = [members[key] for key in regions if key in members]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def default_layout(plan: Plan, bad_bits: int, output: Exposure | np.ndarray | None = None) -> PlaneLayout | None:
    """The output mask's planes, for a plan whose results have masks (None for plain arrays).

    The planes are the output's, if it is an exposure, else the input's with the ``bad_bits``
    kept free (their names are not known here); bits set but unnamed in the input are never
    given to a new plane (this reads the input mask once).
    """
    if not isinstance(plan, ExposurePlan):
        return None
    input_mask = plan.exposure.mask
    unnamed = input_mask.getUnnamedBitMask()
    if isinstance(output, Exposure):
        return PlaneLayout(output.mask.getMaskPlaneDict(), unnamed)
    return PlaneLayout(input_mask.getMaskPlaneDict(), unnamed | bad_bits)


def _output_views(output: Exposure | np.ndarray | None, region: Box2I, origin: Point2I):
    if output is None:
        return None
    if isinstance(output, Exposure):
        view = output.subset(region)
        return (view.image.array, view.mask.array, view.variance.array)
    return (output[region.slices(origin)], None, None)


def _tokens() -> tuple[str, str]:
    token = uuid.uuid4().hex
    return f"imr-cell-{token}", f"imr-stitch-{token}"


def execute_cells(plan: Plan, scheduler: SchedulerChoice, region_size: int = 512) -> list[CellOutcome]:
    """Run every cell and return the outcomes in grid order (for ``none``, ``coaddPsf``, custom reducers).

    ``region_size`` only aligns the batches (as a stitched run would pack them).
    """
    scheduler.check_importable(plan.objects_to_import())
    name, _ = _tokens()
    layer = cell_layer(plan, name, region_size, scheduler)
    return flat_outcomes(scheduler.get(layer.graph, layer.keys, layer.keys))


def stitch_graph(
    plan: Plan,
    dtype: Any,
    bad_bits: int,
    region_size: int,
    scheduler: SchedulerChoice | None,
    output: Exposure | np.ndarray | None = None,
    layout: PlaneLayout | None = None,
    writer: Any = None,
) -> tuple[dict, list, CellLayer]:
    """The whole graph of a stitched run: the cell batches and the region tasks reading them.

    Regions write into ``output`` when given (shared memory), else into ``writer`` when given,
    else return their planes. Returns the graph, the region tasks' keys and the cell layer. This
    is what `execute_stitch` runs.
    """
    cell_name, region_name = _tokens()
    layer = cell_layer(plan, cell_name, region_size, scheduler)
    shares = scheduler is None or scheduler.shares_memory
    regions, keys, _, _ = _stitch_graph(
        plan,
        layer,
        region_name,
        region_size,
        dtype,
        bad_bits,
        output=output,
        writer=writer,
        layout=layout,
        picks=not shares,
    )
    return {**layer.graph, **regions}, keys, layer


def execute_stitch(
    plan: Plan,
    output: Exposure | np.ndarray,
    bad_bits: int,
    region_size: int,
    scheduler: SchedulerChoice,
    progress: Callable[[int, int], None] | None = None,
    layout: PlaneLayout | None = None,
) -> StitchReport:
    """Map every cell and stitch the results into ``output`` (an exposure or a 2-d array) region by region.

    ``output`` must already hold a clone of the input's mask (it is the starting point of every
    region). Returns a `StitchReport`: the merged overlap statistics, and in grid order each
    cell's summary, each (psf, bbox, weight) component, and each failed cell. ``progress`` is
    called with (cells done, cells in all) as regions finish.

    ``layout`` gives the output mask's planes before any cell runs (`default_layout` when None);
    at the end the output mask has those and every plane a cell's result added.
    """
    scheduler.check_importable(plan.objects_to_import())
    # Regions write in place only where tasks share our memory and the output already holds the
    # input's mask (a lazy input's mask is read region by region instead).
    shared = output if scheduler.shares_memory and not plan.lazy else None
    if isinstance(output, np.ndarray) and isinstance(plan, ArrayPlan) and not plan.lazy and plan.writes_directly():
        if shared is not None:
            return _execute_direct(plan, output, bad_bits, region_size, scheduler, progress)
        with SharedOutput.open(output, plan.bbox.getBegin(), scheduler) as via:
            if via is not None:  # a same-host cluster: its cells write their cores into shared memory
                # Each core is copied out as its batch comes back, while the workers go on.
                return _execute_direct(
                    plan,
                    via.image,
                    bad_bits,
                    region_size,
                    scheduler,
                    progress,
                    via.image_ref,
                    written=lambda box: via.copy_region(output, box),
                )
    if layout is None:
        layout = default_layout(plan, bad_bits, output)
    origin = plan.bbox.getBegin()
    with SharedOutput.open(output, origin, scheduler if shared is None else None) as via:
        writer = via.writer if via is not None else None
        graph, keys, layer = stitch_graph(plan, output.dtype, bad_bits, region_size, scheduler, shared, layout, writer)
        report = StitchReport()
        for answers in scheduler.iterate(graph, keys, layer.keys):
            for outcome in answers:
                if via is not None:
                    via.copy_region(output, outcome.bbox)
                elif outcome.planes is not None:
                    _copy_region(output, outcome, origin)
                report.add(outcome)
            if progress is not None:
                progress(len(report.summaries), layer.cell_count)
    report.finish()
    if layout is not None and isinstance(output, Exposure):
        settle_mask_planes(output.mask, report, layout)
    return report


def settle_mask_planes(mask: Mask, report: StitchReport, layout: PlaneLayout) -> None:
    """Give the stitched ``mask`` every plane the results added, renumbering regions that differ.

    Only regions whose results added different planes than others can differ (see `stitch_planes`).
    """
    planes, moves = report.mask_planes(layout)
    for bbox, move in moves:
        view = mask.subset(bbox).array
        view[...] = remap_mask_bits(view, move)
    mask.setMaskPlaneDict(planes)


def _execute_direct(
    plan: ArrayPlan,
    output: np.ndarray,
    bad_bits: int,
    region_size: int,
    scheduler: SchedulerChoice,
    progress: Callable[[int, int], None] | None,
    direct_out: Any = None,
    written: Callable[[Box2I], None] | None = None,
) -> StitchReport:
    """Cells that tile the image without overlap write their own cores; regions only mend the rest.

    ``direct_out``: what the cells write into, when not ``output`` itself (a `SharedArrayRef` to
    it, for a same-host cluster's workers). ``written`` is called with each box of ``output``
    that is final: a cell's core as its batch comes back, a mended region once stitched.

    Each pixel then has one cell, so a cell whose core is all finite writes the stitcher's bits
    itself, while its answer is still in cache, and the graph is the cells alone (no region
    tasks, which would only look on). The regions that meet a cell that did not write (a failure,
    or a NaN or infinity to stitch carefully) are stitched afterwards, here, from the outcomes in
    hand, with the written cores read back as those cells' results.
    """
    cell_name, _ = _tokens()
    layer = cell_layer(plan, cell_name, region_size, scheduler, direct_out=output if direct_out is None else direct_out)
    outcomes: list[CellOutcome] = []
    for batch in scheduler.iterate(layer.graph, layer.keys, layer.keys):
        outcomes += batch
        if written is not None:
            for outcome in batch:
                if _wrote(outcome):
                    written(outcome.box0)
        if progress is not None:
            progress(len(outcomes), len(plan.grid))
    outcomes.sort(key=lambda o: o.index)
    report = StitchReport()
    report.summaries = [o.summary() for o in outcomes]
    report.components = [(None, o.box0, 1.0) for o in outcomes if o.failure is None]
    report.failures = [o.failure for o in outcomes if o.failure is not None]
    pending = {o.index for o in outcomes if not _wrote(o)}
    members = region_membership(plan, region_size)[0] if pending else {}
    dirty = sorted(key for key, cells in members.items() if not pending.isdisjoint(cells.tolist()))
    rows = region_boxes(plan.bbox, region_size)
    parts = []
    for i, j in dirty:
        region = rows[i][j]
        # Reports nothing: every cell's summary and failure is already in the report.
        task = RegionTask(
            bbox=region,
            operation=plan.operation,
            dtype=output.dtype,
            bad_bits=bad_bits,
            extract=plan.extract,
            with_variance=plan.with_variance,
            reported_cells=(),
            output_views=_output_views(output, region, plan.bbox.getBegin()),
            weighting=plan.weighting,
        )
        cells = [_read_back(outcomes[k], output, plan.bbox.getBegin()) for k in members[(i, j)].tolist()]
        parts.append(stitch_region(task, None, cells).stats)
        if written is not None:
            written(region)
    if plan.operation == "average":  # every other pixel has exactly one contribution
        restitched = set(dirty)
        for i, row in enumerate(rows):
            parts += [_single_cover_stats(region) for j, region in enumerate(row) if (i, j) not in restitched]
    report.stats = RegionStats.merge(parts)
    return report


def _wrote(outcome: CellOutcome) -> bool:
    return outcome.result is WRITTEN


def _read_back(outcome: CellOutcome, output: np.ndarray, origin: Point2I) -> CellOutcome:
    """A cell that wrote its core, as if it had returned it (a copy: the region is rewritten)."""
    if not _wrote(outcome):
        return outcome
    return replace(outcome, result=output[outcome.box0.slices(origin)].copy())


def _single_cover_stats(region: Box2I) -> RegionStats:
    pixels = region.getArea()
    return RegionStats(max_count=1, min_count=1, sum_count=pixels, zero_pixels=0, pixels=pixels)


@dataclass
class StitchReport:
    """What the regions reported, merged.

    Statistics, and per cell (in grid order) its summary, PSF component and failure.
    """

    stats: RegionStats = field(default_factory=RegionStats)
    summaries: list[CellSummary] = field(default_factory=list)
    components: list[tuple[Any, Box2I, float]] = field(default_factory=list)
    failures: list[FailedCell] = field(default_factory=list)
    #: Each region that saw new mask planes: its box and its `StitchOutcome.new_planes`.
    new_planes_by_region: list[tuple[Box2I, dict[str, NewPlane]]] = field(default_factory=list)
    _parts: list[RegionStats] = field(default_factory=list, repr=False)
    _indexed: list[tuple[int, tuple[Any, Box2I, float]]] = field(default_factory=list, repr=False)

    @property
    def region_count(self) -> int:
        """How many regions have reported."""
        return len(self._parts)

    def add(self, outcome: StitchOutcome) -> None:
        """Take one region's answer."""
        self._parts.append(outcome.stats)
        self.summaries.extend(outcome.summaries)
        done = [s[0] for s in outcome.summaries if not any(f.index == s[0] for f in outcome.failures)]
        self._indexed.extend(zip(done, outcome.psf_components))
        self.failures.extend(outcome.failures)
        new_planes = getattr(outcome, "new_planes", None)  # absent from outcomes recorded before it existed
        if new_planes:
            self.new_planes_by_region.append((outcome.bbox, new_planes))

    def mask_planes(self, layout: PlaneLayout) -> tuple[dict[str, int], list[tuple[Box2I, dict[int, int]]]]:
        """The output mask's planes, and the bit moves that bring each region into line with them.

        Returns the plane dictionary (``layout``'s planes and every plane the results added) and,
        for each region that numbered a new plane differently, its box and the moves (region bit
        -> output bit) to apply to its mask pixels (`imagemapreduce.image._mask.remap_mask_bits`).
        """
        planes = merge_new_planes(layout, [new for _, new in self.new_planes_by_region])
        moves = [(bbox, move) for bbox, new in self.new_planes_by_region if (move := bit_moves(new, planes))]
        return planes, moves

    def finish(self) -> StitchReport:
        """Merge the statistics and put everything in grid order."""
        self.stats = RegionStats.merge(self._parts)
        self.summaries.sort(key=lambda s: s[0])
        self.components = [c for _, c in sorted(self._indexed, key=lambda item: item[0])]
        self.failures.sort(key=lambda f: f.index)
        return self


def _copy_region(output: Exposure | np.ndarray, outcome: StitchOutcome, origin: Point2I) -> None:
    assert outcome.planes is not None  # a region stitched without a shared output returns its planes
    image, mask, variance = outcome.planes
    if isinstance(output, Exposure):
        view = output.subset(outcome.bbox)
        view.image.array[...] = image
        view.mask.array[...] = mask
        view.variance.array[...] = variance
    else:
        output[outcome.bbox.slices(origin)] = image


#: Width in pixels of the strips `execute_to_store` works through one after another.
STRIP_WIDTH = 4096


def execute_to_store(
    plan: Plan,
    writer: Any,
    dtype: Any,
    bad_bits: int,
    region_size: int,
    scheduler: SchedulerChoice,
    skip: set[tuple[int, int]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    layout: PlaneLayout | None = None,
) -> StitchReport:
    """Map and stitch, each region task writing its planes straight into ``writer`` (e.g. a zarr store).

    ``layout``: the output mask's planes (`default_layout` when None). The store's mask then
    needs the report's `StitchReport.mask_planes`: the plane dictionary to record, and the bit
    moves for regions whose results added different planes.

    Nothing is gathered here but each region's small report. Regions in ``skip`` are not redone,
    and only the cells whose expanded boxes touch the other regions run, so a resumed run costs
    what is missing.

    The regions are worked through in vertical strips of about `STRIP_WIDTH` pixels, one strip
    after another (in parallel within a strip). Cell results wait in memory for every region that
    needs them, so a run over the whole width would hold a band of results as wide as the image;
    strips keep that band, and so the peak memory, the same whatever the image size. Batches are
    packed by tiles of at most one region (half a region on threads), so that a region needs
    only its own and its neighbours' batches: regions then finish (and are recorded) as the
    cells run, and a run stopped halfway has written about half the regions. The few cells whose expanded box
    crosses a strip edge run once for each side (same bits).
    """
    scheduler.check_importable(plan.objects_to_import())
    cell_name, region_name = _tokens()
    membership = region_membership(plan, region_size)
    rows = region_boxes(plan.bbox, region_size)
    todo = [(i, j) for i, row in enumerate(rows) for j in range(len(row)) if not skip or (i, j) not in skip]
    report = StitchReport()
    total = int(sum(len(membership[1].get(key, ())) for key in todo))
    # Half-region tiles on shared memory, where tasks are cheap: a crash then loses less work.
    tile = region_size // 2 if scheduler.shares_memory else region_size
    for number, strip in enumerate(_strips(todo, region_size)):
        cells = needed_cells(membership[0], strip)
        layer = cell_layer(plan, f"{cell_name}-{number}", region_size, scheduler, cells, largest_tile=tile)
        regions, keys, _, _ = _stitch_graph(
            plan,
            layer,
            f"{region_name}-{number}",
            region_size,
            dtype,
            bad_bits,
            writer=writer,
            regions=strip,
            layout=layout,
            picks=not scheduler.shares_memory,
            membership=membership,
        )
        for answers in scheduler.iterate({**layer.graph, **regions}, keys, layer.keys):
            for outcome in answers:
                report.add(outcome)
            if progress is not None:
                progress(len(report.summaries), total)
    return report.finish()


def _strips(regions: list[tuple[int, int]], region_size: int) -> list[list[tuple[int, int]]]:
    """The regions to do, in vertical strips of `STRIP_WIDTH` pixels, each in (row, column) order."""
    per_strip = max(1, STRIP_WIDTH // region_size)
    strips: dict[int, list] = {}
    for key in regions:
        strips.setdefault(key[1] // per_strip, []).append(key)
    return [sorted(strips[strip]) for strip in sorted(strips)]


def _default_scheduler() -> SchedulerChoice | None:
    """Dask's current default scheduler, which a lazy result will most likely be computed on."""
    from .scheduling import choose_scheduler

    try:
        return choose_scheduler(None)
    except Exception:  # noqa: BLE001 - only a guess for packing the batches
        return None


def _plane_of(answers: list[StitchOutcome], position: int, index: int) -> np.ndarray | None:
    planes = answers[position].planes
    assert planes is not None  # regions of a lazy stitch return their planes
    return planes[index]


def lazy_stitch(plan: Plan, dtype: Any, bad_bits: int, region_size: int) -> tuple[Any, Any, Any]:
    """The stitched planes as lazy Dask arrays (image, mask, variance) whose chunks are the regions.

    Mask and variance are None where the plan has none (plain arrays).
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    cell_name, region_name = _tokens()
    layer = cell_layer(plan, cell_name, region_size, _default_scheduler())
    regions, _, rows, where = _stitch_graph(plan, layer, region_name, region_size, dtype, bad_bits)
    graph = {**layer.graph, **regions}
    chunks = (tuple(row[0].getHeight() for row in rows), tuple(b.getWidth() for b in rows[0]))
    wanted = [(0, dtype)]
    if plan.input_mask() is not None:
        wanted.append((1, np.dtype(np.int32)))
    if plan.with_variance:
        wanted.append((2, dtype))
    out: list[Any] = [None, None, None]
    for index, plane_dtype in wanted:
        name = f"imr-plane{index}-{region_name}"
        plane_layer: dict[Any, Any] = {
            (name, i, j): (_plane_of, key, position, index) for (i, j), (key, position) in where.items()
        }
        hlg = HighLevelGraph.from_collections(name, {**graph, **plane_layer}, dependencies=())
        out[index] = da.Array(hlg, name, chunks=chunks, dtype=plane_dtype)
    return out[0], out[1], out[2]


def lazy_catalog(plan: ArrayPlan, region_size: int, labels: Sequence[str]) -> Any:
    """The catalog of a run as a lazy ``dask.dataframe.DataFrame``, one partition per batch of cells.

    Each partition holds the rows its batch's cells own (`imagemapreduce.catalog`): a batch is
    given the cores that may own a pixel of its expanded boxes, so that ownership is decided
    where the cells ran and only owned rows travel. ``grid_index`` is a column of ``[ix, iy]`` lists.
    """
    import dask.dataframe as dd
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    from ..catalog import candidate_owners

    cell_name, part_name = _tokens()
    layer = cell_layer(plan, cell_name, region_size, _default_scheduler())
    cores, expanded = plan.grid.cells, plan.grid.expanded
    indices = plan.grid_indices
    assert indices is not None  # a catalog of arrays numbers its cells (map_reduce_arrays sets them)
    parts: dict[Any, Any] = {}
    for number, members in enumerate(layer.batches):
        near = candidate_owners(cores, expanded[members])
        batch_labels = {int(i): labels[int(i)] for i in members}
        batch_indices = {int(i): tuple(indices[int(i)]) for i in members}
        parts[(part_name, number)] = (catalog_partition, (cell_name, number), cores, near, batch_indices, batch_labels)
    graph = HighLevelGraph.from_collections(part_name, {**layer.graph, **parts}, dependencies=())
    delayed = [Delayed((part_name, number), graph, layer=part_name) for number in range(len(layer.batches))]
    return dd.from_delayed(delayed, verify_meta=False)


def catalog_partition(
    outcomes: Sequence[CellOutcome], cores: np.ndarray, near: np.ndarray, grid_indices: dict, labels: dict
) -> Any:
    """The rows a batch's cells own, as a pandas DataFrame (the partition of `lazy_catalog`)."""
    import pandas as pd
    import pyarrow as pa

    from ..catalog import GRID_INDEX, as_table, owned_catalog

    cells = [
        (o.index, labels[o.index], as_table(o.result, labels[o.index]), grid_indices[o.index])
        for o in sorted(outcomes, key=lambda o: o.index)
        if o.failure is None and o.result is not None
    ]
    catalog = owned_catalog(cells, cores, near, GRID_INDEX)
    columns = {name: np.asarray(catalog[name]) for name in catalog.colnames if name != GRID_INDEX}
    frame = pd.DataFrame(columns)
    # A fixed-size list column: object columns of tuples would become strings in Dask.
    index = pa.array(np.asarray(catalog[GRID_INDEX]).tolist(), type=pa.list_(pa.int64(), 2))
    frame[GRID_INDEX] = pd.Series(index.to_pandas(types_mapper=pd.ArrowDtype), index=frame.index)
    return frame


def execute_parts(
    plan: Plan,
    parts: Sequence[Sequence[int] | np.ndarray],
    write: Callable[..., Any],
    region_size: int,
    scheduler: SchedulerChoice,
) -> list[Any]:
    """Run the cells of ``parts`` and hand each part's outcomes to ``write``, as soon as its cells are done.

    ``write(part_number, outcomes)`` runs as a task of its own next to the batches it reads (a
    worker on a cluster), gets the part's cell outcomes in grid order, and returns something small
    (a record), which comes back in the order of ``parts``. Cells that no part names do not run.
    """
    scheduler.check_importable(plan.objects_to_import())
    if not len(parts):
        return []
    cell_name, part_name = _tokens()
    members = np.unique(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]))
    layer = cell_layer(plan, cell_name, region_size, scheduler, cells=members)
    graph = dict(layer.graph)
    keys = []
    for number, cells in enumerate(parts):
        batches = sorted({int(b) for b in layer.batch_of[np.asarray(cells, dtype=np.int64)]})
        key = (part_name, number)
        inputs = [(cell_name, b) for b in batches]
        graph[key] = (_write_part, write, number, frozenset(int(c) for c in cells), *inputs)
        keys.append(key)
    return scheduler.get(graph, keys, layer.keys)


def _write_part(write: Callable[..., Any], number: int, wanted: frozenset[int], *batches: Sequence[CellOutcome]) -> Any:
    return write(number, flat_outcomes([pick_cells(batch, wanted) for batch in batches]))
