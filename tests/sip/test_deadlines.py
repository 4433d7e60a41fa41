"""The proxy's deadline heap: stale entries are dropped when they come up, and
swept once the heap has doubled, so deadlines far in the future that went
stale (a call's longest life, once the call ended) cannot pile up."""

from __future__ import annotations

import random

from appliance.sip.deadlines import MIN_SWEEP, Deadlines


def test_stale_entries_far_ahead_do_not_pile_up() -> None:
    """Fifty thousand calls each push their four-hour limit and end at once: the
    heap never holds much more than its sweep threshold, and the few calls still
    up keep their entries."""
    live: set[int] = set()
    deadlines = Deadlines(lambda when, kind, key: key in live)
    largest = 0
    for call in range(50_000):
        deadlines.push(1_000.0 + 4 * 3600, "deadline", call)
        if call % 10_000 == 0:
            live.add(call)  # still up
        largest = max(largest, len(deadlines))
    assert largest <= MIN_SWEEP
    assert {key for _, key in deadlines.pop_due(float("inf"))} == live


def test_a_sweep_keeps_every_current_entry_in_order() -> None:
    """Entries at random times, two in three stale: across sweeps, the current
    ones come out in time order (push order on ties), and no stale one does."""
    rng = random.Random(7)
    deadlines = Deadlines(lambda when, kind, key: isinstance(key, int) and key % 3 == 0)
    pushed = [(float(rng.randrange(100)), index) for index in range(3 * MIN_SWEEP)]
    for when, index in pushed:
        deadlines.push(when, "branch", index)
    current = sorted((when, index) for when, index in pushed if index % 3 == 0)
    assert len(deadlines) < len(pushed)  # swept on the way
    assert deadlines.next_due() == current[0][0]
    assert list(deadlines.pop_due(float("inf"))) == [("branch", index) for _, index in current]
    assert deadlines.next_due() is None and len(deadlines) == 0


def test_only_what_is_due_comes_out() -> None:
    deadlines = Deadlines(lambda when, kind, key: True)
    deadlines.push(5.0, "ring", "b")
    deadlines.push(1.0, "reap", "a")
    assert list(deadlines.pop_due(4.0)) == [("reap", "a")]
    assert deadlines.next_due() == 5.0
