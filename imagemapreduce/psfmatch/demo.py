"""The showcase: homogenise the spatially varying PSF of a simulated star field, end to end.

`run_demo` simulates a seeded star field whose pixel-integrated Moffat PSF (beta 3.5) widens
from 2.5 px FWHM at the centre to 4.5 px at the corners and grows elliptical towards them
(``|g|`` up to 0.04), brings every part of it to one round Gaussian with `PsfMatchMapper`'s exact
method (a matching kernel solved from the PSF images of each cell) on a grid of overlapping
cells stitched with a linear taper, measures isolated stars before and after (width and
ellipticity), and writes the input and output FITS files, a PNG figure and a JSON summary. ``imagemapreduce demo``
runs it from the command line; documentation and tests call it directly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..geom import Box2I, Extent2I, Point2I
from ..image import Exposure, ExposureF
from ..io.fits import write_exposure
from ..mapreduce import ImageMapReduceConfig, ImageMapReduceTask
from ..psf import GaussianPsf
from .homogenize import PsfMatchMapper
from .measure import measure_star_widths, width_map
from .simulate import field_psf, simulate_exposure

__all__ = [
    "DEFAULT_SIZE",
    "MIN_SIZE",
    "CELL_SIZE",
    "GRID_STEP",
    "BORDER",
    "default_star_count",
    "run_demo",
    "format_summary",
]

#: Default image side in pixels: about 2 s of map-reduce and under 10 s in all on 2 cores.
DEFAULT_SIZE = 1024
#: Smallest side accepted: below it too few isolated stars are left to measure.
MIN_SIZE = 128
#: The grid, in pixels: cells of 64 px overlapping by half (step 32 px), so the linear taper of
#: each cell sums to a smooth blend, and a border of 12 px, wider than the largest matching
#: kernel's radius (7-8 px for the sharpest PSF at the centre).
CELL_SIZE, GRID_STEP, BORDER = 64, 32, 12
#: The PSF: a Moffat of index 3.5, FWHM 2.5 px at the centre and 4.5 px at the corners, where
#: its ellipticity reaches ``|g|`` = 0.04 (the field of the issue that found the Gaussian method's bias).
FWHM_CENTRE, FWHM_CORNER, MOFFAT_BETA, G_MAX = 2.5, 4.5, 3.5, 0.04
#: Bright stars (SNR well above 200 in the aperture) so that widths are measured to well under 1%.
FLUX_RANGE = (8.0e3, 3.0e5)
#: Stars measured must have this aperture SNR in the input.
MIN_SNR = 200.0
#: Stars per 1024 x 1024 pixels. Isolated stars (no neighbour within 24 px, the measurement's
#: isolation radius) are most numerous at about one star per 1800 px^2, i.e. near 580 per Mpx.
STARS_PER_MEGAPIXEL = 600
FILE_NAMES = {"input": "input.fits", "output": "output.fits", "figure": "demo.png", "summary": "summary.json"}


def default_star_count(size: int) -> int:
    """Return the number of simulated stars for a ``size`` x ``size`` image (at least 10)."""
    return max(10, round(STARS_PER_MEGAPIXEL * (size / 1024) ** 2))


class _Clock:
    """Named wall-clock timings, in seconds."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 4)

    def total(self) -> float:
        return round(time.perf_counter() - self._start, 4)


def run_demo(
    output_dir: str | Path = "imr-demo-output",
    *,
    size: int = DEFAULT_SIZE,
    seed: int = 3,
    n_stars: int | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    log: logging.Logger | None = None,
) -> dict[str, Any]:
    """Homogenise the PSF of a simulated star field and write the results to ``output_dir``.

    Parameters
    ----------
    output_dir : `str` or `pathlib.Path`
        Folder for ``input.fits``, ``output.fits``, ``demo.png`` and ``summary.json``; created
        if missing. Files of an earlier demo there are replaced.
    size : `int`
        Side of the square image in pixels, at least `MIN_SIZE`.
    seed : `int`
        Seed of the simulation: the same seed gives the same image and the same numbers.
    n_stars : `int`, optional
        Stars to simulate; default `default_star_count` of ``size``.
    scheduler : `str`, optional
        Dask scheduler name or address (see `ImageMapReduceConfig.scheduler`); None for Dask's
        current default, threads unless configured otherwise.
    workers : `int`, optional
        Threads or processes for a local scheduler; None for one per core.
    progress : `bool`
        Show a progress bar on stderr during the map-reduce.
    log : `logging.Logger`, optional
        Parent logger of the task (default: the task's own, ``ip_diffim_imageMapReduce``).

    Returns
    -------
    summary : `dict`
        What ``summary.json`` holds: the setup, the timings in seconds (``timings_s``), the star
        measurements (``width_spread_before/after``: max / min of the measured widths;
        ``max_width_error`` and ``median_width_error``: the largest and the median relative
        deviation from the target width after; ``ellipticity_before/after``: median and largest
        ``|g|`` of the stars;
        ``max_flux_change``: largest relative change of a star's aperture flux), and the files.
        Measurements are None when no star could be measured.

    Raises
    ------
    ValueError
        If ``size`` is below `MIN_SIZE`, or another argument is out of range.
    """
    size, n_stars = _check_arguments(size, n_stars)
    clock = _Clock()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {key: output_dir / name for key, name in FILE_NAMES.items()}

    with clock("simulate"):
        exposure, stars = _simulate(size, seed, n_stars)
    task = make_demo_task(scheduler, workers, progress, log)
    with clock("grid"):
        task.generateGrid(exposure)
    with clock("map_reduce"):
        output = task.run(exposure).exposure
    # The target the mapper chose (the smallest round Gaussian every cell reaches, plus a margin),
    # and its width as the stars' widths are measured: adaptive moments of its pixel image.
    mapper = _psf_match_mapper(task)
    target_psf = mapper.resolveTarget(exposure.getPsf(), exposure.getBBox())
    target = float(target_psf.computeShape().getDeterminantRadius())
    with clock("measure"):
        before, after = _measure(exposure, output, stars)
    with clock("write_fits"):
        _write_fits(exposure, output, target, files)
    with clock("figure"):
        residual = _residual(output, target_psf, size, seed, n_stars)
        _draw_figure(exposure, output, task, before, after, target, residual, files["figure"])

    summary = _summary(exposure, task, n_stars, seed, target, before, after, clock, files)
    summary["total_flux_change"] = _total_flux_change(exposure, output)
    with open(files["summary"], "w") as stream:
        json.dump(summary, stream, indent=2)
        stream.write("\n")
    return summary


def _check_arguments(size: Any, n_stars: Any) -> tuple[int, int]:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"the demo image size must be an integer of at least {MIN_SIZE} px, got {size!r}")
    if n_stars is None:
        n_stars = default_star_count(int(size))
    if isinstance(n_stars, bool) or not isinstance(n_stars, (int, np.integer)) or n_stars < 1:
        raise ValueError(f"the number of stars must be a positive integer, got {n_stars!r}")
    return int(size), int(n_stars)


def _simulate(size: int, seed: int, n_stars: int) -> tuple[ExposureF, np.ndarray]:
    """Return the seeded star field with its varying, elliptical Moffat PSF, described in the metadata."""
    bbox = Box2I(Point2I(0, 0), Extent2I(size, size))
    psf = field_psf(bbox, "moffat", FWHM_CENTRE, FWHM_CORNER, beta=MOFFAT_BETA, g_max=G_MAX)
    exposure, stars = simulate_exposure(size, size, psf=psf, n_stars=n_stars, seed=seed, flux_range=FLUX_RANGE)
    # A varying PSF cannot be stored in the FITS archive; these cards describe it instead.
    exposure.getMetadata().update(
        {
            "PSFMODEL": "field_psf moffat",
            "PSFFWHM0": FWHM_CENTRE,
            "PSFFWHM1": FWHM_CORNER,
            "PSFBETA": MOFFAT_BETA,
            "PSFGMAX": G_MAX,
        }
    )
    return exposure, stars


def make_demo_task(
    scheduler: str | None = None, workers: int | None = None, progress: bool = False, log: logging.Logger | None = None
) -> ImageMapReduceTask:
    """Return the demo's task: exact `PsfMatchMapper` on 64 px cells every 32 px, linear taper stitching."""
    config = ImageMapReduceConfig()
    config.mapper.retarget(PsfMatchMapper)
    config.mapper.method = "exact"
    config.reducer.reduceOperation = "average"
    config.reducer.weighting = "linear"
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = CELL_SIZE
    config.gridStepX = config.gridStepY = GRID_STEP
    config.borderSizeX = config.borderSizeY = BORDER
    config.adjustGridOption = "none"
    config.scheduler = scheduler
    config.numWorkers = workers
    config.progressBar = progress
    return ImageMapReduceTask(config=config, log=log)


def _measure(exposure: Exposure, output: Exposure, stars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widths and fluxes of the isolated stars bright in the input, measured before and after, row by row."""
    # Select on the input's SNR: after smoothing the variance plane ignores the pixel covariance,
    # so an SNR computed from it as for independent pixels is too high.
    before = measure_star_widths(exposure, stars, min_snr=MIN_SNR)
    after = measure_star_widths(output, stars)
    _, ib, ia = np.intersect1d(before["index"], after["index"], return_indices=True)
    return before[ib], after[ia]


def _residual(output: Exposure, target: Any, size: int, seed: int, n_stars: int) -> np.ndarray:
    """The output minus the same stars drawn noise-free with the target PSF (sky included).

    What is left is the input's noise, smoothed, plus anything the matching got wrong; a seam
    would show as a step along the cell edges.
    """
    ideal, _ = simulate_exposure(size, size, psf=target, n_stars=n_stars, seed=seed, flux_range=FLUX_RANGE, noise=False)
    return np.asarray(output.image.array, dtype=np.float64) - np.asarray(ideal.image.array, dtype=np.float64)


def _write_fits(exposure: Exposure, output: Exposure, target: float, files: dict[str, Path]) -> None:
    """Write the input (its varying PSF described by header cards) and the output with its Gaussian PSF."""
    # The archive holds Gaussian PSFs only: leave the varying PSF out rather than log a warning.
    write_exposure(
        type(exposure)(exposure.getMaskedImage(), metadata=dict(exposure.getMetadata())), files["input"], overwrite=True
    )
    # After homogenisation the PSF is the target Gaussian everywhere, which the archive holds as
    # afw's GaussianPsf, sampled at pixel centres: of the sigma its pixel image has (``target``,
    # the adaptive-moments width of the pixel-integrated target), the width the stars have.
    sigma = target
    side = 2 * math.ceil(5.0 * sigma) + 1
    matched = type(output)(
        output.getMaskedImage(), psf=GaussianPsf(side, side, sigma), metadata=dict(output.getMetadata())
    )
    write_exposure(matched, files["output"], overwrite=True)


def _total_flux_change(exposure: Exposure, output: Exposure) -> float:
    """Relative change of the image's total star light (sum above the sky, the input's median)."""
    sky = float(np.nanmedian(exposure.image.array))
    before = float(np.nansum(exposure.image.array - sky, dtype=np.float64))
    after = float(np.nansum(output.image.array - sky, dtype=np.float64))
    return round(abs(after / before - 1.0), 7)


def _ellipticity(rows: np.ndarray) -> dict[str, float] | None:
    """Median and largest ``|g|`` of the measured stars (reduced shear from adaptive moments)."""
    if not len(rows):
        return None
    g = np.hypot(rows["g1"], rows["g2"])
    return {"median": round(float(np.median(g)), 5), "max": round(float(g.max()), 5)}


def _spread(widths: np.ndarray) -> float | None:
    return round(float(widths.max() / widths.min()), 5) if len(widths) else None


def _summary(
    exposure: Exposure,
    task: ImageMapReduceTask,
    n_stars: int,
    seed: int,
    target: float,
    before: np.ndarray,
    after: np.ndarray,
    clock: _Clock,
    files: dict[str, Path],
) -> dict[str, Any]:
    measured = len(after) > 0
    errors = after["sigma"] / target - 1.0
    width_error = float(np.abs(errors).max()) if measured else None
    median_error = float(np.median(errors)) if measured else None
    flux_change = float(np.abs(after["flux"] / before["flux"] - 1.0).max()) if measured else None
    timings = dict(clock.timings)
    timings["total"] = clock.total()
    return {
        "image_size": [exposure.getWidth(), exposure.getHeight()],
        "seed": seed,
        "stars_simulated": n_stars,
        "psf_model": f"Moffat beta {MOFFAT_BETA}, pixel-integrated, |g| up to {G_MAX}",
        "psf_fwhm_range": [FWHM_CENTRE, FWHM_CORNER],
        "method": _psf_match_mapper(task).config.method,
        "target_sigma": round(target, 6),
        "cells": len(_boxes(task)[0]),
        "cell_size": CELL_SIZE,
        "grid_step": GRID_STEP,
        "border": BORDER,
        "weighting": task.reducer.config.weighting,
        "scheduler": str(task.metadata.get("scheduler", "")),
        "stars_measured": len(after),
        "width_spread_before": _spread(before["sigma"]),
        "width_spread_after": _spread(after["sigma"]),
        "max_width_error": None if width_error is None else round(width_error, 6),
        "median_width_error": None if median_error is None else round(median_error, 6),
        "ellipticity_before": _ellipticity(before),
        "ellipticity_after": _ellipticity(after),
        "max_flux_change": None if flux_change is None else round(flux_change, 6),
        "timings_s": timings,
        "files": {key: str(path) for key, path in files.items()},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Return the summary as a few lines of text for a terminal."""
    width, height = summary["image_size"]
    timings = summary["timings_s"]

    def percent(value: float | None) -> str:
        return "n/a (no star measured)" if value is None else f"{100.0 * value:.2f}%"

    def ratio(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def signed(value: float | None) -> str:
        return "n/a" if value is None else f"{100.0 * value:+.2f}%"

    def shear(values: dict[str, float] | None) -> str:
        return "n/a" if values is None else f"median {values['median']:.4f}, max {values['max']:.4f}"

    folder = str(Path(summary["files"]["summary"]).parent)
    lines = [
        f"PSF homogenisation of a simulated {width} x {height} star field (seed {summary['seed']})",
        f"  cells             {summary['cells']} of {summary['cell_size']} px, step {summary['grid_step']} "
        f"px, border {summary['border']} px; {summary['weighting']} taper; {summary['scheduler']}",
        f"  map-reduce time   {timings['map_reduce']:.2f} s (demo total {timings['total']:.2f} s)",
        f"  PSF               {summary['psf_model']}, FWHM {summary['psf_fwhm_range'][0]:.1f} to "
        f"{summary['psf_fwhm_range'][1]:.1f} px -> round Gaussian, sigma {summary['target_sigma']:.3f} px "
        f"({summary['method']} matching kernels)",
        f"  width spread      {ratio(summary['width_spread_before'])} before -> "
        f"{ratio(summary['width_spread_after'])} after "
        f"(max/min over {summary['stars_measured']} isolated stars)",
        f"  width vs target   median {signed(summary['median_width_error'])}, "
        f"max {percent(summary['max_width_error'])}",
        f"  ellipticity |g|   {shear(summary['ellipticity_before'])} before -> "
        f"{shear(summary['ellipticity_after'])} after",
        f"  flux change       total {percent(summary.get('total_flux_change'))}; per star, in a 9 px "
        f"aperture, max {percent(summary['max_flux_change'])} (the input's Moffat wings reach past it)",
        f"  files             {folder}/: " + ", ".join(Path(p).name for p in summary["files"].values()),
    ]
    return "\n".join(lines)


# -- the figure ----------------------------------------------------------------------------------


def _draw_figure(
    exposure: Exposure,
    output: Exposure,
    task: ImageMapReduceTask,
    before: np.ndarray,
    after: np.ndarray,
    target: float,
    residual: np.ndarray,
    path: Path,
) -> None:
    """Draw eight panels: input, output, residual, the grid; width maps before and after, widths and shapes."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no backend switch

    fig = Figure(figsize=(20, 9.5), layout="constrained")
    axes = fig.subplots(2, 4)
    crop = _central_box(exposure.getBBox(), 192)
    norm = _image_norm(exposure.image.array)
    for ax, exp, title in ((axes[0, 0], exposure, "input"), (axes[0, 1], output, "output (homogenised)")):
        image = _show_image(ax, exp, crop, norm, f"{title}, central {crop.getWidth()} px")
    fig.colorbar(image, ax=axes[0, :2], shrink=0.8, label="counts (asinh stretch, sky - 3 noise to the 99.9th pc)")
    _draw_residual(fig, axes[0, 2], residual, crop, exposure.getBBox(), task)
    _draw_grid(axes[0, 3], exposure, task, crop, norm)
    _draw_width_maps(fig, axes[1, 0], axes[1, 1], exposure.getBBox(), before, after)
    _draw_widths_by_radius(axes[1, 2], exposure.getBBox(), before, after, target)
    _draw_shapes(axes[1, 3], before, after)
    fig.suptitle("imagemapreduce demo: PSF homogenisation with PsfMatchMapper (exact matching kernels)", fontsize=14)
    fig.savefig(path, dpi=80)


def _draw_residual(fig: Any, ax: Any, residual: np.ndarray, box: Box2I, bbox: Box2I, task: ImageMapReduceTask) -> None:
    """The residual (output minus the ideal) in ``box``, with the cell edges marked: a seam would follow them."""
    from matplotlib.colors import Normalize

    from ..plotting import plot_box_grid

    pixels = residual[box.slices(bbox.getBegin())]
    finite = pixels[np.isfinite(pixels)]
    scale = 4.0 * 1.4826 * float(np.median(np.abs(finite - np.median(finite)))) if finite.size else 1.0
    shown = ax.imshow(
        pixels,
        origin="lower",
        cmap="RdBu_r",
        norm=Normalize(-scale, scale),
        extent=_extent(box),
        interpolation="nearest",
    )
    cells = [b for b in _boxes(task)[0] if b.overlaps(box)]
    plot_box_grid(cells, box, ax=ax, color="0.3", lw=0.5, ls=":")
    ax.set_title(f"residual: output - stars drawn with the target, central {box.getWidth()} px")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="counts (linear, +-4 robust sigma)")


def _draw_shapes(ax: Any, before: np.ndarray, after: np.ndarray) -> None:
    """Each star's ellipticity (g1, g2) before and after: a cloud shrinking to the origin."""
    for rows, label, colour in ((before, "before", "tab:orange"), (after, "after", "tab:blue")):
        ax.scatter(rows["g1"], rows["g2"], s=12, color=colour, label=label)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("g1")
    ax.set_ylabel("g2")
    ax.set_title("star ellipticity (adaptive moments)")
    ax.legend(loc="upper right")


def _central_box(bbox: Box2I, side: int) -> Box2I:
    side = min(side, bbox.getWidth(), bbox.getHeight())
    x0 = bbox.getMinX() + (bbox.getWidth() - side) // 2
    y0 = bbox.getMinY() + (bbox.getHeight() - side) // 2
    return Box2I(Point2I(x0, y0), Extent2I(side, side))


def _image_norm(image: np.ndarray) -> Any:
    """Return an asinh stretch from just below the sky to the bright stars: faint stars and cores show."""
    from matplotlib.colors import AsinhNorm

    finite = image[np.isfinite(image)]
    sky = float(np.median(finite))
    noise = 1.4826 * float(np.median(np.abs(finite - sky)))
    top = float(np.percentile(finite, 99.9))
    return AsinhNorm(linear_width=max(5.0 * noise, 1e-6), vmin=sky - 3.0 * noise, vmax=max(top, sky + noise))


def _extent(bbox: Box2I) -> list[float]:
    return [bbox.getMinX() - 0.5, bbox.getMaxX() + 0.5, bbox.getMinY() - 0.5, bbox.getMaxY() + 0.5]


def _show_image(ax: Any, exposure: Exposure, box: Box2I, norm: Any, title: str) -> Any:
    pixels = exposure.image.array[box.slices(exposure.getXY0())]
    image = ax.imshow(pixels, origin="lower", cmap="gray", norm=norm, extent=_extent(box), interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    return image


def _draw_grid(ax: Any, exposure: Exposure, task: ImageMapReduceTask, crop: Box2I, norm: Any) -> None:
    """Draw the input with a tiling subset of the cells, one cell and its expanded cell, and the crop."""
    from ..plotting import plot_box_grid

    bbox = exposure.getBBox()
    # A figure panel shows a few hundred pixels across: subsample big images rather than render them whole.
    stride = max(1, math.ceil(max(bbox.getWidth(), bbox.getHeight()) / 1024))
    pixels = exposure.image.array[::stride, ::stride]
    ax.imshow(pixels, origin="lower", cmap="gray", norm=norm, extent=_extent(bbox))
    # Cells overlap by half: drawing every other one in x and y tiles the image legibly.
    boxes0, boxes1 = _boxes(task)
    tiles = [box for box, keep in zip(boxes0, _every_other(boxes0), strict=True) if keep]
    plot_box_grid(tiles, bbox, ax=ax, color="tab:cyan", lw=0.6, label="cells (every other)")
    middle = min(range(len(boxes0)), key=lambda i: _distance(boxes0[i], bbox))
    plot_box_grid([boxes0[middle]], bbox, ax=ax, color="tab:red", lw=1.5, label="one cell")
    plot_box_grid([boxes1[middle]], bbox, ax=ax, color="tab:red", lw=1.5, ls=":", label="its expanded cell")
    plot_box_grid([crop], bbox, ax=ax, color="yellow", lw=1.0, ls="--", label="the crop shown left")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_title(f"grid: {len(boxes0)} cells, every other drawn")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")


def _psf_match_mapper(task: ImageMapReduceTask) -> PsfMatchMapper:
    """Return the task's mapper, which `make_demo_task` made a `PsfMatchMapper`."""
    mapper = task.mapper
    if not isinstance(mapper, PsfMatchMapper):
        raise TypeError(f"the demo's task maps with PsfMatchMapper, not {type(mapper).__name__}")
    return mapper


def _boxes(task: ImageMapReduceTask) -> tuple[list[Box2I], list[Box2I]]:
    """Return the task's cells and expanded cells, once its grid is generated."""
    if task.boxes0 is None or task.boxes1 is None:
        raise RuntimeError("the task has no grid yet; call generateGrid first")
    return task.boxes0, task.boxes1


def _every_other(boxes: list[Box2I]) -> list[bool]:
    """Whether each cell is in an even column and an even row of the grid."""
    xs = sorted({b.getMinX() for b in boxes})
    ys = sorted({b.getMinY() for b in boxes})
    column, row = {x: i for i, x in enumerate(xs)}, {y: i for i, y in enumerate(ys)}
    return [column[b.getMinX()] % 2 == 0 and row[b.getMinY()] % 2 == 0 for b in boxes]


def _distance(box: Box2I, bbox: Box2I) -> float:
    a, b = box.getCenter(), bbox.getCenter()
    return math.hypot(a.x - b.x, a.y - b.y)


def _draw_width_maps(
    fig: Any, ax_before: Any, ax_after: Any, bbox: Box2I, before: np.ndarray, after: np.ndarray
) -> None:
    """Median star width in bins over the image, with each star on top, on one colour scale."""
    from matplotlib.colors import Normalize

    widths = np.concatenate([before["sigma"], after["sigma"]]) if len(before) else np.array([1.0, 2.0])
    norm = Normalize(vmin=float(widths.min()), vmax=float(widths.max()))
    # About three stars per bin on average, so that most bins have one.
    bins = int(np.clip(round(math.sqrt(max(len(before), 1) / 3.0)), 2, 8))
    for ax, rows, when in ((ax_before, before, "before"), (ax_after, after, "after")):
        values, x_edges, y_edges = width_map(rows, bbox, bins=bins)
        mesh = ax.pcolormesh(x_edges, y_edges, values, cmap="viridis", norm=norm)
        ax.scatter(
            rows["x"], rows["y"], c=rows["sigma"], cmap="viridis", norm=norm, s=18, edgecolors="k", linewidths=0.5
        )
        ax.set_aspect("equal")
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.set_ylim(y_edges[0], y_edges[-1])
        ax.set_title(f"star widths {when} (sigma, px)")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    fig.colorbar(mesh, ax=[ax_before, ax_after], shrink=0.8, label="adaptive-moments sigma (px)")


def _draw_widths_by_radius(ax: Any, bbox: Box2I, before: np.ndarray, after: np.ndarray, target: float) -> None:
    centre = bbox.getCenter()
    for rows, label, colour in ((before, "before", "tab:orange"), (after, "after", "tab:blue")):
        radius = np.hypot(rows["x"] - centre.x, rows["y"] - centre.y)
        ax.scatter(radius, rows["sigma"], s=12, color=colour, label=label)
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:.3f} px")
    ax.set_xlabel("distance from the image centre (px)")
    ax.set_ylabel("star width sigma (px)")
    ax.set_title("star widths by radius")
    ax.legend(loc="lower right")
