"""Proxy-Authorization of a phone placing a call (step 1 of the proxy's work).

A phone's initial INVITE must carry Digest credentials for its own tenant's
realm, under the same rules and the same brute-force rule as REGISTER. Kept
apart from the routing in ``proxy.py``: these functions take the directory,
verifier and blocklist they need and either name the caller or raise what
to answer (a 403/407 :class:`~appliance.sip.errors.SipError`, or
:class:`BlockedError` to answer nothing).
"""

from __future__ import annotations

from appliance.sip import digest
from appliance.sip.blocklist import Blocklist, BlockStarted
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.errors import SipError
from appliance.sip.message import Message
from appliance.sip.proxy_state import sip_or_none
from appliance.sip.registrar import Flow


class BlockedError(Exception):
    """The request's credentials tripped the brute-force rule: answer nothing."""

    def __init__(self, started: BlockStarted) -> None:
        super().__init__(started.ip)
        self.started = started


def authenticate(
    message: Message,
    flow: Flow,
    now: float,
    *,
    directory: SipDirectory,
    verifier: digest.DigestVerifier,
    blocklist: Blocklist,
) -> tuple[TenantEntry, ExtensionEntry]:
    """The caller's tenant and extension, from Proxy-Authorization (407 if absent)."""
    from_uri = sip_or_none(message.from_.uri)
    tenant = directory.tenant(from_uri.host) if from_uri else None
    if from_uri is None or tenant is None or not tenant.active or not from_uri.user:
        raise SipError(403, "Forbidden (From is not an extension served here)")
    credentials = None
    for field_ in message.all("proxy-authorization"):
        try:
            parsed = digest.parse_credentials(field_.value)
        except digest.DigestParseError:
            raise SipError(400, "Bad Request (malformed Proxy-Authorization)") from None
        if isinstance(parsed, digest.Credentials) and parsed.params.get("realm") == tenant.domain:
            credentials = parsed
    if credentials is None:
        raise challenge(verifier, tenant, flow, now, stale=False)
    extension = directory.extension(tenant.id, credentials.username or "")
    result = verifier.verify(
        credentials,
        message.method,
        extension.ha1 if extension else None,
        tenant.domain,
        now=now,
        source_ip=flow.remote[0],
    )
    if result.outcome is digest.AuthOutcome.STALE:
        raise challenge(verifier, tenant, flow, now, stale=True)
    if result.outcome is not digest.AuthOutcome.OK or extension is None:
        if result.reason is digest.FailureReason.CREDENTIALS:
            started = blocklist.record_failure(flow.remote[0], now)
            if started is not None:
                raise BlockedError(started)
        raise challenge(verifier, tenant, flow, now, stale=False)
    blocklist.record_success(flow.remote[0], now)
    if extension.number != from_uri.user:
        raise SipError(403, "Forbidden (credentials are for another extension)")
    return tenant, extension


def challenge(
    verifier: digest.DigestVerifier, tenant: TenantEntry, flow: Flow, now: float, *, stale: bool
) -> SipError:
    """The 407 to answer, its Proxy-Authenticate values carrying a fresh nonce."""
    values = verifier.challenge(tenant.domain, now=now, source_ip=flow.remote[0], stale=stale)
    headers = tuple(("Proxy-Authenticate", value) for value in values)
    return SipError(407, "Proxy Authentication Required", headers)
