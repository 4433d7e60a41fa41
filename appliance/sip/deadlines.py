"""A heap of deadlines that drops stale entries lazily, for sans-I/O cores.

The proxy has a deadline per branch, per server transaction and per call, and
most of them move or vanish before they come due. Finding and removing an entry
whenever its owner moves on would cost more than it saves. Instead entries are
pushed freely and judged when they reach the top of the heap: the caller's
``is_current(when, kind, key)`` says whether one still stands for a deadline.
Time stays a parameter (``now``), as everywhere in the core.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

#: Whether a pushed entry ``(when, kind, key)`` still stands for a deadline.
IsCurrent = Callable[[float, str, object], bool]


class Deadlines:
    """Deadlines as ``(when, kind, key)``, soonest first."""

    def __init__(self, sequence: Iterator[int] | None = None) -> None:
        """``sequence`` numbers the entries, so equal times come up in push order
        (the proxy shares its id counter)."""
        # Entries: (when, sequence, kind, key). Entries go stale when their
        # object moves on; they are checked when they come up.
        self._heap: list[tuple[float, int, str, object]] = []
        self._sequence = itertools.count(1) if sequence is None else sequence

    def push(self, when: float, kind: str, key: object) -> None:
        """Add a deadline; an earlier one for the same key may stay, to go stale."""
        heapq.heappush(self._heap, (when, next(self._sequence), kind, key))

    def next_due(self, is_current: IsCurrent) -> float | None:
        """The earliest deadline that is still current, dropping stale ones on the way."""
        heap = self._heap
        while heap and not is_current(heap[0][0], heap[0][2], heap[0][3]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float, is_current: IsCurrent) -> Iterator[tuple[str, object]]:
        """Take every entry due by ``now`` off the heap, yielding ``(kind, key)`` for
        the current ones. Lazy: what the caller pushes while handling one entry is
        considered too, if it is already due."""
        while self._heap and self._heap[0][0] <= now:
            when, _, kind, key = heapq.heappop(self._heap)
            if is_current(when, kind, key):
                yield kind, key
