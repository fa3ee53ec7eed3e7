"""PSF homogenisation: the exact method (kernels solved from PSF images) against the Gaussian approximation.

The field of the issue: a 2048x2048 star field with a pixel-integrated Moffat PSF (beta 3.5) whose
FWHM grows from 2.5 px at the centre to 4.5 px at the corners, with |g| up to 0.04; 64-px cells
on a 32-px step, a 12-px border, linear-taper stitching, the target a Gaussian of sigma 2.34 px.

Contenders, run side by side on the threaded scheduler, the PSF caches emptied before each run so
that every run evaluates the PSF anew:

* ``gaussian``: ``method="gaussian"``, the old path (adaptive-moments sigma per cell, separable
  Gaussian kernel of variance target^2 - local^2), on today's engine.
* ``exact``: ``method="exact"`` (the default): PSF images and matching kernels a tile of cells at
  a time, each cell's core convolved by FFT.
* ``issue_time``: the same job on the code of the day the exact method was asked for (commit
  ``ISSUE_TIME_COMMIT``, exported from the repository's history into a temporary folder and run in
  a process of its own, ``_issue_time_job.py``): "today's time" of the issue. That code's Moffat
  model has no pixel response or ellipticity, so its field's PSF is the same FWHM polynomial,
  round: the same work per cell. Left out (with a note) where the history is not there.

Per-cell costs (serial, fresh caches) are split into PSF evaluation, kernel solve and
convolution for both methods. The star widths after each are measured against the target, to
show what the time buys. Target: ``exact / issue_time <= 1/3`` of the wall time; ``exact /
gaussian`` is reported beside it (the Gaussian path shares every engine speed-up since).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

NAME = "homogenize"
TARGET_SIGMA = 2.34
#: The code when the exact method was asked for (the Gaussian quadrature was then the only method).
ISSUE_TIME_COMMIT = "0010be0e5632a2f19fa11776316e8ffbd30883bd"
GRID = {"scaleByFwhm": False, "cellSizeX": 64, "cellSizeY": 64, "gridStepX": 32, "gridStepY": 32,
        "borderSizeX": 12, "borderSizeY": 12, "adjustGridOption": "none"}  # fmt: skip


def make_field(size: int):
    from imagemapreduce.geom import Box2I, Extent2I, Point2I
    from imagemapreduce.psfmatch.simulate import field_psf, simulate_exposure

    bbox = Box2I(Point2I(0, 0), Extent2I(size, size))
    psf = field_psf(bbox, "moffat", 2.5, 4.5, beta=3.5, g_max=0.04)
    n_stars = max(20, round(600 * (size / 1024) ** 2))
    return simulate_exposure(size, size, psf=psf, n_stars=n_stars, seed=3, flux_range=(8e3, 3e5))


def make_task(method: str, workers: int):
    import imagemapreduce as imr
    from imagemapreduce.psfmatch.homogenize import PsfMatchMapper

    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(PsfMatchMapper)
    config.mapper.method = method
    config.reducer.reduceOperation = "average"
    config.reducer.weighting = "linear"
    for name, value in GRID.items():
        setattr(config, name, value)
    config.scheduler = "threads"
    config.numWorkers = workers
    return imr.ImageMapReduceTask(config=config)


class IssueTimeCode:
    """The same job on the issue-time code, in a process of its own (``_issue_time_job.py``).

    That code is exported from the repository's history into ``folder``; the field is handed over
    as plain arrays and the PSF's parameters. Each `run` asks for one timed ``task.run``.
    """

    def __init__(self, folder: Path, exposure, workers: int) -> None:
        import json
        import subprocess

        psf = exposure.getPsf()
        mi = exposure.maskedImage
        np.savez(folder / "field.npz", image=mi.image.array, mask=mi.mask.array, variance=mi.variance.array)
        spec = {"size": [exposure.getWidth(), exposure.getHeight()], "stamp": psf.getDimensions().x,
                "fwhm_coeffs": psf.getCoefficients().tolist(), "beta": psf.getBeta(), "grid": GRID,
                "workers": workers, "target_sigma": TARGET_SIGMA}  # fmt: skip
        (folder / "field.json").write_text(json.dumps(spec), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(folder / "code")}
        script = Path(__file__).with_name("_issue_time_job.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the issue-time code did not start; see its error above")

    def run(self) -> float:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


def export_issue_time_code(folder: Path) -> bool:
    """Write the package as of `ISSUE_TIME_COMMIT` under ``folder / "code"``; False if the history lacks it."""
    import io
    import subprocess
    import tarfile

    root = Path(__file__).resolve().parent.parent
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", ISSUE_TIME_COMMIT, "imagemapreduce"],
                                 cwd=root, capture_output=True, check=True, timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder / "code", filter="data")
    return True


def clear_caches() -> None:
    """Forget every cached PSF image, survey, target and kernel, so a run pays for all of them."""
    from imagemapreduce.psfmatch.homogenize import clear_caches as clear

    clear()


def per_cell_exact(task, exposure) -> dict[str, float]:
    """Milliseconds per cell in PSF evaluation, kernel solve and convolution, every cell, serially.

    The exact method evaluates the PSF and solves kernels a tile of cells at a time, so the split
    is taken over the whole grid, phase by phase, with empty caches: the survey before the run
    (each cell's PSF image and moments), every tile's solve, then each cell's convolution (the
    mapper's own ``convolve`` timing, its kernel already solved).
    """
    bbox = exposure.getBBox()
    mapper, boxes0, boxes1 = task.mapper, task.boxes0, task.boxes1
    psf = exposure.getPsf()
    clear_caches()
    start = time.perf_counter()
    mapper.prepareRun(exposure, boxes0, targetSigma=TARGET_SIGMA)
    target = mapper.resolveTarget(psf, bbox, targetSigma=TARGET_SIGMA)
    surveyed = time.perf_counter()
    for box in boxes0:
        mapper.solveKernel(psf, target, box.getCenter())
    solved = time.perf_counter()
    convolve = 0.0
    for box0, box1 in zip(boxes0, boxes1, strict=True):
        convolve += mapper.run(exposure[box0], exposure[box1], bbox, targetSigma=TARGET_SIGMA).timings["convolve"]
    cells = len(boxes0)
    return {"psf": 1e3 * (surveyed - start) / cells, "solve": 1e3 * (solved - surveyed) / cells,
            "convolve": 1e3 * convolve / cells}  # fmt: skip


def per_cell_gaussian(task, exposure, boxes) -> dict[str, float]:
    """The same split for the Gaussian path, its steps timed one by one as `PsfMatchMapper` runs them."""
    from imagemapreduce.psfmatch import homogenize as H

    totals = {"psf": 0.0, "solve": 0.0, "convolve": 0.0}
    bbox = exposure.getBBox()
    psf = exposure.getPsf()
    for box in boxes:
        expanded = exposure[box.grown(12).clipped_to(bbox)]
        start = time.perf_counter()
        local = H.psf_sigma(psf, box.getCenter())
        measured = time.perf_counter()
        sigma = H.matching_sigma(local, TARGET_SIGMA)
        radius = task.mapper.kernelRadius(sigma)
        kernel = H.matching_kernel_1d(sigma, radius) if radius else None
        solved = time.perf_counter()
        if kernel is not None:
            H.correlate_separable(expanded.image.array.astype(np.float64), kernel, "nearest")
            H.correlate_separable(expanded.variance.array.astype(np.float64), kernel**2, "nearest")
        done = time.perf_counter()
        totals["psf"] += measured - start
        totals["solve"] += solved - measured
        totals["convolve"] += done - solved
    return {key: 1e3 * value / len(boxes) for key, value in totals.items()}


def width_errors(exposure, output, stars, target_width: float) -> dict[str, float]:
    from imagemapreduce.psfmatch.measure import measure_star_widths

    before = measure_star_widths(exposure, stars, min_snr=200.0)
    after = measure_star_widths(output, stars)
    after = after[np.isin(after["index"], before["index"])]
    error = after["sigma"] / target_width - 1.0
    return {
        "stars": int(len(after)),
        "median_width_error": float(np.median(error)) if len(after) else float("nan"),
        "max_abs_width_error": float(np.abs(error).max()) if len(after) else float("nan"),
        "max_abs_g": float(np.hypot(after["g1"], after["g2"]).max()) if len(after) else float("nan"),
    }


def main(argv: list[str] | None = None) -> dict:
    logging.getLogger("ip_diffim_imageMapReduce").setLevel(logging.ERROR)
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    nrep, nworkers = C.repeats(args, full=3), C.workers(args)
    size = 256 if args.smoke else 2048
    params = {"size": size, "cell": 64, "step": 32, "border": 12, "psf": "Moffat beta 3.5, FWHM 2.5-4.5 px, |g|<=0.04",
              "target_sigma": TARGET_SIGMA, "workers": nworkers, "repeats": nrep}  # fmt: skip
    payload = C.start_payload(args, params)
    started = time.perf_counter()
    exposure, stars = make_field(size)
    tasks = {method: make_task(method, nworkers) for method in ("gaussian", "exact")}
    for task in tasks.values():
        task.generateGrid(exposure)
    params["cells"] = len(tasks["exact"].boxes0)

    def run(method):
        return lambda: tasks[method].run(exposure, targetSigma=TARGET_SIGMA)

    contenders = {m: run(m) for m in tasks}
    with tempfile.TemporaryDirectory() as scratch:
        issue_time = None
        if not args.smoke and export_issue_time_code(Path(scratch)):
            issue_time = IssueTimeCode(Path(scratch), exposure, nworkers)
            contenders["issue_time"] = issue_time.run
        else:
            payload["notes"].append(f"issue-time code ({ISSUE_TIME_COMMIT[:7]}) not run: smoke run or no git history")
        try:
            timings = C.time_round_robin(contenders, nrep, warmup=C.warmup(args), between=clear_caches)
        finally:
            if issue_time is not None:
                issue_time.close()
    payload["timings"] = timings
    t = {name: C.median(timings, name) for name in timings}
    cells = params["cells"]
    boxes = tasks["exact"].boxes0[:: max(1, cells // 256)]
    clear_caches()
    split = {"gaussian": per_cell_gaussian(tasks["gaussian"], exposure, boxes),
             "exact": per_cell_exact(tasks["exact"], exposure)}  # fmt: skip
    for method in split:
        split[method]["wall_per_cell"] = 1e3 * t[method] / cells
    payload["per_cell_ms"] = split
    clear_caches()
    exact_target = tasks["exact"].mapper.resolveTarget(exposure.getPsf(), exposure.getBBox(), targetSigma=TARGET_SIGMA)
    payload["accuracy"] = {
        "gaussian": width_errors(exposure, run("gaussian")().exposure, stars, TARGET_SIGMA),
        "exact": width_errors(
            exposure, run("exact")().exposure, stars, exact_target.computeShape().getDeterminantRadius()
        ),  # fmt: skip
    }
    ratio = t["exact"] / t["gaussian"]
    payload["ratios"] = {"exact_over_gaussian": ratio}
    payload["targets"] = []
    if "issue_time" in t:
        payload["ratios"]["exact_over_issue_time"] = t["exact"] / t["issue_time"]
        payload["targets"].append(C.target(
            "exact / issue-time code, wall time", t["exact"] / t["issue_time"], 1.0 / 3.0, "<=",
            f"{size}^2 Moffat field, threads, the code of {ISSUE_TIME_COMMIT[:7]} side by side", args.smoke,
        ))  # fmt: skip
    payload["targets"] += [
        C.target(
            "exact / gaussian wall time", ratio, 1.0, "info", "today's Gaussian approximation, same engine", args.smoke
        ),  # fmt: skip
        C.target(
            "exact: median width error vs target",
            payload["accuracy"]["exact"]["median_width_error"],
            0.0,
            "info",
            "adaptive moments of bright isolated stars",
            args.smoke,
        ),  # fmt: skip
        C.target(
            "gaussian: median width error vs target",
            payload["accuracy"]["gaussian"]["median_width_error"],
            0.0,
            "info",
            "the bias the exact method removes",
            args.smoke,
        ),  # fmt: skip
    ]
    rows = [[m, f"{1e3 * t[m] / cells:.3f}", *(f"{split[m][k]:.3f}" for k in ("psf", "solve", "convolve"))]
            for m in split]  # fmt: skip
    print(C.timing_table(timings, reference="issue_time" if "issue_time" in timings else "gaussian"))
    print(C.table(rows, ["method", "wall ms/cell", "psf ms/cell", "solve ms/cell", "convolve ms/cell"]))
    print(f"exact / gaussian = {ratio:.3f}")
    if "issue_time" in t:
        print(f"exact / issue-time code = {t['exact'] / t['issue_time']:.3f}")
    payload["notes"].append(
        "per-cell split measured serially with empty caches (gaussian: a sample of cells; exact: every cell, "
        "phase by phase, since it evaluates PSFs and solves kernels a tile of cells at a time: psf = the survey "
        "of every cell's PSF image and moments before the run); the wall time per cell includes the engine's "
        "own work (cutting cells, stitching) and runs on the threaded scheduler"
    )
    payload["elapsed_s"] = time.perf_counter() - started
    C.report(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
