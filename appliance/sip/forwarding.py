"""Building the messages a proxy sends on its own account, and editing the ones
it forwards, by splicing bytes (:class:`~appliance.sip.message.Rewrite`)."""

from __future__ import annotations

from appliance.sip.message import Message, Rewrite, parse_datagram


def strip_for_forwarding(message: Message, rewrite: Rewrite, *, keep_routes: bool = False) -> None:
    """Decrement Max-Forwards and drop credentials meant for us and our own Route."""
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


def without_top_via(message: Message) -> bytes:
    """A response with our Via removed, for the next hop up."""
    first = message.all("via")[0]
    values = [v.strip() for v in first.value.split(",")]
    rewrite = Rewrite(message)
    if len(values) > 1:
        rewrite.replace(first, ", ".join(values[1:]))
    else:
        rewrite.remove(first)
    return rewrite.to_bytes()


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


def synthetic_timeout(request: Message) -> Message:
    """A 408 standing in for a branch that never answered (§16.7 step 2)."""
    via = request.all("via")[0].value
    lines = [
        "SIP/2.0 408 Request Timeout",
        "Via: SIP/2.0/UDP 0.0.0.0;branch=z9hG4bK-timeout",
        f"Via: {via}",
        f"From: {request.first('from')}",
        f"To: {request.first('to')}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq.number} {request.cseq.method}",
        "Content-Length: 0",
    ]
    return parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
