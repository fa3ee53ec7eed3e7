"""The benchmark scripts run end to end at smoke size and write well-formed results.

This times nothing and judges no target: it runs ``benchmarks/run_all.py --smoke`` in a
subprocess, writing into a temporary directory (so the real results in ``benchmarks/results``
are left alone), and checks the exit status and the JSON files. That takes a couple of minutes,
so it is marked slow (``pytest --runslow``); the default run only imports every script, which
catches what breaks them most often (a renamed or removed name they import).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_ALL = ROOT / "benchmarks" / "run_all.py"

BENCHMARKS = (
    "map_overlap",
    "pool_overhead",
    "scaling",
    "overhead",
    "task_vs_array",
    "memory",
    "stitch",
    "larger_than_memory",
    "cluster",
    "processes",
    "scale",
    "homogenize",
)
#: Keys every result has, and the extra ones each kind has.
COMMON_KEYS = {"benchmark", "mode", "machine", "params", "targets", "ratios", "notes", "elapsed_s"}
EXTRA_KEYS = {
    "map_overlap": {"timings", "pixels_equal"},
    "pool_overhead": {"timings", "pixels_equal"},
    "scaling": {"timings", "pixels_equal"},
    "overhead": {"timings", "local_cluster"},
    "task_vs_array": {"timings", "pixels_equal"},
    "memory": {"runs"},
    "stitch": {"timings", "checks"},
    "larger_than_memory": {"runs"},
    "cluster": {"timings", "pixels_equal", "local_cluster"},
    "processes": {"timings", "pixels_equal"},
    "scale": {"timings", "pixels_equal", "local_cluster", "graphs", "costs", "model"},
    "homogenize": {"timings", "per_cell_ms", "accuracy"},
}
MACHINE_KEYS = {"cpu_count", "python", "numpy", "dask", "date"}
TARGET_KEYS = {"name", "value", "target", "comparison", "met", "description"}


def test_every_benchmark_script_imports_and_is_registered():
    scripts = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py"))
    assert scripts == sorted(BENCHMARKS), "every bench_*.py is listed here"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_all
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert sorted(run_all.BENCHMARKS) == sorted(BENCHMARKS), "and in run_all.py"
    code = (
        "import importlib.util, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "for path in sys.argv[2:]:\n"
        "    spec = importlib.util.spec_from_file_location('bench_' + path.split('bench_')[-1][:-3], path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    )
    paths = [str(ROOT / "benchmarks" / f"bench_{name}.py") for name in BENCHMARKS]
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "benchmarks"), *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench-smoke")
    proc = subprocess.run(
        [sys.executable, str(RUN_ALL), "--smoke", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, f"run_all.py --smoke failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return out


@pytest.mark.slow
def test_summary(smoke_results: Path) -> None:
    summary = json.loads((smoke_results / "summary.json").read_text())
    assert summary["mode"] == "smoke"
    assert summary["failed"] == []
    assert set(summary["benchmarks"]) == set(BENCHMARKS)
    assert all(entry["returncode"] == 0 for entry in summary["benchmarks"].values())
    assert summary["targets"], "no targets collected"
    for entry in summary["targets"]:
        assert TARGET_KEYS <= set(entry)
        assert entry["met"] is None  # smoke runs judge nothing


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_result_file(smoke_results: Path, name: str) -> None:
    result = json.loads((smoke_results / f"{name}.json").read_text())
    assert COMMON_KEYS | EXTRA_KEYS[name] <= set(result), sorted(COMMON_KEYS | EXTRA_KEYS[name] - set(result))
    assert result["benchmark"] == name
    assert result["mode"] == "smoke"
    assert MACHINE_KEYS <= set(result["machine"])
    assert result["targets"]
    for entry in result["targets"]:
        assert TARGET_KEYS <= set(entry)
        assert isinstance(entry["value"], float)
    for timing in result.get("timings", {}).values():
        # flat {contender: stats} or grouped {group: {contender: stats}}
        stats = [timing] if "median_s" in timing else list(timing.values())
        for s in stats:
            assert s["median_s"] > 0 and s["times_s"]
    if "pixels_equal" in result:
        flat = result["pixels_equal"]
        values = [v for group in flat.values() for v in (group.values() if isinstance(group, dict) else [group])]
        assert values and all(values)


@pytest.mark.slow
def test_plots_written(smoke_results: Path) -> None:
    for name in ("map_overlap", "scaling", "memory", "stitch", "larger_than_memory"):
        assert (smoke_results / f"{name}.png").stat().st_size > 0
