"""A threadless :class:`~appliance.store.thread.StoreRunner` for tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, maybeDeferred

from appliance.store.tenants import Directory

_T = TypeVar("_T")


class InlineStore:
    """Runs store calls on the calling thread, so tests need no reactor spin."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def run(self, call: Callable[[Directory], _T]) -> Deferred[_T]:
        """Run ``call(directory)`` now; an exception arrives as a failed Deferred."""
        return maybeDeferred(call, self.directory)
