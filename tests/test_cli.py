"""The ``imagemapreduce`` command line: run, grid, help and one-line errors, mostly in-process."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import argparse
import logging
import os
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
from imagemapreduce.simulate import simulate_exposure

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
    status = main(["run", str(image_file), str(out), "--mapper", "imagemapreduce.mappers:AddAmountMapper",
                   "--mapper-option", "addAmount=2.5", "--reduce", "copy", "--no-progress",
                   "--scheduler", "synchronous"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.err == ""  # no progress bar, no warnings
    before, after = imr.ExposureF.readFits(str(image_file)), imr.ExposureF.readFits(str(out))
    np.testing.assert_allclose(after.image.array, before.image.array + 2.5, rtol=1e-6)
    assert "imagemapreduce.mappers:AddAmountMapper (addAmount=2.5)" in captured.out


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
    "missing class": (["--mapper", "imagemapreduce.mappers:Nope"], "has no 'Nope'"),
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
        ([str(image_file), str(tmp_path / "o.fits"), "--resume"], "zarr output only"),
        ([str(image_file), str(tmp_path / "o.zarr"), "--resume"], "cannot --resume"),
        ([str(no_psf), str(tmp_path / "o.fits"), "--scale-by-fwhm"], "has no PSF"),
        ([str(no_psf), str(tmp_path / "o.fits"), "--mapper", "psfmatch"], "needs an exposure with a PSF"),
    ]
    for paths, expected in cases:
        mapper = [] if "--mapper" in paths else ["--mapper", "identity"]
        status = main(["run", *paths, *mapper, "--no-progress", "--scheduler", "synchronous"])
        assert expected in one_line_error(capsys, status), paths


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
    for key, text in [("returnSubImages", "maybe"), ("numWorkers", "2.5"), ("cellSizeX.y", "1")]:
        with pytest.raises(CliError):
            set_config_field(config, key, text)


def test_console_script_entry_point_is_main():
    # pyproject's [project.scripts] names imagemapreduce.cli:main; the package must export it.
    import imagemapreduce.cli as cli

    assert cli.main is main and callable(main)
    assert os.path.exists(os.path.join(os.path.dirname(cli.__file__), "__init__.py"))
