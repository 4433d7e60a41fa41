"""The relay's sockets: the one module of :mod:`appliance.media` that touches
Twisted. Each call leg gets an RTP and an RTCP port, bound when the call's
media is opened (synchronously: a port that cannot be bound is given up and
another pair tried) and closed when it ends, so no port outlives its call.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from appliance.media.relay import Cipher, Forward, Leg, MediaIdle, MediaSession, Relay

#: Attempts at finding a bindable pair before the call is refused (503).
BIND_ATTEMPTS = 8
#: Largest datagram read from a relay port (RTP with video can approach the MTU).
MAX_PACKET_BYTES = 4096


class _RelayPort(DatagramProtocol):
    """One bound relay port: hands each datagram to the relay, sends what it says."""

    def __init__(self, sockets: MediaSockets, port: int) -> None:
        self.sockets = sockets
        self.port = port

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        """Relay one packet (or drop it, as the relay decides)."""
        forward = self.sockets.relay.receive(
            self.port, datagram, (addr[0], addr[1]), self.sockets.clock.seconds()
        )
        if forward is not None:
            self.sockets.send(forward)


class MediaSockets:
    """Binds and closes the relay's ports; the proxy opens and closes calls here."""

    log = Logger()

    def __init__(self, reactor: Any, relay: Relay, interface: str) -> None:
        self.reactor: IReactorUDP = reactor
        self.clock: IReactorTime = reactor
        self.relay = relay
        self.interface = interface
        self._listening: dict[int, tuple[IListeningPort, _RelayPort]] = {}
        self.counters: dict[str, int] = {}

    def open(self, call_id: str, now: float) -> MediaSession | None:
        """Ports for a call's two legs, bound, or None when none can be had."""
        for _ in range(BIND_ATTEMPTS):
            session = self.relay.open(call_id, now)
            if session is None:
                self.counters["exhausted"] = self.counters.get("exhausted", 0) + 1
                return None
            if self._bind(session):
                return session
            self.relay.close(call_id)
        return None

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
        """Set a leg from its negotiated SDP (see :meth:`Relay.configure`)."""
        self.relay.configure(
            leg,
            expected=expected,
            rtcp_mux=rtcp_mux,
            inbound=inbound,
            outbound=outbound,
            suite=suite,
            now=now,
        )

    def _bind(self, session: MediaSession) -> bool:
        bound: list[int] = []
        for leg in (session.a, session.b):
            for port in (leg.rtp_port, leg.rtp_port + 1):
                protocol = _RelayPort(self, port)
                try:
                    listening = self.reactor.listenUDP(
                        port, protocol, interface=self.interface, maxPacketSize=MAX_PACKET_BYTES
                    )
                except CannotListenError as error:
                    if getattr(error.socketError, "errno", None) != errno.EADDRINUSE:
                        self.log.error(
                            "cannot bind media port {port}: {error}", port=port, error=str(error)
                        )
                    for done in bound:
                        self._unbind(done)
                    return False
                self._listening[port] = (listening, protocol)
                bound.append(port)
        return True

    def close(self, call_id: str) -> MediaSession | None:
        """Close a call's ports and return its session for the CDR."""
        session = self.relay.close(call_id)
        if session is not None:
            for leg in (session.a, session.b):
                self._unbind(leg.rtp_port)
                self._unbind(leg.rtp_port + 1)
        return session

    def _unbind(self, port: int) -> None:
        entry = self._listening.pop(port, None)
        if entry is not None:
            entry[0].stopListening()

    def send(self, forward: Forward) -> None:
        """Send from the port the relay chose."""
        entry = self._listening.get(forward.port)
        if entry is not None and entry[1].transport is not None:
            entry[1].transport.write(forward.data, forward.destination)

    def expire_idle(self, now: float) -> list[MediaIdle]:
        """Calls whose media has been silent for the idle time."""
        return self.relay.expire_idle(now)

    @property
    def bound_ports(self) -> int:
        """Sockets open now (two per leg)."""
        return len(self._listening)
