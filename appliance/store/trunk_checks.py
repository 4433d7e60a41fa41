"""Validation of what an operator types about trunks, DIDs, routes and numbering.

Each ``check_*`` returns the value as it is stored (lower-cased, compressed,
de-duplicated) or raises :class:`InvalidInputError` saying what was expected.
Kept apart from :mod:`appliance.store.trunks` so the repository reads as
storage and these rules can be read (and tested) on their own.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable

from cryptography import x509

from appliance.media.policy import SrtpPolicy, check_config
from appliance.sip.dialplan import NumberSettings, Transport, is_e164
from appliance.store.tenants import InvalidInputError, parse_srtp

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "TRANSPORTS",
    "check_ca_bundle",
    "check_e164",
    "check_fingerprint",
    "check_host",
    "check_name",
    "check_networks",
    "check_number_settings",
    "check_password",
    "check_port",
    "check_prefix",
    "check_srtp",
    "check_transport",
    "check_username",
]

TRANSPORTS: tuple[Transport, ...] = ("tls", "tcp", "udp")
MAX_PASSWORD_LENGTH = 256

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_PREFIX = re.compile(r"\+?[0-9]{0,15}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_USERNAME_FORBIDDEN = frozenset('"\\')
_COUNTRY_CODE = re.compile(r"(?:[1-9][0-9]{0,2})?")
_DIAL_PREFIX = re.compile(r"[0-9]{0,4}")


def check_name(name: str) -> str:
    """A trunk name: 1-32 of [a-z0-9-], not starting with '-'."""
    if not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid trunk name {name!r}: 1-32 lower-case letters, digits and '-',"
            " starting with a letter or digit"
        )
    return name


def check_host(host: str, what: str = "host") -> str:
    """A DNS name (lower-cased) or an IP address (compressed, no brackets)."""
    text = host.strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        if "%" not in bare:  # no IPv6 zone: it names an interface of this machine only
            return ipaddress.ip_address(bare).compressed
    except ValueError:
        pass
    name = text.lower().removesuffix(".")
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(map(_LABEL.fullmatch, labels))
        or labels[-1].isdigit()
    ):
        raise InvalidInputError(f"invalid {what} {host!r}: expected a DNS name or an IP address")
    return name


def check_port(port: int | None) -> int | None:
    """None (the transport's default) or 1-65535."""
    if port is not None and not 1 <= port <= 65535:
        raise InvalidInputError(f"invalid port {port}: expected 1-65535")
    return port


def check_transport(transport: str) -> Transport:
    """One of tls, tcp, udp."""
    if transport not in TRANSPORTS:
        raise InvalidInputError(
            f"invalid transport {transport!r}: expected one of {', '.join(TRANSPORTS)}"
        )
    return transport


def check_srtp(srtp: str, transport: str) -> SrtpPolicy:
    """An SRTP policy the trunk's transport can carry: ``required`` only over TLS,
    because SDES keys travel in the SDP (the message is :func:`check_config`'s)."""
    policy = parse_srtp(srtp)
    problem = check_config(policy, transport)
    if problem is not None:
        raise InvalidInputError(problem)
    return policy


def check_e164(number: str, what: str = "number") -> str:
    """E.164: "+" then 2-15 digits, the first not 0."""
    if not is_e164(number):
        raise InvalidInputError(
            f"invalid {what} {number!r}: expected E.164, '+' then 2-15 digits (no spaces)"
        )
    return number


def check_fingerprint(fingerprint: str, what: str = "fingerprint") -> str:
    """A SHA-256 fingerprint: 64 hex digits, colons allowed; stored lower-case."""
    normal = fingerprint.strip().replace(":", "").lower()
    if not _FINGERPRINT.fullmatch(normal):
        raise InvalidInputError(
            f"invalid {what}: expected a SHA-256 fingerprint, 64 hex digits (colons allowed)"
        )
    return normal


def check_networks(networks: Iterable[str]) -> tuple[str, ...]:
    """CIDRs (a bare address is a /32 or /128), without host bits, never /0."""
    checked: list[str] = []
    for text in networks:
        try:
            network = ipaddress.ip_network(text.strip())
        except ValueError:
            try:
                loose = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                raise InvalidInputError(f"invalid network {text!r}: expected a CIDR") from None
            raise InvalidInputError(
                f"invalid network {text!r}: host bits set (did you mean {loose}?)"
            ) from None
        if network.prefixlen == 0:
            raise InvalidInputError(
                f"refusing network {network}: it would accept calls from anywhere"
            )
        if str(network) not in checked:
            checked.append(str(network))
    return tuple(checked)


def check_ca_bundle(pem: str) -> str:
    """PEM text holding at least one certificate."""
    try:
        if not x509.load_pem_x509_certificates(pem.encode()):
            raise ValueError
    except ValueError:
        raise InvalidInputError(
            "invalid CA bundle: expected PEM certificates (-----BEGIN CERTIFICATE-----)"
        ) from None
    return pem


def check_username(username: str) -> str:
    """A Digest username: 1-128 printable characters, no space, quote or backslash."""
    if (
        not 1 <= len(username) <= 128
        or any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in username)
        or _USERNAME_FORBIDDEN & set(username)
    ):
        raise InvalidInputError(
            "invalid username: 1-128 printable characters, no spaces, quotes or backslashes"
        )
    return username


def check_password(password: str) -> str:
    """A carrier password: 1-256 characters, no control characters."""
    if not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidInputError(f"carrier password must be 1-{MAX_PASSWORD_LENGTH} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise InvalidInputError("carrier password must not contain control characters")
    return password


def check_prefix(prefix: str) -> str:
    """A route prefix: digits with an optional leading "+" ("+" alone matches all)."""
    if not prefix or not _PREFIX.fullmatch(prefix):
        raise InvalidInputError(f"invalid prefix {prefix!r}: digits with an optional leading '+'")
    return prefix


def check_number_settings(settings: NumberSettings) -> NumberSettings:
    """Country code 1-3 digits not starting with 0 (or empty); prefixes 0-4 digits, distinct."""
    if not _COUNTRY_CODE.fullmatch(settings.country_code):
        raise InvalidInputError(
            f"invalid country code {settings.country_code!r}: 1-3 digits, not starting with 0"
        )
    for what, value in (
        ("national prefix", settings.national_prefix),
        ("international prefix", settings.international_prefix),
    ):
        if not _DIAL_PREFIX.fullmatch(value):
            raise InvalidInputError(f"invalid {what} {value!r}: 0-4 digits")
    if settings.national_prefix and settings.national_prefix == settings.international_prefix:
        raise InvalidInputError("the national and international prefixes must differ")
    return settings
