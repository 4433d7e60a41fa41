"""SIP on the reactor: TLS always; plaintext UDP and TCP only when enabled and
only from internal subnets. The one module of :mod:`appliance.sip` that
touches Twisted: it frames bytes into messages and hands them to a
:class:`SipHandler` (the service), which runs the sans-I/O core.

Sources outside the allowed subnets are dropped without a word and counted.
On UDP that is invisible to a scanner; on TCP the kernel has already
completed the handshake, so the connection is reset at once (bind
``plaintext_listen`` to an internal address to hide the port entirely).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import itertools
import socket
from collections.abc import Sequence
from typing import Any, Protocol, cast

from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IReactorFDSet,
    IReadDescriptor,
)
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from appliance.sip.framing import PONG, FramingError, KeepAlivePing, StreamFramer
from appliance.sip.message import Message
from appliance.sip.registrar import Flow
from appliance.sip.responses import response

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_connection_ids = itertools.count(1)


class DatagramHandler(Protocol):
    """What the UDP port calls."""

    def datagram_received(self, data: bytes, flow: Flow) -> None:
        """A datagram arrived."""

    def count(self, name: str) -> None:
        """Bump a counter (drops, refusals)."""


class SipHandler(DatagramHandler, Protocol):
    """What the transports call: the SIP service."""

    def is_blocked(self, ip: str) -> bool:
        """Whether to drop everything from ``ip``."""

    def message_received(self, message: Message, flow: Flow) -> None:
        """A complete message arrived on a stream."""

    def connection_made(self, connection: SipStreamProtocol) -> None:
        """A stream connection opened (and passed the source checks)."""

    def connection_certified(self, connection: SipStreamProtocol, fingerprint: str) -> None:
        """A TLS peer presented a certificate (SHA-256 of it, lower-case hex)."""

    def carrier_ready(self, connection: SipStreamProtocol) -> None:
        """An outbound connection to a carrier is verified and may carry requests."""

    def connection_lost(self, connection: SipStreamProtocol) -> None:
        """A stream connection closed."""


def host_of(address: IAddress) -> tuple[str, int]:
    """``(host, port)`` of a TCP or UDP peer, IPv4-mapped IPv6 unmapped."""
    peer = cast(IPv4Address | IPv6Address, address)
    return _unmapped(peer.host), int(peer.port)


def _unmapped(host: str) -> str:
    if host.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host


def in_networks(host: str, networks: Sequence[Network] | None) -> bool:
    """True when ``networks`` is None (no restriction) or one contains ``host``."""
    if networks is None:
        return True
    return _in_networks(host, tuple(networks))


@functools.lru_cache(maxsize=4096)
def _in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    """Cached: it runs for every datagram, and sources repeat."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


@implementer(IHandshakeListener)
class SipStreamProtocol(TwistedProtocol, TimeoutMixin):
    """One TLS or TCP connection: framing, keepalives, idle timeout."""

    log = Logger()

    def __init__(
        self, factory: SipStreamFactory, remote: tuple[str, int], connection: str | None = None
    ) -> None:
        self.factory = factory
        name = factory.transport_name
        self.flow = Flow(name, remote, connection or f"{name}-{next(_connection_ids)}")
        self._framer = StreamFramer()
        self.client_certificate: str | None = None

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        """Start the idle timer and register with the handler."""
        self.setTimeout(self.factory.idle_timeout)
        self.factory.handler.connection_made(self)

    def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted's name)
        """Record the client certificate, if the phone or trunk presented one."""
        transport = cast(Any, self.transport)
        certificate = transport.getPeerCertificate()
        if certificate is not None:
            der = certificate.to_cryptography().public_bytes(Encoding.DER)
            self.client_certificate = hashlib.sha256(der).hexdigest()
            self.log.info(
                "client certificate on {flow}: {subject} sha256={fingerprint}",
                flow=self.flow.describe(),
                subject=certificate.get_subject().CN or "",
                fingerprint=self.client_certificate,
            )
            self.factory.handler.connection_certified(self, self.client_certificate)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        """Frame the bytes and hand over each complete message."""
        self.resetTimeout()
        handler = self.factory.handler
        if handler.is_blocked(self.flow.remote[0]):
            handler.count("dropped_blocked")
            self.abort()
            return
        try:
            events = self._framer.receive_data(data)
        except FramingError as error:
            self._framing_failed(error)
            return
        for event in events:
            if isinstance(event, KeepAlivePing):
                self.send(PONG)
            else:
                handler.message_received(event.message, self.flow)
            if self.transport is None or self.factory.handler.is_blocked(self.flow.remote[0]):
                return

    def _framing_failed(self, error: FramingError) -> None:
        self.factory.handler.count(f"framing_{error.error.status}")
        message = error.message
        if message is not None and message.is_request and message.all("via"):
            self.send(
                response(message, error.error.status, error.error.reason, source=self.flow.remote)
            )
        self.close()

    def send(self, data: bytes) -> None:
        """Write to the peer."""
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close after pending writes."""
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection now (blocked sources, refused sources)."""
        if self.transport is not None:
            cast(Any, self.transport).abortConnection()

    def keep_open_until(self, deadline: float, now: float) -> None:
        """Extend the idle timeout to a registration's expiry: the phone behind NAT
        can only be reached over this connection."""
        self.setTimeout(max(self.factory.idle_timeout, int(deadline - now) + 30))

    def timeoutConnection(self) -> None:  # noqa: N802 (Twisted's name)
        """Idle too long: close."""
        self.factory.handler.count("idle_timeouts")
        self.abort()

    def connectionLost(self, reason: object = None) -> None:  # noqa: N802 (Twisted's name)
        """Forget the connection."""
        self.setTimeout(None)
        self.factory.connection_closed(self)
        self.factory.handler.connection_lost(self)


class SipStreamFactory(Factory):
    """Accepts TLS or TCP connections, enforcing source subnets and a per-IP limit."""

    def __init__(
        self,
        handler: SipHandler,
        *,
        transport_name: str,
        max_per_ip: int,
        idle_timeout: int,
        allowed: Sequence[Network] | None = None,
    ) -> None:
        self.handler = handler
        self.transport_name = transport_name
        self.max_per_ip = max_per_ip
        self.idle_timeout = idle_timeout
        self.allowed = allowed
        self.per_ip: dict[str, int] = {}

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol | None:  # noqa: N802
        """Refuse (by closing at once) sources that are not allowed, blocked or over limit."""
        if addr is None:
            return None
        host, port = host_of(addr)
        if not in_networks(host, self.allowed):
            self.handler.count("dropped_outside_subnets")
            return None
        if self.handler.is_blocked(host):
            self.handler.count("dropped_blocked")
            return None
        if self.per_ip.get(host, 0) >= self.max_per_ip:
            self.handler.count("refused_connection_limit")
            return None
        self.per_ip[host] = self.per_ip.get(host, 0) + 1
        return SipStreamProtocol(self, (host, port))

    def connection_closed(self, protocol: SipStreamProtocol) -> None:
        """Release the connection's per-IP slot."""
        host = protocol.flow.remote[0]
        left = self.per_ip.get(host, 1) - 1
        if left > 0:
            self.per_ip[host] = left
        else:
            self.per_ip.pop(host, None)


#: Most datagrams read in one reactor event, so streams and timers are never starved.
MAX_DATAGRAMS_PER_EVENT = 64
#: Largest datagram read (limits.MAX_DATAGRAM_BYTES answers what is larger).
MAX_DATAGRAM_READ = 65_535


@implementer(IReadDescriptor)
class SipDatagramPort:
    """Plaintext UDP from internal subnets, on a plain non-blocking socket the
    reactor watches.

    Not Twisted's ``udp.Port``, for two reasons measured under load
    (docs/performance.md, REGISTER finding 7):
    its ``write`` checks the address three times per datagram, and
    answering each datagram as it is read means one ``sendto`` per wake-up of
    the peer. Here the datagrams waiting when the reactor calls :meth:`doRead`
    are all run through the core first, and what they made the core send is
    sent together afterwards, in order. Sends from anywhere else (timers,
    streams) go at once.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        handler: DatagramHandler,
        allowed: Sequence[Network],
        host: str,
        port: int,
        receive_buffer: int,
    ) -> None:
        self.reactor = reactor
        self.handler = handler
        self.allowed = tuple(allowed)
        self.ipv6 = ipaddress.ip_address(host).version == 6
        self.socket = socket.socket(
            socket.AF_INET6 if self.ipv6 else socket.AF_INET, socket.SOCK_DGRAM
        )
        try:
            self.socket.setblocking(False)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.socket.bind((host, port))
        except OSError as error:
            self.socket.close()
            raise CannotListenError(host, port, error) from error
        self._sendto = self.socket.sendto
        # Datagrams are read into this one buffer and copied out at their size.
        # ``recvfrom(65535)`` would malloc 64 KiB per datagram and shrink it in
        # place; a datagram kept for its transaction's 32 s then pins that
        # spot, and glibc's heap grew by about 1 KiB per call for good
        # (docs/performance.md, "Memory over time").
        self._buffer = memoryview(bytearray(MAX_DATAGRAM_READ))
        #: Sends made while a batch is read, or None outside one.
        self._held: list[tuple[bytes, tuple[str, int]]] | None = None
        self.reactor.addReader(self)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self.socket.getsockname()[1])

    def send(self, data: bytes, remote: tuple[str, int]) -> None:
        """Send one datagram; during a batch, after the batch."""
        if self._held is not None:
            self._held.append((data, remote))
        else:
            self._send(data, remote)

    def _send(self, data: bytes, remote: tuple[str, int]) -> None:
        if self.ipv6 and ":" not in remote[0]:
            remote = (f"::ffff:{remote[0]}", remote[1])
        try:
            self._sendto(data, remote)
        except OSError:  # a full or failing socket drops it, as the network may
            self.handler.count("udp_send_errors")

    # -- IReadDescriptor ---------------------------------------------------

    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self.socket.fileno()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
        """For Twisted's log context."""
        return "sip-udp"

    def doRead(self) -> None:  # noqa: N802 (Twisted's name)
        """Run every waiting datagram (up to a batch) through the core, then send."""
        recvfrom_into, handler, allowed = self.socket.recvfrom_into, self.handler, self.allowed
        buffer = self._buffer
        held: list[tuple[bytes, tuple[str, int]]] = []
        self._held = held
        try:
            for _ in range(MAX_DATAGRAMS_PER_EVENT):
                try:
                    length, source = recvfrom_into(buffer)
                except OSError:  # nothing left, or an ICMP error queued on the socket
                    break
                datagram = bytes(buffer[:length])
                host = _unmapped(source[0]) if self.ipv6 else source[0]
                if not in_networks(host, allowed):
                    handler.count("dropped_outside_subnets")
                    continue
                try:
                    handler.datagram_received(datagram, Flow("udp", (host, source[1])))
                except Exception:  # one bad datagram must never stop the port
                    handler.count("udp_errors")
                    self.log.failure("SIP datagram from {host} not handled", host=host)
        finally:
            self._held = None
            for data, remote in held:
                self._send(data, remote)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        """The reactor let go of the socket (at shutdown)."""
        self.socket.close()

    def stopListening(self) -> None:  # noqa: N802 (IListeningPort's name)
        """Stop reading and close the socket."""
        if self.socket.fileno() != -1:
            self.reactor.removeReader(self)
            self.socket.close()
