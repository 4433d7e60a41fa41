"""Who a carrier's TLS certificate says it is (RFC 5922 §7), sans-I/O.

When the appliance connects TO a carrier over TLS, OpenSSL in the adapter
validates the chain (to the trunk's CA bundle or the system roots); this
module then decides whether the leaf certificate names the carrier's
*configured* domain. It never sees a socket, only DER bytes.

The identity set of the leaf (RFC 5922 §7.1):

1. the hosts of its subjectAltName ``uniformResourceIdentifier`` entries with
   the ``sip`` scheme and no user part. RFC 5922 accepts only ``sip``: a
   ``sips:`` URI, a SIP URI with a user (a user's certificate, not a
   domain's) or an unparsable one is not an identity;
2. if there is no such SIP URI, its subjectAltName ``dNSName`` entries;
3. only if the certificate has no subjectAltName extension at all, the
   subject's Common Name(s). RFC 5922 allows ("MAY") this last resort for
   old certificates; a SAN extension of any content disables it.

Matching (RFC 5922 §7.2-7.3): the configured domain must equal one identity,
case-insensitively and ignoring a trailing dot. Wildcards (``*.example.com``)
never match. The domain compared is the one configured for the trunk (or
the URI's host), never an SRV or NAPTR target: DNS is not secured, so a name
learnt from it proves nothing. If the configured host is an IP address, the
leaf's ``iPAddress`` entries are compared instead (RFC 5922 has no IP rule;
this is what RFC 6125 does).

An optional pin (:func:`check_pin`) compares the SHA-256 fingerprint of the
leaf only: the presented chain's other certificates are not necessarily the
ones OpenSSL built the path with, and an attacker could append a pinned CA.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from cryptography import x509
from cryptography.x509.oid import NameOID

from appliance.sip.errors import SipError
from appliance.sip.grammar import parse_sip_uri

SIP_URI = "sip-uri"
DNS_NAME = "dns-name"
COMMON_NAME = "common-name"
IP_ADDRESS = "ip-address"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class IdentityResult(NamedTuple):
    """The verdict on a leaf certificate's identity.

    ``matched`` is the identity equal to the expected domain; ``presented``
    the identity set considered (normalised); ``reason`` says why, for logs.
    """

    ok: bool
    matched: str | None
    presented: tuple[str, ...]
    reason: str


def normalize_domain(domain: str) -> str:
    """A domain as compared: lower-case A-labels, no trailing dot, no brackets."""
    domain = domain.strip()
    if domain.startswith("[") and domain.endswith("]"):
        domain = domain[1:-1]
    domain = domain.rstrip(".")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return domain.lower()
    return domain.lower()


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(normalize_domain(text))
    except ValueError:
        return None


def presented_identities(certificate: x509.Certificate) -> tuple[str, tuple[str, ...]]:
    """``(kind, names)``: the leaf's SIP domain identities by RFC 5922 §7.1.

    ``kind`` is :data:`SIP_URI`, :data:`DNS_NAME` or :data:`COMMON_NAME`.
    Wildcard names are listed (so a log shows them) but never match.
    """
    san = _subject_alt_name(certificate)
    if san is None:
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return COMMON_NAME, _unique(
            normalize_domain(value if isinstance(value, str) else value.decode("latin-1"))
            for value in (name.value for name in names)
        )
    hosts: list[str] = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            parsed = parse_sip_uri(uri)
        except SipError:
            continue
        if parsed.scheme == "sip" and parsed.user is None:
            hosts.append(normalize_domain(parsed.host))
    if hosts:
        return SIP_URI, _unique(hosts)
    return DNS_NAME, _unique(normalize_domain(n) for n in san.get_values_for_type(x509.DNSName))


def _subject_alt_name(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for name in names if name))


def check_identity(chain_der: Sequence[bytes], expected_domain: str) -> IdentityResult:
    """Whether the leaf of ``chain_der`` (leaf first) names ``expected_domain``.

    ``expected_domain`` is the configured trunk domain (or IP address), never
    a name learnt from DNS. The chain itself must already have been validated.
    """
    if not chain_der:
        return IdentityResult(False, None, (), "no certificate presented")
    try:
        certificate = x509.load_der_x509_certificate(chain_der[0])
        expected_ip = _ip(expected_domain)
        if expected_ip is not None:
            return _check_ip(certificate, expected_ip)
        kind, presented = presented_identities(certificate)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
        return IdentityResult(False, None, (), f"unreadable certificate ({error})")
    expected = normalize_domain(expected_domain)
    if not expected or "*" in expected:
        return IdentityResult(False, None, presented, "no usable expected domain")
    if not presented:
        return IdentityResult(False, None, (), f"certificate presents no {kind} identity")
    for name in presented:
        if "*" not in name and name == expected:
            return IdentityResult(True, name, presented, f"{kind} identity matches")
    wildcard = any("*" in name for name in presented)
    note = " (wildcards never match, RFC 5922 §7.2)" if wildcard else ""
    return IdentityResult(
        False, None, presented, f"{expected} is not among the {kind} identities{note}"
    )


def _check_ip(certificate: x509.Certificate, expected: IPAddress) -> IdentityResult:
    san = _subject_alt_name(certificate)
    addresses = [
        value
        for value in (san.get_values_for_type(x509.IPAddress) if san is not None else [])
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address)
    ]
    presented = tuple(dict.fromkeys(str(a) for a in addresses))
    if expected in addresses:
        return IdentityResult(True, str(expected), presented, f"{IP_ADDRESS} identity matches")
    if not presented:
        return IdentityResult(False, None, (), f"certificate presents no {IP_ADDRESS} identity")
    return IdentityResult(
        False, None, presented, f"{expected} is not among the {IP_ADDRESS} identities"
    )


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex without separators."""
    return hashlib.sha256(der).hexdigest()


def normalize_pin(pin: str) -> str:
    """A configured pin as :func:`fingerprint` prints it.

    Accepts upper or lower case, with or without ``:`` separators and an
    optional ``sha256:`` prefix; raises ValueError on anything else.
    """
    text = pin.strip().lower()
    text = text.removeprefix("sha256:").replace(":", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a pin is the 64 hex digits of a certificate's SHA-256")
    return text


def check_pin(chain_der: Sequence[bytes], pin: str) -> bool:
    """Whether the leaf certificate's SHA-256 fingerprint equals ``pin``.

    Raises ValueError if ``pin`` is malformed (a configuration error).
    """
    expected = normalize_pin(pin)
    if not chain_der:
        return False
    return hmac.compare_digest(fingerprint(chain_der[0]), expected)
