"""Stitching cost: the engine's region stitcher vs numpy adding the same tiles into one array.

An 8192x8192 float32 result is stitched from 512-px cells on a 256-px step (2x overlap in each
direction, so every pixel lies in 4 cells; 16-px border). The cell results are computed once
beforehand (each cell's core, slightly different per cell), so only the stitching is timed.

Contenders, all single-threaded unless named ``_threads``:

* ``numpy_add``: ``out[rows, cols] += tile`` for every tile, into one zeroed array (the baseline).
* ``numpy_average``: the same plus a count array and the final division (a minimal uniform average).
* ``numpy_weighted_cosine``: ``out += w * tile``, ``wsum += w``, ``out / wsum`` with a cached cosine window.
* ``engine_uniform``: the engine's own region tasks (``RegionTask`` + ``stitch_region``, regions of
  1024 px writing into a shared output), LSST's exact ``average`` (NaN-aware, counts, statistics).
* ``engine_cosine``: the same with ``weights="cosine"`` (``WeightedRegionAccumulator``: float32 sums
  band by band, the sum of weights from 1-d window sums on this full grid).
* ``engine_uniform_threads``, ``engine_cosine_threads``: the region tasks run on a thread pool.
* ``map_reduce_identity_uniform`` / ``_cosine``: end to end, ``map_reduce`` with an identity function
  on threads (cell tasks + graph + stitching).

Targets: ``engine_uniform / numpy_add <= 2`` and ``engine_cosine / numpy_add <= 2``.
Results are checked: engine uniform == numpy average (bitwise), engine cosine ~= numpy weighted;
the largest error of the float32 cosine stitch against the float64 numpy one, relative to the
weighted mean magnitude at each pixel, is recorded (``cosine_float32_error``) and must stay < 1e-6.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

NAME = "stitch"


def identity(cell: np.ndarray) -> np.ndarray:
    return cell


class Setup:
    """The grid, the precomputed cell results, and the engine's region tasks for one weighting."""

    def __init__(self, size: int, cell: int, step: int, border: int, region: int, weights: str):
        from imagemapreduce.engine import ArrayPlan, CellOutcome
        from imagemapreduce.grid import regular_grid
        from imagemapreduce.weights import make_weighting

        self.shape = (size, size)
        image = np.random.default_rng(6).standard_normal(self.shape, dtype=np.float32)
        grid, indices = regular_grid(self.shape, (cell, cell), (step, step), (border, border), "none", False)
        weighting = make_weighting(weights)
        self.weighting = None if weighting.is_uniform else weighting  # uniform weights take the plain path
        self.plan = ArrayPlan(
            func=identity,
            array=image,
            grid=grid,
            kwargs={},
            operation="average",
            grid_indices=indices,
            weighting=self.weighting,
        )
        self.tiles = []  # (row slice, col slice, tile) in grid order
        self.outcomes = []
        for index, (x0, y0, x1, y1) in enumerate(grid.cells.tolist()):
            rows, cols = slice(y0, y1 + 1), slice(x0, x1 + 1)
            tile = image[rows, cols] + np.float32(0.001 * (index % 7))
            self.tiles.append((rows, cols, tile))
            box = self.plan.grid.cells[index]
            from imagemapreduce.grid import boxes_from_array

            self.outcomes.append(CellOutcome(index, boxes_from_array(box[None])[0], tile, 0.0, 0.0, "bench"))
        self.region = region
        self.boxes = np.asarray(self.plan.grid.cells)  # (x0, y0, x1, y1), ends included

    def region_calls(self, output: np.ndarray):
        """One engine region task per region, with the outcomes of the cells it overlaps (grid order).

        Built here rather than through the graph builder, whose signature is internal: what is
        timed is the engine's region stitcher itself (`stitch_region`).
        """
        from imagemapreduce.engine.graph import RegionTask
        from imagemapreduce.geom import Box2I, Extent2I, Point2I

        calls = []
        x0, y0, x1, y1 = self.boxes.T
        for top in range(0, self.shape[0], self.region):
            for left in range(0, self.shape[1], self.region):
                bottom, right = min(top + self.region, self.shape[0]), min(left + self.region, self.shape[1])
                box = Box2I(Point2I(left, top), Extent2I(right - left, bottom - top))
                members = np.flatnonzero((x0 < right) & (x1 >= left) & (y0 < bottom) & (y1 >= top))
                task = RegionTask(
                    bbox=box,
                    operation="average",
                    dtype=output.dtype,
                    bad_bits=0,
                    extract=self.plan.extract,
                    with_variance=False,
                    reported_cells=(),
                    output_views=(output[top:bottom, left:right], None, None),
                    weighting=self.plan.weighting,
                )
                calls.append((task, None, [self.outcomes[k] for k in members.tolist()]))
        return calls

    def engine(self, workers: int = 1) -> np.ndarray:
        output = np.empty(self.shape, np.float32)
        calls = self.region_calls(output)  # building the region tasks is part of stitching
        from imagemapreduce.engine.graph import stitch_region as stitch

        if workers == 1:
            for task, mask, outcomes in calls:
                stitch(task, mask, outcomes)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda c: stitch(*c), calls))
        return output


def numpy_add(setup: Setup) -> np.ndarray:
    out = np.zeros(setup.shape, np.float32)
    for rows, cols, tile in setup.tiles:
        out[rows, cols] += tile
    return out


def numpy_average(setup: Setup) -> np.ndarray:
    out = np.zeros(setup.shape, np.float32)
    count = np.zeros(setup.shape, np.int32)
    for rows, cols, tile in setup.tiles:
        out[rows, cols] += tile
        count[rows, cols] += 1
    np.divide(out, count.astype(np.float64), out=out)
    return out


@lru_cache(maxsize=64)
def _cosine(h: int, w: int) -> np.ndarray:
    from imagemapreduce.weights import window_1d

    return np.outer(window_1d("cosine", h), window_1d("cosine", w))


def numpy_weighted(setup: Setup, exact: bool = False):
    """The cosine-weighted average in float64 (with ``exact``: unrounded, and the weighted mean of |x|)."""
    total = np.zeros(setup.shape)
    wsum = np.zeros(setup.shape)
    magnitude = np.zeros(setup.shape) if exact else None
    for rows, cols, tile in setup.tiles:
        w = _cosine(*tile.shape)
        total[rows, cols] += w * tile
        wsum[rows, cols] += w
        if exact:
            magnitude[rows, cols] += w * np.abs(tile)
    if exact:
        return total / wsum, magnitude / wsum
    return (total / wsum).astype(np.float32)


def main(argv: list[str] | None = None) -> dict:
    from imagemapreduce import map_reduce

    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    nrep, nworkers = C.repeats(args), C.workers(args)
    size, cell, step, border, region = (512, 64, 32, 16, 128) if args.smoke else (8192, 512, 256, 16, 1024)
    params = {
        "shape": [size, size],
        "dtype": "float32",
        "cell": cell,
        "step": step,
        "border": border,
        "region_size": region,
        "overlap_per_pixel": (cell // step) ** 2,
        "workers": nworkers,
        "repeats": nrep,
    }
    payload = C.start_payload(args, params)
    started = time.perf_counter()
    uniform = Setup(size, cell, step, border, region, "uniform")
    cosine = Setup(size, cell, step, border, region, "cosine")
    params["cells"] = len(uniform.tiles)
    params["tile_pixels"] = int(sum(t.size for _, _, t in uniform.tiles))
    image = uniform.plan.array

    def mr(weights):
        return lambda: map_reduce(
            image,
            identity,
            cell_size=cell,
            grid_step=step,
            border=border,
            reduce="average",
            weights=weights,
            scheduler="threads",
            num_workers=nworkers,
            region_size=region,
        )

    contenders = {
        "numpy_add": lambda: numpy_add(uniform),
        "numpy_average": lambda: numpy_average(uniform),
        "numpy_weighted_cosine": lambda: numpy_weighted(cosine),
        "engine_uniform": lambda: uniform.engine(1),
        "engine_cosine": lambda: cosine.engine(1),
        "engine_uniform_threads": lambda: uniform.engine(nworkers),
        "engine_cosine_threads": lambda: cosine.engine(nworkers),
        "map_reduce_identity_uniform": mr("uniform"),
        "map_reduce_identity_cosine": mr("cosine"),
    }
    # Check the engine against the plain numpy versions before timing anything.
    avg = numpy_average(uniform)
    checks = {
        "engine_uniform == numpy_average": bool(np.array_equal(uniform.engine(1), avg)),
        "engine_uniform_threads == numpy_average": bool(np.array_equal(uniform.engine(nworkers), avg)),
        # identity cells: every pixel is the mean of 4 copies of itself
        "map_reduce uniform ~= input": bool(np.allclose(mr("uniform")(), image, rtol=1e-5, atol=1e-5)),
    }
    wavg = numpy_weighted(cosine)
    checks["engine_cosine ~= numpy_weighted"] = bool(np.allclose(cosine.engine(1), wavg, rtol=1e-6, atol=1e-6))
    checks["map_reduce cosine ~= input"] = bool(np.allclose(mr("cosine")(), image, rtol=1e-5, atol=1e-5))
    exact, magnitude = numpy_weighted(cosine, exact=True)
    error = float(np.max(np.abs(cosine.engine(1) - exact) / magnitude))
    payload["cosine_float32_error"] = error
    checks["engine_cosine float32 error < 1e-6 (relative to the weighted mean |x|)"] = error < 1e-6
    del exact, magnitude
    payload["checks"] = checks
    if not all(checks.values()):
        raise AssertionError(f"stitching results disagree: {checks}")
    del avg, wavg

    timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args))
    payload["timings"] = timings
    t = {name: C.median(timings, name) for name in timings}
    base = t["numpy_add"]
    payload["ratios"] = {f"{name}_over_numpy_add": v / base for name, v in t.items()}
    payload["ratios"]["engine_cosine_over_numpy_weighted"] = t["engine_cosine"] / t["numpy_weighted_cosine"]
    payload["ratios"]["engine_uniform_over_numpy_average"] = t["engine_uniform"] / t["numpy_average"]
    payload["targets"] = [
        C.target(
            "engine uniform average stitch / numpy add",
            t["engine_uniform"] / base,
            2.0,
            "<=",
            "single thread, precomputed cells, 2x overlap",
            args.smoke,
        ),
        C.target(
            "engine cosine-weighted stitch / numpy add",
            t["engine_cosine"] / base,
            2.0,
            "<=",
            "single thread, precomputed cells, 2x overlap",
            args.smoke,
        ),
        C.target(
            "engine cosine stitch / numpy weighted average",
            t["engine_cosine"] / t["numpy_weighted_cosine"],
            0.0,
            "info",
            "against the minimal numpy weighted average",
            args.smoke,
        ),
        C.target(
            "engine uniform stitch / numpy average",
            t["engine_uniform"] / t["numpy_average"],
            0.0,
            "info",
            "against the minimal numpy uniform average (sum, count, divide)",
            args.smoke,
        ),
        C.target(
            "engine uniform stitch, threads / numpy add",
            t["engine_uniform_threads"] / base,
            0.0,
            "info",
            f"regions on {nworkers} threads",
            args.smoke,
        ),
        C.target(
            "engine cosine stitch, threads / numpy add",
            t["engine_cosine_threads"] / base,
            0.0,
            "info",
            f"regions on {nworkers} threads",
            args.smoke,
        ),
        C.target(
            "map_reduce identity uniform (end to end) / numpy add",
            t["map_reduce_identity_uniform"] / base,
            0.0,
            "info",
            "cells + graph + stitch, threads",
            args.smoke,
        ),
        C.target(
            "map_reduce identity cosine (end to end) / numpy add",
            t["map_reduce_identity_cosine"] / base,
            0.0,
            "info",
            "cells + graph + stitch, threads",
            args.smoke,
        ),
    ]
    print(C.timing_table(timings, reference="numpy_add"))
    _plot(timings, args.output)
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


def _plot(timings, output) -> None:
    plt = C.pyplot()
    base = timings["numpy_add"]["median_s"]
    names = list(timings)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(names, [timings[n]["median_s"] / base for n in names], color="C0")
    ax.axvline(2.0, color="C3", ls="--", lw=1, label="target 2x")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("time / numpy add (median)")
    ax.set_title("Stitching 2x-overlap cells")
    ax.legend(fontsize=8)
    C.save_plot(fig, output, NAME)


if __name__ == "__main__":
    main()
