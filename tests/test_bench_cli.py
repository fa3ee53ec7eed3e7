"""``imagemapreduce bench`` on a tiny image: the table, the JSON and the plot."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import json

import pytest

from imagemapreduce.cli import main
from imagemapreduce.cli._bench import speedup_rows, worker_counts


def test_worker_counts_double_up_to_the_largest():
    assert worker_counts(1) == [1]
    assert worker_counts(6) == [1, 2, 4, 6]
    assert worker_counts(8) == [1, 2, 4, 8]


def test_speedup_and_efficiency_from_the_best_times():
    runs = speedup_rows([{"workers": 1, "bestSeconds": 8.0}, {"workers": 4, "bestSeconds": 4.0}])
    assert runs[1]["speedup"] == pytest.approx(2.0)
    assert runs[1]["efficiency"] == pytest.approx(0.5)


def test_bench_writes_json_and_plot(tmp_path, capsys):
    output = tmp_path / "bench.json"
    status = main(["bench", "--size", "128", "--mapper", "gaussian", "--cell-size", "32", "--border", "auto",
                   "--workers", "2", "--repeat", "2", "--output", str(output), "--compare-map-overlap"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(output.read_text())
    assert [run["workers"] for run in result["runs"]] == [1, 2]
    assert all(len(run["seconds"]) == 2 and run["bestSeconds"] == min(run["seconds"]) for run in result["runs"])
    assert result["runs"][0]["speedup"] == pytest.approx(1.0)
    assert all(run["overheadPerCellSeconds"] >= 0 for run in result["runs"])
    assert result["mapOverlap"]["depth"] == 8
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "speedup" in captured.out


def test_bench_needs_one_image(capsys):
    assert main(["bench", "--mapper", "gaussian"]) == 2
    assert "give an INPUT image or --size" in capsys.readouterr().err


def test_run_all_smoke_leaves_the_recorded_results_alone():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "run_all.py"), "--smoke", "--collect"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = Path(proc.stdout.split("wrote ")[-1].split()[0])
    assert written.name == "summary.json"
    assert root / "benchmarks" not in written.parents, "a smoke run writes to a temporary directory"
