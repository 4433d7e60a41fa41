"""When each of the proxy's transactions and calls next needs attention.

Every branch (client transaction), every upstream request (server transaction)
and every call has deadlines: transaction timers, the ring timeout, the longest
call, the time an ended call is remembered. They go on one :class:`Deadlines`
heap and go stale when their owner moves on. The proxy marks what it touched
while handling a message (:meth:`ProxyTimers.touch`) and then has the next
deadline of each put on the heap (:meth:`ProxyTimers.schedule_touched`), which
is also where transactions that have ended are forgotten.
"""

from __future__ import annotations

from collections.abc import Iterator

from appliance.sip.calls import Call
from appliance.sip.deadlines import Deadlines
from appliance.sip.proxy_state import Branch, Upstream
from appliance.sip.transaction import State


class ProxyTimers:
    """The proxy's deadlines, over its own tables of branches, upstream requests
    and calls (shared, not copied)."""

    def __init__(
        self,
        branches: dict[str, Branch],
        upstreams: dict[tuple[str, str, str], Upstream],
        calls: dict[str, Call],
        ids: Iterator[int],
    ) -> None:
        self._branches = branches
        self._upstream = upstreams
        self._calls = calls
        self._deadlines = Deadlines(self._due, ids)
        self._touched: set[tuple[str, object]] = set()

    def touch(self, kind: str, key: object) -> None:
        """A branch or upstream transaction (``kind``) changed: schedule it again."""
        self._touched.add((kind, key))

    def push(self, when: float, kind: str, key: object) -> None:
        """A call's deadline (``ring``, ``deadline``, ``reap``)."""
        self._deadlines.push(when, kind, key)

    def schedule_touched(self) -> None:
        """Put the next deadline of every transaction touched since the last call
        on the heap; forget the ones that have ended."""
        for kind, key in self._touched:
            if kind == "branch":
                branch = self._branches.get(key)  # type: ignore[call-overload]
                if branch is None:
                    continue
                if branch.transaction.state is State.TERMINATED:
                    del self._branches[branch.id]
                elif (due := branch.transaction.next_timer()) is not None:
                    self._deadlines.push(due, kind, key)
            else:
                upstream = self._upstream.get(key)  # type: ignore[call-overload]
                if upstream is None:
                    continue
                state = upstream.server.state
                if state is State.TERMINATED:
                    del self._upstream[upstream.key]
                    continue
                if not upstream.unanswered:
                    upstream.let_go()
                if (due := upstream.server.next_timer()) is not None:
                    self._deadlines.push(due, kind, key)
        self._touched.clear()

    def _due(self, when: float, kind: str, key: object) -> bool:
        """Whether a heap entry still stands for a deadline (lazy deletion)."""
        if kind == "branch":
            branch = self._branches.get(key)  # type: ignore[call-overload]
            return branch is not None and branch.transaction.next_timer() == when
        if kind == "upstream":
            upstream = self._upstream.get(key)  # type: ignore[call-overload]
            return upstream is not None and upstream.server.next_timer() == when
        call = self._calls.get(str(key))
        if call is None:
            return False
        if kind == "ring":
            return call.state in ("proceeding", "ringing")
        if kind == "deadline":  # the longest life, for calls without session timers
            return call.state != "ended" and call.deadline == when and not call.session_expires_at
        if kind == "session":
            return call.state == "answered" and call.session_expires_at == when
        return kind == "reap" and call.state == "ended"

    def next_timer(self) -> float | None:
        """The earliest deadline still current."""
        return self._deadlines.next_due()

    def pop_due(self, now: float) -> Iterator[tuple[str, object]]:
        """Every current deadline due by ``now``, as ``(kind, key)``."""
        return self._deadlines.pop_due(now)
