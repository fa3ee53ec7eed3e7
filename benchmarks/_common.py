"""Shared helpers for the benchmark scripts: machine facts, timing, targets, JSON, tables, plots.

Every benchmark script runs its contenders side by side in one process (round-robin, so that
background load hits every contender alike), repeats them, and reports medians and ratios. The
result of one script is one JSON file::

    {
      "benchmark": "map_overlap", "mode": "full" | "smoke", "machine": {...}, "params": {...},
      "timings": {contender: {"median_s", "min_s", "max_s", "times_s"}},
      "ratios": {name: value}, "targets": [{"name", "value", "target", "comparison", "met", ...}],
      "notes": [...], "elapsed_s": ...
    }

This module is imported by the scripts (``benchmarks/`` is on ``sys.path`` when a script runs);
it is not part of the ``imagemapreduce`` package.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "results"


# -- command line ------------------------------------------------------------------------------
def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the script works, not the targets")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="directory for the JSON and PNG results")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per contender (default: 5 full, 1 smoke)")
    p.add_argument("--workers", type=int, default=None, help="threads/processes (default: os.cpu_count())")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before timing, wait up to this long for the 1-minute load average to fall below 0.5 x cores",
    )
    return p


def repeats(args: argparse.Namespace, full: int = 5, smoke: int = 1) -> int:
    """The number of timed repeats: the option if given, else the mode's default."""
    if args.repeats is not None:
        return max(1, args.repeats)
    return smoke if args.smoke else full


def warmup(args: argparse.Namespace) -> int:
    """Untimed rounds before the timed ones: 1 (none in smoke runs, which judge nothing)."""
    return 0 if args.smoke else 1


def workers(args: argparse.Namespace) -> int:
    """Worker count for the parallel contenders."""
    return args.workers or os.cpu_count() or 1


# -- machine -----------------------------------------------------------------------------------
def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - a missing optional package is just not reported
        return None
    return getattr(mod, "__version__", None)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    """Where and when the benchmark ran: CPU count, memory, versions, date, load, git commit."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "dask": _version("dask"),
        "distributed": _version("distributed"),
        "zarr": _version("zarr"),
        "imagemapreduce": _version("imagemapreduce"),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        # Whether the package itself (not these scripts or results) differs from the commit.
        "package_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", "imagemapreduce")),
    }
    try:
        import psutil

        info["memory_total_gib"] = round(psutil.virtual_memory().total / 2**30, 2)
    except ImportError:
        pass
    return info


def wait_quiet(seconds: float, threshold: float | None = None) -> dict[str, Any]:
    """Wait up to ``seconds`` for the 1-minute load average to drop below ``threshold`` (0.5 x cores)."""
    if not seconds or not hasattr(os, "getloadavg"):
        return {"waited_s": 0.0, "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    threshold = threshold if threshold is not None else 0.5 * (os.cpu_count() or 1)
    start = time.monotonic()
    while os.getloadavg()[0] >= threshold and time.monotonic() - start < seconds:
        time.sleep(5.0)
    return {"waited_s": round(time.monotonic() - start, 1), "loadavg": list(os.getloadavg()), "threshold": threshold}


def _busy(n: int) -> float:
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i
    return time.perf_counter() - t


def parallel_capacity(processes: int | None = None, n: int = 3_000_000) -> dict[str, Any]:
    """How many cores' worth of CPU this machine gives right now (ideal: ``processes``).

    Times a pure-Python busy loop in one process, then in ``processes`` at once; the capacity is
    ``processes * t1 / t_parallel``. On a shared machine this is the honest ceiling of any speedup.
    """
    import multiprocessing as mp

    processes = processes or os.cpu_count() or 1
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(processes) as pool:
        pool.map(_busy, [1000] * processes)  # start the workers
        single = min(pool.apply(_busy, (n,)) for _ in range(3))
        together = float("inf")
        for _ in range(3):  # best of 3: the least disturbed moment
            start = time.perf_counter()
            pool.map(_busy, [n] * processes, chunksize=1)
            together = min(together, time.perf_counter() - start)
    return {
        "processes": processes,
        "single_s": single,
        "parallel_s": together,
        "capacity": round(processes * single / together, 3),
    }


# -- timing ------------------------------------------------------------------------------------
def summarize(times: list[float]) -> dict[str, Any]:
    """Median, min, max and all the times of one contender."""
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": [round(t, 6) for t in times],
    }


def time_round_robin(
    contenders: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, between: Callable[[], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Time every contender ``repeats`` times, interleaved (A B C A B C ...), after ``warmup`` rounds.

    Interleaving spreads background load over all contenders instead of one. ``between`` runs
    (untimed) before each call, e.g. ``gc.collect``.
    """
    import gc

    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(warmup + repeats):
        for name, call in contenders.items():
            gc.collect()
            if between is not None:
                between()
            start = time.perf_counter()
            result = call()
            elapsed = time.perf_counter() - start
            del result
            if round_ >= warmup:
                times[name].append(elapsed)
    return {name: summarize(ts) for name, ts in times.items()}


def median(timings: dict[str, dict[str, Any]], name: str) -> float:
    """The median time of one contender."""
    return float(timings[name]["median_s"])


# -- targets -----------------------------------------------------------------------------------
def target(
    name: str, value: float, goal: float, comparison: str, description: str, smoke: bool = False, unit: str = "x"
) -> dict[str, Any]:
    """A measured value against its goal; ``comparison`` is '<=' or '>='. Smoke runs never judge."""
    if comparison not in ("<=", ">=", "info"):
        raise ValueError(f"comparison must be '<=', '>=' or 'info', got {comparison!r}")
    if comparison == "info":
        met = None
    elif comparison == "<=":
        met = bool(value <= goal)
    else:
        met = bool(value >= goal)
    return {
        "name": name,
        "value": round(float(value), 4),
        "target": goal,
        "comparison": comparison,
        "unit": unit,
        "met": None if smoke else met,
        "description": description,
    }


def status(entry: dict[str, Any]) -> str:
    """'met', 'NOT MET', 'info' or 'smoke' for a target entry."""
    if entry["comparison"] == "info":
        return "info"
    if entry["met"] is None:
        return "smoke (not judged)"
    return "met" if entry["met"] else "NOT MET"


# -- output ------------------------------------------------------------------------------------
def write_result(name: str, payload: dict[str, Any], output: Path) -> Path:
    """Write ``payload`` (plus the benchmark name) to ``output/<name>.json``; return the path."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{name}.json"
    payload = {"benchmark": name, **payload}
    if isinstance(payload.get("machine"), dict) and hasattr(os, "getloadavg"):
        payload["machine"]["loadavg_end"] = list(os.getloadavg())
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    print(f"wrote {path}")
    return path


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain-text (markdown-compatible) table."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join([line, sep, *body])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value)


def timing_table(timings: dict[str, dict[str, Any]], reference: str | None = None) -> str:
    """Medians (and min) per contender, and each one's ratio to ``reference``."""
    ref = timings[reference]["median_s"] if reference else None
    rows = []
    for name, t in timings.items():
        row = [name, t["median_s"], t["min_s"], len(t["times_s"])]
        if ref:
            row.append(t["median_s"] / ref)
        rows.append(row)
    headers = ["contender", "median s", "min s", "n"] + ([f"ratio to {reference}"] if ref else [])
    return table(rows, headers)


def targets_table(targets: list[dict[str, Any]]) -> str:
    """The targets of one benchmark as a table."""
    rows = [
        [t["name"], t["value"], f"{t['comparison']} {t['target']}" if t["comparison"] != "info" else "-", status(t)]
        for t in targets
    ]
    return table(rows, ["measure", "value", "target", "status"])


def report(name: str, payload: dict[str, Any], output: Path) -> Path:
    """Print the targets table and write the JSON."""
    print()
    print(f"== {name}: targets ==")
    print(targets_table(payload.get("targets", [])))
    for note in payload.get("notes", []):
        print(f"note: {note}")
    return write_result(name, payload, output)


def same_pixels(contenders: dict[str, Any], reference: Any, label: str = "") -> dict[str, bool]:
    """Call every contender once (outside the timing) and check it gives ``reference``'s pixels exactly."""
    import numpy as np

    equal = {name: bool(np.array_equal(reference, call())) for name, call in contenders.items()}
    if not all(equal.values()):
        raise AssertionError(f"{label + ': ' if label else ''}contenders disagree on the pixels: {equal}")
    return equal


def save_plot(fig: Any, output: Path, name: str) -> None:
    """Lay out, write ``<output>/<name>.png`` and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(plot_path(output, name), dpi=100)
    plt.close(fig)


def plot_path(output: Path, name: str) -> Path:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    return output / f"{name}.png"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- memory ------------------------------------------------------------------------------------
class PeakRSS:
    """Sample the resident memory of this process and its children in a thread; keep the peak.

    Use as a context manager. ``peak`` is in bytes. Also reads ``ru_maxrss`` (this process's
    lifetime peak, in kB on Linux) at the end, which catches spikes between samples.
    """

    def __init__(self, interval: float = 0.005, children: bool = True):
        self.interval = interval
        self.children = children
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        import psutil

        proc = psutil.Process()
        total = proc.memory_info().rss
        if self.children:
            for child in proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._rss())
                self.samples += 1
            except Exception:  # noqa: BLE001 - a vanished child between listing and reading
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._rss())


def current_rss() -> int:
    """Resident memory of this process now, in bytes."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover - psutil comes with distributed
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ru_maxrss_bytes() -> int:
    """The lifetime peak RSS (``ru_maxrss``) of the current process, in bytes."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_json_subprocess(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python argv...`` in a fresh interpreter; its last stdout line is a JSON object."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"subprocess {argv} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"subprocess {argv} printed no JSON:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def start_payload(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """The common head of a result: mode, machine, params, and any wait for a quiet machine."""
    quiet = wait_quiet(args.wait_quiet)
    machine = machine_info()
    machine["wait_quiet"] = quiet
    return {"mode": "smoke" if args.smoke else "full", "machine": machine, "params": params, "notes": []}
