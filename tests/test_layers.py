"""The package's layering: which modules may import which, read from the sources with `ast`.

Every import counts, at module level or inside a function, since a deferred import is still a
dependency (and a cycle when the other module imports this one). Imports under
``if TYPE_CHECKING:`` do not: they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "imagemapreduce"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: The layers, lowest first: a module of one imports no module of a layer above it. The names
#: are the package's top-level modules and subpackages; those not named here may sit anywhere, as
#: long as the package holds no cycle (`test_no_import_cycles`).
LAYERS: list[tuple[str, ...]] = [
    ("_providers",),
    ("geom",),
    ("image",),
    ("psf",),
    ("grid",),
    ("stitch",),
    ("engine",),
    ("io", "xarray_support"),
    ("zarr_run", "catalog_run"),
    ("mapreduce",),
    ("psfmatch",),
    ("cli",),
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """The absolute names of the package modules that ``source`` (the module ``module``) imports.

    ``from . import x`` gives ``pkg.x`` (which may be a module or a name of ``pkg``; callers map
    names to units, so either is right).
    """
    tree = ast.parse(source)
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
                   for n in ast.walk(node) if n is not node.test}  # fmt: skip
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            found |= {base} if node.module else {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _unit(name: str) -> str:
    """The top-level module or subpackage a module belongs to (the package root: ``""``)."""
    return name.split(".")[1] if "." in name else ""


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """For each unit, the units it imports, each with the modules that import it."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        for target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if _unit(target) != _unit(module):
                graph.setdefault(_unit(module), {}).setdefault(_unit(target), []).append(module)
    return graph


def layer_violations(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """Each import of a higher layer's unit by a lower one, with the modules that make it."""
    return [
        f"{', '.join(sorted(set(modules)))} (layer {LAYER_OF[unit]}) imports "
        f"{PACKAGE}.{target} (layer {LAYER_OF[target]})"
        for unit, targets in graph.items()
        if unit in LAYER_OF
        for target, modules in targets.items()
        if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[unit]
    ]


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One import cycle between units (as a path that returns to its start), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = "open"
        path.append(unit)
        for target in sorted(graph.get(unit, {})):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[unit] = "done"
        path.pop()
        return None

    for unit in sorted(graph):
        if unit not in state and (cycle := visit(unit)):
            return cycle
    return None


def test_lower_layers_never_import_higher_ones():
    assert layer_violations(unit_graph()) == []


def test_no_import_cycles():
    cycle = find_cycle(unit_graph())
    assert cycle is None, " -> ".join(f"{PACKAGE}.{unit}" if unit else PACKAGE for unit in cycle)


def test_the_check_sees_deferred_imports_and_skips_typing_only_ones():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..mapreduce import ImageMapReduceTask\n"
        "def write(self):\n    from ..io.fits import write_exposure\n"
    )
    found = imported_modules(source, f"{PACKAGE}.image._exposure")
    assert found == {f"{PACKAGE}.io.fits"}
    graph = {"image": {"io": [f"{PACKAGE}.image._exposure"]}, "io": {"image": [f"{PACKAGE}.io.fits"]}}
    assert layer_violations(graph) and find_cycle(graph) == ["image", "io", "image"]
    assert "zarr_run" in unit_graph()["mapreduce"], "the Task's deferred import of its zarr run is seen"


def test_every_layer_exists():
    units = {path.stem if path.suffix else path.name for path in ROOT.iterdir() if path.suffix in (".py", "")}
    assert set(LAYER_OF) <= units


@pytest.mark.parametrize("module", [PACKAGE, f"{PACKAGE}.mapreduce", f"{PACKAGE}.arrays", f"{PACKAGE}.image"])
def test_import_does_not_load_xarray(module):
    # xarray takes about half a second to import; only the xarray interop needs it.
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'xarray'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_image_conveniences_find_their_functions():
    from imagemapreduce import _providers
    from imagemapreduce.io.fits import write_exposure
    from imagemapreduce.xarray_support import exposure_to_xarray

    assert _providers.provided("write_exposure") is write_exposure
    assert _providers.provided("exposure_to_xarray") is exposure_to_xarray
    with pytest.raises(LookupError, match="no module provides 'nothing'"):
        _providers.provided("nothing")
