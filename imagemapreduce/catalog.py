"""Catalogs from cells: per-cell tables made into one, each source kept exactly once.

A detection run per cell finds a source once in every cell whose expanded box reaches it. The
rule that keeps it once is LSST's inner-cell ownership, made total:

* a row belongs to a cell whose **core** (not expanded box) contains the row's pixel,
  ``(round(x), round(y))`` with halves rounded up (``floor(v + 0.5)``: pixel ``i`` spans
  ``[i - 0.5, i + 0.5)``);
* where cores overlap (a grid step smaller than the cell), it belongs to the one of them whose
  centre is nearest the pixel, ties going to the first in grid order;
* a row whose pixel lies in no core is dropped, and counted.

Every pixel of the image has at most one owner, which depends on the pixel alone, so a source
that several cells detect at the same position is kept by exactly one of them. Nothing here
knows about Dask or Tasks: these are pure functions of tables and ``(n, 4)`` box arrays
(``minX, minY, maxX, maxY``, inclusive, as `imagemapreduce.grid.CellGrid` holds them).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CatalogCell",
    "CatalogError",
    "CellOwnership",
    "as_table",
    "candidate_owners",
    "concatenate_catalogs",
    "mapper_catalog",
    "owned_catalog",
    "owned_rows",
    "reduce_catalog",
    "round_half_up",
    "shifted",
]

#: The column the reduced catalog gains: the cell's grid index (column, row of the grid).
GRID_INDEX = "grid_index"
#: The column a Task's catalog gains instead: the cell's position in ``task.boxes0``.
CELL_NUMBER = "cell"


class CatalogError(ValueError):
    """A cell's table cannot join the catalog (no x/y, ragged columns, columns unlike the others)."""


def round_half_up(values: np.ndarray) -> np.ndarray:
    """The pixel a position falls in: ``floor(v + 0.5)`` as int64 (Python's `round` rounds halves to even)."""
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5).astype(np.int64)


def as_table(result: Any, cell: str) -> Any:
    """A cell's result as an astropy `~astropy.table.Table` with float ``x`` and ``y`` columns.

    Parameters
    ----------
    result : `~astropy.table.Table`, `pandas.DataFrame` or mapping of 1-d arrays
        What the cell's function returned.
    cell : `str`
        The cell, as error messages name it.

    Raises
    ------
    CatalogError
        For another type, columns of unequal length, or no float ``x`` / ``y`` columns.
    """
    from astropy.table import Table

    if isinstance(result, Table):
        table = result
    elif _is_dataframe(result):
        table = Table.from_pandas(result, index=False)
    elif isinstance(result, Mapping):
        table = _table_from_mapping(result, cell)
    else:
        raise CatalogError(
            f"{cell} returned {type(result).__name__}; a catalog cell returns an astropy Table, a pandas "
            "DataFrame or a dict of equal-length 1-d arrays, with float columns 'x' (column) and 'y' (row)"
        )
    for name in ("x", "y"):
        if name not in table.colnames:
            raise CatalogError(f"{cell} returned a table without a {name!r} column; columns: {table.colnames}")
        if table[name].dtype.kind not in "f" and len(table):
            raise CatalogError(f"{cell}: column {name!r} must hold floats, got dtype {table[name].dtype}")
    return table


def _is_dataframe(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # never import pandas just to ask
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _table_from_mapping(columns: Mapping[str, Any], cell: str) -> Any:
    from astropy.table import Table

    arrays = {str(name): np.asanyarray(values) for name, values in columns.items()}
    lengths = {name: len(a) if a.ndim == 1 else None for name, a in arrays.items()}
    if None in lengths.values():
        bad = [name for name, n in lengths.items() if n is None]
        raise CatalogError(f"{cell} returned columns {bad} that are not 1-d arrays")
    if len(set(lengths.values())) > 1:
        raise CatalogError(f"{cell} returned columns of unequal length: {lengths}")
    if "x" in arrays and "y" in arrays and not len(arrays["x"]):
        # An empty list has no dtype to speak of: an empty cell is fine, with float positions.
        arrays["x"], arrays["y"] = arrays["x"].astype(np.float64), arrays["y"].astype(np.float64)
    return Table(arrays)


@dataclass(frozen=True)
class CellOwnership:
    """Which cell owns each pixel: the cores of a grid, indexed for fast lookup.

    Parameters
    ----------
    cores : `numpy.ndarray`
        ``(n, 4)`` int array of the cells' cores, ``(minX, minY, maxX, maxY)``, in grid order.
    """

    cores: np.ndarray
    _bin: int = field(init=False, repr=False)
    _bins: dict[tuple[int, int], np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cores = np.asarray(self.cores, dtype=np.int64).reshape(-1, 4)
        object.__setattr__(self, "cores", cores)
        # Bins as large as the largest core: a pixel's candidates are then those of one bin.
        size = int(max(1, (cores[:, 2:] - cores[:, :2] + 1).max())) if len(cores) else 1
        object.__setattr__(self, "_bin", size)
        lo, hi = np.floor_divide(cores[:, :2], size), np.floor_divide(cores[:, 2:], size)
        bins: dict[tuple[int, int], list[int]] = {}
        for number, (bx0, by0, bx1, by1) in enumerate(np.concatenate([lo, hi], axis=1).tolist()):
            for bx in range(bx0, bx1 + 1):
                for by in range(by0, by1 + 1):
                    bins.setdefault((bx, by), []).append(number)
        object.__setattr__(self, "_bins", {key: np.array(v, dtype=np.int64) for key, v in bins.items()})

    def owners(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """The owning cell (its number in grid order) of each pixel ``(px, py)``; -1 where none.

        Parameters
        ----------
        px, py : `numpy.ndarray`
            Integer pixel coordinates, in the cores' frame.
        """
        px, py = np.asarray(px, dtype=np.int64), np.asarray(py, dtype=np.int64)
        owner = np.full(px.shape, -1, dtype=np.int64)
        if not px.size or not len(self.cores):
            return owner
        keys = np.stack([np.floor_divide(px, self._bin), np.floor_divide(py, self._bin)], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        for k, key in enumerate(unique.tolist()):
            candidates = self._bins.get((key[0], key[1]))
            if candidates is None:
                continue
            rows = np.flatnonzero(inverse.ravel() == k)
            owner[rows] = self._nearest(candidates, px[rows], py[rows])
        return owner

    def _nearest(self, candidates: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        c = self.cores[candidates]  # (m, 4)
        inside = (
            (px[:, None] >= c[None, :, 0])
            & (px[:, None] <= c[None, :, 2])
            & (py[:, None] >= c[None, :, 1])
            & (py[:, None] <= c[None, :, 3])
        )
        # Twice the distance to the centre, squared, in integers: exact, so ties are real ties.
        dx = 2 * px[:, None] - (c[None, :, 0] + c[None, :, 2])
        dy = 2 * py[:, None] - (c[None, :, 1] + c[None, :, 3])
        distance = np.where(inside, dx * dx + dy * dy, np.iinfo(np.int64).max)
        best = np.argmin(distance, axis=1)  # the first minimum: candidates are in grid order
        return np.where(inside.any(axis=1), candidates[best], -1)


@dataclass(frozen=True)
class OwnedRows:
    """A cell's rows that it owns, and how many of the others were dropped and why."""

    table: Any
    outside: int  # rows whose pixel lies in no core
    elsewhere: int  # rows owned by another cell (the same source, kept there)


def owned_rows(
    table: Any, number: int, grid_index: Any, ownership: CellOwnership, column: str = "grid_index"
) -> OwnedRows:
    """The rows of cell ``number``'s table that it owns, with its ``grid_index`` added (as ``column``).

    Parameters
    ----------
    table : `~astropy.table.Table`
        The cell's rows, ``x`` and ``y`` already in the cores' (full image's) frame.
    number : `int`
        The cell's position in grid order.
    grid_index : `int` or `tuple` of `int`
        The cell's grid index (or number), stored in every kept row.
    ownership : `CellOwnership`
        The grid's owners.
    column : `str`
        The name of the column that holds ``grid_index``.
    """
    if column in table.colnames:
        raise CatalogError(f"cell {grid_index} returned a {column!r} column; that name is the catalog's own: rename it")
    owner = ownership.owners(round_half_up(table["x"]), round_half_up(table["y"]))
    mine = owner == number
    kept = table[mine]
    index = np.empty((len(kept), *np.shape(grid_index)), dtype=np.int64)
    index[:] = grid_index
    kept[column] = index
    return OwnedRows(kept, int((owner < 0).sum()), int(((owner >= 0) & ~mine).sum()))


def mapper_catalog(result: Any, label: str) -> Any:
    """The table a Task mapper returned for one cell (its ``Struct(catalog=...)``), read by `as_table`."""
    if not hasattr(result, "catalog"):
        raise CatalogError(
            f"the mapper's result for {label} has no 'catalog': with reduceOperation='catalog' the mapper "
            f"returns Struct(catalog=table); got {type(result).__name__}"
        )
    return as_table(result.catalog, label)


def _signature(table: Any) -> list[tuple[str, str, str]]:
    return [(name, table[name].dtype.str, str(getattr(table[name], "unit", None) or "")) for name in table.colnames]


def concatenate_catalogs(parts: Sequence[tuple[str, OwnedRows]], *, column: str = GRID_INDEX) -> Any:
    """One astropy `~astropy.table.Table` of every cell's owned rows, in grid order.

    Parameters
    ----------
    parts : sequence of (`str`, `OwnedRows`)
        Each cell's label (for errors) and rows, in grid order.
    column : `str`
        The grid index column, for a result with no rows at all.

    Returns
    -------
    catalog : `~astropy.table.Table`
        The rows, with ``meta["dropped_outside_cores"]`` (rows in no core) and
        ``meta["dropped_duplicates"]`` (rows another cell owns).

    Raises
    ------
    CatalogError
        When a cell's columns (names, dtypes, units) differ from the first cell's; the message
        names both cells. Empty tables with no columns besides x and y are accepted as empty.
    """
    from astropy.table import Table, vstack

    # An empty answer with no columns besides the positions says "nothing here", not "other columns".
    filled = [(label, part) for label, part in parts if len(part.table) or not _only_positions(part.table)]
    chosen = filled or list(parts[:1])
    reference = (chosen[0][0], _signature(chosen[0][1].table)) if chosen else None
    tables = []
    for label, part in chosen:
        signature = _signature(part.table)
        if reference is not None and signature != reference[1]:
            raise CatalogError(
                f"{label} returned columns {_describe(signature)}, but {reference[0]} returned "
                f"{_describe(reference[1])}: every cell must return the same columns, dtypes and units"
            )
        tables.append(part.table)
    if tables:
        catalog = vstack(tables, join_type="exact", metadata_conflicts="silent")
    else:
        shape = (0, 2) if column == GRID_INDEX else (0,)
        catalog = Table({"x": np.zeros(0), "y": np.zeros(0), column: np.zeros(shape, dtype=np.int64)})
    catalog.meta = {
        "dropped_outside_cores": sum(p.outside for _, p in parts),
        "dropped_duplicates": sum(p.elsewhere for _, p in parts),
    }
    return catalog


def _only_positions(table: Any) -> bool:
    return set(table.colnames) <= {"x", "y", GRID_INDEX, CELL_NUMBER}


def _describe(signature: list[tuple[str, str, str]]) -> str:
    return ", ".join(f"{name} ({dtype}{', ' + unit if unit else ''})" for name, dtype, unit in signature)


class CatalogCell:
    """A cell function whose table comes back with ``x``, ``y`` in the full image's frame.

    Wraps ``func(cell, **kwargs) -> table`` of `imagemapreduce.map_reduce` with
    ``reduce="catalog"``: it passes on only the geometry keywords ``func`` asked for, and shifts
    the positions from the expanded cell's array to the image by the expanded box's origin. A
    module-level class, so that it pickles for worker processes.
    """

    def __init__(self, func: Any, wants: Sequence[str]):
        self.func = func
        self.wants = tuple(wants)
        self.__name__ = getattr(func, "__name__", repr(func))
        self.__wrapped__ = func  # the pre-flight import check on a cluster looks at func's module

    def __call__(self, cell: Any, *, cell_box: Any, expanded_box: Any, grid_index: Any, **kwargs: Any) -> Any:
        """Call the function on one cell; return its table with positions in the image's frame."""
        geometry = {"cell_box": cell_box, "expanded_box": expanded_box, "grid_index": grid_index}
        kwargs.update({name: geometry[name] for name in self.wants})
        table = as_table(self.func(cell, **kwargs), f"cell {tuple(grid_index)}")
        return shifted(table, expanded_box.getMinX(), expanded_box.getMinY())


def shifted(table: Any, dx: float, dy: float) -> Any:
    """A copy of ``table`` with ``x += dx`` and ``y += dy`` (columns keep their dtype and unit)."""
    table = table.copy(copy_data=True)
    if dx or dy:
        table["x"] = table["x"] + np.asarray(dx, dtype=table["x"].dtype)
        table["y"] = table["y"] + np.asarray(dy, dtype=table["y"].dtype)
    return table


def reduce_catalog(
    results: Sequence[Any],
    cores: np.ndarray,
    grid_indices: np.ndarray,
    labels: Sequence[str],
    column: str = GRID_INDEX,
) -> Any:
    """The catalog of a run: each cell's table (full-image ``x``, ``y``) kept where the cell owns it.

    Parameters
    ----------
    results : sequence
        Each cell's table (anything `as_table` reads), in grid order; None for a failed cell.
    cores : `numpy.ndarray`
        The cells' cores, ``(n, 4)``, in grid order.
    grid_indices : `numpy.ndarray`
        ``(n, 2)`` (or ``(n,)``): each cell's grid index (or number), stored in its rows.
    labels : sequence of `str`
        Each cell, as errors name it.
    column : `str`
        The name of the column that holds the grid indices.
    """
    ownership = CellOwnership(cores)
    parts = []
    for number, result in enumerate(results):
        if result is None:
            continue
        table = as_table(result, labels[number])
        index = np.asarray(grid_indices[number]).tolist()
        parts.append((labels[number], owned_rows(table, number, index, ownership, column)))
    return concatenate_catalogs(parts, column=column)


def candidate_owners(cores: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The cells (numbers, in grid order) whose cores overlap the bounding box of ``boxes``.

    Only these can own a pixel that a cell with an expanded box in ``boxes`` reports, so a
    batch of cells decides ownership among them alone, without the whole grid.
    """
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    return np.flatnonzero((cores[:, 0] <= x1) & (cores[:, 2] >= x0) & (cores[:, 1] <= y1) & (cores[:, 3] >= y0))


def owned_catalog(cells: Sequence[tuple[int, str, Any, Any]], cores: np.ndarray, near: np.ndarray, column: str) -> Any:
    """The rows that some cells own, decided among the cores ``near`` them (`candidate_owners`).

    Parameters
    ----------
    cells : sequence of (`int`, `str`, table, index)
        Each cell's number in grid order, label, table (full-image ``x``, ``y``) and the value of
        its ``column``, in grid order.
    cores : `numpy.ndarray`
        The whole grid's cores.
    near : `numpy.ndarray`
        The numbers of the cores that may own the cells' rows, in grid order.
    column : `str`
        The grid index column's name.
    """
    ownership = CellOwnership(cores[near])
    local = {int(n): k for k, n in enumerate(near.tolist())}
    parts = [
        (label, owned_rows(table, local[number], index, ownership, column)) for number, label, table, index in cells
    ]
    return concatenate_catalogs(parts, column=column)
