"""The relay's sockets: the one module of :mod:`appliance.media` that touches
the operating system and Twisted.

Each call leg gets an RTP and an RTCP port, bound when the call's media is
opened (synchronously: a port that cannot be bound is given up and another
pair tried) and closed when the call ends, so no port outlives its call.

Every relay port is a plain non-blocking UDP socket in one epoll set of our
own, which the reactor watches as a single descriptor (an epoll descriptor is
readable while any socket in it is). One reactor event then relays a datagram
from every socket that has one, with one clock read for the batch, one
``recvfrom`` per ready socket (epoll is level-triggered: a socket with more
queued is reported again) and the forward sent straight from the socket.
Each datagram is received into the relay's buffer (``recvfrom_into``), relayed
there (:meth:`Relay.forward`: SRTP unprotected, renumbered and protected in
place) and sent from a slice of it: no copy of the packet in Python.
Twisted's ``udp.Port`` per socket costs about 6 µs more per packet (two
``recvfrom`` calls, address checks on every send, the reactor's work per
descriptor) and logs two lines for each port it opens and closes:
``bench/media.py`` measured 17.1 µs per plain packet with it, 11.2 µs this way
(docs/performance.md, "Media relay").
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appliance.media.relay import MAX_DATAGRAM_BYTES, MediaSession, Relay

#: Attempts at finding a bindable pair before the call is refused (503).
BIND_ATTEMPTS = 8
#: Largest datagram read from a relay port (RTP with video can approach the MTU).
MAX_PACKET_BYTES = MAX_DATAGRAM_BYTES
#: Most sockets served per reactor event, so signalling is never starved.
MAX_EVENTS = 1024


@implementer(IReadDescriptor)
class MediaSockets:
    """Binds and closes the relay's ports and carries its datagrams; the proxy
    opens, configures and closes calls here."""

    log = Logger()

    def __init__(self, reactor: Any, relay: Relay, interface: str) -> None:
        self.reactor: IReactorFDSet = reactor
        self.clock: IReactorTime = reactor
        self.relay = relay
        #: Setting a leg from its SDP and finding silent calls are the relay's own.
        self.configure = relay.configure
        self.expire_idle = relay.expire_idle
        self.interface = interface
        self.family = (
            socket.AF_INET6 if ipaddress.ip_address(interface).version == 6 else socket.AF_INET
        )
        self.poller = select.epoll()
        self._sockets: dict[int, socket.socket] = {}
        #: Per descriptor: our port and the socket's ``recvfrom_into``.
        self._by_fd: dict[int, tuple[int, Callable[[memoryview, int], tuple[int, Any]]]] = {}
        #: Per port: the socket's ``sendto``.
        self._sendto: dict[int, Callable[[memoryview | bytes, tuple[str, int]], int]] = {}
        self._watched = False
        self.counters: dict[str, int] = {}

    # -- calls ------------------------------------------------------------

    def open(self, call_id: str, now: float) -> MediaSession | None:
        """Ports for a call's two legs, bound, or None when none can be had."""
        for _ in range(BIND_ATTEMPTS):
            session = self.relay.open(call_id, now)
            if session is None:
                self._count("exhausted")
                return None
            if self._bind(session):
                return session
            self.relay.close(call_id)
        return None

    def close(self, call_id: str) -> MediaSession | None:
        """Close a call's ports and return its session for the CDR."""
        session = self.relay.close(call_id)
        if session is not None:
            for leg in (session.a, session.b):
                self._unbind(leg.rtp_port)
                self._unbind(leg.rtp_port + 1)
        return session

    @property
    def bound_ports(self) -> int:
        """Sockets open now (two per leg)."""
        return len(self._sockets)

    # -- sockets ----------------------------------------------------------

    def _bind(self, session: MediaSession) -> bool:
        bound: list[int] = []
        for leg in (session.a, session.b):
            for port in (leg.rtp_port, leg.rtp_port + 1):
                sock = socket.socket(self.family, socket.SOCK_DGRAM)
                try:
                    sock.setblocking(False)
                    sock.bind((self.interface, port))
                except OSError as error:
                    sock.close()
                    if error.errno != errno.EADDRINUSE:
                        self.log.error(
                            "cannot bind media port {port}: {error}", port=port, error=str(error)
                        )
                    for done in bound:
                        self._unbind(done)
                    return False
                self._add(port, sock)
                bound.append(port)
        return True

    def _add(self, port: int, sock: socket.socket) -> None:
        self._sockets[port] = sock
        self._by_fd[sock.fileno()] = (port, sock.recvfrom_into)
        self._sendto[port] = sock.sendto
        self.poller.register(sock.fileno(), select.EPOLLIN)
        if not self._watched:
            self.reactor.addReader(self)
            self._watched = True

    def _unbind(self, port: int) -> None:
        sock = self._sockets.pop(port, None)
        if sock is not None:
            self._by_fd.pop(sock.fileno(), None)
            self._sendto.pop(port, None)
            self.poller.unregister(sock.fileno())
            sock.close()

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- IReadDescriptor: the epoll set as one reactor descriptor -----------

    def fileno(self) -> int:
        """The epoll set's descriptor."""
        return self.poller.fileno()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
        """For Twisted's log context."""
        return "media"

    def doRead(self) -> None:  # noqa: N802 (Twisted's name)
        """Relay one datagram from every socket that has one."""
        forward, by_fd, sendto_of = self.relay.forward, self._by_fd, self._sendto
        view = self.relay.buffer.view
        ipv6 = self.family == socket.AF_INET6
        now = self.clock.seconds()
        for fd, _ in self.poller.poll(0, MAX_EVENTS):
            try:
                port, recvfrom_into = by_fd[fd]
                length, source = recvfrom_into(view, MAX_PACKET_BYTES)
            except KeyError:  # closed since (not in the batch's relaying, but be safe)
                continue
            except OSError:  # nothing after all, or an ICMP error queued on it
                continue
            if ipv6:  # (host, port, flowinfo, scope_id): the relay keys on (host, port)
                source = (source[0], source[1])
            try:
                outgoing = forward(port, length, source, now)
            except Exception:  # one bad packet must never stop the relay
                self._count("errors")
                self.log.failure("media packet on port {port} not relayed", port=port)
                continue
            if outgoing is not None:
                port, destination, length = outgoing
                try:
                    sendto_of[port](view[:length], destination)
                except KeyError:  # the relay chose a port we do not hold: nothing to send
                    continue
                except OSError:  # a full or failing socket drops it, as a network would
                    self._count("send_errors")

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        """The reactor let go of the epoll set (at shutdown)."""
        self._watched = False

    def stop(self) -> None:
        """Close every port and the epoll set (the service is stopping)."""
        if self._watched:
            self.reactor.removeReader(self)
            self._watched = False
        for port in list(self._sockets):
            self._unbind(port)
        self.poller.close()
