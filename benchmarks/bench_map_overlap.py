"""Ours vs ``dask.array.map_overlap`` (and a hand-written thread pool) on a bordered-cell filter.

The job: an 8192x8192 float32 image, ``scipy.ndimage.gaussian_filter(sigma=3)`` on every 512-pixel
cell grown by a 16-pixel border (clipped at the image edge), keeping each cell's core.

Contenders, all on threads with the same worker count, each from the numpy input to a numpy result:

* ``imagemapreduce``: ``map_reduce(image, f, cell_size=512, border=16, reduce="copy", scheduler="threads")``.
* ``dask_map_overlap``: ``da.from_array(image, chunks=512).map_overlap(f, depth=16, boundary="none")``
  then ``.compute(scheduler="threads")``.
* ``hand_pool``: a ``concurrent.futures.ThreadPoolExecutor`` over the same expanded cells (views of the
  image), writing each core into a preallocated array.
* ``hand_pool_contiguous``: the same pool handing ``func`` a contiguous copy of each expanded cell, as
  ``map_reduce`` does: with the same memory layout, what is left is the engine's own cost.
* ``serial_loop``: the same loop in one thread (LSST's serial algorithm), for the speedup.

All results are checked to be identical (``np.array_equal``) before anything is timed.
Target: ``dask_map_overlap / imagemapreduce >= 2``. The pools are context here; ``bench_pool_overhead``
judges the engine against them.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

NAME = "map_overlap"
SIGMA = 3.0


def smooth(cell: np.ndarray) -> np.ndarray:
    """The per-cell function: a Gaussian filter of the expanded cell (reach 4 sigma = 12 px)."""
    return ndimage.gaussian_filter(cell, SIGMA)


def expanded_cells(shape: tuple[int, int], cell: int, border: int) -> list[tuple[slice, slice, slice, slice]]:
    """For every cell: (rows, cols) of its expanded box in the image, and of its core in that box."""
    out = []
    for r in range(0, shape[0], cell):
        for c in range(0, shape[1], cell):
            r0, c0 = max(r - border, 0), max(c - border, 0)
            r1, c1 = min(r + cell + border, shape[0]), min(c + cell + border, shape[1])
            re, ce = min(r + cell, shape[0]), min(c + cell, shape[1])
            out.append(
                (
                    slice(r0, r1),
                    slice(c0, c1),
                    slice(r - r0, re - r0),
                    slice(c - c0, ce - c0),
                    slice(r, re),
                    slice(c, ce),
                )
            )
    return out


def _cut(image: np.ndarray, rows: slice, cols: slice, contiguous: bool) -> np.ndarray:
    """An expanded cell as the function gets it: a view, or (``contiguous``) a compact copy."""
    cell = image[rows, cols]
    return np.ascontiguousarray(cell) if contiguous else cell


def serial_loop(image: np.ndarray, cells, func=smooth, contiguous: bool = False) -> np.ndarray:
    out = np.empty_like(image)
    for rows, cols, core_r, core_c, dst_r, dst_c in cells:
        out[dst_r, dst_c] = func(_cut(image, rows, cols, contiguous))[core_r, core_c]
    return out


def hand_pool(image: np.ndarray, cells, workers: int, func=smooth, contiguous: bool = False) -> np.ndarray:
    out = np.empty_like(image)

    def one(spec):
        rows, cols, core_r, core_c, dst_r, dst_c = spec
        out[dst_r, dst_c] = func(_cut(image, rows, cols, contiguous))[core_r, core_c]

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(one, cells):
            pass
    return out


def ours(image: np.ndarray, cell: int, border: int, workers: int, func=smooth) -> np.ndarray:
    from imagemapreduce import map_reduce

    return map_reduce(
        image, func, cell_size=cell, border=border, reduce="copy", scheduler="threads", num_workers=workers
    )


def dask_map_overlap(image: np.ndarray, cell: int, border: int, workers: int, func=smooth) -> np.ndarray:
    import dask.array as da

    lazy = da.from_array(image, chunks=cell).map_overlap(func, depth=border, boundary="none", dtype=image.dtype)
    return lazy.compute(scheduler="threads", num_workers=workers)


def main(argv: list[str] | None = None) -> dict:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    size, cell, border = (1024, 128, 16) if args.smoke else (8192, 512, 16)
    nrep, nworkers = C.repeats(args), C.workers(args)
    params = {
        "shape": [size, size],
        "dtype": "float32",
        "cell": cell,
        "border": border,
        "sigma": SIGMA,
        "function": "scipy.ndimage.gaussian_filter(cell, 3)",
        "scheduler": "threads",
        "workers": nworkers,
        "repeats": nrep,
        "warmup_rounds": 1,
    }
    payload = C.start_payload(args, params)
    started = time.perf_counter()

    image = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    cells = expanded_cells(image.shape, cell, border)
    params["cells"] = len(cells)
    contenders = {
        "imagemapreduce": lambda: ours(image, cell, border, nworkers),
        "dask_map_overlap": lambda: dask_map_overlap(image, cell, border, nworkers),
        "hand_pool": lambda: hand_pool(image, cells, nworkers),
        "hand_pool_contiguous": lambda: hand_pool(image, cells, nworkers, contiguous=True),
        "serial_loop": lambda: serial_loop(image, cells),
    }
    # Correctness first, outside the timing: every contender gives the very same pixels.
    reference = contenders["imagemapreduce"]()
    payload["pixels_equal"] = C.same_pixels(contenders, reference)
    del reference

    timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args))
    payload["timings"] = timings
    t = {name: C.median(timings, name) for name in timings}
    ratios = {
        "map_overlap_over_ours": t["dask_map_overlap"] / t["imagemapreduce"],
        "ours_over_hand_pool": t["imagemapreduce"] / t["hand_pool"],
        "ours_over_hand_pool_contiguous": t["imagemapreduce"] / t["hand_pool_contiguous"],
        "hand_pool_over_hand_pool_contiguous": t["hand_pool"] / t["hand_pool_contiguous"],
        "serial_over_ours": t["serial_loop"] / t["imagemapreduce"],
        "serial_over_hand_pool": t["serial_loop"] / t["hand_pool"],
        "serial_over_map_overlap": t["serial_loop"] / t["dask_map_overlap"],
        "map_overlap_over_hand_pool": t["dask_map_overlap"] / t["hand_pool"],
    }
    payload["ratios"] = ratios
    payload["targets"] = [
        C.target(
            "map_overlap time / ours",
            ratios["map_overlap_over_ours"],
            2.0,
            ">=",
            "dask.array.map_overlap time divided by map_reduce time (same job, threads)",
            args.smoke,
        ),
        C.target(
            "ours / hand-written pool (gaussian job)",
            ratios["ours_over_hand_pool"],
            0.0,
            "info",
            "map_reduce time divided by a ThreadPoolExecutor loop over the same cells",
            args.smoke,
        ),
        C.target(
            "ours / hand pool that copies each cell first (engine cost alone)",
            ratios["ours_over_hand_pool_contiguous"],
            0.0,
            "info",
            "map_reduce time divided by the same loop handing func contiguous copies, as map_reduce does",
            args.smoke,
        ),
        C.target(
            "layout: hand pool on views / hand pool on contiguous copies",
            ratios["hand_pool_over_hand_pool_contiguous"],
            0.0,
            "info",
            "what handing func a compact copy of its cell, instead of a strided view, gains here",
            args.smoke,
        ),
        C.target(
            "ceiling: map_overlap time / hand pool",
            ratios["map_overlap_over_hand_pool"],
            0.0,
            "info",
            "the best map_overlap / ours could be with a zero-overhead engine",
            args.smoke,
        ),
        C.target(
            "speedup of ours over serial loop",
            ratios["serial_over_ours"],
            0.0,
            "info",
            "serial loop time / map_reduce time (parallel speedup actually achieved)",
            args.smoke,
        ),
        C.target(
            "speedup of hand pool over serial loop",
            ratios["serial_over_hand_pool"],
            0.0,
            "info",
            "what the floor reaches on this machine right now",
            args.smoke,
        ),
    ]
    payload["notes"].append(
        "The Gaussian filter dominates every contender. map_reduce hands func a C-contiguous copy of each "
        "expanded cell (as map_overlap does, and as worker processes receive them), which filters faster "
        "than the strided view the plain pool passes; hand_pool_contiguous does the same in the pool, so "
        "ours / hand_pool_contiguous is the engine's own cost."
    )
    print(C.timing_table(timings, reference="imagemapreduce"))
    _plot(timings, args.output)
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


def _plot(timings: dict, output) -> None:
    plt = C.pyplot()
    names = list(timings)
    med = [timings[n]["median_s"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.bar(names, med, color=["C0", "C1", "C2", "C4", "C7"][: len(names)])
    for i, n in enumerate(names):
        ax.plot([i] * len(timings[n]["times_s"]), timings[n]["times_s"], "k.", ms=3)
    ax.set_ylabel("seconds (median; dots = repeats)")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.set_title("Gaussian filter per bordered cell, threads")
    C.save_plot(fig, output, NAME)


if __name__ == "__main__":
    main()
