"""Requests within an answered call: which leg they go to, the transactions
that carry them, and the BYE the proxy sends itself to end a call.

In-dialog requests follow the Record-Route we inserted; the proxy matches them
to their call by Call-ID and tags and forwards them over the other leg's flow.
These are the parts of that work that need no more than the call and the
message, as plain functions beside ``proxy.py``.
"""

from __future__ import annotations

from appliance.sip.calls import Call, Leg
from appliance.sip.errors import SipError
from appliance.sip.forwarding import ack_for_failure
from appliance.sip.message import Message, parse_datagram
from appliance.sip.proxy_address import Addresses, via
from appliance.sip.registrar import Flow
from appliance.sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
)


def dialog_legs(caller: Leg, callee: Leg, message: Message, flow: Flow) -> tuple[Leg, Leg]:
    """The leg a request came from and the leg it goes to, matched by From tag and
    source address (481 when it is neither party's)."""
    from_tag = message.from_.tag
    if from_tag == caller.tag and flow.remote[0] == caller.flow.remote[0]:
        return caller, callee
    if from_tag == callee.tag and flow.remote[0] == callee.flow.remote[0]:
        return callee, caller
    raise SipError(481, "Call/Transaction Does Not Exist")


def dialog_transactions(
    method: str, data: bytes, *, reliable_down: bool, reliable_up: bool, now: float
) -> tuple[
    InviteClientTransaction | NonInviteClientTransaction,
    InviteServerTransaction | NonInviteServerTransaction,
]:
    """The client transaction forwarding ``data`` and the server transaction
    answering its sender: INVITE ones for a re-INVITE, non-INVITE otherwise."""
    transaction: InviteClientTransaction | NonInviteClientTransaction
    server: InviteServerTransaction | NonInviteServerTransaction
    if method == "INVITE":  # a re-INVITE: hold, codec change, refresh
        forwarded = parse_datagram(data)
        transaction = InviteClientTransaction(
            data,
            reliable=reliable_down,
            now=now,
            ack_for=lambda raw: ack_for_failure(forwarded, raw),
        )
        server = InviteServerTransaction(reliable=reliable_up, now=now)
    else:
        transaction = NonInviteClientTransaction(data, reliable=reliable_down, now=now)
        server = NonInviteServerTransaction(reliable=reliable_up, now=now)
    return transaction, server


def bye_request(
    call: Call, to_leg: Leg, from_leg: Leg, addresses: Addresses, branch: str
) -> bytes:
    """A BYE from the proxy toward ``to_leg``, within the dialog."""
    address = addresses.get(to_leg.flow.transport) or next(iter(addresses.values()))
    to_leg.cseq += 1
    from_leg.cseq += 1
    lines = [
        f"BYE {to_leg.contact or to_leg.uri} SIP/2.0",
        f"Via: {via(addresses, to_leg.flow, branch)}",
        "Max-Forwards: 70",
        f"From: <{to_leg.peer_uri}>;tag={from_leg.tag}",
        f"To: <{to_leg.uri}>;tag={to_leg.tag}",
        f"Call-ID: {call.call_id}",
        f"CSeq: {from_leg.cseq + 1000} BYE",
        *[f"Route: {route}" for route in to_leg.routes],
        f'Reason: SIP;cause=200;text="ended by the proxy ({address.transport})"',
        "Content-Length: 0",
    ]
    return _encode(lines)


def refuse_answer(
    request: Message, answer: Message, routes: tuple[str, ...], vias: tuple[str, str], why: str
) -> tuple[bytes, bytes]:
    """The ACK and BYE ending the dialog a 2xx ``answer`` to our INVITE ``request``
    set up, when its SDP answer is unusable (a 2xx cannot be refused, §13.2.2.4):
    both sent to the answer's Contact along the dialog's ``routes``, each with
    its own Via from ``vias``."""
    target = answer.contacts[0].uri if answer.contacts else request.uri
    common = [
        "Max-Forwards: 70",
        f"From: {request.first('from')}",
        f"To: {answer.first('to')}",
        f"Call-ID: {request.call_id}",
        *[f"Route: {route}" for route in routes],
    ]
    ack = [f"ACK {target} SIP/2.0", f"Via: {vias[0]}", *common]
    ack += [f"CSeq: {request.cseq.number} ACK", "Content-Length: 0"]
    bye = [f"BYE {target} SIP/2.0", f"Via: {vias[1]}", *common]
    bye += [
        f"CSeq: {request.cseq.number + 1} BYE",
        f'Reason: SIP;cause=488;text="{why}"',
        "Content-Length: 0",
    ]
    return _encode(ack), _encode(bye)


#: The shortest session interval RFC 4028 allows (§4, Min-SE): a shorter one
#: would end calls early, so it counts as this.
MIN_SESSION_INTERVAL = 90


def session_interval(answer: Message) -> int | None:
    """The session interval a 2xx sets with Session-Expires (RFC 4028 §4:
    ``delta-seconds *(;param)``), None when it has none (no session timer) or
    one we cannot read."""
    value = answer.first("session-expires")
    if value is None:
        return None
    delta = value.partition(";")[0].strip(" \t")
    if not delta.isdigit() or not delta.isascii() or len(delta) > 10:
        return None
    return max(int(delta), MIN_SESSION_INTERVAL)


def _encode(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
