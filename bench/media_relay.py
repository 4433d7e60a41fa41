"""The relay under test, alone in its own process: the appliance's
:class:`~appliance.media.relay.Relay` behind :class:`~appliance.media.udp.MediaSockets`
on Twisted's default reactor, as ``telemancer run`` would hold it (the same
garbage-collector settings), with nothing else running.

Protocol on stdin/stdout, one JSON object per line:

1. in ``{"calls", "port_range"}``: open that many calls (four bound ports
   each); out ``{"ports": [[a_rtp_port, b_rtp_port], ...]}``;
2. in ``{"legs": [...]}``: per call, each leg's expected peer address and its
   keys (hex master key + salt, or null for plain) in each direction, as
   SDES would have set them; out ``{"ready": true}``; then the reactor runs;
3. on SIGTERM the reactor stops and the per-leg counters, summed, are printed.

With ``"adapter": "direct"`` or ``"epoll"`` in the set-up, the sockets are
not ``MediaSockets`` but a prototype of a cheaper adapter around the same
``Relay`` (:class:`DirectPort`, :class:`EpollGroup`), to measure what the
changes they embody would save.
"""

from __future__ import annotations

import json
import select
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from appliance.media.relay import MediaSession, PortPool, Relay
from appliance.media.srtp import Direction, SrtpContext
from appliance.media.udp import MAX_PACKET_BYTES, MediaSockets
from appliance.runner import settle_garbage_collector

SUITE = "AES_CM_128_HMAC_SHA1_80"
KEY_BYTES = 16


def context(key_hex: str | None, direction: Direction) -> SrtpContext | None:
    """The SRTP context for one direction of a leg, or None on a plain leg."""
    if key_hex is None:
        return None
    key = bytes.fromhex(key_hex)
    return SrtpContext(SUITE, key[:KEY_BYTES], key[KEY_BYTES:], direction)


@implementer(IReadDescriptor)
class DirectPort:
    """Prototype of a leaner relay port than ``MediaSockets``' Twisted ``udp.Port``:

    - one ``recvfrom`` per readiness event (``udp.Port.doRead`` loops until a
      second ``recvfrom`` fails with EAGAIN, an extra system call and a
      raised exception per packet at 50 packets/s per port); epoll is
      level-triggered, so a port with more queued is reported again;
    - the forward goes out with the socket's own ``sendto``
      (``udp.Port.write`` checks the address with ``isIPAddress`` twice and
      ``isIPv6Address`` for every datagram; the relay only ever sends to
      addresses it read from a socket or from SDP it validated).
    """

    def __init__(self, relay: Relay, port: int, bound: socket.socket) -> None:
        self.socket = bound
        self.port = port
        self._recvfrom = bound.recvfrom
        self._receive = relay.receive
        self._ports: dict[int, socket.socket] = {}

    def fileno(self) -> int:
        """The socket's descriptor."""
        return self.socket.fileno()

    def logPrefix(self) -> str:  # noqa: N802
        """For Twisted's logging context."""
        return "media"

    def doRead(self) -> None:  # noqa: N802
        """Relay one datagram (or none: another reader may have taken it)."""
        try:
            data, source = self._recvfrom(MAX_PACKET_BYTES)
        except BlockingIOError:
            return
        forward = self._receive(self.port, data, source, reactor.seconds())
        if forward is not None:
            out = self._ports.get(forward.port)
            if out is not None:
                # A full buffer or a refused port loses the packet, as with udp.Port.write;
                # try/except is cheaper than contextlib.suppress on this path.
                try:  # noqa: SIM105
                    out.sendto(forward.data, forward.destination)
                except OSError:
                    pass

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        """Close the socket."""
        self.socket.close()


@implementer(IReadDescriptor)
class EpollGroup:
    """Prototype: :class:`DirectPort`'s savings, and every relay socket in one
    epoll set of our own, which the reactor watches as a single descriptor
    (an epoll descriptor is readable while any socket in it is). One reactor
    event then relays every packet that is ready, in a loop with none of the
    reactor's per-descriptor work (``log.callWithLogger`` with its context
    switch, ``_doReadOrWrite``, a ``doRead`` call and a clock read per packet).
    """

    def __init__(self, relay: Relay) -> None:
        self.poller = select.epoll()
        self._receive = relay.receive
        self._by_fd: dict[int, tuple[int, Any]] = {}
        self._ports: dict[int, socket.socket] = {}

    def add(self, port: int, bound: socket.socket) -> None:
        """Relay what arrives on ``bound`` (our ``port``)."""
        self._by_fd[bound.fileno()] = (port, bound.recvfrom)
        self._ports[port] = bound
        self.poller.register(bound.fileno(), select.EPOLLIN)

    def fileno(self) -> int:
        """The group's epoll descriptor."""
        return self.poller.fileno()

    def logPrefix(self) -> str:  # noqa: N802
        """For Twisted's logging context."""
        return "media"

    def doRead(self) -> None:  # noqa: N802
        """Relay one datagram from every socket that has one."""
        receive, by_fd, ports = self._receive, self._by_fd, self._ports
        now = reactor.seconds()
        for fd, _ in self.poller.poll(0):
            port, recvfrom = by_fd[fd]
            try:
                data, source = recvfrom(MAX_PACKET_BYTES)
            except BlockingIOError:
                continue
            forward = receive(port, data, source, now)
            if forward is not None:
                out = ports.get(forward.port)
                if out is not None:
                    try:  # noqa: SIM105 (cheaper than contextlib.suppress here)
                        out.sendto(forward.data, forward.destination)
                    except OSError:
                        pass

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        """Close the sockets and the epoll set."""
        for bound in self._ports.values():
            bound.close()
        self.poller.close()


def open_direct(relay: Relay, calls: int, grouped: bool) -> list[MediaSession]:
    """The calls' ports as :class:`DirectPort` readers on the reactor, or in
    one :class:`EpollGroup` (a pair that cannot be bound is given back and
    another tried, as ``MediaSockets`` does)."""
    ports: dict[int, socket.socket] = {}
    readers = []
    sessions = []
    for number in range(calls):
        for _ in range(8):
            session = relay.open(f"bench-{number}", reactor.seconds())
            if session is None:
                raise SystemExit(f"could not open call {number}: the port range is exhausted")
            bound = {}
            try:
                for leg in (session.a, session.b):
                    for port in (leg.rtp_port, leg.rtp_port + 1):
                        bound[port] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        bound[port].bind(("127.0.0.1", port))
                        bound[port].setblocking(False)
            except OSError:
                for sock in bound.values():
                    sock.close()
                relay.close(session.call_id)
                continue
            ports.update(bound)
            readers += [DirectPort(relay, port, sock) for port, sock in bound.items()]
            sessions.append(session)
            break
        else:
            raise SystemExit(f"could not bind ports for call {number}")
    if grouped:
        group = EpollGroup(relay)
        for port, sock in ports.items():
            group.add(port, sock)
        reactor.addReader(group)
        return sessions
    for reader in readers:
        reader._ports = ports
        reactor.addReader(reader)
    return sessions


def totals(relay: Relay, bound: int) -> dict[str, int]:
    """Every leg's counters, summed."""
    summed: dict[str, int] = {}
    for session in relay.sessions.values():
        for leg in (session.a, session.b):
            for name, value in leg.counters().items():
                if isinstance(value, int):
                    summed[name] = summed.get(name, 0) + value
    summed["bound_ports"] = bound
    return summed


def main() -> None:
    """Open the calls, configure them, relay until SIGTERM, print the counters."""
    setup = json.loads(sys.stdin.readline())
    low, high = setup["port_range"]
    relay = Relay(PortPool(int(low), int(high)))
    sockets = None
    adapter = setup.get("adapter", "twisted")
    if adapter in ("direct", "epoll"):
        sessions = open_direct(relay, int(setup["calls"]), adapter == "epoll")
    else:
        sockets = MediaSockets(reactor, relay, "127.0.0.1")
        sessions = []
        for number in range(int(setup["calls"])):
            session = sockets.open(f"bench-{number}", reactor.seconds())
            if session is None:
                raise SystemExit(f"could not open call {number}: {sockets.counters}")
            sessions.append(session)
    print(json.dumps({"ports": [[s.a.rtp_port, s.b.rtp_port] for s in sessions]}), flush=True)

    legs: list[dict[str, Any]] = json.loads(sys.stdin.readline())["legs"]
    now = reactor.seconds()
    for session, config in zip(sessions, legs, strict=True):
        for leg, name in ((session.a, "a"), (session.b, "b")):
            inbound = context(config[f"{name}_inbound"], Direction.INBOUND)
            relay.configure(
                leg,
                expected=("127.0.0.1", int(config[f"{name}_expected"])),
                rtcp_mux=False,
                inbound=inbound,
                outbound=context(config[f"{name}_outbound"], Direction.OUTBOUND),
                suite=SUITE if inbound is not None else None,
                now=now,
            )
    settle_garbage_collector()
    print(json.dumps({"ready": True, "reactor": type(reactor).__name__}), flush=True)
    reactor.run()
    bound = sockets.bound_ports if sockets is not None else 4 * len(sessions)
    print(json.dumps(totals(relay, bound)), flush=True)


if __name__ == "__main__":
    main()
