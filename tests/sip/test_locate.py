"""RFC 3263 §4 server location over canned DNS answers: transport selection
from NAPTR, SRV ordering (RFC 2782), fallbacks, and the TLS-only rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from appliance.sip.locate import (
    AAAA,
    NAPTR,
    SRV,
    A,
    Lookup,
    Naptr,
    Record,
    Srv,
    Target,
    drive,
    order_srv,
    procedure,
)

#: The NAPTR set of RFC 3263 §4.1's example: TLS, then TCP, then UDP.
RFC3263_NAPTR = [
    Naptr(50, 50, "s", "SIPS+D2T", "_sips._tcp.example.com."),
    Naptr(90, 50, "s", "SIP+D2T", "_sip._tcp.example.com"),
    Naptr(100, 50, "s", "SIP+D2U", "_sip._udp.example.com."),
]


def _zone() -> dict[Lookup, Sequence[Record]]:
    """example.com with the RFC 3263 NAPTR set, SRV records for each transport
    and addresses for each server."""
    return {
        Lookup(NAPTR, "example.com"): RFC3263_NAPTR,
        Lookup(SRV, "_sips._tcp.example.com"): [Srv(0, 0, 5061, "tls1.example.com")],
        Lookup(SRV, "_sip._tcp.example.com"): [Srv(0, 0, 5060, "tcp1.example.com")],
        Lookup(SRV, "_sip._udp.example.com"): [Srv(0, 0, 5060, "udp1.example.com")],
        Lookup(A, "tls1.example.com"): ["192.0.2.1"],
        Lookup(AAAA, "tls1.example.com"): ["2001:db8::1"],
        Lookup(A, "tcp1.example.com"): ["192.0.2.2"],
        Lookup(A, "udp1.example.com"): ["192.0.2.3"],
        Lookup(A, "example.com"): ["192.0.2.100"],
        Lookup(AAAA, "example.com"): ["2001:db8::100"],
    }


class Resolver:
    """Answers lookups from a zone and records every batch asked."""

    def __init__(self, zone: Mapping[Lookup, Sequence[Record]]) -> None:
        self.zone = zone
        self.asked: list[Lookup] = []

    def __call__(self, lookup: Lookup) -> Sequence[Record]:
        self.asked.append(lookup)
        return self.zone.get(lookup, ())

    def run(
        self,
        host: str,
        port: int | None = None,
        transport: str | None = None,
        **options: object,
    ) -> list[Target]:
        return drive(procedure(host, port, transport, **options), self)  # type: ignore[arg-type]


def _without(
    zone: dict[Lookup, Sequence[Record]], *keys: Lookup
) -> dict[Lookup, Sequence[Record]]:
    return {k: v for k, v in zone.items() if k not in keys}


def test_rfc3263_naptr_example_selects_tls_only() -> None:
    """RFC 3263 §4.1's example: a client supporting TLS follows the SIPS+D2T
    record (lowest order) and never the TCP/UDP ones, A before AAAA."""
    dns = Resolver(_zone())
    assert dns.run("example.com") == [
        Target("tls", "tls1.example.com", 5061, "192.0.2.1"),
        Target("tls", "tls1.example.com", 5061, "2001:db8::1"),
    ]
    assert dns.asked == [
        Lookup(NAPTR, "example.com"),
        Lookup(SRV, "_sips._tcp.example.com"),
        Lookup(A, "tls1.example.com"),
        Lookup(AAAA, "tls1.example.com"),
    ]


def test_rfc3263_naptr_example_without_tls_support_selects_tcp() -> None:
    """The same NAPTR set for a client without TLS: the most preferred
    remaining service, SIP+D2T, is used."""
    dns = Resolver(_zone())
    assert dns.run("example.com", supported=("udp", "tcp")) == [
        Target("tcp", "tcp1.example.com", 5060, "192.0.2.2")
    ]


def test_naptr_lowest_order_then_preference_and_unusable_records_ignored() -> None:
    """Unsupported services, non-S flags and '.' replacements are discarded;
    of the rest only the lowest order is kept, sorted by preference."""
    naptr = [
        Naptr(5, 10, "s", "SIP+D2S", "_sip._sctp.example.com"),
        Naptr(5, 10, "u", "E2U+sip", "!^.*$!sip:info@example.com!"),
        Naptr(5, 10, "s", "SIPS+D2T", "."),
        Naptr(10, 60, "s", "SIP+D2U", "_sip._udp.example.com"),
        Naptr(10, 20, "S", "sip+d2t", "_sip._tcp.example.com"),
        Naptr(20, 10, "s", "SIPS+D2T", "_sips._tcp.example.com"),
    ]
    dns = Resolver({**_zone(), Lookup(NAPTR, "example.com"): naptr})
    assert dns.run("example.com") == [
        Target("tcp", "tcp1.example.com", 5060, "192.0.2.2"),
        Target("udp", "udp1.example.com", 5060, "192.0.2.3"),
    ]
    assert Lookup(SRV, "_sips._tcp.example.com") not in dns.asked


def test_srv_batch_and_address_batch_are_each_one_round() -> None:
    """Without NAPTR the SRV queries for every transport go out as one batch,
    and the addresses of all SRV targets as the next."""
    zone = _without(_zone(), Lookup(NAPTR, "example.com"))
    zone[Lookup(SRV, "_sips._tcp.example.com")] = [
        Srv(0, 0, 5061, "tls1.example.com"),
        Srv(1, 0, 5061, "tls2.example.com"),
    ]
    zone[Lookup(A, "tls2.example.com")] = ["192.0.2.9"]
    steps = procedure("example.com")
    assert next(steps) == (Lookup(NAPTR, "example.com"),)
    batch = steps.send({})
    assert set(batch) == {
        Lookup(SRV, "_sips._tcp.example.com"),
        Lookup(SRV, "_sip._tcp.example.com"),
        Lookup(SRV, "_sip._udp.example.com"),
    }
    batch = steps.send({lookup: zone.get(lookup, ()) for lookup in batch})
    assert batch == (
        Lookup(A, "tls1.example.com"),
        Lookup(AAAA, "tls1.example.com"),
        Lookup(A, "tls2.example.com"),
        Lookup(AAAA, "tls2.example.com"),
    )
    with pytest.raises(StopIteration) as stop:
        steps.send({lookup: zone.get(lookup, ()) for lookup in batch})
    assert [t.address for t in stop.value.value] == ["192.0.2.1", "2001:db8::1", "192.0.2.9"]


def test_without_naptr_first_transport_with_srv_records_wins_alone() -> None:
    """No NAPTR: SRV queries for TLS, TCP and UDP; the first in our preference
    (TLS, TCP, UDP) that has records is used, and no other transport is."""
    zone = _without(_zone(), Lookup(NAPTR, "example.com"), Lookup(SRV, "_sips._tcp.example.com"))
    dns = Resolver(zone)
    assert dns.run("example.com") == [Target("tcp", "tcp1.example.com", 5060, "192.0.2.2")]


def test_without_srv_uses_addresses_on_default_port() -> None:
    """No NAPTR and no SRV: A then AAAA of the host, UDP 5060 for a SIP URI,
    TLS 5061 for a SIPS URI (RFC 3263 §4.1-4.2)."""
    zone = {
        Lookup(A, "example.com"): ["192.0.2.100"],
        Lookup(AAAA, "example.com"): ["2001:db8::100"],
    }
    assert Resolver(zone).run("example.com") == [
        Target("udp", "example.com", 5060, "192.0.2.100"),
        Target("udp", "example.com", 5060, "2001:db8::100"),
    ]
    assert Resolver(zone).run("example.com", secure=True) == [
        Target("tls", "example.com", 5061, "192.0.2.100"),
        Target("tls", "example.com", 5061, "2001:db8::100"),
    ]
    assert Resolver(zone).run("example.com", supported=("tls", "tcp")) == [
        Target("tcp", "example.com", 5060, "192.0.2.100"),
        Target("tcp", "example.com", 5060, "2001:db8::100"),
    ]


def test_naptr_without_srv_records_falls_back_to_host_with_naptr_transport() -> None:
    """NAPTR chose TLS but its SRV name is empty: the host's addresses on
    the TLS default port, not a plaintext transport."""
    zone = _without(_zone(), Lookup(SRV, "_sips._tcp.example.com"))
    assert Resolver(zone).run("example.com") == [
        Target("tls", "example.com", 5061, "192.0.2.100"),
        Target("tls", "example.com", 5061, "2001:db8::100"),
    ]


def test_srv_priority_then_weight_with_fixed_random() -> None:
    """RFC 2782: lower priority first; within a priority zero weights are put
    first (the rest keep the order given) and ``choose(sum)`` picks the first
    record whose running weight sum reaches the draw."""
    records = [
        Srv(20, 0, 5060, "d.example.com"),
        Srv(10, 30, 5060, "c.example.com"),
        Srv(10, 10, 5060, "b.example.com"),
        Srv(10, 0, 5060, "a.example.com"),
    ]
    lowest = [r.target[0] for r in order_srv(records, lambda total: 0)]
    highest = [r.target[0] for r in order_srv(records, lambda total: total)]
    middle = [r.target[0] for r in order_srv(records, lambda total: min(total, 5))]
    # Running sums over [a=0, c=30, b=10] are 0, 30, 40.
    assert lowest == ["a", "c", "b", "d"]
    assert highest == ["b", "c", "a", "d"]
    assert middle == ["c", "b", "a", "d"]


def test_srv_weights_share_draws_as_rfc2782_says() -> None:
    """Over every possible draw in [0, sum], a record is picked first in
    proportion to its weight (inclusive bounds: weight 1 of 4 gets 2 of 5)."""
    records = [Srv(0, 1, 5060, "light.example.com"), Srv(0, 3, 5060, "heavy.example.com")]
    firsts = []
    for draw in range(5):

        def choose(total: int, draw: int = draw) -> int:
            return draw if total == 4 else 0

        firsts.append(order_srv(records, choose)[0].target)
    assert firsts.count("light.example.com") == 2
    assert firsts.count("heavy.example.com") == 3


def test_srv_choice_is_random_by_default() -> None:
    """Without an injected choice, equal-weight records come out in varying order."""
    records = [Srv(0, 1, 5060, f"s{i}.example.com") for i in range(8)]
    orders = {tuple(r.target for r in order_srv(records)) for _ in range(20)}
    assert len(orders) > 1


def test_explicit_port_skips_naptr_and_srv() -> None:
    """A port in the URI: only A/AAAA of the host, on that port; UDP for SIP,
    TLS for SIPS (RFC 3263 §4.1-4.2)."""
    dns = Resolver(_zone())
    assert dns.run("example.com", 5080) == [
        Target("udp", "example.com", 5080, "192.0.2.100"),
        Target("udp", "example.com", 5080, "2001:db8::100"),
    ]
    assert {lookup.rtype for lookup in dns.asked} == {A, AAAA}
    assert Resolver(_zone()).run("example.com", 5080, secure=True)[0].transport == "tls"


def test_ip_literal_skips_all_lookups() -> None:
    """An IPv4 or bracketed IPv6 host is the target itself: no DNS at all."""
    dns = Resolver(_zone())
    assert dns.run("192.0.2.7") == [Target("udp", "192.0.2.7", 5060, "192.0.2.7")]
    assert dns.run("[2001:DB8::7]", secure=True) == [
        Target("tls", "2001:db8::7", 5061, "2001:db8::7")
    ]
    assert dns.run("192.0.2.7", 5070, "tcp") == [Target("tcp", "192.0.2.7", 5070, "192.0.2.7")]
    assert dns.asked == []


def test_explicit_transport_skips_naptr_and_queries_its_srv_only() -> None:
    """``transport=tcp``: no NAPTR, only ``_sip._tcp`` (RFC 3263 §4.2)."""
    dns = Resolver(_zone())
    assert dns.run("example.com", transport="TCP") == [
        Target("tcp", "tcp1.example.com", 5060, "192.0.2.2")
    ]
    assert dns.asked[0] == Lookup(SRV, "_sip._tcp.example.com")
    assert Lookup(NAPTR, "example.com") not in dns.asked


def test_tls_trunk_never_falls_back_to_plaintext() -> None:
    """A trunk configured for TLS whose carrier publishes only UDP and TCP:
    no plaintext query is made and every target is TLS on 5061."""
    zone = _without(_zone(), Lookup(SRV, "_sips._tcp.example.com"))
    zone[Lookup(NAPTR, "example.com")] = [
        Naptr(10, 10, "s", "SIP+D2U", "_sip._udp.example.com"),
        Naptr(20, 10, "s", "SIP+D2T", "_sip._tcp.example.com"),
    ]
    for options in ({"transport": "tls"}, {"secure": True}, {"supported": ("tls",)}):
        dns = Resolver(zone)
        targets = dns.run("example.com", **options)
        assert targets == [
            Target("tls", "example.com", 5061, "192.0.2.100"),
            Target("tls", "example.com", 5061, "2001:db8::100"),
        ], options
        assert Lookup(SRV, "_sip._udp.example.com") not in dns.asked
        assert Lookup(SRV, "_sip._tcp.example.com") not in dns.asked


def test_sips_transport_tcp_means_tls_and_sips_over_udp_is_refused() -> None:
    """For a SIPS URI ``transport=tcp`` is TLS over TCP (RFC 3261 §26.2.2);
    ``transport=udp`` cannot be secure and yields nothing."""
    assert Resolver(_zone()).run("example.com", transport="tcp", secure=True)[0] == Target(
        "tls", "tls1.example.com", 5061, "192.0.2.1"
    )
    dns = Resolver(_zone())
    assert dns.run("example.com", transport="udp", secure=True) == []
    assert dns.asked == []


def test_unknown_transport_yields_nothing() -> None:
    """``transport=sctp`` (not offered): no lookups, no targets."""
    dns = Resolver(_zone())
    assert dns.run("example.com", transport="sctp") == []
    assert dns.asked == []


def test_no_records_gives_empty_result() -> None:
    """A domain with no NAPTR, SRV or address records: an empty list (the
    caller answers 503)."""
    assert Resolver({}).run("nowhere.example") == []


def test_srv_dot_target_means_decidedly_unavailable() -> None:
    """A lone '.' SRV target rules the transport out, including the A/AAAA
    fallback; other transports may still be used."""
    zone: dict[Lookup, Sequence[Record]] = {
        Lookup(SRV, "_sips._tcp.example.com"): [Srv(0, 0, 0, ".")],
        Lookup(A, "example.com"): ["192.0.2.100"],
    }
    assert Resolver(zone).run("example.com", secure=True) == []
    assert Resolver(zone).run("example.com") == [Target("udp", "example.com", 5060, "192.0.2.100")]


def test_duplicate_targets_and_bad_addresses_are_dropped() -> None:
    """Two SRV records for one host and port give its addresses once;
    a malformed address record is ignored."""
    zone: dict[Lookup, Sequence[Record]] = {
        Lookup(SRV, "_sip._udp.example.com"): [
            Srv(0, 0, 5060, "sbc.example.com"),
            Srv(1, 0, 5060, "SBC.example.com."),
        ],
        Lookup(A, "sbc.example.com"): ["192.0.2.5", "not-an-ip"],
    }
    assert Resolver(zone).run("example.com", supported=("udp",)) == [
        Target("udp", "sbc.example.com", 5060, "192.0.2.5")
    ]
