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

import atexit
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dask
import dask.local
import dask.multiprocessing
import dask.threaded
import numpy as np
from dask.base import get_scheduler
from dask.core import get_dependencies
from dask.sizeof import sizeof
from dask.system import CPU_COUNT

from ..image import Exposure
from .sources import ArrayCut, ExposureParts, LazyCut, SharedExposureCut

__all__ = ["SchedulerChoice", "choose_scheduler", "SCHEDULER_NAMES", "TRAFFIC_KINDS"]

#: What `SchedulerChoice.traffic` counts.
TRAFFIC_KINDS = ("scattered", "gathered", "betweenWorkers")

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
    #: Bytes moved on a cluster so far (see `traffic`): counted by `iterate` and `get`.
    moved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRAFFIC_KINDS, 0))
    #: Bytes of pixels passed to and from the workers through same-host shared memory instead.
    shared_bytes: int = 0
    #: Whether the cluster's workers read this process's shared memory (probed once, when first asked).
    _same_host: bool | None = field(default=None, repr=False)
    #: Shared-memory copies of in-memory input arrays while a graph runs: ``id(array) -> (array, segment)``.
    _shared_inputs: dict[int, tuple[Any, Any]] = field(default_factory=dict, repr=False)

    def traffic(self) -> dict[str, int]:
        """Bytes this choice has moved, by kind, and their ``total``.

        ``scattered``: pixels sent to the workers; ``gathered``: results brought back;
        ``betweenWorkers``: cell results one worker fetched from another. Zero on the
        schedulers that share this process's memory; on worker processes, the pickled graph
        and results are not counted. ``sharedMemory`` (not in the total): pixels that went to
        and from a same-host cluster's workers through shared memory instead of the network.
        """
        return {**self.moved, "total": sum(self.moved.values()), "sharedMemory": self.shared_bytes}

    @property
    def shares_memory(self) -> bool:
        """Whether tasks run in this process and may write into the caller's arrays."""
        return self.kind in ("synchronous", "threads")

    def same_host_memory(self) -> bool:
        """Whether this is a cluster whose every worker reads this process's shared memory.

        Then in-memory pixels go to the workers, and regions come back, through shared memory
        (`imagemapreduce.engine.shared_memory`) rather than the network. Probed once per choice.
        """
        if self.kind != "distributed":
            return False
        if self._same_host is None:
            from .shared_memory import probe_workers

            self._same_host = probe_workers(self.client, sorted(self.client.nthreads()))
        return self._same_host

    def worker_count(self) -> int:
        """How many tasks can run at once: threads or processes here, or the cluster's worker threads."""
        if self.kind == "distributed":
            return max(1, sum(self.client.nthreads().values()))
        if self.kind == "synchronous":
            return 1
        return self.num_workers or dask.config.get("num_workers", None) or CPU_COUNT

    def get(self, graph: dict, keys: list, neighbours: list | None = None) -> list:
        """Compute ``keys`` of a graph and return their values in order.

        ``neighbours``: task keys in an order where consecutive ones work on neighbouring
        pixels (the cell batches). On a cluster, their in-memory pixels are sent to the
        workers in contiguous runs of that order, one run per worker, so that each worker
        holds one compact part of the image and few cell results must travel to the worker
        that stitches them.
        """
        if self.kind == "distributed":
            values = dict(self._distributed(graph, keys, neighbours))
            return [values[key] for key in keys]
        if self.kind == "processes" and dask.config.get("pool", None) is None:
            return _get_on_own_processes(graph, keys, self.num_workers)
        return self._local_get()(graph, keys, **self._local_kwargs())

    def iterate(self, graph: dict, keys: list, neighbours: list | None = None) -> Iterator[Any]:
        """Yield the values of ``keys`` (in any order), releasing each as soon as it is consumed.

        ``neighbours`` as for `get`.
        """
        if self.kind != "distributed":
            yield from self.get(graph, keys)
            return
        for _, value in self._distributed(graph, keys, neighbours):
            yield value

    def _distributed(
        self, graph: dict, keys: list, neighbours: list | None = None, resubmits: int = 3
    ) -> Iterator[tuple[Any, Any]]:
        """Yield ``(key, value)`` as results arrive from the cluster.

        Dask reruns the tasks of a worker that dies, but pixels we scattered to that worker are
        gone with it, and the tasks that needed them are cancelled. Those keys are submitted
        again with their pixels scattered afresh; every task is deterministic, so the answer is
        the same bits.
        """
        remaining = list(keys)
        before, gathered = self._worker_transfers(), self.moved["gathered"]
        try:
            for attempt in range(resubmits + 1):
                lost = yield from self._submit(graph, remaining, attempt, neighbours)
                if not lost:
                    return
                remaining = lost
        finally:
            self._release_shared_inputs()
            # Dask counts what a worker sends to us with what it sends to its peers.
            after = self._worker_transfers()
            sent = sum(max(0, after.get(w, 0) - before.get(w, 0)) for w in after)
            self.moved["betweenWorkers"] += max(0, sent - (self.moved["gathered"] - gathered))
        raise RuntimeError(
            f"{len(remaining)} tasks were lost with their workers {resubmits + 1} times; is the cluster stable?"
        )

    def _submit(
        self, graph: dict, remaining: list, attempt: int, neighbours: list | None
    ) -> Generator[tuple[Any, Any], None, list]:
        """Submit ``remaining`` once, yield ``(key, value)`` as they finish, return the keys lost."""
        from distributed import as_completed

        # A resubmission uses fresh key names: the scheduler still remembers the lost ones.
        renamed, names = _renamed(graph, attempt), [_rename_key(key, attempt) for key in remaining]
        runs = [_rename_key(key, attempt) for key in neighbours] if neighbours else []
        placement = place_tasks(renamed, runs, names, sorted(self.client.nthreads()))
        graph = _pinned(self._scatter_pixels(renamed, placement), placement)
        futures = self.client.get(graph, names, sync=False)
        key_of = {future.key: key for future, key in zip(futures, remaining)}
        lost = []
        try:
            for future in as_completed(futures, loop=self.client.loop):
                if future.status == "cancelled":
                    lost.append(key_of[future.key])
                    continue
                value = future.result()  # raises the task's own error
                future.release()
                self.moved["gathered"] += sizeof(value)
                yield key_of[future.key], value
        except BaseException:
            # A failed cell, Ctrl-C or a consumer that stopped early: the cluster (perhaps
            # shared, and outliving this client) should not go on computing the rest.
            self.client.cancel(futures)
            raise
        return lost

    def _worker_transfers(self) -> dict[str, int]:
        """Each worker's running total of bytes sent to other workers (Dask's own counter)."""
        try:
            return self.client.run(_outgoing_bytes)
        except Exception:  # noqa: BLE001 - a worker leaving mid-call only blurs the count
            return {}

    def _scatter_pixels(self, graph: dict, placement: dict | None = None) -> dict:
        """Send the pixel arguments of every task straight to the workers, keeping them out of the graph.

        In-memory cells are views of their expanded boxes; shipping them inside the graph would make
        the graph as large as the image (and pass it through the scheduler). Scattered, each view
        goes once from here to one worker, and the graph holds only references. A task in
        ``placement`` (see `place_tasks`) gets its pixels on its worker.
        """
        literals: list[Any] = []
        where: list[tuple[Any, int]] = []
        shared: dict[Any, dict[int, Any]] = {}
        for key, task in graph.items():
            if isinstance(task, tuple) and task and callable(task[0]):
                for position, arg in enumerate(task[1:], start=1):
                    if isinstance(arg, (ArrayCut, LazyCut)) and (cut := self._shared_cut(arg)) is not None:
                        shared.setdefault(key, {})[position] = cut
                    elif holds_pixels(arg):
                        literals.append(arg)
                        where.append((key, position))
        if shared:
            graph = dict(graph)
            for key, replacements in shared.items():
                graph[key] = tuple(replacements.get(position, arg) for position, arg in enumerate(graph[key]))
        if not literals:
            return graph
        self.moved["scattered"] += sum(sizeof(literal) for literal in literals)
        by_worker: dict[Any, list[int]] = {}
        for number, (key, _) in enumerate(where):
            by_worker.setdefault((placement or {}).get(key), []).append(number)
        futures: list[Any] = [None] * len(literals)
        for worker, numbers in by_worker.items():
            sent = self.client.scatter([literals[k] for k in numbers], hash=False, workers=worker)
            for k, future in zip(numbers, sent):
                futures[k] = future
        graph = dict(graph)
        for (key, position), future in zip(where, futures):
            task = list(graph[key])
            task[position] = future
            graph[key] = tuple(task)
        return graph

    def _shared_cut(self, cut: ArrayCut | LazyCut) -> Any:
        """``cut`` reading a shared-memory copy of its pixels, or None to send it as before.

        An array (`ArrayCut`) or an exposure's three planes (a `LazyCut` of an `Exposure`) are
        copied into shared memory once per graph, when the workers share this host's memory and
        ``/dev/shm`` has room (see `same_host_memory`).
        """
        if not self.same_host_memory():
            return None
        from .shared_memory import SharedArrayCut

        if isinstance(cut, ArrayCut):
            ref = self._shared_ref(cut.array)
            return None if ref is None else SharedArrayCut(ref, cut.rows, cut.cols)
        exposure = cut.image
        if not isinstance(exposure, Exposure):
            return None
        refs = [self._shared_ref(plane.array) for plane in (exposure.image, exposure.mask, exposure.variance)]
        if any(ref is None for ref in refs):
            return None
        parts = ExposureParts(
            type(exposure), cut.box, exposure.getPsf(), exposure.getWcs(), exposure.mask.getMaskPlaneDict()
        )
        xy0 = exposure.getXY0()
        return SharedExposureCut(tuple(refs), parts, (xy0.getX(), xy0.getY()))

    def _shared_ref(self, array: Any) -> Any:
        """A reference to a shared-memory copy of ``array`` (made once per graph), or None.

        Only in-memory numpy arrays: copying a file-backed one (``numpy.memmap``) would pull the
        whole file into memory.
        """
        if not isinstance(array, np.ndarray) or isinstance(array, np.memmap):
            return None
        from .shared_memory import SharedSegment

        entry = self._shared_inputs.get(id(array))
        if entry is None:
            try:
                segment = SharedSegment(array.nbytes)
            except OSError:
                return None
            segment.array(array.shape, array.dtype)[...] = array
            self.shared_bytes += array.nbytes
            entry = self._shared_inputs[id(array)] = (array, segment)
        return entry[1].ref(array.shape, array.dtype)

    def _release_shared_inputs(self) -> None:
        for _, segment in self._shared_inputs.values():
            segment.close()
        self._shared_inputs.clear()

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
                    _LOG.warning(
                        "Dask worker %s died during the pre-flight check (%s); checking the others", worker, answer
                    )
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
    """``dask.multiprocessing.get`` on a kept pool of worker processes, ended if the run stops early.

    Starting worker processes costs seconds (each imports numpy, Dask and the mapper's module), so
    one pool per worker count, context and initializer is kept for the life of this process and
    reused by every run (`_shared_pool`). Dask shuts its own pool down with ``wait=True``, so a
    run stopped by a failed cell or by Ctrl-C would wait for every running cell, forever for a
    stuck mapper. Here an early stop terminates the worker processes and forgets the pool; the
    next run starts a fresh one. The workers ignore SIGINT, so a Ctrl-C on the terminal (sent to
    every process of the group) interrupts this process only, which then ends them.
    """
    # As dask.multiprocessing.get makes its pool: a fixed hash seed inherited by the workers, its
    # context and initializer, plus ours.
    if os.environ.get("PYTHONHASHSEED") in (None, "0"):
        os.environ["PYTHONHASHSEED"] = "6640"
    workers = num_workers or dask.config.get("num_workers", None) or CPU_COUNT
    pool, key = _shared_pool(
        workers, dask.multiprocessing.get_context(), dask.config.get("multiprocessing.initializer", None)
    )
    try:
        result = dask.multiprocessing.get(graph, keys, pool=pool)
    except BaseException:
        # Running cells cannot be taken back from a pool, only ended with it; a broken pool
        # (a worker died) is dropped the same way.
        _drop_pool(key, pool)
        _terminate(pool)
        raise
    if key is None:  # an initializer that cannot be a key: this pool was for this run only
        pool.shutdown()
    return result


#: The kept worker pools of this process, by (workers, context, user initializer).
_POOLS: dict[tuple[Any, ...], ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _shared_pool(workers: int, context: Any, user_initializer: Any) -> tuple[ProcessPoolExecutor, Any]:
    """The kept pool for these settings and its key, made on first use or when the kept one is broken.

    The key is ``None`` (and the pool new, for one run) when the user's initializer cannot be
    hashed. The first pool made registers `shutdown_pools` to run at interpreter exit.
    """
    key: tuple[Any, ...] | None = (workers, context, user_initializer)
    try:
        hash(key)
    except TypeError:
        key = None
    with _POOLS_LOCK:
        pool = _POOLS.get(key) if key is not None else None
        if key is not None and pool is not None and getattr(pool, "_broken", False):  # a worker died while idle
            _POOLS.pop(key, None)
            _terminate(pool)
            pool = None
        if pool is None:
            pool = ProcessPoolExecutor(
                workers, mp_context=context, initializer=partial(_initialize_worker_process, user_initializer)
            )
            if key is not None:
                if not _POOLS:
                    atexit.register(shutdown_pools)
                _POOLS[key] = pool
    return pool, key


def _drop_pool(key: Any, pool: ProcessPoolExecutor) -> None:
    """Forget ``pool`` as the kept pool for ``key`` (if it still is), so the next run makes a new one."""
    with _POOLS_LOCK:
        if key is not None and _POOLS.get(key) is pool:
            del _POOLS[key]


def shutdown_pools() -> None:
    """Shut every kept process pool down; their workers are idle, so this is quick.

    Runs at interpreter exit. Calling it earlier is safe: the next ``"processes"`` run starts a
    new pool, so a benchmark can time a first run after it.
    """
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def _forget_pools_in_child() -> None:
    """In a forked child the parent's pools are not ours to use or shut down: forget them."""
    global _POOLS_LOCK
    _POOLS_LOCK = threading.Lock()  # it may have been held by another thread of the parent at the fork
    _POOLS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


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


def holds_pixels(arg: Any) -> bool:
    """Whether a graph task's argument is pixel data, which a cluster gets scattered to it.

    Parameters
    ----------
    arg : object
        One argument of a task in the engine's graph.

    Returns
    -------
    holds : `bool`
        True for an array or an image container (or a deferred cut of one), False for a task or key.
    """
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


def place_tasks(graph: dict, neighbours: list, outputs: list, workers: list[str]) -> dict[Any, str]:
    """Which worker each cell batch and each output task should run on, for locality on a cluster.

    ``neighbours`` (the batches, in an order where consecutive ones hold neighbouring cells) are
    split into contiguous runs, one per worker, so that each worker works on one compact part
    of the image; the tasks that read a batch's pixels (blocks of a lazy input) go with the
    first batch that needs them. Each of ``outputs`` (the region tasks) goes to the worker that runs most of
    the batches it reads (a pick of a few cells counts a quarter), so that few cell results
    travel. Returns ``{key: worker address}``; empty with fewer than two workers.
    """
    if len(workers) < 2 or not neighbours:
        return {}
    placement = {key: workers[number * len(workers) // len(neighbours)] for number, key in enumerate(neighbours)}
    _place_inputs(graph, neighbours, placement)
    for key in outputs:
        if key in placement or key not in graph:
            continue
        votes: dict[str, float] = {}
        for dependency in get_dependencies(graph, key):
            if dependency in placement:
                votes[placement[dependency]] = votes.get(placement[dependency], 0.0) + 1.0
                continue
            for batch in get_dependencies(graph, dependency) if dependency in graph else ():
                if batch in placement:  # a pick next to its batch
                    votes[placement[batch]] = votes.get(placement[batch], 0.0) + 0.25
        if votes:
            placement[key] = max(sorted(votes), key=votes.__getitem__)
    _place_picks(graph, neighbours, placement)
    return placement


def _place_inputs(graph: dict, batches: list, placement: dict[Any, str]) -> None:
    """Place the tasks the batches read from (recursively) where most of the batches that need them run."""
    votes: dict[Any, dict[str, int]] = {}
    for batch in batches:
        worker, stack, seen = placement[batch], [batch], set()
        while stack:
            for dependency in get_dependencies(graph, stack.pop()):
                if dependency in graph and dependency not in seen and dependency not in placement:
                    seen.add(dependency)
                    tally = votes.setdefault(dependency, {})
                    tally[worker] = tally.get(worker, 0) + 1
                    stack.append(dependency)
    for key, tally in votes.items():
        placement[key] = max(sorted(tally), key=tally.__getitem__)


def _place_picks(graph: dict, batches: list, placement: dict[Any, str]) -> None:
    """Place each remaining task that reads a batch (a pick of its cells) next to that batch."""
    placed = set(batches)
    for key in graph:
        if key not in placement:
            for dependency in get_dependencies(graph, key):
                if dependency in placed:
                    placement[key] = placement[dependency]
                    break


def _pinned(graph: dict, placement: dict[Any, str]) -> Any:
    """The graph with each placed task annotated with its worker (loosely: another may take over if it dies)."""
    if not placement:
        return graph
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    by_worker: dict[str, dict] = {}
    rest = {}
    for key, task in graph.items():
        worker = placement.get(key)
        if worker is None:
            rest[key] = task
        else:
            by_worker.setdefault(worker, {})[key] = task
    layers = {"imr-unplaced": MaterializedLayer(rest)}
    for number, (worker, tasks) in enumerate(sorted(by_worker.items())):
        annotations = {"workers": [worker], "allow_other_workers": True}
        layers[f"imr-placed-{number}"] = MaterializedLayer(tasks, annotations=annotations)
    return HighLevelGraph(layers, {name: set() for name in layers})


def _outgoing_bytes(dask_worker: Any) -> int:
    """Run on a worker: the bytes it has sent to other workers since it started."""
    return int(getattr(dask_worker, "transfer_outgoing_bytes_total", 0))


#: Seconds to wait for a scheduler address to answer before saying it cannot be reached.
CONNECT_TIMEOUT_S = 10.0


def choose_scheduler(
    scheduler: Any = None, num_workers: int | None = None, timeout: float | None = None
) -> SchedulerChoice:
    """Resolve a scheduler argument into a `SchedulerChoice` (see the module docs for the rules).

    Parameters
    ----------
    scheduler : `str`, ``distributed.Client`` or `None`
        A scheduler name, a scheduler address, a client, or None for Dask's current default.
    num_workers : `int`, optional
        Threads or processes to use locally.
    timeout : `float`, optional
        Seconds to wait when connecting to a scheduler address (default `CONNECT_TIMEOUT_S`).
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
        wait = CONNECT_TIMEOUT_S if timeout is None else timeout
        return SchedulerChoice("distributed", num_workers, _connect(scheduler, wait), owns_client=True)
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
