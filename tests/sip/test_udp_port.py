"""The SIP UDP port, on real sockets on loopback driven by hand (no reactor):
who gets through, that answers to one batch of datagrams leave after the
batch and in order, and that a failing datagram never stops the port."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import cast

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorFDSet

from appliance.sip.registrar import Flow
from appliance.sip.transport import MAX_DATAGRAMS_PER_EVENT, SipDatagramPort
from tests.media.test_udp import FakeFdReactor

LOOPBACK = [ipaddress.ip_network("127.0.0.1/32")]


class Recorder:
    """A SipHandler that answers every datagram with ``re:`` and its text, and
    notes what had reached the caller's socket by then."""

    def __init__(self, peer: socket.socket) -> None:
        self.peer = peer
        self.port: SipDatagramPort | None = None
        self.received: list[tuple[bytes, Flow]] = []
        self.delivered_before_answering: list[bytes] = []
        self.counters: dict[str, int] = {}

    def datagram_received(self, data: bytes, flow: Flow) -> None:
        if data == b"boom":
            raise RuntimeError("a bug in the core")
        self.received.append((data, flow))
        self.delivered_before_answering.extend(_pending(self.peer))
        assert self.port is not None
        self.port.send(b"re:" + data, flow.remote)

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


def _pending(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock``, without blocking."""
    found = []
    sock.setblocking(False)
    try:
        while True:
            found.append(sock.recv(100))
    except BlockingIOError:
        return found
    finally:
        sock.settimeout(1.0)


def _socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(1.0)
    return sock


@pytest.fixture
def phone() -> Iterator[socket.socket]:
    sock = _socket()
    yield sock
    sock.close()


@pytest.fixture
def reactor() -> IReactorFDSet:
    return cast(IReactorFDSet, FakeFdReactor())


@pytest.fixture
def recorder(phone: socket.socket) -> Recorder:
    return Recorder(phone)


@pytest.fixture
def port(reactor: IReactorFDSet, recorder: Recorder) -> Iterator[SipDatagramPort]:
    udp = SipDatagramPort(reactor, recorder, LOOPBACK, "127.0.0.1", 0, 1 << 20)
    recorder.port = udp
    yield udp
    udp.stopListening()


def _drain(port: SipDatagramPort, expected: int) -> None:
    """Read until ``expected`` datagrams were handled (loopback delivery is not
    instant), as the reactor would call doRead while the socket is readable."""
    recorder = port.handler
    assert isinstance(recorder, Recorder)
    for _ in range(100):
        port.doRead()
        if len(recorder.received) + sum(recorder.counters.values()) >= expected:
            return
    raise AssertionError(f"only {recorder.received} arrived")


def test_a_batch_is_answered_after_it_is_read_and_in_order(
    port: SipDatagramPort, recorder: Recorder, phone: socket.socket, reactor: IReactorFDSet
) -> None:
    assert cast(FakeFdReactor, reactor).readers == [port]
    for text in (b"one", b"two", b"three"):
        phone.sendto(text, ("127.0.0.1", port.port))
    _drain(port, 3)
    assert [data for data, _ in recorder.received] == [b"one", b"two", b"three"]
    assert recorder.received[0][1] == Flow("udp", phone.getsockname())
    assert recorder.delivered_before_answering == []  # nothing left during the batch
    assert _pending(phone) == [b"re:one", b"re:two", b"re:three"]


def test_each_datagram_is_bytes_of_its_own_however_large(
    port: SipDatagramPort, recorder: Recorder, phone: socket.socket
) -> None:
    """Datagrams are read into one buffer and copied out: each the handler gets
    is whole and stays as it was when the next, longer one is read over it."""
    large = bytes(range(256)) * 200  # 51,200 bytes
    phone.sendto(b"short", ("127.0.0.1", port.port))
    phone.sendto(large, ("127.0.0.1", port.port))
    _drain(port, 2)
    assert [data for data, _ in recorder.received] == [b"short", large]
    assert all(type(data) is bytes for data, _ in recorder.received)


def test_a_send_outside_a_batch_leaves_at_once(
    port: SipDatagramPort, phone: socket.socket
) -> None:
    port.send(b"from a timer", phone.getsockname())
    assert phone.recv(100) == b"from a timer"


def test_sources_outside_the_subnets_are_dropped_and_counted(
    port: SipDatagramPort, recorder: Recorder
) -> None:
    outsider = _socket("127.0.0.2")
    try:
        outsider.sendto(b"hello", ("127.0.0.1", port.port))
        _drain(port, 1)
        assert recorder.received == []
        assert recorder.counters == {"dropped_outside_subnets": 1}
        assert _pending(outsider) == []
    finally:
        outsider.close()


def test_a_failing_datagram_neither_stops_the_batch_nor_loses_its_answers(
    port: SipDatagramPort, recorder: Recorder, phone: socket.socket
) -> None:
    for text in (b"before", b"boom", b"after"):
        phone.sendto(text, ("127.0.0.1", port.port))
    _drain(port, 3)
    assert recorder.counters == {"udp_errors": 1}
    assert _pending(phone) == [b"re:before", b"re:after"]


def test_one_event_reads_at_most_a_batch(
    port: SipDatagramPort, recorder: Recorder, phone: socket.socket
) -> None:
    for number in range(MAX_DATAGRAMS_PER_EVENT + 6):
        phone.sendto(b"%d" % number, ("127.0.0.1", port.port))
    port.doRead()  # loopback delivers before sendto returns: all are queued
    assert len(recorder.received) == MAX_DATAGRAMS_PER_EVENT
    assert len(_pending(phone)) == MAX_DATAGRAMS_PER_EVENT
    port.doRead()  # the rest, at the reactor's next event
    assert len(recorder.received) == MAX_DATAGRAMS_PER_EVENT + 6


def test_a_busy_port_is_a_listen_error_and_stopping_lets_it_go(
    port: SipDatagramPort, reactor: IReactorFDSet, recorder: Recorder
) -> None:
    with pytest.raises(CannotListenError):
        SipDatagramPort(reactor, recorder, LOOPBACK, "127.0.0.1", port.port, 1 << 20)
    number = port.port
    port.stopListening()
    assert cast(FakeFdReactor, reactor).readers == []
    again = SipDatagramPort(reactor, recorder, LOOPBACK, "127.0.0.1", number, 1 << 20)
    again.stopListening()


def test_an_ipv6_socket_sees_ipv4_peers_unmapped_and_answers_them(
    reactor: IReactorFDSet, recorder: Recorder, phone: socket.socket
) -> None:
    """Bound to an IPv4-mapped IPv6 address, the port reports an IPv4 phone by
    its IPv4 address (subnet checks and flows stay IPv4) and still answers it."""
    udp = SipDatagramPort(reactor, recorder, LOOPBACK, "::ffff:127.0.0.1", 0, 1 << 20)
    recorder.port = udp
    try:
        phone.sendto(b"hello", ("127.0.0.1", udp.port))
        _drain(udp, 1)
        assert recorder.received == [(b"hello", Flow("udp", phone.getsockname()))]
        assert phone.recv(100) == b"re:hello"
    finally:
        udp.stopListening()
