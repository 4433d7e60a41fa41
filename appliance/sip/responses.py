"""Building responses to requests (RFC 3261 §8.2.6), and RFC 3581 Via marking.

A response copies the request's Via values (the top one marked with
``received`` and ``rport``), From, To (tagged when we answer), Call-ID and
CSeq. It is always sent back to the packet's source address, whatever the
Via says (symmetric response routing; never the broadcast sent-by of RFC
4475's bcast test).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from appliance.sip.errors import SipError
from appliance.sip.grammar import split_commas
from appliance.sip.message import Message, header_name

#: The Server header: the product, never its version.
SERVER = "Telemancer"
#: Headers a response copies from its request (RFC 3261 §8.2.6.2), as spelled.
_COPIED = tuple((name, header_name(name)) for name in ("from", "to", "call-id", "cseq"))


def mark_via(value: str, source_ip: str, source_port: int) -> str:
    """The top Via with ``received`` (RFC 3261 §18.2.1) and ``rport`` (RFC 3581) filled in."""
    params = value.split(";")
    out = [params[0]]
    has_received = False
    for param in params[1:]:
        name = param.split("=", 1)[0].strip(" \t").lower()
        if name == "rport":
            out.append(f"rport={source_port}")
        elif name == "received":
            has_received = True
            out.append(f"received={source_ip}")
        else:
            out.append(param)
    if not has_received:
        out.insert(1, f"received={source_ip}")
    return ";".join(out)


def to_tag_for(message: Message) -> str:
    """A stable To tag for our own answers, so retransmitted answers match."""
    seed = f"{message.first('call-id')}|{message.first('from')}|{message.first('cseq')}"
    return hashlib.sha256(seed.encode("latin-1")).hexdigest()[:16]


def response(
    request: Message,
    status: int,
    reason: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    source: tuple[str, int] | None = None,
    body: bytes = b"",
) -> bytes:
    """The bytes of a response to ``request``.

    ``source`` is the packet's (ip, port), for marking the top Via. Headers
    the request lacks (a malformed request may lack several) are left out.
    """
    lines = [f"SIP/2.0 {status} {reason}"]
    vias = [v for f in request.all("via") for v in split_commas(f.value)]
    if vias and source is not None:
        vias[0] = mark_via(vias[0], source[0], source[1])
    lines += [f"Via: {via}" for via in vias]
    for name, spelled in _COPIED:
        for field in request.all(name):
            value = field.value
            if name == "to" and status > 100 and not _has_tag(request):
                value = f"{value};tag={to_tag_for(request)}"
            lines.append(f"{spelled}: {value}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Server: {SERVER}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _has_tag(request: Message) -> bool:
    try:
        return request.to.tag is not None
    except SipError:
        return True  # a To we cannot parse is copied as it came
