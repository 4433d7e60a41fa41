"""The store's dedicated thread: the reactor's only way to the database.

SQLite calls block, so the service runs them on one thread of its own (never
Twisted's shared pool, whose other users would queue behind the disk). One
thread also means one writer: no ``SQLITE_BUSY`` between our own writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from appliance.store.tenants import Directory

_T = TypeVar("_T")


class StoreRunner(Protocol):
    """Runs a function against the store and delivers its result on the reactor."""

    def run(self, call: Callable[[Directory], _T]) -> Deferred[_T]:
        """Run ``call(directory)`` off the reactor thread."""


class StoreThread:
    """A one-thread pool that owns the store's connection."""

    def __init__(self, reactor: IReactorFromThreads, directory: Directory) -> None:
        self._reactor = reactor
        self.directory = directory
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="telemancer-store")

    def start(self) -> None:
        """Start the thread."""
        self._pool.start()

    def stop(self) -> None:
        """Finish queued work, join the thread and close the connection."""
        self._pool.stop()
        self.directory.db.close()

    def run(self, call: Callable[[Directory], _T]) -> Deferred[_T]:
        """Run ``call(directory)`` on the store thread."""
        return deferToThreadPool(self._reactor, self._pool, call, self.directory)
