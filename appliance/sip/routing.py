"""Where a call goes: an extension of the tenant, or a carrier through a trunk.

Pure decisions over the :class:`~appliance.sip.directory.SipDirectory`; each
refusal is a :class:`SipError` carrying its answer. Tenants never reach each
other: a phone's call stays inside its tenant or leaves through that
tenant's own trunks, and a carrier's call reaches only DIDs of the tenant
that owns the trunk it arrived on.
"""

from __future__ import annotations

from collections.abc import Container
from typing import NamedTuple

from appliance.sip.dialplan import TrunkEntry, is_e164, normalize, route
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.errors import SipError


class Internal(NamedTuple):
    """Ring an extension's registrations."""

    extension: ExtensionEntry


class Outbound(NamedTuple):
    """Send the call to a carrier: ``number`` as the carrier is to receive it."""

    trunk: TrunkEntry
    number: str
    e164: str


def from_phone(
    directory: SipDirectory,
    tenant: TenantEntry,
    user: str | None,
    usable_trunks: Container[str] | None = None,
) -> Internal | Outbound:
    """Route a call a phone of ``tenant`` dialled (the Request-URI's user part)."""
    if not user:
        raise SipError(404, "Not Found")
    extension = directory.extension(tenant.id, user)
    if extension is not None:
        return Internal(extension)
    e164 = normalize(user, directory.numbering(tenant.id))
    if e164 is None:
        raise SipError(404, "Not Found")
    did = directory.did(e164)
    if did is not None and did.tenant_id == tenant.id:
        own = directory.extension_by_id(did.extension_id)
        if own is not None:
            return Internal(own)
    rules = directory.routes(tenant.id)
    match = route(e164, rules, usable_trunks)
    if match is None:
        if route(e164, rules) is not None:
            raise SipError(503, "Service Unavailable (every trunk for that number is down)")
        raise SipError(404, "Not Found (no route for that number)")
    trunk = directory.trunk(tenant.id, match.trunk)
    if trunk is None:
        raise SipError(503, "Service Unavailable (trunk disabled)")
    return Outbound(trunk, match.number, e164)


def from_carrier(directory: SipDirectory, trunk: TrunkEntry, user: str | None) -> Internal:
    """Route a call a carrier sent over ``trunk``: only its tenant's DIDs ring."""
    if not user:
        raise SipError(404, "Not Found")
    number = user if is_e164(user) else normalize(user, directory.numbering(trunk.tenant_id))
    did = directory.did(number) if number else None
    if did is None or did.tenant_id != trunk.tenant_id:
        raise SipError(404, "Not Found")
    extension = directory.extension_by_id(did.extension_id)
    if extension is None:
        raise SipError(404, "Not Found")
    return Internal(extension)
