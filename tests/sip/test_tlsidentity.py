"""RFC 5922 server identity of a carrier's TLS certificate, on certificates
generated here: which identities count, how they match, and pinning."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from appliance.sip.tlsidentity import (
    IdentityResult,
    check_identity,
    check_pin,
    fingerprint,
    normalize_pin,
)

KEY = ec.generate_private_key(ec.SECP256R1())
DOMAIN = "carrier.example"


def _certificate(
    *, common_name: str | None = None, san: list[x509.GeneralName] | None = None
) -> bytes:
    """A self-signed certificate (DER); ``san=None`` means no SAN extension."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=90))
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(KEY, hashes.SHA256()).public_bytes(Encoding.DER)


def _uri(value: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(value)


def _dns(value: str) -> x509.GeneralName:
    return x509.DNSName(value)


def test_sip_uri_san_matches() -> None:
    """A subjectAltName ``sip:carrier.example`` URI is the carrier's identity."""
    result = check_identity([_certificate(san=[_uri("sip:carrier.example")])], DOMAIN)
    assert result == IdentityResult(True, DOMAIN, (DOMAIN,), "sip-uri identity matches")


def test_sip_uri_wins_over_matching_dns_name() -> None:
    """When SIP URIs are present, dNSName entries are not identities (RFC 5922
    §7.1): a matching dNSName does not rescue a non-matching SIP URI."""
    der = _certificate(san=[_uri("sip:other.example"), _dns(DOMAIN)])
    result = check_identity([der], DOMAIN)
    assert not result.ok
    assert result.presented == ("other.example",)
    assert "sip-uri" in result.reason


def test_sips_and_user_uris_are_not_identities() -> None:
    """Only ``sip:`` URIs without a user part are domain identities (RFC 5922
    §7.1); with none of those the dNSName entries decide."""
    der = _certificate(
        san=[_uri("sips:other.example"), _uri("sip:alice@other.example"), _dns(DOMAIN)]
    )
    result = check_identity([der], DOMAIN)
    assert result.ok
    assert result.presented == (DOMAIN,)
    assert result.reason == "dns-name identity matches"


def test_dns_name_matches() -> None:
    """Without SIP URIs, a dNSName equal to the configured domain matches."""
    der = _certificate(san=[_dns("sbc.carrier.example"), _dns(DOMAIN)])
    result = check_identity([der], DOMAIN)
    assert result.ok
    assert result.matched == DOMAIN
    assert result.presented == ("sbc.carrier.example", DOMAIN)


def test_wildcard_dns_name_never_matches() -> None:
    """``*.carrier.example`` matches neither a subdomain nor itself spelt
    literally (RFC 5922 §7.2)."""
    der = _certificate(san=[_dns("*.carrier.example")])
    result = check_identity([der], "sbc.carrier.example")
    assert not result.ok
    assert "wildcards never match" in result.reason
    assert not check_identity([der], "*.carrier.example").ok


def test_common_name_only_without_san_extension() -> None:
    """The CN is a last resort: used when there is no subjectAltName extension,
    ignored when there is one (even one with no DNS name or URI)."""
    assert check_identity([_certificate(common_name=DOMAIN)], DOMAIN) == IdentityResult(
        True, DOMAIN, (DOMAIN,), "common-name identity matches"
    )
    with_dns = _certificate(common_name=DOMAIN, san=[_dns("other.example")])
    assert not check_identity([with_dns], DOMAIN).ok
    email_only = _certificate(common_name=DOMAIN, san=[x509.RFC822Name("noc@carrier.example")])
    result = check_identity([email_only], DOMAIN)
    assert not result.ok
    assert result.reason == "certificate presents no dns-name identity"


def test_case_and_trailing_dot_are_ignored() -> None:
    """Comparison is case-insensitive and ignores a trailing dot on either side;
    a SIP URI's port and parameters do not matter."""
    assert check_identity([_certificate(san=[_dns("Carrier.Example.")])], "CARRIER.example.").ok
    der = _certificate(san=[_uri("SIP:SBC.Carrier.Example:5061;transport=tls")])
    assert check_identity([der], "sbc.carrier.example").matched == "sbc.carrier.example"


def test_ip_address_san_for_an_ip_configured_trunk() -> None:
    """A trunk configured by IP address is matched against iPAddress entries
    (IPv4 and bracketed IPv6), not against a dNSName spelling the address."""
    der = _certificate(
        san=[
            x509.IPAddress(ipaddress.ip_address("192.0.2.10")),
            x509.IPAddress(ipaddress.ip_address("2001:db8::10")),
        ]
    )
    assert check_identity([der], "192.0.2.10").ok
    assert check_identity([der], "[2001:DB8:0::10]").matched == "2001:db8::10"
    assert not check_identity([der], "192.0.2.11").ok
    spelt = _certificate(san=[_dns("192.0.2.10")])
    assert check_identity([spelt], "192.0.2.10").reason == (
        "certificate presents no ip-address identity"
    )


def test_srv_target_name_is_not_accepted_for_the_configured_domain() -> None:
    """The server reached through SRV presents its own host name; that is not
    the configured domain, so the check fails (DNS is not trusted)."""
    der = _certificate(san=[_dns("sbc1.hosting.example")])
    result = check_identity([der], DOMAIN)
    assert not result.ok
    assert result.presented == ("sbc1.hosting.example",)


def test_only_the_leaf_is_examined() -> None:
    """Identities in other certificates of the chain do not count."""
    chain = [_certificate(san=[_dns("other.example")]), _certificate(san=[_dns(DOMAIN)])]
    assert not check_identity(chain, DOMAIN).ok


def test_missing_or_unreadable_certificate_fails() -> None:
    """No certificate, or bytes that are not DER, fail with a reason."""
    assert check_identity([], DOMAIN).reason == "no certificate presented"
    result = check_identity([b"not a certificate"], DOMAIN)
    assert not result.ok
    assert result.reason.startswith("unreadable certificate")


def test_fingerprint_is_sha256_hex_lower() -> None:
    """The fingerprint is the SHA-256 of the DER bytes, lower-case hex."""
    der = _certificate(common_name=DOMAIN)
    assert fingerprint(der) == hashlib.sha256(der).hexdigest()
    assert (
        fingerprint(der) == x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()
    )


def test_pin_matches_leaf_in_any_spelling() -> None:
    """A pin equal to the leaf's fingerprint matches, in upper case with colons
    or with a ``sha256:`` prefix."""
    leaf = _certificate(san=[_dns(DOMAIN)])
    pin = fingerprint(leaf)
    colons = ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper()
    assert check_pin([leaf], pin)
    assert check_pin([leaf], colons)
    assert check_pin([leaf], f"sha256:{pin}")


def test_pin_mismatch_fails() -> None:
    """Another certificate's pin fails, so does a pin of a non-leaf certificate
    in the presented chain, and an empty chain."""
    leaf = _certificate(san=[_dns(DOMAIN)])
    intermediate = _certificate(common_name="Carrier CA")
    assert not check_pin([leaf, intermediate], fingerprint(intermediate))
    assert not check_pin([], fingerprint(leaf))


def test_malformed_pin_is_a_configuration_error() -> None:
    """A pin that is not 64 hex digits raises ValueError."""
    with pytest.raises(ValueError, match="64 hex"):
        normalize_pin("abc")
    with pytest.raises(ValueError, match="64 hex"):
        check_pin([_certificate(common_name=DOMAIN)], "z" * 64)
