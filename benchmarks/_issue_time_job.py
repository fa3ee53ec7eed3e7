"""Run the homogenisation job on the code as it was when the exact method was asked for, on request.

Started by ``bench_homogenize.py`` with ``PYTHONPATH`` pointing at that code (exported from the
repository's history into a temporary folder), in its own process so that the two versions of
the package never meet. It reads the field the benchmark wrote (plain arrays, ``allow_pickle``
off, and a JSON document of the PSF's parameters), builds the same task with that code's
``PsfMatchMapper`` (its Gaussian quadrature, then the only method), and answers each line
``run`` on stdin with the seconds one ``task.run`` took, its caches emptied first; ``quit`` ends it.
That code's ``VaryingMoffatPsf`` has no pixel response and no ellipticity, so the field's PSF is
the same FWHM polynomial, round and sampled at pixel centres: the same work per cell (a kernel
image and its adaptive moments), not the same stars.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
import time

import numpy as np


def build(folder: str):
    import imagemapreduce as imr
    from imagemapreduce import homogenize
    from imagemapreduce.geom import Box2I, Extent2I, Point2I
    from imagemapreduce.psf import VaryingMoffatPsf

    with open(f"{folder}/field.json", encoding="utf-8") as stream:
        spec = json.load(stream)
    planes = np.load(f"{folder}/field.npz", allow_pickle=False)
    bbox = Box2I(Point2I(0, 0), Extent2I(*spec["size"]))
    psf = VaryingMoffatPsf(spec["stamp"], spec["stamp"], spec["fwhm_coeffs"], bbox, beta=spec["beta"])
    exposure = imr.ExposureF(planes["image"], mask=planes["mask"], variance=planes["variance"], psf=psf)
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(homogenize.PsfMatchMapper)
    config.reducer.reduceOperation = "average"
    config.reducer.weighting = "linear"
    for name, value in spec["grid"].items():
        setattr(config, name, value)
    config.scheduler = "threads"
    config.numWorkers = spec["workers"]
    return imr.ImageMapReduceTask(config=config), exposure, spec["target_sigma"], homogenize


def clear(module) -> None:
    """Empty every function cache of that code's homogenisation module, as the benchmark does for ours."""
    for value in vars(module).values():
        if isinstance(value, functools._lru_cache_wrapper):
            value.cache_clear()


def main() -> None:
    task, exposure, target_sigma, module = build(sys.argv[1])
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        clear(module)
        gc.collect()
        start = time.perf_counter()
        task.run(exposure, targetSigma=target_sigma)
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    main()
