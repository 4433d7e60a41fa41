"""The branches the proxy sends for an INVITE, and the CANCEL of a branch.

Forking (RFC 3261 §16.6) sends one copy of the INVITE per target, with our Via
and Record-Route on top; a branch still pending when the call is answered
elsewhere, given up or cancelled is sent a CANCEL of its own (§16.10), filed
under the INVITE branch's id with ``-cancel`` appended. These functions build
the bytes and client transactions; the proxy files the branches and starts
them.
"""

from __future__ import annotations

from appliance.sip.calls import Call
from appliance.sip.forwarding import ack_for_failure, cancel_for, strip_for_forwarding, with_body
from appliance.sip.message import Message, Rewrite, parse_datagram
from appliance.sip.proxy_state import Branch, Upstream
from appliance.sip.registrar import Flow
from appliance.sip.transaction import InviteClientTransaction, NonInviteClientTransaction


def forked_invite(
    message: Message,
    request_uri: str,
    *,
    source: tuple[str, int],
    via: str,
    record_routes: list[str],
    asserted: str | None = None,
    body: bytes,
) -> bytes:
    """``message`` as one branch sends it to ``request_uri``: stripped for
    forwarding, its asserted identity replaced by ``asserted`` if given, our
    Record-Route and Via on top, and ``body`` (the SDP written for this branch)."""
    rewrite = Rewrite(message).replace_start_line(f"INVITE {request_uri} SIP/2.0")
    strip_for_forwarding(message, rewrite, source=source)
    with_body(message, rewrite, body)
    if asserted is not None:
        for field_ in message.all("p-asserted-identity") + message.all("remote-party-id"):
            rewrite.remove(field_)
        rewrite.insert_first("P-Asserted-Identity", asserted)
    # Edits at one offset keep their order: the first inserted stays on top.
    for rr in record_routes:
        rewrite.insert_first("Record-Route", rr)
    rewrite.insert_first("Via", via)
    return rewrite.to_bytes()


def invite_branch(
    data: bytes, branch_id: str, target: Flow, call: Call, upstream: Upstream, now: float
) -> Branch:
    """A branch ``branch_id`` sending the INVITE ``data`` over ``target`` (not yet
    started). The INVITE is parsed again only if a failure has to be ACKed: most
    branches never need it, and a parsed message would be kept for the
    transaction's whole life."""
    transaction = InviteClientTransaction(
        data,
        reliable=target.transport != "udp",
        now=now,
        ack_for=lambda raw: ack_for_failure(parse_datagram(data), raw),
    )
    return Branch(branch_id, target, data, transaction, call, upstream)


def cancel_branch(branch: Branch, now: float) -> Branch:
    """A branch sending the CANCEL of ``branch``'s INVITE (not yet started)."""
    cancel = cancel_for(parse_datagram(branch.request))
    transaction = NonInviteClientTransaction(
        cancel, reliable=branch.flow.transport != "udp", now=now
    )
    cancel_id = f"{branch.id}-cancel"
    return Branch(cancel_id, branch.flow, cancel, transaction, None, None)
