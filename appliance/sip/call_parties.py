"""Who an initial INVITE is from and whom it is for (steps 1 and 2 of the proxy).

A carrier is recognised by its source address and TLS client certificate
(never by a header) and reaches only DIDs of the tenant owning its trunk. Any
other caller must be a phone authenticating with Proxy-Authorization
(:mod:`appliance.sip.proxy_auth`) and calling within its own tenant's domain or
out through that tenant's trunks. Each refusal raises the SipError to answer.
This reads the directory and the trunks' health but none of the proxy's
transactions, so it stands apart from ``proxy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.media.policy import SrtpPolicy
from appliance.sip import digest
from appliance.sip.blocklist import Blocklist
from appliance.sip.cdr import Direction
from appliance.sip.dialplan import TrunkEntry
from appliance.sip.directory import SipDirectory, TenantEntry
from appliance.sip.errors import SipError
from appliance.sip.grammar import parse_sip_uri
from appliance.sip.message import Message
from appliance.sip.proxy_address import Addresses, check_request_uri
from appliance.sip.proxy_auth import authenticate
from appliance.sip.proxy_state import sip_or_none
from appliance.sip.registrar import Flow
from appliance.sip.routing import Internal, Outbound, from_carrier, from_phone


@dataclass(frozen=True)
class Caller:
    """Who places a new call, once identified and before it is routed."""

    tenant: TenantEntry
    #: The caller's address-of-record (``user@host``).
    aor: str
    #: The trunk whose carrier sent the call; None for a phone.
    carrier: TrunkEntry | None


@dataclass(frozen=True)
class Parties:
    """The tenant a new call belongs to, its caller and where it goes."""

    tenant: TenantEntry
    #: The caller's address-of-record (``user@host``).
    caller: str
    decision: Internal | Outbound
    direction: Direction
    #: The trunk the call arrived on or leaves through, if any.
    trunk_name: str | None

    @property
    def callee(self) -> str:
        """Whom the call is for: an extension's address-of-record, or the E.164
        number a carrier is asked for."""
        if isinstance(self.decision, Internal):
            return f"{self.decision.extension.number}@{self.tenant.domain}"
        return self.decision.e164


def identify_caller(
    message: Message,
    flow: Flow,
    now: float,
    *,
    directory: SipDirectory,
    verifier: digest.DigestVerifier,
    blocklist: Blocklist,
    certificate: str | None,
) -> Caller:
    """Recognise a carrier by its source address and ``certificate``, or else
    authenticate the phone (407 until it does)."""
    carrier = directory.carrier_for(flow.remote[0], certificate)
    if carrier is not None:
        tenant = tenant_of(directory, carrier.tenant_id)
        from_uri = sip_or_none(message.from_.uri)
        aor = f"{from_uri.user}@{from_uri.host}" if from_uri else message.from_.uri
        return Caller(tenant, aor, carrier)
    tenant, extension = authenticate(
        message, flow, now, directory=directory, verifier=verifier, blocklist=blocklist
    )
    return Caller(tenant, f"{extension.number}@{tenant.domain}", None)


def call_parties(
    message: Message,
    caller: Caller,
    *,
    directory: SipDirectory,
    addresses: Addresses,
    trunk_down: set[int],
) -> Parties:
    """Route the Request-URI for an identified ``caller``; trunks in
    ``trunk_down`` are routed around."""
    uri = parse_sip_uri(message.uri)
    check_request_uri(addresses, directory, message, uri)
    tenant = caller.tenant
    if caller.carrier is not None:
        decision: Internal | Outbound = from_carrier(directory, caller.carrier, uri.user)
        return Parties(tenant, caller.aor, decision, "inbound", caller.carrier.name)
    if uri.host.lower() != tenant.domain:
        if directory.tenant(uri.host) is not None:
            raise SipError(403, "Forbidden (calls between tenants are not allowed)")
        raise SipError(403, "Forbidden (no route to that domain)")
    decision = from_phone(directory, tenant, uri.user, usable_trunks(directory, trunk_down))
    if isinstance(decision, Internal):
        return Parties(tenant, caller.aor, decision, "internal", None)
    return Parties(tenant, caller.aor, decision, "outbound", decision.trunk.name)


def dialled(message: Message) -> str:
    """What the caller dialled, as ``user@host`` of the Request-URI: the callee
    on the record of a call refused before it was routed."""
    uri = sip_or_none(message.uri)
    return f"{uri.user}@{uri.host}" if uri is not None and uri.user else message.uri


def tenant_of(directory: SipDirectory, tenant_id: int) -> TenantEntry:
    """The active tenant owning a carrier's trunk (403 when it is not active)."""
    tenant = directory.tenant_by_id(tenant_id)
    if tenant is None or not tenant.active:
        raise SipError(403, "Forbidden (tenant not active)")
    return tenant


def usable_trunks(directory: SipDirectory, trunk_down: set[int]) -> set[str] | None:
    """Trunk names whose carrier answers our pings (None: no ping yet, all usable)."""
    if not trunk_down:
        return None
    return {t.name for t in directory.trunks() if t.id not in trunk_down}


def caller_srtp(directory: SipDirectory, parties: Parties) -> SrtpPolicy:
    """The SRTP policy of the caller's leg: its trunk's for a call from a
    carrier, its tenant's for a phone."""
    if parties.direction == "inbound" and parties.trunk_name is not None:
        trunk = directory.trunk(parties.tenant.id, parties.trunk_name)
        if trunk is not None:
            return trunk.srtp
    return parties.tenant.srtp
