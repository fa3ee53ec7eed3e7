"""``imagemapreduce bench``: the parallel speedup of one job over worker counts 1, 2, 4 ... N.

Each worker count runs the same task (same image, mapper and grid) ``--repeat`` times and keeps
the fastest wall time, the usual estimate of what the machine can do once caches are warm.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..image import Exposure
from ..mapreduce import ImageMapReduceTask
from ._commands import (
    LOGGER_NAME,
    _check_plot_file,
    _make_grid,
    _run_config,
    grid_boxes,
    read_input,
    warn_short_border,
)
from ._options import CliError, resolve_mapper

__all__ = ["bench_command", "worker_counts", "speedup_rows"]


def worker_counts(largest: int) -> list[int]:
    """1, 2, 4 ... up to ``largest``, and ``largest`` itself."""
    counts, n = [], 1
    while n < largest:
        counts.append(n)
        n *= 2
    return [*counts, largest]


def speedup_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add speedup (time on the fewest workers, scaled to one, over this time) and efficiency to each run."""
    base = runs[0]
    for run in runs:
        run["speedup"] = base["bestSeconds"] * base["workers"] / run["bestSeconds"]
        run["efficiency"] = run["speedup"] / run["workers"]
    return runs


def bench_command(args: argparse.Namespace) -> int:
    """Run the job on each worker count, print a table, write the JSON and the plot."""
    if (args.input is None) == (args.size is None):
        raise CliError("give an INPUT image or --size WxH (one of them)")
    plot = args.plot or str(Path(args.output).with_suffix(".png"))
    _check_plot_file(plot)
    if not Path(args.output).absolute().parent.is_dir():
        raise CliError(f"--output {args.output!r}: its folder does not exist")
    exposure = read_input(args.input, hdu=args.hdu) if args.input else _simulated(args.size)
    mapper = resolve_mapper(args.mapper)
    args.scheduler_file, args.weights, args.weight_function, args.reduce = None, "uniform", None, "average"
    args.progress, args.mask_failures, args.cell_timeout, args.region_size, args.config = False, False, None, None, []
    cluster = "://" in args.scheduler
    runs = []
    with _connect(args.scheduler) as client:
        if cluster:  # a running cluster: at most its own worker count, and only that one
            available = len(client.scheduler_info()["workers"])
            largest: int = min(args.workers or available, available)
            counts = [largest]
        else:
            largest = args.workers or os.cpu_count() or 1
            counts = worker_counts(largest)
        for n in counts:
            runs.append(_time_count(args, mapper, exposure, n, client))
    result = {
        "job": {
            "input": args.input or f"simulated {exposure.getWidth()} x {exposure.getHeight()} px",
            "mapper": args.mapper,
            "mapperOptions": dict(args.mapper_option),
            "scheduler": args.scheduler,
            "repeat": args.repeat,
            "cells": runs[0]["cells"],
        },
        "runs": speedup_rows(runs),
    }
    if cluster:
        result["note"] = "a running cluster is measured at its own worker count only"
    if args.compare_map_overlap:
        result["mapOverlap"] = _time_map_overlap(args, mapper, exposure, largest)
    Path(args.output).write_text(json.dumps(result, indent=2))
    _plot(result, plot)
    print(json.dumps(result, indent=2) if args.json else _table(result, args.output, plot))
    return 0


def _simulated(size: tuple[int, int]) -> Exposure:
    from ..image import ExposureF

    width, height = size
    rng = np.random.default_rng(1)
    image = rng.normal(100.0, 10.0, (height, width)).astype(np.float32)
    return ExposureF.from_arrays(image, np.zeros(image.shape, np.int32), np.full(image.shape, 100.0, np.float32))


@contextmanager
def _connect(scheduler: str) -> Iterator[Any]:
    if "://" not in scheduler:
        yield None
        return
    from distributed import Client

    with Client(scheduler, timeout=10) as client:
        yield client


@contextmanager
def _workers(args: argparse.Namespace, n: int, client: Any) -> Iterator[tuple[Any, str | None]]:
    """(a client or None, the scheduler name) for ``n`` workers."""
    if client is not None:
        yield client, None
    elif args.scheduler in ("processes", "multiprocessing"):
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as local,
        ):
            yield local, None
    else:
        yield None, args.scheduler


def _time_count(args: argparse.Namespace, mapper: type, exposure: Exposure, n: int, client: Any) -> dict[str, Any]:
    times: list[float] = []
    task: ImageMapReduceTask | None = None
    with _workers(args, n, client) as (chosen, name):
        for _ in range(args.repeat):
            config = _run_config(_with(args, scheduler=name, workers=n if name else None), mapper, exposure)
            task = ImageMapReduceTask(config=config, log=logging.getLogger(LOGGER_NAME), scheduler=chosen)
            _make_grid(task, exposure)
            if not times:
                warn_short_border(task, exposure)
            start = time.perf_counter()
            task.run(exposure)
            times.append(time.perf_counter() - start)
    if task is None:  # the parser takes --repeat as a positive integer
        raise CliError("--repeat must be at least 1")
    best = min(times)
    cell_seconds = float(np.sum(task.metadata.get("cellWallTime", [])))
    cells = len(grid_boxes(task)[0])
    moved = task.metadata.get("bytesMoved", None)
    return {
        "workers": n,
        "seconds": times,
        "bestSeconds": best,
        "cells": cells,
        "overheadPerCellSeconds": max(best * n - cell_seconds, 0.0) / cells,
        "bytesMoved": None if moved is None else int(moved),
    }


def _with(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def _time_map_overlap(args: argparse.Namespace, mapper: type, exposure: Exposure, workers: int) -> dict[str, Any]:
    """The same filter with ``dask.array.map_overlap`` on chunks of the cell size, depth the mapper's reach."""
    import dask
    import dask.array as da
    from scipy import ndimage

    config = _run_config(_with(args, scheduler=None, workers=None), mapper, exposure)
    instance = mapper(config=config.mapper.value)
    options = instance.config
    if options.__class__.__name__ == "GaussianSmoothMapperConfig":
        func, kwargs = (
            ndimage.gaussian_filter,
            {"sigma": options.sigma, "truncate": options.truncate, "mode": "nearest"},
        )
    elif options.__class__.__name__ == "MedianFilterMapperConfig":
        func, kwargs = ndimage.median_filter, {"size": options.size, "mode": options.mode}
    else:
        return {"skipped": f"map_overlap is compared for the gaussian and median mappers, not {args.mapper}"}
    depth = instance.reach(exposure)
    image = np.asarray(exposure.image.array, dtype=np.float64)
    chunks = (int(config.cellSizeY), int(config.cellSizeX))
    times: list[float] = []
    for _ in range(args.repeat):
        lazy = da.from_array(image, chunks=chunks).map_overlap(func, depth=depth, boundary="nearest", **kwargs)
        start = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=workers):
            lazy.compute()
        times.append(time.perf_counter() - start)
    return {"workers": workers, "scheduler": "threads", "seconds": times, "bestSeconds": min(times), "depth": depth}


def _table(result: dict[str, Any], output: str, plot: str) -> str:
    lines = [
        f"imagemapreduce bench: {result['job']['cells']} cells, {result['job']['mapper']}, "
        f"{result['job']['scheduler']}, best of {result['job']['repeat']}",
        "  workers   best (s)   speedup   efficiency   overhead/cell (ms)   bytes moved",
    ]
    for run in result["runs"]:
        moved = "-" if run["bytesMoved"] is None else f"{run['bytesMoved']:,}"
        lines.append(
            f"  {run['workers']:7d}   {run['bestSeconds']:8.3f}   {run['speedup']:7.2f}   "
            f"{run['efficiency']:10.0%}   {1e3 * run['overheadPerCellSeconds']:18.2f}   {moved}"
        )
    overlap = result.get("mapOverlap")
    if overlap and "bestSeconds" in overlap:
        lines.append(f"  dask.array.map_overlap on {overlap['workers']} threads: {overlap['bestSeconds']:.3f} s")
    lines.append(f"results written to {output}, plot to {plot}")
    return "\n".join(lines)


def _plot(result: dict[str, Any], path: str) -> None:
    from matplotlib.figure import Figure

    workers = [run["workers"] for run in result["runs"]]
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(workers, workers, "k--", label="ideal (speedup = workers)")
    ax.plot(workers, [run["speedup"] for run in result["runs"]], "o-", label="measured")
    ax.set_xlabel("workers")
    ax.set_ylabel("speedup")
    ax.set_title(f"{result['job']['cells']} cells, {result['job']['mapper']} on {result['job']['scheduler']}")
    ax.legend()
    fig.savefig(path)
