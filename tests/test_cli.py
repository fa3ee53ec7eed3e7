"""The ``imagemapreduce`` command line: run, grid, help and one-line errors, mostly in-process."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

import imagemapreduce as imr
from imagemapreduce.cli import main
from imagemapreduce.cli._options import CliError, set_config_field
from imagemapreduce.io.fits import write_exposure
from imagemapreduce.io.zarr_store import open_zarr_exposure
from imagemapreduce.psfmatch.simulate import simulate_exposure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """Write a 160 x 128 star field with a GaussianPsf (which FITS can hold) to FITS."""
    exposure, _ = simulate_exposure(160, 128, psf=imr.GaussianPsf(15, 15, 1.8), n_stars=30, seed=5)
    path = tmp_path_factory.mktemp("cli") / "in.fits"
    write_exposure(exposure, path)
    return path


def one_line_error(capsys, status, expected_status=2) -> str:
    """Check a one-line error on stderr and the exit status; return the message."""
    out, err = capsys.readouterr()
    assert status == expected_status, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("imagemapreduce: error: ")
    assert out == ""
    return lines[0]


# -- help ----------------------------------------------------------------------------------------


def test_help_in_a_real_process():
    command = [sys.executable, "-m", "imagemapreduce", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: imagemapreduce" in result.stdout
    assert "grid of bordered cells" in result.stdout and "examples:" in result.stdout
    for command in ("run", "grid", "demo"):
        assert f"imagemapreduce {command}" in result.stdout


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    from imagemapreduce.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


@pytest.mark.parametrize("command", ["run", "grid", "demo"])
def test_every_option_is_documented_with_examples(command, capsys):
    parser = subcommand_parsers()[command]
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings or action.dest
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"imagemapreduce {command} " in out.split("examples:")[1]
    for action in parser._actions:
        for option in action.option_strings:
            assert option in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"imagemapreduce {imr.__version__}"


# -- run -----------------------------------------------------------------------------------------


def test_run_fits_to_fits_equals_smoothing_the_whole_image(image_file, tmp_path, capsys):
    out = tmp_path / "smooth.fits"
    status = main(["run", str(image_file), str(out), "--mapper", "gaussian", "--mapper-option", "sigma=1.5",
                   "--cell-size", "48x40", "--border", "8", "--reduce", "copy", "--scheduler", "threads",
                   "--workers", "2"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "[####" in captured.err  # the progress bar is on by default
    exposure = imr.ExposureF.readFits(str(image_file))
    result = imr.ExposureF.readFits(str(out))
    whole = ndimage.gaussian_filter(exposure.image.array, 1.5, truncate=4.0, mode="nearest")
    np.testing.assert_allclose(result.image.array, whole, rtol=1e-5, atol=1e-3)
    summary = captured.out
    assert "cells in" in summary and str(out) in summary and "failures   0" in summary
    assert "GaussianSmoothMapper (sigma=1.5, truncate=4.0)" in summary
    assert "threads, 2 workers" in summary


def test_run_with_a_module_class_mapper(image_file, tmp_path, capsys):
    out = tmp_path / "added.fits"
    status = main(["run", str(image_file), str(out), "--mapper", "imagemapreduce.builtin_mappers:AddAmountMapper",
                   "--mapper-option", "addAmount=2.5", "--reduce", "copy", "--no-progress",
                   "--scheduler", "synchronous"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.err == ""  # no progress bar, no warnings
    before, after = imr.ExposureF.readFits(str(image_file)), imr.ExposureF.readFits(str(out))
    np.testing.assert_allclose(after.image.array, before.image.array + 2.5, rtol=1e-6)
    assert "imagemapreduce.builtin_mappers:AddAmountMapper (addAmount=2.5)" in captured.out


def test_run_to_zarr_then_resume(image_file, tmp_path, capsys):
    import zarr

    out = tmp_path / "out.zarr"
    args = ["run", str(image_file), str(out), "--mapper", "median", "--mapper-option", "size=3",
            "--cell-size", "32", "--grid-step", "16", "--border", "2", "--weights", "linear",
            "--region-size", "64", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "6 regions written" in capsys.readouterr().out  # 160 x 128 px in 64 px regions: 3 x 2
    first = open_zarr_exposure(out)
    expected = np.asarray(first.image.array)
    # Existing output without --overwrite or --resume: refused before any work.
    message = one_line_error(capsys, main(args))
    assert "already exists" in message and "--resume" in message
    # Pretend the run was interrupted before one region was written, and resume it.
    group = zarr.open_group(str(out), mode="r+")
    group["regions_done"][0, 1] = 0
    group["image"][0:64, 64:128] = 0.0
    group.attrs["complete"] = False
    assert main([*args, "--resume"]) == 0
    assert "1 region written" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(open_zarr_exposure(out).image.array), expected)
    # The zarr store reads back as an input too, and --overwrite replaces an output.
    back = tmp_path / "back.fits"
    assert main(["run", str(out), str(back), "--mapper", "identity", "--reduce", "copy",
                 "--no-progress"]) == 0  # fmt: skip
    np.testing.assert_array_equal(imr.ExposureF.readFits(str(back)).image.array, expected)
    assert main(["run", str(out), str(back), "--mapper", "identity", "--no-progress", "--overwrite"]) == 0


def test_existing_output_is_refused_before_any_work(image_file, tmp_path, capsys):
    out = tmp_path / "exists.fits"
    out.write_bytes(b"keep me")
    status = main(["run", str(image_file), str(out), "--mapper", "identity"])
    message = one_line_error(capsys, status)
    assert "already exists" in message and "--overwrite" in message
    assert out.read_bytes() == b"keep me"


def test_failed_cells_exit_1_or_are_masked(image_file, tmp_path, capsys):
    args = ["run", str(image_file), str(tmp_path / "failed.fits"), "--mapper", "cell_mappers:FailingMapper",
            "--scheduler", "synchronous", "--no-progress"]  # fmt: skip
    message = one_line_error(capsys, main(args), expected_status=1)
    assert "boom in this cell" in message and "--mask-failures" in message
    assert not (tmp_path / "failed.fits").exists(), "a failed run writes no output"
    assert main([*args, "--mask-failures"]) == 0
    out = capsys.readouterr().out
    assert "failures   1" in out and "boom in this cell" in out


def test_warnings_and_verbose_logs_reach_stderr(image_file, tmp_path, capsys):
    package = logging.getLogger("imagemapreduce")
    handlers, level = list(package.handlers), package.level
    # A 1 px border is thinner than the PSF-matching kernel: the mapper warns.
    args = ["run", str(image_file), str(tmp_path / "m.fits"), "--mapper", "psfmatch", "--mapper-option",
            "targetSigma=2.5", "--border", "1", "--no-progress", "--scheduler", "synchronous",
            "-v"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "imagemapreduce: warning: Cell" in err and "thinner than the matching kernel" in err
    assert "imagemapreduce: info: Processing" in err
    assert package.handlers == handlers and package.level == level


BAD_ARGUMENTS = {
    "unknown mapper": (["--mapper", "nosuch"], "unknown mapper 'nosuch'"),
    "missing module": (["--mapper", "no_such_module_xyz:Mapper"], "cannot import module"),
    "missing class": (["--mapper", "imagemapreduce.builtin_mappers:Nope"], "has no 'Nope'"),
    "not a mapper": (["--mapper", "imagemapreduce.geom:Box2I"], "not an ImageMapper"),
    "bad size": (["--mapper", "identity", "--cell-size", "big"], "argument --cell-size"),
    "negative size": (["--mapper", "identity", "--border", "-3"], "argument --border"),
    "zero size": (["--mapper", "identity", "--grid-step", "0x4"], "argument --grid-step"),
    "bad address": (["--mapper", "identity", "--scheduler", "tcp://nohost"], "bad scheduler address"),
    "bad protocol": (["--mapper", "identity", "--scheduler", "http://host:80"], "bad scheduler address"),
    "bad port": (["--mapper", "identity", "--scheduler", "tcp://host:70000"], "bad scheduler address"),
    "unknown scheduler": (["--mapper", "identity", "--scheduler", "gpu"], "unknown scheduler 'gpu'"),
    "no client to use": (["--mapper", "identity", "--scheduler", "distributed"], "unknown scheduler"),
    "bad workers": (["--mapper", "identity", "--workers", "0"], "argument --workers"),
    "option not a number": (["--mapper", "gaussian", "--mapper-option", "sigma=abc"], "expected a number"),
    "option out of range": (["--mapper", "gaussian", "--mapper-option", "sigma=-1"], "not a valid value"),
    "unknown option": (["--mapper", "gaussian", "--mapper-option", "radius=3"], "has no field 'radius'"),
    "option without value": (["--mapper", "gaussian", "--mapper-option", "sigma"], "expected KEY=VALUE"),
    "even median window": (["--mapper", "median", "--mapper-option", "size=4"], "size=4: Value 4 is not"),
    "bad choice": (["--mapper", "median", "--mapper-option", "mode=wrap"], "Allowed values"),
    "weights need average": (["--mapper", "identity", "--reduce", "copy", "--weights", "linear"], "average"),
    "stray weight function": (["--mapper", "identity", "--weight-function", "m:f"], "--weights custom"),
    "bad config key": (["--mapper", "identity", "--config", "reducer.nope=1"], "has no field 'nope'"),
    "config sub-configuration": (["--mapper", "identity", "--config", "reducer=1"], "sub-configuration"),
    "no mapper": ([], "--mapper"),
    "cells too small": (["--mapper", "identity", "--cell-size", "0.2"], "rounds to 0 pixels"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS, ids=list(BAD_ARGUMENTS))
def test_bad_arguments_give_one_line_and_status_2(case, image_file, tmp_path, capsys):
    extra, expected = BAD_ARGUMENTS[case]
    status = main(["run", str(image_file), str(tmp_path / "out.fits"), *extra])
    assert expected in one_line_error(capsys, status)
    assert not (tmp_path / "out.fits").exists()


def test_bad_files_give_one_line_and_status_2(image_file, tmp_path, capsys):
    garbage = tmp_path / "garbage.fits"
    garbage.write_text("not a FITS file\n")
    empty_store = tmp_path / "empty.zarr"
    empty_store.mkdir()
    no_psf = tmp_path / "no_psf.fits"
    write_exposure(imr.ExposureF(64, 64), no_psf)
    cases = [
        ([str(tmp_path / "missing.fits"), str(tmp_path / "o.fits")], "does not exist"),
        ([str(garbage), str(tmp_path / "o.fits")], "garbage.fits"),
        ([str(empty_store), str(tmp_path / "o.fits")], "zarr"),
        ([str(image_file), str(tmp_path / "o.txt")], "*.fits or *.zarr"),
        ([str(image_file), str(tmp_path / "no" / "o.fits")], "does not exist"),
        ([str(image_file), str(image_file), "--overwrite"], "is the INPUT"),
        ([str(image_file), str(tmp_path / "o.fits"), "--resume"], "zarr or parquet output only"),
        ([str(image_file), str(tmp_path / "o.zarr"), "--resume"], "cannot --resume"),
        ([str(no_psf), str(tmp_path / "o.fits"), "--scale-by-fwhm"], "has no PSF"),
        ([str(no_psf), str(tmp_path / "o.fits"), "--mapper", "psfmatch"], "needs an exposure with a PSF"),
    ]
    before = image_file.read_bytes()
    for paths, expected in cases:
        mapper = [] if "--mapper" in paths else ["--mapper", "identity"]
        status = main(["run", *paths, *mapper, "--no-progress", "--scheduler", "synchronous"])
        assert expected in one_line_error(capsys, status), paths
        output = paths[1]
        assert output == str(image_file) or not os.path.exists(output), f"{paths}: refused, yet wrote {output}"
    assert image_file.read_bytes() == before, "refusing to overwrite the input left it alone"


def test_traceback_flag_shows_the_exception(tmp_path):
    with pytest.raises(CliError, match="does not exist"):
        main(["run", str(tmp_path / "missing.fits"), str(tmp_path / "o.fits"), "--mapper", "identity",
              "--traceback"])  # fmt: skip


def test_unknown_command_and_no_command(capsys):
    assert "invalid choice" in one_line_error(capsys, main(["frobnicate"]))
    assert "COMMAND" in one_line_error(capsys, main([]))


# -- grid ----------------------------------------------------------------------------------------


def test_grid_prints_and_plots(image_file, tmp_path, capsys):
    plot = tmp_path / "grid.png"
    status = main(["grid", str(image_file), "--cell-size", "64", "--grid-step", "32", "--border", "8",
                   "--adjust", "none", "--plot", str(plot), "--show", "3"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert "cells          20 (5 columns x 4 rows)" in out  # centres every 32 px from 32: 5 x 4
    assert "(0, 0)-(63, 63)  ->  (0, 0)-(71, 71)" in out
    assert out.count("  ->  ") == 3
    assert plot.read_bytes()[:8] == PNG_SIGNATURE and plot.stat().st_size > 5000


def test_grid_of_a_synthetic_size_scaled_by_fwhm(tmp_path, capsys):
    status = main(["grid", "--size", "4000x3000", "--fwhm", "4", "--scale-by-fwhm", "--cell-size", "25",
                   "--border", "2.5", "--show", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert "grid over 4000 x 3000 px (synthetic image)" in out and "PSF FWHM       4.000 px" in out
    assert "cell size      100 x 100 px" in out and "expanded size  110-120 x 110-120 px" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["grid"], "one of them"),
        (["grid", "x.fits", "--size", "10x10"], "one of them"),
        (["grid", "--size", "10.5x10"], "whole pixels"),
        (["grid", "--size", "100", "--fwhm", "-1"], "argument --fwhm"),
        (["grid", "--size", "100", "--scale-by-fwhm"], "has no PSF"),
        (["grid", "--size", "100", "--plot", "grid.xyz"], "name a .png"),
        (["grid", "--size", "100", "--show", "-1"], "argument --show"),
        (["demo", "--size", "64"], "at least 128"),
        (["demo", "--size", "big"], "at least 128"),
        (["demo", "--stars", "0"], "argument --stars"),
    ],
)
def test_grid_and_demo_bad_arguments(args, expected, capsys):
    assert expected in one_line_error(capsys, main(args))


# -- config fields from text ---------------------------------------------------------------------


def test_config_fields_are_converted_to_their_types():
    config = imr.ImageMapReduceConfig()
    set_config_field(config, "returnSubImages", "yes")
    set_config_field(config, "numWorkers", "3")
    set_config_field(config, "ignoreMaskPlanes", "BAD, SAT")
    set_config_field(config, "scheduler", "None")
    set_config_field(config, "reducer.gaussianWidth", "0.2")
    set_config_field(config, "cellSizeX", "12")
    assert config.returnSubImages is True and config.numWorkers == 3 and config.scheduler is None
    assert list(config.ignoreMaskPlanes) == ["BAD", "SAT"] and config.reducer.gaussianWidth == 0.2
    assert config.cellSizeX == 12.0
    set_config_field(config, "ignoreMaskPlanes", "")
    assert list(config.ignoreMaskPlanes) == []
    set_config_field(config, "cellsPerTask", "1024")  # "auto" or an int: the digits are the int
    assert config.cellsPerTask == 1024
    set_config_field(config, "cellsPerTask", "auto")
    assert config.cellsPerTask == "auto"
    for key, text in [("returnSubImages", "maybe"), ("numWorkers", "2.5"), ("cellSizeX.y", "1"), ("cellsPerTask", "0")]:
        with pytest.raises(CliError):
            set_config_field(config, key, text)


def test_console_script_entry_point_is_main():
    # pyproject's [project.scripts] names imagemapreduce.cli:main; the package must export it.
    import imagemapreduce.cli as cli

    assert cli.main is main and callable(main)
    assert os.path.exists(os.path.join(os.path.dirname(cli.__file__), "__init__.py"))


# -- issue 14: grid step, reach, uploads, progress, start-up, convert, --hdu -------------------------


def test_explicit_grid_step_is_kept_as_map_reduce_keeps_it(capsys):
    status = main(["grid", "--size", "1024", "--cell-size", "128", "--grid-step", "64", "--show", "0"])
    out = capsys.readouterr().out
    assert status == 0
    cells = imr.map_reduce(np.zeros((1024, 1024)), lambda c: c, cell_size=128, grid_step=64, reduce="none",
                           scheduler="synchronous")  # fmt: skip
    assert f"cells          {len(cells)} " in out
    assert "grid step      64 x 64 px" in out
    main(["grid", "--size", "1024", "--cell-size", "128", "--grid-step", "64", "--adjust", "spacing", "--show", "0"])
    captured = capsys.readouterr()
    assert "--grid-step 64 was changed by --adjust spacing" in captured.err, "a re-spaced step is never silent"
    step = int(captured.out.split("grid step")[1].split()[0])
    assert step != 64


def test_short_border_warns_and_auto_border_matches_the_whole_image(image_file, tmp_path, capsys):
    short, auto = tmp_path / "short.fits", tmp_path / "auto.fits"
    args = ["--mapper", "gaussian", "--mapper-option", "sigma=2", "--no-progress", "--scheduler", "synchronous",
            "--cell-size", "32"]  # fmt: skip
    assert main(["run", str(image_file), str(short), *args, "--border", "2"]) == 0
    assert "smaller than the mapper's reach, 8 px" in capsys.readouterr().err
    assert main(["run", str(image_file), str(auto), *args, "--border", "auto"]) == 0
    assert "reach" not in capsys.readouterr().err
    image = imr.read_exposure(image_file).image.array.astype(np.float64)
    whole = ndimage.gaussian_filter(image, 2.0, truncate=4.0, mode="nearest")
    np.testing.assert_allclose(imr.read_exposure(auto).image.array, whole, rtol=1e-5, atol=1e-3)
    assert np.abs(imr.read_exposure(short).image.array - whole).max() > 1e-2


def test_builtin_mappers_declare_their_reach():
    from imagemapreduce.builtin_mappers import GaussianSmoothMapper, MedianFilterMapper

    gaussian = GaussianSmoothMapper(config=GaussianSmoothMapper.ConfigClass(sigma=1.5, truncate=3.0))
    assert gaussian.reach() == 5  # scipy.ndimage's radius, int(truncate * sigma + 0.5)
    assert MedianFilterMapper(config=MedianFilterMapper.ConfigClass(size=7)).reach() == 3
    psf_mapper = imr.psfmatch.PsfMatchMapper(config=imr.psfmatch.PsfMatchMapperConfig(kernelSize=11))
    assert psf_mapper.reach() == 5


def test_map_reduce_progress_and_auto_border():
    image = np.random.default_rng(2).normal(size=(60, 50))
    calls = []

    def smooth(cell):
        return ndimage.uniform_filter(cell, 5, mode="nearest")

    smooth.reach = 2
    out = imr.map_reduce(image, smooth, cell_size=16, border="auto", scheduler="threads",
                         progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    np.testing.assert_allclose(out, ndimage.uniform_filter(image, 5, mode="nearest"))
    cells = len(imr.map_reduce(image, smooth, cell_size=16, reduce="none", scheduler="synchronous"))
    assert calls and calls[-1] == (cells, cells)
    with pytest.raises(ValueError, match="border='auto' needs func to declare its reach"):
        imr.map_reduce(image, lambda c: c, cell_size=16, border="auto")


def test_progress_bar_without_a_terminal_prints_lines_not_redraws():
    import io

    from imagemapreduce.engine.progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(10, "cells", stream, interval=0.0)
    for done in range(1, 8):
        bar.update(done)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[-1].split("]")[1].split()[0] == "10/10", "a finished run shows every cell done"


def test_help_loads_no_heavy_module_and_is_quick():
    code = (
        "import sys, time; t = time.perf_counter(); from imagemapreduce.cli import main\n"
        "for c in ('run', 'grid', 'convert', 'bench', 'demo', 'verify'):\n"
        "    assert main([c, '--help']) == 0\n"
        "print(time.perf_counter() - t); print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dask', 'lsst', 'xarray', 'astropy', 'scipy', 'distributed', 'zarr')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, modules = out.splitlines()[-2:]
    assert modules == "[]"
    assert float(seconds) < 0.5 * 6


def test_help_defaults_match_the_code():
    from imagemapreduce.cli import _options, _parser
    from imagemapreduce.engine.scheduling import SCHEDULER_NAMES
    from imagemapreduce.psfmatch import demo

    assert _parser.DEFAULT_REGION_SIZE == imr.ImageMapReduceConfig().stitchRegionSize
    assert (_parser.DEMO_DEFAULT_SIZE, _parser.DEMO_MIN_SIZE) == (demo.DEFAULT_SIZE, demo.MIN_SIZE)
    assert set(_options.LOCAL_SCHEDULERS) == set(SCHEDULER_NAMES) - {"distributed"}


def test_lazy_package_import_keeps_every_name_and_the_accessors():
    code = (
        "import sys, imagemapreduce as imr\n"
        "assert not any(m.split('.')[0] in ('dask', 'xarray', 'lsst') for m in sys.modules), 'eager import'\n"
        "assert all(getattr(imr, n) is not None for n in imr.__all__)\n"
        "import numpy as np, xarray as xr\n"
        "assert hasattr(xr.DataArray(np.zeros((2, 2))), 'imr')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_closed_pipe_exits_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "imagemapreduce", "grid", "--size", "4096", "--cell-size", "16",
                             "--show", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert err.decode() == ""


def test_convert_fits_zarr_fits(image_file, tmp_path, capsys):
    store, back = tmp_path / "in.zarr", tmp_path / "back.fits"
    assert main(["convert", str(image_file), str(store)]) == 0
    assert main(["convert", str(store), str(back)]) == 0
    original, copied = imr.read_exposure(image_file), imr.read_exposure(back)
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(copied, plane).array, getattr(original, plane).array)
    assert copied.getPsf().computeKernelImage(copied.getPsf().getAveragePosition()).array.shape == (15, 15)
    capsys.readouterr()
    status = main(["convert", str(image_file), str(store)])
    assert "already exists; pass --overwrite" in one_line_error(capsys, status)


def test_hdu_reads_a_named_extension(tmp_path, capsys):
    from astropy.io import fits

    sci = np.arange(40 * 30, dtype=np.float32).reshape(30, 40)
    path = tmp_path / "sci.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci, name="SCI"), fits.ImageHDU(sci * 0 + 1, name="ERR")]).writeto(
        path
    )
    out = tmp_path / "out.fits"
    assert main(["run", str(path), str(out), "--hdu", "SCI", "--mapper", "identity", "--no-progress",
                 "--cell-size", "16"]) == 0  # fmt: skip
    np.testing.assert_array_equal(imr.read_exposure(out).image.array, sci)


def test_messages_speak_in_options(tmp_path, capsys):
    plain = tmp_path / "plain.fits"
    exposure = simulate_exposure(64, 64, psf=imr.GaussianPsf(15, 15, 1.8), n_stars=3, seed=1)[0]
    exposure.setPsf(None)
    write_exposure(exposure, plain)
    status = main(["run", str(plain), str(tmp_path / "o.fits"), "--mapper", "identity", "--scale-by-fwhm"])
    message = one_line_error(capsys, status)
    assert "--scale-by-fwhm" in message and "config." not in message
    assert not (tmp_path / "o.fits").exists()


WEIGHTS_MODULE = """
import numpy as np

def flat(bbox, image, variance):
    return np.ones(image.shape)
"""

MAPPER_MODULE = """
from imagemapreduce import ImageMapper, Struct

class AddSeven(ImageMapper):
    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = subExposure.clone()
        out.image.array[...] += 7
        return Struct(subExposure=out)
"""


def test_weight_function_is_looked_up_in_the_current_directory(image_file, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_flat_weights.py").write_text(WEIGHTS_MODULE)
    monkeypatch.chdir(tmp_path)
    options = ["--weights", "custom", "--weight-function", "my_flat_weights:flat", "--no-progress"]
    status = main(["run", str(image_file), "w.fits", "--mapper", "identity", *options, "--scheduler", "synchronous"])
    assert status == 0, capsys.readouterr().err
    np.testing.assert_array_equal(imr.read_exposure("w.fits").image.array, imr.read_exposure(image_file).image.array)


def test_upload_and_scheduler_file_on_a_real_cluster(image_file, tmp_path, local_cluster, capsys):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    module = folder / "uploaded_add_seven.py"
    module.write_text(MAPPER_MODULE)
    scheduler_file = tmp_path / "scheduler.json"
    # What `dask scheduler --scheduler-file` writes, reduced to what a client reads. (Client's own
    # write_scheduler_file dumps scheduler_info(), whose worker metrics sometimes have tuple keys.)
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": local_cluster.scheduler.address}))
    out = tmp_path / "out.fits"
    options = ["--upload", str(module), "--scheduler-file", str(scheduler_file), "--no-progress", "--reduce", "copy"]
    status = main(["run", str(image_file), str(out), "--mapper", "uploaded_add_seven:AddSeven", *options])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    expected = imr.read_exposure(image_file).image.array + 7
    np.testing.assert_allclose(imr.read_exposure(out).image.array, expected)
    status = main(["run", str(image_file), str(tmp_path / "x.fits"), "--mapper", "identity", "--upload", str(module)])
    assert "--upload sends files to a cluster's workers" in one_line_error(capsys, status)
    assert not (tmp_path / "x.fits").exists()


# -- catalogs ------------------------------------------------------------------------------------------


def test_detect_to_parquet_is_the_whole_image_catalog(tmp_path, capsys):
    from imagemapreduce.detect import find_sources
    from imagemapreduce.io import read_catalog
    from imagemapreduce.psf import GaussianPsf

    exposure, _ = simulate_exposure(200, 180, psf=GaussianPsf(25, 25, 1.5), n_stars=60, seed=3, sky=0.0,
                                    n_saturated=0, bad_column=False)  # fmt: skip
    source = tmp_path / "in.fits"
    write_exposure(exposure, source)
    image = imr.read_exposure(source)
    whole = find_sources(image.image.array, image.variance.array, sigma=1.5, psf=image.getPsf())
    out = tmp_path / "cat.parquet"
    args = ["run", str(source), str(out), "--mapper", "detect", "--mapper-option", "sigma=1.5", "--cell-size", "48",
            "--grid-step", "48", "--border", "auto", "--region-size", "96", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert f"({len(whole)} rows: 6 parts written, 0 reused)" in capsys.readouterr().out
    catalog = read_catalog(out)
    catalog.sort(["peak_y", "peak_x"])
    for column in whole.colnames:
        assert np.array_equal(catalog[column], whole[column], equal_nan=True), column
    assert main([*args, "--resume"]) == 0
    assert f"({len(whole)} rows: 0 parts written, 6 reused)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("output", "reduce", "message"),
    [
        ("cat.parquet", "sum", "a \\*.parquet OUTPUT is a catalog"),
        ("out.fits", "catalog", "name the OUTPUT \\*.parquet"),
    ],
)
def test_catalog_output_and_reduce_must_agree(image_file, tmp_path, capsys, output, reduce, message):
    status = main(["run", str(image_file), str(tmp_path / output), "--mapper", "detect", "--reduce", reduce])
    assert status == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / output).exists()
