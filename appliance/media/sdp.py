"""Session descriptions (RFC 8866, formerly RFC 4566) as the relay needs them, and the
rewrite that gives each call leg its own (RFC 3264 offer/answer).

Every call's media passes through the relay, so neither party may learn the other's
addresses, ports or keys: each leg gets an SDP naming our relay address and ports and
carrying keys made for that leg alone. :func:`rewrite_for_leg` builds it from the other
leg's SDP. It keeps what the endpoints negotiate with each other (codecs, direction,
bandwidth, attributes we do not know, in their order) and replaces or drops what belongs
to the transport (``o=``, ``c=``, ports, ``a=rtcp``, keys, ICE, DTLS).

Parsing splits the lines and checks the few we act on (``v=``, ``o=``, ``s=``, ``m=``,
``c=``, ``a=rtcp``); everything else is kept as text and read on demand. Bytes are
decoded as Latin-1, which maps every byte to one character, so lines we do not touch
leave exactly as they came (UTF-8 text included).

Statuses (:class:`SdpError`): a description we cannot read is malformed, 400. One we can
read but will not relay is 488 Not Acceptable Here, which RFC 3261 §21.4.26 gives for a
session description the server cannot accept although another might: a network type
other than ``IN``, an address type other than ``IP4``/``IP6``, a type letter RFC 8866
does not define (which §5 says to reject rather than guess), and the size limits below
(they are our policy, not a grammar rule).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from appliance.sip.errors import SipError

#: Largest description we parse. Offers from phones are 0.5-2 KiB; a WebRTC offer with
#: audio, video and a dozen candidates about 6 KiB.
MAX_SDP_BYTES = 32 * 1024
#: Most lines in one description (bounds the work per offer whatever the line lengths).
MAX_SDP_LINES = 1000
#: Most media sections (``m=`` lines) in one description: each relayed one costs two
#: ports per leg; audio, video, slides and a data channel are four.
MAX_MEDIA_SECTIONS = 16
#: Longest numeric field (session id, version, port): 20 digits hold any 64-bit value
#: and keep ``int()`` away from huge inputs.
_MAX_DIGITS = 20

#: Line types RFC 8866 §5 allows before the first ``m=``, and inside a media section.
_SESSION_TYPES = frozenset("vosiuepcbtrzka")
_MEDIA_TYPES = frozenset("icbka")
#: ICE (RFC 8839) attributes: we relay media ourselves and do not terminate ICE.
ICE_ATTRIBUTES = frozenset(
    {
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "ice-mismatch",
        "ice-pacing",
        "candidate",
        "end-of-candidates",
        "remote-candidates",
    }
)
#: DTLS-SRTP (RFC 8122, RFC 8842) attributes: we do not terminate DTLS either.
DTLS_ATTRIBUTES = frozenset({"fingerprint", "setup", "tls-id"})
#: Attributes that carry keys (SDES RFC 4568, MIKEY RFC 4567): never copied between legs.
KEY_ATTRIBUTES = frozenset({"crypto", "key-mgmt"})
_DROPPED = ICE_ATTRIBUTES | DTLS_ATTRIBUTES | KEY_ATTRIBUTES
#: RTP profiles, each with its (plain, SRTP) form; DTLS profiles map to SDES ones.
_PROFILES = {
    "RTP/AVP": ("RTP/AVP", "RTP/SAVP"),
    "RTP/SAVP": ("RTP/AVP", "RTP/SAVP"),
    "UDP/TLS/RTP/SAVP": ("RTP/AVP", "RTP/SAVP"),
    "RTP/AVPF": ("RTP/AVPF", "RTP/SAVPF"),
    "RTP/SAVPF": ("RTP/AVPF", "RTP/SAVPF"),
    "UDP/TLS/RTP/SAVPF": ("RTP/AVPF", "RTP/SAVPF"),
}
_HOLD_ADDRESS = "0.0.0.0"  # noqa: S104 (RFC 2543 hold marker, not a bind address)


class SdpError(SipError):
    """A description we refuse; ``status`` is 400 (malformed) or 488 (not acceptable
    here), as the module docstring explains. The reason never echoes a key."""


def _malformed(why: str) -> SdpError:
    return SdpError(400, f"Bad Request (SDP: {why})")


def _not_acceptable(why: str) -> SdpError:
    return SdpError(488, f"Not Acceptable Here ({why})")


class Direction(StrEnum):
    """RFC 3264 §5.1 media direction attributes."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


_DIRECTIONS = frozenset(Direction)


class SdpLine(NamedTuple):
    """One ``<type>=<value>`` line; ``value`` is exactly as received (no CR/LF)."""

    kind: str
    value: str


class Connection(NamedTuple):
    """``c=IN <address type> <address>`` (a multicast ``/ttl`` suffix is dropped)."""

    address_type: str
    address: str


class Rtcp(NamedTuple):
    """RFC 3605 ``a=rtcp:<port> [IN <address type> <address>]``."""

    port: int
    connection: Connection | None


class Origin(NamedTuple):
    """The ``o=`` line: who made the description and which version of it this is."""

    username: str
    session_id: int
    version: int
    address_type: str
    address: str

    @classmethod
    def for_address(
        cls, address: str, session_id: int, version: int, username: str = "-"
    ) -> Origin:
        """Our own origin for one leg. The caller keeps ``session_id`` fixed for the
        leg and passes a ``version`` one higher each time that leg's SDP changes
        (RFC 3264 §8); ``address`` must be an IP literal."""
        if session_id < 0 or version < 0 or not username or any(c.isspace() for c in username):
            raise ValueError("bad origin")
        return cls(username, session_id, version, _address_type(address), address)

    @property
    def value(self) -> str:
        """The line's text after ``o=``."""
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"IN {self.address_type} {self.address}"
        )


class Fingerprint(NamedTuple):
    """RFC 8122 ``a=fingerprint:<hash function> <fingerprint>``."""

    hash_function: str
    fingerprint: str


class Ice(NamedTuple):
    """The ICE attributes found at one level (values as received)."""

    ufrag: str | None
    pwd: str | None
    options: tuple[str, ...]
    candidates: tuple[str, ...]
    remote_candidates: tuple[str, ...]
    end_of_candidates: bool
    lite: bool


class Dtls(NamedTuple):
    """The DTLS-SRTP attributes found at one level."""

    fingerprints: tuple[Fingerprint, ...]
    setup: str | None
    tls_id: str | None


def _attribute_name(value: str) -> str:
    """The lower-cased name of an attribute line's value (``rtcp-mux``, ``crypto``...).
    Case-insensitive on purpose: ``a=Crypto`` must be dropped like ``a=crypto``."""
    return value.partition(":")[0].strip().lower()


class _Level:
    """Accessors shared by the session level and media sections, over ``lines``."""

    __slots__ = ()
    lines: tuple[SdpLine, ...]

    def attributes(self, name: str) -> tuple[str, ...]:
        """The values of every ``a=<name>[:value]`` at this level, in order (``""`` for a
        flag); ``name`` compares case-insensitively."""
        name = name.lower()
        return tuple(
            line.value.partition(":")[2]
            for line in self.lines
            if line.kind == "a" and _attribute_name(line.value) == name
        )

    def has_attribute(self, name: str) -> bool:
        """Whether ``a=<name>`` appears at this level."""
        name = name.lower()
        return any(line.kind == "a" and _attribute_name(line.value) == name for line in self.lines)

    @property
    def connection(self) -> Connection | None:
        """This level's own ``c=`` (the first, if several)."""
        for line in self.lines:
            if line.kind == "c":
                return _parse_connection(line.value.split())
        return None

    @property
    def direction(self) -> Direction | None:
        """This level's own direction attribute (the first), if any."""
        for line in self.lines:
            if line.kind == "a" and (name := _attribute_name(line.value)) in _DIRECTIONS:
                return Direction(name)
        return None

    @property
    def crypto(self) -> tuple[str, ...]:
        """The raw ``a=crypto`` values (RFC 4568), parsed by the key module."""
        return self.attributes("crypto")

    @property
    def ice(self) -> Ice:
        """The ICE attributes at this level."""
        ufrag, pwd, options = (self.attributes(n) for n in ("ice-ufrag", "ice-pwd", "ice-options"))
        return Ice(
            ufrag=ufrag[0] if ufrag else None,
            pwd=pwd[0] if pwd else None,
            options=tuple(tag for value in options for tag in value.split()),
            candidates=self.attributes("candidate"),
            remote_candidates=self.attributes("remote-candidates"),
            end_of_candidates=self.has_attribute("end-of-candidates"),
            lite=self.has_attribute("ice-lite"),
        )

    @property
    def dtls(self) -> Dtls:
        """The DTLS-SRTP attributes at this level."""
        fingerprints = []
        for value in self.attributes("fingerprint"):
            hash_function, _, fingerprint = value.strip().partition(" ")
            fingerprints.append(Fingerprint(hash_function.lower(), fingerprint.strip()))
        setup, tls_id = self.attributes("setup"), self.attributes("tls-id")
        return Dtls(
            tuple(fingerprints),
            setup[0].strip() if setup else None,
            tls_id[0].strip() if tls_id else None,
        )


@dataclass(frozen=True, slots=True)
class MediaSection(_Level):
    """One ``m=`` line and the lines after it, in order."""

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: tuple[str, ...]
    lines: tuple[SdpLine, ...]

    @property
    def is_disabled(self) -> bool:
        """Port 0: the stream is rejected or removed (RFC 3264 §5.1, §8.2)."""
        return self.port == 0

    @property
    def m_value(self) -> str:
        """The ``m=`` line's text after ``m=``."""
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join((self.media, str(port), self.proto, *self.formats))

    @property
    def rtcp(self) -> Rtcp | None:
        """The RFC 3605 ``a=rtcp`` attribute, if any."""
        values = self.attributes("rtcp")
        return _parse_rtcp(values[0]) if values else None

    @property
    def rtcp_mux(self) -> bool:
        """Whether ``a=rtcp-mux`` (RFC 5761) is present."""
        return self.has_attribute("rtcp-mux")


@dataclass(frozen=True, slots=True)
class SessionDescription(_Level):
    """A parsed description: the session-level lines (``v=`` first) and the media
    sections. Media-level values fall back on session-level ones through the
    ``*_of`` methods."""

    lines: tuple[SdpLine, ...]
    media: tuple[MediaSection, ...]

    @property
    def origin(self) -> Origin:
        """The ``o=`` line."""
        return _parse_origin(next(line.value for line in self.lines if line.kind == "o"))

    def connection_of(self, section: MediaSection) -> Connection | None:
        """Where ``section`` receives: its own ``c=``, else the session's."""
        return section.connection or self.connection

    def direction_of(self, section: MediaSection) -> Direction:
        """``section``'s direction: its own, else the session's, else sendrecv."""
        return section.direction or self.direction or Direction.SENDRECV

    def ice_of(self, section: MediaSection) -> Ice:
        """ICE for ``section``, with session-level credentials, options and lite."""
        own, session = section.ice, self.ice
        return own._replace(
            ufrag=own.ufrag or session.ufrag,
            pwd=own.pwd or session.pwd,
            options=own.options or session.options,
            lite=session.lite,
        )

    def dtls_of(self, section: MediaSection) -> Dtls:
        """DTLS-SRTP for ``section``, falling back on session-level attributes."""
        own, session = section.dtls, self.dtls
        return Dtls(
            own.fingerprints or session.fingerprints,
            own.setup or session.setup,
            own.tls_id or session.tls_id,
        )

    def is_on_hold(self, section: MediaSection) -> bool:
        """Whether the sender of this description has put ``section`` on hold: its
        direction is sendonly or inactive (RFC 3264 §8.4), or it receives at 0.0.0.0
        (RFC 2543). A disabled (port 0) stream is not on hold: it is off."""
        if section.is_disabled:
            return False
        if self.direction_of(section) in (Direction.SENDONLY, Direction.INACTIVE):
            return True
        return _held_by_address(self, section)

    def encode(self) -> bytes:
        """The description as bytes, every line ending in CRLF (RFC 8866 §5)."""
        out = [f"{line.kind}={line.value}" for line in self.lines]
        for section in self.media:
            out.append(f"m={section.m_value}")
            out.extend(f"{line.kind}={line.value}" for line in section.lines)
        out.append("")
        return "\r\n".join(out).encode("latin-1")


def _held_by_address(description: SessionDescription, section: MediaSection) -> bool:
    connection = description.connection_of(section)
    return connection is not None and connection.address == _HOLD_ADDRESS


def _number(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_DIGITS:
        raise _malformed(f"bad {what}")
    return int(text)


def _port(text: str, what: str) -> int:
    port = _number(text, what)
    if port > 65535:
        raise _malformed(f"{what} out of range")
    return port


def _parse_connection(fields: Sequence[str]) -> Connection:
    """``IN IP4|IP6 <address>`` already split on whitespace."""
    if len(fields) != 3:
        raise _malformed("bad c= line")
    network_type, address_type, address = fields
    if network_type != "IN":
        raise _not_acceptable("network type is not IN")
    if address_type not in ("IP4", "IP6"):
        raise _not_acceptable("address type is not IP4 or IP6")
    address = address.partition("/")[0]
    if not address:
        raise _malformed("bad c= address")
    return Connection(address_type, address)


def _parse_rtcp(value: str) -> Rtcp:
    fields = value.split()
    if len(fields) not in (1, 4):
        raise _malformed("bad a=rtcp")
    connection = _parse_connection(fields[1:]) if len(fields) == 4 else None
    return Rtcp(_port(fields[0], "a=rtcp port"), connection)


def _parse_origin(value: str) -> Origin:
    fields = value.split()
    if len(fields) != 6:
        raise _malformed("bad o= line")
    username, session_id, version = fields[:3]
    connection = _parse_connection(fields[3:])
    return Origin(
        username,
        _number(session_id, "o= session id"),
        _number(version, "o= version"),
        connection.address_type,
        connection.address,
    )


def _parse_m_line(value: str, lines: list[SdpLine]) -> MediaSection:
    fields = value.split()
    if len(fields) < 3:
        raise _malformed("bad m= line")
    media, port_text, proto, *formats = fields
    port_text, slash, count_text = port_text.partition("/")
    port = _port(port_text, "m= port")
    count = _number(count_text, "m= port count") if slash else None
    if count == 0 or (port != 0 and not formats):
        raise _malformed("bad m= line")
    return MediaSection(media, port, count, proto, tuple(formats), tuple(lines))


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse a session description; CRLF or bare LF line ends, blank lines ignored.

    Raises :class:`SdpError` (400 or 488, see the module docstring). Every accessor of
    the result that can fail (``origin``, ``connection``, ``rtcp``) has been checked,
    so reading them later cannot raise.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_SDP_BYTES:
        raise _not_acceptable(f"SDP larger than {MAX_SDP_BYTES} bytes")
    text = raw.decode("latin-1")
    if "\0" in text:
        raise _malformed("NUL byte")
    raw_lines = text.split("\n")
    if len(raw_lines) - (raw_lines[-1] == "") > MAX_SDP_LINES:
        raise _not_acceptable(f"SDP longer than {MAX_SDP_LINES} lines")
    session: list[SdpLine] = []
    sections: list[tuple[str, list[SdpLine]]] = []
    current = session
    for raw_line in raw_lines:
        line = raw_line.removesuffix("\r")
        if not line:
            continue
        kind = line[0]
        if "\r" in line or line[1:2] != "=" or not (kind.isascii() and kind.isalpha()):
            raise _malformed("a line is not <letter>=<value>")
        if kind not in _SESSION_TYPES and kind != "m":
            raise _not_acceptable(f"unknown SDP line type {kind!r}")
        if not session and kind != "v":
            raise _malformed("missing v= (it must come first)")
        if kind == "m":
            if len(sections) == MAX_MEDIA_SECTIONS:
                raise _not_acceptable(f"more than {MAX_MEDIA_SECTIONS} media sections")
            current = []
            sections.append((line[2:], current))
            continue
        if current is not session and kind not in _MEDIA_TYPES:
            raise _malformed(f"{kind}= inside a media section")
        current.append(SdpLine(kind, line[2:]))
    if not session:
        raise _malformed("missing v= (it must come first)")
    for kind in "vos":
        count = sum(line.kind == kind for line in session)
        if count != 1:
            raise _malformed(f"{'missing' if count == 0 else 'more than one'} {kind}=")
    if session[0].value.strip() != "0":
        raise _malformed("SDP version is not 0")
    description = SessionDescription(
        tuple(session), tuple(_parse_m_line(value, lines) for value, lines in sections)
    )
    _ = description.origin
    session_connection = description.connection
    for index, section in enumerate(description.media, 1):
        if section.connection is None and session_connection is None and section.port:
            raise _malformed(f"no c= for media section {index}")
        _ = section.rtcp
    return description


# Rewriting ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _address_type(address: str) -> str:
    """IP4 or IP6 for an IP literal; ValueError otherwise (our own configuration:
    the few addresses it sees are cached, as it runs several times per call)."""
    return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"


def _check_line_text(text: str) -> None:
    if not text.isascii() or not text.isprintable():
        raise ValueError("SDP line text must be printable ASCII")


@dataclass(frozen=True, slots=True)
class MediaRewrite:
    """What one media section becomes on the other leg: our side of the relay.

    ``rtcp_port`` defaults to ``port + 1``; with ``rtcp_mux`` RTCP shares the RTP port
    and no ``a=rtcp`` is written. ``srtp`` picks RTP/SAVP(F) over RTP/AVP(F) and then
    needs ``crypto``: the ``a=crypto`` values made for the leg this SDP goes to.
    Crypto lines on RTP/AVP are a best-effort SRTP offer (the peer may answer
    plain RTP), which an ``optional`` leg makes.
    """

    address: str
    port: int
    rtcp_port: int | None = None
    rtcp_mux: bool = False
    srtp: bool = False
    crypto: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _address_type(self.address)
        if not 0 < self.port <= 65535 or not 0 < self.rtcp <= 65535:
            raise ValueError("port out of range")
        if self.srtp and not self.crypto:
            # SRTP without keys cannot start.
            raise ValueError("srtp needs crypto lines")
        for value in self.crypto:
            _check_line_text(value)

    @property
    def rtcp(self) -> int:
        """Our RTCP port (ignored with ``rtcp_mux``)."""
        return self.port + 1 if self.rtcp_port is None else self.rtcp_port


def advertised_proto(proto: str, srtp: bool) -> str:
    """The profile to write for ``proto``: SAVP/AVP chosen by ``srtp``, the feedback
    (F) variant kept, DTLS profiles (UDP/TLS/RTP/...) turned into SDES ones since we
    do not terminate DTLS. Non-RTP protocols (``udptl`` for T.38...) pass unchanged
    and cannot be made SRTP (ValueError)."""
    pair = _PROFILES.get(proto.upper())
    if pair is None:
        if srtp:
            raise ValueError(f"no SRTP form of {proto}")
        return proto
    return pair[srtp]


def _connection_line(address: str) -> SdpLine:
    return SdpLine("c", f"IN {_address_type(address)} {address}")


def _keep(line: SdpLine) -> bool:
    """False for lines never copied to another leg: keys, ICE and DTLS."""
    if line.kind == "k":
        return False  # RFC 8866 §5.12 (obsolete) encryption key
    return line.kind != "a" or _attribute_name(line.value) not in _DROPPED


def _rewrite_session_lines(lines: Iterable[SdpLine], origin: Origin) -> list[SdpLine]:
    out: list[SdpLine] = []
    connection_done = False
    for line in lines:
        if line.kind == "o":
            out.append(SdpLine("o", origin.value))
        elif line.kind == "c":
            if not connection_done:
                out.append(_connection_line(origin.address))
                connection_done = True
        elif _keep(line):
            out.append(line)
    return out


def _disabled(section: MediaSection, rewrite: MediaRewrite | None, address: str) -> MediaSection:
    """A port-0 section: formats kept, profile mapped, no keys, ICE, DTLS or a=rtcp, and
    the peer's address replaced (it would leak even on a dead stream)."""
    lines = []
    for line in section.lines:
        if line.kind == "c":
            lines.append(_connection_line(address))
        elif _keep(line) and not (line.kind == "a" and _attribute_name(line.value) == "rtcp"):
            lines.append(line)
    proto = section.proto if rewrite is None else advertised_proto(section.proto, rewrite.srtp)
    return MediaSection(section.media, 0, None, proto, section.formats, tuple(lines))


def _hold_direction(description: SessionDescription, section: MediaSection) -> Direction | None:
    """The direction that carries an RFC 2543 hold (c=0.0.0.0) once ``c=`` names us:
    the holder does not want media, so sendrecv becomes sendonly and recvonly inactive."""
    if not _held_by_address(description, section):
        return None
    direction = description.direction_of(section)
    held = {Direction.SENDRECV: Direction.SENDONLY, Direction.RECVONLY: Direction.INACTIVE}
    return held.get(direction)


def _rewrite_section(
    description: SessionDescription, section: MediaSection, rewrite: MediaRewrite, origin: Origin
) -> MediaSection:
    hold = _hold_direction(description, section)
    out: list[SdpLine] = []
    crypto_at: int | None = None
    connection_done = rtcp_done = mux_done = direction_done = False
    for line in section.lines:
        name = _attribute_name(line.value) if line.kind == "a" else ""
        if line.kind == "c":
            if not connection_done:
                out.append(_connection_line(rewrite.address))
                connection_done = True
        elif name in KEY_ATTRIBUTES:
            crypto_at = len(out) if crypto_at is None else crypto_at
        elif not _keep(line):
            pass
        elif name == "rtcp":
            if not rewrite.rtcp_mux and not rtcp_done:
                out.append(SdpLine("a", f"rtcp:{rewrite.rtcp}"))
                rtcp_done = True
        elif name in ("rtcp-mux", "rtcp-mux-only"):
            if rewrite.rtcp_mux:
                out.append(line)
                mux_done = mux_done or name == "rtcp-mux"
        elif hold is not None and name in _DIRECTIONS:
            if not direction_done:
                out.append(SdpLine("a", hold.value))
                direction_done = True
        else:
            out.append(line)
    if rewrite.rtcp_mux and not mux_done:
        out.append(SdpLine("a", "rtcp-mux"))
    if not rewrite.rtcp_mux and not rtcp_done and rewrite.rtcp != rewrite.port + 1:
        out.append(SdpLine("a", f"rtcp:{rewrite.rtcp}"))
    if hold is not None and not direction_done:
        out.append(SdpLine("a", hold.value))
    at = len(out) if crypto_at is None else crypto_at
    out[at:at] = [SdpLine("a", f"crypto:{value}") for value in rewrite.crypto]
    if not connection_done and rewrite.address != origin.address:
        at = 0
        while at < len(out) and out[at].kind == "i":
            at += 1
        out.insert(at, _connection_line(rewrite.address))
    proto = advertised_proto(section.proto, rewrite.srtp)
    return MediaSection(section.media, rewrite.port, None, proto, section.formats, tuple(out))


def rewrite_for_leg(
    description: SessionDescription, origin: Origin, media: Sequence[MediaRewrite | None]
) -> SessionDescription:
    """The description to send on the other leg, in place of ``description``.

    ``media`` has one entry per media section. ``None`` writes the section disabled
    (port 0), which is also what a section already at port 0 stays, whatever its entry.
    Written: ``origin`` as ``o=``; every ``c=`` with our address (the session's with
    ``origin.address``); ports, ``a=rtcp``/``a=rtcp-mux`` and the profile per entry;
    each entry's crypto lines where the section's first key line was (else last).
    Dropped: every input key line (``a=crypto``, ``a=key-mgmt``, ``k=``), ICE and DTLS
    attributes. Kept, in order: everything else (codecs, direction, bandwidth, unknown
    attributes). An RFC 2543 hold (``c=0.0.0.0``) becomes a direction attribute,
    since our address replaces 0.0.0.0. Raises ValueError on a caller mistake.
    """
    if len(media) != len(description.media):
        raise ValueError("one MediaRewrite (or None) per media section")
    _address_type(origin.address)
    sections = tuple(
        _disabled(section, rewrite, origin.address)
        if section.is_disabled or rewrite is None
        else _rewrite_section(description, section, rewrite, origin)
        for section, rewrite in zip(description.media, media, strict=True)
    )
    return SessionDescription(tuple(_rewrite_session_lines(description.lines, origin)), sections)
