"""`Task`: the ``lsst.pipe.base.Task`` base class, made picklable for Dask."""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

from lsst.pex.config import Config, ConfigurableField
from lsst.utils.timer import logInfo

from ._task_metadata import TaskMetadata

__all__ = ["Task", "TaskError"]

# Key under which __getstate__ stores (fullName, task) for every descendant.
_DESCENDANTS_KEY = "_pickledDescendants"


class TaskError(Exception):
    """Report an error for which a traceback is not useful.

    Notes
    -----
    For example: a task is asked to process data that turns out to be
    unusable, such as an image with no valid pixels.
    """


class Task:
    r"""Base class for data processing tasks.

    Parameters
    ----------
    config : `lsst.pex.config.Config`, optional
        Configuration for this task, an instance of ``ConfigClass``. If `None`:
        a subtask uses ``getattr(parentTask.config, name)``; a top-level task
        uses ``self.ConfigClass()``.
    name : `str`, optional
        Brief name of the task; defaults to ``_DefaultName``. Required for a
        subtask.
    parentTask : `Task`, optional
        The parent of this subtask, or `None` for a top-level task.
    log : `logging.Logger`, optional
        Logger whose name prefixes this top-level task's logger name. Ignored
        for subtasks, whose logger is ``parentTask.log.getChild(name)``.

    Raises
    ------
    RuntimeError
        Raised if a subtask has no ``name``, if a top-level task has neither
        ``name`` nor ``_DefaultName``, or if ``config`` is `None` and there is
        no ``ConfigClass``.

    Notes
    -----
    Subclasses set the class attributes ``ConfigClass`` (a subclass of
    `lsst.pex.config.Config`) and ``_DefaultName``, and usually time their
    ``run`` method with `lsst.utils.timer.timeMethod`, which writes into
    ``self.metadata`` (a `TaskMetadata`) and logs through ``self.log``.

    Subtasks share their parent's task dictionary (full name to
    `weakref.ref`), so any task in a hierarchy can reach all of the others.

    Tasks pickle (Dask ships them to worker processes). The logger travels
    by name, and the unpickled task becomes the root of its own hierarchy:
    pickling a subtask brings its own subtasks but not its parent, and it
    keeps its full name (e.g. ``"top.sub"``).
    """

    ConfigClass: ClassVar[type[Config]]
    _DefaultName: ClassVar[str]

    def __init__(
        self,
        config: Config | None = None,
        *,
        name: str | None = None,
        parentTask: Task | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.metadata = TaskMetadata()
        # A weak reference, like LSST's, so a subtask does not keep its parent alive.
        self._parentRef: weakref.ReferenceType[Task] | None = None

        if parentTask is not None:
            if name is None:
                raise RuntimeError("name is required for a subtask")
            self._parentRef = weakref.ref(parentTask)
            self._name = name
            self._fullName = parentTask._computeFullName(name)
            if config is None:
                config = getattr(parentTask.config, name)
            self._taskDict: dict[str, weakref.ReferenceType[Task]] = parentTask._taskDict
            logger = parentTask.log.getChild(name)
        else:
            if name is None:
                name = getattr(self, "_DefaultName", None)
                if name is None:
                    raise RuntimeError("name is required for a task unless it has attribute _DefaultName")
            self._name = name
            self._fullName = name
            if config is None:
                configClass = getattr(self, "ConfigClass", None)
                if configClass is None:
                    raise RuntimeError(f"{type(self).__name__} has no ConfigClass; pass config explicitly")
                config = configClass()
            self._taskDict = {}
            # LSST also prefixes the module's root package when no log is
            # given; we do not, so the logger name is exactly the full name.
            if log is not None and log.name:
                logger = log.getChild(self._fullName)
            else:
                logger = logging.getLogger(self._fullName)

        self.log: logging.Logger = logger
        self.config: Config = config
        self.config.validate()
        self._taskDict[self._fullName] = weakref.ref(self)

    @property
    def _parentTask(self) -> Task | None:
        """The parent task, or `None` for a top-level (or unpickled) task."""
        return None if self._parentRef is None else self._parentRef()

    # ------------------------------------------------------------- hierarchy
    def _iterTasks(self, *, descendantsOnly: bool = False) -> Iterator[tuple[str, Task]]:
        """Yield ``(fullName, task)`` for the hierarchy, sorted by full name.

        Parameters
        ----------
        descendantsOnly : `bool`, optional
            If `True`, only this task's subtasks, sub-subtasks, etc.
        """
        prefix = self._fullName + "."
        for fullName, wref in sorted(self._taskDict.items()):
            if descendantsOnly and not fullName.startswith(prefix):
                continue
            task = wref()
            if task is None:
                raise RuntimeError(f"Unexpected garbage collection of subtask {fullName!r}")
            yield fullName, task

    def emptyMetadata(self) -> None:
        """Empty (clear) the metadata for this Task and all sub-Tasks."""
        self.metadata = TaskMetadata()
        for _, task in self._iterTasks(descendantsOnly=True):
            task.metadata = TaskMetadata()

    def getSchemaCatalogs(self) -> dict[str, Any]:
        """Get the schemas generated by this task.

        Returns
        -------
        schemaCatalogs : `dict`
            Dataset type to empty catalog for this task; `Task` returns ``{}``.
            Subclasses that produce catalogs override this method.
        """
        return {}

    def getAllSchemaCatalogs(self) -> dict[str, Any]:
        """Get schema catalogs for all tasks in the hierarchy, in one dict.

        Returns
        -------
        schemaCatalogs : `dict`
            Merged `getSchemaCatalogs` of every task, from the top-level task
            down; the answer is the same whichever task it is called on.
        """
        schemaDict: dict[str, Any] = {}
        for _, task in self._iterTasks():
            schemaDict.update(task.getSchemaCatalogs())
        return schemaDict

    def getFullMetadata(self) -> TaskMetadata:
        """Get metadata for all tasks in the hierarchy.

        Returns
        -------
        metadata : `TaskMetadata`
            One entry per task, keyed by its full name with ``.`` replaced by
            ``:``, holding that task's metadata (the same object, not a copy),
            so items read as ``top:sub.itemName``.

        Notes
        -----
        The ``:`` keeps a subtask named like one of its parent's metadata items
        from colliding with that item.
        """
        fullMetadata = TaskMetadata()
        for fullName, task in self._iterTasks():
            fullMetadata[fullName.replace(".", ":")] = task.metadata
        return fullMetadata

    def getFullName(self) -> str:
        """Get the task name including the names of all parent tasks.

        Returns
        -------
        fullName : `str`
            Names separated by periods: ``"top"``, ``"top.sub"``,
            ``"top.sub.sub2"``.
        """
        return self._fullName

    def getName(self) -> str:
        """Get the brief name of the task.

        Returns
        -------
        taskName : `str`
            Name of the task, e.g. ``"sub2"`` for ``"top.sub.sub2"``.
        """
        return self._name

    def getTaskDict(self) -> dict[str, weakref.ReferenceType[Task]]:
        """Get a dictionary of all tasks in the hierarchy, as a shallow copy.

        Returns
        -------
        taskDict : `dict` [`str`, `weakref.ref`]
            Full task name to a weak reference to the task, for the top-level
            task and all subtasks, sub-subtasks, etc.
        """
        return self._taskDict.copy()

    def makeSubtask(self, name: str, **keyArgs: Any) -> None:
        """Create a subtask and store it as attribute ``name`` of this task.

        Parameters
        ----------
        name : `str`
            Brief name of the subtask; ``self.config.<name>`` must be a
            `~lsst.pex.config.ConfigurableField` or
            `~lsst.pex.config.RegistryField`.
        **keyArgs
            Extra keyword arguments for the subtask constructor; ``config`` and
            ``parentTask`` are supplied here and cannot be overridden.

        Raises
        ------
        KeyError
            Raised if the config has no field ``name``.
        """
        taskField = getattr(self.config, name, None)
        if taskField is None:
            raise KeyError(f"{self.getFullName()}'s config does not have field {name!r}")
        subtask = taskField.apply(name=name, parentTask=self, **keyArgs)
        setattr(self, name, subtask)

    @contextlib.contextmanager
    def timer(self, name: str, logLevel: int = logging.DEBUG) -> Iterator[None]:
        """Time a block of code into this task's metadata and log.

        Parameters
        ----------
        name : `str`
            Prefix of the items recorded: ``<name>StartUtc``,
            ``<name>EndCpuTime``, etc. (see `lsst.utils.timer.logInfo`).
        logLevel : `int`, optional
            A `logging` level for the log message.

        Yields
        ------
        None
            The ``End`` items are written even if the block raises.

        Examples
        --------
        .. code-block:: python

            with self.timer("someCodeToTime"):
                pass  # code to time
        """
        logInfo(obj=self, prefix=name + "Start", logLevel=logLevel)
        try:
            yield
        finally:
            logInfo(obj=self, prefix=name + "End", logLevel=logLevel)

    @classmethod
    def makeField(cls, doc: str) -> ConfigurableField:
        """Make a `lsst.pex.config.ConfigurableField` targeting this task.

        Parameters
        ----------
        doc : `str`
            Help text for the field.

        Returns
        -------
        configurableField : `lsst.pex.config.ConfigurableField`
            A field whose target is this class.

        Examples
        --------
        .. code-block:: python

            class OtherTaskConfig(lsst.pex.config.Config):
                aSubtask = ATaskClass.makeField("brief description of task")
        """
        return ConfigurableField(doc=doc, target=cls)

    def _computeFullName(self, name: str) -> str:
        """Return the full name of a subtask (or item) with brief name ``name``."""
        return f"{self._fullName}.{name}"

    # -------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """Return the state to pickle.

        Loggers and weak references do not pickle, so the logger is replaced
        by its name and the task dict by strong references to this task's
        descendants; the parent is dropped (an unpickled task is a root).
        """
        state = self.__dict__.copy()
        state["log"] = self.log.name
        state.pop("_taskDict", None)
        state.pop("_parentRef", None)
        # Unlike _iterTasks, skip dead entries: a subtask that nobody kept has
        # nothing to restore, and should not stop the rest from pickling.
        prefix = self._fullName + "."
        state[_DESCENDANTS_KEY] = [
            (fullName, task)
            for fullName, wref in sorted(self._taskDict.items())
            if fullName.startswith(prefix) and (task := wref()) is not None
        ]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore from `__getstate__`, rebuilding the shared task dict.

        Notes
        -----
        Pickle normally restores descendants before their ancestor. In a cyclic
        structure it may restore an ancestor first, in which case the ancestor
        has already wired this task into its dict; that wiring is kept.
        """
        state = dict(state)
        descendants: list[tuple[str, Task]] = state.pop(_DESCENDANTS_KEY, [])
        wired = "_taskDict" in self.__dict__
        taskDict, parentRef = self.__dict__.get("_taskDict", {}), self.__dict__.get("_parentRef")
        state["log"] = logging.getLogger(state["log"])
        self.__dict__.update(state)
        self._taskDict = taskDict
        self._parentRef = parentRef if wired else None
        taskDict[self._fullName] = weakref.ref(self)
        for fullName, task in descendants:
            taskDict[fullName] = weakref.ref(task)
        for fullName, task in descendants:
            # Write __dict__ directly: ``task`` may not be restored yet, and its
            # own __setstate__ must then see that it has been wired.
            task.__dict__["_taskDict"] = taskDict
            task.__dict__["_parentRef"] = taskDict.get(fullName.rpartition(".")[0])
