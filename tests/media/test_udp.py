"""The relay's sockets, on a fake UDP reactor: binding, busy ports, relaying and
closing, with no port outliving its call."""

from __future__ import annotations

import itertools

from appliance.media.relay import PortPool, Relay
from appliance.media.udp import MediaSockets
from appliance.testing.udp import FakeUdpReactor
from tests.media.test_relay import ALICE, BOB, rtp


def _sockets(reactor: FakeUdpReactor) -> MediaSockets:
    counter = itertools.count()
    relay = Relay(PortPool(20000, 20020, choose=lambda n: next(counter) % n))
    return MediaSockets(reactor, relay, "127.0.0.1")


def test_a_call_binds_four_ports_and_releases_them() -> None:
    """Opening a call binds RTP and RTCP for both legs; closing unbinds all four and
    returns the pairs to the pool."""
    reactor = FakeUdpReactor()
    sockets = _sockets(reactor)
    session = sockets.open("call", reactor.seconds())
    assert session is not None and len(reactor.bound) == 4 == sockets.bound_ports
    sockets.close("call")
    assert reactor.bound == {} and sockets.relay.pool.in_use == 0


def test_a_busy_port_makes_it_try_another_pair() -> None:
    """A port something else holds is skipped; what was bound for the failed try is
    unbound again."""
    reactor = FakeUdpReactor()
    sockets = _sockets(reactor)
    reactor.busy = {20003}
    session = sockets.open("call", 0.0)
    assert session is not None
    assert 20003 not in reactor.bound and len(reactor.bound) == 4
    assert sockets.relay.pool.in_use == 2


def test_packets_are_relayed_through_the_sockets() -> None:
    """A datagram on the caller's port goes out of the callee's port to the callee."""
    reactor = FakeUdpReactor()
    sockets = _sockets(reactor)
    session = sockets.open("call", 0.0)
    assert session is not None
    for leg, peer in ((session.a, ALICE), (session.b, BOB)):
        sockets.relay.configure(
            leg, expected=peer, rtcp_mux=False, inbound=None, outbound=None, suite=None, now=0.0
        )
    reactor.deliver(session.a.rtp_port, rtp(1), ALICE)
    assert reactor.sent == [(session.b.rtp_port, rtp(1), BOB)]


def test_exhaustion_refuses_without_holding_ports() -> None:
    """When no pair can be had the call gets None and nothing stays bound."""
    reactor = FakeUdpReactor()
    sockets = _sockets(reactor)
    assert all(sockets.open(f"call-{i}", 0.0) for i in range(5))
    assert sockets.open("one-too-many", 0.0) is None
    assert len(reactor.bound) == 20
