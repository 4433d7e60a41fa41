"""Authenticated REGISTERs through the sans-I/O SIP edge alone: no sockets, no
reactor, no store. The complement of ``register.py``: what the core costs,
to iterate on its hot spots in seconds.

Usage::

    .venv/bin/python bench/edge_core.py [--registers N] [--users U] [--profile]

Each REGISTER is the sipp scenario's pair: a REGISTER answered 401, then one
with MD5 credentials answered 200. The edge offers MD5 alone, as the
benchmark's instance does (``sip.digest_algorithms``), so the 401 carries the
same single challenge as in ``register.py``. Only the two ``datagram_received`` calls
are timed (and profiled); building the phone's requests is not. Time is the
process's CPU time, best of ``--rounds``, so other work on the machine
hardly moves the figure.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import secrets
import sys
import time
from collections.abc import Sequence

from appliance.media.relay import PortPool, Relay
from appliance.sip import digest
from appliance.sip.actions import Action, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.digest import DigestVerifier, NonceFactory
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import parse_datagram
from appliance.sip.registrar import Flow, Registrar
from appliance.testing.sipclient import SipTestClient

DOMAIN = "bench.example"
FLOW = Flow("udp", ("127.0.0.1", 5062))
PROFILE_LINES = 25


def make_edge(users: Sequence[tuple[str, str]]) -> SipEdge:
    """An edge serving ``users`` in one tenant, wired as ``appliance.service`` does.

    Its verifier offers and accepts MD5 alone, like the benchmark's instance.
    """
    extensions = [
        ExtensionEntry(
            index + 1,
            1,
            user,
            {
                algorithm: digest.ha1(algorithm, user, DOMAIN, password)
                for algorithm in digest.ALGORITHMS
            },
        )
        for index, (user, password) in enumerate(users)
    ]
    tenant = TenantEntry(1, DOMAIN, "active", len(users), 10)
    verifier = DigestVerifier(NonceFactory(secrets.token_bytes(32), 300), algorithms=(digest.MD5,))
    return SipEdge(
        SipDirectory([tenant], extensions),
        verifier,
        Registrar(),
        Blocklist(),
        media=Relay(PortPool()),
        media_address="127.0.0.1",
    )


def _sent(actions: list[Action]) -> bytes:
    return next(action.data for action in actions if isinstance(action, Send))


def run(registers: int, users: int, profiler: cProfile.Profile | None) -> float:
    """Seconds spent inside the edge for ``registers`` authenticated REGISTERs."""
    accounts = [(f"u{i:04d}", secrets.token_hex(8)) for i in range(users)]
    edge = make_edge(accounts)
    now = time.time()
    spent = 0.0
    for index in range(registers):
        user, password = accounts[index % users]
        phone = SipTestClient(user, DOMAIN, password)
        first = phone.register(expires=3600)
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        answer = edge.datagram_received(first, FLOW, now)
        if profiler is not None:
            profiler.disable()
        spent += time.process_time() - started
        challenge = parse_datagram(_sent(answer))
        second = phone.register(
            expires=3600, authorization=phone.authorization(challenge, algorithm=digest.MD5)
        )
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        answer = edge.datagram_received(second, FLOW, now)
        if profiler is not None:
            profiler.disable()
        spent += time.process_time() - started
        if not _sent(answer).startswith(b"SIP/2.0 200"):
            raise RuntimeError(f"REGISTER {index} was not accepted: {_sent(answer)[:80]!r}")
    return spent


def main(argv: Sequence[str] | None = None) -> int:
    """Time the core, then (with ``--profile``) time it again under cProfile."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registers", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs; the best is printed")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    args = parser.parse_args(argv)
    if args.registers <= 0 or args.users <= 0 or args.rounds <= 0:
        parser.error("--registers, --users and --rounds must be positive")
    spent = min(run(args.registers, args.users, None) for _ in range(args.rounds))
    print(
        f"{args.registers:,} authenticated REGISTERs through SipEdge alone, best of"
        f" {args.rounds}: {1e6 * spent / args.registers:,.0f} CPU us each (2 requests),"
        f" {args.registers / spent:,.0f} per CPU-second of core work"
    )
    if args.profile:
        profiler = cProfile.Profile()
        run(args.registers, args.users, profiler)
        print_profile(profiler)
    return 0


def print_profile(profiler: cProfile.Profile) -> None:
    """The top functions by own and by cumulative time."""
    stats = pstats.Stats(profiler, stream=sys.stdout)
    print("\ncProfile (inflates per-call costs; compare shares, not absolute times)")
    stats.sort_stats("tottime").print_stats(PROFILE_LINES)
    stats.sort_stats("cumulative").print_stats(PROFILE_LINES)


if __name__ == "__main__":
    sys.exit(main())
