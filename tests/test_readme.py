"""The README's promises hold: its Python examples run, and it names the two set-up commands."""

# ruff: noqa: D103
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

#: A fenced block: an opening fence of three or more backticks with an info string, up to the
#: same fence alone on a line.
_FENCE = re.compile(r"^(?P<fence>`{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)


def code_blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced blocks whose info string starts with ``language``."""
    return [m.group("body") for m in _FENCE.finditer(text) if m.group("info").strip().split(" ")[0].lower() == language]


def test_fence_parser_reads_only_the_named_language():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n````python\nb = 2\n```\nc\n````\n"
    assert code_blocks(text, "python") == ["a = 1\n", "b = 2\n```\nc\n"]
    assert code_blocks(text, "bash") == ["ls\n"]


PYTHON_BLOCKS = code_blocks(README.read_text(encoding="utf-8"), "python")


def test_readme_has_python_examples():
    assert PYTHON_BLOCKS, "README.md has no ```python blocks to check"


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)), ids=lambda i: f"block{i}")
def test_readme_python_block_runs(index, monkeypatch, tmp_path):
    """Each block runs on its own, as a reader pasting it into a fresh ``python`` would."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    monkeypatch.chdir(tmp_path)  # anything a block writes lands in a temporary folder
    source = PYTHON_BLOCKS[index]
    namespace = {"__name__": "__main__", "__file__": str(README)}
    exec(compile(source, f"README.md[python block {index}]", "exec"), namespace)  # noqa: S102
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.parametrize(
    "command",
    ["pip install . && imagemapreduce demo", 'pip install -e ".[test]" && pytest'],
)
def test_readme_names_the_setup_commands(command):
    text = README.read_text(encoding="utf-8")
    assert command in text, f"README.md should tell readers to run: {command}"
