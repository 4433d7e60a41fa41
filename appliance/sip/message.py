"""Lazy, byte-exact SIP messages.

Parsing finds the start line, splits the header section into fields (with
unfolding, compact names and case-insensitive names) and locates the body;
it decodes nothing else. Structured views (Via, CSeq, From/To, Contact...)
are computed on first use by :mod:`appliance.sip.grammar` and cached.

The text is decoded as Latin-1, which maps every byte to one character, so
field offsets are byte offsets and forwarding is done by splicing the
original bytes (:class:`Rewrite`), never by re-serializing an object model:
what we do not touch reaches the next hop exactly as it reached us.

Problems found while parsing are recorded on :attr:`Message.defect` rather
than raised, so the caller can still answer with the request's own Via,
From, To, Call-ID and CSeq.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from appliance.sip import limits
from appliance.sip.errors import SipError, bad_request, too_large
from appliance.sip.grammar import (
    CSeq,
    NameAddr,
    Via,
    parse_call_id,
    parse_contact,
    parse_cseq,
    parse_max_forwards,
    parse_name_addr,
    parse_via,
    split_commas,
)

#: RFC 3261 §7.3.3 and later RFCs' compact header names.
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_REQUEST_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) ([^ ]+) (SIP/\d+\.\d+)")
_VERSION = re.compile(r"SIP/\d+\.\d+")
_REQUEST_URI = re.compile(r'[A-Za-z][A-Za-z0-9+\-.]*:[^<>"\s]+')
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: ([^\r\n]*))?")


class HeaderField(NamedTuple):
    """One header field: canonical name, unfolded value, and its byte span.

    A named tuple rather than a frozen dataclass: a message has a dozen or
    more, and tuples are several times cheaper to build.
    """

    name: str
    value: str
    start: int
    end: int


_T = TypeVar("_T")


class _cached(Generic[_T]):  # noqa: N801 (used like a decorator)
    """A lock-free ``cached_property`` (3.11's takes a lock on every first read).

    A non-data descriptor: the first read stores the value in the instance's
    ``__dict__``, which later reads find before the descriptor.
    """

    def __init__(self, compute: Callable[[Message], _T]) -> None:
        self._compute = compute
        self._name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, message: Message, owner: type | None = None) -> _T:
        value = self._compute(message)
        message.__dict__[self._name] = value
        return value


class Message:
    """A SIP request or response backed by its bytes; see the module docstring."""

    def __init__(
        self,
        data: bytes,
        start_line: str,
        fields: list[HeaderField],
        by_name: dict[str, list[HeaderField]],
        body_start: int,
        body_end: int,
        defect: SipError | None,
    ) -> None:
        self.data = data
        self.start_line = start_line
        self.fields = fields
        #: Fields by canonical name, in order.
        self.by_name = by_name
        self.body_start = body_start
        self.body_end = body_end
        self.defect = defect
        self.method = ""
        self.uri = ""
        self.status = 0
        self.reason = ""

    @property
    def is_request(self) -> bool:
        """True for requests, False for responses."""
        return self.status == 0

    @property
    def body(self) -> bytes:
        """The body, exactly as Content-Length delimits it."""
        return self.data[self.body_start : self.body_end]

    @property
    def wire(self) -> bytes:
        """The whole message as received (trailing datagram bytes excluded)."""
        return self.data[: self.body_end]

    def all(self, name: str) -> list[HeaderField]:
        """Every field called ``name`` (lower-case long form), in order."""
        return self.by_name.get(name, [])

    def first(self, name: str) -> str | None:
        """The value of the first field called ``name``, if any."""
        found = self.by_name.get(name)
        return found[0].value if found else None

    def values(self, name: str) -> list[str]:
        """The comma-separated elements of every ``name`` field, in order."""
        return [item for field in self.all(name) for item in split_commas(field.value)]

    def raw(self, field: HeaderField) -> bytes:
        """The field's original bytes, folding and CRLF included."""
        return self.data[field.start : field.end]

    # Structured views of the headers routing needs, parsed on first use.
    # Each raises SipError(400) when the header is malformed.

    @_cached
    def vias(self) -> list[Via]:
        """The Via header values, top first."""
        return [parse_via(value) for value in self.values("via")]

    @_cached
    def top_via(self) -> Via:
        """The top Via value alone: a response is matched on it, and its other
        values (ours to remove, the rest to pass on) are never read here."""
        parsed = self.__dict__.get("vias")
        if parsed:
            return parsed[0]  # type: ignore[no-any-return]
        found = self.all("via")
        first = split_commas(found[0].value) if found else []
        if not first:
            raise bad_request("missing via")
        return parse_via(first[0])

    @_cached
    def cseq(self) -> CSeq:
        """The CSeq header."""
        return parse_cseq(self._single("cseq"))

    @_cached
    def call_id(self) -> str:
        """The Call-ID header."""
        return parse_call_id(self._single("call-id"))

    @_cached
    def from_(self) -> NameAddr:
        """The From header."""
        return parse_name_addr(self._single("from"))

    @_cached
    def to(self) -> NameAddr:
        """The To header."""
        return parse_name_addr(self._single("to"))

    @_cached
    def contacts(self) -> list[NameAddr]:
        """The Contact header values (a lone ``*`` parses as a NameAddr with uri ``*``)."""
        return [parse_contact(value) for value in self.values("contact")]

    @_cached
    def routes(self) -> list[NameAddr]:
        """The Route header values, top first."""
        return [parse_name_addr(value) for value in self.values("route")]

    @_cached
    def max_forwards(self) -> int | None:
        """Max-Forwards, or None when absent."""
        value = self.first("max-forwards")
        return None if value is None else parse_max_forwards(value)

    def _single(self, name: str) -> str:
        found = self.all(name)
        if not found:
            raise bad_request(f"missing {name}")
        if len(found) > 1:
            raise bad_request(f"more than one {name}")
        return found[0].value


def parse_datagram(data: bytes) -> Message:
    """Parse one UDP datagram.

    Without Content-Length the body is the rest of the datagram; with it,
    bytes beyond it are ignored (RFC 3261 §18.3) and a length larger than the
    datagram is a defect (400). A datagram lacking the blank line after the
    headers is read as all headers.
    """
    if len(data) > limits.MAX_DATAGRAM_BYTES:
        raise too_large("datagram")
    text = data.decode("latin-1")
    end = text.find("\r\n\r\n")
    if end == -1:
        head = text.rstrip("\r\n")
        body_start = len(data)
    else:
        head = text[:end]
        body_start = end + 4
    message = parse_head(data, head, body_start)
    length = content_length(message)
    if length is None:
        message.body_end = len(data)
    elif body_start + length > len(data):
        message.body_end = len(data)
        message.defect = message.defect or bad_request("Content-Length exceeds the datagram")
    else:
        message.body_end = body_start + length
    return message


def parse_head(data: bytes, head: str, body_start: int) -> Message:
    """Parse the start line and header fields of ``head`` (``data`` decoded, blank line
    excluded). The body is left empty; the caller sets ``body_end``."""
    if len(head) > limits.MAX_HEADER_SECTION_BYTES:
        raise too_large("header section")
    defect: SipError | None = None
    lines = head.split("\r\n")
    start_line = lines[0]
    fields: list[HeaderField] = []
    by_name: dict[str, list[HeaderField]] = {}
    pos = len(start_line) + 2
    names = _NAMES
    folding_allowed = False
    for line in lines[1:]:
        end = pos + len(line) + 2
        colon = line.find(":")
        # A name seen before, as written, is the usual case. A continuation line
        # never is: its leading whitespace keeps it out of _NAMES.
        name = names.get(line[:colon]) if colon > 0 else None
        if name is None:
            if line and line[0] in " \t":
                if folding_allowed:
                    last = fields[-1]
                    extra = line.strip(" \t")
                    value = " ".join(part for part in (last.value, extra) if part)
                    fields[-1] = folded = HeaderField(last.name, value, last.start, end)
                    by_name[last.name][-1] = folded
                else:
                    defect = defect or bad_request("continuation line before any header")
                pos = end
                continue
            name = _canonical_name(line[:colon]) if colon > 0 else None
            if name is None:
                defect = defect or bad_request("malformed header line")
                folding_allowed = False
                pos = end
                continue
        field = _new_field(HeaderField, (name, line[colon + 1 :].strip(" \t"), pos, end))
        fields.append(field)
        same = by_name.get(name)
        if same is None:
            by_name[name] = [field]
        else:
            same.append(field)
        folding_allowed = True
        pos = end
    if fields and fields[-1].end > len(data):
        last = fields[-1]
        fields[-1] = clipped = last._replace(end=len(data))
        by_name[last.name][-1] = clipped
    for field in fields:
        if len(field.value) > limits.MAX_LINE_BYTES:
            defect = defect or too_large(f"{field.name} header")
    if len(fields) > limits.MAX_HEADERS:
        defect = defect or bad_request("too many header fields")
    message = Message(data, start_line, fields, by_name, body_start, body_start, defect)
    _parse_start_line(message)
    return message


#: Builds a HeaderField from a tuple without the Python frame of its ``__new__``
#: (parse_head makes one per header line of every message).
_new_field = tuple.__new__

#: Header names seen, as written, mapped to their canonical form. Bounded, so
#: a peer inventing names cannot grow it.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 2048


def _canonical_name(raw: str) -> str | None:
    stripped = raw.rstrip(" \t")
    if not TOKEN.fullmatch(stripped):
        return None
    lower = stripped.lower()
    name = COMPACT_FORMS.get(lower, lower)
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[raw] = name
    return name


def _parse_start_line(message: Message) -> None:
    line = message.start_line
    if line.startswith("SIP/"):
        status = _STATUS_LINE.fullmatch(line)
        if status is None:
            # A response is never answered: a malformed one is dropped.
            raise SipError(400, "malformed status line")
        message.status = int(status[1])
        message.reason = status[2] or ""
        return
    request = _REQUEST_LINE.fullmatch(line)
    if request is None:
        message.defect = message.defect or bad_request("malformed Request-Line")
        return
    message.method, message.uri = request[1], request[2]
    if not _REQUEST_URI.fullmatch(message.uri):
        message.defect = message.defect or bad_request("malformed Request-URI")
    if request[3] != "SIP/2.0" and _VERSION.fullmatch(request[3]):
        message.defect = message.defect or SipError(505, "Version Not Supported")


def content_length(message: Message) -> int | None:
    """The Content-Length value; a defect if repeated, malformed or too large."""
    found = message.all("content-length")
    if not found:
        return None
    if len(found) > 1:
        message.defect = message.defect or bad_request("more than one Content-Length")
        return None
    value = found[0].value
    if not value.isdigit() or not value.isascii():
        message.defect = message.defect or bad_request("malformed Content-Length")
        return None
    length = int(value)
    if length > limits.MAX_BODY_BYTES:
        message.defect = message.defect or too_large("body")
        return None
    return length


class Rewrite:
    """Edits to a message, applied by splicing its original bytes.

    Unedited, :meth:`to_bytes` returns :attr:`Message.wire` exactly. Each edit
    touches only its own span; the body is replaced only through
    :meth:`set_body`, which also rewrites Content-Length.
    """

    def __init__(self, message: Message) -> None:
        self._message = message
        self._edits: list[tuple[int, int, bytes]] = []
        self._body: bytes | None = None

    def replace_start_line(self, line: str) -> Rewrite:
        """Replace the Request-Line or Status-Line."""
        self._edits.append((0, len(self._message.start_line), line.encode("latin-1")))
        return self

    def insert_first(self, name: str, value: str) -> Rewrite:
        """Add a field above all the others (a proxy's Via, Record-Route)."""
        at = len(self._message.start_line) + 2
        self._edits.append((at, at, _field_bytes(name, value)))
        return self

    def replace(self, field: HeaderField, value: str) -> Rewrite:
        """Replace one field's value (written in its long name)."""
        self._edits.append((field.start, field.end, _field_bytes(_display_name(field), value)))
        return self

    def remove(self, field: HeaderField) -> Rewrite:
        """Remove one field."""
        self._edits.append((field.start, field.end, b""))
        return self

    def set_body(self, body: bytes) -> Rewrite:
        """Replace the body and its Content-Length."""
        self._body = body
        return self

    def to_bytes(self) -> bytes:
        """The edited message."""
        message = self._message
        edits = list(self._edits)
        body = message.body if self._body is None else self._body
        if self._body is not None:
            lengths = message.all("content-length")
            if lengths:
                edits.append(
                    (
                        lengths[0].start,
                        lengths[0].end,
                        _field_bytes("Content-Length", str(len(body))),
                    )
                )
            else:
                end = message.body_start - 2
                edits.append((end, end, _field_bytes("Content-Length", str(len(body)))))
        edits.sort(key=lambda edit: (edit[0], edit[1]))
        out: list[bytes] = []
        pos = 0
        head = message.data[: message.body_start]
        for start, end, replacement in edits:
            if start < pos:
                raise ValueError("overlapping edits")
            out.append(head[pos:start])
            out.append(replacement)
            pos = end
        out.append(head[pos:])
        out.append(body)
        return b"".join(out)


def _field_bytes(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("latin-1")


_LONG_NAMES = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "rack": "RAck",
    "rseq": "RSeq",
    "www-authenticate": "WWW-Authenticate",
}


def _display_name(field: HeaderField) -> str:
    return header_name(field.name)


def header_name(name: str) -> str:
    """The conventional spelling of a canonical (lower-case) header name."""
    return _LONG_NAMES.get(name) or "-".join(part.capitalize() for part in name.split("-"))
