"""Proxied calls through the sans-I/O SIP edge alone: no sockets, no reactor,
no store. The companion of ``calls.py``, as ``edge_core.py`` is of
``register.py``: what the core costs per call, to iterate on its hot spots
in seconds.

Usage::

    .venv/bin/python bench/call_core.py [--calls N] [--rounds R] [--profile]

Each call is ``calls.py``'s scenario over UDP, from a caller to the extension
``callee`` registered on its own UDP flow: INVITE, 407, ACK, INVITE with MD5
credentials, 100, 180, 200, ACK, BYE and its 200, every message with SDP as
phones send it and the relay's media ports opened and closed (in its table;
no socket is bound). The clock advances 1/300 s per call, as at ``calls.py``'s
300 calls per second, so transactions end on their timers and the tables stay
the size they have under that load, and the garbage collector is set up as
``telemancer run`` sets it. Only the edge's work is timed (process CPU time,
best of ``--rounds``); building the phones' messages is not.
"""

from __future__ import annotations

import argparse
import cProfile
import secrets
import sys
import time
from collections.abc import Callable, Sequence

from edge_core import print_profile

from appliance.media.relay import PortPool, Relay
from appliance.runner import settle_garbage_collector
from appliance.sip import digest
from appliance.sip.actions import Action, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import Message, parse_datagram
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.registrar import Flow, Registrar
from appliance.testing.sipclient import SipTestClient

DOMAIN = "bench.example"
#: Every extension's password (random: the bench's only secret, never stored).
PASSWORD = secrets.token_hex(8)
CALLS_PER_SECOND = 300
CALLEE = Flow("udp", ("127.0.0.3", 5080))


class CallCore:
    """An edge serving ``users`` callers and the extension ``callee``, which has
    registered; :meth:`call` runs one call and adds the edge's CPU time to
    :attr:`spent`."""

    def __init__(self, users: int) -> None:
        self.users = [f"u{i:04d}" for i in range(users)]
        extensions = [
            ExtensionEntry(
                index + 1,
                1,
                user,
                {a: digest.ha1(a, user, DOMAIN, PASSWORD) for a in digest.ALGORITHMS},
            )
            for index, user in enumerate([*self.users, "callee"])
        ]
        self.edge = SipEdge(
            SipDirectory([TenantEntry(1, DOMAIN, "active", users + 1, 100_000)], extensions),
            digest.DigestVerifier(digest.NonceFactory(b"k" * 32, 300), algorithms=(digest.MD5,)),
            Registrar(),
            Blocklist(),
            [ProxyAddress("udp", "127.0.0.1", 5060)],
            media=Relay(PortPool()),
            media_address="127.0.0.1",
        )
        self.now = time.time()
        self.spent = 0.0
        self.callee = SipTestClient(
            "callee", DOMAIN, PASSWORD, transport="UDP", local=CALLEE.remote
        )
        challenge = self._last(self._feed(self.callee.register(expires=3600), CALLEE), CALLEE)
        auth = self.callee.authorization(challenge, algorithm=digest.MD5)
        answer = self._feed(self.callee.register(expires=3600, authorization=auth), CALLEE)
        if self._last(answer, CALLEE).status != 200:
            raise RuntimeError("the callee could not register")

    def call(self, index: int) -> None:
        """One call from caller ``index`` (modulo the number of users)."""
        self.now += 1 / CALLS_PER_SECOND
        self._timed(lambda: self.edge.handle_timer(self.now))
        user = self.users[index % len(self.users)]
        flow = Flow("udp", ("127.0.0.2", 6000 + index % len(self.users)))
        phone = SipTestClient(user, DOMAIN, PASSWORD, transport="UDP", local=flow.remote)
        first = phone.invite("callee")
        challenge = self._last(self._feed(first, flow), flow)
        self._feed(_ack_for(first, challenge), flow)
        uri = f"sip:callee@{DOMAIN}"
        auth = phone.authorization(challenge, method="INVITE", uri=uri, algorithm=digest.MD5)
        invite = self._last(self._feed(phone.invite("callee", authorization=auth), flow), CALLEE)
        self._feed(self.callee.answer(invite, 180, "Ringing"), CALLEE)
        answer = self._last(self._feed(self.callee.answer(invite, 200, "OK"), CALLEE), flow)
        self._feed(phone.in_dialog("ACK", answer), flow)
        bye = self._last(self._feed(phone.in_dialog("BYE", answer), flow), CALLEE)
        done = self._last(self._feed(self.callee.answer(bye, 200, "OK"), CALLEE), flow)
        if (answer.status, done.status) != (200, 200):
            raise RuntimeError(f"call {index} failed: {answer.status}, {done.status}")

    def _feed(self, data: bytes, flow: Flow) -> list[Action]:
        return self._timed(lambda: self.edge.datagram_received(data, flow, self.now))

    def _timed(self, work: Callable[[], list[Action]]) -> list[Action]:
        started = time.process_time()
        actions = work()
        self.spent += time.process_time() - started
        return actions

    @staticmethod
    def _last(actions: list[Action], flow: Flow) -> Message:
        sent = [a.data for a in actions if isinstance(a, Send) and a.flow == flow]
        if not sent:
            raise RuntimeError(f"nothing was sent to {flow.remote}")
        return parse_datagram(sent[-1])


def _ack_for(invite: bytes, challenge: Message) -> bytes:
    """The caller's ACK for the 407 (same branch, CSeq method ACK, the 407's To)."""
    head = parse_datagram(invite)
    lines = [
        f"ACK {head.uri} SIP/2.0",
        f"Via: {head.first('via')}",
        "Max-Forwards: 70",
        f"From: {head.first('from')}",
        f"To: {challenge.first('to')}",
        f"Call-ID: {head.call_id}",
        f"CSeq: {head.cseq.number} ACK",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def run(calls: int, core: CallCore, profiler: cProfile.Profile | None = None) -> float:
    """CPU seconds the edge spent on ``calls`` calls."""
    core.spent = 0.0
    if profiler is not None:
        profiler.enable()
    for index in range(calls):
        core.call(index)
    if profiler is not None:
        profiler.disable()
    return core.spent


def main(argv: Sequence[str] | None = None) -> int:
    """Warm up, time the core, then (with ``--profile``) profile it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="runs; the best is printed")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    args = parser.parse_args(argv)
    if min(args.calls, args.users, args.rounds) <= 0:
        parser.error("--calls, --users and --rounds must be positive")
    core = CallCore(args.users)
    settle_garbage_collector()
    run(args.users, core)
    spent = min(run(args.calls, core) for _ in range(args.rounds))
    print(
        f"{args.calls:,} proxied UDP calls through SipEdge alone, best of {args.rounds}:"
        f" {1e6 * spent / args.calls:,.0f} CPU us each,"
        f" {args.calls / spent:,.0f} per CPU-second of core work"
    )
    if args.profile:
        profiler = cProfile.Profile()
        run(args.calls, core, profiler)
        print_profile(profiler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
