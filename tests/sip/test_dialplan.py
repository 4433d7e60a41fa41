"""The sans-I/O dial plan: E.164 normalisation, outbound routing, trunk identification."""

from __future__ import annotations

import ipaddress

import pytest

from appliance.sip.dialplan import (
    NumberSettings,
    RouteMatch,
    RouteRule,
    TrunkEntry,
    is_e164,
    normalize,
    route,
)

UK = NumberSettings(country_code="44", national_prefix="0", international_prefix="00")
NANP = NumberSettings(country_code="1", national_prefix="1", international_prefix="011")
UNSET = NumberSettings()  # the defaults: no country code, "0", "00"
PIN = "ab" * 32


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("02079460000", "+442079460000"),
        ("020 7946 0000", "+442079460000"),
        ("07700-900123", "+447700900123"),
        ("00442079460000", "+442079460000"),
        ("0033142685300", "+33142685300"),
        ("001 212 555 0123", "+12125550123"),
        ("+442079460000", "+442079460000"),
        ("+44 (20) 7946-0000", "+442079460000"),
        ("200", None),
        ("4711", None),
        ("0", None),
        ("00", None),
        ("000123", None),
        ("*21#", None),
        ("", None),
        ("+", None),
        ("+1", None),
        ("+0441234", None),
        ("0" + "1" * 14, None),
        ("+44207946000a", None),
        ("0207946000a", None),
    ],
)
def test_normalize_uk(dialled: str, expected: str | None) -> None:
    """UK settings: 0 is national, 00 international (tried first, being longer), +
    stays; extensions, service codes and overlong numbers are not E.164."""
    assert normalize(dialled, UK) == expected


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("12125550123", "+12125550123"),
        ("1-212-555-0123", "+12125550123"),
        ("011442079460000", "+442079460000"),
        ("+12125550123", "+12125550123"),
        ("2125550123", None),
        ("911", None),
        ("1", None),
        ("011", None),
    ],
)
def test_normalize_nanp(dialled: str, expected: str | None) -> None:
    """NANP settings: 1 is the national prefix, 011 international; ten digits
    without the 1 are not recognised (they could be an extension)."""
    assert normalize(dialled, NANP) == expected


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("02079460000", None),
        ("00442079460000", "+442079460000"),
        ("+442079460000", "+442079460000"),
    ],
)
def test_normalize_without_a_country_code(dialled: str, expected: str | None) -> None:
    """Without a country code a national number cannot be made E.164; the
    international forms still can."""
    assert normalize(dialled, UNSET) == expected


def test_normalize_with_no_prefixes_only_accepts_plus() -> None:
    """Empty national and international prefixes leave only "+..." as public numbers."""
    bare = NumberSettings("34", "", "")
    assert normalize("912345678", bare) is None
    assert normalize("+34912345678", bare) == "+34912345678"


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("+12", True),
        ("+" + "9" * 15, True),
        ("+" + "9" * 16, False),
        ("+1", False),
        ("+01234", False),
        ("1234", False),
        ("+12 34", False),
        ("+١٢٣", False),
    ],
)
def test_is_e164(number: str, valid: bool) -> None:
    """E.164 is '+', a non-zero digit, then 1-14 more ASCII digits."""
    assert is_e164(number) is valid


RULES = (
    RouteRule(position=3, prefix="+1", trunk="us"),
    RouteRule(position=2, prefix="+", trunk="default"),
    RouteRule(position=1, prefix="44", trunk="uk", strip=3, prepend="0"),
)


@pytest.mark.parametrize(
    ("e164", "trunk", "number"),
    [
        ("+442079460000", "uk", "02079460000"),
        ("+12125550123", "default", "+12125550123"),
        ("+33142685300", "default", "+33142685300"),
    ],
)
def test_route_takes_the_first_rule_by_position(e164: str, trunk: str, number: str) -> None:
    """Rules are tried by position, not by how specific their prefix is: "+" at
    position 2 wins over "+1" at 3; a prefix matches with or without its "+"."""
    match = route(e164, RULES)
    assert match is not None
    assert (match.trunk, match.number) == (trunk, number)
    assert match.rule.trunk == trunk


def test_route_strip_and_prepend() -> None:
    """strip removes characters from the +E.164 form (the + counts) and prepend
    goes in front: to national format, to 00-international, or unchanged."""
    e164 = "+442079460000"
    national = route(e164, [RouteRule(1, "+44", "t", strip=3, prepend="0")])
    assert national is not None and national.number == "02079460000"
    international = route(e164, [RouteRule(1, "+", "t", strip=1, prepend="00")])
    assert international is not None and international.number == "00442079460000"
    digits = route(e164, [RouteRule(1, "+", "t", strip=1)])
    assert digits is not None and digits.number == "442079460000"
    tech = route(e164, [RouteRule(1, "+44", "t", prepend="1234#")])
    assert tech is not None and tech.number == "1234#+442079460000"


def test_route_without_a_match_or_with_bad_input() -> None:
    """No matching prefix, no rules, or a number that is not E.164 give None."""
    uk_only = [RouteRule(1, "+44", "uk")]
    assert route("+33142685300", uk_only) is None
    assert route("+442079460000", []) is None
    assert route("02079460000", uk_only) is None
    assert route("200", [RouteRule(1, "+", "any")]) is None


def test_route_passes_over_unusable_trunks_and_empty_results() -> None:
    """With ``usable`` given, rules for other trunks are skipped so the next rule is
    the fallback; a rule that strips everything is skipped too."""
    rules = [
        RouteRule(1, "+44", "primary"),
        RouteRule(2, "+44", "greedy", strip=20),
        RouteRule(3, "+", "backup"),
    ]
    assert route("+442079460000", rules) == RouteMatch(rules[0], "primary", "+442079460000")
    fallback = route("+442079460000", rules, usable={"backup", "greedy"})
    assert fallback == RouteMatch(rules[2], "backup", "+442079460000")
    assert route("+442079460000", rules, usable=set()) is None


def _trunk(networks: tuple[str, ...], inbound_fingerprint: str | None = None) -> TrunkEntry:
    return TrunkEntry(
        id=1,
        tenant_id=1,
        name="carrier",
        host="sbc.carrier.example",
        port=None,
        transport="tls",
        username="acct",
        password="do-not-print-me",
        caller_id_mode="pass",
        caller_id=None,
        tls_domain="sbc.carrier.example",
        ca_bundle=None,
        fingerprint=None,
        inbound_networks=tuple(ipaddress.ip_network(n) for n in networks),
        inbound_fingerprint=inbound_fingerprint,
    )


@pytest.mark.parametrize(
    ("source", "admitted"),
    [
        ("192.0.2.7", True),
        ("::ffff:192.0.2.7", True),
        ("2001:db8::5", True),
        ("198.51.100.1", False),
        ("2001:db9::5", False),
        ("carrier.example", False),
        ("", False),
    ],
)
def test_trunk_admits_only_its_source_networks(source: str, admitted: bool) -> None:
    """Inbound traffic is the carrier's only when it comes from one of its networks
    (IPv4-mapped IPv6 counts as IPv4); anything else, names included, is not."""
    trunk = _trunk(("192.0.2.0/24", "2001:db8::/32"))
    assert trunk.admits(source) is admitted


def test_trunk_with_a_client_certificate_pin_needs_both() -> None:
    """With an inbound pin, the source network and the client certificate must both
    match; a trunk without inbound networks admits nothing."""
    trunk = _trunk(("192.0.2.0/24",), inbound_fingerprint=PIN)
    assert trunk.admits("192.0.2.7", PIN)
    assert not trunk.admits("192.0.2.7")
    assert not trunk.admits("192.0.2.7", "cd" * 32)
    assert not trunk.admits("198.51.100.1", PIN)
    assert not _trunk(()).admits("192.0.2.7")


def test_trunk_entry_credentials_and_repr() -> None:
    """credentials pairs username and password; repr never shows the password."""
    trunk = _trunk(("192.0.2.0/24",))
    assert trunk.credentials == ("acct", "do-not-print-me")
    assert "do-not-print-me" not in repr(trunk)
    bare = TrunkEntry(**{**trunk.__dict__, "username": None, "password": None})
    assert bare.credentials is None
