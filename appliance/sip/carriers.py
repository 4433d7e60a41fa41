"""The proxy's dealings with carriers, besides forwarding calls to them.

An outbound call is addressed to the carrier's domain with the identity the
trunk asserts; a carrier's 401/407 is answered once with the trunk's
credentials; OPTIONS pings tell which carriers answer, so that one that stops
is routed around. Plain functions over the proxy's records: the
:class:`~appliance.sip.proxy.Proxy` keeps the tables they read and change.
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.sip.actions import Action, TrunkHealth
from appliance.sip.dialplan import TrunkEntry
from appliance.sip.forwarding import with_credentials
from appliance.sip.message import Message, parse_datagram
from appliance.sip.proxy_address import Addresses, via
from appliance.sip.proxy_state import Branch
from appliance.sip.registrar import Flow
from appliance.sip.transaction import NonInviteClientTransaction


def carrier_host(trunk: TrunkEntry) -> str:
    """The carrier's host as our requests name it (its TLS domain over TLS)."""
    return trunk.tls_domain if trunk.transport == "tls" else trunk.host


def toward_carrier(
    trunk: TrunkEntry, number: str, caller_aor: str, domain: str
) -> tuple[str, str]:
    """The Request-URI for calling ``number`` over ``trunk``, and the
    P-Asserted-Identity to send: the trunk's fixed caller ID, or the caller's."""
    host = carrier_host(trunk)
    identity = trunk.caller_id if trunk.caller_id_mode == "fixed" else caller_aor.split("@")[0]
    return f"sip:{number}@{host}", f"<sip:{identity}@{domain}>"


def with_trunk_credentials(
    request: bytes, trunk: TrunkEntry, challenge: Message, new_branch_id: Callable[[], str]
) -> bytes | None:
    """``request`` again, answering the carrier's ``challenge`` with ``trunk``'s
    credentials on a new branch; None when the trunk has none or cannot answer."""
    credentials = trunk.credentials
    return (
        with_credentials(parse_datagram(request), challenge, credentials, new_branch_id())
        if credentials
        else None
    )


def ping_branch(
    trunk: TrunkEntry, flow: Flow, branch_id: str, addresses: Addresses, now: float
) -> Branch:
    """An OPTIONS toward ``trunk``'s carrier over ``flow``, as a branch of its own
    (not yet started)."""
    host = carrier_host(trunk)
    ours = addresses.get(flow.transport) or next(iter(addresses.values()))
    lines = [
        f"OPTIONS sip:{host} SIP/2.0",
        f"Via: {via(addresses, flow, branch_id)}",
        "Max-Forwards: 70",
        f"From: <sip:{ours.host}>;tag={branch_id[-12:]}",
        f"To: <sip:{host}>",
        f"Call-ID: {branch_id}@{ours.host}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    transaction = NonInviteClientTransaction(data, reliable=flow.transport != "udp", now=now)
    branch = Branch(branch_id, flow, data, transaction, None, None)
    branch.ping = (trunk, now)
    return branch


def pinged(
    branch: Branch,
    status: int | None,
    now: float,
    *,
    branches: dict[str, Branch],
    trunk_down: set[int],
) -> list[Action]:
    """A ping's final answer (``status``), or its Timer F (None): forget the
    branch, mark the trunk up or down, and report its health."""
    assert branch.ping is not None
    if status is not None and status < 200:
        return []
    trunk, sent = branch.ping
    branch.ping = None
    del branches[branch.id]
    up = not ping_failed(status)
    if up:
        trunk_down.discard(trunk.id)
    else:
        trunk_down.add(trunk.id)
    rtt = now - sent if status is not None else None
    return [TrunkHealth(trunk.id, now, up, status, rtt)]


def ping_failed(status: int | None) -> bool:
    """Whether a ping's final answer (None: none came) says the server is not
    taking calls: any 5xx does; a 4xx such as 404 or 405 still proves a SIP
    server that answers."""
    return status is None or status >= 500
