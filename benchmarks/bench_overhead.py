"""Fixed costs: microseconds per cell with a no-op mapper, and graph construction time vs cell count.

1. Per-cell overhead: a no-op function (it returns its cell) on 10,000 cells of 8x8 pixels (an
   800x800 float32 image, border 2), end to end, so almost all of the time is the engine's:
   ``map_reduce`` on the threaded and synchronous schedulers and on a ``distributed.LocalCluster``
   (worker processes on 127.0.0.1, started once and not timed), and the Task API
   (``ImageMapReduceTask`` with ``IdentityMapper`` on an ``ExposureF``) on threads.
2. Graph construction at 25,000, 50,000 and 100,000 cells, as a user sees it:
   ``map_reduce(..., compute=False)`` (grid + plan + cell and region tasks + the lazy Dask array),
   and for the Task API the engine calls ``run`` makes before anything executes
   (the cell batches and region tasks of ``engine.stitch_graph``, writing into a shared output).
   Targets: under 2 s at 100,000 cells; and linear: t(100k) / t(25k) <= 5 (4 is exactly linear).
"""

from __future__ import annotations

import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

NAME = "overhead"
CELL = 8
BORDER = 2


def noop(cell: np.ndarray) -> np.ndarray:
    """Return the cell unchanged (its core is kept)."""
    return cell


def _task(cell: int = CELL, border: int = BORDER, scheduler=None, workers=None):
    import imagemapreduce as imr

    config = imr.ImageMapReduceConfig()
    from imagemapreduce.builtin_mappers import IdentityMapper

    config.mapper.retarget(IdentityMapper)
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = cell
    config.gridStepX = config.gridStepY = cell
    config.borderSizeX = config.borderSizeY = border
    config.adjustGridOption = "none"
    config.reducer.reduceOperation = "copy"
    config.scheduler = scheduler
    config.numWorkers = workers
    return imr.ImageMapReduceTask(config=config, scheduler=None)


def _exposure(shape):
    import imagemapreduce as imr

    exp = imr.ExposureF(shape[1], shape[0])
    exp.image.array[...] = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    exp.variance.array[...] = 1.0
    return exp


def per_cell(args, nworkers: int, nrep: int, payload: dict) -> None:
    from imagemapreduce import map_reduce

    side = 160 if args.smoke else 800
    shape = (side, side)
    ncells = (side // CELL) ** 2
    image = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    exposure = _exposure(shape)
    task = _task(scheduler="threads", workers=nworkers)

    def mr(scheduler, workers=None):
        return lambda: map_reduce(
            image, noop, cell_size=CELL, border=BORDER, reduce="copy", scheduler=scheduler, num_workers=workers
        )

    contenders = {
        "map_reduce_threads": mr("threads", nworkers),
        "map_reduce_synchronous": mr("synchronous"),
        "task_threads": lambda: task.run(exposure).exposure,
    }
    assert np.array_equal(contenders["map_reduce_threads"](), image)
    assert np.array_equal(contenders["task_threads"]().image.array, exposure.image.array)
    timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args))

    cluster_info = {}
    try:
        from distributed import Client, LocalCluster

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            cluster = LocalCluster(
                n_workers=nworkers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            )
            client = Client(cluster, set_as_default=False)
            cluster_info["startup_s"] = time.perf_counter() - t0
            try:
                dist = {"map_reduce_local_cluster": mr(client)}
                assert np.array_equal(dist["map_reduce_local_cluster"](), image)
                timings.update(C.time_round_robin(dist, max(1, nrep - 1), warmup=C.warmup(args)))
            finally:
                client.close()
                cluster.close()
    except Exception as exc:  # noqa: BLE001 - recorded, the rest of the benchmark still counts
        cluster_info["error"] = f"{type(exc).__name__}: {exc}"
    payload["local_cluster"] = {**cluster_info, "n_workers": nworkers, "threads_per_worker": 1, "processes": True}
    payload["timings"]["per_cell"] = timings
    us = {name: t["median_s"] / ncells * 1e6 for name, t in timings.items()}
    payload["params"]["per_cell"] = {
        "shape": list(shape),
        "cell": CELL,
        "border": BORDER,
        "cells": ncells,
        "regions": int(np.ceil(side / 1024)) ** 2,
        "workers": nworkers,
    }
    payload["ratios"]["us_per_cell"] = us
    print(f"\n-- no-op mapper, {ncells} cells")
    print(C.table([[k, v] for k, v in us.items()], ["contender", "us per cell"]))
    for name, value in us.items():
        on_cluster = name == "map_reduce_local_cluster"  # the target: amortised, cells batched
        payload["targets"].append(
            C.target(
                f"us per cell, {name}",
                value,
                100.0 if on_cluster else 0.0,
                "<=" if on_cluster else "info",
                f"no-op mapper, {ncells} cells, end to end",
                args.smoke,
                unit="us",
            )
        )


def _lazy_map_reduce(shape):
    from imagemapreduce import map_reduce

    image = np.zeros(shape, np.float32)
    return lambda: map_reduce(image, noop, cell_size=CELL, border=BORDER, reduce="copy", compute=False)


def _task_graph(shape):
    """The graph ``ImageMapReduceTask.run`` builds (threads: regions write into the output)."""
    from imagemapreduce.engine import choose_scheduler, stitch_graph

    exposure = _exposure(shape)
    task = _task()
    output, bad = task.reducer.prepareOutput(exposure)
    scheduler = choose_scheduler("threads")

    def build():
        task.boxes0 = task.boxes1 = None  # the grid is part of what run() does
        plan = task.prepare(exposure, {}, "copy").plan
        graph, _, _ = stitch_graph(plan, output.dtype, bad, 1024, scheduler, output)
        return graph

    return build


def graph_build(args, nrep: int, payload: dict) -> None:
    sizes = {  # cells: (rows, cols) of 8x8 cells
        25_000: (1000, 1600),
        50_000: (2000, 1600),
        100_000: (2000, 3200),
    }
    if args.smoke:
        sizes = {1_000: (200, 320), 2_000: (400, 320), 4_000: (400, 640)}
    timings: dict[str, dict] = {}
    for ncells, shape in sizes.items():
        assert (shape[0] // CELL) * (shape[1] // CELL) == ncells
        contenders = {f"map_reduce_lazy_{ncells}": _lazy_map_reduce(shape), f"task_graph_{ncells}": _task_graph(shape)}
        timings.update(C.time_round_robin(contenders, nrep, warmup=C.warmup(args)))
    payload["timings"]["graph_build"] = timings
    counts = list(sizes)
    small, mid, big = counts
    rows, ratios = [], {}
    for kind in ("map_reduce_lazy", "task_graph"):
        t = {n: timings[f"{kind}_{n}"]["median_s"] for n in counts}
        ratios[kind] = {
            "seconds": {str(n): t[n] for n in counts},
            f"t{big}_over_t{small}": t[big] / t[small],
            f"t{big}_over_t{mid}": t[big] / t[mid],
            "us_per_cell_at_max": t[big] / big * 1e6,
        }
        rows.append([kind, *(t[n] for n in counts), t[big] / t[small], t[big] / t[mid]])
        label = "map_reduce(compute=False)" if kind == "map_reduce_lazy" else "Task graph (ExposurePlan)"
        payload["targets"].append(
            C.target(
                f"graph build s at {big} cells, {label}",
                t[big],
                2.0,
                "<=",
                f"seconds to build the graph of {big} cells",
                args.smoke,
                unit="s",
            )
        )
        payload["targets"].append(
            C.target(
                f"linearity t({big})/t({small}), {label}",
                t[big] / t[small],
                5.0,
                "<=",
                f"4.0 is exactly linear; {big // small}x the cells",
                args.smoke,
            )
        )
    payload["ratios"]["graph_build"] = ratios
    payload["params"]["graph_build"] = {
        "cells": {str(n): list(s) for n, s in sizes.items()},
        "cell": CELL,
        "border": BORDER,
        "region_size": 1024,
    }
    print("\n-- graph construction, seconds")
    print(C.table(rows, ["graph", *(f"{n} cells" for n in counts), f"t{big}/t{small}", f"t{big}/t{mid}"]))


def main(argv: list[str] | None = None) -> dict:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    nrep, nworkers = C.repeats(args, full=3, smoke=1), C.workers(args)
    payload = C.start_payload(args, {"repeats": nrep, "workers": nworkers})
    payload.update({"timings": {}, "ratios": {}, "targets": []})
    started = time.perf_counter()
    per_cell(args, nworkers, nrep, payload)
    graph_build(args, nrep, payload)
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
