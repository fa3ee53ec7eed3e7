"""Out-of-core: peak memory of the same zarr-to-zarr job on a ~0.5 GB and a ~4 GB exposure.

The input ``ExposureF`` (image float32 noise, mask int32, variance float32: 12 bytes a pixel) is
written with ``write_zarr_exposure`` from lazy Dask planes in 1024-px chunks, so it never exists
in memory. The job reads it with ``open_zarr_exposure`` and runs ``ImageMapReduceTask.runToZarr``:
``GaussianSmoothMapper`` (sigma 2, image and variance) on 512-px cells with an 8-px border,
``copy``, on threads, output regions of 1024 px written to a new zarr store.

Each step runs in a fresh Python process; the peak resident memory of that process and all its
children is sampled every 10 ms (psutil) and read from ``ru_maxrss``. Two ways of opening the input:

* ``default``: ``open_zarr_exposure(path)``: Dask blocks are the store's own chunks (1024 px here).
* ``chunks_auto``: ``open_zarr_exposure(path, chunks="auto")``: Dask's ~128 MiB blocks, for contrast
  (cells keep whole big blocks alive while they wait; reported, not judged).

One cell in the middle of the output is checked against the filter applied to its expanded box.
Targets (for the default opening): the peak at ~4 GB is <= 0.25x the exposure's size (absolute RSS,
interpreter included), and the job's own memory (peak minus the process's baseline) grows <= 1.5x
from ~0.5 GB to ~4 GB (8.3x the pixels).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

NAME = "larger_than_memory"
CELL, BORDER, SIGMA, REGION, CHUNK = 512, 8, 2.0, 1024, 1024
OPENINGS = {"default": None, "chunks_auto": "auto"}


def _lazy_exposure(size: int, chunk: int):
    import dask.array as da
    import numpy as np

    import imagemapreduce as imr

    image = da.random.default_rng(7).standard_normal(size=(size, size), chunks=chunk, dtype=np.float32)
    variance = da.full((size, size), 1.0, dtype=np.float32, chunks=chunk)
    mask = da.zeros((size, size), dtype=np.int32, chunks=chunk)
    return imr.ExposureF.from_arrays(image, mask, variance)


def _task(workers: int, cell: int, border: int, region: int):
    import imagemapreduce as imr
    from imagemapreduce.builtin_mappers import GaussianSmoothMapper

    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(GaussianSmoothMapper)
    config.mapper.sigma = SIGMA
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = cell
    config.gridStepX = config.gridStepY = cell
    config.borderSizeX = config.borderSizeY = border
    config.adjustGridOption = "none"
    config.reducer.reduceOperation = "copy"
    config.scheduler = "threads"
    config.numWorkers = workers
    config.stitchRegionSize = region
    return imr.ImageMapReduceTask(config=config)


def child(config: dict) -> dict:
    """One step in this fresh process: write the input, or run the job; measure the peak memory."""
    import numpy as np
    from scipy import ndimage

    from imagemapreduce.io.zarr_store import open_zarr_exposure, write_zarr_exposure

    size, workdir, workers = config["size"], Path(config["workdir"]), config["workers"]
    cell, border, region, chunk = config["cell"], config["border"], config["region"], config["chunk"]
    src = workdir / f"input_{size}.zarr"
    # Warm up on a tiny store (imports, thread pools, zarr codecs) so that the baseline holds the code.
    if config.get("warmup", True):
        tiny = workdir / "warmup"
        tiny.mkdir(exist_ok=True)
        write_zarr_exposure(_lazy_exposure(2 * cell, chunk), tiny / "in.zarr", chunks=chunk, overwrite=True)
        _task(workers, cell, border, region).runToZarr(
            open_zarr_exposure(tiny / "in.zarr"), str(tiny / "out.zarr"), overwrite=True
        )
        shutil.rmtree(tiny)
    import gc

    gc.collect()
    baseline = C.current_rss()
    start = time.perf_counter()
    out: dict = {"step": config["step"], "size": size, "baseline_rss": baseline}
    if config["step"] == "write_input":
        with C.PeakRSS(interval=0.01) as sampler:
            write_zarr_exposure(_lazy_exposure(size, chunk), src, chunks=chunk, overwrite=True)
    else:
        dst = workdir / f"output_{size}_{config['step']}.zarr"
        with C.PeakRSS(interval=0.01) as sampler:
            exposure = open_zarr_exposure(src, chunks=config["open_chunks"])
            out["input_block_shape"] = [int(c[0]) for c in exposure.image.array.chunks]
            result = _task(workers, cell, border, region).runToZarr(exposure, str(dst), overwrite=True)
        out["regions_written"] = result.regionsWritten
        # Spot check one cell in the middle: its core equals the filter of its expanded box.
        r0 = (size // 2) // cell * cell
        lo, hi = max(r0 - border, 0), min(r0 + cell + border, size)
        src_exp = open_zarr_exposure(src, chunks=chunk)
        expanded = np.asarray(src_exp.image.array[lo:hi, lo:hi])
        want = ndimage.gaussian_filter(expanded, SIGMA, truncate=4.0, mode="nearest")[
            r0 - lo : r0 - lo + cell, r0 - lo : r0 - lo + cell
        ]
        got = np.asarray(result.exposure.image.array[r0 : r0 + cell, r0 : r0 + cell])
        out["spot_check_equal"] = bool(np.array_equal(want, got))
        shutil.rmtree(dst)
    out["seconds"] = time.perf_counter() - start
    out["peak_rss"] = max(sampler.peak, C.ru_maxrss_bytes())
    out["peak_over_baseline"] = out["peak_rss"] - baseline
    out["samples"] = sampler.samples
    return out


def main(argv: list[str] | None = None) -> dict:
    import argparse

    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=None, help="where the zarr stores go (default: a temp dir)")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    nworkers = C.workers(args)
    if args.smoke:
        sizes, cell, border, region, chunk = [256, 512], 64, 8, 128, 128
    else:
        sizes, cell, border, region, chunk = [6400, 18432], CELL, BORDER, REGION, CHUNK
    params = {
        "sizes": sizes,
        "exposure_bytes": {str(s): 12 * s * s for s in sizes},
        "cell": cell,
        "border": border,
        "sigma": SIGMA,
        "stitch_region_size": region,
        "zarr_chunks": chunk,
        "workers": nworkers,
        "mapper": "GaussianSmoothMapper",
        "reduce": "copy",
        "scheduler": "threads",
        "openings": dict(OPENINGS),
    }
    payload = C.start_payload(args, params)
    payload.update({"runs": [], "ratios": {}, "targets": []})
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="imr-bench-ltm-", dir=args.workdir))
    script = os.path.abspath(__file__)

    def run_child(config: dict) -> dict:
        # Full runs measure each step in a fresh process; smoke runs (which judge nothing) stay in
        # this one to keep them fast.
        if args.smoke:
            return child({**config, "warmup": False})
        return C.run_json_subprocess([script, "--child", json.dumps(config)], 3600)

    try:
        for size in sizes:
            common = {
                "size": size,
                "workdir": str(workdir),
                "workers": nworkers,
                "cell": cell,
                "border": border,
                "region": region,
                "chunk": chunk,
            }
            res = run_child({**common, "step": "write_input"})
            payload["runs"].append(res)
            print(
                f"{size}^2: input written in {res['seconds']:.1f} s, peak {res['peak_rss'] / 2**20:.0f} MiB", flush=True
            )
            for name, opening in params["openings"].items():
                res = run_child({**common, "step": name, "open_chunks": opening})
                if not res["spot_check_equal"]:
                    raise AssertionError(f"{size}^2 {name}: the output cell differs from the filter of its input")
                payload["runs"].append(res)
                print(
                    f"{size}^2 {name}: {res['seconds']:.1f} s, peak {res['peak_rss'] / 2**20:.0f} MiB "
                    f"(+{res['peak_over_baseline'] / 2**20:.0f} MiB over baseline)",
                    flush=True,
                )
            shutil.rmtree(workdir / f"input_{size}.zarr", ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    small, big = sizes
    rows = []
    for name in params["openings"]:
        runs = {r["size"]: r for r in payload["runs"] if r["step"] == name}
        exp_big = 12 * big * big
        growth = runs[big]["peak_over_baseline"] / runs[small]["peak_over_baseline"]
        abs_frac = runs[big]["peak_rss"] / exp_big
        payload["ratios"][name] = {
            "peak_rss_mib": {str(s): r["peak_rss"] / 2**20 for s, r in runs.items()},
            "peak_over_baseline_mib": {str(s): r["peak_over_baseline"] / 2**20 for s, r in runs.items()},
            "peak_rss_over_exposure": {str(s): r["peak_rss"] / (12 * s * s) for s, r in runs.items()},
            "growth_big_over_small": growth,
            "pixels_big_over_small": (big / small) ** 2,
        }
        payload["targets"].append(
            C.target(
                f"peak RSS / exposure at {exp_big / 1e9:.1f} GB, {name}",
                abs_frac,
                0.25,
                "<=" if name == "default" else "info",
                "absolute peak RSS of all processes / exposure bytes",
                args.smoke,
            )
        )
        payload["targets"].append(
            C.target(
                f"memory growth {small}^2 -> {big}^2, {name}",
                growth,
                1.5,
                "<=" if name == "default" else "info",
                f"(peak - baseline) ratio for {(big / small) ** 2:.1f}x the pixels",
                args.smoke,
            )
        )
        for s in sizes:
            r = runs[s]
            rows.append(
                [
                    name,
                    f"{s}^2 ({12 * s * s / 1e9:.2f} GB)",
                    r["peak_rss"] / 2**20,
                    r["peak_over_baseline"] / 2**20,
                    r["peak_rss"] / (12 * s * s),
                    r["seconds"],
                ]
            )
    print(C.table(rows, ["opening", "exposure", "peak RSS MiB", "peak - baseline MiB", "peak / exposure", "seconds"]))
    _plot(payload, sizes, args.output)
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


def _plot(payload, sizes, output) -> None:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    gb = [12 * s * s / 2**20 for s in sizes]
    ax.plot(gb, gb, "k--", lw=1, label="exposure size")
    for name in payload["ratios"]:
        runs = {r["size"]: r for r in payload["runs"] if r["step"] == name}
        ax.plot(gb, [runs[s]["peak_rss"] / 2**20 for s in sizes], "o-", label=f"peak RSS, {name}")
    runs = {r["size"]: r for r in payload["runs"] if r["step"] == "write_input"}
    ax.plot(gb, [runs[s]["peak_rss"] / 2**20 for s in sizes], "s:", label="peak RSS, writing the input")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("exposure size (MiB)")
    ax.set_ylabel("MiB")
    ax.set_title("zarr -> runToZarr -> zarr")
    ax.legend(fontsize=8)
    C.save_plot(fig, output, NAME)


if __name__ == "__main__":
    main()
