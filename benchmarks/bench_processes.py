"""Start-up of the processes scheduler: the first run, later runs on the kept pool, a fresh pool per run.

The processes scheduler keeps one pool of worker processes per worker count for the life of the
Python process, so only the first run pays for starting workers (each imports numpy, Dask and the
function's module). Three contenders run the same small job side by side:

* ``first_run``: the first ``map_reduce(..., scheduler="processes")`` of this process (timed once);
* ``kept_pool``: later runs, which reuse the workers;
* ``fresh_pool``: the old behaviour, a new pool for every run (the kept pool is shut down first).

The job is small (a 2048x2048 float32 image, 256-px cells, a Gaussian of sigma 1) so that the
start-up shows. Target: a later run at least 3x faster than a run on a fresh pool. All contenders
are checked to give the same pixels.
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

import imagemapreduce as imr  # noqa: E402
from imagemapreduce.engine import scheduling  # noqa: E402

NAME = "processes"


def gaussian(cell: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(cell, 1.0)


def run(image: np.ndarray, cell: int, workers: int) -> np.ndarray:
    return imr.map_reduce(image, gaussian, cell_size=cell, border=8, reduce="copy",
                          scheduler="processes", num_workers=workers)  # fmt: skip


def fresh(image: np.ndarray, cell: int, workers: int) -> np.ndarray:
    """The behaviour before pools were kept: start a new pool for this run."""
    scheduling.shutdown_pools()
    return run(image, cell, workers)


def main(argv: list[str] | None = None) -> dict:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    nrep, nworkers = C.repeats(args, full=5, smoke=2), C.workers(args)
    size, cell = (512, 128) if args.smoke else (2048, 256)
    params = {"workers": nworkers, "repeats": nrep, "shape": [size, size], "cell": cell, "border": 8}
    payload = C.start_payload(args, params)
    started = time.perf_counter()
    image = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    scheduling.shutdown_pools()  # a truly first run, whatever ran before in this process
    t0 = time.perf_counter()
    reference = run(image, cell, nworkers)
    first = time.perf_counter() - t0
    contenders = {
        "fresh_pool": partial(fresh, image, cell, nworkers),
        "kept_pool": partial(run, image, cell, nworkers),
    }
    payload["pixels_equal"] = C.same_pixels(contenders, reference)
    # Round robin in this order: each fresh_pool call leaves a new kept pool for kept_pool to reuse.
    timings = C.time_round_robin(contenders, nrep, warmup=0)
    timings["first_run"] = C.summarize([first])
    payload["timings"] = timings
    t = {name: C.median(timings, name) for name in timings}
    payload["ratios"] = {
        "fresh_pool_over_kept_pool": t["fresh_pool"] / t["kept_pool"],
        "first_run_over_kept_pool": t["first_run"] / t["kept_pool"],
        "startup_s": t["fresh_pool"] - t["kept_pool"],
    }
    payload["targets"] = [
        C.target("fresh pool / kept pool", payload["ratios"]["fresh_pool_over_kept_pool"], 3.0, ">=",
                 f"a run on a new pool of {nworkers} workers / a later run on the kept pool", args.smoke),
        C.target("first run / later run", payload["ratios"]["first_run_over_kept_pool"], 0.0, "info",
                 "the first run of a process starts the pool; later runs reuse it", args.smoke),
    ]  # fmt: skip
    print(f"\n-- {size}x{size}, {cell}-px cells, processes scheduler, {nworkers} workers")
    print(C.timing_table(timings, reference="kept_pool"))
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
