"""The media relay table: every call's ports, where each peer is, and what
happens to each packet. Sans-I/O: the UDP adapter (:mod:`appliance.media.udp`)
hands it datagrams with their source and sends what it returns.

Each call has two legs, each with its own local RTP/RTCP ports, its own peer
and, when it is SRTP, its own keys in each direction: a packet is unprotected
with the keys of the leg it arrived on and protected with the keys of the leg
it leaves on. Nothing is copied between legs but the media itself.

Who may send to a port (RTP bleed protection):

- on an SRTP leg, only packets that authenticate are accepted, and the peer
  address is learnt from those only;
- on a plain leg, the first packet within the latch window after signalling
  latches the peer; afterwards only that address is accepted, except the same
  SSRC continuing with a small sequence step (a NAT that rebound the port);
- packets from anyone else are dropped and counted.

Outgoing sequence numbers are renumbered per SSRC so that a phone restarting
its sequence, or a new SSRC, never looks like a replay to the other leg's
SRTP context ("index too old").

Packets are relayed in place: the adapter receives each datagram into the
relay's :attr:`Relay.buffer` and calls :meth:`Relay.forward`, which
unprotects, renumbers and protects it there and says which of our ports sends
how many bytes of it to whom. SRTP ↔ SRTP then costs no copy of the packet
in Python (docs/performance.md, "Media relay"). :meth:`Relay.receive` does the
same for a packet held as bytes (tests, tools).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from appliance.media.srtp import PacketBuffer, SrtpError

#: Default port range for relay ports (RTP even, RTCP the odd port above).
DEFAULT_PORT_RANGE = (20000, 29999)
#: How long after signalling a plain leg may latch onto a new address.
LATCH_WINDOW_SECONDS = 10.0
#: A sequence step up to this from the same SSRC may move a plain leg's latch.
MAX_LATCH_SEQUENCE_STEP = 100
#: Gaps larger than this are a restart, not loss.
MAX_COUNTED_GAP = 3000
#: Media silence (both directions) that ends a call.
DEFAULT_IDLE_SECONDS = 60.0
#: Largest datagram relayed (RTP with video can approach the MTU).
MAX_DATAGRAM_BYTES = 4096

#: Sequence number and SSRC of an RTP header.
_SEQUENCE_AND_SSRC = struct.Struct("!2xH4xI").unpack_from


class Cipher(Protocol):
    """One direction of one SRTP leg (:class:`appliance.media.srtp.SrtpContext`):
    each operation works on the first ``length`` bytes of a buffer, in place,
    and returns the new length."""

    def protect_in_place(self, buffer: PacketBuffer, length: int, /) -> int: ...
    def unprotect_in_place(self, buffer: PacketBuffer, length: int, /) -> int: ...
    def protect_rtcp_in_place(self, buffer: PacketBuffer, length: int, /) -> int: ...
    def unprotect_rtcp_in_place(self, buffer: PacketBuffer, length: int, /) -> int: ...


class Forward(NamedTuple):
    """Send ``data`` from our ``port`` to ``destination``."""

    port: int
    destination: tuple[str, int]
    data: bytes


#: What :meth:`Relay.forward` asks to send: from our port, to the destination,
#: the first so many bytes of the relay's buffer.
Outgoing = tuple[int, tuple[str, int], int]


class MediaIdle(NamedTuple):
    """No media in either direction for the idle time: end the call."""

    call_id: str


class PortPool:
    """RTP/RTCP port pairs, chosen at random from a range; never handed out twice."""

    def __init__(
        self,
        low: int = DEFAULT_PORT_RANGE[0],
        high: int = DEFAULT_PORT_RANGE[1],
        choose: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        first = low + (low % 2)
        self._free = list(range(first, high, 2))
        self._choose = choose
        self._used: set[int] = set()

    def allocate(self) -> int | None:
        """An even RTP port (RTCP is the next one), or None when all are taken."""
        if not self._free:
            return None
        index = self._choose(len(self._free))
        self._free[index], self._free[-1] = self._free[-1], self._free[index]
        port = self._free.pop()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back."""
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        """Pairs handed out."""
        return len(self._used)


@dataclass(slots=True)
class _Sequence:
    """Renumbering state of one SSRC leaving on a leg (RFC 3550 sequence, mod 2**16)."""

    last_in: int
    out: int


@dataclass(slots=True)
class Leg:
    """One side of a call's media."""

    rtp_port: int
    expected: tuple[str, int] | None = None
    rtcp_mux: bool = False
    inbound: Cipher | None = None
    outbound: Cipher | None = None
    suite: str | None = None
    peer: tuple[str, int] | None = None
    peer_rtcp: tuple[str, int] | None = None
    peer_ssrc: int | None = None
    latch_until: float = 0.0
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    lost: int = 0
    auth_failures: int = 0
    dropped: int = 0
    #: Per SSRC arriving on this leg: the last sequence number seen.
    arriving: dict[int, int] = field(default_factory=dict)
    #: Per SSRC leaving on this leg: renumbering state.
    leaving: dict[int, _Sequence] = field(default_factory=dict)

    @property
    def rtcp_port(self) -> int:
        """Our RTCP port (the RTP port itself with rtcp-mux)."""
        return self.rtp_port if self.rtcp_mux else self.rtp_port + 1

    def counters(self) -> dict[str, object]:
        """What the CDR's media fields record for this leg."""
        return {
            "suite": self.suite or "plain",
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "lost": self.lost,
            "auth_failures": self.auth_failures,
            "dropped": self.dropped,
        }


@dataclass
class MediaSession:
    """A call's two legs: ``a`` faces the caller, ``b`` the callee."""

    call_id: str
    a: Leg
    b: Leg
    last_activity: float


class Relay:
    """Every call's media, by call and by local port."""

    def __init__(
        self,
        pool: PortPool,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        latch_window: float = LATCH_WINDOW_SECONDS,
    ) -> None:
        self.pool = pool
        self.idle_seconds = idle_seconds
        self.latch_window = latch_window
        self.sessions: dict[str, MediaSession] = {}
        self._by_port: dict[int, tuple[MediaSession, Leg, Leg]] = {}
        #: Where the adapter puts each datagram for :meth:`forward`.
        self.buffer = PacketBuffer(MAX_DATAGRAM_BYTES)

    def open(self, call_id: str, now: float) -> MediaSession | None:
        """Ports for both legs of a new call, or None (and nothing held) when the
        range is exhausted: the call is then refused with 503."""
        existing = self.sessions.get(call_id)
        if existing is not None:
            return existing
        a_port = self.pool.allocate()
        if a_port is None:
            return None
        b_port = self.pool.allocate()
        if b_port is None:
            self.pool.release(a_port)
            return None
        session = MediaSession(call_id, Leg(a_port), Leg(b_port), now)
        self.sessions[call_id] = session
        for leg, other in ((session.a, session.b), (session.b, session.a)):
            self._by_port[leg.rtp_port] = (session, leg, other)
            self._by_port[leg.rtp_port + 1] = (session, leg, other)
        return session

    def configure(
        self,
        leg: Leg,
        *,
        expected: tuple[str, int] | None,
        rtcp_mux: bool,
        inbound: Cipher | None,
        outbound: Cipher | None,
        suite: str | None,
        now: float,
    ) -> None:
        """Set a leg from its negotiated SDP (offer or answer, or a re-INVITE):
        where it says it listens, and its keys in each direction."""
        leg.expected = expected
        leg.rtcp_mux = rtcp_mux
        leg.inbound, leg.outbound, leg.suite = inbound, outbound, suite
        leg.latch_until = now + self.latch_window

    def close(self, call_id: str) -> MediaSession | None:
        """Release a call's ports; return its session (for the CDR's counters)."""
        session = self.sessions.pop(call_id, None)
        if session is None:
            return None
        for leg in (session.a, session.b):
            self._by_port.pop(leg.rtp_port, None)
            self._by_port.pop(leg.rtp_port + 1, None)
            self.pool.release(leg.rtp_port)
        return session

    def receive(
        self, port: int, data: bytes, source: tuple[str, int], now: float
    ) -> Forward | None:
        """A datagram arrived on one of our ports: what (if anything) to send on.
        :meth:`forward` on a copy of ``data``."""
        length = len(data)
        if length > MAX_DATAGRAM_BYTES:
            return None
        view = self.buffer.view
        view[:length] = data
        outgoing = self.forward(port, length, source, now)
        if outgoing is None:
            return None
        port, destination, length = outgoing
        return Forward(port, destination, bytes(view[:length]))

    def forward(
        self, port: int, length: int, source: tuple[str, int], now: float
    ) -> Outgoing | None:
        """The first ``length`` bytes of :attr:`buffer` arrived on our ``port``
        from ``source``: relay them in place, and return what to send (if
        anything). The per-packet path: RTP is handled here inline, and
        dictionaries are indexed (a miss is rare) rather than called ``get``."""
        if length < 12:
            return None
        try:
            session, leg, other = self._by_port[port]
        except KeyError:
            return None
        buffer = self.buffer
        view = buffer.view
        if port != leg.rtp_port or (leg.rtcp_mux and 72 <= view[1] & 0x7F <= 79):
            return self._forward_rtcp(session, leg, other, length, source, now)
        inbound = leg.inbound
        if inbound is not None:
            try:
                size = inbound.unprotect_in_place(buffer, length)
            except SrtpError:
                leg.auth_failures += 1
                return None
            leg.peer = source  # learnt only from what authenticated
        elif self._may_send(leg, view, source, now):
            size = length
        else:
            leg.dropped += 1
            return None
        seq, ssrc = _SEQUENCE_AND_SSRC(view)
        arriving = leg.arriving
        try:
            step = (seq - arriving[ssrc]) & 0xFFFF
        except KeyError:
            arriving[ssrc] = seq
        else:  # count losses from gaps; a late or reordered packet keeps the highest
            if step < MAX_COUNTED_GAP:
                if step > 1:
                    leg.lost += step - 1
                arriving[ssrc] = seq
        session.last_activity = now
        leg.packets_in += 1
        leg.bytes_in += length
        outbound = other.outbound
        if outbound is not None:
            # Outgoing sequence numbers only move forward, per SSRC (inline:
            # this is the per-packet path), rewritten in the packet when they
            # differ from its own.
            try:
                state = other.leaving[ssrc]
            except KeyError:
                other.leaving[ssrc] = _Sequence(seq, seq)
            else:
                step = (seq - state.last_in) & 0xFFFF
                if not 0 < step < MAX_COUNTED_GAP:  # a rewind, a duplicate or a restart:
                    step = 1  # keep going forward by one
                out = state.out = (state.out + step) & 0xFFFF
                state.last_in = seq
                if out != seq:
                    view[2] = out >> 8
                    view[3] = out & 0xFF
            size = outbound.protect_in_place(buffer, size)
        destination = other.peer or other.expected
        if destination is None:
            return None
        other.packets_out += 1
        other.bytes_out += size
        return other.rtp_port, destination, size

    def _forward_rtcp(
        self,
        session: MediaSession,
        leg: Leg,
        other: Leg,
        length: int,
        source: tuple[str, int],
        now: float,
    ) -> Outgoing | None:
        """:meth:`forward` for RTCP (a few packets a minute per call)."""
        buffer = self.buffer
        if leg.inbound is not None:
            try:
                size = leg.inbound.unprotect_rtcp_in_place(buffer, length)
            except SrtpError:
                leg.auth_failures += 1
                return None
            if leg.rtcp_mux:  # learnt only from what authenticated
                leg.peer = source
            else:
                leg.peer_rtcp = source
        elif leg.peer is None or source[0] != leg.peer[0]:
            leg.dropped += 1
            return None
        else:
            leg.peer_rtcp = source
            size = length
        session.last_activity = now
        leg.packets_in += 1
        leg.bytes_in += length
        destination = other.peer_rtcp or (
            other.peer if other.rtcp_mux else _rtcp_of(other.peer or other.expected)
        )
        if other.outbound is not None:
            size = other.outbound.protect_rtcp_in_place(buffer, size)
        if destination is None:
            return None
        other.packets_out += 1
        other.bytes_out += size
        return other.rtcp_port, destination, size

    @staticmethod
    def _may_send(leg: Leg, data: memoryview, source: tuple[str, int], now: float) -> bool:
        """Plain-leg latching: the first sender in the window (or the address the SDP
        named) latches; later only that address, the SDP's address (which always
        wins the latch back), or the same SSRC moving on by a small step (a NAT
        rebinding)."""
        if source == leg.peer:
            return True
        seq, ssrc = _SEQUENCE_AND_SSRC(data)
        if leg.peer is None:
            if source != leg.expected and now > leg.latch_until:
                return False
            leg.peer, leg.peer_ssrc = source, ssrc
            return True
        if source == leg.expected:
            # The address signalling named takes the latch back from a stranger
            # that sent first inside the window (an RTP-bleed race).
            leg.peer, leg.peer_ssrc = source, ssrc
            return True
        last = leg.arriving.get(ssrc)
        step = (seq - last) % 65536 if last is not None else 0
        if ssrc != leg.peer_ssrc or not 0 < step <= MAX_LATCH_SEQUENCE_STEP:
            return False
        leg.peer = source
        return True

    def expire_idle(self, now: float) -> list[MediaIdle]:
        """Calls with no media either way for ``idle_seconds`` (run every few seconds)."""
        return [
            MediaIdle(s.call_id)
            for s in self.sessions.values()
            if now - s.last_activity >= self.idle_seconds
        ]


def _rtcp_of(address: tuple[str, int] | None) -> tuple[str, int] | None:
    return None if address is None else (address[0], address[1] + 1)
