"""One writer per store: a ``flock`` on local disks, an exclusive-create lease object on object storage.

* Local stores (paths, ``file://``): an exclusive, non-blocking ``flock`` on the store's lock file,
  held for the whole run and released by the kernel if the process dies.
* Object storage (``s3://``, ``gs://``, ``memory://``...): a lease object in the store, created
  with fsspec's exclusive mode ``"xb"`` (on S3 a conditional put, ``If-None-Match: *``, which the
  server refuses when the object exists), then read back to check that it holds this run's
  token. Where a file system cannot create exclusively, the token write and read-back check
  are all there is: best effort, which the per-region owner check (see
  `imagemapreduce.io.zarr_regions`) backs up. A background thread renews the lease; a lease
  not renewed for `LeaseLock.ttl` seconds (its writer died) is taken over by the next run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .locations import StoreLocation

__all__ = ["StoreBusyError", "StoreLock", "LeaseLock", "lock_for", "probe_lock", "LOCK_NAME", "LEASE_NAME"]

#: The lock file inside a local store being written.
LOCK_NAME = ".imagemapreduce-writer.lock"
#: The lease object inside a store on object storage being written.
LEASE_NAME = ".imagemapreduce-writer.lease"


class StoreBusyError(OSError):
    """Another run is writing the store; wait for it (or stop it), then resume."""


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _busy(where: Any, holder: str, extra: str = "") -> StoreBusyError:
    return StoreBusyError(
        f"{where} is being written by {holder}; wait for that run to finish (or stop it), "
        f"then resume with resume=True (CLI: --resume){extra}"
    )


class StoreLock:
    """An exclusive, non-blocking ``flock`` on a local store's lock file, held while a run writes it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `StoreBusyError` naming the run that holds it."""
        import fcntl

        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another run"
            os.close(fd)
            raise _busy(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, _holder().encode())
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays; an unlocked file means nobody is writing)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def probe(self) -> None:
        """Raise `StoreBusyError` if a run holds the lock (taking nothing)."""
        if (self.path / LOCK_NAME).exists():
            self.acquire()
            self.release()


class LeaseLock:
    """An exclusive lease object in a store on object storage, renewed while a run writes it.

    Parameters
    ----------
    location : `StoreLocation`
        The store.
    ttl : `float`, optional
        Seconds a lease stays valid without renewal (renewed every quarter of it); by default
        `LeaseLock.ttl`. Allow for clock differences between machines: expiry is judged on the
        clock of the run that finds the lease.
    """

    #: Seconds a lease stays valid without renewal.
    ttl = 60.0

    def __init__(self, location: StoreLocation, ttl: float | None = None):
        self.location = location
        self.ttl = float(ttl if ttl is not None else type(self).ttl)
        self.token = uuid.uuid4().hex
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def _object(self) -> str:
        return self.location.child(LEASE_NAME)

    def _body(self) -> bytes:
        return json.dumps({"token": self.token, "holder": _holder(), "expires": time.time() + self.ttl}).encode()

    def _read(self) -> dict | None:
        """The current lease, or None when there is none (an unreadable lease counts as held)."""
        fs = self.location.fs
        try:
            fs.invalidate_cache(self._object)
            doc = json.loads(fs.cat_file(self._object))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"holder": "another run (its lease object is unreadable)", "expires": float("inf")}
        return doc if isinstance(doc, dict) else {"holder": "another run", "expires": float("inf")}

    def _create(self) -> bool:
        """Create the lease exclusively; False if one exists. Then check it reads back as ours."""
        fs = self.location.fs
        try:
            with fs.open(self._object, "xb") as file:
                file.write(self._body())
        except FileExistsError:
            return False
        except (NotImplementedError, ValueError):  # no exclusive create here: best effort
            if self._read() is not None:
                return False
            fs.pipe_file(self._object, self._body())
        current = self._read()
        return current is not None and current.get("token") == self.token

    def acquire(self) -> None:
        """Take the lease (breaking one whose writer stopped renewing it), or raise `StoreBusyError`."""
        if not self._create():
            current = self._read() or {}
            expires = current.get("expires")
            if not (isinstance(expires, (int, float)) and expires < time.time()) or not self._break(current):
                raise _busy(
                    self.location,
                    str(current.get("holder", "another run")),
                    f". If that run is dead, its lease expires {self.ttl:.0f} s after its last renewal",
                )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, args=(self._stop,), daemon=True, name="imr-lease")
        self._thread.start()

    def _break(self, stale: dict) -> bool:
        """Remove an expired lease (if it is still the one read) and create ours."""
        current = self._read()
        if current is not None and current.get("token") != stale.get("token"):
            return False
        self.location.fs.rm_file(self._object)
        return self._create()

    def _renew(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 4):
            try:
                current = self._read()
                if current is None or current.get("token") != self.token:
                    return  # lost: the owner check stops this run's writes
                self.location.fs.pipe_file(self._object, self._body())
            except OSError:  # a network hiccup: try again at the next beat, well within the lease
                continue

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        if self._stop is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._stop = self._thread = None
        current = self._read()
        if current is not None and current.get("token") == self.token:
            self.location.fs.rm_file(self._object)

    def probe(self) -> None:
        """Raise `StoreBusyError` if a live lease is held (taking nothing)."""
        current = self._read()
        expires = (current or {}).get("expires")
        if current is not None and not (isinstance(expires, (int, float)) and expires < time.time()):
            raise _busy(self.location, str(current.get("holder", "another run")))


def lock_for(location: StoreLocation) -> StoreLock | LeaseLock:
    """The kind of lock a store takes: a ``flock`` for a local store, a lease on object storage."""
    return StoreLock(location.local) if location.local is not None else LeaseLock(location)


def probe_lock(location: StoreLocation) -> None:
    """Raise `StoreBusyError` if a run is writing the store at ``location`` (taking nothing)."""
    lock_for(location).probe()
