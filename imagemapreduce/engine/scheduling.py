"""Choosing a Dask scheduler and running a graph on it.

The rules, in order:

1. A ``distributed.Client`` object given explicitly is used.
2. A scheduler address (``tcp://host:port``) connects a client for the run and closes it after.
3. A name: ``"synchronous"`` (also ``"sync"``, ``"single-threaded"``), ``"threads"`` (``"threading"``),
   ``"processes"`` (``"multiprocessing"``), or ``"distributed"`` (the current client; an error if none).
4. ``None``: Dask's current default, as ``dask.compute`` would pick it: the scheduler set with
   ``dask.config.set(scheduler=...)``, else an active ``distributed.Client``, else threads.

``num_workers`` sizes the thread or process pool; a cluster uses the workers it has.
Nothing here sets a scheduler globally.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask
import dask.local
import dask.multiprocessing
import dask.threaded
from dask.base import get_scheduler

__all__ = ["SchedulerChoice", "choose_scheduler", "SCHEDULER_NAMES"]

_ALIASES = {
    "sync": "synchronous",
    "synchronous": "synchronous",
    "single-threaded": "synchronous",
    "threads": "threads",
    "threading": "threads",
    "processes": "processes",
    "multiprocessing": "processes",
    "distributed": "distributed",
}
#: Scheduler names accepted by `choose_scheduler`.
SCHEDULER_NAMES = tuple(sorted(_ALIASES))


@dataclass
class SchedulerChoice:
    """A resolved scheduler: what kind it is, and how to run a graph on it."""

    kind: str
    num_workers: int | None = None
    client: Any = None
    owns_client: bool = False

    @property
    def shares_memory(self) -> bool:
        """Whether tasks run in this process and may write into the caller's arrays."""
        return self.kind in ("synchronous", "threads")

    def get(self, graph: dict, keys: list) -> list:
        """Compute ``keys`` of a graph and return their values in order."""
        if self.kind == "distributed":
            values = dict(self._distributed(graph, keys))
            return [values[key] for key in keys]
        return self._local_get()(graph, keys, **self._local_kwargs())

    def iterate(self, graph: dict, keys: list) -> Iterator[Any]:
        """Yield the values of ``keys`` (in any order), releasing each as soon as it is consumed."""
        if self.kind != "distributed":
            yield from self.get(graph, keys)
            return
        for _, value in self._distributed(graph, keys):
            yield value

    def _distributed(self, graph: dict, keys: list, resubmits: int = 3) -> Iterator[tuple[Any, Any]]:
        """Yield ``(key, value)`` as results arrive from the cluster.

        Dask reruns the tasks of a worker that dies, but pixels we scattered to that worker are
        gone with it, and the tasks that needed them are cancelled. Those keys are submitted
        again with their pixels scattered afresh; every task is deterministic, so the answer is
        the same bits.
        """
        from distributed import as_completed

        remaining = list(keys)
        for attempt in range(resubmits + 1):
            # A resubmission uses fresh key names: the scheduler still remembers the lost ones.
            renamed, names = _renamed(graph, attempt), [_rename_key(key, attempt) for key in remaining]
            futures = self.client.get(self._scatter_pixels(renamed), names, sync=False)
            key_of = {future.key: key for future, key in zip(futures, remaining)}
            lost = []
            for future in as_completed(futures, loop=self.client.loop):
                if future.status == "cancelled":
                    lost.append(key_of[future.key])
                    continue
                value = future.result()  # raises the task's own error
                future.release()
                yield key_of[future.key], value
            if not lost:
                return
            remaining = lost
        raise RuntimeError(
            f"{len(remaining)} tasks were lost with their workers {resubmits + 1} times; is the cluster stable?"
        )

    def _scatter_pixels(self, graph: dict) -> dict:
        """Send the pixel arguments of every task straight to the workers, keeping them out of the graph.

        In-memory cells are views of their expanded boxes; shipping them inside the graph would make
        the graph as large as the image (and pass it through the scheduler). Scattered, each view
        goes once from here to one worker, and the graph holds only references.
        """
        literals: list[Any] = []
        where: list[tuple[Any, int]] = []
        for key, task in graph.items():
            if isinstance(task, tuple) and task and callable(task[0]):
                for position, arg in enumerate(task[1:], start=1):
                    if _holds_pixels(arg):
                        literals.append(arg)
                        where.append((key, position))
        if not literals:
            return graph
        futures = self.client.scatter(literals, hash=False)
        graph = dict(graph)
        for (key, position), future in zip(where, futures):
            task = list(graph[key])
            task[position] = future
            graph[key] = tuple(task)
        return graph

    def check_importable(self, objects: list[Any]) -> None:
        """On a cluster, check that every worker can import the modules defining ``objects``.

        Cells are pickled by reference to their class or function, so a worker must be able to
        import the mapper's module (install the package on the workers, or upload a single module
        with ``client.upload_file(path)``). Checking first gives one clear error instead of a
        failure per cell.
        """
        if self.kind != "distributed":
            return
        modules = sorted({m for m in (_defining_module(o) for o in objects) if m})
        if not modules:
            return
        # The scheduler unpickles the graph too, so it needs the code as well as the workers.
        answers = {"the scheduler": self.client.run_on_scheduler(_import_modules, modules)}
        answers.update({f"worker {w}": missing for w, missing in self.client.run(_import_modules, modules).items()})
        for where, missing in answers.items():
            if missing:
                name, error = missing[0]
                raise ImportError(
                    f"Dask {where} cannot import module {name!r} ({error}), which defines the mapper or "
                    "function to run. Install the package that provides it on the scheduler and every worker, "
                    "or upload a single-file module with client.upload_file('path/to/module.py')"
                )

    def _local_get(self):
        return {
            "synchronous": dask.local.get_sync,
            "threads": dask.threaded.get,
            "processes": dask.multiprocessing.get,
        }[self.kind]

    def _local_kwargs(self) -> dict[str, Any]:
        if self.kind in ("threads", "processes") and self.num_workers:
            return {"num_workers": self.num_workers}
        return {}

    def describe(self) -> str:
        """A short description for logs and metadata."""
        if self.kind == "distributed":
            return f"distributed ({self.client.scheduler.address})"
        workers = f", {self.num_workers} workers" if self.num_workers else ""
        return f"{self.kind}{workers}"

    def close(self) -> None:
        """Close a client this choice opened itself."""
        if self.owns_client and self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self) -> SchedulerChoice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rename_key(key: Any, attempt: int) -> Any:
    """Our keys (tuples named ``imr-...``) with an attempt suffix; other keys unchanged."""
    if attempt and isinstance(key, tuple) and key and isinstance(key[0], str) and key[0].startswith("imr-"):
        return (f"{key[0]}-retry{attempt}", *key[1:])
    return key


def _renamed(graph: dict, attempt: int) -> dict:
    """The graph with our keys renamed, in the keys and wherever tasks refer to them."""
    if attempt == 0:
        return graph

    def walk(obj: Any) -> Any:
        if isinstance(obj, list):
            return [walk(item) for item in obj]
        if isinstance(obj, tuple):
            renamed = _rename_key(obj, attempt)
            if renamed is not obj:
                return renamed
            return tuple(walk(item) for item in obj)
        return obj

    return {_rename_key(key, attempt): walk(task) for key, task in graph.items()}


def _holds_pixels(arg: Any) -> bool:
    """Whether a task argument is pixel data (an array or an image container), not a task or key."""
    import numpy as np

    from ..image import Exposure, Image, MaskedImage
    from .sources import DEFERRED_CUTS

    return isinstance(arg, (np.ndarray, Exposure, MaskedImage, Image, *DEFERRED_CUTS))


def _defining_module(obj: Any) -> str | None:
    """The module a worker must import to unpickle ``obj`` (None for ``__main__``, pickled by value)."""
    import inspect

    target = obj if isinstance(obj, type) or inspect.isroutine(obj) else type(obj)
    module = getattr(target, "__module__", None)
    if module in (None, "__main__", "builtins"):
        return None
    return module


def _import_modules(names: list[str]) -> list[tuple[str, str]]:
    """Run on a worker: the modules it cannot import, with the error."""
    import importlib

    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported back to the client
            missing.append((name, f"{type(exc).__name__}: {exc}"))
    return missing


def _is_client(obj: Any) -> bool:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(obj, Client)


def _connect(address: str, timeout: float) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(
            f"cannot reach a Dask scheduler at {address!r} within {timeout:g} s ({exc}); "
            "start one (`dask scheduler`) or pass scheduler=None to run locally"
        ) from None


def choose_scheduler(scheduler: Any = None, num_workers: int | None = None, timeout: float = 10.0) -> SchedulerChoice:
    """Resolve a scheduler argument into a `SchedulerChoice` (see the module docs for the rules).

    Parameters
    ----------
    scheduler : `str`, ``distributed.Client`` or `None`
        A scheduler name, a scheduler address, a client, or None for Dask's current default.
    num_workers : `int`, optional
        Threads or processes to use locally.
    timeout : `float`
        Seconds to wait when connecting to a scheduler address.
    """
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
        raise ValueError(f"num_workers must be a positive integer or None, got {num_workers!r}")
    if _is_client(scheduler):
        return SchedulerChoice("distributed", num_workers, scheduler)
    if isinstance(scheduler, str) and "://" in scheduler:
        return SchedulerChoice("distributed", num_workers, _connect(scheduler, timeout), owns_client=True)
    if isinstance(scheduler, str):
        kind = _ALIASES.get(scheduler.lower())
        if kind is None:
            raise ValueError(
                f"unknown scheduler {scheduler!r}; use one of {', '.join(SCHEDULER_NAMES)}, "
                "a scheduler address such as 'tcp://127.0.0.1:8786', a distributed.Client, or None"
            )
        if kind == "distributed":
            return SchedulerChoice("distributed", num_workers, _current_client())
        return SchedulerChoice(kind, num_workers)
    if scheduler is not None:
        raise TypeError(
            f"scheduler must be a name, an address, a distributed.Client or None; got {type(scheduler).__name__}"
        )
    return _default_choice(num_workers)


def _current_client() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except ValueError:
        raise ValueError(
            "scheduler='distributed' needs an active distributed.Client; create one first "
            "(client = distributed.Client(...)) or pass the client or its address as the scheduler"
        ) from None


def _default_choice(num_workers: int | None) -> SchedulerChoice:
    """Dask's current default scheduler, as dask.compute would choose it."""
    get = get_scheduler()
    owner = getattr(get, "__self__", None)
    if _is_client(owner):
        return SchedulerChoice("distributed", num_workers, owner)
    if get is dask.local.get_sync:
        return SchedulerChoice("synchronous", num_workers)
    if get is dask.multiprocessing.get:
        return SchedulerChoice("processes", num_workers)
    if get is None or get is dask.threaded.get:
        return SchedulerChoice("threads", num_workers)
    # A custom get function set in dask.config: wrap it.
    return _CustomChoice("custom", num_workers, get_function=get)


@dataclass
class _CustomChoice(SchedulerChoice):
    """A scheduler function configured by the user (``dask.config.set(scheduler=fn)``)."""

    get_function: Any = None

    def _local_get(self):
        return self.get_function
