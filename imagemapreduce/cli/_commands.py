"""The subcommands ``run``, ``grid``, ``convert``, ``verify`` and ``demo``.

Each takes the parsed arguments and returns an exit status (``bench`` lives in `._bench`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ..geom import Box2I
from ..grid import GridTooLargeError
from ..image import Exposure
from ..mapper import ImageMapper
from ..mapreduce import ImageMapReduceConfig, ImageMapReduceTask
from ._options import CliError, Pair, import_object, resolve_mapper, set_config_field
from ._storage import check_url_output, is_url, open_zarr_input, options_for, read_url_input, storage_options

__all__ = ["convert_command", "demo_command", "grid_command", "run_command", "verify_command", "LOGGER_NAME"]

#: The logger of the tasks the command line runs (a child of the package's logger).
LOGGER_NAME = "imagemapreduce.cli"
FITS_SUFFIXES = (".fits", ".fit", ".fts")
#: Grid defaults when none are given: in pixels, and in FWHMs (LSST's defaults) with --scale-by-fwhm.
PIXEL_DEFAULTS = {"cell": 64.0, "border": 16.0}
FWHM_DEFAULTS = {"cell": 10.0, "border": 5.0}


# -- run -----------------------------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    """Map-reduce the input into the output and print a summary."""
    options = storage_options(args.storage_option)
    kind = check_url_output(args, options) if is_url(args.output) else _check_output(args)
    _check_reduce(args, kind)
    uploads = check_uploads(args.upload)
    exposure = open_input(args.input, options, args.lazy, args.hdu)
    mapper = resolve_mapper(args.mapper)
    _check_psf(mapper, exposure, args.input)
    with ExitStack() as stack:
        client = connect_client(args, uploads, stack)
        config = _run_config(args, mapper, exposure)
        task = ImageMapReduceTask(config=config, log=logging.getLogger(LOGGER_NAME), scheduler=client)
        _make_grid(task, exposure)  # here, so a bad grid is a usage error before any work
        warn_short_border(task, exposure)
        warn_respaced_step(args, task, exposure)
        return _run_task(args, task, exposure, kind, options)


def _check_reduce(args: argparse.Namespace, kind: str) -> None:
    """A *.parquet OUTPUT is a catalog (--reduce catalog, the default there); a catalog needs one."""
    if kind == "parquet":
        if args.reduce not in (None, "catalog"):
            raise CliError(
                f"a *.parquet OUTPUT is a catalog: --reduce {args.reduce} makes an image, name it *.fits or *.zarr"
            )
        args.reduce = "catalog"
    elif args.reduce == "catalog":
        raise CliError("--reduce catalog writes a table: name the OUTPUT *.parquet")
    elif args.reduce is None:
        args.reduce = "average"


def _run_task(
    args: argparse.Namespace, task: ImageMapReduceTask, exposure: Exposure, kind: str, options: dict[str, Any]
) -> int:
    start = time.perf_counter()
    regions = None
    if kind == "parquet":
        result = task.runToParquet(
            exposure,
            args.output,
            overwrite=args.overwrite,
            resume=args.resume,
            storage_options=options_for(args.output, options),
        )
        regions = f"{result.rows} rows: {result.partsWritten} parts written, {result.partsReused} reused"
    elif kind == "zarr":
        result = task.runToZarr(
            exposure,
            args.output,
            overwrite=args.overwrite,
            resume=args.resume,
            storage_options=options_for(args.output, options),
        )
        regions = f"{result.regionsWritten} region{'' if result.regionsWritten == 1 else 's'} written"
    else:
        result = task.run(exposure)
        from ..io.fits import write_exposure

        write_exposure(result.exposure, args.output, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    failures = list(getattr(result, "failures", []))
    print(_run_summary(args, task, exposure, elapsed, regions, failures))
    return 0


def open_input(text: str, options: dict[str, Any], lazy: bool, hdu: int | str | None = None) -> Exposure:
    """Read INPUT, a local path or a URL, with one-line errors."""
    if is_url(text):
        return read_url_input(text, options, lazy, hdu)
    return read_input(text, lazy, hdu)


def check_uploads(paths: list[str]) -> list[Path]:
    """Check the ``--upload`` files, and let this process import them too (their folder joins sys.path)."""
    files = []
    for text in paths:
        path = Path(text)
        if not path.is_file():
            raise CliError(f"--upload {text!r}: no such file")
        if path.suffix not in (".py", ".egg", ".zip", ".whl"):
            raise CliError(f"--upload {text!r}: give a .py file (or .egg, .zip, .whl), as Client.upload_file takes")
        folder = str(path.absolute().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        files.append(path)
    return files


def connect_client(args: argparse.Namespace, uploads: list[Path], stack: ExitStack) -> Any:
    """Connect a Dask client for ``--scheduler-file`` (or an address with ``--upload``); None otherwise.

    Each ``--upload`` file goes to every worker with ``Client.upload_file``, so that a mapper or
    weight function defined in it imports there.
    """
    scheduler_file = getattr(args, "scheduler_file", None)
    address = args.scheduler if args.scheduler and "://" in args.scheduler else None
    if scheduler_file is not None and args.scheduler is not None:
        raise CliError("give --scheduler or --scheduler-file, not both")
    if uploads and scheduler_file is None and address is None:
        raise CliError(
            "--upload sends files to a cluster's workers: give --scheduler tcp://HOST:PORT or "
            "--scheduler-file FILE (local schedulers import the file from its folder without it)"
        )
    if scheduler_file is None and not uploads:
        return None
    from distributed import Client

    if scheduler_file is not None and not Path(scheduler_file).is_file():
        raise CliError(f"--scheduler-file {scheduler_file!r}: no such file (dask scheduler --scheduler-file writes it)")
    try:
        client = Client(scheduler_file=scheduler_file, timeout=10) if scheduler_file else Client(address, timeout=10)
    except (OSError, TimeoutError) as exc:
        where = f"--scheduler-file {scheduler_file}" if scheduler_file else f"--scheduler {address}"
        raise CliError(f"cannot connect to the cluster of {where}: {exc}") from None
    stack.callback(client.close)
    for path in uploads:
        client.upload_file(str(path))
    return client


def mapper_reach(task: ImageMapReduceTask, exposure: Exposure) -> int | None:
    """The pixels the task's mapper declares each output pixel sees (``reach``), or None if it does not say."""
    reach = getattr(task.mapper, "reach", None)
    return None if reach is None else reach(exposure)


def border_pixels(task: ImageMapReduceTask, exposure: Exposure) -> float:
    """The smaller border side in pixels (FWHMs converted with --scale-by-fwhm)."""
    config = task.config
    border = min(config.borderSizeX, config.borderSizeY)
    if config.scaleByFwhm:
        from ..grid import psf_fwhm

        border *= psf_fwhm(exposure.getPsf())
    return border


def warn_short_border(task: ImageMapReduceTask, exposure: Exposure) -> None:
    """Warn when the border is narrower than the mapper's reach: cells would then not join seamlessly."""
    reach = mapper_reach(task, exposure)
    border = border_pixels(task, exposure)
    if reach is not None and border + 1e-9 < reach:
        logging.getLogger(LOGGER_NAME).warning(
            "--border %g px is smaller than the mapper's reach, %d px: the cells' edges will differ from "
            "filtering the whole image; use --border %d (or --border auto)",
            border,
            reach,
            reach,
        )


def _auto_border(mapper: type[ImageMapper], config: ImageMapReduceConfig, exposure: Exposure) -> float:
    """The border ``--border auto`` stands for: the mapper's reach, in the grid's unit."""
    instance = mapper(config=config.mapper.value)
    reach = getattr(instance, "reach", None)
    pixels = None if reach is None else reach(exposure)
    if pixels is None:
        raise CliError(
            f"--border auto: {mapper.__name__} does not declare its reach (a reach() method); give --border N"
        )
    if config.scaleByFwhm:
        from ..grid import psf_fwhm

        return max(pixels / psf_fwhm(exposure.getPsf()), 1e-6)
    return float(pixels)


def _check_output(args: argparse.Namespace) -> str:
    """Check the output before any work; return its kind: ``"fits"``, ``"zarr"`` or ``"parquet"``."""
    output = Path(args.output)
    suffix = output.suffix.lower()
    if suffix not in (*FITS_SUFFIXES, ".zarr", ".parquet"):
        raise CliError(
            f"cannot tell the output format of {args.output!r}: name it *.fits or *.zarr (an image) or "
            "*.parquet (a catalog)"
        )
    kind = {".zarr": "zarr", ".parquet": "parquet"}.get(suffix, "fits")
    zarr_output = kind != "fits"  # both resume
    if args.resume and not zarr_output:
        raise CliError("--resume continues a zarr or parquet output only (OUTPUT ending in .zarr or .parquet)")
    if Path(args.input).exists() and output.exists() and output.resolve() == Path(args.input).resolve():
        raise CliError(f"OUTPUT {args.output!r} is the INPUT; write to a new file")
    if output.exists() and not (args.overwrite or args.resume):
        what = "pass --overwrite to replace it" + (", or --resume to continue its run" if zarr_output else "")
        raise CliError(f"output {args.output!r} already exists; {what}")
    if args.resume and not output.exists():
        raise CliError(f"cannot --resume: {args.output!r} does not exist; run without --resume")
    if not output.absolute().parent.is_dir():
        raise CliError(f"the folder of output {args.output!r} does not exist")
    return kind


def read_input(path_text: str, lazy: bool = False, hdu: int | str | None = None) -> Exposure:
    """Read a FITS file or open a zarr store (lazily) as an exposure, with one-line errors."""
    from ..io.fits import FitsFormatError, read_exposure

    path = Path(path_text)
    if not path.exists():
        raise CliError(f"input {path_text!r} does not exist")
    if path.is_dir() or path.suffix.lower() == ".zarr":
        return open_zarr_input(path, path_text, hdu)
    try:
        return read_exposure(path, lazy=lazy, hdu=hdu)
    except FitsFormatError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot read input {path_text!r}: {exc}") from None


def _check_psf(mapper: type[ImageMapper], exposure: Exposure, path: str) -> None:
    """Refuse PSF matching of an image without a PSF before any work, rather than fail on every cell."""
    from ..psfmatch.homogenize import PsfMatchMapper

    if issubclass(mapper, PsfMatchMapper) and not exposure.hasPsf():
        raise CliError(
            f"{mapper.__name__} needs an exposure with a PSF, and {path!r} has none (FITS files "
            "hold Gaussian and double-Gaussian PSFs)"
        )


def _grid_config(config: ImageMapReduceConfig, args: argparse.Namespace) -> None:
    """Set the grid fields from --cell-size, --grid-step, --border, --scale-by-fwhm and --adjust."""
    defaults = FWHM_DEFAULTS if args.scale_by_fwhm else PIXEL_DEFAULTS
    cell = args.cell_size or Pair(defaults["cell"], defaults["cell"])
    step = args.grid_step or cell
    border = args.border if isinstance(args.border, Pair) else Pair(defaults["border"], defaults["border"])
    config.scaleByFwhm = args.scale_by_fwhm
    config.cellSizeX, config.cellSizeY = cell.x, cell.y
    config.gridStepX, config.gridStepY = step.x, step.y
    config.borderSizeX, config.borderSizeY = border.x, border.y
    config.adjustGridOption = adjust_option(args)


def adjust_option(args: argparse.Namespace) -> str:
    """--adjust, defaulting as map_reduce does.

    That is 'none' when --grid-step is given (the step is kept), and 'spacing' (cells re-spaced
    to cover the image exactly) when it is not.
    """
    if args.adjust is not None:
        return args.adjust
    return "none" if args.grid_step is not None else "spacing"


def used_step(task: ImageMapReduceTask) -> tuple[list[int], list[int]]:
    """The distances between neighbouring cells' starts that the grid actually has, in x and in y."""
    boxes0 = grid_boxes(task)[0]
    xs = sorted({b.getMinX() for b in boxes0})
    ys = sorted({b.getMinY() for b in boxes0})
    return [b - a for a, b in zip(xs, xs[1:])], [b - a for a, b in zip(ys, ys[1:])]


def warn_respaced_step(args: argparse.Namespace, task: ImageMapReduceTask, exposure: Exposure) -> None:
    """Warn when --adjust re-spaced an explicit --grid-step, rather than drop it silently."""
    if args.grid_step is None or task.config.adjustGridOption == "none":
        return
    scale = 1.0
    if task.config.scaleByFwhm:
        from ..grid import psf_fwhm

        scale = psf_fwhm(exposure.getPsf())
    asked = (round(args.grid_step.x * scale), round(args.grid_step.y * scale))
    got = [sorted(set(steps)) for steps in used_step(task)]
    if any(steps and steps != [want] for steps, want in zip(got, asked)):
        logging.getLogger(LOGGER_NAME).warning(
            "--grid-step %s was changed by --adjust %s to a step of %s x %s px; use --adjust none to keep it",
            args.grid_step,
            task.config.adjustGridOption,
            _span(got[0]),
            _span(got[1]),
        )


def _span(values: list[int]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def _run_config(args: argparse.Namespace, mapper: type[ImageMapper], exposure: Exposure) -> ImageMapReduceConfig:
    config = ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    for key, value in args.mapper_option:
        set_config_field(config.mapper.value, key, value, "--mapper-option")
    _grid_config(config, args)
    if args.border == "auto":
        config.borderSizeX = config.borderSizeY = _auto_border(mapper, config, exposure)
    config.reducer.reduceOperation = args.reduce
    config.reducer.weighting = args.weights
    if args.weight_function is not None:
        if args.weights != "custom":
            raise CliError("--weight-function is used by --weights custom only")
        if not callable(import_object(args.weight_function, "--weight-function", "FUNCTION")):
            raise CliError(f"--weight-function {args.weight_function!r} is not a function")
        config.reducer.weightFunction = args.weight_function
    config.scheduler = None if getattr(args, "scheduler_file", None) else args.scheduler
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


def _run_summary(
    args: argparse.Namespace,
    task: ImageMapReduceTask,
    exposure: Exposure,
    elapsed: float,
    regions: str | None,
    failures: list[Any],
) -> str:
    mapper = type(task.mapper)
    options = ", ".join(f"{k}={v!r}" for k, v in task.mapper.config.toDict().items())
    reducer = task.reducer.config
    weights = f", {reducer.weighting} weights" if reducer.reduceOperation == "average" else ""
    written = f" ({regions})" if regions is not None else ""
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
    from ..builtin_mappers import IdentityMapper

    if (args.input is None) == (args.size is None):
        raise CliError("give an INPUT image or --size WxH (one of them)")
    if args.fwhm is not None and args.input is not None:
        raise CliError("--fwhm describes the synthetic --size image; INPUT has its own PSF")
    if args.plot is not None:
        _check_plot_file(args.plot)
    exposure = read_input(args.input, lazy=True, hdu=args.hdu) if args.input else _synthetic(args.size, args.fwhm)
    config = ImageMapReduceConfig()
    config.mapper.retarget(IdentityMapper)
    _grid_config(config, args)
    task = ImageMapReduceTask(config=config, log=logging.getLogger(LOGGER_NAME))
    _make_grid(task, exposure)
    warn_respaced_step(args, task, exposure)
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
    step_x, step_y = used_step(task)
    step = f"{_span(step_x)} x {_span(step_y)} px"
    return [
        f"{len(boxes0)} cells of {cells}, step {step}, expanded to {expanded}",
        f"cells          {len(boxes0)} ({columns} columns x {rows} rows)",
        f"cell size      {cells}",
        f"grid step      {step} (between neighbouring cells' starts)",
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
    from ..psfmatch.demo import format_summary, run_demo

    folder = Path(args.output_dir)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--output-dir {args.output_dir!r} is a file, not a folder")
    summary = run_demo(
        folder,
        size=args.size,
        seed=args.seed,
        n_stars=args.stars,
        scheduler=args.scheduler,
        workers=args.workers,
        progress=args.progress,
        log=logging.getLogger(LOGGER_NAME),
    )
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


# -- verify --------------------------------------------------------------------------------------
def verify_command(args: argparse.Namespace) -> int:
    """Check a zarr store against its recorded checksums; 0 if sound, 1 if not."""
    from ..io.zarr_regions import verify_zarr_store

    options = options_for(args.store, storage_options(args.storage_option))
    verification = verify_zarr_store(args.store, storage_options=options)
    print(verification)
    return 0 if verification.ok else 1


# -- convert -------------------------------------------------------------------------------------
def convert_command(args: argparse.Namespace) -> int:
    """Copy an exposure between FITS and zarr (local or at a URL), planes, PSF and metadata."""
    options = storage_options(args.storage_option)
    out = args.output.rstrip("/").lower()
    to_zarr = out.endswith(".zarr")
    if not to_zarr and not out.endswith(FITS_SUFFIXES):
        raise CliError(f"cannot tell the output format of {args.output!r}: name it *.fits or *.zarr")
    if is_url(args.output) and not to_zarr:
        raise CliError(f"an OUTPUT at a URL must be a zarr store (name it *.zarr), got {args.output!r}")
    if not is_url(args.output) and Path(args.output).exists() and not args.overwrite:
        raise CliError(f"output {args.output!r} already exists; pass --overwrite to replace it")
    exposure = open_input(
        args.input,
        options,
        lazy=to_zarr and not is_url(args.input) and args.input.lower().endswith(FITS_SUFFIXES),
        hdu=args.hdu,
    )
    start = time.perf_counter()
    if to_zarr:
        from ..io.zarr_store import write_zarr_exposure

        write_zarr_exposure(
            exposure,
            args.output,
            storage_options=options_for(args.output, options),
            chunks=args.chunks,
            overwrite=args.overwrite,
        )
    else:
        from ..io.fits import write_exposure

        write_exposure(exposure, args.output, overwrite=args.overwrite)
    size = f"{exposure.getWidth()} x {exposure.getHeight()} px"
    print(f"imagemapreduce convert: {args.input} -> {args.output} ({size}) in {time.perf_counter() - start:.2f} s")
    return 0


def bench_command(args: argparse.Namespace) -> int:
    """Measure the parallel speedup of a run over worker counts (see `._bench`)."""
    from ._bench import bench_command as run

    return run(args)


COMMANDS = {
    "run": run_command,
    "grid": grid_command,
    "convert": convert_command,
    "bench": bench_command,
    "demo": demo_command,
    "verify": verify_command,
}
