"""The DNS adapter: RFC 3263 location through an ``IResolver`` with a cache
that honours TTLs, caches negative answers briefly, stays bounded, and never
waits longer than its timeout; plus one run against a real DNS server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel
from twisted.names import client, dns, error
from twisted.names.common import ResolverBase
from twisted.trial.unittest import SynchronousTestCase

from appliance.reactor import IApplianceReactor
from appliance.sip.dns import DnsLocator, make_resolver
from appliance.sip.locate import AAAA, NAPTR, SRV, A, Lookup, Naptr, Srv, Target

ROOT = Path(__file__).resolve().parents[2]
Answer = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


def _rr(name: str, payload: Any, ttl: int = 300) -> dns.RRHeader:
    return dns.RRHeader(name.encode(), payload.TYPE, dns.IN, ttl, payload)


def _zone() -> dict[tuple[int, str], list[dns.RRHeader]]:
    """example.com: NXDOMAIN for NAPTR, TLS SRV to one server with A and AAAA."""
    return {
        (dns.SRV, "_sips._tcp.example.com"): [
            _rr("_sips._tcp.example.com", dns.Record_SRV(0, 0, 5061, b"sbc.example.com"), 300)
        ],
        (dns.SRV, "_sip._tcp.example.com"): [],
        (dns.SRV, "_sip._udp.example.com"): [],
        (dns.A, "sbc.example.com"): [_rr("sbc.example.com", dns.Record_A("192.0.2.1"), 60)],
        (dns.AAAA, "sbc.example.com"): [
            _rr("sbc.example.com", dns.Record_AAAA("2001:db8::1"), 120)
        ],
    }


SBC = [
    Target("tls", "sbc.example.com", 5061, "192.0.2.1"),
    Target("tls", "sbc.example.com", 5061, "2001:db8::1"),
]


class FakeResolver(ResolverBase):
    """Canned answers: a name missing from the zone is NXDOMAIN; with
    ``hold`` every query stays pending until the test fires it."""

    def __init__(
        self, zone: dict[tuple[int, str], list[dns.RRHeader]], *, hold: bool = False
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.zone = zone
        self.hold = hold
        self.asked: list[tuple[str, str]] = []
        self.held: dict[tuple[int, str], Deferred[Answer]] = {}

    def _lookup(self, name: bytes, cls: int, type: int, timeout: object) -> Deferred[Answer]:
        text = name.decode()
        self.asked.append((dns.QUERY_TYPES[type], text))
        if self.hold:
            held: Deferred[Answer] = Deferred()
            self.held[(type, text)] = held
            return held
        records = self.zone.get((type, text))
        if records is None:
            return fail(error.DNSNameError(text))
        return succeed((records, [], []))


CASE = SynchronousTestCase()


class Setup:
    """A fake clock, the canned resolver and a locator with a fixed SRV choice."""

    def __init__(self, **options: Any) -> None:
        self.clock = MemoryReactorClock()
        self.resolver = FakeResolver(_zone(), hold=options.pop("hold", False))
        self.events: list[LogEvent] = []
        self.locator = DnsLocator(self.resolver, self.clock, choose=lambda total: 0, **options)
        self.locator.log = Logger(observer=cast(ILogObserver, self.events.append))


def test_locates_through_the_resolver() -> None:
    """NAPTR (NXDOMAIN), then SRV for TLS/TCP/UDP, then A/AAAA of the target:
    the TLS server's addresses."""
    s = Setup()
    assert CASE.successResultOf(s.locator.locate("example.com")) == SBC
    assert s.resolver.asked == [
        ("NAPTR", "example.com"),
        ("SRV", "_sips._tcp.example.com"),
        ("SRV", "_sip._tcp.example.com"),
        ("SRV", "_sip._udp.example.com"),
        ("A", "sbc.example.com"),
        ("AAAA", "sbc.example.com"),
    ]


def test_naptr_records_are_converted() -> None:
    """NAPTR answers reach the core as :class:`Naptr` records and are followed."""
    s = Setup()
    s.resolver.zone[(dns.NAPTR, "example.com")] = [
        _rr(
            "example.com",
            dns.Record_NAPTR(10, 5, b"S", b"SIPS+D2T", b"", b"_sips._tcp.example.com"),
        )
    ]
    assert CASE.successResultOf(s.locator.locate("example.com")) == SBC
    assert s.locator.cached(Lookup(NAPTR, "example.com")) == (
        Naptr(10, 5, "S", "SIPS+D2T", "_sips._tcp.example.com"),
    )
    assert ("SRV", "_sip._udp.example.com") not in s.resolver.asked


def test_cache_honours_each_record_ttl() -> None:
    """A repeat within every TTL asks nothing; each lookup is asked again
    once its own TTL (or the 30 s negative TTL) has passed."""
    s = Setup()
    CASE.successResultOf(s.locator.locate("example.com"))
    s.resolver.asked.clear()
    assert CASE.successResultOf(s.locator.locate("example.com")) == SBC
    assert s.resolver.asked == []
    s.clock.advance(30)  # negative answers (30 s) expire
    CASE.successResultOf(s.locator.locate("example.com"))
    assert s.resolver.asked == [
        ("NAPTR", "example.com"),
        ("SRV", "_sip._tcp.example.com"),
        ("SRV", "_sip._udp.example.com"),
    ]
    s.resolver.asked.clear()
    s.clock.advance(30)  # the A record (60 s) expires, AAAA (120 s) and SRV (300 s) do not
    CASE.successResultOf(s.locator.locate("example.com"))
    assert ("A", "sbc.example.com") in s.resolver.asked
    assert ("AAAA", "sbc.example.com") not in s.resolver.asked
    assert ("SRV", "_sips._tcp.example.com") not in s.resolver.asked


def test_negative_answers_are_cached_briefly() -> None:
    """NXDOMAIN and empty answers are remembered for 30 s, then asked again."""
    s = Setup()
    assert CASE.successResultOf(s.locator.locate("nowhere.example")) == []
    assert s.locator.cached(Lookup(NAPTR, "nowhere.example")) == ()
    assert s.locator.cached(Lookup(SRV, "_sip._tcp.example.com")) is None
    s.clock.advance(29.9)
    assert s.locator.cached(Lookup(A, "nowhere.example")) == ()
    s.clock.advance(0.2)
    assert s.locator.cached(Lookup(A, "nowhere.example")) is None


def test_zero_ttl_is_not_cached_and_long_ttl_is_capped() -> None:
    """TTL 0 means "do not cache"; a day-long TTL is kept at most an hour."""
    s = Setup()
    s.resolver.zone[(dns.A, "zero.example")] = [_rr("zero.example", dns.Record_A("192.0.2.7"), 0)]
    s.resolver.zone[(dns.A, "long.example")] = [
        _rr("long.example", dns.Record_A("192.0.2.8"), 86400)
    ]
    assert CASE.successResultOf(s.locator.lookup(Lookup(A, "zero.example"))) == ("192.0.2.7",)
    assert s.locator.cached(Lookup(A, "zero.example")) is None
    CASE.successResultOf(s.locator.lookup(Lookup(A, "long.example")))
    s.clock.advance(3599)
    assert s.locator.cached(Lookup(A, "long.example")) == ("192.0.2.8",)
    s.clock.advance(2)
    assert s.locator.cached(Lookup(A, "long.example")) is None


def test_cache_is_bounded_least_recently_used_first() -> None:
    """With room for two lookups, a third evicts the least recently used."""
    s = Setup(max_entries=2)
    first, second, third = (
        Lookup(A, "sbc.example.com"),
        Lookup(AAAA, "sbc.example.com"),
        Lookup(SRV, "_sips._tcp.example.com"),
    )
    for query in (first, second, first, third):
        CASE.successResultOf(s.locator.lookup(query))
    assert s.locator.cached(first) is not None
    assert s.locator.cached(second) is None
    assert s.locator.cached(third) == (Srv(0, 0, 5061, "sbc.example.com"),)


def test_timeout_counts_as_no_answer_and_is_not_cached() -> None:
    """A resolver that never answers: each round gives up after the timeout
    and the locate ends empty after three rounds, never blocking."""
    s = Setup(hold=True, timeout=2.0)
    result = s.locator.locate("example.com")
    CASE.assertNoResult(result)
    assert s.resolver.asked == [("NAPTR", "example.com")]
    s.clock.advance(2.0)
    CASE.assertNoResult(result)
    assert len(s.resolver.asked) == 4  # the three SRV queries, together
    s.clock.advance(2.0)
    CASE.assertNoResult(result)
    assert s.resolver.asked[-2:] == [("A", "example.com"), ("AAAA", "example.com")]
    s.clock.advance(2.0)
    assert CASE.successResultOf(result) == []
    assert s.locator.cached(Lookup(NAPTR, "example.com")) is None
    assert sum(e["log_format"].endswith("no answer within {timeout}s") for e in s.events) == 6


def test_late_answer_is_cached_for_the_next_locate() -> None:
    """An answer arriving after the timeout is not lost: it fills the cache."""
    s = Setup(hold=True, timeout=2.0)
    pending = s.locator.lookup(Lookup(A, "sbc.example.com"))
    s.clock.advance(2.0)
    assert CASE.successResultOf(pending) == ()
    s.resolver.held[(dns.A, "sbc.example.com")].callback(
        (_zone()[(dns.A, "sbc.example.com")], [], [])
    )
    assert s.locator.cached(Lookup(A, "sbc.example.com")) == ("192.0.2.1",)


def test_concurrent_lookups_share_one_query() -> None:
    """Two lookups of the same question (any spelling) while the first query is
    pending send one query, and both get the answer."""
    s = Setup(hold=True)
    first = s.locator.lookup(Lookup(NAPTR, "example.com"))
    second = s.locator.lookup(Lookup(NAPTR, "EXAMPLE.com."))
    assert s.resolver.asked == [("NAPTR", "example.com")]
    s.resolver.held[(dns.NAPTR, "example.com")].callback(([], [], []))
    assert CASE.successResultOf(first) == ()
    assert CASE.successResultOf(second) == ()


def test_resolver_timeout_is_empty_and_not_cached() -> None:
    """The resolver's own timeout (no DNS answer at all) gives no records, is
    not remembered, and cancels our timer."""
    s = Setup(hold=True)
    pending = s.locator.lookup(Lookup(SRV, "_sip._udp.example.com"))
    s.resolver.held[(dns.SRV, "_sip._udp.example.com")].errback(error.DNSQueryTimeoutError(1))
    assert CASE.successResultOf(pending) == ()
    assert s.locator.cached(Lookup(SRV, "_sip._udp.example.com")) is None
    assert s.clock.getDelayedCalls() == []
    assert s.events[-1]["log_level"] == LogLevel.warn


def test_unexpected_resolver_error_is_logged_and_empty() -> None:
    """A resolver bug (any other exception) is logged with its traceback and
    the lookup answers empty rather than failing the locate."""
    s = Setup(hold=True)
    pending = s.locator.lookup(Lookup(A, "sbc.example.com"))
    s.resolver.held[(dns.A, "sbc.example.com")].errback(RuntimeError("resolver bug"))
    assert CASE.successResultOf(pending) == ()
    assert s.events[-1]["log_level"] == LogLevel.critical
    assert s.events[-1]["log_failure"].check(RuntimeError)


def test_ip_literal_needs_no_lookup() -> None:
    """An IP host resolves at once without asking the resolver."""
    s = Setup()
    result = s.locator.locate("192.0.2.9", None, "tcp")
    assert CASE.successResultOf(result) == [Target("tcp", "192.0.2.9", 5060, "192.0.2.9")]
    assert s.resolver.asked == []


def test_make_resolver_asks_the_given_servers() -> None:
    """make_resolver builds a twisted.names client for exactly those servers."""
    resolver = make_resolver([("127.0.0.1", 5353)], cast(IApplianceReactor, MemoryReactorClock()))
    assert isinstance(resolver, client.Resolver)
    assert resolver.servers == [("127.0.0.1", 5353)]


#: Serves a zone on 127.0.0.1 (ephemeral UDP port) with the integration tests'
#: DNS server (tests/integration/dnsserver.py, twisted.names) and locates
#: through DnsLocator + make_resolver on the same real reactor.
_REAL_DNS_SCRIPT = textwrap.dedent(
    """
    import json

    from twisted.internet import defer, task

    from appliance.sip.dns import DnsLocator, make_resolver
    from tests.integration.dnsserver import Zone, serve

    ZONE = Zone([
        ["NAPTR", "example.com", 50, 50, "s", "SIPS+D2T", "_sips._tcp.example.com"],
        ["NAPTR", "example.com", 90, 50, "s", "SIP+D2T", "_sip._tcp.example.com"],
        ["NAPTR", "example.com", 100, 50, "s", "SIP+D2U", "_sip._udp.example.com"],
        ["SRV", "_sips._tcp.example.com", 0, 0, 5061, "sbc1.example.com"],
        ["SRV", "_sips._tcp.example.com", 1, 0, 5061, "sbc2.example.com"],
        ["A", "sbc1.example.com", "192.0.2.1"],
        ["AAAA", "sbc1.example.com", "2001:db8::1"],
        ["A", "sbc2.example.com", "192.0.2.2"],
        ["AAAA", "v6.example.com", "2001:db8::6"],
    ])
    ZONE.names |= {"_sip._tcp.example.com", "_sip._udp.example.com"}

    @defer.inlineCallbacks
    def main(reactor):
        port = serve(reactor, ZONE)
        resolver = make_resolver([("127.0.0.1", port.getHost().port)], reactor)
        locator = DnsLocator(resolver, reactor, choose=lambda total: 0)
        out = {"first": (yield locator.locate("example.com"))}
        out["queries_first"] = ZONE.queries
        out["again"] = yield locator.locate("example.com")
        out["queries_again"] = ZONE.queries - out["queries_first"]
        out["tls_trunk"] = yield locator.locate("Example.COM.", transport="tls")
        out["port_given"] = yield locator.locate("v6.example.com", 5080, "tcp")
        out["missing"] = yield locator.locate("nowhere.example")
        print(json.dumps(out))
        yield port.stopListening()

    task.react(main)
    """
)


def test_real_dns_server_round_trip() -> None:
    """Against a real twisted.names server on 127.0.0.1 over UDP: the RFC 3263
    NAPTR example resolves to the TLS servers in SRV order, a repeat is served
    from the cache (no query reaches the server), a TLS trunk, an explicit
    port (AAAA only) and a missing domain (empty) all come out right."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(
        [sys.executable, "-c", _REAL_DNS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert finished.returncode == 0, finished.stderr
    out = json.loads(finished.stdout.strip().splitlines()[-1])
    first = [
        ["tls", "sbc1.example.com", 5061, "192.0.2.1"],
        ["tls", "sbc1.example.com", 5061, "2001:db8::1"],
        ["tls", "sbc2.example.com", 5061, "192.0.2.2"],
    ]
    assert out["first"] == first
    assert out["queries_first"] == 6  # NAPTR, SRV, A+AAAA for two servers
    assert out["again"] == first
    assert out["queries_again"] == 0
    assert out["tls_trunk"] == first
    assert out["port_given"] == [["tcp", "v6.example.com", 5080, "2001:db8::6"]]
    assert out["missing"] == []
