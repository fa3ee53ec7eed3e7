"""Sphinx configuration for the imagemapreduce documentation.

Builds offline: no intersphinx, figures are drawn at build time by matplotlib's plot directive
(Agg backend), benchmark tables are read from ``benchmarks/results/*.json`` by a local extension.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

import imagemapreduce  # noqa: E402

project = "imagemapreduce"
author = "imagemapreduce developers"
copyright = "imagemapreduce developers"  # noqa: A001
release = imagemapreduce.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "imr_docs",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
root_doc = "index"
default_role = "py:obj"
nitpicky = False
suppress_warnings = []

# -- autodoc / autosummary / numpydoc ---------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Sphinx 9 fails to parse some signatures for preserve_defaults (it warns on plotBoxes).
autodoc_preserve_defaults = False
autosummary_generate = False
# Members are documented by autodoc (:members:); numpydoc's member tables would repeat them.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()  # style is ruff's job (pydocstyle, numpy convention)

# -- plot directive ---------------------------------------------------------------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 90)]
plot_rcparams = {"figure.figsize": (6.4, 4.0), "savefig.bbox": "tight"}
# Nothing is imported for the figures' code: each block shows its own imports, so that it runs when
# a reader copies it (the directive's default silently imports numpy and pyplot).
plot_pre_code = ""

# -- HTML -------------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"imagemapreduce {release}"
html_theme_options = {
    "description": "LSST's ImageMapReduceTask, standalone and parallel on Dask",
    "fixed_sidebar": True,
    "page_width": "1320px",
    "sidebar_width": "250px",
    "code_font_size": "0.85em",
}
html_static_path: list[str] = []
html_show_sourcelink = False
