"""The cost of carrying mask and variance: the Task API on an ExposureF vs map_reduce on its image array.

Same grid, same per-cell image computation, same scheduler (threads) and workers; the only
difference is what travels: ``ImageMapReduceTask`` hands each mapper an expanded sub-exposure
(image, mask, variance, PSF), the mapper returns a new sub-exposure whose mask and variance are
copies of the input's (as a real mapper's would be new planes), and the stitcher combines all
three planes; ``map_reduce`` hands the function the image array alone and stitches one plane.

Two workloads:

* ``gaussian_copy``: ``scipy.ndimage.gaussian_filter(sigma=3)`` on 512-px cells, 16-px border,
  ``copy`` (the job of ``bench_map_overlap``, on 4096x4096).
* ``add_average``: add a constant (almost no compute), 256-px cells with a 128-px step (every
  pixel in 4 cells), 8-px border, ``average``: the pure cost of moving and stitching planes.

Reported (no target given): Task time / array time. The image pixels are checked to be equal.
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

NAME = "task_vs_array"
SIGMA = 3.0
AMOUNT = 1.5


def gaussian_array(cell: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(cell, SIGMA)


def add_array(cell: np.ndarray) -> np.ndarray:
    return cell + np.float32(AMOUNT)


def _mapper_classes():
    import imagemapreduce as imr

    class GaussianImageMapper(imr.ImageMapper):
        """Gaussian-filter the image of the expanded cell; mask and variance copied through."""

        def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
            out = expandedSubExposure.clone()
            out.image.array[...] = gaussian_array(expandedSubExposure.image.array)
            return imr.Struct(subExposure=out.subset(subExposure.getBBox()))

    class AddImageMapper(imr.ImageMapper):
        """Add a constant to the image of the cell; mask and variance copied through."""

        def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
            out = subExposure.clone()
            out.image.array[...] = add_array(subExposure.image.array)
            return imr.Struct(subExposure=out)

    return GaussianImageMapper, AddImageMapper


WORKLOADS = {
    # name: (full size, smoke size, cell, step, border, reduce, mapper index, array function)
    "gaussian_copy": (4096, 512, 512, 512, 16, "copy", 0, gaussian_array),
    "add_average": (4096, 512, 256, 128, 8, "average", 1, add_array),
}


def _run_task(task, exposure):
    return task.run(exposure).exposure


def make_task(mapper, cell, step, border, reduce, workers):
    import imagemapreduce as imr

    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = cell
    config.gridStepX = config.gridStepY = step
    config.borderSizeX = config.borderSizeY = border
    config.adjustGridOption = "none"
    config.reducer.reduceOperation = reduce
    config.scheduler = "threads"
    config.numWorkers = workers
    return imr.ImageMapReduceTask(config=config)


def main(argv: list[str] | None = None) -> dict:
    import imagemapreduce as imr
    from imagemapreduce import map_reduce

    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    nrep, nworkers = C.repeats(args), C.workers(args)
    payload = C.start_payload(args, {"workers": nworkers, "repeats": nrep, "scheduler": "threads", "workloads": {}})
    payload.update({"timings": {}, "ratios": {}, "targets": [], "pixels_equal": {}})
    started = time.perf_counter()
    mappers = _mapper_classes()
    for wname, (full, smoke, cell, step, border, reduce, mindex, func) in WORKLOADS.items():
        size = smoke if args.smoke else full
        if args.smoke:
            cell, step = cell // 4, step // 4
        rng = np.random.default_rng(4)
        exposure = imr.ExposureF(size, size)
        exposure.image.array[...] = rng.standard_normal((size, size), dtype=np.float32)
        exposure.variance.array[...] = rng.uniform(0.5, 2.0, (size, size)).astype(np.float32)
        exposure.mask.array[...] = np.where(rng.uniform(size=(size, size)) < 0.01, 1, 0)
        image = exposure.image.array.copy()
        task = make_task(mappers[mindex], cell, step, border, reduce, nworkers)
        contenders = {
            "task_exposure": partial(_run_task, task, exposure),
            "map_reduce_array": partial(
                map_reduce,
                image,
                func,
                cell_size=cell,
                grid_step=step,
                border=border,
                reduce=reduce,
                scheduler="threads",
                num_workers=nworkers,
            ),
        }
        a = contenders["task_exposure"]().image.array
        b = contenders["map_reduce_array"]()
        equal = bool(np.array_equal(a, b, equal_nan=True))
        payload["pixels_equal"][wname] = equal
        if not equal:
            raise AssertionError(f"{wname}: the Task's image differs from map_reduce's")
        del a, b
        ncells = len(task.boxes0)
        payload["params"]["workloads"][wname] = {
            "shape": [size, size],
            "cell": cell,
            "step": step,
            "border": border,
            "reduce": reduce,
            "cells": ncells,
            "exposure_bytes": 3 * size * size * 4,
            "array_bytes": size * size * 4,
        }
        timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args))
        payload["timings"][wname] = timings
        ratio = C.median(timings, "task_exposure") / C.median(timings, "map_reduce_array")
        payload["ratios"][wname] = {"task_over_array": ratio}
        payload["targets"].append(
            C.target(
                f"Task(ExposureF) / map_reduce(array), {wname}",
                ratio,
                0.0,
                "info",
                "the cost of carrying mask and variance (3 planes vs 1)",
                args.smoke,
            )
        )
        print(f"\n-- {wname}: {size}x{size}, {ncells} cells, {reduce}")
        print(C.timing_table(timings, reference="map_reduce_array"))
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
