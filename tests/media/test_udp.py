"""The relay's sockets, real ones on 127.0.0.1 (driven by hand, not by a
reactor): binding, busy ports, relaying and closing, with no port outliving
its call, and a bad packet never stopping the loop."""

from __future__ import annotations

import itertools
import secrets
import socket
from collections.abc import Iterator

import pytest

from appliance.media.relay import PortPool, Relay
from appliance.media.udp import MediaSockets
from tests.media.test_relay import rtp

PAIRS = 10


class FakeFdReactor:
    """What MediaSockets asks of the reactor: watch a descriptor, and the time."""

    def __init__(self) -> None:
        self.readers: list[object] = []
        self.now = 100.0

    def addReader(self, reader: object) -> None:  # noqa: N802 (Twisted's name)
        self.readers.append(reader)

    def removeReader(self, reader: object) -> None:  # noqa: N802 (Twisted's name)
        self.readers.remove(reader)

    def seconds(self) -> float:
        return self.now


def _free_range() -> int:
    """The first port of 2 * PAIRS consecutive ports nothing holds on 127.0.0.1."""
    for _ in range(50):
        low = 30000 + 2 * secrets.randbelow(14000)
        probes = []
        try:
            for port in range(low, low + 2 * PAIRS):
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return low
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AssertionError("no free port range")


@pytest.fixture
def low() -> int:
    """The range's first port: also the first RTP port handed out (the pool below
    picks the first free pair first)."""
    return _free_range()


@pytest.fixture
def sockets(low: int) -> Iterator[MediaSockets]:
    counter = itertools.count()
    relay = Relay(PortPool(low, low + 2 * PAIRS, choose=lambda n: next(counter) % n))
    media = MediaSockets(FakeFdReactor(), relay, "127.0.0.1")
    yield media
    media.stop()


def _peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    return sock


def _bound(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError:
        return True
    finally:
        probe.close()
    return False


def test_a_call_binds_four_ports_and_releases_them(sockets: MediaSockets) -> None:
    """Opening a call binds RTP and RTCP for both legs and the epoll set is watched;
    closing unbinds all four and returns the pairs to the pool."""
    session = sockets.open("call", 0.0)
    assert session is not None and sockets.bound_ports == 4
    ports = [p for leg in (session.a, session.b) for p in (leg.rtp_port, leg.rtp_port + 1)]
    assert all(_bound(p) for p in ports)
    assert sockets.reactor.readers == [sockets]  # type: ignore[attr-defined]
    sockets.close("call")
    assert not any(_bound(p) for p in ports) and sockets.relay.pool.in_use == 0


def test_a_busy_port_makes_it_try_another_pair(sockets: MediaSockets, low: int) -> None:
    """A port something else holds is skipped; what was bound for the failed try is
    unbound again."""
    first = low
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", first + 1))
    try:
        session = sockets.open("call", 0.0)
        assert session is not None and first not in (session.a.rtp_port, session.b.rtp_port)
        assert sockets.bound_ports == 4 and sockets.relay.pool.in_use == 2
        assert not _bound(first)
    finally:
        squatter.close()


def test_packets_are_relayed_through_the_sockets(sockets: MediaSockets) -> None:
    """A datagram on the caller's port goes out of the callee's port to the callee,
    and the answer comes back the same way."""
    alice, bob = _peer(), _peer()
    session = sockets.open("call", 0.0)
    assert session is not None
    for leg, peer in ((session.a, alice), (session.b, bob)):
        sockets.configure(
            leg,
            expected=peer.getsockname(),
            rtcp_mux=False,
            inbound=None,
            outbound=None,
            suite=None,
            now=100.0,
        )
    alice.sendto(rtp(1), ("127.0.0.1", session.a.rtp_port))
    sockets.doRead()
    data, source = bob.recvfrom(2048)
    assert (data, source) == (rtp(1), ("127.0.0.1", session.b.rtp_port))
    bob.sendto(rtp(7, ssrc=9), ("127.0.0.1", session.b.rtp_port))
    sockets.doRead()
    assert alice.recvfrom(2048) == (rtp(7, ssrc=9), ("127.0.0.1", session.a.rtp_port))
    alice.close()
    bob.close()


def test_a_packet_the_relay_chokes_on_is_counted_and_the_rest_still_flow(
    sockets: MediaSockets, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = sockets.open("call", 0.0)
    assert session is not None
    calls = iter([RuntimeError("bug"), None])

    def receive(*_: object) -> None:
        outcome = next(calls)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(sockets.relay, "forward", receive)
    peer = _peer()
    peer.sendto(rtp(1), ("127.0.0.1", session.a.rtp_port))
    peer.sendto(rtp(1), ("127.0.0.1", session.b.rtp_port))
    sockets.doRead()
    assert sockets.counters == {"errors": 1}
    peer.close()


def test_exhaustion_refuses_without_holding_ports(sockets: MediaSockets) -> None:
    """When no pair can be had the call gets None and nothing more stays bound."""
    assert all(sockets.open(f"call-{i}", 0.0) for i in range(PAIRS // 2))
    assert sockets.open("one-too-many", 0.0) is None
    assert sockets.bound_ports == 2 * PAIRS and sockets.counters == {"exhausted": 1}
