"""`Struct`: the attribute bag that LSST tasks return from ``run``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Struct"]


class Struct:
    """A container to which fields are added as attributes.

    Parameters
    ----------
    **keyArgs
        Keyword arguments specifying the fields and their values.

    Raises
    ------
    RuntimeError
        Raised if a field name starts with ``__`` or clashes with an existing
        attribute (for example a method name such as ``copy``).

    Notes
    -----
    This mirrors ``lsst.pipe.base.Struct``: a task's ``run`` returns one so that
    callers read results by name (``result.exposure``) rather than by tuple
    position, which keeps callers working when results are added.

    Examples
    --------
    >>> s = Struct(strVal="a string", intVal=35)
    >>> s.intVal
    35
    """

    def __init__(self, **keyArgs: Any) -> None:
        for name, val in keyArgs.items():
            self.__safeAdd(name, val)

    if TYPE_CHECKING:
        # Fields are set per instance, by name, so a type checker cannot know them: it reads any
        # field as `Any`. Only for type checkers: at run time a missing field still raises
        # AttributeError (and `hasattr`, which __safeAdd relies on, still answers False).
        def __getattr__(self, name: str) -> Any: ...

    def __setattr__(self, name: str, value: Any) -> None:
        # LSST only checks names on construction and in mergeItems; refusing
        # dunder names on plain assignment too keeps getDict()/__eq__ free of
        # names that could collide with Python's own machinery.
        if name.startswith("__"):
            raise RuntimeError(f"Item name {name!r} invalid; must not begin with __")
        super().__setattr__(name, value)

    def __safeAdd(self, name: str, val: Any) -> None:
        """Add a field that must not exist yet and must not start with ``__``.

        Parameters
        ----------
        name : `str`
            Name of the field to add.
        val : `object`
            Value of the field.

        Raises
        ------
        RuntimeError
            Raised if ``name`` already exists or starts with ``__``.
        """
        if hasattr(self, name):
            raise RuntimeError(f"Item {name!r} already exists")
        if name.startswith("__"):
            raise RuntimeError(f"Item name {name!r} invalid; must not begin with __")
        setattr(self, name, val)

    def getDict(self) -> dict[str, Any]:
        """Get a dictionary of the fields in this struct.

        Returns
        -------
        structDict : `dict`
            Field names as keys and field values as values; the dict is a new
            object but the values are not copied.
        """
        return self.__dict__.copy()

    def mergeItems(self, struct: Struct, *nameList: str) -> None:
        """Copy the named fields from another struct; they must not exist here.

        Parameters
        ----------
        struct : `Struct`
            Struct from which to copy.
        *nameList : `str`
            Names of the items to copy.

        Raises
        ------
        RuntimeError
            Raised if a name in ``nameList`` already exists in ``self``; items
            earlier in ``nameList`` will already have been copied (as in LSST).
        AttributeError
            Raised if ``struct`` has no item of a requested name.
        """
        for name in nameList:
            self.__safeAdd(name, getattr(struct, name))

    def copy(self) -> Struct:
        """Make a one-level-deep copy (the values themselves are shared).

        Returns
        -------
        copy : `Struct`
            New struct with the same fields.
        """
        return Struct(**self.getDict())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Struct):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __len__(self) -> int:
        return len(self.__dict__)

    def __repr__(self) -> str:
        itemsStr = "; ".join(f"{name}={val}" for name, val in self.getDict().items())
        return f"{self.__class__.__name__}({itemsStr})"
