"""A cluster against threads on the same cores: batching, locality and zarr, side by side in one run.

The job of the scale-out issue: a 4096x4096 float32 image, a Gaussian of sigma 3 (16-px border,
the filter's reach at truncate 4 is 12 px), ``reduce="copy"``, in-memory numpy input. Contenders,
all with the same number of cores (``--workers``, default the machine's):

* ``threads``: ``map_reduce`` on the threaded scheduler;
* ``local_cluster``: the same call on a ``distributed.LocalCluster`` of W worker processes x 1
  thread on 127.0.0.1 (started once, not timed), cells batched (``cells_per_task="auto"``);
* ``local_cluster_unbatched``: the cluster with one task per cell (``cells_per_task=1``), as before;
* ``hand_pool``: a hand-written ``ThreadPoolExecutor`` loop over the same cells (contiguous copies,
  as ``map_reduce`` hands them);
* ``map_overlap_cluster``: ``dask.array.map_overlap`` of the same function on the same cluster
  (timed once: it is several times slower);

at 512-px and 64-px cells; and the zarr-to-zarr run (``ImageMapReduceTask.runToZarr`` from a
zarr input to a zarr output, 256-px cells, 512-px regions) on threads and on the cluster. Every
contender is checked to give the same pixels. Targets (the issue's table):

* cluster / threads <= 1.3 at 512-px cells, <= 1.5 at 64-px cells;
* threads / hand pool <= 1.2 at 64-px cells;
* zarr -> zarr, cluster / threads <= 1.2;
* map_overlap on the cluster / ours on the cluster >= 3 (at 64-px cells, where per-task costs show).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
from bench_map_overlap import expanded_cells, hand_pool  # noqa: E402
from scipy import ndimage  # noqa: E402

NAME = "cluster"
SIGMA = 3.0
BORDER = 16


def gaussian(cell: np.ndarray) -> np.ndarray:
    """The per-cell function: a Gaussian filter of sigma 3 (reach 12 px)."""
    return ndimage.gaussian_filter(cell, SIGMA)


def ours(image, cell, scheduler, workers, cells_per_task="auto"):
    from imagemapreduce import map_reduce

    return map_reduce(
        image, gaussian, cell_size=cell, border=BORDER, reduce="copy", scheduler=scheduler, num_workers=workers,
        cells_per_task=cells_per_task,
    )  # fmt: skip


def map_overlap(image, cell, client):
    import dask.array as da

    lazy = da.from_array(image, chunks=cell).map_overlap(gaussian, depth=BORDER, boundary="none", dtype=image.dtype)
    return lazy.compute(scheduler=client)


def _task(scheduler, cell: int):
    import imagemapreduce as imr
    from imagemapreduce.builtin_mappers import GaussianSmoothMapper

    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(GaussianSmoothMapper)
    config.mapper.sigma = SIGMA
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    config.cellSizeX = config.cellSizeY = config.gridStepX = config.gridStepY = cell
    config.borderSizeX = config.borderSizeY = BORDER
    config.stitchRegionSize = 512
    config.reducer.reduceOperation = "copy"
    config.scheduler = "distributed" if not isinstance(scheduler, str) else scheduler
    # a client cannot live in a config: it goes to the task itself
    return imr.ImageMapReduceTask(config=config, scheduler=None if isinstance(scheduler, str) else scheduler)


def zarr_run(source_path, folder, scheduler, cell, label):
    """``runToZarr`` from the zarr input to a fresh zarr output; returns the output's image plane."""
    from imagemapreduce.io import open_zarr_exposure

    out = os.path.join(folder, f"out-{label}.zarr")
    shutil.rmtree(out, ignore_errors=True)
    task = _task(scheduler, cell)
    result = task.runToZarr(open_zarr_exposure(source_path), out)
    return result, task.metadata


def _cluster(workers: int):
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )  # fmt: skip
    return cluster, Client(cluster, set_as_default=False)


def in_memory(args, workers, nrep, client, payload) -> None:
    size = 1024 if args.smoke else 4096
    image = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    for cell in (512, 64) if not args.smoke else (256, 64):
        label = f"cells_{cell}"
        contenders = {
            "threads": partial(ours, image, cell, "threads", workers),
            "local_cluster": partial(ours, image, cell, client, None),
            "local_cluster_unbatched": partial(ours, image, cell, client, None, 1),
            "hand_pool": partial(hand_pool, image, expanded_cells(image.shape, cell, BORDER), workers, gaussian, True),
        }
        slow = {"map_overlap_cluster": partial(map_overlap, image, cell, client)}
        reference = contenders["threads"]()
        payload["pixels_equal"][label] = C.same_pixels({**contenders, **slow}, reference, label)
        del reference
        timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args))
        # map_overlap makes ~10 tasks per chunk: once is enough to see a ratio of several
        timings.update(C.time_round_robin(slow, 1, warmup=0))
        payload["timings"][label] = timings
        t = {name: C.median(timings, name) for name in timings}
        ratios = {
            "cluster_over_threads": t["local_cluster"] / t["threads"],
            "unbatched_cluster_over_threads": t["local_cluster_unbatched"] / t["threads"],
            "threads_over_hand_pool": t["threads"] / t["hand_pool"],
            "map_overlap_over_ours_on_cluster": t["map_overlap_cluster"] / t["local_cluster"],
        }
        payload["ratios"][label] = ratios
        cells = (size // cell) ** 2
        goal = 1.3 if cell == 512 else 1.5
        payload["targets"].append(
            C.target(
                f"LocalCluster ({workers} x 1) / threads ({workers}), {cell}-px cells",
                ratios["cluster_over_threads"],
                goal,
                "<=",
                f"{cells} cells, batched",
                args.smoke,
            )  # fmt: skip
        )
        payload["targets"].append(
            C.target(
                f"unbatched LocalCluster / threads, {cell}-px cells",
                ratios["unbatched_cluster_over_threads"],
                0.0,
                "info",
                "one task per cell, as before",
                args.smoke,
            )  # fmt: skip
        )
        if cell == 64:
            payload["targets"].append(
                C.target(
                    "threads / hand pool, 64-px cells",
                    ratios["threads_over_hand_pool"],
                    1.2,
                    "<=",
                    f"{cells} cells",
                    args.smoke,
                )  # fmt: skip
            )
        payload["targets"].append(
            C.target(
                f"map_overlap on the cluster / ours, {cell}-px cells",
                ratios["map_overlap_over_ours_on_cluster"],
                3.0 if cell == 64 else 0.0,
                ">=" if cell == 64 else "info",
                "the same function, chunks of the cell size",
                args.smoke,
            )
        )
        print(f"\n-- {size}x{size}, {cells} cells of {cell} px, border {BORDER}")
        print(C.timing_table(timings, reference="threads"))


def zarr_to_zarr(args, workers, nrep, client, payload) -> None:
    import imagemapreduce as imr
    from imagemapreduce.io import write_zarr_exposure

    size, cell = (1024, 128) if args.smoke else (4096, 256)
    folder = tempfile.mkdtemp(prefix="imr-bench-cluster-")
    try:
        exposure = imr.ExposureF(size, size)
        exposure.image.array[:] = np.random.default_rng(2).standard_normal((size, size), dtype=np.float32)
        exposure.variance.array[:] = 1.0
        source = write_zarr_exposure(exposure, os.path.join(folder, "in.zarr"), chunks=512)
        metadata = {}

        def run(scheduler, label):
            result, meta = zarr_run(source, folder, scheduler, cell, label)
            metadata[label] = meta
            return np.asarray(result.exposure.image.array)

        contenders = {
            "zarr_threads": partial(run, "threads", "threads"),
            "zarr_cluster": partial(run, client, "cluster"),
        }
        reference = contenders["zarr_threads"]()
        payload["pixels_equal"]["zarr"] = C.same_pixels(contenders, reference, "zarr")
        timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args))
        payload["timings"]["zarr"] = timings
        ratio = C.median(timings, "zarr_cluster") / C.median(timings, "zarr_threads")
        moved = {k: metadata["cluster"][k] for k in ("bytesMoved", "bytesScattered", "bytesGathered")}
        moved["bytesBetweenWorkers"] = metadata["cluster"]["bytesBetweenWorkers"]
        payload["ratios"]["zarr"] = {"cluster_over_threads": ratio, "cluster_bytes_moved": moved}
        payload["targets"].append(
            C.target(
                "zarr -> zarr, cluster / threads",
                ratio,
                1.2,
                "<=",
                f"{size}x{size}, {cell}-px cells, 512-px regions; workers read and write the stores",
                args.smoke,
            )  # fmt: skip
        )
        print(f"\n-- zarr -> zarr, {size}x{size}, {cell}-px cells")
        print(C.timing_table(timings, reference="zarr_threads"))
        print(f"bytes moved on the cluster: {moved}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    nrep, workers = C.repeats(args, full=3, smoke=1), C.workers(args)
    payload = C.start_payload(args, {"repeats": nrep, "workers": workers, "sigma": SIGMA, "border": BORDER})
    payload.update({"timings": {}, "ratios": {}, "targets": [], "pixels_equal": {}})
    started = time.perf_counter()
    t0 = time.perf_counter()
    cluster, client = _cluster(workers)
    payload["local_cluster"] = {"n_workers": workers, "threads_per_worker": 1, "startup_s": time.perf_counter() - t0}
    try:
        in_memory(args, workers, nrep, client, payload)
        zarr_to_zarr(args, workers, nrep, client, payload)
    finally:
        client.close()
        cluster.close()
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
