"""The argument parser of the ``imagemapreduce`` command: every option and its help text."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from ._options import (
    BUILTIN_MAPPERS,
    at_least,
    border_argument,
    hdu_argument,
    key_value,
    pair_argument,
    positive_float,
    positive_int,
    scheduler_argument,
    size_argument,
)

__all__ = ["UsageError", "build_parser"]

PROG = "imagemapreduce"

# Defaults shown in the help, written out so that --help loads neither pex_config nor the demo
# (a test checks them against ImageMapReduceConfig.stitchRegionSize and imagemapreduce.psfmatch.demo).
DEFAULT_REGION_SIZE = 512
DEMO_DEFAULT_SIZE = 1024
DEMO_MIN_SIZE = 128

DESCRIPTION = """\
Split an image into a grid of bordered cells, run the same operation (a "mapper") on every
cell in parallel with Dask, and stitch the results into a new image: LSST's ImageMapReduceTask,
standalone. Use it for operations that change across the field (PSF matching, filtering with a
varying kernel, local background subtraction) or on images too big for one whole-image call.

Images are LSST-style exposures (image, mask, variance, PSF) in FITS files, or zarr stores for
images larger than memory.
"""

MAIN_EPILOG = """\
examples:
  imagemapreduce demo
  imagemapreduce run in.fits out.fits --mapper median --mapper-option size=5
  imagemapreduce grid in.fits --cell-size 128 --border 16 --plot grid.png
  imagemapreduce convert in.fits in.zarr
  imagemapreduce bench --size 2048 --mapper gaussian --workers 4

Run 'imagemapreduce COMMAND --help' for a command's options.
"""

RUN_DESCRIPTION = """\
Map-reduce INPUT into OUTPUT: split the image into cells, run the mapper on every cell (each
cell is a Dask task), and stitch the cells' results into the output image.

INPUT is a FITS file (LSST layout, or a plain FITS image) or a zarr store (a directory, or a
name ending in .zarr). OUTPUT ending in .fits is written when the run has finished; OUTPUT
ending in .zarr is written region by region as the run goes (never holding the whole output in
memory) and an interrupted run continues with --resume. OUTPUT ending in .parquet is a catalog
(--mapper detect, or your own mapper returning Struct(catalog=table)): every source once, written
part by part and resumable the same way. Either may be a URL on object storage
(s3://bucket/image.zarr, gs://..., memory://...; an OUTPUT URL must be *.zarr or *.parquet), with credentials
from the environment (AWS_*, AWS_ENDPOINT_URL) or --storage-option KEY=VALUE.

Built-in mappers (--mapper NAME):
  gaussian    Gaussian smoothing; options sigma (px, default 2), truncate (sigmas, 4)
  median      median filter; options size (odd window side, px, default 3), mode
  background  subtract each cell's sigma-clipped median, measured on the expanded cell;
              options ignoreMaskPlanes (comma-separated), nSigma (3), maxIters (5)
  identity    return every cell unchanged (to check a grid, or time the machinery)
  psfmatch    convolve every cell to one round Gaussian PSF (the input needs a PSF) with a
              kernel solved from the cell's PSF image; options method (exact, or gaussian:
              the fast approximation), targetFwhm or targetSigma (px; default the smallest
              Gaussian every cell reaches, plus targetMargin), maskGrowBits
  detect      detect sources above threshold x the local noise and measure centroids,
              aperture and PSF fluxes, into a catalog: OUTPUT *.parquet; options threshold
              (5), sigma (detection filter, px), apertureRadius, psfFlux, badMaskPlanes
or your own: --mapper package.module:Class, an ImageMapper subclass (the current directory is
searched for the module too; on a cluster, send its file with --upload). Give the border at
least the mapper's reach (kernel radius, window half-size) so cells join seamlessly:
--border auto takes the reach a mapper declares, and a smaller border is warned about.
"""

RUN_EPILOG = """\
examples:
  # smooth with a Gaussian of sigma 3 px on 128 px cells with 16 px borders
  imagemapreduce run in.fits smooth.fits --mapper gaussian --mapper-option sigma=3 \\
      --cell-size 128 --border 16

  # local background: overlapping cells blended with a linear taper
  imagemapreduce run in.fits bkg.fits --mapper background --cell-size 256 --grid-step 128 \\
      --border 64 --weights linear --mapper-option ignoreMaskPlanes=BAD,SAT,DETECTED

  # PSF homogenisation with the grid in units of the PSF FWHM (LSST's convention)
  imagemapreduce run in.fits matched.fits --mapper psfmatch --scale-by-fwhm \\
      --cell-size 20 --grid-step 10 --border 5 --weights linear

  # your own mapper, in ./deblend.py, on a Dask cluster (its file sent to the workers)
  imagemapreduce run big.zarr out.zarr --mapper deblend:Deblend --upload deblend.py \\
      --scheduler-file scheduler.json --border auto

  # your own mapper on a Dask cluster, written to zarr; resume if interrupted
  imagemapreduce run big.zarr out.zarr --mapper mypackage.mappers:Deblend \\
      --scheduler tcp://scheduler:8786 --mask-failures
  imagemapreduce run big.zarr out.zarr --mapper mypackage.mappers:Deblend \\
      --scheduler tcp://scheduler:8786 --mask-failures --resume

exit status: 0 done, 1 the run failed (a mapper raised on a cell; see --mask-failures),
2 bad arguments or unreadable input, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

GRID_DESCRIPTION = """\
Show the grid of cells ImageMapReduceTask would use: the number of cells, their sizes and those
of the expanded cells (the cells grown by the border, which is what a mapper sees), and the
first few boxes. The image is INPUT (FITS or zarr; only its size and PSF are read) or a
synthetic one of --size WxH. With --plot, draw the cells (dashed) and expanded cells (dotted),
as ImageMapReduceTask.plotBoxes does.
"""

GRID_EPILOG = """\
examples:
  imagemapreduce grid in.fits --cell-size 128 --grid-step 64 --border 16
  imagemapreduce grid --size 4096x2048 --cell-size 512 --border 32 --plot grid.png
  imagemapreduce grid --size 2048 --fwhm 3.5 --scale-by-fwhm --cell-size 20 --border 5
  imagemapreduce grid in.fits --adjust size --plot grid.png --skip 1
"""

DEMO_DESCRIPTION = """\
The showcase: homogenise the spatially varying PSF of a simulated star field.

Simulates a seeded star field (stars, sky, noise, saturated stars, a bad column) whose
pixel-integrated Moffat PSF widens from 2.5 px FWHM at the centre to 4.5 px at the corners and
turns elliptical there (|g| 0.04), convolves every 64 px cell (step 32 px, border 12 px) with a
matching kernel solved from its PSF image to one round Gaussian (the psfmatch mapper's exact
method) on the local Dask scheduler, stitches the overlapping cells with a linear taper, and
measures isolated stars before and after (width and ellipticity). Writes into --output-dir:
input.fits, output.fits, demo.png (input, output, the residual, the grid, maps of star widths,
ellipticities) and summary.json (setup, timings, measurements), replacing those of an earlier
demo, then prints the summary.
"""

DEMO_EPILOG = """\
examples:
  imagemapreduce demo                            # 1024 x 1024 px, a few seconds
  imagemapreduce demo --size 4096 --output-dir big-demo
  imagemapreduce demo --scheduler processes --workers 4 --json
"""


class UsageError(Exception):
    """An argparse error, reported by `main` as one line (argparse would print the usage too)."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions, so that `main` reports them as one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=100)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``imagemapreduce`` command and its subcommands."""
    from .. import __version__

    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=MAIN_EPILOG, formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", title="commands", metavar="COMMAND", required=True, parser_class=_Parser
    )
    common = _common_options()
    _add_run(commands, common)
    _add_grid(commands, common)
    _add_convert(commands, common)
    _add_bench(commands, common)
    _add_demo(commands, common)
    _add_verify(commands, common)
    return parser


def _add_command(
    commands: Any, name: str, summary: str, description: str, epilog: str, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=summary, description=description, epilog=epilog, parents=[common], formatter_class=_formatter
    )


def _common_options() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    group = common.add_argument_group("messages")
    group.add_argument(
        "-v", "--verbose", action="store_true", help="log what the task does (grid, overlap statistics) on stderr"
    )
    group.add_argument(
        "--traceback", action="store_true", help="on an error, show the full Python traceback instead of one line"
    )
    return common


def _add_grid_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group(
        "grid",
        "SIZE is one number for x and y, or XxY (e.g. 64 or 128x64): pixels, or PSF FWHMs\n"
        f"with --scale-by-fwhm.{what}",
    )
    group.add_argument(
        "--cell-size",
        type=pair_argument,
        metavar="SIZE",
        help="size of each cell (default 64 px, or 10 FWHM with --scale-by-fwhm)",
    )
    group.add_argument(
        "--grid-step",
        type=pair_argument,
        metavar="SIZE",
        help="distance between neighbouring cell centres; smaller than the cell size "
        "makes cells overlap (default: the cell size, no overlap); kept as given unless "
        "--adjust says otherwise",
    )
    group.add_argument(
        "--border",
        type=border_argument,
        metavar="SIZE|auto",
        help="margin added on every side of a cell to make the expanded cell the mapper "
        "sees; 'auto': the mapper's declared reach (default 16 px, or 5 FWHM with "
        "--scale-by-fwhm)",
    )
    group.add_argument(
        "--scale-by-fwhm", action="store_true", help="read the sizes in units of the PSF's FWHM (the input needs a PSF)"
    )
    group.add_argument(
        "--adjust",
        choices=("spacing", "size", "none"),
        help="fit the grid to the image: 'spacing' re-spaces the cells to cover it exactly "
        "(may overlap), 'size' grows the cells to the grid step, 'none' leaves the grid as "
        "given (default: 'none' with --grid-step, as map_reduce does, else 'spacing'; a "
        "step that --adjust changes is warned about)",
    )


def _add_scheduler_options(parser: argparse.ArgumentParser, cluster: bool = False) -> None:
    group = parser.add_argument_group("parallelism")
    group.add_argument(
        "--scheduler",
        type=scheduler_argument,
        metavar="NAME|ADDRESS",
        help="Dask scheduler: synchronous, threads, processes, or a cluster's address "
        "tcp://HOST:PORT (default: Dask's default, threads)",
    )
    group.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="threads or processes of a local scheduler (default: one per core)",
    )
    if cluster:
        group.add_argument(
            "--scheduler-file",
            metavar="FILE",
            help="connect to the cluster whose scheduler wrote this file "
            "(dask scheduler --scheduler-file FILE), instead of --scheduler",
        )
        group.add_argument(
            "--upload",
            action="append",
            default=[],
            metavar="FILE.py",
            help="send this file to every worker of the cluster (Client.upload_file), "
            "e.g. the module of your --mapper or --weight-function (repeatable)",
        )
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", help="do not show the progress bar on stderr"
    )


def _add_storage_option(group: Any) -> None:
    group.add_argument(
        "--storage-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an fsspec option for INPUT/OUTPUT URLs (s3://, gs://...), e.g. endpoint_url=URL, "
        "anon=true or client_kwargs.region_name=eu-west-1; values are JSON where they parse "
        "(repeatable; default: credentials from the environment, AWS_* for S3)",
    )


def _add_run(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _add_command(
        commands, "run", "map-reduce an image file with a mapper", RUN_DESCRIPTION, RUN_EPILOG, common
    )
    parser.add_argument("input", metavar="INPUT", help="FITS file, or zarr store (a directory or *.zarr)")
    parser.add_argument("output", metavar="OUTPUT", help="*.fits file or *.zarr store to write, or *.parquet catalog")
    mapping = parser.add_argument_group("mapper")
    mapping.add_argument(
        "--mapper",
        required=True,
        metavar="NAME|MODULE:CLASS",
        help=f"the operation on every cell: {', '.join(BUILTIN_MAPPERS)}, or package.module:Class (required)",
    )
    mapping.add_argument(
        "--mapper-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a field of the mapper's config, converted to the field's type; "
        "lists are comma-separated, None unsets an optional field (repeatable)",
    )
    _add_grid_options(parser, " Give the border at least the mapper's reach.")
    reducing = parser.add_argument_group("stitching")
    reducing.add_argument(
        "--reduce",
        choices=("copy", "sum", "average", "catalog"),
        default=None,
        help="how overlapping cells combine: copy (later cells win), sum, or average "
        "(default for an image OUTPUT); catalog: each cell's table, every row kept by the "
        "one cell that owns its position (default, and the only choice, for *.parquet)",
    )
    reducing.add_argument(
        "--weights",
        default="uniform",
        choices=("uniform", "linear", "cosine", "gaussian", "inverseVariance", "custom"),
        help="weights of an average: uniform (LSST's), a taper falling to the cell edges "
        "(linear, cosine, gaussian; blends overlapping cells seamlessly), inverseVariance, "
        "or custom with --weight-function (default: %(default)s)",
    )
    reducing.add_argument(
        "--weight-function",
        metavar="MODULE:FUNCTION",
        help="for --weights custom: f(bbox, image, variance) -> weights (the current "
        "directory is searched for the module, as for --mapper)",
    )
    _add_scheduler_options(parser, cluster=True)
    running = parser.add_argument_group("running")
    running.add_argument(
        "--region-size",
        type=positive_int,
        metavar="N",
        help="side in pixels of the output regions stitched as separate tasks; any value "
        f"gives the same result (default {DEFAULT_REGION_SIZE})",
    )
    running.add_argument(
        "--mask-failures",
        action="store_true",
        help="if the mapper raises on a cell, finish anyway: that cell's pixels become NaN "
        "flagged INVALID_MAPREDUCE, and the summary lists the failed cells",
    )
    running.add_argument(
        "--cell-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="fail a cell whose mapper runs longer than this (retried with --config "
        "numRetries=N, masked with --mask-failures); the late call is abandoned, not "
        "stopped, and keeps a core busy until it returns (default: no limit)",
    )
    running.add_argument(
        "--lazy", action="store_true", help="read a FITS input lazily, block by block (zarr is always lazy)"
    )
    _add_hdu_option(running)
    _add_storage_option(running)
    running.add_argument(
        "--config",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any ImageMapReduceConfig field, after the options above, e.g. "
        "numRetries=2 or reducer.gaussianWidth=0.2 (repeatable)",
    )
    output = running.add_mutually_exclusive_group()
    output.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    output.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run into an existing *.zarr or *.parquet OUTPUT (same "
        "input, mapper and options), computing only the missing regions or parts",
    )


def _add_grid(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _add_command(
        commands, "grid", "show (and plot) the grid of cells for an image", GRID_DESCRIPTION, GRID_EPILOG, common
    )
    source = parser.add_argument_group("image (one of)")
    source.add_argument("input", metavar="INPUT", nargs="?", help="FITS file or zarr store")
    source.add_argument(
        "--size",
        type=size_argument,
        metavar="WxH",
        help="a synthetic image of this size instead, e.g. 4096x2048 or 1024",
    )
    source.add_argument(
        "--fwhm",
        type=positive_float,
        metavar="PX",
        help="PSF FWHM in pixels of the synthetic image, for --scale-by-fwhm",
    )
    _add_hdu_option(source)
    _add_grid_options(parser, "")
    shown = parser.add_argument_group("output")
    shown.add_argument(
        "--show", type=at_least(0), default=5, metavar="N", help="print the first N cells' boxes (default: %(default)s)"
    )
    shown.add_argument("--plot", metavar="FILE", help="draw the grid into this PNG file (replaced if it exists)")
    shown.add_argument(
        "--skip",
        type=positive_int,
        default=3,
        metavar="K",
        help="plot every K-th cell, as plotBoxes does (default: %(default)s)",
    )


VERIFY_DESCRIPTION = """\
Check a zarr store against the checksums it recorded when it was written: every region of a
run's output (or every plane of a store written whole) is read back and hashed. Exit status 0
when the store is complete and sound, 1 when a region is missing or changed (resume the run
with --resume to recompute those), 2 when it cannot be read. Nothing is changed.
"""


def _add_verify(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _add_command(
        commands,
        "verify",
        "check a zarr store against its recorded checksums",
        VERIFY_DESCRIPTION,
        "example:\n  imagemapreduce verify out.zarr",
        common,
    )
    parser.add_argument("store", metavar="STORE", help="the zarr store (a directory, or a URL such as s3://b/x.zarr)")
    _add_storage_option(parser)


def _add_demo(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _add_command(
        commands, "demo", "the showcase: homogenise a varying PSF", DEMO_DESCRIPTION, DEMO_EPILOG, common
    )
    group = parser.add_argument_group("demo")
    group.add_argument(
        "--size",
        type=at_least(DEMO_MIN_SIZE),
        default=DEMO_DEFAULT_SIZE,
        metavar="N",
        help=f"side of the square image in pixels, at least {DEMO_MIN_SIZE} (default: %(default)s)",
    )
    group.add_argument("--seed", type=int, default=3, help="simulation seed (default: %(default)s)")
    group.add_argument(
        "--stars",
        type=positive_int,
        metavar="N",
        help="stars to simulate (default: 600 per 1024 x 1024 px, at least 10)",
    )
    group.add_argument(
        "--output-dir", default="imr-demo-output", metavar="DIR", help="where to write the files (default: %(default)s)"
    )
    group.add_argument("--json", action="store_true", help="print the JSON summary instead of the text one")
    _add_scheduler_options(parser)


def _add_hdu_option(group: Any) -> None:
    group.add_argument(
        "--hdu",
        type=hdu_argument,
        metavar="N|NAME",
        help="read the image from this FITS extension (a number, 0 the primary, or a name "
        "such as SCI), for FITS files not in LSST's layout (default: LSST's layout, or the "
        "first image)",
    )


CONVERT_DESCRIPTION = """\
Copy an exposure between formats: a FITS file (LSST layout, or a plain image with --hdu) to a
zarr store, or a zarr store to a FITS file. Either side may be a URL on object storage
(s3://bucket/image.zarr; a FITS OUTPUT must be local), with --storage-option KEY=VALUE. The
image, mask, variance, PSF and metadata are copied; a FITS input is read block by block into
the store, so the image need not fit in memory.
"""

CONVERT_EPILOG = """\
examples:
  imagemapreduce convert calexp.fits calexp.zarr
  imagemapreduce convert sci.fits sci.zarr --hdu SCI --chunks 2048
  imagemapreduce convert big.fits s3://bucket/big.zarr --storage-option endpoint_url=http://localhost:9000
  imagemapreduce convert out.zarr out.fits
"""


def _add_convert(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _add_command(
        commands,
        "convert",
        "copy an exposure between FITS and zarr (and object storage)",
        CONVERT_DESCRIPTION,
        CONVERT_EPILOG,
        common,
    )
    parser.add_argument("input", metavar="INPUT", help="FITS file or zarr store (a path or a URL)")
    parser.add_argument("output", metavar="OUTPUT", help="*.zarr store (a path or a URL) or *.fits file to write")
    group = parser.add_argument_group("conversion")
    _add_hdu_option(group)
    group.add_argument(
        "--chunks",
        type=positive_int,
        default=1024,
        metavar="N",
        help="side of the zarr chunks in pixels (default: %(default)s)",
    )
    group.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    _add_storage_option(group)


BENCH_DESCRIPTION = """\
Measure the parallel speedup of a run on this machine or on a cluster: the same job (INPUT, or a
synthetic image of --size, with --mapper and the grid options) runs with 1, 2, 4 ... N workers,
each --repeat times, and the best time of each is reported with the speedup (time on 1 worker /
time on n), the efficiency (speedup / n), the machinery's overhead per cell (wall time x workers,
less the cells' own time, per cell) and the bytes moved between client and workers.

Workers are threads of the threads scheduler, worker processes of a local Dask cluster started
for each count (--scheduler processes), or, with --scheduler tcp://HOST:PORT, the first n workers
of a running cluster (the others are left out of the run). Writes --output (JSON) and a PNG plot
of speedup against workers with the ideal line; --compare-map-overlap times dask.array's
map_overlap on the same job (a Gaussian filter of the mapper's sigma, or the median filter).
"""

BENCH_EPILOG = """\
examples:
  imagemapreduce bench --size 4096 --mapper gaussian --mapper-option sigma=3 --workers 8
  imagemapreduce bench in.fits --mapper median --scheduler processes --workers 4 --repeat 3
  imagemapreduce bench --size 8192 --mapper gaussian --scheduler tcp://scheduler:8786 --compare-map-overlap
"""


def _add_bench(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _add_command(
        commands, "bench", "measure parallel speedup over worker counts", BENCH_DESCRIPTION, BENCH_EPILOG, common
    )
    source = parser.add_argument_group("image (one of)")
    source.add_argument("input", metavar="INPUT", nargs="?", help="FITS file or zarr store")
    source.add_argument(
        "--size",
        type=size_argument,
        metavar="WxH",
        help="a simulated image of this size instead, e.g. 4096 or 4096x2048",
    )
    _add_hdu_option(source)
    mapping = parser.add_argument_group("mapper")
    mapping.add_argument(
        "--mapper",
        default="gaussian",
        metavar="NAME|MODULE:CLASS",
        help=f"the operation on every cell: {', '.join(BUILTIN_MAPPERS)}, or "
        "package.module:Class (default: %(default)s)",
    )
    mapping.add_argument(
        "--mapper-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a field of the mapper's config (repeatable)",
    )
    _add_grid_options(parser, "")
    group = parser.add_argument_group("workers")
    group.add_argument(
        "--scheduler",
        type=scheduler_argument,
        default="threads",
        metavar="NAME|ADDRESS",
        help="threads, processes (a local Dask cluster per worker count), or a cluster's "
        "address tcp://HOST:PORT (default: %(default)s)",
    )
    group.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="the largest worker count; 1, 2, 4 ... up to it are run (default: the cores, or the cluster's workers)",
    )
    group.add_argument(
        "--repeat",
        type=positive_int,
        default=3,
        metavar="K",
        help="runs per worker count; the fastest is kept (default: %(default)s)",
    )
    group.add_argument(
        "--compare-map-overlap",
        action="store_true",
        help="also time dask.array.map_overlap on the same job (gaussian and median mappers)",
    )
    shown = parser.add_argument_group("output")
    shown.add_argument(
        "--output",
        default="imr-bench.json",
        metavar="FILE.json",
        help="where to write the results (default: %(default)s)",
    )
    shown.add_argument("--plot", metavar="FILE.png", help="the speedup plot (default: the --output name with .png)")
    shown.add_argument("--json", action="store_true", help="print the JSON results instead of the table")
