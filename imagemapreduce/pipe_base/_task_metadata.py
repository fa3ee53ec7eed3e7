"""`TaskMetadata`: hierarchical, picklable task metadata with LSST semantics.

LSST's version is a pydantic model; this one keeps the same three-slot layout
(scalars, arrays, nested metadata) and the same behaviour without the pydantic
dependency.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

__all__ = ["TaskMetadata"]

# Values are restricted to these types so metadata serialises predictably
# (this is the set LSST allows).
_ALLOWED_PRIMITIVE_TYPES: tuple[type, ...] = (str, float, int, bool)

_Slot = Literal["scalar", "array", "metadata"]


def _isListLike(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _coercePrimitive(value: Any) -> str | float | int | bool | None:
    """Return ``value`` as a Python primitive, or `None` if it is not one.

    numpy scalars are common in task code (``np.mean`` returns ``np.float64``)
    and are accepted by converting them to the matching Python type.
    """
    if type(value) in _ALLOWED_PRIMITIVE_TYPES:
        return value
    if getattr(value, "ndim", None) == 0 and getattr(getattr(value, "dtype", None), "kind", None) == "b":
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


class TaskMetadata:
    """Dict-like store for task metadata, hierarchical through dotted keys.

    Notes
    -----
    A key ``"a.b.c"`` addresses item ``c`` of the nested `TaskMetadata` ``b``
    of the nested `TaskMetadata` ``a``, so item names of one task must not
    contain ``.``. Values are `str`, `int`, `float`, `bool`, lists of one of
    those types, or nested `TaskMetadata` (a `dict` is converted to one).

    As in LSST, ``metadata[key]`` on a list-valued item returns its *last*
    element (``PropertySet`` compatibility); use `getArray` for the list.
    `add` always stores a list and appends to it; this is what
    `lsst.utils.timer.timeMethod` uses.
    """

    def __init__(self) -> None:
        self.scalars: dict[str, str | float | int | bool] = {}
        self.arrays: dict[str, list[Any]] = {}
        self.metadata: dict[str, TaskMetadata] = {}

    # ------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskMetadata:
        """Create a `TaskMetadata` from a possibly nested mapping.

        Parameters
        ----------
        d : `~collections.abc.Mapping`
            Mapping to convert; nested mappings become nested `TaskMetadata`.

        Returns
        -------
        meta : `TaskMetadata`
            Newly constructed metadata.
        """
        metadata = cls()
        for k, v in d.items():
            metadata[k] = v
        return metadata

    @classmethod
    def from_metadata(cls, ps: Any) -> TaskMetadata:
        """Create a `TaskMetadata` from a ``PropertySet``-like object.

        Parameters
        ----------
        ps : `TaskMetadata` or ``PropertySet``-like
            Object with ``paramNames(topLevelOnly)`` and ``getArray(name)``.

        Returns
        -------
        meta : `TaskMetadata`
            Newly constructed metadata; single-element lists become scalars.
        """
        metadata = cls()
        for key in sorted(ps.paramNames(topLevelOnly=False)):
            value = ps.getArray(key)
            metadata[key] = value[0] if len(value) == 1 else value
        return metadata

    def to_dict(self) -> dict[str, Any]:
        """Convert to a plain, possibly nested `dict`.

        Returns
        -------
        d : `dict`
            Scalars, lists and nested dicts (for nested metadata), all copies.
        """
        d: dict[str, Any] = dict(self.scalars)
        d.update({k: list(v) for k, v in self.arrays.items()})
        for k, v in self.metadata.items():
            d[k] = v.to_dict()
        return d

    # ----------------------------------------------------------------- writing
    def add(self, name: str, value: Any) -> None:
        """Append a value to the list stored at ``name``, creating it if needed.

        Parameters
        ----------
        name : `str`
            Name of the item; may be dotted.  Missing intermediate levels are
            created.
        value : `str`, `int`, `float`, `bool` or a list of one of those
            Value(s) to append.

        Raises
        ------
        ValueError
            Raised if the value is not a primitive or list of primitives, if
            ``name`` holds nested metadata, or if the element type would change.
        """
        # Validate before _walk so a bad value leaves no half-built levels behind.
        slot, value = self._validateValue(value)
        if slot == "metadata":
            raise ValueError("add() can only be used for primitive types or sequences of those types.")
        value = [value] if slot == "scalar" else value
        node, leaf = self._walk(name, create=True, replace=False)
        if leaf in node.metadata:
            raise ValueError(f"Can not add() to key '{name}' since that is a TaskMetadata")
        if leaf in node.scalars:
            # An item set once and then add()ed to becomes a list, as in LSST.
            node.arrays[leaf] = [node.scalars.pop(leaf)]
        current = node.arrays.setdefault(leaf, [])
        if current and value and (curtype := type(current[0])) is not (newtype := type(value[0])):
            raise ValueError(f"Type mismatch in add() -- currently {curtype} but adding {newtype}")
        current.extend(value)

    def __setitem__(self, key: str, item: Any) -> None:
        slot, item = self._validateValue(item)  # before _walk creates any level
        node, leaf = self._walk(key, create=True, replace=True)
        slots: dict[str, dict[str, Any]] = {
            "scalar": node.scalars,
            "array": node.arrays,
            "metadata": node.metadata,
        }
        slots.pop(slot)[leaf] = item
        for other in slots.values():  # a key lives in exactly one slot
            other.pop(leaf, None)

    def __delitem__(self, key: str) -> None:
        node, leaf = self._walk(key)
        for slot in (node.scalars, node.arrays, node.metadata):
            if leaf in slot:
                del slot[leaf]
                return
        raise KeyError(f"'{key}' not found")

    # ----------------------------------------------------------------- reading
    def __getitem__(self, key: str) -> Any:
        node, leaf = self._walk(key)
        if leaf in node.scalars:
            return node.scalars[leaf]
        if leaf in node.metadata:
            return node.metadata[leaf]
        if node.arrays.get(leaf):
            return node.arrays[leaf][-1]
        raise KeyError(f"'{key}' not found")

    def get(self, key: str, default: Any = None) -> Any:
        """Return the item at ``key`` (last element of a list), or ``default``.

        Parameters
        ----------
        key : `str`
            Possibly dotted key.
        default : `~typing.Any`, optional
            Value to return if ``key`` is absent.

        Returns
        -------
        value : `~typing.Any`
            As for ``self[key]`` (so a list gives its last element), or ``default``.
        """
        try:
            return self[key]
        except KeyError:
            return default

    def getScalar(self, key: str) -> str | int | float | bool:
        """Return a scalar item, or the last element of a list item.

        Parameters
        ----------
        key : `str`
            Possibly dotted key; `KeyError` is raised if it is absent.

        Returns
        -------
        value : `str`, `int`, `float` or `bool`
            The value.
        """
        return self[key]

    def getArray(self, key: str) -> list[Any]:
        """Return an item as a list, even if it was stored as a scalar.

        Parameters
        ----------
        key : `str`
            Possibly dotted key.

        Returns
        -------
        values : `list`
            The stored list itself (not a copy), or a one-element list.
            `KeyError` is raised if ``key`` is absent.
        """
        node, leaf = self._walk(key)
        if leaf in node.arrays:
            return node.arrays[leaf]
        if leaf in node.scalars:
            return [node.scalars[leaf]]
        if leaf in node.metadata:
            return [node.metadata[leaf]]
        raise KeyError(f"'{key}' not found")

    def __contains__(self, key: object) -> bool:
        try:
            node, leaf = self._walk(key)  # type: ignore[arg-type]
        except KeyError:
            return False
        return leaf in node.scalars or leaf in node.arrays or leaf in node.metadata

    def names(self) -> set[str]:
        """Return every hierarchical key, including intermediate levels.

        Returns
        -------
        names : `set` [`str`]
            E.g. ``{"a", "a.b", "a.b.c"}`` for a single item ``"a.b.c"`` (as
            in LSST; use ``paramNames(topLevelOnly=False)`` for leaves only).
        """
        names: set[str] = set()
        for k, v in self.items():
            names.add(k)
            if isinstance(v, TaskMetadata):
                names.update(f"{k}.{item}" for item in v.names())
        return names

    def paramNames(self, topLevelOnly: bool) -> set[str]:
        """Return the names of the value-holding (leaf) items.

        Parameters
        ----------
        topLevelOnly : `bool`
            If `True`, only leaves at this level; if `False`, the full dotted
            names of leaves at every level.

        Returns
        -------
        paramNames : `set` [`str`]
            Names of leaves; keys of nested metadata are never included.
        """
        paramNames: set[str] = set()
        for k, v in self.items():
            if isinstance(v, TaskMetadata):
                if not topLevelOnly:
                    paramNames.update(f"{k}.{item}" for item in v.paramNames(topLevelOnly=False))
            else:
                paramNames.add(k)
        return paramNames

    def keys(self) -> tuple[str, ...]:
        """Return the top-level keys: scalars, then lists, then nested metadata.

        Returns
        -------
        keys : `tuple` [`str`]
            Keys; an item moves group when it changes kind, as in LSST.
        """
        return tuple(self)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Yield the top-level ``(key, value)`` pairs; lists are yielded whole.

        Yields
        ------
        item : `tuple` [`str`, `~typing.Any`]
            Key and value, in the order of `keys`.
        """
        yield from itertools.chain(self.scalars.items(), self.arrays.items(), self.metadata.items())

    def __len__(self) -> int:
        return len(self.scalars) + len(self.arrays) + len(self.metadata)

    def __iter__(self) -> Iterator[str]:
        return itertools.chain(iter(self.scalars), iter(self.arrays), iter(self.metadata))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskMetadata):
            return NotImplemented
        return (self.scalars, self.arrays, self.metadata) == (other.scalars, other.arrays, other.metadata)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    # ----------------------------------------------------------------- helpers
    def _walk(self, key: str, *, create: bool = False, replace: bool = False) -> tuple[TaskMetadata, str]:
        """Return the `TaskMetadata` that holds the last part of a dotted key.

        Parameters
        ----------
        key : `str`
            Possibly dotted key, e.g. ``"a.b.c"`` gives ``(self["a.b"], "c")``.
        create : `bool`, optional
            Create missing intermediate levels instead of raising `KeyError`.
        replace : `bool`, optional
            With ``create``, let a new level replace a value of the same name
            (assignment semantics) instead of raising `ValueError` (`add`).
        """
        if not isinstance(key, str):
            raise KeyError(f"Invalid key {key!r}: only string keys are allowed")
        *path, leaf = key.split(".")
        node = self
        for part in path:
            child = node.metadata.get(part)
            if child is None:
                if not create:
                    # Report the whole key, not the part missing at this level.
                    raise KeyError(f"'{key}' not found")
                if not replace and (part in node.scalars or part in node.arrays):
                    raise ValueError(f"Can not add() to key '{key}' since '{part}' is not a TaskMetadata")
                node.scalars.pop(part, None)
                node.arrays.pop(part, None)
                child = node.metadata[part] = TaskMetadata()
            node = child
        return node, leaf

    def _validateValue(self, value: Any) -> tuple[_Slot, Any]:
        """Classify a value by slot and convert it to its stored form.

        Parameters
        ----------
        value : `~typing.Any`
            Value to check.

        Returns
        -------
        slot : `str`
            ``"scalar"``, ``"array"`` or ``"metadata"``.
        item : `~typing.Any`
            The value converted for storage (lists are always new lists).

        Raises
        ------
        ValueError
            Raised for an unsupported value or element type, or mixed element types.
        """
        scalar = _coercePrimitive(value)
        if scalar is not None:
            return "scalar", scalar
        if isinstance(value, TaskMetadata):
            return "metadata", value
        if isinstance(value, Mapping):
            return "metadata", self.from_dict(value)
        if getattr(value, "ndim", None) == 1 and hasattr(value, "tolist"):
            # 1-d numpy arrays: tolist() yields Python primitives.
            value = value.tolist()
        if _isListLike(value):
            items = list(value)
            converted = [_coercePrimitive(v) for v in items]
            if any(c is None for c in converted):
                raise ValueError("TaskMetadata can only accept primitive types in lists.")
            if len({type(c) for c in converted}) > 1:
                raise ValueError(
                    "Type mismatch in supplied list. TaskMetadata requires all elements have the same type "
                    f"but got {sorted({type(c).__name__ for c in converted})}."
                )
            return "array", converted
        raise ValueError(f"TaskMetadata does not support values of type {type(value).__name__}: {value!r}.")
