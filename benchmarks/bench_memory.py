"""Peak memory of an in-memory ``average`` run, as a multiple of the exposure's size.

An ``ExposureF`` (image float32, mask int32, variance float32: 12 bytes a pixel) is map-reduced
with ``AddAmountMapper`` (each cell's result is a new sub-exposure) on 256-px cells with a 128-px
step (every pixel lies in 4 cells, so all cell results together are 4x the exposure), 8-px
border, ``reduceOperation="average"``. Each configuration runs in a fresh Python process; the
peak resident memory is taken from ``ru_maxrss`` and from a 5 ms psutil sampling thread, minus
the process's memory after imports and a warm-up run but before the exposure is made. So the
figure includes the input exposure (1x) and the output (1x).

Configurations:

* ``ours_threads``, ``ours_synchronous``: ``ImageMapReduceTask.run`` (cells mapped and stitched region
  by region; no path holds every cell's result), with the default ``stitchRegionSize`` (512).
* ``ours_threads_region1024``: the same with ``config.stitchRegionSize = 1024`` (more cell results
  wait for their region at once).
* ``serial_hold_all``: LSST's serial design: a loop maps every cell and keeps each result, then
  ``ImageReducer.run`` reduces the list.
* ``parallel_hold_all``: the same "gather everything, then reduce" with the mapping on threads
  (a ``reduceOperation="none"`` run returns every cell's result, then ``ImageReducer.run``
  reduces the list): what a naive parallel port does.

Target: ours <= 3x the exposure + the cells in flight (2 x workers x one expanded cell's 3 planes).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

NAME = "memory"
METHODS = ("ours_threads", "ours_synchronous", "ours_threads_region1024", "serial_hold_all", "parallel_hold_all")


def make_task(
    cell: int,
    step: int,
    border: int,
    scheduler: str,
    workers: int,
    region: int | None = None,
    operation: str = "average",
):
    import imagemapreduce as imr
    from imagemapreduce.builtin_mappers import AddAmountMapper

    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(AddAmountMapper)
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = cell
    config.gridStepX = config.gridStepY = step
    config.borderSizeX = config.borderSizeY = border
    config.adjustGridOption = "none"
    config.reducer.reduceOperation = operation
    config.scheduler = scheduler
    config.numWorkers = workers
    if region is not None:
        config.stitchRegionSize = region
    return imr.ImageMapReduceTask(config=config)


def make_exposure(size: int, seed: int = 5):
    import numpy as np

    import imagemapreduce as imr

    rng = np.random.default_rng(seed)
    exposure = imr.ExposureF(size, size)
    exposure.image.array[...] = rng.standard_normal((size, size), dtype=np.float32)
    exposure.variance.array[...] = 1.0
    exposure.mask.array[::97, ::89] = 1
    return exposure


def run_method(method: str, exposure, cell: int, step: int, border: int, workers: int):
    scheduler = "synchronous" if method == "ours_synchronous" else "threads"
    task = make_task(cell, step, border, scheduler, workers, 1024 if method == "ours_threads_region1024" else None)
    if method in ("ours_threads", "ours_synchronous", "ours_threads_region1024"):
        return task.run(exposure).exposure
    if method == "parallel_hold_all":
        results = make_task(cell, step, border, scheduler, workers, operation="none").run(exposure).result
        return task.reducer.run(results, exposure).exposure
    if method == "serial_hold_all":  # LSST's loop: map every cell, keep every result, then reduce
        boxes0, boxes1 = task.generateGrid(exposure)
        bbox = exposure.getBBox()
        results = [task.mapper.run(exposure.subset(b0), exposure.subset(b1), bbox) for b0, b1 in zip(boxes0, boxes1)]
        return task.reducer.run(results, exposure).exposure
    raise ValueError(method)


def child(config: dict) -> dict:
    """Run one configuration in this (fresh) process and measure its peak memory."""
    import numpy as np

    size, cell, step, border, workers = (config[k] for k in ("size", "cell", "step", "border", "workers"))
    # Warm up: import everything and start the thread pools on a tiny exposure, so the baseline
    # holds the code and the peak holds only the run's data.
    run_method(config["method"], make_exposure(4 * cell, seed=1), cell, step, border, workers)
    gc.collect()
    baseline = C.current_rss()
    exposure = make_exposure(size)
    after_input = C.current_rss()
    start = time.perf_counter()
    with C.PeakRSS(interval=0.005) as sampler:
        out = run_method(config["method"], exposure, cell, step, border, workers)
    elapsed = time.perf_counter() - start
    peak = max(sampler.peak, C.ru_maxrss_bytes())
    checksum = float(np.nansum(out.image.array[:: max(1, size // 64), :: max(1, size // 64)], dtype=np.float64))
    return {
        "method": config["method"],
        "size": size,
        "baseline_rss": baseline,
        "input_rss": after_input - baseline,
        "peak_rss": peak,
        "peak_over_baseline": peak - baseline,
        "samples": sampler.samples,
        "seconds": elapsed,
        "checksum": checksum,
    }


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse_hidden(), default=None)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    nworkers = C.workers(args)
    cell, step, border = (64, 32, 8) if args.smoke else (256, 128, 8)
    sizes = [512] if args.smoke else [4096, 8192]
    methods = ("ours_threads", "serial_hold_all") if args.smoke else METHODS
    payload = C.start_payload(
        args,
        {
            "sizes": sizes,
            "cell": cell,
            "step": step,
            "border": border,
            "workers": nworkers,
            "reduce": "average",
            "mapper": "AddAmountMapper",
            "bytes_per_pixel": 12,
            "methods": list(methods),
        },
    )
    payload.update({"runs": [], "ratios": {}, "targets": []})
    started = time.perf_counter()
    rows = []
    for size in sizes:
        exposure_bytes = 12 * size * size
        in_flight = 2 * nworkers * 12 * (cell + 2 * border) ** 2
        allowance = 3.0 + in_flight / exposure_bytes
        results = {}
        for method in methods:
            config = {"method": method, "size": size, "cell": cell, "step": step, "border": border, "workers": nworkers}
            res = C.run_json_subprocess([os.path.abspath(__file__), "--child", json.dumps(config)], timeout=900)
            res["exposure_bytes"] = exposure_bytes
            res["multiple_of_exposure"] = res["peak_over_baseline"] / exposure_bytes
            payload["runs"].append(res)
            results[method] = res
            rows.append([size, method, res["peak_over_baseline"] / 2**20, res["multiple_of_exposure"], res["seconds"]])
        checks = {m: r["checksum"] for m, r in results.items()}
        if len({round(v, 3) for v in checks.values()}) != 1:
            raise AssertionError(f"configurations disagree on the output: {checks}")
        ratios = {f"{m}_multiple": r["multiple_of_exposure"] for m, r in results.items()}
        ratios["serial_hold_all_over_ours_threads"] = (
            results["serial_hold_all"]["peak_over_baseline"] / results["ours_threads"]["peak_over_baseline"]
        )
        ratios["allowance_multiple"] = allowance
        payload["ratios"][str(size)] = ratios
        for m in ("ours_threads", "ours_synchronous", "ours_threads_region1024"):
            if m in results:
                payload["targets"].append(
                    C.target(
                        f"peak / exposure, {m}, {size}^2",
                        results[m]["multiple_of_exposure"],
                        round(allowance, 3),
                        "<=",
                        f"peak RSS over baseline / exposure bytes ({exposure_bytes / 2**20:.0f} MiB), input and output "
                        "included; target 3x + cells in flight",
                        args.smoke,
                    )
                )
        for m in ("serial_hold_all", "parallel_hold_all"):
            if m in results:
                payload["targets"].append(
                    C.target(
                        f"peak / exposure, {m}, {size}^2",
                        results[m]["multiple_of_exposure"],
                        0.0,
                        "info",
                        "LSST-style: every cell result held, then reduced",
                        args.smoke,
                    )
                )
    print(C.table(rows, ["size", "method", "peak - baseline MiB", "x exposure", "seconds"]))
    _plot(payload, args.output)
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def _plot(payload: dict, output) -> None:
    plt = C.pyplot()
    runs = payload["runs"]
    sizes = sorted({r["size"] for r in runs})
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        vals = [next(r["multiple_of_exposure"] for r in runs if r["method"] == m and r["size"] == s) for s in sizes]
        ax.bar([i + k * width for i in range(len(sizes))], vals, width, label=m)
    ax.axhline(3.0, color="k", ls="--", lw=1, label="target 3x")
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(sizes))])
    ax.set_xticklabels([f"{s}x{s}\n({12 * s * s / 2**20:.0f} MiB)" for s in sizes])
    ax.set_ylabel("peak RSS / exposure size")
    ax.set_title("average, 2x overlap (4 cells per pixel)")
    ax.legend(fontsize=7)
    C.save_plot(fig, output, NAME)


if __name__ == "__main__":
    main()
