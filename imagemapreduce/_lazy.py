"""Telling lazy (Dask) arrays from in-memory ones, without importing Dask.

A leaf module: it imports nothing from the package, so argument checks, the reducer and the
engine can all ask without importing one another.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_dask_array"]


def is_dask_array(array: Any) -> bool:
    """Whether ``array`` is a Dask array (without importing dask.array when it is not)."""
    return type(array).__module__.startswith("dask.array") and hasattr(array, "__dask_graph__")
