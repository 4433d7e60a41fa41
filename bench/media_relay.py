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
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from appliance.media.relay import PortPool, Relay
from appliance.media.srtp import Direction, SrtpContext
from appliance.media.udp import MediaSockets
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
    print(json.dumps(totals(relay, sockets.bound_ports)), flush=True)


if __name__ == "__main__":
    main()
