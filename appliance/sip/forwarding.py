"""Building the messages a proxy sends on its own account, and editing the ones
it forwards, by splicing bytes (:class:`~appliance.sip.message.Rewrite`)."""

from __future__ import annotations

import secrets

from appliance.sip import digest
from appliance.sip.grammar import split_commas
from appliance.sip.message import Message, Rewrite, parse_datagram
from appliance.sip.responses import mark_via


def strip_for_forwarding(
    message: Message,
    rewrite: Rewrite,
    *,
    source: tuple[str, int],
    keep_routes: bool = False,
) -> None:
    """Decrement Max-Forwards, drop credentials meant for us and our own Route, and
    fill ``received``/``rport`` in the sender's Via from its ``source`` address
    (RFC 3261 §18.2.1, RFC 3581 §4), as the next hops will see it."""
    top = message.all("via")[0]
    values = split_commas(top.value)
    values[0] = mark_via(values[0], source[0], source[1])
    rewrite.replace(top, ", ".join(values))
    max_forwards = message.all("max-forwards")
    value = (message.max_forwards or 70) - 1
    if max_forwards:
        rewrite.replace(max_forwards[0], str(value))
    else:
        rewrite.insert_first("Max-Forwards", str(value))
    for field_ in message.all("proxy-authorization"):
        rewrite.remove(field_)
    if not keep_routes:
        for route in message.all("route"):
            rewrite.remove(route)


def without_top_via(message: Message, cseq: str | None = None, body: bytes | None = None) -> bytes:
    """A response with our Via removed, for the next hop up; ``cseq`` (the
    request's own, as it reached us) replaces the CSeq when we re-sent the
    request with another number (answering a carrier's challenge); ``body``
    replaces the body (see :func:`with_body`)."""
    first = message.all("via")[0]
    values = [v.strip() for v in first.value.split(",")]
    rewrite = Rewrite(message)
    if len(values) > 1:
        rewrite.replace(first, ", ".join(values[1:]))
    else:
        rewrite.remove(first)
    cseq_fields = message.all("cseq")
    if cseq is not None and cseq_fields and cseq_fields[0].value != cseq:
        rewrite.replace(cseq_fields[0], cseq)
    if body is not None:
        with_body(message, rewrite, body)
    return rewrite.to_bytes()


def with_body(message: Message, rewrite: Rewrite, body: bytes) -> None:
    """Replace the body: the SDP written for the other leg, or nothing (``b""``,
    Content-Type removed too) when a peer's SDP must not reach the other leg."""
    rewrite.set_body(body)
    if not body:
        for field_ in message.all("content-type"):
            rewrite.remove(field_)


SDP_TYPE = "application/sdp"


def is_sdp(message: Message) -> bool:
    """Whether ``message`` carries a session description (addresses and keys of
    its sender's leg, never to be passed on as it is)."""
    content_type = (message.first("content-type") or "").split(";")[0].strip().lower()
    return bool(message.body) and content_type == SDP_TYPE


def with_cseq(message: Message, rewrite: Rewrite, offset: int) -> None:
    """Shift a request's CSeq number by ``offset`` (kept per call leg once we had
    to re-send its INVITE with the next number), and a PRACK's RAck with it: it
    names the INVITE by that number (RFC 3262 §7.2)."""
    if not offset:
        return
    field_ = message.all("cseq")[0]
    rewrite.replace(field_, f"{message.cseq.number + offset} {message.cseq.method}")
    for rack in message.all("rack"):
        fields = rack.value.split()
        if len(fields) == 3 and fields[1].isdigit():
            rewrite.replace(rack, f"{fields[0]} {int(fields[1]) + offset} {fields[2]}")


def ack_for_failure(request: Message, response_raw: bytes) -> bytes:
    """The ACK for a 300-699 answer to our INVITE (§17.1.1.3)."""
    answer = parse_datagram(response_raw)
    to_value = answer.first("to") or request.first("to") or ""
    lines = [
        f"ACK {request.uri} SIP/2.0",
        f"Via: {request.all('via')[0].value}",
        "Max-Forwards: 70",
        f"From: {request.first('from')}",
        f"To: {to_value}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq.number} ACK",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def cancel_for(request: Message) -> bytes:
    """The CANCEL for one of our INVITE branches (§9.1): same Via, same CSeq number."""
    lines = [
        f"CANCEL {request.uri} SIP/2.0",
        f"Via: {request.all('via')[0].value}",
        "Max-Forwards: 70",
        f"From: {request.first('from')}",
        f"To: {request.first('to')}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq.number} CANCEL",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def synthetic_timeout(
    request: Message,
    status: int = 408,
    reason: str = "Request Timeout",
    warning: str | None = None,
) -> Message:
    """A final answer standing in for a branch that never answered (§16.7 step 2:
    408 on Timer B, 503 when its connection failed), or whose answer we refused
    (488 with a ``warning``)."""
    via = request.all("via")[0].value
    lines = [
        f"SIP/2.0 {status} {reason}",
        "Via: SIP/2.0/UDP 0.0.0.0;branch=z9hG4bK-timeout",
        f"Via: {via}",
        f"From: {request.first('from')}",
        f"To: {request.first('to')}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq.number} {request.cseq.method}",
        *([f"Warning: {warning}"] if warning else []),
        "Content-Length: 0",
    ]
    return parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def with_credentials(
    request: Message, challenge: Message, credentials: tuple[str, str], branch: str
) -> bytes | None:
    """``request`` again, answering a carrier's 401/407 ``challenge`` with Digest
    (SHA-256 or MD5, qop=auth), on a new ``branch`` and the next CSeq; None when
    no challenge offers something we can answer."""
    header, answer = (
        ("www-authenticate", "Authorization")
        if challenge.status == 401
        else ("proxy-authenticate", "Proxy-Authorization")
    )
    for field_ in challenge.all(header):
        try:
            offer = digest.parse_credentials(field_.value)
        except digest.DigestParseError:
            continue
        if not isinstance(offer, digest.Credentials):
            continue
        params = offer.params
        algorithm = params.get("algorithm", digest.MD5).upper()
        qops = {q.strip().lower() for q in params.get("qop", "").split(",")}
        if algorithm not in digest.ALGORITHMS or "auth" not in qops or "nonce" not in params:
            continue
        username, password = credentials
        realm, nonce = params.get("realm", ""), params["nonce"]
        cnonce, nc = secrets.token_hex(8), "00000001"
        ha1 = digest.ha1(algorithm, username, realm, password)
        value = (
            f'Digest username="{_quoted(username)}", realm="{_quoted(realm)}",'
            f' nonce="{_quoted(nonce)}", uri="{request.uri}", response="'
            + digest.response(
                algorithm,
                ha1,
                nonce=nonce,
                nc=nc,
                cnonce=cnonce,
                qop="auth",
                method=request.method,
                uri=request.uri,
            )
            + f'", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"'
        )
        if "opaque" in params:
            value += f', opaque="{_quoted(params["opaque"])}"'
        top = request.all("via")[0]
        old_branch = request.vias[0].branch or ""
        rewrite = Rewrite(request)
        rewrite.replace(top, top.value.replace(f"branch={old_branch}", f"branch={branch}", 1))
        cseq = request.all("cseq")[0]
        rewrite.replace(cseq, f"{request.cseq.number + 1} {request.cseq.method}")
        rewrite.insert_first(answer, value)
        return rewrite.to_bytes()
    return None


def on_another_server(request: bytes, top_via: str) -> bytes:
    """``request`` for another server of the same carrier (RFC 3263 §4.3): our Via
    replaced by ``top_via`` (a new branch) and the credentials the first
    server's challenge got removed, since the next one challenges afresh."""
    message = parse_datagram(request)
    rewrite = Rewrite(message).replace(message.all("via")[0], top_via)
    for name in ("authorization", "proxy-authorization"):
        for field_ in message.all(name):
            rewrite.remove(field_)
    return rewrite.to_bytes()


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
