"""The demo: PSF homogenisation of a simulated star field, as a function and as ``imagemapreduce demo``."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import imagemapreduce as imr
from imagemapreduce.psfmatch.demo import format_summary, run_demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZE = 256  # small enough for a test: 64 cells, a few seconds


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    return folder, run_demo(folder, size=SIZE, scheduler="threads", workers=2)


def test_the_files_are_written(demo):
    folder, summary = demo
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["demo.png", "input.fits", "output.fits", "summary.json"]
    assert json.loads((folder / "summary.json").read_text()) == summary
    png = (folder / "demo.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 50_000
    before = imr.ExposureF.readFits(str(folder / "input.fits"))
    after = imr.ExposureF.readFits(str(folder / "output.fits"))
    assert before.image.array.shape == after.image.array.shape == (SIZE, SIZE)
    assert not np.array_equal(before.image.array, after.image.array)
    # The output carries its homogenised PSF, the target Gaussian (stored as afw's sampled Gaussian
    # of the same pixel width); the input describes its varying one.
    stored = after.getPsf()
    assert stored.computeShape().getDeterminantRadius() == pytest.approx(summary["target_sigma"], rel=2e-3)
    assert before.getMetadata()["PSFFWHM1"] == pytest.approx(4.5)


def test_the_psf_is_homogenised(demo):
    _, summary = demo
    assert summary["image_size"] == [SIZE, SIZE] and summary["cells"] == 64  # centres every 32 px
    assert summary["method"] == "exact"
    # The widest PSF (FWHM 4.5 px Moffat at the corners), measured as a sigma, and a 1% margin.
    assert 2.0 < summary["target_sigma"] < 2.4
    assert summary["stars_measured"] >= 3
    assert summary["width_spread_before"] > 1.1
    assert summary["width_spread_after"] < summary["width_spread_before"]
    assert summary["width_spread_after"] < 1.03
    assert summary["max_width_error"] < 0.015
    assert abs(summary["median_width_error"]) < 0.005
    before, after = summary["ellipticity_before"], summary["ellipticity_after"]
    assert before["median"] > 0.005 and after["median"] < before["median"] / 5
    assert summary["total_flux_change"] < 1e-3  # kernels of unit sum: light is kept
    assert summary["max_flux_change"] < 0.03  # a 9 px aperture misses part of the input's Moffat wings
    timings = summary["timings_s"]
    assert set(timings) >= {"simulate", "map_reduce", "measure", "write_fits", "figure", "total"}
    assert 0 < timings["map_reduce"] < timings["total"]


def test_the_text_summary(demo):
    _, summary = demo
    text = format_summary(summary)
    for words in ("256 x 256", "64 of 64 px", "map-reduce time", "width spread", "width vs target",
                  "ellipticity |g|", "flux change", "exact matching kernels", "demo.png"):  # fmt: skip
        assert words in text


def test_bad_sizes_are_refused(tmp_path):
    for size in (64, 300.5, True):
        with pytest.raises(ValueError, match="at least 128"):
            run_demo(tmp_path, size=size)
    with pytest.raises(ValueError, match="number of stars"):
        run_demo(tmp_path, size=128, n_stars=0)
    assert not any(tmp_path.iterdir())


def console_command() -> list[str]:
    """Return the console script installed next to this Python, else ``python -m imagemapreduce``."""
    script = Path(sys.executable).with_name("imagemapreduce")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "imagemapreduce"]


def test_demo_command_in_a_real_process(tmp_path):
    folder = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    result = subprocess.run([*console_command(), "demo", "--size", str(SIZE), "--output-dir", str(folder)],
                            capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "warning" not in result.stderr.lower()
    assert "cells" in result.stderr  # the progress bar
    out = result.stdout
    assert f"simulated {SIZE} x {SIZE} star field" in out and "width spread" in out
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["width_spread_after"] < summary["width_spread_before"]
    assert f"{summary['timings_s']['map_reduce']:.2f} s" in out
    assert (folder / "demo.png").read_bytes()[:8] == PNG_SIGNATURE
    assert imr.ExposureF.readFits(str(folder / "output.fits")).getWidth() == SIZE
