"""Cells packed into tasks: the packing changes the graph, never the output or the per-cell reports."""

# ruff: noqa: D103
from __future__ import annotations

import dask
import numpy as np
import pytest
from array_funcs import smooth
from cell_mappers import (
    RUN_CELLS_CALLS,
    CentreValueMapper,
    FailingMapper,
    FailingTogetherMapper,
    FlakyMapper,
    InterruptibleMapper,
    ShortTogetherMapper,
    TogetherMapper,
)
from conftest import make_exposure
from lsst.pex.config import FieldValidationError
from test_zarr import config_for as zarr_config_for

import imagemapreduce as imr
from imagemapreduce import map_reduce
from imagemapreduce.builtin_mappers import GaussianSmoothMapper
from imagemapreduce.engine import auto_cells_per_task, check_cells_per_task, choose_scheduler, stitch_graph
from imagemapreduce.engine.batches import TASKS_PER_WORKER, pack_cells

PACKINGS = [1, 3, 16, "auto"]


def planes_of(exposure):
    return [getattr(exposure, p).array.tobytes() for p in ("image", "mask", "variance")]


def task_config(mapper=CentreValueMapper, scheduler="threads", cells_per_task="auto", operation="average", **extra):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    config.cellSizeX, config.cellSizeY = 24, 20
    config.gridStepX, config.gridStepY = 16, 14
    config.borderSizeX = config.borderSizeY = 5
    config.stitchRegionSize = 48
    config.scheduler = scheduler
    config.cellsPerTask = cells_per_task
    config.reducer.reduceOperation = operation
    for name, value in extra.items():
        setattr(config, name, value)
    return config


def grid_boxes(origin, size, cell, step):
    """Core boxes ``(x0, y0, x1, y1)`` of a regular grid, clipped to the image (a plain loop)."""
    boxes = []
    for y in range(origin[1], origin[1] + size[1], step[1]):
        for x in range(origin[0], origin[0] + size[0], step[0]):
            x1, y1 = min(x + cell[0], origin[0] + size[0]) - 1, min(y + cell[1], origin[1] + size[1]) - 1
            boxes.append((x, y, x1, y1))
    return np.array(boxes, dtype=np.int64)


# -- packing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_task", [1, 2, 5, 12, 40, 1000])
def test_every_cell_is_packed_once_in_grid_order_within_small_compact_batches(per_task):
    cells = grid_boxes((-7, 3), (301, 223), (23, 19), (17, 13))
    indices = np.arange(len(cells))
    batches, tile = pack_cells(cells, indices, (-7, 3), 64, per_task)
    packed = np.concatenate(batches)
    assert sorted(packed.tolist()) == indices.tolist()
    assert all(1 <= len(b) <= per_task for b in batches)
    assert all(np.all(np.diff(b) > 0) for b in batches)  # grid order within a batch
    if per_task > 1:
        # a batch's cores start inside one tile, and tiles line up with the 64-px regions
        assert tile and (64 % tile == 0 or tile % 64 == 0)
        for batch in batches:
            starts = cells[batch, :2] - np.array([-7, 3])
            assert len({tuple(s) for s in (starts // tile).tolist()}) == 1


def test_largest_tile_caps_the_tiles():
    cells = grid_boxes((0, 0), (512, 512), (16, 16), (16, 16))
    _, free = pack_cells(cells, np.arange(len(cells)), (0, 0), 128, 400)
    _, capped = pack_cells(cells, np.arange(len(cells)), (0, 0), 128, 400, largest_tile=64)
    assert free > 64 and capped == 64


def test_auto_aims_at_work_per_task_and_keeps_every_worker_busy():
    small = np.array([[0, 0, 39, 39]] * 4096)  # 40 px expanded cells
    big = np.array([[0, 0, 599, 599]] * 4096)
    cluster, threads = auto_cells_per_task(small, 2, "distributed"), auto_cells_per_task(small, 2, "threads")
    assert cluster > threads > 1  # a cluster task costs more, so it carries more cells
    assert auto_cells_per_task(small, 2, "distributed") <= 4096 // (TASKS_PER_WORKER * 2)
    assert auto_cells_per_task(big, 2, "distributed") < cluster  # bigger cells: fewer per task
    assert auto_cells_per_task(small[:3], 16, "distributed") == 1
    assert auto_cells_per_task(small[:0], 2, "threads") == 1


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "8", "many", None])
def test_bad_cells_per_task_is_refused_naming_the_parameter(bad):
    with pytest.raises(ValueError, match='cells_per_task must be "auto".*positive int'):
        check_cells_per_task(bad)
    with pytest.raises(ValueError, match="cells_per_task"):
        map_reduce(np.zeros((8, 8), np.float32), np.negative, cell_size=4, cells_per_task=bad)


@pytest.mark.parametrize("bad", [0, "16", 1.5])
def test_bad_cells_per_task_in_the_config_is_refused(bad):
    config = imr.ImageMapReduceConfig()
    with pytest.raises(FieldValidationError) as error:
        config.cellsPerTask = bad
    assert "cellsPerTask" in str(error.value) and "positive int" in str(error.value)
    config.cellsPerTask = 7
    assert config.cellsPerTask == 7


def test_fewer_tasks_with_batching():
    exposure = make_exposure(200, 160, seed=2)
    sizes = {}
    for packing in (1, "auto"):
        task = imr.ImageMapReduceTask(config=task_config(cells_per_task=packing))
        grid = task._currentGrid(exposure)
        plan = task._makePlan(exposure, grid, {}, "average")
        output, bad = task.reducer.prepareOutput(exposure)
        scheduler = choose_scheduler("threads", 2)
        _, _, layer = stitch_graph(plan, output.dtype, bad, 48, scheduler, output)
        sizes[packing] = (len(layer.batches), layer.cell_count)
    assert sizes[1] == (len(grid), len(grid))
    assert sizes["auto"][1] == len(grid) and sizes["auto"][0] < len(grid) // 2


# -- the same bits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("reduce", ["copy", "sum", "average"])
@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_map_reduce_gives_the_same_bits_however_cells_are_packed(reduce, scheduler):
    image = np.random.default_rng(4).standard_normal((131, 97)).astype(np.float32)
    runs = {
        packing: map_reduce(
            image,
            smooth,
            cell_size=(17, 13),
            grid_step=(11, 9),
            border=4,
            reduce=reduce,
            scheduler=scheduler,
            func_kwargs={"sigma": 1.2},
            region_size=40,
            cells_per_task=packing,
        )  # fmt: skip
        for packing in PACKINGS
    }
    for packing in PACKINGS[1:]:
        assert runs[packing].tobytes() == runs[1].tobytes(), packing


def test_weighted_stitch_and_direct_writes_are_unchanged_by_packing():
    image = np.random.default_rng(5).standard_normal((120, 100)).astype(np.float32)
    for kwargs in (
        {"grid_step": 10, "weights": "cosine"},
        {"reduce": "copy"},  # tiling cells: written straight into the output
    ):
        runs = [
            map_reduce(image, smooth, cell_size=20, border=3, func_kwargs={"sigma": 1.0}, cells_per_task=p, **kwargs)
            for p in PACKINGS
        ]
        assert all(r.tobytes() == runs[0].tobytes() for r in runs[1:]), kwargs


@pytest.mark.parametrize("operation", ["average", "sum", "copy"])
def test_task_gives_the_same_planes_psf_and_per_cell_metadata_however_packed(operation):
    exposure = make_exposure(150, 110, xy0=(9, -4), seed=8)
    results, metadata = {}, {}
    for packing in PACKINGS:
        task = imr.ImageMapReduceTask(
            config=task_config(GaussianSmoothMapper, cells_per_task=packing, operation=operation)
        )
        results[packing] = task.run(exposure)
        metadata[packing] = task.metadata
    reference = results[1]
    for packing in PACKINGS[1:]:
        assert planes_of(results[packing].exposure) == planes_of(reference.exposure), packing
        assert results[packing].exposure.getPsf() == reference.exposure.getPsf()
        assert metadata[packing]["numCells"] == metadata[1]["numCells"] == len(metadata[1].getArray("cellWallTime"))
        assert len(metadata[packing].getArray("cellWorker")) == metadata[1]["numCells"]
        assert all(t > 0 for t in metadata[packing].getArray("cellWallTime"))


def test_failures_are_masked_and_reported_per_cell_however_packed():
    exposure = make_exposure(150, 110, seed=9)
    fail_at = (40, 30)
    reports = {}
    for packing in PACKINGS:
        task = imr.ImageMapReduceTask(config=task_config(FailingMapper, cells_per_task=packing, maskFailures=True))
        result = task.run(exposure, failAt=fail_at)
        reports[packing] = (
            planes_of(result.exposure),
            [str(f) for f in result.failures],
            task.metadata["numFailedCells"],
        )
    assert reports[1][2] >= 1  # the cells holding the pixel failed, the others did not
    assert all(reports[p] == reports[1] for p in PACKINGS[1:])


def test_each_cell_is_retried_on_its_own_inside_a_batch(tmp_path):
    exposure = make_exposure(120, 100, seed=10)
    outputs = {}
    for packing in (1, "auto"):
        markers = tmp_path / str(packing)
        task = imr.ImageMapReduceTask(config=task_config(FlakyMapper, cells_per_task=packing, numRetries=2))
        outputs[packing] = planes_of(task.run(exposure, markers=str(markers), failures=2).exposure)
        calls = [len(list(folder.iterdir())) for folder in markers.iterdir()]
        assert len(calls) == task.metadata["numCells"] and set(calls) == {3}  # two failures, then success
    assert outputs["auto"] == outputs[1]


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_a_mapper_with_run_cells_gets_each_task_in_one_call_and_gives_the_same_bits(scheduler):
    exposure = make_exposure(150, 110, xy0=(9, -4), seed=8)
    plain = imr.ImageMapReduceTask(config=task_config(CentreValueMapper, scheduler=scheduler, cells_per_task=1))
    reference = planes_of(plain.run(exposure).exposure)
    for packing in (1, 5, "auto"):
        RUN_CELLS_CALLS.clear()
        task = imr.ImageMapReduceTask(config=task_config(TogetherMapper, scheduler=scheduler, cells_per_task=packing))
        assert planes_of(task.run(exposure).exposure) == reference, packing
        cells = task.metadata["numCells"]
        assert len(task.metadata.getArray("cellWallTime")) == cells
        if packing == 1:
            assert RUN_CELLS_CALLS == []  # a task of one cell runs it through run()
        else:
            assert sum(RUN_CELLS_CALLS) >= cells - len(RUN_CELLS_CALLS) and max(RUN_CELLS_CALLS) > 1
            assert len(RUN_CELLS_CALLS) < cells


def test_a_failing_run_cells_falls_back_to_each_cell_alone_and_reports_the_same_failures():
    exposure = make_exposure(150, 110, seed=9)
    reports = {}
    for mapper in (FailingMapper, FailingTogetherMapper):
        RUN_CELLS_CALLS.clear()
        task = imr.ImageMapReduceTask(config=task_config(mapper, cells_per_task=16, maskFailures=True))
        result = task.run(exposure, failAt=(40, 30))
        reports[mapper] = (
            planes_of(result.exposure),
            [str(f) for f in result.failures],
            task.metadata["numFailedCells"],
        )
    assert RUN_CELLS_CALLS  # the hook was tried
    assert reports[FailingTogetherMapper] == reports[FailingMapper] and reports[FailingMapper][2] >= 1
    with pytest.raises(imr.CellFailure, match="boom in this cell"):
        imr.ImageMapReduceTask(config=task_config(FailingTogetherMapper, cells_per_task=16)).run(
            exposure, failAt=(40, 30)
        )


def test_a_run_cells_with_too_few_results_is_not_trusted():
    exposure = make_exposure(120, 100, seed=12)
    RUN_CELLS_CALLS.clear()
    short = imr.ImageMapReduceTask(config=task_config(ShortTogetherMapper, cells_per_task=16)).run(exposure)
    plain = imr.ImageMapReduceTask(config=task_config(CentreValueMapper, cells_per_task=16)).run(exposure)
    assert RUN_CELLS_CALLS and planes_of(short.exposure) == planes_of(plain.exposure)


def test_run_cells_is_not_used_with_a_cell_timeout_or_companion_images():
    exposure = make_exposure(120, 100, seed=13)
    RUN_CELLS_CALLS.clear()
    imr.ImageMapReduceTask(config=task_config(TogetherMapper, cells_per_task=16, cellTimeout=60.0)).run(exposure)
    imr.ImageMapReduceTask(config=task_config(TogetherMapper, cells_per_task=16)).run(exposure, template=exposure)
    assert RUN_CELLS_CALLS == []
    imr.ImageMapReduceTask(config=task_config(TogetherMapper, cells_per_task=16)).run(exposure)
    assert RUN_CELLS_CALLS


def test_reduce_none_returns_each_cell_in_grid_order_however_packed():
    exposure = make_exposure(100, 90, seed=11)
    lists = {}
    for packing in (1, 5, "auto"):
        config = task_config(CentreValueMapper, cells_per_task=packing, operation="none")
        lists[packing] = [r.subExposure.getBBox() for r in imr.ImageMapReduceTask(config=config).run(exposure).result]
    assert lists[5] == lists[1] == lists["auto"]


def test_a_local_cluster_gives_the_threads_bits_and_reports_bytes_moved(local_cluster):
    # Over the network: same-host shared memory (tests/test_shared_memory.py) would carry the pixels.
    with dask.config.set({"imagemapreduce.shared-memory": False}):
        _bits_and_bytes_over_the_network(local_cluster)


def _bits_and_bytes_over_the_network(local_cluster):
    exposure = make_exposure(160, 130, xy0=(3, 5), seed=12)
    threads = imr.ImageMapReduceTask(config=task_config(GaussianSmoothMapper, cells_per_task=1))
    expected = threads.run(exposure)
    assert threads.metadata["bytesMoved"] == 0  # nothing travels on threads
    pixels = sum(getattr(exposure, p).array.nbytes for p in ("image", "mask", "variance"))
    scattered = {}
    for packing in (1, 4, "auto"):
        task = imr.ImageMapReduceTask(config=task_config(GaussianSmoothMapper, "distributed", cells_per_task=packing))
        task._scheduler = local_cluster
        result = task.run(exposure)
        assert planes_of(result.exposure) == planes_of(expected.exposure), packing
        meta = task.metadata
        assert meta["bytesScattered"] >= pixels  # every pixel went out at least once
        assert meta["bytesGathered"] >= pixels  # the stitched planes came back
        assert meta["bytesMoved"] == meta["bytesScattered"] + meta["bytesGathered"] + meta["bytesBetweenWorkers"]
        scattered[packing] = meta["bytesScattered"]
    # one cell per task sends each expanded box (4.6 per pixel here); batches send blocks
    assert scattered[1] > 4 * pixels
    assert scattered["auto"] < 2.5 * pixels and scattered[4] < scattered[1]


def test_map_reduce_on_a_local_cluster_gives_the_same_bits_however_packed(local_cluster):
    image = np.random.default_rng(13).standard_normal((140, 120)).astype(np.float32)
    runs = [
        map_reduce(image, smooth, cell_size=20, grid_step=15, border=4, func_kwargs={"sigma": 1.1},
                   scheduler=local_cluster, cells_per_task=p)
        for p in PACKINGS
    ]  # fmt: skip
    threads = map_reduce(image, smooth, cell_size=20, grid_step=15, border=4, func_kwargs={"sigma": 1.1})
    assert all(r.tobytes() == threads.tobytes() for r in runs)


# -- resume costs what is missing --------------------------------------------------------------------
@pytest.mark.parametrize("packing", [1, "auto"])
def test_a_resume_after_a_crash_at_half_runs_little_more_than_the_missing_cells(tmp_path, packing):
    exposure = make_exposure(512, 512, seed=3)
    config = zarr_config_for(InterruptibleMapper, "threads", 64)
    config.cellSizeX = config.cellSizeY = config.gridStepX = config.gridStepY = 16
    config.borderSizeX = config.borderSizeY = 3
    config.cellsPerTask = packing
    cells = (512 // 16) ** 2
    InterruptibleMapper.CALLS.clear()
    InterruptibleMapper.LIMIT.update(calls=cells // 2, done=0)
    try:
        with pytest.raises(KeyboardInterrupt):
            imr.ImageMapReduceTask(config=config).runToZarr(exposure, tmp_path / "out.zarr")
        first = len(InterruptibleMapper.CALLS)
        InterruptibleMapper.LIMIT.update(calls=None, done=0)
        InterruptibleMapper.CALLS.clear()
        resumed = imr.ImageMapReduceTask(config=config).runToZarr(exposure, tmp_path / "out.zarr", resume=True)
        second = len(InterruptibleMapper.CALLS)
    finally:
        InterruptibleMapper.LIMIT.update(calls=None, done=0)
        InterruptibleMapper.CALLS.clear()
    assert first == cells // 2 and resumed.regionsReused > 0
    assert first + second <= 1.15 * cells
    expected = imr.ImageMapReduceTask(config=config).run(exposure)
    assert [np.asarray(getattr(resumed.exposure, p).array).tobytes() for p in ("image", "mask", "variance")] == (
        planes_of(expected.exposure)
    )


# -- placement on a cluster --------------------------------------------------------------------------
def _noop(*args):
    return None


def test_batches_go_to_workers_in_contiguous_runs_and_regions_follow_their_cells():
    from imagemapreduce.engine.scheduling import place_tasks

    batches = [("cell", n) for n in range(6)]
    graph = {("chunk", 0): (_noop,), ("chunk", 1): (_noop,)}
    graph.update({key: (_noop, ("chunk", 0) if key[1] < 4 else ("chunk", 1)) for key in batches})
    graph[("pick", 2)] = (_noop, ("cell", 2))
    graph[("stitch", 0)] = (_noop, [("cell", 0), ("cell", 1), ("pick", 2)])
    graph[("stitch", 1)] = (_noop, [("cell", 2), ("cell", 3), ("cell", 4), ("cell", 5)])
    placement = place_tasks(graph, batches, [("stitch", 0), ("stitch", 1)], ["A", "B"])
    assert [placement[key] for key in batches] == ["A", "A", "A", "B", "B", "B"]
    assert placement[("pick", 2)] == "A"  # next to its batch
    assert placement[("stitch", 0)] == "A"
    assert placement[("stitch", 1)] == "B"  # three of its four batches run on B
    assert placement[("chunk", 0)] == "A"  # read by three batches on A, one on B
    assert placement[("chunk", 1)] == "B"
    assert place_tasks(graph, batches, [], ["A"]) == {}  # one worker: nothing to decide
