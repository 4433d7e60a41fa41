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
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from appliance.media.srtp import SrtpError

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


class Cipher(Protocol):
    """One direction of one SRTP leg (:class:`appliance.media.srtp.SrtpContext`)."""

    def protect(self, packet: bytes) -> bytes: ...
    def unprotect(self, packet: bytes) -> bytes: ...
    def protect_rtcp(self, packet: bytes) -> bytes: ...
    def unprotect_rtcp(self, packet: bytes) -> bytes: ...


class Forward(NamedTuple):
    """Send ``data`` from our ``port`` to ``destination``."""

    port: int
    destination: tuple[str, int]
    data: bytes


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


@dataclass
class _Sequence:
    """Renumbering state of one SSRC leaving on a leg (RFC 3550 sequence, mod 2**16)."""

    last_in: int
    out: int


@dataclass
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
        """A datagram arrived on one of our ports: what (if anything) to send on."""
        entry = self._by_port.get(port)
        if entry is None or len(data) < 12:
            return None
        session, leg, other = entry
        is_rtcp = port != leg.rtp_port or (leg.rtcp_mux and 72 <= data[1] & 0x7F <= 79)
        packet = self._accept(leg, data, source, is_rtcp, now)
        if packet is None:
            return None
        session.last_activity = now
        leg.packets_in += 1
        leg.bytes_in += len(data)
        return self._send(other, packet, is_rtcp)

    def _accept(
        self, leg: Leg, data: bytes, source: tuple[str, int], is_rtcp: bool, now: float
    ) -> bytes | None:
        """The plain packet if it may pass (latching and authentication), else None."""
        if leg.inbound is not None:
            try:
                packet = (
                    leg.inbound.unprotect_rtcp(data) if is_rtcp else leg.inbound.unprotect(data)
                )
            except SrtpError:
                leg.auth_failures += 1
                return None
            self._latch(leg, source, is_rtcp)  # learnt only from what authenticated
        elif is_rtcp:
            if leg.peer is None or source[0] != leg.peer[0]:
                leg.dropped += 1
                return None
            leg.peer_rtcp = source
            return data
        else:
            packet = data
            if not self._may_send(leg, data, source, now):
                leg.dropped += 1
                return None
        if not is_rtcp:
            self._count_loss(leg, packet)
        return packet

    @staticmethod
    def _may_send(leg: Leg, data: bytes, source: tuple[str, int], now: float) -> bool:
        """Plain-leg latching: the first sender in the window (or the address the SDP
        named) latches; later only that address, the SDP's address (which always
        wins the latch back), or the same SSRC moving on by a small step (a NAT
        rebinding)."""
        ssrc = int.from_bytes(data[8:12], "big")
        if leg.peer is None:
            if source != leg.expected and now > leg.latch_until:
                return False
            leg.peer, leg.peer_ssrc = source, ssrc
            return True
        if source == leg.peer:
            return True
        if source == leg.expected:
            # The address signalling named takes the latch back from a stranger
            # that sent first inside the window (an RTP-bleed race).
            leg.peer, leg.peer_ssrc = source, ssrc
            return True
        last = leg.arriving.get(ssrc)
        step = (int.from_bytes(data[2:4], "big") - last) % 65536 if last is not None else 0
        if ssrc != leg.peer_ssrc or not 0 < step <= MAX_LATCH_SEQUENCE_STEP:
            return False
        leg.peer = source
        return True

    @staticmethod
    def _count_loss(leg: Leg, packet: bytes) -> None:
        ssrc = int.from_bytes(packet[8:12], "big")
        seq = int.from_bytes(packet[2:4], "big")
        last = leg.arriving.get(ssrc)
        if last is not None:
            step = (seq - last) % 65536
            if 1 < step < MAX_COUNTED_GAP:
                leg.lost += step - 1
            elif step >= MAX_COUNTED_GAP:
                return  # late or reordered: keep the highest
        leg.arriving[ssrc] = seq

    @staticmethod
    def _latch(leg: Leg, source: tuple[str, int], is_rtcp: bool) -> None:
        if is_rtcp and not leg.rtcp_mux:
            leg.peer_rtcp = source
        else:
            leg.peer = source

    def _send(self, leg: Leg, packet: bytes, is_rtcp: bool) -> Forward | None:
        """Renumber (toward SRTP), protect with ``leg``'s keys and address to its peer."""
        if is_rtcp:
            destination = leg.peer_rtcp or (
                leg.peer if leg.rtcp_mux else _rtcp_of(leg.peer or leg.expected)
            )
            out = leg.outbound.protect_rtcp(packet) if leg.outbound is not None else packet
            port = leg.rtcp_port
        else:
            if leg.outbound is not None:
                packet = self._renumber(leg, packet)
            destination = leg.peer or leg.expected
            out = leg.outbound.protect(packet) if leg.outbound is not None else packet
            port = leg.rtp_port
        if destination is None:
            return None
        leg.packets_out += 1
        leg.bytes_out += len(out)
        return Forward(port, destination, out)

    @staticmethod
    def _renumber(leg: Leg, packet: bytes) -> bytes:
        """Outgoing sequence numbers that only move forward, per SSRC."""
        ssrc = int.from_bytes(packet[8:12], "big")
        seq = int.from_bytes(packet[2:4], "big")
        state = leg.leaving.get(ssrc)
        if state is None:
            leg.leaving[ssrc] = _Sequence(seq, seq)
            return packet
        step = (seq - state.last_in) % 65536
        if 0 < step < MAX_COUNTED_GAP:
            state.out = (state.out + step) % 65536
        else:  # a rewind, a duplicate or a restart: keep going forward by one
            state.out = (state.out + 1) % 65536
        state.last_in = seq
        if state.out == seq:
            return packet
        return packet[:2] + state.out.to_bytes(2, "big") + packet[4:]

    def expire_idle(self, now: float) -> list[MediaIdle]:
        """Calls with no media either way for ``idle_seconds`` (run every few seconds)."""
        return [
            MediaIdle(s.call_id)
            for s in self.sessions.values()
            if now - s.last_activity >= self.idle_seconds
        ]


def _rtcp_of(address: tuple[str, int] | None) -> tuple[str, int] | None:
    return None if address is None else (address[0], address[1] + 1)
