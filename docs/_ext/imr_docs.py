"""Local Sphinx extension for the imagemapreduce docs (offline, no network).

Directives
----------
``.. benchmark-results::``
    Renders every ``benchmarks/results/*.json`` file as tables (the directory is relative to the
    repository root, or given as the directive's argument relative to the docs folder). Any JSON
    layout is accepted: scalars become a two-column table, lists of records a table with one
    column per key (nested objects flattened to dotted keys), objects of records a table with
    one row per key. With no files it says so in the page, without a warning.
``.. cli-help:: [subcommand ...]``
    The ``--help`` text of the ``imagemapreduce`` command (or one subcommand), captured in
    process from ``imagemapreduce.cli.main``. If the CLI cannot be imported or run, the
    directive's content (a description written in the page) is shown instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

__all__ = ["setup"]

# -- benchmark tables --------------------------------------------------------------------------------

#: Machine fields shown for each result, in this order (others are left out of the page).
MACHINE_FIELDS = (
    "date",
    "cpu_count",
    "cpu_affinity",
    "memory_total_gib",
    "processor",
    "platform",
    "python",
    "numpy",
    "scipy",
    "dask",
    "distributed",
    "zarr",
    "imagemapreduce",
    "git_commit",
    "git_dirty",
)


def _machine_table(data: dict[str, Any]) -> list[Any]:
    """The machine a result was measured on, as a table (nothing if the result does not say)."""
    machine = data.get("machine")
    if not isinstance(machine, dict) or not machine:
        return []
    shown = {k: machine[k] for k in MACHINE_FIELDS if k in machine}
    if isinstance(shown.get("git_commit"), str):
        shown["git_commit"] = shown["git_commit"][:12]
    return [_key_value_table(shown or machine, "machine", ("machine", "value"))]


def _format(value: Any) -> str:
    """A table cell: floats to 4 significant digits, lists joined, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) <= 12 and all(not isinstance(v, (dict, list, tuple)) for v in value):
            return ", ".join(_format(v) for v in value)
        return json.dumps(value, sort_keys=True)[:200]
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)[:200]
    return str(value)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects become dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _table(header: list[str], rows: list[list[str]], caption: str | None = None) -> nodes.table:
    """A plain docutils table."""
    table = nodes.table(classes=["benchmark-table", "colwidths-auto"])
    table["align"] = "left"
    if caption:
        table += nodes.title(text=caption)
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    thead = nodes.thead()
    group += thead
    row = nodes.row()
    for text in header:
        row += nodes.entry("", nodes.paragraph(text=text))
    thead += row
    tbody = nodes.tbody()
    group += tbody
    for cells in rows:
        row = nodes.row()
        for text in cells:
            row += nodes.entry("", nodes.paragraph(text=text))
        tbody += row
    return table


def _records_table(records: list[dict[str, Any]], caption: str | None = None) -> nodes.table:
    flat = [_flatten(r) for r in records]
    header: list[str] = []
    for record in flat:
        header.extend(k for k in record if k not in header)
    return _table(header, [[_format(r.get(k)) for k in header] for r in flat], caption)


def _key_value_table(data: dict[str, Any], caption: str | None = None, header=("name", "value")) -> nodes.table:
    flat = _flatten(data)
    return _table(list(header), [[k, _format(v)] for k, v in flat.items()], caption)


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_timing(value: Any) -> bool:
    return isinstance(value, dict) and "median_s" in value


def _timing_tables(timings: dict[str, Any], caption: str = "timings") -> list[nodes.Node]:
    """One table per group of contenders (``{contender: {median_s, ...}}``, possibly nested)."""
    out: list[nodes.Node] = []
    contenders = {k: v for k, v in timings.items() if _is_timing(v)}
    if contenders:
        fastest = min((float(v["median_s"]) for v in contenders.values() if v.get("median_s")), default=None)
        rows = []
        for name, t in contenders.items():
            runs = t.get("times_s")
            ratio = float(t["median_s"]) / fastest if fastest and t.get("median_s") is not None else None
            rows.append(
                [
                    name,
                    _format(t.get("median_s")),
                    _format(t.get("min_s")),
                    _format(t.get("max_s")),
                    str(len(runs)) if isinstance(runs, list) else "",
                    _format(ratio),
                ]
            )
        out.append(_table(["contender", "median (s)", "min (s)", "max (s)", "runs", "x fastest"], rows, caption))
    for key, value in timings.items():
        if key in contenders:
            continue
        if isinstance(value, dict):
            out.extend(_timing_tables(value, f"{caption}: {key}"))
        else:
            out.append(_key_value_table({key: value}, caption))
    return out


def _status(target: dict[str, Any]) -> str:
    if target.get("comparison") == "info":
        return "info"
    met = target.get("met")
    if met is None:
        return "not judged"
    return "met" if met else "NOT MET"


def _targets_table(targets: list[dict[str, Any]], caption: str = "targets") -> nodes.table:
    by_benchmark = any("benchmark" in t for t in targets)
    rows = []
    for t in targets:
        unit = t.get("unit") or ""
        value = _format(t.get("value")) + (f" {unit}" if unit and unit != "x" else "")
        goal = "" if t.get("comparison") == "info" else f"{t.get('comparison', '')} {_format(t.get('target'))}"
        row = [str(t.get("name", "")), value, goal, _status(t), str(t.get("description", ""))]
        rows.append([str(t.get("benchmark", "")), *row] if by_benchmark else row)
    header = ["measure", "value", "target", "status", "what"]
    return _table(["benchmark", *header] if by_benchmark else header, rows, caption)


def render_summary(data: dict[str, Any]) -> list[nodes.Node]:
    """Nodes for the ``summary.json`` that ``benchmarks/run_all.py`` writes."""
    out: list[nodes.Node] = []
    if data.get("mode") == "smoke":
        out.append(nodes.paragraph(text="Smoke run: tiny sizes; the targets are not judged."))
    targets = [t for t in data.get("targets", []) if isinstance(t, dict)]
    judged = [t for t in targets if t.get("comparison") != "info" and t.get("met") is not None]
    if judged:
        met = sum(1 for t in judged if t.get("met"))
        out.append(nodes.paragraph(text=f"{met} of {len(judged)} targets met."))
    if targets:
        out.append(_targets_table(targets, "every target"))
    runs = data.get("benchmarks")
    if isinstance(runs, dict) and runs:
        rows = [
            [str(name), str(entry.get("script", "")), _format(entry.get("returncode")), _format(entry.get("seconds"))]
            for name, entry in runs.items()
            if isinstance(entry, dict)
        ]
        out.append(_table(["benchmark", "script", "exit status", "seconds"], rows, "runs"))
    if data.get("failed"):
        out.append(nodes.paragraph(text="Failed: " + _format(data["failed"])))
    out.extend(_machine_table(data))
    return out


def _script_summary(folder: Path, name: str) -> str | None:
    """The first paragraph of ``benchmarks/bench_<name>.py``'s docstring, read without importing it."""
    import ast

    script = folder.parent / f"bench_{name}.py"
    try:
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, ValueError):
        return None
    if not doc:
        return None
    return " ".join(doc.split("\n\n")[0].split())


def render_result(data: Any, name: str = "", folder: Path | None = None) -> list[nodes.Node]:
    """Nodes for one benchmark JSON document.

    The layout written by ``benchmarks/_common.py`` (``benchmark``, ``mode``, ``machine``,
    ``params``, ``timings``, ``ratios``, ``targets``, ``notes``) gets dedicated tables; any other
    key, or any other layout, is shown generically.
    """
    if _is_records(data):
        return [_records_table(data)]
    if not isinstance(data, dict):
        return [nodes.literal_block(text=json.dumps(data, indent=2, sort_keys=True))]
    out: list[nodes.Node] = []
    summary = _script_summary(folder, name) if folder is not None and name else None
    if summary:
        out.append(nodes.paragraph(text=summary))
    if data.get("mode") == "smoke":
        para = nodes.paragraph()
        para += nodes.strong(text="Smoke run: ")
        para += nodes.Text(
            "tiny sizes that check the script works; the numbers say little and the targets are not judged."
        )
        out.append(para)
    if isinstance(data.get("targets"), list) and data["targets"]:
        out.append(_targets_table([t for t in data["targets"] if isinstance(t, dict)]))
    if isinstance(data.get("timings"), dict) and data["timings"]:
        out.extend(_timing_tables(data["timings"]))
    if isinstance(data.get("ratios"), dict) and data["ratios"]:
        out.append(_key_value_table(data["ratios"], "ratios and derived numbers"))
    notes = data.get("notes")
    if isinstance(notes, list) and notes:
        items = nodes.bullet_list()
        for note in notes:
            items += nodes.list_item("", nodes.paragraph(text=_format(note)))
        out.append(items)
    known = {"benchmark", "mode", "machine", "params", "timings", "ratios", "targets", "notes"}
    scalars: dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            continue
        if _is_records(value):
            out.append(_records_table(value, key))
        elif isinstance(value, dict) and value:
            out.append(_key_value_table(value, key))
        elif not isinstance(value, dict):
            scalars[key] = value
    if scalars:
        out.append(_key_value_table(scalars, "other results"))
    if isinstance(data.get("params"), dict) and data["params"]:
        out.append(_key_value_table(data["params"], "parameters", ("parameter", "value")))
    out.extend(_machine_table(data))
    return out


class BenchmarkResults(SphinxDirective):
    """``.. benchmark-results:: [folder]``: every JSON file of the folder, as tables and plots."""

    optional_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        docs = Path(self.env.srcdir)
        folder = (docs / self.arguments[0]) if self.arguments else docs.parent / "benchmarks" / "results"
        folder = folder.resolve()
        files = sorted(folder.glob("*.json"), key=lambda p: (p.stem != "summary", p.stem)) if folder.is_dir() else []
        if not files:
            para = nodes.paragraph()
            para += nodes.emphasis(
                text="No benchmark results yet: run the benchmark scripts (python benchmarks/bench_*.py) to "
                "write JSON files into benchmarks/results/, then rebuild the docs."
            )
            return [para]
        out: list[nodes.Node] = []
        here = Path(self.env.doc2path(self.env.docname)).parent
        for path in files:
            self.env.note_dependency(str(path))
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                out.append(nodes.rubric(text=path.stem))
                out.append(nodes.paragraph(text=f"(could not read {path.name}: {exc})"))
                continue
            is_summary = path.stem == "summary" and isinstance(data, dict) and "benchmarks" in data
            name = str(data.get("benchmark", path.stem)) if isinstance(data, dict) else path.stem
            section = nodes.section(ids=[nodes.make_id(f"benchmark-{path.stem}")])
            section += nodes.title(text="Summary of all benchmarks" if is_summary else name)
            section.extend(render_summary(data) if is_summary else render_result(data, name, folder))
            plot = path.with_suffix(".png")
            if plot.is_file():
                self.env.note_dependency(str(plot))
                uri = os.path.relpath(plot, here).replace(os.sep, "/")
                section += nodes.image(uri=uri, alt=f"{name} plot", width="90%")
            out.append(section)
        return out


# -- CLI help -----------------------------------------------------------------------------------------


def cli_help_text(args: list[str]) -> str | None:
    """``imagemapreduce [args] --help`` as printed, or None if the CLI is not available."""
    try:
        from imagemapreduce import cli
    except Exception:  # noqa: BLE001 - not written yet, or broken: fall back to the page's text
        return None
    main = getattr(cli, "main", None)
    if main is None:
        return None
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_columns = sys.argv, os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.argv = ["imagemapreduce", *args, "--help"]
            try:
                main([*args, "--help"])
            except SystemExit:
                pass
            except TypeError:  # a main() that reads sys.argv itself
                try:
                    main()
                except SystemExit:
                    pass
    except Exception:  # noqa: BLE001
        return None
    finally:
        sys.argv = saved_argv
        if saved_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved_columns
    text = out.getvalue().strip()
    return text or None


class CliHelp(SphinxDirective):
    """``.. cli-help:: [subcommand]``: the live ``--help`` text, else the directive's content."""

    optional_arguments = 3
    has_content = True
    option_spec = {"fallback-only": directives.flag}

    def run(self) -> list[nodes.Node]:
        args = list(self.arguments)
        text = None if "fallback-only" in self.options else cli_help_text(args)
        if text is not None:
            command = " ".join(["imagemapreduce", *args, "--help"])
            block = nodes.literal_block(text=f"$ {command}\n{text}", language="text")
            return [block]
        container = nodes.container()
        self.state.nested_parse(StringList(list(self.content), source=""), self.content_offset, container)
        return container.children


def setup(app: Any) -> dict[str, Any]:
    """Register the directives and the docstring patches."""
    app.add_directive("benchmark-results", BenchmarkResults)
    app.add_directive("cli-help", CliHelp)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
