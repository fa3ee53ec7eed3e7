"""Toward many machines: scheduler throughput, graph size and build time, and a run-time model.

Nothing here can run more than 2 cores, so the path to a large cluster is shown by measuring
the costs that do not shrink with workers, and a model built from them:

1. **Graph build**, as a cluster run makes it (``engine.stitch_graph`` for a 100-worker
   ``distributed`` scheduler, no worker needed): 1,000,000 cells of 8 px (border 2, as in
   ``bench_overhead.py``), with batching on (``cells_per_task="auto"``) and off (``1``), each in
   a fresh process, on a zero-copy broadcast image so that only the graph takes memory. Target:
   < 5 s with batching on (the default). Memory per cell: ``tracemalloc`` peak (a second,
   untimed build) and the resident-set growth, divided by the cells.
2. **The model's graph**: 1,000,000 cells of 64 px (border 16) for 100 workers, on and off:
   build time, tasks by kind (cell batches, region tasks, picks), and **graph bytes per cell**:
   the pickled graph (as ``distributed`` serializes it) of 62,500 such cells, with each
   in-memory pixel argument replaced by a reference the size of a scatter key (on a cluster
   pixels are scattered or read by the workers, never sent in the graph).
3. **A LocalCluster** (2 worker processes x 1 thread, 127.0.0.1, started and stopped here):
   Dask's raw scheduler throughput (tasks/s, no-op tasks), and the engine on 4096 cells of
   64 px (a no-op mapper, ``reduce="copy"``), batching on and off, side by side, with their CPU
   time split by where it is spent: the scheduler's event loop, the worker processes, and the
   client's main thread. Two runs that differ only in task count give each place's cost per
   task and per cell.
4. **The mapper's own cost**: a Gaussian (sigma 3) on one 64-px cell with its border, on one
   core (the workload of ``bench_cluster.py``).

The model (``docs/scaling.rst``) predicts the run time for ``W`` workers and ``N`` cells::

    T = N * build + N * graph_bytes / network
        + max(scheduler(N, tasks), (N * (mapper + worker_per_cell + io) + tasks * worker_per_task) / W)

with ``scheduler = tasks * sched_per_task`` (one thread, which handles tasks, never pixels: it
does not shrink with workers). It prints its predictions for 100 workers and 10**7 cells,
batching on and off, and checks itself against the LocalCluster it measured.
"""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import statistics
import sys
import time
import uuid
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

NAME = "scale"
#: The model's workload: bench_cluster.py's Gaussian on 64-px cells.
SIGMA = 3.0
CELL = 64
BORDER = 16
REGION = 512
#: The cluster the model speaks of, and its size.
MODEL_WORKERS = 100
MODEL_CELLS = 10**7
#: Assumed, not measured here: client-to-scheduler network (10 GbE) and each worker's storage
#: bandwidth (object storage or a parallel file system), for the model's transfer and I/O terms.
NETWORK_BYTES_PER_S = 1.25e9
WORKER_IO_BYTES_PER_S = 2e8
#: The model's input is a lazy array (zarr, read by the workers) in chunks of this side: one more
#: task per chunk, which the batches read from.
INPUT_CHUNK = 2048
#: The batchings the model compares: the default, one cell per task, and batches of a 2048-px tile.
MODEL_MODES = {"on": "auto", "off": 1, "large": 1024}


def noop(cell: np.ndarray) -> np.ndarray:
    """A mapper that returns its cell: every second it takes is the engine's."""
    return cell


def gaussian(cell: np.ndarray) -> np.ndarray:
    """The model's mapper: a Gaussian filter of sigma 3."""
    from scipy import ndimage

    return ndimage.gaussian_filter(cell, SIGMA)


# -- building graphs without running them ------------------------------------------------------
class PlannedCluster:
    """Stands in for a ``distributed.Client`` of ``workers`` one-thread workers, to size the batches.

    The engine asks a client only how many threads its workers have when it builds a graph, so
    this gives the graph a cluster of that size would get, without the cluster.
    """

    def __init__(self, workers: int):
        self._threads = {f"tcp://10.0.{n // 250}.{n % 250}:40000": 1 for n in range(workers)}

    def nthreads(self) -> dict[str, int]:
        """One thread per worker."""
        return self._threads


def plan_for(image: np.ndarray, cell: int, border: int, cells_per_task: int | str, func=noop):
    """The engine's plan of ``map_reduce(image, func, cell_size=cell, border=border, reduce="copy")``."""
    from imagemapreduce.engine.plans import ArrayPlan
    from imagemapreduce.grid import regular_grid

    grid, indices = regular_grid(image.shape, (cell, cell), (cell, cell), (border, border), "none", False)
    return ArrayPlan(
        func=func,
        array=image,
        grid=grid,
        kwargs={},
        operation="copy",
        grid_indices=indices,
        cells_per_task=cells_per_task,
    )


def cluster_graph(image: np.ndarray, cell: int, border: int, cells_per_task: int | str, scheduler) -> tuple:
    """The graph a cluster run of ``image`` builds (regions return their planes): graph, keys, layer."""
    from imagemapreduce.engine import stitch_graph

    plan = plan_for(image, cell, border, cells_per_task)
    return stitch_graph(plan, image.dtype, 0, REGION, scheduler, None)


def task_kinds(graph: dict) -> dict[str, int]:
    """How many tasks of each kind: cell batches, region tasks, picks (and anything else)."""
    counts = {"batches": 0, "regions": 0, "picks": 0, "other": 0}
    for key in graph:
        name = key[0] if isinstance(key, tuple) else str(key)
        kind = next((k for k, prefix in _PREFIXES.items() if name.startswith(prefix)), "other")
        counts[kind] += 1
    counts["total"] = sum(counts.values())
    return counts


_PREFIXES = {"batches": "imr-cell-", "regions": "imr-stitch-", "picks": "imr-pick-"}


def graph_bytes(graph: dict) -> int:
    """The pickled size of ``graph`` as a cluster receives it: pixel arguments are references.

    On a cluster the engine scatters in-memory pixels to the workers and puts a future in their
    place (`imagemapreduce.engine.scheduling`); here each becomes a string as long as a scatter
    key. The rest is pickled as ``distributed`` pickles a graph.
    """
    from distributed.protocol.pickle import dumps

    from imagemapreduce.engine.scheduling import holds_pixels

    sent = {}
    for key, task in graph.items():
        if isinstance(task, tuple) and task and callable(task[0]):
            task = tuple(f"ndarray-{uuid.uuid4().hex}" if holds_pixels(arg) else arg for arg in task)
        sent[key] = task
    return len(dumps(sent, protocol=pickle.HIGHEST_PROTOCOL))


def _broadcast_image(side: int) -> np.ndarray:
    """A float32 image of ``side`` x ``side`` that takes no memory (every pixel is one value)."""
    return np.broadcast_to(np.zeros(1, np.float32), (side, side))


def child_build(side: int, cell: int, border: int, cells_per_task: str, workers: int, repeats: int) -> dict:
    """In a fresh process: time ``repeats`` builds, then one traced build for memory; count tasks."""
    import psutil

    from imagemapreduce.engine import SchedulerChoice

    cpt: int | str = cells_per_task if cells_per_task == "auto" else int(cells_per_task)
    image = _broadcast_image(side)
    scheduler = SchedulerChoice("distributed", client=PlannedCluster(workers))
    times, rss = [], []
    kinds, layer = {}, None
    for _ in range(repeats):
        gc.collect()
        before = psutil.Process().memory_info().rss
        start = time.perf_counter()
        graph, _, layer = cluster_graph(image, cell, border, cpt, scheduler)
        times.append(time.perf_counter() - start)
        rss.append(psutil.Process().memory_info().rss - before)
        kinds = task_kinds(graph)
        cells, batches = layer.cell_count, len(layer.batches)
        del graph, layer
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    graph, _, layer = cluster_graph(image, cell, border, cpt, scheduler)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "cells": cells,
        "batches": batches,
        "cells_per_batch": cells / max(1, batches),
        "tasks": kinds,
        "build_s": times,
        "rss_growth_bytes": rss,
        "traced_peak_bytes": peak,
        "traced_kept_bytes": current,
    }


def child_bytes(side: int, cell: int, border: int, cells_per_task: str, workers: int) -> dict:
    """In a fresh process: graph bytes per cell of ``side``-px image's graph for ``workers`` workers."""
    from imagemapreduce.engine import SchedulerChoice

    cpt: int | str = cells_per_task if cells_per_task == "auto" else int(cells_per_task)
    scheduler = SchedulerChoice("distributed", client=PlannedCluster(workers))
    graph, _, layer = cluster_graph(_broadcast_image(side), cell, border, cpt, scheduler)
    size = graph_bytes(graph)
    return {
        "cells": layer.cell_count,
        "tasks": task_kinds(graph),
        "bytes": size,
        "bytes_per_cell": size / layer.cell_count,
    }


def _child(argv: list[str]) -> None:
    """``--child build|bytes ARGS...``: one measurement in this fresh process, printed as JSON."""
    kind, *rest = argv
    numbers = [int(v) if v.lstrip("-").isdigit() else v for v in rest]
    result = child_build(*numbers) if kind == "build" else child_bytes(*numbers)
    print(json.dumps(result))


def in_child(*args: Any, timeout: float = 900) -> dict:
    """Run one `_child` measurement in a fresh interpreter (so one build's memory never affects the next)."""
    return C.run_json_subprocess([os.path.abspath(__file__), "--child", *map(str, args)], timeout=timeout)


# -- 1 and 2: graphs ---------------------------------------------------------------------------
_ON_OFF = (("on", "auto"), ("off", 1))


def graph_section(args, payload: dict) -> None:
    """Sections 1 and 2: graph build time, memory, tasks and bytes, batching on and off."""
    repeats = 1 if args.smoke else 3
    big = 80 if args.smoke else 1000  # cells per side: 6,400 or 1,000,000 cells
    builds = {mode: in_child("build", big * 8, 8, 2, cpt, MODEL_WORKERS, repeats) for mode, cpt in _ON_OFF}
    model = {mode: in_child("build", big * CELL, CELL, BORDER, cpt, MODEL_WORKERS, repeats)
             for mode, cpt in MODEL_MODES.items()}  # fmt: skip
    # 1,600 or 250,000 cells: enough that the "auto" batches are those of 10**7 cells (capped by work, not count).
    side = (40 if args.smoke else 500) * CELL
    sizes = {mode: in_child("bytes", side, CELL, BORDER, cpt, MODEL_WORKERS) for mode, cpt in MODEL_MODES.items()}
    payload["graphs"] = {"build_8px": builds, "build_model": model, "bytes": sizes}
    payload["params"]["graphs"] = {
        "build_8px": {"cells": big * big, "cell": 8, "border": 2, "workers": MODEL_WORKERS, "region_size": REGION},
        "build_model": {"cells": big * big, "cell": CELL, "border": BORDER, "workers": MODEL_WORKERS},
        "bytes": {"cells": (side // CELL) ** 2, "cell": CELL, "border": BORDER, "workers": MODEL_WORKERS},
        "repeats": repeats,
    }
    rows = []
    for label, results in (("8 px", builds), (f"{CELL} px", model)):
        for mode, r in results.items():
            rows.append([
                label, mode, r["cells"], r["tasks"]["total"], min(r["build_s"]), statistics.median(r["build_s"]),
                r["traced_peak_bytes"] / r["cells"], max(r["rss_growth_bytes"]) / r["cells"],
            ])  # fmt: skip
    print(f"\n-- graph build for {MODEL_WORKERS} workers")
    print(C.table(rows, ["cells", "batching", "n cells", "tasks", "min s", "median s", "traced B/cell", "RSS B/cell"]))
    print("\n-- graph bytes per cell (pickled, pixels as references)")
    print(C.table([[m, s["cells"], s["tasks"]["total"], s["bytes_per_cell"]] for m, s in sizes.items()],
                  ["batching", "cells", "tasks", "bytes/cell"]))  # fmt: skip
    ratios = payload["ratios"]
    for mode in ("on", "off"):
        r = builds[mode]
        ratios[f"build_s_{r['cells']}_cells_{mode}"] = statistics.median(r["build_s"])
        ratios[f"build_us_per_cell_{mode}"] = statistics.median(r["build_s"]) / r["cells"] * 1e6
        ratios[f"traced_bytes_per_cell_{mode}"] = r["traced_peak_bytes"] / r["cells"]
        ratios[f"rss_bytes_per_cell_{mode}"] = max(r["rss_growth_bytes"]) / r["cells"]
        ratios[f"graph_bytes_per_cell_{mode}"] = sizes[mode]["bytes_per_cell"]
    ratios["graph_bytes_off_over_on"] = sizes["off"]["bytes_per_cell"] / sizes["on"]["bytes_per_cell"]
    cells = builds["on"]["cells"]
    for mode, goal, comparison in (("on", 5.0, "<="), ("off", 5.0, "info")):
        payload["targets"].append(C.target(
            f"graph build s at {cells} cells, batching {mode}", ratios[f"build_s_{cells}_cells_{mode}"], goal,
            comparison, f"stitch_graph for {MODEL_WORKERS} workers, 8-px cells, median of {repeats}", args.smoke,
            unit="s",
        ))  # fmt: skip
        payload["targets"].append(C.target(
            f"graph memory per cell, batching {mode}", ratios[f"traced_bytes_per_cell_{mode}"], 0.0, "info",
            "tracemalloc peak of the build / cells", args.smoke, unit="B",
        ))  # fmt: skip
        payload["targets"].append(C.target(
            f"graph bytes per cell, batching {mode}", ratios[f"graph_bytes_per_cell_{mode}"], 0.0, "info",
            f"pickled graph / cells, {CELL}-px cells, {MODEL_WORKERS} workers", args.smoke, unit="B",
        ))  # fmt: skip


# -- 3: a LocalCluster -------------------------------------------------------------------------
def _loop_cpu() -> float:
    """Run on the scheduler: the CPU time of its event-loop thread."""
    return time.thread_time()


def _process_cpu() -> float:
    """Run on a worker: its process's CPU time (user + system)."""
    times = os.times()
    return times.user + times.system


def _noop_task(_: int) -> None:
    """A task that does nothing: its time is all Dask's."""
    return None


class CpuSplit:
    """CPU seconds spent, between `start` and `stop`, by the scheduler loop, the workers and this thread."""

    def __init__(self, client):
        self.client = client

    def _read(self) -> tuple[float, float, float]:
        workers = sum(self.client.run(_process_cpu).values())
        return self.client.run_on_scheduler(_loop_cpu), workers, time.thread_time()

    def __enter__(self) -> CpuSplit:
        self.begin = self._read()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        end = self._read()
        self.scheduler, self.workers, self.client_thread = (b - a for a, b in zip(self.begin, end))

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": self.wall, "scheduler_s": self.scheduler, "workers_s": self.workers,
                "client_s": self.client_thread}  # fmt: skip


def throughput(client, ntasks: int, repeats: int) -> dict[str, Any]:
    """Dask's own rate: ``ntasks`` independent no-op tasks through ``client.get``, tasks per second."""
    times, loop = [], []
    for round_ in range(repeats + 1):
        graph = {(f"noop-{round_}", k): (_noop_task, k) for k in range(ntasks)}
        with CpuSplit(client) as split:
            client.get(graph, list(graph))
        if round_:  # the first round warms the workers up
            times.append(split.wall)
            loop.append(split.scheduler)
    return {
        "tasks": ntasks,
        **C.summarize(times),
        "tasks_per_s": ntasks / statistics.median(times),
        "scheduler_cpu_us_per_task": statistics.median(loop) / ntasks * 1e6,
    }


def engine_runs(client, image: np.ndarray, repeats: int) -> dict[str, Any]:
    """The engine on the cluster, batching on and off, side by side: wall and CPU split, task counts."""
    from imagemapreduce import map_reduce
    from imagemapreduce.engine import choose_scheduler

    modes = {"on": "auto", "off": 1}
    calls = {
        mode: (
            lambda cpt=cpt: map_reduce(
                image, noop, cell_size=CELL, border=BORDER, reduce="copy", scheduler=client, cells_per_task=cpt
            )
        )  # fmt: skip
        for mode, cpt in modes.items()
    }
    reference = map_reduce(image, noop, cell_size=CELL, border=BORDER, reduce="copy", scheduler="threads")
    equal = {mode: bool(np.array_equal(call(), reference)) for mode, call in calls.items()}  # also a warm-up
    if not all(equal.values()):
        raise AssertionError(f"batching changed the pixels: {equal}")
    splits: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode, call in calls.items():
            gc.collect()
            with CpuSplit(client) as split:
                call()
            splits[mode].append(split.as_dict())
    with choose_scheduler(client) as chosen:
        tasks = {mode: task_kinds(cluster_graph(image, CELL, BORDER, cpt, chosen)[0]) for mode, cpt in modes.items()}
    out = {}
    for mode in modes:
        med = {k: statistics.median(s[k] for s in splits[mode]) for k in splits[mode][0]}
        out[mode] = {"tasks": tasks[mode], "median": med, "runs": splits[mode],
                     **C.summarize([s["wall_s"] for s in splits[mode]])}  # fmt: skip
    return {"cells": int((image.shape[0] // CELL) * (image.shape[1] // CELL)), "pixels_equal": equal, **out}


def split_costs(runs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each place's CPU cost per cell and per task, from two runs that differ only in task count.

    ``cost = cells * per_cell + tasks * per_task`` for each run; two runs, two unknowns. A
    negative share (noise, where a cost hardly depends on one of them) is taken as 0.
    """
    cells = runs["cells"]
    n_on, n_off = runs["on"]["tasks"]["total"], runs["off"]["tasks"]["total"]
    costs = {}
    for place in ("scheduler_s", "workers_s", "client_s", "wall_s"):
        on, off = runs["on"]["median"][place], runs["off"]["median"][place]
        per_task = max(0.0, (off - on) / (n_off - n_on)) if n_off != n_on else 0.0
        per_cell = max(0.0, (on - n_on * per_task) / cells)
        costs[place.removesuffix("_s")] = {"per_task_s": per_task, "per_cell_s": per_cell}
    return costs


def cluster_section(args, payload: dict, workers: int) -> None:
    """Section 3: a LocalCluster started and stopped here; Dask's rate and the engine's costs."""
    from distributed import Client, LocalCluster

    nrep = C.repeats(args, full=3, smoke=1)
    # How many cores' worth of CPU the machine gives now (others may share it): the model's check uses it.
    capacity = C.parallel_capacity(workers, n=300_000 if args.smoke else 3_000_000)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)  # fmt: skip
    client = Client(cluster, set_as_default=False)
    info = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "startup_s": time.perf_counter() - start,
            "capacity": capacity}  # fmt: skip
    try:
        rate = throughput(client, 300 if args.smoke else 5_000, nrep)
        side = 8 * CELL if args.smoke else 4096
        image = np.random.default_rng(3).standard_normal((side, side), dtype=np.float32)
        runs = engine_runs(client, image, max(1, nrep - 1) if not args.smoke else 1)
    finally:
        client.close()
        cluster.close()
    payload["local_cluster"] = info
    payload["throughput"] = rate
    payload["engine"] = runs
    payload["pixels_equal"] = {"batching_on_off_threads": runs["pixels_equal"]}
    payload["timings"] = {
        "throughput": {"noop_tasks": {k: rate[k] for k in ("median_s", "min_s", "max_s", "times_s")}},
        "engine": {f"batching_{m}": {k: runs[m][k] for k in ("median_s", "min_s", "max_s", "times_s")}
                   for m in ("on", "off")},
    }  # fmt: skip
    costs = split_costs(runs)
    payload["costs"] = costs
    ratios = payload["ratios"]
    ratios["scheduler_tasks_per_s"] = rate["tasks_per_s"]
    ratios["engine_tasks_per_s_off"] = runs["off"]["tasks"]["total"] / runs["off"]["median_s"]
    ratios["engine_us_per_cell_on"] = runs["on"]["median_s"] / runs["cells"] * 1e6
    ratios["engine_us_per_cell_off"] = runs["off"]["median_s"] / runs["cells"] * 1e6
    ratios["engine_off_over_on"] = runs["off"]["median_s"] / runs["on"]["median_s"]
    ratios["scheduler_cpu_us_per_task"] = costs["scheduler"]["per_task_s"] * 1e6
    ratios["worker_cpu_us_per_task"] = costs["workers"]["per_task_s"] * 1e6
    ratios["worker_cpu_us_per_cell"] = costs["workers"]["per_cell_s"] * 1e6
    print(f"\n-- LocalCluster {workers} x 1: Dask's own throughput ({rate['tasks']} no-op tasks)")
    print(f"{rate['tasks_per_s']:,.0f} tasks/s; scheduler loop {rate['scheduler_cpu_us_per_task']:.0f} us CPU per task")
    print(f"\n-- the engine on {runs['cells']} cells of {CELL} px, no-op mapper")
    rows = [[m, runs[m]["tasks"]["total"], runs[m]["median_s"], *(runs[m]["median"][k] for k in
             ("scheduler_s", "workers_s", "client_s"))] for m in ("on", "off")]  # fmt: skip
    print(C.table(rows, ["batching", "tasks", "wall s", "scheduler CPU s", "workers CPU s", "client CPU s"]))
    print(C.table([[place, c["per_cell_s"] * 1e6, c["per_task_s"] * 1e6] for place, c in costs.items()],
                  ["where", "us per cell", "us per task"]))  # fmt: skip
    payload["targets"].append(C.target(
        "Dask scheduler throughput, LocalCluster", rate["tasks_per_s"], 0.0, "info",
        f"{rate['tasks']} independent no-op tasks, {workers} workers x 1 thread", args.smoke, unit="tasks/s",
    ))  # fmt: skip
    payload["targets"].append(C.target(
        "engine batching off / on, LocalCluster", ratios["engine_off_over_on"], 0.0, "info",
        f"{runs['cells']} cells of {CELL} px, no-op mapper, wall time", args.smoke,
    ))  # fmt: skip


# -- 4: the mapper ------------------------------------------------------------------------------
def mapper_section(args, payload: dict) -> None:
    """Seconds per cell of the model's mapper, on one core (median of many cells)."""
    side = CELL + 2 * BORDER
    cell = np.random.default_rng(5).standard_normal((side, side), dtype=np.float32)
    count = 20 if args.smoke else 400
    gaussian(cell)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count):
            gaussian(cell)
        times.append((time.perf_counter() - start) / count)
    payload["mapper"] = {"expanded_side": side, "cells_per_round": count, **C.summarize(times)}
    payload["ratios"]["mapper_us_per_cell"] = statistics.median(times) * 1e6
    print(f"\n-- mapper: Gaussian sigma {SIGMA} on a {side}x{side} cell: {statistics.median(times) * 1e6:.0f} us")


# -- 5: the model ------------------------------------------------------------------------------
def predict(
    workers: int,
    cells: float,
    tasks_per_cell: float,
    costs: dict,
    build_per_cell: float,
    bytes_per_cell: float,
    mapper_s: float,
    io_s: float,
    cores: float | None = None,
) -> dict[str, float]:
    """The model's run time (seconds) and its terms, for ``workers`` workers and ``cells`` cells."""
    tasks = cells * tasks_per_cell
    client = cells * build_per_cell + cells * bytes_per_cell / NETWORK_BYTES_PER_S
    # The scheduler handles tasks, never pixels: its cost is per task (see split_costs).
    scheduler = tasks * costs["scheduler"]["per_task_s"]
    work = cells * (mapper_s + io_s + costs["workers"]["per_cell_s"]) + tasks * costs["workers"]["per_task_s"]
    total = client + max(scheduler, work / workers)
    ideal = cells * mapper_s / workers
    return {
        "workers": workers, "cells": cells, "tasks": tasks, "client_s": client, "scheduler_s": scheduler,
        "workers_s": work / workers, "total_s": total, "ideal_s": ideal, "efficiency": ideal / total,
        "bound": "scheduler" if scheduler > work / workers else "workers",
        # Workers beyond which the scheduler, not the workers, sets the pace.
        "crossover_workers": work / scheduler if scheduler else math.inf,
        # All of it on ``cores`` shared cores (client, scheduler and workers on one machine, as here).
        "shared_cores_s": (client + scheduler + work) / (cores or workers),
    }  # fmt: skip


def model_section(args, payload: dict) -> None:
    """Section 5: the model's inputs, its predictions, and its check against the LocalCluster."""
    costs, graphs, runs = payload["costs"], payload["graphs"], payload["engine"]
    mapper_s = payload["ratios"]["mapper_us_per_cell"] * 1e-6
    expanded = (CELL + 2 * BORDER) ** 2
    io_s = (expanded + CELL * CELL) * 4 / WORKER_IO_BYTES_PER_S  # read the expanded box, write the core (float32)
    chunk_tasks_per_cell = CELL * CELL / INPUT_CHUNK**2  # one read task per input chunk
    inputs, predictions = {}, {}
    for mode in MODEL_MODES:
        built = graphs["build_model"][mode]
        inputs[mode] = {
            "graph_tasks_per_cell": built["tasks"]["total"] / built["cells"],
            "tasks_per_cell": built["tasks"]["total"] / built["cells"] + chunk_tasks_per_cell,
            "cells_per_batch": built["cells_per_batch"],
            "build_s_per_cell": statistics.median(built["build_s"]) / built["cells"],
            "graph_bytes_per_cell": graphs["bytes"][mode]["bytes_per_cell"],
        }
        args_ = (inputs[mode]["tasks_per_cell"], costs, inputs[mode]["build_s_per_cell"],
                 inputs[mode]["graph_bytes_per_cell"], mapper_s, io_s)  # fmt: skip
        predictions[mode] = {
            "target": predict(MODEL_WORKERS, MODEL_CELLS, *args_),
            "grid": [predict(w, n, *args_) for w in (1, 10, 100, 1000) for n in (10**5, 10**6, 10**7)],
        }
    # Check the model against what it was built from: the LocalCluster's own runs (no mapper, no I/O).
    # Here the client's messages (scattering pixels, gathering regions) go through the loop thread it
    # shares with the scheduler: that thread's per-cell share counts as the client's.
    check = {}
    for mode in ("on", "off"):
        measured = runs[mode]["median_s"]
        tpc = runs[mode]["tasks"]["total"] / runs["cells"]
        client_per_cell = (runs[mode]["median"]["client_s"] / runs["cells"]) + costs["scheduler"]["per_cell_s"]
        cores = payload["local_cluster"]["capacity"]["capacity"]
        p = predict(payload["local_cluster"]["n_workers"], runs["cells"], tpc, costs, client_per_cell, 0.0, 0.0, 0.0,
                    cores)  # fmt: skip
        check[mode] = {
            "measured_s": measured, "predicted_s": p["total_s"], "predicted_shared_cores_s": p["shared_cores_s"],
            "measured_over_predicted": measured / p["total_s"],
            "measured_over_shared_cores": measured / p["shared_cores_s"],
        }  # fmt: skip
    payload["model"] = {
        "assumed": {"network_bytes_per_s": NETWORK_BYTES_PER_S, "worker_io_bytes_per_s": WORKER_IO_BYTES_PER_S,
                    "input_chunk": INPUT_CHUNK},  # fmt: skip
        "workload": {"cell": CELL, "border": BORDER, "mapper": f"gaussian_filter sigma {SIGMA}", "mapper_s": mapper_s,
                     "io_s_per_cell": io_s},
        "inputs": inputs,
        "predictions": predictions,
        "check_local_cluster": check,
    }  # fmt: skip
    targets = {mode: predictions[mode]["target"] for mode in MODEL_MODES}
    on, off = targets["on"], targets["off"]
    ratios = payload["ratios"]
    for mode, p in targets.items():
        ratios[f"model_s_{mode}"], ratios[f"model_efficiency_{mode}"] = p["total_s"], p["efficiency"]
        ratios[f"model_crossover_workers_{mode}"] = p["crossover_workers"]
    ratios["model_off_over_on"] = off["total_s"] / on["total_s"]
    ratios["model_on_over_large"] = on["total_s"] / targets["large"]["total_s"]
    print(f"\n-- model: {MODEL_WORKERS} workers, {MODEL_CELLS:.0e} cells of {CELL} px, Gaussian sigma {SIGMA}")
    rows = [[m, inputs[m]["cells_per_batch"], p["tasks"], p["client_s"], p["scheduler_s"], p["workers_s"],
             p["total_s"], p["efficiency"], p["crossover_workers"]] for m, p in targets.items()]  # fmt: skip
    print(C.table(rows, ["batching", "cells/batch", "tasks", "client s", "scheduler s", "workers s", "total s",
                         "efficiency", "crossover W"]))  # fmt: skip
    print(f"batching off / on: {ratios['model_off_over_on']:.1f}x; ", end="")
    print(f"on / large batches: {ratios['model_on_over_large']:.2f}x")
    print("\n-- model, total seconds by workers and cells")
    grid_rows = []
    for mode in MODEL_MODES:
        for p in predictions[mode]["grid"]:
            grid_rows.append([mode, p["workers"], f"{p['cells']:.0e}", p["total_s"], p["efficiency"], p["bound"]])
    print(C.table(grid_rows, ["batching", "workers", "cells", "total s", "efficiency", "bound"]))
    print("\n-- model check on the LocalCluster it was built from")
    rows = [[m, c["measured_s"], c["predicted_s"], c["measured_over_predicted"], c["predicted_shared_cores_s"],
             c["measured_over_shared_cores"]] for m, c in check.items()]  # fmt: skip
    print(C.table(rows, ["batching", "measured s", "model s", "measured / model", "model, shared cores s",
                         "measured / shared"]))  # fmt: skip
    for mode, p in targets.items():
        payload["targets"].append(C.target(
            f"model run time, {MODEL_WORKERS} workers, 1e7 cells, batching {mode}", p["total_s"], 0.0, "info",
            f"{CELL}-px cells, Gaussian sigma {SIGMA}; efficiency {p['efficiency']:.2f} ({p['bound']}-bound)",
            args.smoke, unit="s",
        ))  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(argv[1:])
        return {}
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    workers = C.workers(args)
    payload = C.start_payload(args, {"workers": workers, "cell": CELL, "border": BORDER, "region_size": REGION,
                                     "model_workers": MODEL_WORKERS, "model_cells": MODEL_CELLS})  # fmt: skip
    payload.update({"ratios": {}, "targets": []})
    started = time.perf_counter()
    graph_section(args, payload)
    cluster_section(args, payload, workers)
    mapper_section(args, payload)
    model_section(args, payload)
    payload["notes"].append(
        f"the model assumes {NETWORK_BYTES_PER_S / 1e9:.2f} GB/s from client to scheduler and "
        f"{WORKER_IO_BYTES_PER_S / 1e6:.0f} MB/s of storage per worker; everything else is measured here"
    )
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
