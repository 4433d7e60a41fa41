"""The SIP brute-force block rule: counting, blocking, expiry, allowlist, bounds.

Time is a plain float moved by hand; nothing sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sip.blocklist import (
    BRUTE_FORCE_REASON,
    DEFAULT_BLOCK_SECONDS,
    DEFAULT_FAILURE_LIMIT,
    Block,
    BlockLifted,
    Blocklist,
    BlockStarted,
    LiftReason,
    normalise_ip,
)

NOW = 1_800_000_000.0
IP = "192.0.2.10"
OTHER = "198.51.100.7"
V6 = "2001:db8::1"


def _fail(blocklist: Blocklist, ip: str, times: int, now: float = NOW) -> list[BlockStarted]:
    """Report ``times`` failures from ``ip``, one second apart; return the events."""
    events = []
    for i in range(times):
        event = blocklist.record_failure(ip, now + i)
        if event is not None:
            events.append(event)
    return events


def test_defaults_are_the_spec_values() -> None:
    """Five failures, fifteen minutes: the documented defaults are what a bare instance uses."""
    blocklist = Blocklist()
    assert (DEFAULT_FAILURE_LIMIT, DEFAULT_BLOCK_SECONDS) == (5, 900)
    assert (blocklist.limit, blocklist.block_seconds) == (5, 900)


def test_four_failures_do_not_block_five_do() -> None:
    """Exactly the fifth consecutive failure blocks; the fourth does not."""
    blocklist = Blocklist()
    assert _fail(blocklist, IP, 4) == []
    assert not blocklist.is_blocked(IP, NOW + 4)
    assert blocklist.failure_count(IP, NOW + 4) == 4
    assert blocklist.record_failure(IP, NOW + 4) is not None
    assert blocklist.is_blocked(IP, NOW + 4)


def test_fifth_failure_returns_block_started() -> None:
    """The event names the address, the term (now to now + 900), the count and the reason."""
    blocklist = Blocklist()
    _fail(blocklist, IP, 4, now=NOW - 10)
    event = blocklist.record_failure(IP, NOW)
    assert event == BlockStarted(IP, NOW, NOW + 900, 5, BRUTE_FORCE_REASON)
    assert blocklist.blocks(NOW) == [Block(IP, NOW, NOW + 900, BRUTE_FORCE_REASON)]
    assert blocklist.failure_count(IP, NOW) == 0


def test_failures_while_blocked_are_ignored() -> None:
    """A failure in flight from a blocked address neither extends the block nor re-counts."""
    blocklist = Blocklist()
    _fail(blocklist, IP, 5)
    assert _fail(blocklist, IP, 10, now=NOW + 100) == []
    assert blocklist.blocks(NOW + 100)[0].until == NOW + 4 + 900
    assert blocklist.failure_count(IP, NOW + 100) == 0


def test_success_resets_the_count() -> None:
    """Four failures, a success, four more: the count restarted, so no block."""
    blocklist = Blocklist()
    _fail(blocklist, IP, 4)
    blocklist.record_success(IP, NOW + 4)
    assert blocklist.failure_count(IP, NOW + 4) == 0
    assert _fail(blocklist, IP, 4, now=NOW + 5) == []
    assert not blocklist.is_blocked(IP, NOW + 9)
    assert blocklist.record_failure(IP, NOW + 10) is not None


def test_other_addresses_are_unaffected() -> None:
    """Blocking one address leaves others unblocked and their counts separate."""
    blocklist = Blocklist()
    _fail(blocklist, OTHER, 3)
    _fail(blocklist, IP, 5)
    assert blocklist.is_blocked(IP, NOW + 5)
    assert not blocklist.is_blocked(OTHER, NOW + 5)
    assert not blocklist.is_blocked(V6, NOW + 5)
    assert blocklist.failure_count(OTHER, NOW + 5) == 3
    blocklist.record_success(OTHER, NOW + 6)
    assert blocklist.is_blocked(IP, NOW + 6)


def test_block_expires_at_exactly_until() -> None:
    """Blocked up to just before ``until``; at ``until`` it is over and the timer reports it."""
    blocklist = Blocklist()
    event = _fail(blocklist, IP, 5)[0]
    assert blocklist.next_timer() == event.until
    assert blocklist.handle_timer(event.until - 0.001) == []
    assert blocklist.is_blocked(IP, event.until - 0.001)
    assert not blocklist.is_blocked(IP, event.until)
    assert blocklist.handle_timer(event.until) == [
        BlockLifted(IP, event.until, LiftReason.EXPIRED)
    ]
    assert blocklist.handle_timer(event.until + 1) == []
    assert blocklist.next_timer() is None
    assert blocklist.blocks(event.until) == []
    assert not blocklist.is_blocked(IP, event.until)


def test_lift_reason_is_plain_text() -> None:
    """Lift reasons compare equal to the strings the caller stores and audits."""
    assert [str(reason) for reason in LiftReason] == ["expired", "lifted", "evicted"]
    assert all(isinstance(reason, str) for reason in LiftReason)
    assert LiftReason("expired") is LiftReason.EXPIRED


def test_after_expiry_the_count_starts_afresh() -> None:
    """An address whose block ended needs ``limit`` new failures to be blocked again."""
    blocklist = Blocklist()
    until = _fail(blocklist, IP, 5)[0].until
    blocklist.handle_timer(until)
    assert _fail(blocklist, IP, 4, now=until) == []
    assert blocklist.record_failure(IP, until + 4) is not None


def test_manual_lift() -> None:
    """An operator's lift ends the block at once, once, and forgets the count."""
    blocklist = Blocklist()
    _fail(blocklist, IP, 5)
    assert blocklist.lift(IP, NOW + 60) == BlockLifted(IP, NOW + 60, LiftReason.LIFTED)
    assert not blocklist.is_blocked(IP, NOW + 60)
    assert blocklist.lift(IP, NOW + 61) is None
    assert blocklist.next_timer() is None
    assert blocklist.handle_timer(NOW + 10_000) == []
    assert blocklist.lift(OTHER, NOW) is None


def test_lift_after_expiry_leaves_the_report_to_the_timer() -> None:
    """Lifting a block at or after its end returns None; the timer still reports it expired."""
    blocklist = Blocklist()
    until = _fail(blocklist, IP, 5)[0].until
    assert blocklist.lift(IP, until) is None
    assert blocklist.lift(IP, until + 1) is None
    assert blocklist.handle_timer(until + 1) == [BlockLifted(IP, until, LiftReason.EXPIRED)]


def test_allowlisted_addresses_are_never_counted_or_blocked() -> None:
    """Addresses inside allowlisted networks, IPv4 and IPv6, survive any number of failures."""
    blocklist = Blocklist(allowlist=["10.0.0.0/8", "::1/128", "2001:db8:1::/48"])
    for ip in ("10.1.2.3", "::ffff:10.9.9.9", "::1", "2001:db8:1::99"):
        assert blocklist.is_allowlisted(ip)
        assert _fail(blocklist, ip, 50) == []
        assert not blocklist.is_blocked(ip, NOW + 50)
        assert blocklist.failure_count(ip, NOW + 50) == 0
        assert blocklist.restore(ip, NOW, NOW + 900, BRUTE_FORCE_REASON, now=NOW) is None
    assert not blocklist.is_allowlisted("11.0.0.1")
    assert _fail(blocklist, "11.0.0.1", 5) != []


def test_ipv4_mapped_allowlist_entries_match_ipv4() -> None:
    """An allowlist written as IPv4-mapped IPv6 covers the IPv4 addresses it maps."""
    blocklist = Blocklist(allowlist=["::ffff:192.0.2.0/120"])
    assert blocklist.is_allowlisted("192.0.2.200")
    assert blocklist.is_allowlisted("::ffff:192.0.2.1")
    assert not blocklist.is_allowlisted("192.0.3.1")


@pytest.mark.parametrize(
    "entry", ["10.0.0.0/33", "10.0.0.1/8", "not-a-network", "", "2001:db8::/129", "::1/-1"]
)
def test_invalid_allowlist_entry_raises(entry: str) -> None:
    """A malformed network, or one with host bits set, is refused at construction by name."""
    with pytest.raises(ValueError, match="allowlist entry") as info:
        Blocklist(allowlist=["192.168.0.0/16", entry])
    assert repr(entry) in str(info.value)


def test_allowlist_as_a_single_string_raises() -> None:
    """A bare string is a sequence of characters, not of networks: refused, not misread."""
    with pytest.raises(TypeError):
        Blocklist(allowlist="10.0.0.0/8")


@pytest.mark.parametrize(
    ("limit", "block_seconds", "caps"),
    [(0, 900.0, 10), (5, 0.0, 10), (5, -1.0, 10), (5, float("nan"), 10), (5, 900.0, 0)],
)
def test_invalid_settings_raise(limit: int, block_seconds: float, caps: int) -> None:
    """A limit below one, a non-positive term or an empty table cap is a configuration error."""
    with pytest.raises(ValueError):
        Blocklist(
            limit=limit, block_seconds=block_seconds, max_tracked_sources=caps, max_blocks=caps
        )


def test_ipv4_mapped_ipv6_counts_as_ipv4() -> None:
    """Failures spelt as IPv4-mapped IPv6 and as IPv4 share one counter and one block."""
    blocklist = Blocklist()
    _fail(blocklist, "::ffff:192.0.2.10", 2)
    _fail(blocklist, IP, 2, now=NOW + 2)
    event = blocklist.record_failure("::FFFF:c000:020a", NOW + 4)
    assert event is not None
    assert event.ip == IP
    assert blocklist.is_blocked(IP, NOW + 5)
    assert blocklist.is_blocked("::ffff:192.0.2.10", NOW + 5)
    assert blocklist.lift("::ffff:192.0.2.10", NOW + 6) == BlockLifted(
        IP, NOW + 6, LiftReason.LIFTED
    )


def test_ipv6_spellings_share_one_entry() -> None:
    """Uppercase, expanded and zone-indexed IPv6 spellings normalise to one address."""
    assert normalise_ip("2001:DB8:0:0:0:0:0:1") == V6
    assert normalise_ip("fe80::1%eth0") == "fe80::1"
    assert normalise_ip("::ffff:192.0.2.10") == IP
    blocklist = Blocklist()
    _fail(blocklist, "2001:0db8::0001", 4)
    assert blocklist.record_failure("2001:DB8::1", NOW + 4) is not None
    assert blocklist.is_blocked(V6, NOW + 5)
    assert blocklist.is_blocked("2001:0db8:0000::1", NOW + 5)


def test_non_addresses() -> None:
    """Verdicts need a real address; a string that is not one is never blocked."""
    blocklist = Blocklist()
    for bad in ("", "example.com", "192.0.2.256", " 192.0.2.1", "10.0.0.0/8"):
        with pytest.raises(ValueError, match="not an IP address"):
            blocklist.record_failure(bad, NOW)
        with pytest.raises(ValueError):
            blocklist.record_success(bad, NOW)
        with pytest.raises(ValueError):
            blocklist.lift(bad, NOW)
    _fail(blocklist, IP, 5)
    assert not blocklist.is_blocked("example.com", NOW + 5)


def test_quiet_period_resets_the_count() -> None:
    """Failures separated by ``block_seconds`` of quiet never add up to a block."""
    blocklist = Blocklist()
    for week in range(20):
        assert blocklist.record_failure(IP, NOW + week * 7 * 86400) is None
    _fail(blocklist, OTHER, 4)
    assert blocklist.failure_count(OTHER, NOW + 3 + 899.9) == 4
    assert blocklist.failure_count(OTHER, NOW + 3 + 900) == 0
    assert blocklist.record_failure(OTHER, NOW + 3 + 900) is None
    assert blocklist.failure_count(OTHER, NOW + 3 + 900) == 1


def test_failures_just_inside_the_window_still_count() -> None:
    """A guess every ``block_seconds`` minus a little keeps the count going: slow, but blocked."""
    blocklist = Blocklist()
    events = [blocklist.record_failure(IP, NOW + i * 899.0) for i in range(5)]
    assert events[:4] == [None] * 4
    assert events[4] is not None


def test_restore_persisted_blocks() -> None:
    """Blocks stored before a restart are active again, with their term, reason and timer."""
    blocklist = Blocklist()
    restored = blocklist.restore("::ffff:192.0.2.10", NOW - 100, NOW + 800, "operator", now=NOW)
    assert restored == Block(IP, NOW - 100, NOW + 800, "operator")
    assert blocklist.restore(V6, NOW - 50, NOW + 850, BRUTE_FORCE_REASON, now=NOW) is not None
    assert blocklist.is_blocked(IP, NOW)
    assert blocklist.is_blocked(V6, NOW)
    assert blocklist.blocks(NOW) == [
        Block(IP, NOW - 100, NOW + 800, "operator"),
        Block(V6, NOW - 50, NOW + 850, BRUTE_FORCE_REASON),
    ]
    assert blocklist.next_timer() == NOW + 800
    assert blocklist.handle_timer(NOW + 800) == [BlockLifted(IP, NOW + 800, LiftReason.EXPIRED)]


def test_restore_ignores_expired_blocks() -> None:
    """A stored block whose term is over (or ends exactly now) is not restored."""
    blocklist = Blocklist()
    assert blocklist.restore(IP, NOW - 1000, NOW - 100, BRUTE_FORCE_REASON, now=NOW) is None
    assert blocklist.restore(OTHER, NOW - 900, NOW, BRUTE_FORCE_REASON, now=NOW) is None
    assert blocklist.blocks(NOW) == []
    assert blocklist.next_timer() is None
    assert not blocklist.is_blocked(IP, NOW)


def test_restore_refuses_a_term_ending_before_it_starts() -> None:
    """A stored row with ``until`` before ``since`` is corrupt and is refused, not guessed at."""
    with pytest.raises(ValueError):
        Blocklist().restore(IP, NOW + 10, NOW + 5, BRUTE_FORCE_REASON, now=NOW)


def test_failure_table_is_bounded_and_evicts_the_oldest() -> None:
    """Spraying addresses never grows the counter table past its cap; the oldest goes first."""
    blocklist = Blocklist(max_tracked_sources=3)
    for i in range(4):
        blocklist.record_failure(f"2001:db8::{i + 1:x}", NOW + i)
    assert blocklist.tracked_sources == 3
    assert blocklist.failure_count("2001:db8::1", NOW + 4) == 0
    assert blocklist.failure_count("2001:db8::4", NOW + 4) == 1
    for i in range(1000):
        blocklist.record_failure(f"2001:db8::{i:x}:1", NOW + 5)
    assert blocklist.tracked_sources == 3


def test_a_fresh_failure_moves_an_address_to_the_back() -> None:
    """Eviction order is by last failure, so an address still guessing keeps its count."""
    blocklist = Blocklist(max_tracked_sources=2)
    blocklist.record_failure(IP, NOW)
    blocklist.record_failure(OTHER, NOW + 1)
    blocklist.record_failure(IP, NOW + 2)
    blocklist.record_failure(V6, NOW + 3)
    assert blocklist.failure_count(IP, NOW + 3) == 2
    assert blocklist.failure_count(OTHER, NOW + 3) == 0


def test_counters_past_their_quiet_period_are_pruned() -> None:
    """Forgotten counters leave the table, so it shrinks back without any eviction."""
    blocklist = Blocklist()
    for i in range(10):
        blocklist.record_failure(f"192.0.2.{i}", NOW)
    assert blocklist.tracked_sources == 10
    blocklist.handle_timer(NOW + 900)
    assert blocklist.tracked_sources == 0


def test_counter_eviction_never_touches_blocks() -> None:
    """A spray that churns the counter table leaves active blocks in place."""
    blocklist = Blocklist(max_tracked_sources=2)
    _fail(blocklist, IP, 5)
    for i in range(100):
        blocklist.record_failure(f"2001:db8::{i:x}", NOW + 10)
    assert blocklist.is_blocked(IP, NOW + 10)


def test_block_table_is_bounded_and_evicts_the_block_closest_to_expiry() -> None:
    """With the block table full a new offender is still blocked; the oldest term is dropped
    and reported as evicted, and the timer is due at once so the caller hears of it."""
    blocklist = Blocklist(max_blocks=2)
    first = _fail(blocklist, IP, 5, now=NOW)[0]
    _fail(blocklist, OTHER, 5, now=NOW + 100)
    third = _fail(blocklist, V6, 5, now=NOW + 200)[0]
    assert blocklist.is_blocked(V6, NOW + 204)
    assert blocklist.is_blocked(OTHER, NOW + 204)
    assert not blocklist.is_blocked(IP, NOW + 204)
    assert len(blocklist.blocks(NOW + 204)) == 2
    due = blocklist.next_timer()
    assert due is not None
    assert due <= third.since
    assert blocklist.handle_timer(NOW + 204) == [
        BlockLifted(first.ip, third.since, LiftReason.EVICTED)
    ]
    assert blocklist.next_timer() == NOW + 104 + 900


def test_evicting_an_expired_block_reports_it_expired() -> None:
    """If the block making room had already run out, it is reported expired at its end."""
    blocklist = Blocklist(max_blocks=1)
    first = _fail(blocklist, IP, 5)[0]
    later = first.until + 50
    assert _fail(blocklist, OTHER, 5, now=later) != []
    assert blocklist.handle_timer(later + 4) == [BlockLifted(IP, first.until, LiftReason.EXPIRED)]


def test_reblocking_before_the_timer_ran_reports_the_old_block() -> None:
    """A block that ran out but was not reaped, then replaced by a new one, is still reported."""
    blocklist = Blocklist()
    first = _fail(blocklist, IP, 5)[0]
    second = _fail(blocklist, IP, 5, now=first.until)[0]
    assert second.since == first.until + 4
    assert blocklist.next_timer() == first.until
    assert blocklist.handle_timer(second.since) == [
        BlockLifted(IP, first.until, LiftReason.EXPIRED)
    ]
    assert blocklist.is_blocked(IP, second.since)
    assert blocklist.next_timer() == second.until


def test_next_timer_tracks_the_earliest_expiry() -> None:
    """None when idle, else the earliest active term's end, through lifts and expiries."""
    blocklist = Blocklist()
    assert blocklist.next_timer() is None
    _fail(blocklist, OTHER, 5, now=NOW + 50)
    _fail(blocklist, IP, 5, now=NOW)
    _fail(blocklist, V6, 5, now=NOW + 100)
    assert blocklist.next_timer() == NOW + 4 + 900
    blocklist.lift(IP, NOW + 200)
    assert blocklist.next_timer() == NOW + 54 + 900
    assert blocklist.handle_timer(NOW + 54 + 900) == [
        BlockLifted(OTHER, NOW + 54 + 900, LiftReason.EXPIRED)
    ]
    assert blocklist.next_timer() == NOW + 104 + 900
    blocklist.handle_timer(NOW + 104 + 900)
    assert blocklist.next_timer() is None


def test_lift_and_reblock_churn_keeps_the_heap_small() -> None:
    """Stale timer entries left by lifts are compacted, so churn does not leak memory."""
    blocklist = Blocklist(limit=1)
    for i in range(1000):
        blocklist.record_failure(IP, NOW + i)
        blocklist.lift(IP, NOW + i)
    assert len(blocklist._expiries) <= 2 * len(blocklist._blocks) + 65


@dataclass
class _Model:
    """The rule as the spec states it, per address, with no caps and no optimisation."""

    limit: int
    window: float
    failures: dict[str, list[float]] = field(default_factory=dict)
    until: dict[str, float] = field(default_factory=dict)

    def blocked(self, ip: str, now: float) -> bool:
        return ip in self.until and now < self.until[ip]

    def fail(self, ip: str, now: float) -> bool:
        if self.blocked(ip, now):
            return False
        run = list(self.failures.get(ip, []))
        if run and now - run[-1] >= self.window:
            run = []
        run.append(now)
        if len(run) >= self.limit:
            self.until[ip] = now + self.window
            self.failures[ip] = []
            return True
        self.failures[ip] = run
        return False

    def succeed(self, ip: str) -> None:
        self.failures[ip] = []


_ADDRESSES = ("192.0.2.1", "192.0.2.2", "2001:db8::1")
_SPELLINGS = {
    "192.0.2.1": ("192.0.2.1", "::ffff:192.0.2.1"),
    "192.0.2.2": ("192.0.2.2", "::FFFF:192.0.2.2"),
    "2001:db8::1": ("2001:db8::1", "2001:DB8:0::0001"),
}
_operations = st.lists(
    st.tuples(
        st.sampled_from(["fail", "fail", "fail", "succeed", "lift"]),
        st.sampled_from(_ADDRESSES),
        st.integers(min_value=0, max_value=1),
        st.sampled_from([0.0, 1.0, 3.0, 9.0, 10.0, 11.0, 25.0]),
        st.booleans(),
    ),
    max_size=60,
)


def _assert_agrees(blocklist: Blocklist, model: _Model, now: float) -> None:
    """Every spelling of every address is blocked exactly when the model says so."""
    for address in _ADDRESSES:
        for form in _SPELLINGS[address]:
            assert blocklist.is_blocked(form, now) == model.blocked(address, now)


@settings(max_examples=500, deadline=None)
@given(_operations)
def test_blocked_iff_limit_consecutive_failures_in_window(
    operations: list[tuple[str, str, int, float, bool]],
) -> None:
    """An address is blocked exactly when it had ``limit`` failures, each within the quiet
    period of the last, with no success or lift since, and the block has not run out, whether
    or not the timer has run yet; every block's start and end is reported exactly once, in
    any spelling of the address."""
    limit, window = 3, 10.0
    blocklist = Blocklist(limit=limit, block_seconds=window)
    model = _Model(limit, window)
    now = NOW
    started: list[str] = []
    lifted: list[str] = []
    for action, ip, spelling, step, reap in operations:
        now += step
        _assert_agrees(blocklist, model, now)
        due = blocklist.next_timer()
        if reap and due is not None and due <= now:
            lifted.extend(event.ip for event in blocklist.handle_timer(now))
        raw = _SPELLINGS[ip][spelling]
        if action == "fail":
            event = blocklist.record_failure(raw, now)
            assert (event is not None) == model.fail(ip, now)
            if event is not None:
                assert (event.ip, event.since, event.until) == (ip, now, now + window)
                started.append(ip)
        elif action == "succeed":
            blocklist.record_success(raw, now)
            model.succeed(ip)
        else:
            was_blocked = model.blocked(ip, now)
            lift = blocklist.lift(raw, now)
            assert (lift is not None) == was_blocked
            if lift is not None:
                lifted.append(ip)
                model.until.pop(ip)
            model.succeed(ip)
        _assert_agrees(blocklist, model, now)
    lifted.extend(event.ip for event in blocklist.handle_timer(now + window))
    assert sorted(started) == sorted(lifted)
    assert blocklist.next_timer() is None
