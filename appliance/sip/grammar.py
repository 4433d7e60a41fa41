"""Structured parsing of the headers and URIs routing needs (RFC 3261 §25,
RFC 3581, RFC 5118), on Latin-1 text from :mod:`appliance.sip.message`.

Every function raises :class:`~appliance.sip.errors.SipError` (400) on input
it cannot read unambiguously. The grammar is applied as the RFCs write it,
with the liberal readings RFC 4475 and RFC 5118 ask for (LWS around
separators, unknown URI schemes in name-addrs, IPv6 references with three
colons) and the strict ones they test (spaces inside ``<>``, unbalanced
quotes, non-token display names, empty parameters).
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from appliance.sip import limits
from appliance.sip.errors import SipError, bad_request

_TCHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = re.compile(rf"[{_TCHARS}]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
#: Liberal on purpose: RFC 5118 §4.10 asks us to accept "2001:db8:::192.0.2.1".
_IPV6_REFERENCE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_PARAM_VALUE = re.compile(r'[^\s;,"<>]+')
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SENT_PROTOCOL = re.compile(
    rf"([{_TCHARS}]+)[ \t]*/[ \t]*([{_TCHARS}]+)[ \t]*/[ \t]*([{_TCHARS}]+)[ \t]+"
)
_CALL_ID = re.compile(r"[^\s]+")
_WHITESPACE = re.compile(r"\s")
# Fast paths for the forms phones actually send; anything else takes the
# general scanner, which accepts the same language.
_COMPACT_PARAMS = re.compile(rf'(?:;[{_TCHARS}]+(?:=[^\s;,"<>=]+)?)+')
_SIMPLE_VIA = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?((?:;.*)?)",
    re.DOTALL,
)
_SIMPLE_NAME_ADDR = re.compile(r'("(?:[^"\\]|\\.)*")?[ \t]*<([^<>\s]+)>((?:;\S*)?)', re.DOTALL)


class Params(NamedTuple):
    """``;name=value`` parameters in order; names compare case-insensitively."""

    items: tuple[tuple[str, str | None], ...] = ()

    def get(self, name: str) -> str | None:
        """The value of ``name`` (None if absent or valueless)."""
        name = name.lower()
        for key, value in self.items:
            if key.lower() == name:
                return value
        return None

    def has(self, name: str) -> bool:
        """Whether ``name`` is present, with or without a value."""
        name = name.lower()
        return any(key.lower() == name for key, _ in self.items)


_NO_PARAMS = Params()


class Via(NamedTuple):
    """One Via value: ``SIP/2.0/<transport> host[:port];params``."""

    transport: str
    host: str
    port: int | None
    params: Params

    @property
    def branch(self) -> str | None:
        """The branch parameter."""
        return self.params.get("branch")


class CSeq(NamedTuple):
    """The CSeq header: sequence number and method."""

    number: int
    method: str


class SipUri(NamedTuple):
    """A sip: or sips: URI, split into its parts (values still %-escaped)."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: Params
    headers: str | None

    @property
    def host_key(self) -> str:
        """The host as compared: lower-case, brackets kept for IPv6."""
        return self.host.lower()


class NameAddr(NamedTuple):
    """A From/To/Contact/Route value: display name, URI text and header params."""

    display: str | None
    uri: str
    params: Params
    bracketed: bool

    @property
    def tag(self) -> str | None:
        """The tag parameter."""
        return self.params.get("tag")


def split_commas(value: str) -> list[str]:
    """Split a list header on commas outside quotes and angle brackets."""
    if "," not in value:
        return [value] if value else []
    if '"' not in value and "<" not in value:
        # No quoted string and no <URI>: every comma separates (sipp, for one,
        # sends a response's Vias as one comma-joined header).
        return [item.strip(" \t") for item in value.split(",")]
    items: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(value[start:i].strip(" \t"))
            start = i + 1
    items.append(value[start:].strip(" \t"))
    return items


def parse_params(text: str, what: str) -> Params:
    """Parse ``*( SEMI name [EQUAL value] )`` with LWS around the separators."""
    if not text:
        return _NO_PARAMS
    if _COMPACT_PARAMS.fullmatch(text):
        # The usual case (no LWS, no quoted values) without the general scanner.
        compact: list[tuple[str, str | None]] = []
        for item in text[1:].split(";"):
            name, equals, value_text = item.partition("=")
            compact.append((name, value_text if equals else None))
        return Params(tuple(compact))
    items: list[tuple[str, str | None]] = []
    rest = text.strip(" \t")
    while rest:
        if rest[0] != ";":
            raise bad_request(f"unexpected text in {what} parameters")
        rest = rest[1:].lstrip(" \t")
        name_match = _TOKEN.match(rest)
        if name_match is None:
            raise bad_request(f"empty or malformed {what} parameter")
        name = name_match.group()
        rest = rest[name_match.end() :].lstrip(" \t")
        value: str | None = None
        if rest.startswith("="):
            rest = rest[1:].lstrip(" \t")
            value_match = (
                _QUOTED.match(rest) or _IPV6_REFERENCE.match(rest) or _PARAM_VALUE.match(rest)
            )
            if value_match is None:
                raise bad_request(f"{what} parameter {name} has no value")
            value = value_match.group()
            rest = rest[value_match.end() :].lstrip(" \t")
        items.append((name, value))
    return Params(tuple(items))


def parse_host(text: str) -> str:
    """Check a host: a name, an IPv4 address or a bracketed IPv6 reference."""
    if _IPV6_REFERENCE.fullmatch(text) or _IPV4.fullmatch(text) or _HOSTNAME.fullmatch(text):
        return text
    raise bad_request("malformed host")


def _parse_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        close = text.find("]")
        host, rest = text[: close + 1], text[close + 1 :]
    else:
        host, _, port_text = text.partition(":")
        rest = f":{port_text}" if _ else ""
    host = parse_host(host)
    if not rest:
        return host, None
    port_text = rest[1:].strip(" \t") if rest[0] == ":" else ""
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad_request("malformed port")
    return host, int(port_text)


def parse_via(value: str) -> Via:
    """Parse one Via value."""
    simple = _SIMPLE_VIA.fullmatch(value)
    if simple is not None:
        port = int(simple[3]) if simple[3] else None
        if port is not None and not 0 < port < 65536:
            raise bad_request("malformed port")
        host = parse_host(simple[2])
        return Via(simple[1].upper(), host, port, parse_params(simple[4], "Via"))
    protocol = _SENT_PROTOCOL.match(value)
    if protocol is None:
        raise bad_request("malformed Via")
    if protocol[1].upper() != "SIP" or protocol[2] != "2.0":
        raise bad_request("Via is not SIP/2.0")
    rest = value[protocol.end() :]
    semi = rest.find(";")
    sent_by, params_text = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    sent_by = sent_by.strip(" \t")
    if not sent_by or " " in sent_by.replace(" :", ":").replace(": ", ":"):
        raise bad_request("malformed Via sent-by")
    host, port = _parse_hostport(sent_by.replace(" ", "").replace("\t", ""))
    return Via(protocol[3].upper(), host, port, parse_params(params_text, "Via"))


def parse_cseq(value: str) -> CSeq:
    """Parse ``CSeq: number method``."""
    number, _, method = value.partition(" ")
    method = method.strip(" \t")
    if not number.isdigit() or not number.isascii() or not _TOKEN.fullmatch(method):
        raise bad_request("malformed CSeq")
    if int(number) > limits.MAX_CSEQ:
        raise bad_request("CSeq number too large")
    return CSeq(int(number), method)


def parse_call_id(value: str) -> str:
    """Check a Call-ID: one word, no whitespace."""
    if not _CALL_ID.fullmatch(value):
        raise bad_request("malformed Call-ID")
    return value


def parse_max_forwards(value: str) -> int:
    """Parse Max-Forwards (0-255)."""
    if not value.isdigit() or not value.isascii() or int(value) > limits.MAX_MAX_FORWARDS:
        raise bad_request("malformed Max-Forwards")
    return int(value)


@functools.lru_cache(maxsize=4096)
def parse_name_addr(value: str) -> NameAddr:
    """Parse ``[display-name] <URI> *params`` or ``addr-spec *params``.

    Cached: one dialog's From and To recur in every request and response of
    it, and a phone's refreshes repeat its From, To and Contact; the result is
    immutable.
    """
    simple = _SIMPLE_NAME_ADDR.fullmatch(value)
    if simple is not None:
        _check_absolute_uri(simple[2])
        return NameAddr(simple[1], simple[2], parse_params(simple[3], "header"), True)
    text = value.strip(" \t")
    display: str | None = None
    if text.startswith('"'):
        quoted = _QUOTED.match(text)
        if quoted is None:
            raise bad_request("unterminated quoted display name")
        display = quoted.group()
        text = text[quoted.end() :].lstrip(" \t")
        if not text.startswith("<"):
            raise bad_request("quoted display name without <URI>")
    elif "<" in text:
        lt = text.index("<")
        words = text[:lt].split()
        if not all(_TOKEN.fullmatch(word) for word in words):
            raise bad_request("display name must be tokens or a quoted string")
        display = " ".join(words) or None
        text = text[lt:]
    if text.startswith("<"):
        gt = text.find(">")
        if gt < 0:
            raise bad_request("unterminated <URI>")
        uri = text[1:gt]
        if not uri or _WHITESPACE.search(uri):
            raise bad_request("whitespace inside <URI>")
        _check_absolute_uri(uri)
        return NameAddr(display, uri, parse_params(text[gt + 1 :], "header"), True)
    # addr-spec form: the URI ends at the first ';' or whitespace; what follows
    # are header parameters, and the URI may not carry '?' headers or commas.
    end = len(text)
    for stop in (";", " ", "\t"):
        found = text.find(stop)
        if found >= 0:
            end = min(end, found)
    uri = text[:end]
    if "?" in uri or "," in uri or not uri:
        raise bad_request("URI with headers or commas must be in <>")
    _check_absolute_uri(uri)
    return NameAddr(None, uri, parse_params(text[end:], "header"), False)


def parse_contact(value: str) -> NameAddr:
    """Parse a Contact value; ``*`` (with optional params) is allowed."""
    if value.strip(" \t").startswith("*"):
        return NameAddr(None, "*", parse_params(value.strip(" \t")[1:], "Contact"), False)
    return parse_name_addr(value)


def _check_absolute_uri(uri: str) -> None:
    scheme, colon, _ = uri.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise bad_request("URI without a scheme")
    if scheme.lower() in ("sip", "sips"):
        parse_sip_uri(uri)


@functools.lru_cache(maxsize=8192)
def parse_sip_uri(uri: str) -> SipUri:
    """Parse a sip:/sips: URI (RFC 3261 §19.1.1); raise 400 if malformed.

    Cached: the same Request-URIs and addresses of record recur on every
    refresh, and the result is immutable.
    """
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        raise SipError(416, "Unsupported URI Scheme")
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise bad_request("empty user in URI")
    headers = None
    if "?" in rest:
        rest, _, headers = rest.partition("?")
    semi = rest.find(";")
    hostport, params_text = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    if not hostport:
        raise bad_request("URI without a host")
    host, port = _parse_hostport(hostport)
    return SipUri(scheme, user, password, host, port, parse_params(params_text, "URI"), headers)
