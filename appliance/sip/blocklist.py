"""The SIP brute-force block rule, sans-I/O.

A source address that fails ``limit`` credentialed REGISTERs in a row is
refused for ``block_seconds``. The caller feeds it verdicts and asks
:meth:`Blocklist.is_blocked` for every packet; this module only keeps the
counters and the blocks, and returns events for the caller to audit, persist
and act on (closing the address's TLS/TCP connections).

What the caller reports, and why:

- :meth:`Blocklist.record_failure` only for a REGISTER that carried
  credentials and was refused. The first unauthenticated REGISTER (answered
  401 with a challenge) and a stale-nonce retry (RFC 7616 §3.3: right
  password, old nonce) are normal registration traffic and are not reported;
  counting them would block every phone on its first re-registration.
- Only refusals whose nonce was genuinely issued to that source address
  (:attr:`appliance.sip.digest.FailureReason.CREDENTIALS`: wrong password or
  unknown user) should be reported. A forged nonce, or a replayed ``nc``, can
  be sent over UDP from a spoofed address, and counting it would let anyone
  get a victim's address (a tenant's trunk, say) blocked with five datagrams.
- :meth:`Blocklist.record_success` for every authenticated request from the
  address; it resets the count.
- The address is the *transport* source address, never one taken from
  ``Via``, ``Contact`` or any other header, which the sender writes.

Design choices, and why:

- Addresses are normalised with :mod:`ipaddress`: an IPv4-mapped IPv6 address
  (``::ffff:192.0.2.1``, as a dual-stack socket reports IPv4 peers) counts as
  its IPv4 address, IPv6 is compressed and lowercased, and a zone index
  (``fe80::1%eth0``) is dropped, so one host has one counter however the
  socket spells it. Allowlist networks inside ``::ffff:0:0/96`` are converted
  to IPv4 to match.
- Failures are consecutive until a success, *or* until a quiet period of
  ``block_seconds`` with no failure: a phone whose user mistypes once a week
  is never blocked, while a cracker has to slow to one guess per
  ``block_seconds / limit`` to stay unblocked, which is the point.
- A failure from an address that is already blocked is ignored (it neither
  extends the block nor counts towards the next one): the caller drops the
  address's packets, so such a failure can only be one already in flight.
- :meth:`Blocklist.is_blocked` runs for every packet: with no block active it
  returns at once; otherwise it is a dictionary lookup on the address as given,
  then (only if that misses) on its normalised form through a bounded cache,
  and a comparison with the block's end.
- Memory is bounded against an attacker spraying source addresses (one IPv6
  /64 holds 2**64 of them). The failure counters are capped at
  ``max_tracked_sources``; they are kept in order of last failure, so the
  oldest is evicted first and counters past their quiet period are pruned from
  the front. Active blocks are never evicted to make room for counters, and
  are capped separately at ``max_blocks``. When that table is full a new
  offender is still blocked: the block closest to expiry is evicted, because it
  has served most of its term and is the one whose early end buys an attacker
  least. The eviction is reported as a :class:`BlockLifted` with reason
  ``"evicted"`` so the caller can drop it from storage.
- Every lift is reported once through :meth:`Blocklist.handle_timer` (or
  returned by :meth:`Blocklist.lift`). Lifts that happen as a side effect of
  another call (an eviction, an expired block replaced before its timer ran)
  are queued and make :meth:`Blocklist.next_timer` return a time already due,
  so the adapter must re-read :meth:`Blocklist.next_timer` after
  :meth:`Blocklist.record_failure`, :meth:`Blocklist.restore` and
  :meth:`Blocklist.lift`, as after :meth:`Blocklist.handle_timer`.
- Blocks survive restarts because the caller persists :class:`BlockStarted`
  and gives the rows back to :meth:`Blocklist.restore`; failure counters are
  not persisted (a restart costs an attacker at most ``limit - 1`` guesses).
- Allowlisted addresses are never counted and never blocked, including by
  :meth:`Blocklist.restore`: an allowlist added to the configuration takes
  effect over blocks stored before it.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

#: Consecutive credentialed REGISTER failures that block a source address.
DEFAULT_FAILURE_LIMIT = 5
#: How long a block lasts, and the quiet period after which failures are forgotten.
DEFAULT_BLOCK_SECONDS = 900.0
#: Cap on source addresses with a failure count; past it the oldest is forgotten.
MAX_TRACKED_SOURCES = 100_000
#: Cap on active blocks; past it the block closest to expiry is evicted.
MAX_ACTIVE_BLOCKS = 100_000
#: Raw address strings whose normalised form is remembered (shared by all instances).
NORMALISE_CACHE_SIZE = 4096
#: The ``reason`` of blocks this rule starts.
BRUTE_FORCE_REASON = "sip-register-auth-failures"

_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class LiftReason(StrEnum):
    """Why a block ended; a ``str``, so it can be stored and compared as text."""

    #: Its term ran out.
    EXPIRED = "expired"
    #: An operator lifted it.
    LIFTED = "lifted"
    #: The block table was full and a new offender needed the room.
    EVICTED = "evicted"


@dataclass(frozen=True, slots=True)
class Block:
    """An active block: the normalised address, its term and why it was made."""

    ip: str
    since: float
    until: float
    reason: str


@dataclass(frozen=True, slots=True)
class BlockStarted:
    """A block began: audit it, persist it and close the address's connections."""

    ip: str
    since: float
    until: float
    failures: int
    reason: str


@dataclass(frozen=True, slots=True)
class BlockLifted:
    """A block ended at ``at``: audit it and remove it from storage."""

    ip: str
    at: float
    reason: LiftReason


@functools.lru_cache(maxsize=NORMALISE_CACHE_SIZE)
def _normalised(raw: str) -> str | None:
    """The canonical spelling of ``raw``, or None if it is not an address."""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        if address.scope_id is not None:
            return str(ipaddress.IPv6Address(int(address)))
    return str(address)


def normalise_ip(raw: str) -> str:
    """The canonical text of a source address, as used for counters and blocks.

    IPv4-mapped IPv6 becomes IPv4, IPv6 is compressed and lowercased, and an
    IPv6 zone index is dropped. Raises ValueError if ``raw`` is not an address.
    """
    key = _normalised(raw)
    if key is None:
        raise ValueError(f"not an IP address: {raw!r}")
    return key


def _parse_network(text: str) -> _Network:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"allowlist entry {text!r} is not an address or a CIDR network"
            f" without host bits: {exc}"
        ) from None
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= _IPV4_MAPPED.prefixlen
        and network.subnet_of(_IPV4_MAPPED)
    ):
        address = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((address, network.prefixlen - _IPV4_MAPPED.prefixlen))
    return network


class Blocklist:
    """Failure counters and active blocks for source addresses; no I/O, no clock.

    Every method that depends on time takes ``now`` (seconds, the same clock
    for every call). Addresses are accepted in any spelling
    :func:`normalise_ip` understands and reported in their normalised form.
    """

    def __init__(
        self,
        *,
        limit: int = DEFAULT_FAILURE_LIMIT,
        block_seconds: float = DEFAULT_BLOCK_SECONDS,
        allowlist: Sequence[str] = (),
        max_tracked_sources: int = MAX_TRACKED_SOURCES,
        max_blocks: int = MAX_ACTIVE_BLOCKS,
    ) -> None:
        if isinstance(allowlist, str):
            raise TypeError("allowlist must be a sequence of CIDR strings, not one string")
        if limit < 1:
            raise ValueError("failure limit must be at least 1")
        if not block_seconds > 0:
            raise ValueError("block_seconds must be positive")
        if max_tracked_sources < 1 or max_blocks < 1:
            raise ValueError("table caps must be at least 1")
        self.limit = limit
        self.block_seconds = float(block_seconds)
        self.max_tracked_sources = max_tracked_sources
        self.max_blocks = max_blocks
        networks = [_parse_network(text) for text in allowlist]
        self.allowlist: tuple[_Network, ...] = tuple(networks)
        self._allow_v4 = tuple(n for n in networks if isinstance(n, ipaddress.IPv4Network))
        self._allow_v6 = tuple(n for n in networks if isinstance(n, ipaddress.IPv6Network))
        # address -> (consecutive failures, time of the last); insertion order is
        # (nearly) order of last failure, so eviction and pruning read the front.
        self._failures: dict[str, tuple[int, float]] = {}
        self._blocks: dict[str, Block] = {}
        # (until, address) for every block, plus stale entries for blocks since
        # lifted or replaced; they are skipped when met and compacted when many.
        self._expiries: list[tuple[float, str]] = []
        # Lifts that happened inside another call, reported by handle_timer.
        self._pending: list[BlockLifted] = []

    @property
    def tracked_sources(self) -> int:
        """How many addresses have a failure count (for metrics and tests)."""
        return len(self._failures)

    def is_allowlisted(self, ip: str) -> bool:
        """Whether ``ip`` is inside an allowlisted network; ValueError if not an address."""
        return self._allowlisted(normalise_ip(ip))

    def _allowlisted(self, key: str) -> bool:
        if not self.allowlist:
            return False
        address = ipaddress.ip_address(key)
        if isinstance(address, ipaddress.IPv4Address):
            return any(address in network for network in self._allow_v4)
        return any(address in network for network in self._allow_v6)

    def is_blocked(self, ip: str, now: float) -> bool:
        """Whether packets from ``ip`` are to be dropped; cheap enough for every packet.

        A block lasts while ``now < until``. A string that is not an address is
        never blocked.
        """
        blocks = self._blocks
        if not blocks:
            return False
        block = blocks.get(ip)
        if block is None:
            key = _normalised(ip)
            if key is None or key == ip:
                return False
            block = blocks.get(key)
            if block is None:
                return False
        return now < block.until

    def failure_count(self, ip: str, now: float) -> int:
        """Consecutive failures counted against ``ip`` (0 once the quiet period passed)."""
        entry = self._failures.get(normalise_ip(ip))
        if entry is None or now - entry[1] >= self.block_seconds:
            return 0
        return entry[0]

    def record_failure(self, ip: str, now: float) -> BlockStarted | None:
        """Count a refused credentialed REGISTER from transport source ``ip``.

        Returns the :class:`BlockStarted` event when this failure is the
        ``limit``-th in a row, else None (also for allowlisted or already
        blocked addresses). See the module docstring for what to report.
        Raises ValueError if ``ip`` is not an address.
        """
        key = normalise_ip(ip)
        if self._allowlisted(key):
            return None
        block = self._blocks.get(key)
        if block is not None and now < block.until:
            return None
        failures = self._failures
        self._prune_failures(now)
        entry = failures.pop(key, None)
        count = 1
        if entry is not None and now - entry[1] < self.block_seconds:
            count = entry[0] + 1
        if count >= self.limit:
            started = Block(key, now, now + self.block_seconds, BRUTE_FORCE_REASON)
            self._add_block(started, now)
            return BlockStarted(key, started.since, started.until, count, started.reason)
        if len(failures) >= self.max_tracked_sources:
            del failures[next(iter(failures))]
        failures[key] = (count, now)
        return None

    def record_success(self, ip: str, now: float) -> None:
        """An authenticated request from ``ip``: forget its failures.

        ``now`` is unused today; it is taken so every verdict has one shape.
        Raises ValueError if ``ip`` is not an address.
        """
        self._failures.pop(normalise_ip(ip), None)

    def lift(self, ip: str, now: float) -> BlockLifted | None:
        """An operator lifts the block on ``ip``; also forgets its failures.

        Returns the event, or None if ``ip`` is not blocked at ``now`` (an
        expired block not yet reaped is left for :meth:`handle_timer` to report).
        Raises ValueError if ``ip`` is not an address.
        """
        key = normalise_ip(ip)
        self._failures.pop(key, None)
        block = self._blocks.get(key)
        if block is None or now >= block.until:
            return None
        del self._blocks[key]
        return BlockLifted(key, now, LiftReason.LIFTED)

    def restore(
        self, ip: str, since: float, until: float, reason: str, *, now: float
    ) -> Block | None:
        """Reload a persisted block at start; returns it, or None if ignored.

        A block already over at ``now``, or on an allowlisted address, is
        ignored. A block already held for ``ip`` is replaced. Raises ValueError
        if ``ip`` is not an address or ``until`` is before ``since``.
        """
        key = normalise_ip(ip)
        if until < since:
            raise ValueError("a block cannot end before it starts")
        if now >= until or self._allowlisted(key):
            return None
        block = Block(key, since, until, reason)
        self._add_block(block, now)
        return block

    def blocks(self, now: float) -> list[Block]:
        """Active blocks at ``now``, oldest first, for ``telemancer bans list``."""
        active = [block for block in self._blocks.values() if now < block.until]
        return sorted(active, key=lambda block: (block.since, block.ip))

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` next has work: the earliest expiry, or None.

        Already in the past when lifts are queued (see the module docstring).
        """
        if self._pending:
            return min(lifted.at for lifted in self._pending)
        self._drop_stale_expiries()
        return self._expiries[0][0] if self._expiries else None

    def handle_timer(self, now: float) -> list[BlockLifted]:
        """Reap blocks whose term ended by ``now`` and report every lift since the last call."""
        lifted, self._pending = self._pending, []
        expiries, blocks = self._expiries, self._blocks
        while expiries and expiries[0][0] <= now:
            until, key = heapq.heappop(expiries)
            block = blocks.get(key)
            if block is not None and block.until == until:
                del blocks[key]
                lifted.append(BlockLifted(key, until, LiftReason.EXPIRED))
        self._prune_failures(now)
        return lifted

    def _add_block(self, block: Block, now: float) -> None:
        """Hold ``block``, reporting what it replaces and evicting if the table is full."""
        old = self._blocks.pop(block.ip, None)
        if old is not None and now >= old.until:
            self._pending.append(BlockLifted(old.ip, old.until, LiftReason.EXPIRED))
        self._failures.pop(block.ip, None)
        if len(self._blocks) >= self.max_blocks:
            self._evict_block(now)
        self._blocks[block.ip] = block
        heapq.heappush(self._expiries, (block.until, block.ip))
        if len(self._expiries) > 2 * len(self._blocks) + 64:
            self._expiries = [(b.until, b.ip) for b in self._blocks.values()]
            heapq.heapify(self._expiries)

    def _evict_block(self, now: float) -> None:
        """Drop the block closest to expiry (reported as expired if its term is over)."""
        self._drop_stale_expiries()
        until, key = heapq.heappop(self._expiries)
        del self._blocks[key]
        if now >= until:
            self._pending.append(BlockLifted(key, until, LiftReason.EXPIRED))
        else:
            self._pending.append(BlockLifted(key, now, LiftReason.EVICTED))

    def _drop_stale_expiries(self) -> None:
        expiries, blocks = self._expiries, self._blocks
        while expiries:
            until, key = expiries[0]
            block = blocks.get(key)
            if block is not None and block.until == until:
                return
            heapq.heappop(expiries)

    def _prune_failures(self, now: float) -> None:
        """Forget counters whose quiet period has passed, oldest first."""
        failures = self._failures
        while failures:
            key = next(iter(failures))
            if now - failures[key][1] < self.block_seconds:
                return
            del failures[key]
