"""Run every benchmark, write their JSON (and plots) plus ``summary.json``, and print all targets.

    python benchmarks/run_all.py                 # full size, real measurements (~20-30 min on 2 cores)
    python benchmarks/run_all.py --smoke         # tiny sizes, seconds each: checks the scripts work
    python benchmarks/run_all.py --only stitch memory --output /tmp/results
    python benchmarks/run_all.py --collect       # rebuild summary.json from the JSON already there

Each benchmark runs in its own Python process (so one's memory or threads never affect the
next). Smoke runs judge no target. The exit status is 0 when every script ran (targets not met
do not fail the run unless ``--strict``); 1 if a script failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

#: Benchmark name (its JSON file) -> script, in the order they run.
BENCHMARKS = {
    "map_overlap": "bench_map_overlap.py",
    "pool_overhead": "bench_pool_overhead.py",
    "scaling": "bench_scaling.py",
    "overhead": "bench_overhead.py",
    "task_vs_array": "bench_task_vs_array.py",
    "memory": "bench_memory.py",
    "stitch": "bench_stitch.py",
    "larger_than_memory": "bench_larger_than_memory.py",
    "cluster": "bench_cluster.py",
    "processes": "bench_processes.py",
    "scale": "bench_scale.py",
    "homogenize": "bench_homogenize.py",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the scripts work (targets not judged)")
    p.add_argument("--output", type=Path, default=None,
                   help="directory for all results (default: benchmarks/results, or a new temporary "
                   "directory with --smoke, so that a smoke run never changes the recorded results)")  # fmt: skip
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run just these benchmarks")
    p.add_argument("--timeout", type=float, default=None, help="seconds per script (default 300 smoke, 3600 full)")
    p.add_argument("--strict", action="store_true", help="exit 2 when a (full-size) target is not met")
    p.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: rebuild summary.json and the table from the JSON files already in --output",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="passed to each script: wait this long at most for a quiet machine before timing",
    )
    args, extra = p.parse_known_args(argv)
    if args.output is None:
        args.output = Path(tempfile.mkdtemp(prefix="imr-bench-smoke-")) if args.smoke else C.DEFAULT_OUTPUT
        print(f"results go to {args.output}")
    names = args.only or list(BENCHMARKS)
    timeout = args.timeout or (300 if args.smoke else 3600)
    args.output.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    summary: dict = {
        "mode": "smoke" if args.smoke else "full",
        "machine": C.machine_info(),
        "benchmarks": {},
        "targets": [],
    }
    failed = []
    previous = _previous(args.output / "summary.json")
    for name in names:
        if args.collect:
            path = args.output / f"{name}.json"
            if not path.exists():
                print(f"no {path}; skipped")
                continue
            result = json.loads(path.read_text())
            if result.get("mode") != summary["mode"]:
                print(f"{path} is a {result.get('mode')} result; skipped")
                continue
            entry = {
                "script": BENCHMARKS[name],
                "returncode": 0,
                "json": path.name,
                "ratios": result.get("ratios", {}),
                "seconds": previous.get(name, {}).get("seconds", round(result.get("elapsed_s", 0.0), 1)),
                "date": result.get("machine", {}).get("date"),
                "git_commit": result.get("machine", {}).get("git_commit"),
            }
            summary["targets"].extend({"benchmark": name, **t} for t in result.get("targets", []))
            summary["benchmarks"][name] = entry
            continue
        cmd = [sys.executable, str(here / BENCHMARKS[name]), "--output", str(args.output), *extra]
        if args.smoke:
            cmd.append("--smoke")
        if args.wait_quiet:
            cmd += ["--wait-quiet", str(args.wait_quiet)]
        print(f"\n===== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        elapsed = time.perf_counter() - start
        entry = {"script": BENCHMARKS[name], "returncode": rc, "seconds": round(elapsed, 1)}
        path = args.output / f"{name}.json"
        if rc == 0 and path.exists():
            result = json.loads(path.read_text())
            entry["json"] = path.name
            entry["date"] = result.get("machine", {}).get("date")
            entry["git_commit"] = result.get("machine", {}).get("git_commit")
            entry["ratios"] = result.get("ratios", {})
            for t in result.get("targets", []):
                summary["targets"].append({"benchmark": name, **t})
        else:
            failed.append(name)
        summary["benchmarks"][name] = entry
    summary["failed"] = failed
    summary["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    rows = [
        [
            t["benchmark"],
            t["name"],
            t["value"],
            f"{t['comparison']} {t['target']}" if t["comparison"] != "info" else "-",
            C.status(t),
        ]
        for t in summary["targets"]
    ]
    print("\n===== all targets")
    print(C.table(rows, ["benchmark", "measure", "value", "target", "status"]))
    judged = [t for t in summary["targets"] if t["met"] is not None]
    verdict = (
        "smoke run: targets not judged"
        if args.smoke
        else f"{sum(t['met'] for t in judged)} of {len(judged)} targets met"
    )
    print(f"\n{verdict}; {len(failed)} script(s) failed{': ' + ', '.join(failed) if failed else ''}")
    print(f"wrote {args.output / 'summary.json'}")
    if failed:
        return 1
    if args.strict and any(not t["met"] for t in judged):
        return 2
    return 0


def _previous(path: Path) -> dict:
    """The per-benchmark entries of an earlier summary (for run times when only collecting)."""
    try:
        return json.loads(path.read_text()).get("benchmarks", {})
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
