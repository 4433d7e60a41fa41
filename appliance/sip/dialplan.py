"""Numbers and trunks as the SIP core sees them: E.164 normalisation, outbound
routing, DIDs, and the trunks themselves (sans-I/O; docs/trunks.md).

Built by the store (:func:`appliance.store.sip_dialplan.load_trunks`, ``load_dids``,
``load_routes``, ``load_number_settings``) as plain frozen values, so the core
looks numbers up with no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Literal

from appliance.media.policy import SrtpPolicy

Transport = Literal["tls", "tcp", "udp"]
CallerIdMode = Literal["pass", "fixed"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: E.164: "+", a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
#: Characters people and click-to-dial put between digits; dropped before reading.
_VISUAL_SEPARATORS = str.maketrans("", "", " -.()")
_DIGITS = re.compile(r"[0-9]*")


@dataclass(frozen=True)
class NumberSettings:
    """A tenant's numbering: ``country_code`` ("44", "" if unset), the national
    trunk prefix ("0"; "" if the country has none) and the international
    prefix ("00"; "" if only "+" means international)."""

    country_code: str = ""
    national_prefix: str = "0"
    international_prefix: str = "00"


@dataclass(frozen=True)
class RouteRule:
    """One outbound rule: numbers starting with ``prefix`` (with or without "+")
    go to ``trunk`` after removing ``strip`` characters from the front of the
    E.164 form (the "+" counts as one) and putting ``prepend`` in front."""

    position: int
    prefix: str
    trunk: str
    strip: int = 0
    prepend: str = ""


@dataclass(frozen=True)
class RouteMatch:
    """The rule that matched, its trunk, and the number to send the carrier."""

    rule: RouteRule
    trunk: str
    number: str


@dataclass(frozen=True)
class DidEntry:
    """A DID: an E.164 number that rings one extension of one tenant."""

    number: str
    tenant_id: int
    extension_id: int
    extension: str


@dataclass(frozen=True)
class TrunkEntry:
    """An enabled trunk, with its credentials in clear for answering the
    carrier's 401/407 (``password`` is left out of ``repr``); ``srtp`` is the
    SRTP policy of the call legs toward its carrier."""

    id: int
    tenant_id: int
    name: str
    host: str
    port: int | None
    transport: Transport
    username: str | None
    password: str | None = field(repr=False)
    caller_id_mode: CallerIdMode
    caller_id: str | None
    tls_domain: str
    ca_bundle: str | None = field(repr=False)
    fingerprint: str | None
    inbound_networks: tuple[IPNetwork, ...]
    inbound_fingerprint: str | None
    srtp: SrtpPolicy = SrtpPolicy.OPTIONAL

    @property
    def credentials(self) -> tuple[str, str] | None:
        """``(username, password)`` for Digest toward the carrier, or None."""
        if self.username is None or self.password is None:
            return None
        return self.username, self.password

    def admits(self, source_ip: str, client_fingerprint: str | None = None) -> bool:
        """Whether a request from ``source_ip`` (with the SHA-256 of the TLS client
        certificate, lower-case hex, if any) is this carrier's: the source must
        be in ``inbound_networks``, and match ``inbound_fingerprint`` when one is
        pinned. Headers never count."""
        try:
            address = ipaddress.ip_address(source_ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not any(address in network for network in self.inbound_networks):
            return False
        if self.inbound_fingerprint is None:
            return True
        return client_fingerprint is not None and client_fingerprint == self.inbound_fingerprint


def is_e164(number: str) -> bool:
    """Whether ``number`` is "+" then 2-15 digits, the first not 0."""
    return E164.fullmatch(number) is not None


def normalize(dialled: str, settings: NumberSettings) -> str | None:
    """What a phone dialled, as E.164, or None if it is not a public number.

    Spaces, dashes, dots and parentheses are ignored. "+..." stays as is; the
    international prefix becomes "+"; the national prefix becomes "+" and the
    country code (only when one is set). Whichever prefix is longer is tried
    first, so "00" wins over "0". Anything else (an extension, a service code
    such as "*21#", too many digits) is None.
    """
    number = dialled.translate(_VISUAL_SEPARATORS)
    if number.startswith("+"):
        return number if is_e164(number) else None
    if not number or not _DIGITS.fullmatch(number):
        return None
    prefixes = []
    if settings.international_prefix:
        prefixes.append((settings.international_prefix, "+"))
    if settings.national_prefix and settings.country_code:
        prefixes.append((settings.national_prefix, "+" + settings.country_code))
    for prefix, replacement in sorted(prefixes, key=lambda p: -len(p[0])):
        if number.startswith(prefix):
            rest = number[len(prefix) :]
            return replacement + rest if rest and is_e164(replacement + rest) else None
    return None


def route(
    e164: str, rules: Iterable[RouteRule], usable: Container[str] | None = None
) -> RouteMatch | None:
    """The first rule, by position, whose prefix matches ``e164``.

    A prefix matches with or without its "+" ("44" and "+44" are the same rule;
    "+" alone matches every number). When ``usable`` is given, rules whose
    trunk is not in it are passed over, so the next rule is the fallback. A
    rule that would leave nothing to dial is passed over too.
    """
    if not is_e164(e164):
        return None
    digits = e164[1:]
    for rule in sorted(rules, key=lambda r: r.position):
        if not digits.startswith(rule.prefix.removeprefix("+")):
            continue
        if usable is not None and rule.trunk not in usable:
            continue
        number = rule.prepend + e164[rule.strip :]
        if number.removeprefix("+"):
            return RouteMatch(rule, rule.trunk, number)
    return None
