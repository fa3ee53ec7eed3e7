"""Ours vs a hand-written ``ThreadPoolExecutor`` loop over the same cells: the cost of the engine.

The hand-written pool is the floor for threads: it cuts each expanded cell as a view, calls the
function, and writes the core into a preallocated array, with no graph, no scheduler and no
stitcher. ``map_reduce(..., reduce="copy", scheduler="threads")`` does the same job through the
engine (grid, Dask graph, cell tasks, region stitching). Both use the same number of threads and
are checked to give identical pixels.

Two workloads:

* ``gaussian_512``: the job of ``bench_map_overlap`` (8192x8192 float32, 512-px cells, 16-px border,
  Gaussian sigma 3); 256 cells, each ~5-10 ms of work.
* ``small_cells_64``: 4096x4096 float32, 64-px cells, 8-px border, Gaussian sigma 1.5; 4096 cells of
  well under a millisecond each, where per-cell overhead shows.

Target: ours / hand pool <= 1.10 on each.
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
from bench_map_overlap import expanded_cells, hand_pool, ours, serial_loop  # noqa: E402
from scipy import ndimage  # noqa: E402

NAME = "pool_overhead"


def gaussian(cell: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(cell, sigma)


WORKLOADS = {
    # name: (full (size, cell, border), smoke (size, cell, border), sigma)
    "gaussian_512": ((8192, 512, 16), (1024, 128, 16), 3.0),
    "small_cells_64": ((4096, 64, 8), (512, 32, 8), 1.5),
}


def main(argv: list[str] | None = None) -> dict:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    nrep, nworkers = C.repeats(args), C.workers(args)
    params = {"workers": nworkers, "repeats": nrep, "scheduler": "threads", "workloads": {}}
    payload = C.start_payload(args, params)
    started = time.perf_counter()
    payload["timings"], payload["ratios"], payload["targets"], payload["pixels_equal"] = {}, {}, [], {}
    for wname, (full, smoke, sigma) in WORKLOADS.items():
        size, cell, border = smoke if args.smoke else full
        func = partial(gaussian, sigma=sigma)
        func.__name__ = f"gaussian_sigma{sigma}"  # type: ignore[attr-defined]
        image = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
        cells = expanded_cells(image.shape, cell, border)
        params["workloads"][wname] = {
            "shape": [size, size],
            "cell": cell,
            "border": border,
            "sigma": sigma,
            "cells": len(cells),
        }
        contenders = {
            "imagemapreduce": partial(ours, image, cell, border, nworkers, func),
            "hand_pool": partial(hand_pool, image, cells, nworkers, func),
            "serial_loop": partial(serial_loop, image, cells, func),
        }
        reference = contenders["hand_pool"]()
        payload["pixels_equal"][wname] = C.same_pixels(contenders, reference, wname)
        del reference
        timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args))
        payload["timings"][wname] = timings
        t = {name: C.median(timings, name) for name in timings}
        ratio = t["imagemapreduce"] / t["hand_pool"]
        per_cell_us = (t["imagemapreduce"] - t["hand_pool"]) / len(cells) * 1e6 * nworkers
        payload["ratios"][wname] = {
            "ours_over_hand_pool": ratio,
            "serial_over_ours": t["serial_loop"] / t["imagemapreduce"],
            "serial_over_hand_pool": t["serial_loop"] / t["hand_pool"],
            "extra_cpu_us_per_cell": per_cell_us,
        }
        payload["targets"].append(
            C.target(
                f"ours / hand pool ({wname})",
                ratio,
                1.10,
                "<=",
                f"map_reduce time / ThreadPoolExecutor loop time, {len(cells)} cells",
                args.smoke,
            )
        )
        print(f"\n-- {wname}: {size}x{size}, {len(cells)} cells of {cell} px, border {border}")
        print(C.timing_table(timings, reference="hand_pool"))
        print(f"engine overhead ~{per_cell_us:.0f} us of worker time per cell")
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
