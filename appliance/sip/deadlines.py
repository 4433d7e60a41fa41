"""A heap of deadlines that drops stale entries lazily, for sans-I/O cores.

The proxy has a deadline per branch, per server transaction and per call, and
most of them move or vanish before they come due. Finding and removing an entry
whenever its owner moves on would cost more than it saves. Instead entries are
pushed freely and judged when they reach the top of the heap: the owner's
``is_current(when, kind, key)`` says whether one still stands for a deadline.
Time stays a parameter (``now``), as everywhere in the core.

Some entries are far in the future when they go stale: a call's longest life
(hours) is pushed when it starts and is moot once it ends, seconds later. Left
for the top, those would pile up by the hundred thousand under load, so the
heap is swept of stale entries whenever it has doubled since the last sweep:
memory stays within twice what is current, at a constant cost per push.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

#: Whether a pushed entry ``(when, kind, key)`` still stands for a deadline.
IsCurrent = Callable[[float, str, object], bool]
#: The heap is never swept below this size (a sweep reads every entry).
MIN_SWEEP = 4096


class Deadlines:
    """Deadlines as ``(when, kind, key)``, soonest first."""

    def __init__(self, is_current: IsCurrent, sequence: Iterator[int] | None = None) -> None:
        """``is_current`` judges entries; ``sequence`` numbers them, so equal times
        come up in push order (the proxy shares its id counter)."""
        # Entries: (when, sequence, kind, key). Entries go stale when their
        # object moves on; they are checked when they come up, or swept.
        self._heap: list[tuple[float, int, str, object]] = []
        self._is_current = is_current
        self._sequence = itertools.count(1) if sequence is None else sequence
        self._sweep_at = MIN_SWEEP

    def __len__(self) -> int:
        """Entries held, stale ones included (for tests and metrics)."""
        return len(self._heap)

    def push(self, when: float, kind: str, key: object) -> None:
        """Add a deadline; an earlier one for the same key may stay, to go stale."""
        heapq.heappush(self._heap, (when, next(self._sequence), kind, key))
        if len(self._heap) >= self._sweep_at:
            self._sweep()

    def next_due(self) -> float | None:
        """The earliest deadline that is still current, dropping stale ones on the way."""
        heap, is_current = self._heap, self._is_current
        while heap and not is_current(heap[0][0], heap[0][2], heap[0][3]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Iterator[tuple[str, object]]:
        """Take every entry due by ``now`` off the heap, yielding ``(kind, key)`` for
        the current ones. Lazy: what the caller pushes while handling one entry is
        considered too, if it is already due."""
        while self._heap and self._heap[0][0] <= now:
            when, _, kind, key = heapq.heappop(self._heap)
            if self._is_current(when, kind, key):
                yield kind, key

    def _sweep(self) -> None:
        """Keep only the current entries; sweep again once the heap has doubled."""
        is_current = self._is_current
        self._heap[:] = [entry for entry in self._heap if is_current(entry[0], entry[2], entry[3])]
        heapq.heapify(self._heap)
        self._sweep_at = max(MIN_SWEEP, 2 * len(self._heap))
