"""The documentation builds without a single warning, and the code it shows runs.

* The Sphinx build (``sphinx-build -W --keep-going -b html``) runs in a subprocess into a temporary
  folder; any Sphinx warning fails it, and so does a Python warning of the kinds that mean the
  examples misbehave (UserWarning, RuntimeWarning, FutureWarning). The build executes the
  figures' code (matplotlib's plot directive) and the tutorial, so those are covered too.
* Every ``.. code-block:: python`` of the pages runs in a fresh namespace, except blocks marked
  ``:class: norun`` (they need a cluster or a reader's own data).
* The benchmark page's renderer copes with the JSON the benchmark scripts write, with other
  layouts, and with no results at all.
"""

# ruff: noqa: D103
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 300  # seconds; the build takes about 20 s on two cores

#: Python warnings in the build's output that mean an example or a figure misbehaves.
_PYTHON_WARNING = re.compile(r"\b(UserWarning|RuntimeWarning|FutureWarning)\b")
_SPHINX_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b")


def _source_files() -> set[Path]:
    return {p for p in DOCS.rglob("*") if "__pycache__" not in p.parts and "_build" not in p.parts}


def _needs_sphinx():
    pytest.importorskip("sphinx", reason="the docs need sphinx: pip install -e '.[test]'")
    pytest.importorskip("numpydoc", reason="the docs need numpydoc: pip install -e '.[test]'")


def test_docs_build_without_warnings(tmp_path):
    _needs_sphinx()
    before = _source_files()
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONWARNINGS", None)
    command = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
        "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html"),
    ]  # fmt: skip
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the docs build took longer than {BUILD_TIMEOUT} s: {exc}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"sphinx-build failed (exit {proc.returncode}):\n{output}"
    problems = [line for line in output.splitlines() if _SPHINX_PROBLEM.search(line) or _PYTHON_WARNING.search(line)]
    assert not problems, "the docs build warned:\n" + "\n".join(problems)
    html = tmp_path / "html"
    for page in ("index", "user_guide", "tutorial_psf", "cluster", "porting", "performance", "api/index"):
        assert (html / f"{page}.html").is_file(), f"{page}.html was not written"
    images = sorted(p.name for p in (html / "_images").glob("*.png"))
    assert len(images) >= 3, f"the figures were not drawn: {images}"
    assert _source_files() == before, "the build wrote into docs/; it must write only to its output folder"


# -- the code the pages show ------------------------------------------------------------------------

_CODE_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block:: python[ \t]*$")
_PLOT = re.compile(r"^(?P<indent>[ \t]*)\.\. plot::[ \t]*$")


def directive_blocks(text: str, directive: re.Pattern[str]) -> list[tuple[int, str, dict[str, str]]]:
    """``(line, code, options)`` of each directive matching ``directive`` in a reST text."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = directive.match(lines[i])
        if not match:
            i += 1
            continue
        base = len(match.group("indent"))
        i += 1
        options: dict[str, str] = {}
        while i < len(lines) and (option := re.match(r"^\s+:([\w-]+):(.*)$", lines[i])):
            options[option.group(1)] = option.group(2).strip()
            i += 1
        start = i + 1  # 1-based number of the body's first line
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
            start += 1
        indents = [len(line) - len(line.lstrip()) for line in body if line.strip()]
        cut = min(indents) if indents else 0
        blocks.append((start, "\n".join(line[cut:] for line in body) + "\n", options))
    return blocks


def code_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line, code, classes)`` of each ``.. code-block:: python`` in a reST text."""
    return [
        (line, code, options.get("class", "").split()) for line, code, options in directive_blocks(text, _CODE_BLOCK)
    ]


def plot_scripts(text: str) -> list[tuple[int, str]]:
    """The figures' code as a reader would paste it: ``(line, code)`` per standalone script.

    A ``.. plot::`` block without ``:context:`` stands alone; ``:context:`` blocks continue the
    one before (a tutorial read in order), and ``:context: reset`` starts a new script.
    """
    scripts: list[tuple[int, str]] = []
    for line, code, options in directive_blocks(text, _PLOT):
        if options.get("context") == "" and scripts:
            scripts[-1] = (scripts[-1][0], scripts[-1][1] + code)
        else:
            scripts.append((line, code))
    return scripts


def test_code_block_parser():
    text = (
        "Intro\n\n.. code-block:: python\n\n   a = 1\n   if a:\n       b = 2\n\nAfter\n\n"
        "* item\n\n  .. code-block:: python\n     :class: norun\n\n     client.upload_file('x.py')\n\n"
        ".. code-block:: bash\n\n   ls\n"
    )
    blocks = code_blocks(text)
    assert [(code, classes) for _, code, classes in blocks] == [
        ("a = 1\nif a:\n    b = 2\n", []),
        ("client.upload_file('x.py')\n", ["norun"]),
    ]


PAGES = sorted(DOCS.glob("*.rst"))
RUNNABLE = [
    pytest.param(page, line, code, id=f"{page.stem}:{line}")
    for page in PAGES
    for line, code, classes in code_blocks(page.read_text(encoding="utf-8"))
    if "norun" not in classes
]


FIGURES = [
    pytest.param(page, line, code, id=f"{page.stem}:{line}")
    for page in PAGES
    for line, code in plot_scripts(page.read_text(encoding="utf-8"))
]


def test_plot_parser_chains_context_blocks():
    text = (
        ".. plot::\n\n   a = 1\n\n.. plot::\n   :context: reset\n   :nofigs:\n\n   b = 2\n\n"
        ".. plot::\n   :context:\n\n   c = b\n"
    )
    assert plot_scripts(text) == [(3, "a = 1\n"), (9, "b = 2\nc = b\n")]


def test_the_pages_show_runnable_code():
    assert len(RUNNABLE) >= 5, [p.id for p in RUNNABLE]
    assert len(FIGURES) >= 3, [p.id for p in FIGURES]


@pytest.mark.parametrize(("page", "line", "code"), RUNNABLE + FIGURES)
def test_doc_code_block_runs(page, line, code, tmp_path, monkeypatch):
    """Each block (each figure's script) runs alone, with only the imports it shows."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile.mkdtemp() in examples lands here
    namespace = {"__name__": "__main__"}
    exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102
    import matplotlib.pyplot as plt

    plt.close("all")


# -- the benchmark tables ---------------------------------------------------------------------------


@pytest.fixture
def imr_docs():
    _needs_sphinx()
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import imr_docs

        yield imr_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def _text(nodes_list) -> str:
    return "\n".join(node.astext() for node in nodes_list)


def test_benchmark_renderer_reads_the_scripts_layout(imr_docs, tmp_path):
    (tmp_path / "bench_demo.py").write_text('"""Demo benchmark: one line of summary.\n\nMore."""\n')
    payload = {
        "benchmark": "demo",
        "mode": "smoke",
        "machine": {"cpu_count": 2, "python": "3.11", "hostname": "not shown", "git_commit": "0123456789abcdef"},
        "params": {"shape": [64, 64], "cells": {"n": 16}},
        "timings": {"serial": {"median_s": 2.0, "min_s": 1.9, "max_s": 2.1, "times_s": [1.9, 2.0, 2.1]},
                    "groups": {"ours": {"median_s": 1.0, "min_s": 1.0, "max_s": 1.0, "times_s": [1.0]}}},
        "ratios": {"speedup": 2.0, "nested": {"a": 1.5}},
        "targets": [{"name": "speedup", "value": 2.0, "target": 1.8, "comparison": ">=", "unit": "x",
                     "met": None, "description": "serial / ours"}],
        "notes": ["a note"],
        "elapsed_s": 3.25,
    }  # fmt: skip
    text = _text(imr_docs.render_result(payload, "demo", tmp_path / "results"))
    for expected in ("Demo benchmark: one line of summary.", "Smoke run", "speedup", ">= 1.8",
                     "not judged", "serial", "ours", "nested.a", "a note", "elapsed_s", "cells.n",
                     "0123456789ab"):  # fmt: skip
        assert expected in text, expected
    assert "not shown" not in text  # hostnames stay out of the page


def test_benchmark_renderer_reads_the_summary_of_run_all(imr_docs):
    summary = {
        "mode": "full",
        "machine": {"cpu_count": 2},
        "benchmarks": {"demo": {"script": "bench_demo.py", "returncode": 0, "seconds": 12.5, "ratios": {}}},
        "targets": [{"benchmark": "demo", "name": "speedup", "value": 2.0, "target": 1.8, "comparison": ">=",
                     "unit": "x", "met": True, "description": "serial / ours"},
                    {"benchmark": "demo", "name": "us per cell", "value": 200.0, "target": 0, "comparison": "info",
                     "unit": "us", "met": None, "description": ""}],
        "failed": [],
    }  # fmt: skip
    text = _text(imr_docs.render_summary(summary))
    for expected in ("1 of 1 targets met", "bench_demo.py", "12.5", "speedup", "met", "info"):
        assert expected in text, expected


def _tables(nodes_list) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(caption, header, rows)`` of each table among the rendered nodes, as the reader sees them."""
    from docutils import nodes

    out = []
    for node in nodes_list:
        for table in node.findall(nodes.table):
            titles = [child.astext() for child in table.children if isinstance(child, nodes.title)]
            header = [[entry.astext() for entry in row.children] for row in next(table.findall(nodes.thead))]
            rows = [[entry.astext() for entry in row.children] for row in next(table.findall(nodes.tbody))]
            out.append((titles[0] if titles else "", header[0], rows))
    return out


def test_benchmark_renderer_tables_hold_the_numbers(imr_docs):
    payload = {
        "mode": "full",
        "timings": {"slow": {"median_s": 3.0, "min_s": 2.5, "max_s": 4.0, "times_s": [2.5, 3.0, 4.0]},
                    "fast": {"median_s": 1.5, "min_s": 1.0, "max_s": 2.0, "times_s": [1.0, 2.0]}},
        "ratios": {"speedup": 2.0, "per": {"cell_us": 0.0001}},
        "targets": [
            {"name": "speedup", "value": 2.0, "target": 1.8, "comparison": ">=", "unit": "x", "met": True},
            {"name": "memory", "value": 5.0, "target": 3.0, "comparison": "<=", "unit": "GB", "met": False},
            {"name": "tasks", "value": 7, "target": 0, "comparison": "info", "unit": "", "met": None},
        ],
    }  # fmt: skip
    tables = _tables(imr_docs.render_result(payload))
    assert tables == [
        ("targets", ["measure", "value", "target", "status", "what"], [
            ["speedup", "2", ">= 1.8", "met", ""],
            ["memory", "5 GB", "<= 3", "NOT MET", ""],
            ["tasks", "7", "", "info", ""],
        ]),
        ("timings", ["contender", "median (s)", "min (s)", "max (s)", "runs", "x fastest"], [
            ["slow", "3", "2.5", "4", "3", "2"],
            ["fast", "1.5", "1", "2", "2", "1"],
        ]),
        ("ratios and derived numbers", ["name", "value"], [["speedup", "2"], ["per.cell_us", "1.000e-04"]]),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "tables", "literal"),
    [
        ([{"a": 1, "b": {"c": 2.5}}, {"a": 2}], [("", ["a", "b.c"], [["1", "2.5"], ["2", ""]])], None),
        ({"x": 1, "rows": [{"a": 1}]}, [("rows", ["a"], [["1"]]), ("other results", ["name", "value"], [["x", "1"]])],
         None),
        ([1, 2, 3], [], "[\n  1,\n  2,\n  3\n]"),
        ("text", [], '"text"'),
        ({}, [], None),
    ],
)  # fmt: skip
def test_benchmark_renderer_shows_other_layouts_generically(imr_docs, data, tables, literal):
    from docutils import nodes

    rendered = imr_docs.render_result(data, "other", None)
    assert _tables(rendered) == tables
    blocks = [node.astext() for node in rendered if isinstance(node, nodes.literal_block)]
    assert blocks == ([literal] if literal is not None else [])
    if not tables and literal is None:
        assert rendered == []  # no results: nothing on the page


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (True, "yes"), (0.000012345, "1.234e-05"), (3.14159, "3.142"), ([1, 2.5], "1, 2.5"), ("s", "s")],
)
def test_benchmark_cell_format(imr_docs, value, text):
    assert imr_docs._format(value) == text
