"""The subcommands ``run``, ``grid`` and ``demo``: each takes the parsed arguments, returns an exit status."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..geom import Box2I
from ..grid import GridTooLargeError
from ..image import Exposure
from ..mapper import ImageMapper
from ..mapreduce import ImageMapReduceConfig, ImageMapReduceTask
from ._options import CliError, Pair, resolve_mapper, set_config_field

__all__ = ["demo_command", "grid_command", "run_command", "verify_command", "LOGGER_NAME"]

#: The logger of the tasks the command line runs (a child of the package's logger).
LOGGER_NAME = "imagemapreduce.cli"
FITS_SUFFIXES = (".fits", ".fit", ".fts")
#: Grid defaults when none are given: in pixels, and in FWHMs (LSST's defaults) with --scale-by-fwhm.
PIXEL_DEFAULTS = {"cell": 64.0, "border": 16.0}
FWHM_DEFAULTS = {"cell": 10.0, "border": 5.0}


# -- run -----------------------------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    """Map-reduce the input into the output and print a summary."""
    zarr_output = _check_output(args)
    exposure = read_input(args.input, lazy=args.lazy)
    mapper = resolve_mapper(args.mapper)
    _check_psf(mapper, exposure, args.input)
    task = ImageMapReduceTask(config=_run_config(args, mapper), log=logging.getLogger(LOGGER_NAME))
    _make_grid(task, exposure)  # here, so a bad grid is a usage error before any work
    start = time.perf_counter()
    regions = None
    with _progress_line(args.progress):
        if zarr_output:
            result = task.runToZarr(exposure, args.output, overwrite=args.overwrite, resume=args.resume)
            regions = result.regionsWritten
        else:
            result = task.run(exposure)
    if not zarr_output:
        from ..io.fits import write_exposure

        write_exposure(result.exposure, args.output, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    failures = list(getattr(result, "failures", []))
    print(_run_summary(args, task, exposure, elapsed, regions, failures))
    return 0


@contextmanager
def _progress_line(enabled: bool) -> Iterator[None]:
    """End an unfinished progress bar's line when the run stops with an error, so messages start a line."""
    try:
        yield
    except BaseException:
        if enabled:
            sys.stderr.write("\n")
        raise


def _check_output(args: argparse.Namespace) -> bool:
    """Check the output before any work; return whether it is a zarr store."""
    output = Path(args.output)
    suffix = output.suffix.lower()
    if suffix not in (*FITS_SUFFIXES, ".zarr"):
        raise CliError(f"cannot tell the output format of {args.output!r}: name it *.fits or *.zarr")
    zarr_output = suffix == ".zarr"
    if args.resume and not zarr_output:
        raise CliError("--resume continues a zarr output only (OUTPUT ending in .zarr)")
    if Path(args.input).exists() and output.exists() and output.resolve() == Path(args.input).resolve():
        raise CliError(f"OUTPUT {args.output!r} is the INPUT; write to a new file")
    if output.exists() and not (args.overwrite or args.resume):
        what = "pass --overwrite to replace it" + (", or --resume to continue its run" if zarr_output else "")
        raise CliError(f"output {args.output!r} already exists; {what}")
    if args.resume and not output.exists():
        raise CliError(f"cannot --resume: {args.output!r} does not exist; run without --resume")
    if not output.absolute().parent.is_dir():
        raise CliError(f"the folder of output {args.output!r} does not exist")
    return zarr_output


def read_input(path_text: str, lazy: bool = False) -> Exposure:
    """Read a FITS file or open a zarr store (lazily) as an exposure, with one-line errors."""
    from ..io.fits import FitsFormatError, read_exposure
    from ..io.zarr_store import open_zarr_exposure

    path = Path(path_text)
    if not path.exists():
        raise CliError(f"input {path_text!r} does not exist")
    if path.is_dir() or path.suffix.lower() == ".zarr":
        try:
            return open_zarr_exposure(path)
        except (ValueError, OSError, KeyError) as exc:
            raise CliError(f"cannot read input {path_text!r} as a zarr exposure store: {exc}") from None
        except RuntimeError as exc:  # an unfinished run's store
            raise CliError(str(exc)) from None
    try:
        return read_exposure(path, lazy=lazy)
    except FitsFormatError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot read input {path_text!r}: {exc}") from None


def _check_psf(mapper: type[ImageMapper], exposure: Exposure, path: str) -> None:
    """Refuse PSF matching of an image without a PSF before any work, rather than fail on every cell."""
    from ..homogenize import PsfMatchMapper

    if issubclass(mapper, PsfMatchMapper) and not exposure.hasPsf():
        raise CliError(f"{mapper.__name__} needs an exposure with a PSF, and {path!r} has none (FITS files "
                       "hold Gaussian and double-Gaussian PSFs)")  # fmt: skip


def _grid_config(config: ImageMapReduceConfig, args: argparse.Namespace) -> None:
    """Set the grid fields from --cell-size, --grid-step, --border, --scale-by-fwhm and --adjust."""
    defaults = FWHM_DEFAULTS if args.scale_by_fwhm else PIXEL_DEFAULTS
    cell = args.cell_size or Pair(defaults["cell"], defaults["cell"])
    step = args.grid_step or cell
    border = args.border or Pair(defaults["border"], defaults["border"])
    config.scaleByFwhm = args.scale_by_fwhm
    config.cellSizeX, config.cellSizeY = cell.x, cell.y
    config.gridStepX, config.gridStepY = step.x, step.y
    config.borderSizeX, config.borderSizeY = border.x, border.y
    config.adjustGridOption = args.adjust


def _run_config(args: argparse.Namespace, mapper: type[ImageMapper]) -> ImageMapReduceConfig:
    config = ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    for key, value in args.mapper_option:
        set_config_field(config.mapper.value, key, value, "--mapper-option")
    _grid_config(config, args)
    config.reducer.reduceOperation = args.reduce
    config.reducer.weighting = args.weights
    if args.weight_function is not None:
        if args.weights != "custom":
            raise CliError("--weight-function is used by --weights custom only")
        config.reducer.weightFunction = args.weight_function
    config.scheduler = args.scheduler
    config.numWorkers = args.workers
    config.progressBar = args.progress
    config.maskFailures = args.mask_failures
    config.cellTimeout = args.cell_timeout
    if args.region_size is not None:
        config.stitchRegionSize = args.region_size
    for key, value in args.config:
        set_config_field(config, key, value, "--config")
    if config.reducer.weighting == "custom" and not config.reducer.weightFunction:
        raise CliError("--weights custom needs --weight-function MODULE:FUNCTION, f(bbox, image, variance) -> weights")
    config.validate()
    return config


def grid_boxes(task: ImageMapReduceTask) -> tuple[list[Box2I], list[Box2I]]:
    """Return the task's cells and expanded cells (its grid must have been generated)."""
    if task.boxes0 is None or task.boxes1 is None:
        raise RuntimeError("the task has no grid yet; call generateGrid first")
    return task.boxes0, task.boxes1


def _make_grid(task: ImageMapReduceTask, exposure: Exposure) -> None:
    try:
        task.generateGrid(exposure)
    except GridTooLargeError as exc:  # reworded with the command line's options
        raise CliError(str(GridTooLargeError(exc.shape, exc.bbox, "use a larger --cell-size or --grid-step"))) from None
    if not grid_boxes(task)[0]:
        size = f"{exposure.getWidth()} x {exposure.getHeight()} px"
        raise CliError(f"the grid over the {size} image has no cells; make the cells smaller")


def _run_summary(args: argparse.Namespace, task: ImageMapReduceTask, exposure: Exposure, elapsed: float,
                 regions: int | None, failures: list[Any]) -> str:  # fmt: skip
    mapper = type(task.mapper)
    options = ", ".join(f"{k}={v!r}" for k, v in task.mapper.config.toDict().items())
    reducer = task.reducer.config
    weights = f", {reducer.weighting} weights" if reducer.reduceOperation == "average" else ""
    written = f" ({regions} region{'' if regions == 1 else 's'} written)" if regions is not None else ""
    lines = [
        f"imagemapreduce run: {len(grid_boxes(task)[0])} cells in {elapsed:.2f} s",
        f"  input      {args.input} ({exposure.getWidth()} x {exposure.getHeight()} px)",
        f"  mapper     {mapper.__module__}:{mapper.__qualname__}" + (f" ({options})" if options else ""),
        f"  grid       {describe_grid(task)[0]}",
        f"  stitching  {reducer.reduceOperation}{weights} on {task.metadata.get('scheduler', '?')}",
        f"  output     {args.output}{written}",
        f"  failures   {len(failures)}",
    ]
    lines += [f"    {failure}" for failure in failures[:5]]
    if len(failures) > 5:
        lines.append(f"    ... and {len(failures) - 5} more")
    return "\n".join(lines)


# -- grid ----------------------------------------------------------------------------------------


def grid_command(args: argparse.Namespace) -> int:
    """Print the grid for an image (or a synthetic size) and optionally plot it."""
    from ..mappers import IdentityMapper

    if (args.input is None) == (args.size is None):
        raise CliError("give an INPUT image or --size WxH (one of them)")
    if args.fwhm is not None and args.input is not None:
        raise CliError("--fwhm describes the synthetic --size image; INPUT has its own PSF")
    if args.plot is not None:
        _check_plot_file(args.plot)
    exposure = read_input(args.input, lazy=True) if args.input else _synthetic(args.size, args.fwhm)
    config = ImageMapReduceConfig()
    config.mapper.retarget(IdentityMapper)
    _grid_config(config, args)
    task = ImageMapReduceTask(config=config, log=logging.getLogger(LOGGER_NAME))
    _make_grid(task, exposure)
    print(_grid_report(args, task, exposure))
    if args.plot is not None:
        _plot_grid(task, exposure.getBBox(), args.plot, args.skip)
        print(f"plot written to {args.plot}")
    return 0


def _synthetic(size: tuple[int, int], fwhm: float | None) -> Exposure:
    """Return an exposure of this size that allocates no pixels (lazy zeros), with a Gaussian PSF if asked."""
    import dask.array as da

    from ..grid import FWHM_PER_SIGMA
    from ..image import ExposureF
    from ..psf import GaussianPsf

    width, height = size
    psf = None
    if fwhm is not None:
        sigma = fwhm / FWHM_PER_SIGMA
        side = 2 * math.ceil(4.0 * sigma) + 1
        psf = GaussianPsf(side, side, sigma)
    zeros = da.zeros((height, width), dtype=np.float32, chunks=4096)
    return ExposureF.from_arrays(zeros, zeros.astype(np.int32), zeros, psf=psf)


def _grid_report(args: argparse.Namespace, task: ImageMapReduceTask, exposure: Exposure) -> str:
    source = args.input if args.input else "synthetic image"
    config = task.config
    unit = "FWHM" if config.scaleByFwhm else "px"
    cell = f"{config.cellSizeX:g} x {config.cellSizeY:g} {unit}"
    step = f"{config.gridStepX:g} x {config.gridStepY:g} {unit}"
    border = f"{config.borderSizeX:g} x {config.borderSizeY:g} {unit}"
    lines = [
        f"grid over {exposure.getWidth()} x {exposure.getHeight()} px ({source})",
        *(f"  {line}" for line in describe_grid(task)[1:]),
        f"  asked for      cells {cell}, step {step}, border {border}, adjust {config.adjustGridOption}",
    ]
    if config.scaleByFwhm:
        from ..grid import psf_fwhm

        lines.append(f"  PSF FWHM       {psf_fwhm(exposure.getPsf()):.3f} px")
    boxes0, boxes1 = grid_boxes(task)
    shown = min(args.show, len(boxes0))
    if shown:
        lines.append(f"  first {shown} cells, (minX, minY)-(maxX, maxY) inclusive -> expanded cell:")
        for index, (box, expanded) in enumerate(zip(boxes0[:shown], boxes1[:shown], strict=True)):
            lines.append(f"    {index:4d}  {_corners(box)}  ->  {_corners(expanded)}")
    return "\n".join(lines)


def describe_grid(task: ImageMapReduceTask) -> list[str]:
    """Return a one-line description of the task's grid, then the lines of a longer one."""
    boxes0, boxes1 = grid_boxes(task)
    columns = len({b.getMinX() for b in boxes0})
    rows = len({b.getMinY() for b in boxes0})
    cells = _size_range(boxes0)
    expanded = _size_range(boxes1)
    return [
        f"{len(boxes0)} cells of {cells}, expanded to {expanded}",
        f"cells          {len(boxes0)} ({columns} columns x {rows} rows)",
        f"cell size      {cells}",
        f"expanded size  {expanded}",
    ]


def _size_range(boxes: list[Box2I]) -> str:
    def span(values: list[int]) -> str:
        low, high = min(values), max(values)
        return f"{low}" if low == high else f"{low}-{high}"

    return f"{span([b.getWidth() for b in boxes])} x {span([b.getHeight() for b in boxes])} px"


def _corners(box: Box2I) -> str:
    return f"({box.getMinX()}, {box.getMinY()})-({box.getMaxX()}, {box.getMaxY()})"


def _check_plot_file(path: str) -> None:
    """Check before any work that matplotlib can write this kind of file into an existing folder."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FigureCanvasBase.get_supported_filetypes():
        raise CliError(f"--plot {path!r}: name a .png file (matplotlib cannot write .{suffix or '<none>'})")
    if not Path(path).absolute().parent.is_dir():
        raise CliError(f"--plot {path!r}: its folder does not exist")


def _plot_grid(task: ImageMapReduceTask, bbox: Box2I, path: str, skip: int) -> None:
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, Agg rendering

    aspect = bbox.getHeight() / bbox.getWidth()
    fig = Figure(figsize=(8, max(3.0, min(8 * aspect, 12.0))), layout="constrained")
    ax = fig.subplots()
    task.plotBoxes(bbox, skip=skip, ax=ax)
    ax.set_aspect("equal")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    every = "every cell" if skip == 1 else f"one cell in {skip}"
    ax.set_title(f"{len(grid_boxes(task)[0])} cells ({every} drawn): cells dashed, expanded cells dotted")
    fig.savefig(path)


# -- demo ----------------------------------------------------------------------------------------


def demo_command(args: argparse.Namespace) -> int:
    """Run the PSF-homogenisation showcase and print its summary."""
    from ..demo import format_summary, run_demo

    folder = Path(args.output_dir)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--output-dir {args.output_dir!r} is a file, not a folder")
    with _progress_line(args.progress):
        summary = run_demo(
            folder, size=args.size, seed=args.seed, n_stars=args.stars, scheduler=args.scheduler,
            workers=args.workers, progress=args.progress, log=logging.getLogger(LOGGER_NAME),
        )  # fmt: skip
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


# -- verify --------------------------------------------------------------------------------------
def verify_command(args: argparse.Namespace) -> int:
    """Check a zarr store against its recorded checksums; 0 if sound, 1 if not."""
    from ..io.zarr_regions import verify_zarr_store

    verification = verify_zarr_store(args.store)
    print(verification)
    return 0 if verification.ok else 1


COMMANDS = {"run": run_command, "grid": grid_command, "demo": demo_command, "verify": verify_command}
