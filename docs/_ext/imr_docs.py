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

Docstring patches
-----------------
`patch_docstring` fixes known reStructuredText slips in package docstrings while they wait for
a fix at the source. Each patch is an exact text replacement, so it stops applying (and does no
harm) once the source is fixed.
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

#: (object name prefix, bad text, good text): rst slips in package docstrings, fixed at build time.
DOCSTRING_PATCHES: tuple[tuple[str, str, str], ...] = (
    # io/fits.py module docstring: ``MP_ cards`` reads as a link to a target named "MP".
    ("imagemapreduce.io.fits", " MP_ cards ", " ``MP_`` cards "),
)


def patch_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """``autodoc-process-docstring`` hook applying `DOCSTRING_PATCHES`."""
    for prefix, bad, good in DOCSTRING_PATCHES:
        if name == prefix or name.startswith(prefix + "."):
            for i, line in enumerate(lines):
                if bad in line:
                    lines[i] = line.replace(bad, good)


# -- benchmark tables --------------------------------------------------------------------------------


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
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return ", ".join(_format(v) for v in value)
        return json.dumps(value, sort_keys=True)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects become dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and len(value) <= 12:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _table(header: list[str], rows: list[list[str]]) -> nodes.table:
    """A plain docutils table."""
    table = nodes.table(classes=["benchmark-table"])
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


def _records_table(records: list[dict[str, Any]]) -> nodes.table:
    flat = [_flatten(r) for r in records]
    header: list[str] = []
    for record in flat:
        header.extend(k for k in record if k not in header)
    return _table(header, [[_format(r.get(k)) for k in header] for r in flat])


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_keyed_records(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def render_result(data: Any) -> list[nodes.Node]:
    """Tables for one JSON document, whatever its layout."""
    out: list[nodes.Node] = []
    if _is_records(data):
        return [_records_table(data)]
    if not isinstance(data, dict):
        return [nodes.literal_block(text=json.dumps(data, indent=2, sort_keys=True))]
    scalars = {k: v for k, v in data.items() if not _is_records(v) and not _is_keyed_records(v)}
    if scalars:
        flat = _flatten(scalars)
        out.append(_table(["field", "value"], [[k, _format(v)] for k, v in flat.items()]))
    for key, value in data.items():
        if _is_records(value):
            out.append(nodes.rubric(text=str(key)))
            out.append(_records_table(value))
        elif _is_keyed_records(value):
            out.append(nodes.rubric(text=str(key)))
            records = [{"name": name, **_flatten(record)} for name, record in value.items()]
            out.append(_records_table(records))
    return out


class BenchmarkResults(SphinxDirective):
    """``.. benchmark-results:: [folder]``: every JSON file of the folder, as tables."""

    optional_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        docs = Path(self.env.srcdir)
        folder = docs / self.arguments[0] if self.arguments else docs.parent / "benchmarks" / "results"
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            para = nodes.paragraph()
            para += nodes.emphasis(
                text="No benchmark results yet: run the benchmark scripts to write JSON files into "
                "benchmarks/results/, then rebuild the docs."
            )
            return [para]
        out: list[nodes.Node] = []
        for path in files:
            self.env.note_dependency(str(path))
            out.append(nodes.rubric(text=path.name))
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                out.append(nodes.paragraph(text=f"(could not read {path.name}: {exc})"))
                continue
            out.extend(render_result(data))
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
    os.environ["COLUMNS"] = "88"
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
    app.connect("autodoc-process-docstring", patch_docstring)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
