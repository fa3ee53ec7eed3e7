"""Functions of higher layers that a lower layer calls: named by the package root, imported on first use.

The image classes keep LSST's conveniences (``Exposure.writeFits``, ``Exposure.readFits``,
``MaskedImage.writeFits``, ``Exposure.to_xarray``, ...), but the functions they call live above
them: `imagemapreduce.io.fits` and `imagemapreduce.xarray_support` import the image classes. So
that the image layer never imports a higher one, the package root, which stands above every
layer, records here which module provides each such function (`provide`), and the image classes
look the function up by its name (`provided`) when they are called.

This module is the lowest layer: it imports nothing of the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["provide", "provided"]

#: Function name -> absolute name of the module that provides it.
_MODULES: dict[str, str] = {}


def provide(module: str, *names: str) -> None:
    """Record that ``module`` (an absolute module name) provides the functions ``names``."""
    for name in names:
        _MODULES[name] = module


def provided(name: str) -> Callable[..., Any]:
    """Return the function ``name`` from the module `provide` recorded for it, importing it if need be.

    Raises
    ------
    LookupError
        If no module was recorded for ``name``.
    """
    module = _MODULES.get(name)
    if module is None:
        raise LookupError(f"no module provides {name!r}: the imagemapreduce package names its providers on import")
    return getattr(importlib.import_module(module), name)
