"""Strong scaling: LSST's serial loop vs ours on 1, 2, ... worker threads, compute-bound mapper.

The mapper is compute-bound and releases the GIL, so threads can run cells at once:

* ``gaussian`` (default): ``scipy.ndimage.gaussian_filter(cell, sigma=8)`` (ndimage releases the GIL
  inside its filters), border 32 = 4 sigma.

on a 4096x4096 float32 image in 512-px cells (64 cells).
* ``fft``: a Gaussian blur done in Fourier space with ``scipy.fft`` (also GIL-free), for comparison.

Contenders: ``serial_loop`` (a plain Python loop over the cells, as LSST runs it), ours
(``map_reduce(..., reduce="copy", scheduler="threads", num_workers=n)``) for n = 1 ..
``--max-workers`` and, as the machine's own ceiling, a hand-written thread pool at the same n.
Before timing, a pure-CPU probe measures how many cores' worth of CPU the machine gives right
now (``parallel_capacity``); on a shared machine that, not n, bounds any speedup.

Target: speedup (serial time / ours) at 2 workers >= 1.8. Writes a speedup plot with the ideal line.
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

NAME = "scaling"


def gaussian_big(cell: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(cell, sigma)


_KERNELS: dict[tuple[int, int, float], np.ndarray] = {}


def fft_blur(cell: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    """Gaussian blur by multiplication in Fourier space (scipy.fft releases the GIL)."""
    import scipy.fft as sfft

    key = (cell.shape[0], cell.shape[1], sigma)
    kernel = _KERNELS.get(key)
    if kernel is None:
        fy = sfft.fftfreq(cell.shape[0])[:, None]
        fx = sfft.rfftfreq(cell.shape[1])[None, :]
        kernel = np.exp(-2.0 * np.pi**2 * sigma**2 * (fy**2 + fx**2)).astype(np.float32)
        _KERNELS[key] = kernel
    return sfft.irfft2(sfft.rfft2(cell) * kernel, s=cell.shape, workers=1).astype(cell.dtype, copy=False)


MAPPERS = {"gaussian": gaussian_big, "fft": fft_blur}


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--max-workers", type=int, default=None, help="largest worker count (default os.cpu_count())")
    p.add_argument("--mapper", choices=sorted(MAPPERS), default="gaussian")
    args = p.parse_args(argv)
    max_workers = args.max_workers or os.cpu_count() or 1
    nrep = C.repeats(args)
    size, cell, border = (512, 128, 32) if args.smoke else (4096, 512, 32)
    sigma = 8.0
    func = partial(MAPPERS[args.mapper], sigma=sigma)
    func.__name__ = args.mapper  # type: ignore[attr-defined]
    params = {
        "shape": [size, size],
        "dtype": "float32",
        "cell": cell,
        "border": border,
        "mapper": args.mapper,
        "sigma": sigma,
        "max_workers": max_workers,
        "repeats": nrep,
        "scheduler": "threads",
    }
    payload = C.start_payload(args, params)
    started = time.perf_counter()
    image = np.random.default_rng(2).standard_normal((size, size), dtype=np.float32)
    cells = expanded_cells(image.shape, cell, border)
    params["cells"] = len(cells)
    payload["machine"]["parallel_capacity"] = C.parallel_capacity(max_workers, n=100_000 if args.smoke else 3_000_000)

    worker_counts = list(range(1, max_workers + 1))
    contenders = {"serial_loop": lambda: serial_loop(image, cells, func)}
    for n in worker_counts:
        contenders[f"imagemapreduce_{n}"] = partial(ours, image, cell, border, n, func)
        contenders[f"hand_pool_{n}"] = partial(hand_pool, image, cells, n, func)
    reference = contenders["serial_loop"]()
    payload["pixels_equal"] = C.same_pixels(contenders, reference)
    del reference

    timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args))
    payload["machine"]["parallel_capacity_after"] = C.parallel_capacity(
        max_workers, n=100_000 if args.smoke else 3_000_000
    )
    payload["timings"] = timings
    serial = C.median(timings, "serial_loop")
    speedup = {n: serial / C.median(timings, f"imagemapreduce_{n}") for n in worker_counts}
    pool_speedup = {n: serial / C.median(timings, f"hand_pool_{n}") for n in worker_counts}
    # Best of the repeats: on a shared machine the fastest run is the one least disturbed.
    best = {n: timings["serial_loop"]["min_s"] / timings[f"imagemapreduce_{n}"]["min_s"] for n in worker_counts}
    payload["ratios"] = {
        "speedup": {str(n): s for n, s in speedup.items()},
        "hand_pool_speedup": {str(n): s for n, s in pool_speedup.items()},
        "efficiency": {str(n): s / n for n, s in speedup.items()},
        "speedup_best_of_repeats": {str(n): s for n, s in best.items()},
        "ours_1_over_serial": C.median(timings, "imagemapreduce_1") / serial,
    }
    targets = []
    if 2 in speedup:
        targets.append(
            C.target(
                "speedup at 2 workers",
                speedup[2],
                1.8,
                ">=",
                "serial loop time / map_reduce time with 2 threads",
                args.smoke,
            )
        )
        targets.append(
            C.target(
                "speedup at 2 workers, best of repeats",
                best[2],
                0.0,
                "info",
                "fastest serial run / fastest 2-thread run (least disturbed by other load)",
                args.smoke,
            )
        )
        targets.append(
            C.target(
                "hand-pool speedup at 2 workers",
                pool_speedup[2],
                0.0,
                "info",
                "the machine's ceiling for this job right now",
                args.smoke,
            )
        )
    targets.append(
        C.target(
            "ours at 1 worker / serial loop",
            payload["ratios"]["ours_1_over_serial"],
            0.0,
            "info",
            "single-worker engine cost over the plain loop",
            args.smoke,
        )
    )
    cap = payload["machine"]["parallel_capacity"]["capacity"]
    targets.append(
        C.target(
            "machine parallel capacity (pure CPU probe)",
            cap,
            0.0,
            "info",
            f"cores' worth of CPU available with {max_workers} busy processes",
            args.smoke,
        )
    )
    payload["targets"] = targets
    print(C.timing_table(timings, reference="serial_loop"))
    rows = [[n, speedup[n], pool_speedup[n], speedup[n] / n] for n in worker_counts]
    print(C.table(rows, ["workers", "speedup ours", "speedup hand pool", "efficiency ours"]))
    _plot(worker_counts, speedup, pool_speedup, cap, params, args.output)
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


def _plot(ns, speedup, pool_speedup, capacity, params, output) -> None:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, max(ns)], [0, max(ns)], "k--", lw=1, label="ideal")
    ax.plot(ns, [speedup[n] for n in ns], "o-", label="imagemapreduce (threads)")
    ax.plot(ns, [pool_speedup[n] for n in ns], "s:", label="hand-written pool")
    ax.axhline(capacity, color="C3", lw=1, ls="-.", label=f"machine capacity now ({capacity:.2f})")
    ax.set_xlabel("workers")
    ax.set_ylabel("speedup over the serial loop")
    ax.set_xlim(0, max(ns) + 0.5)
    ax.set_ylim(0, max(ns) + 0.5)
    ax.set_xticks(ns)
    ax.set_title(f"{params['shape'][0]}^2, {params['cells']} cells, {params['mapper']} sigma {params['sigma']:g}")
    ax.legend(fontsize=8, loc="upper left")
    C.save_plot(fig, output, NAME)


if __name__ == "__main__":
    main()
