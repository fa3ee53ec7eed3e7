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

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
import dask.local
import dask.multiprocessing
import dask.threaded
from dask.base import get_scheduler
from dask.system import CPU_COUNT

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
_LOG = logging.getLogger(__name__)


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
        if self.kind == "processes" and dask.config.get("pool", None) is None:
            return _get_on_own_processes(graph, keys, self.num_workers)
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
            try:
                for future in as_completed(futures, loop=self.client.loop):
                    if future.status == "cancelled":
                        lost.append(key_of[future.key])
                        continue
                    value = future.result()  # raises the task's own error
                    future.release()
                    yield key_of[future.key], value
            except BaseException:
                # A failed cell, Ctrl-C or a consumer that stopped early: the cluster (perhaps
                # shared, and outliving this client) should not go on computing the rest.
                self.client.cancel(futures)
                raise
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
        """Check, before any work, that ``objects`` (the mapper or function) can travel to the workers.

        On worker processes and clusters they must pickle (a lambda holding a lock cannot). On a
        cluster, cells are pickled by reference to their class or function, so every worker must
        also be able to import the mapper's module (install the package on the workers, or upload
        a single module with ``client.upload_file(path)``). Checking first gives one clear error
        instead of a failure per cell. A worker that dies during the check is left out (it will
        run nothing); if none is left, that is the error.
        """
        if self.kind in ("processes", "distributed"):
            _check_picklable(objects, self.kind)
        if self.kind != "distributed":
            return
        modules = sorted({m for m in (_defining_module(o) for o in objects) if m})
        if not modules:
            return
        # The scheduler unpickles the graph too, so it needs the code as well as the workers.
        answers = {"scheduler": self.client.run_on_scheduler(_import_modules, modules)}
        workers = self._run_on_workers(_import_modules, modules)
        answers.update({f"worker {w}": missing for w, missing in workers.items()})
        for where, missing in answers.items():
            if missing:
                name, error = missing[0]
                raise ImportError(
                    f"Dask {where} cannot import module {name!r} ({error}), which defines the mapper or "
                    "function to run. Install the package that provides it on the scheduler and every worker, "
                    "or upload a single-file module with client.upload_file('path/to/module.py')"
                )

    def _run_on_workers(self, function: Callable[..., Any], *args: Any, rounds: int = 3) -> dict[str, Any]:
        """``client.run`` on every worker, leaving out the workers that die meanwhile.

        A worker that dies mid-call answers with a closed connection (an `OSError`); the others'
        answers stand. The scheduler is then asked again for workers not yet asked (a nanny may
        have restarted the dead one), up to ``rounds`` times.
        """
        answers: dict[str, Any] = {}
        lost: dict[str, BaseException] = {}
        for _ in range(rounds):
            workers = [w for w in self.client.nthreads() if w not in answers and w not in lost]
            if not workers:
                break
            died = False
            for worker, answer in self.client.run(function, *args, workers=workers, on_error="return").items():
                if isinstance(answer, OSError):  # distributed's CommClosedError, a refused connection
                    lost[worker], died = answer, True
                    _LOG.warning("Dask worker %s died during the pre-flight check (%s); checking the others",
                                 worker, answer)  # fmt: skip
                elif isinstance(answer, BaseException):  # the worker could not even run the check
                    raise answer
                else:
                    answers[worker] = answer
            if not died:
                break
        if lost and not answers:
            worker, error = next(iter(lost.items()))
            raise RuntimeError(
                f"every Dask worker of the cluster at {self.client.scheduler.address} died during the pre-flight "
                f"check ({len(lost)} lost; {worker}: {type(error).__name__}: {error}), so none is left to run "
                "on: restart the workers (their logs say why they died) and run again"
            )
        return answers

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


def _get_on_own_processes(graph: dict, keys: list, num_workers: int | None) -> list:
    """``dask.multiprocessing.get`` on a process pool that is ended, not waited for, if the run stops early.

    Dask shuts its own pool down with ``wait=True``, so a run stopped by a failed cell or by
    Ctrl-C would wait for every running cell, forever for a stuck mapper. Here an early stop
    terminates the worker processes. They ignore SIGINT, so a Ctrl-C on the terminal (sent to
    every process of the group) interrupts this process only, which then ends them.
    """
    # As dask.multiprocessing.get makes its pool: a fixed hash seed inherited by the workers, its
    # context and initializer, plus ours.
    if os.environ.get("PYTHONHASHSEED") in (None, "0"):
        os.environ["PYTHONHASHSEED"] = "6640"
    user_initializer = dask.config.get("multiprocessing.initializer", None)
    pool = ProcessPoolExecutor(
        num_workers or dask.config.get("num_workers", None) or CPU_COUNT,
        mp_context=dask.multiprocessing.get_context(),
        initializer=partial(_initialize_worker_process, user_initializer),
    )
    try:
        result = dask.multiprocessing.get(graph, keys, pool=pool)
    except BaseException:
        _terminate(pool)
        raise
    pool.shutdown()
    return result


def _initialize_worker_process(user_initializer: Callable[[], None] | None) -> None:
    """Dask's worker set-up, and SIGINT ignored: the parent process handles Ctrl-C and ends the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    dask.multiprocessing.initialize_worker_process(user_initializer)


def _terminate(pool: ProcessPoolExecutor, grace: float = 2.0) -> None:
    """End a process pool's workers now (SIGTERM, then SIGKILL after ``grace`` seconds) and shut it down."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(grace)
    pool.shutdown(wait=True, cancel_futures=True)  # quick now; joins its thread, so no queue is left open


def _check_picklable(objects: list[Any], kind: str) -> None:
    """Raise a `TypeError` naming the first of ``objects`` that cannot be pickled for worker processes."""
    import cloudpickle  # what Dask uses for both worker processes and clusters

    for obj in objects:
        try:
            cloudpickle.dump(obj, _NullWriter())
        except Exception as exc:  # noqa: BLE001 - any pickling failure is the same user error
            raise TypeError(
                f"the {_describe_code(obj)} cannot be pickled to send it to the {kind} scheduler's workers "
                f"({type(exc).__name__}: {exc}). Make it a module-level function, or a module-level class "
                "whose instances hold no locks, open files, clients or other unpicklable state; or run it "
                "on the threads scheduler"
            ) from None


class _NullWriter:
    """A file that forgets what is written to it: pickling to it checks picklability without a copy."""

    def write(self, data: Any) -> int:
        return len(memoryview(data))


def _describe_code(obj: Any) -> str:
    """``function 'f'`` (anything with a name, such as a function or its wrapper) or ``mapper MyMapper``."""
    name = getattr(obj, "__name__", None)
    return f"function {name!r}" if name is not None else f"mapper {type(obj).__name__}"


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

    obj = inspect.unwrap(obj) if hasattr(obj, "__wrapped__") else obj  # a wrapper's module may not be the code's
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
    if num_workers is not None and (
        not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1
    ):
        raise ValueError(
            f"num_workers must be a positive integer (threads or processes) or None for one per core, "
            f"got {num_workers!r}"
        )
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
