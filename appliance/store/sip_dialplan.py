"""Every tenant's trunks, DIDs, routes and number settings, for the SIP service.

These are system-level reads (no tenant scope: the SIP core serves all
tenants at once) that return the plain frozen values of
:mod:`appliance.sip.dialplan`; :func:`appliance.store.sipstate.load_directory`
puts them together. Tenant-scoped reads and writes are in
:mod:`appliance.store.trunks`.
"""

from __future__ import annotations

import ipaddress

import sqlite_utils

from appliance.sip.dialplan import DidEntry, NumberSettings, RouteRule, TrunkEntry
from appliance.store.sealed import SealError, unseal
from appliance.store.trunks import _TRUNK_COLUMNS, _dicts, _trunk, associated_data

__all__ = [
    "DidEntry",
    "NumberSettings",
    "RouteRule",
    "SealError",
    "TrunkEntry",
    "load_dids",
    "load_number_settings",
    "load_routes",
    "load_trunks",
]


def load_trunks(db: sqlite_utils.Database, sealing_key: bytes) -> list[TrunkEntry]:
    """Every enabled trunk of every tenant, credentials unsealed, for the SIP core.

    Raises :class:`SealError` naming the trunk if a password does not open
    (``secrets.jwt_signing_key`` was replaced): failing loud beats calling out
    with no credentials.
    """
    entries = []
    rows = db.conn.execute(
        f"SELECT {_TRUNK_COLUMNS} FROM trunks WHERE enabled = 1"  # noqa: S608
        " ORDER BY tenant_id, name"
    )
    for row in _dicts(rows):
        trunk = _trunk(row)
        password = None
        if trunk.password_sealed is not None:
            try:
                password = unseal(
                    sealing_key,
                    trunk.password_sealed,
                    associated_data(trunk.tenant_id, trunk.name),
                )
            except SealError as e:
                raise SealError(
                    f"trunk {trunk.name} of tenant {trunk.tenant_id}: {e}; after replacing"
                    " secrets.jwt_signing_key, run `telemancer trunk reseal --old-jwt-key"
                    " REF` with the replaced secret, or set the password again with"
                    " `telemancer trunk passwd`"
                ) from None
        entries.append(
            TrunkEntry(
                id=trunk.id,
                tenant_id=trunk.tenant_id,
                name=trunk.name,
                host=trunk.host,
                port=trunk.port,
                transport=trunk.transport,
                username=trunk.username,
                password=password,
                caller_id_mode=trunk.caller_id_mode,
                caller_id=trunk.caller_id,
                tls_domain=trunk.verify_domain,
                ca_bundle=trunk.ca_bundle,
                fingerprint=trunk.fingerprint,
                inbound_networks=tuple(map(ipaddress.ip_network, trunk.inbound_networks)),
                inbound_fingerprint=trunk.inbound_fingerprint,
                srtp=trunk.srtp,
            )
        )
    return entries


def load_dids(db: sqlite_utils.Database) -> dict[str, DidEntry]:
    """Every DID of every tenant, by number."""
    rows = db.conn.execute(
        "SELECT d.number, d.tenant_id, d.extension_id, e.number FROM dids d"
        " JOIN extensions e ON e.id = d.extension_id AND e.tenant_id = d.tenant_id"
    )
    return {number: DidEntry(number, tenant, ext_id, ext) for number, tenant, ext_id, ext in rows}


def load_routes(db: sqlite_utils.Database) -> dict[int, tuple[RouteRule, ...]]:
    """Every tenant's rules in position order, by tenant id (tenants without
    rules are absent)."""
    rows = db.conn.execute(
        "SELECT r.tenant_id, r.position, r.prefix, t.name, r.strip, r.prepend FROM routes r"
        " JOIN trunks t ON t.id = r.trunk_id AND t.tenant_id = r.tenant_id"
        " ORDER BY r.tenant_id, r.position"
    )
    routes: dict[int, list[RouteRule]] = {}
    for tenant_id, position, prefix, trunk, strip, prepend in rows:
        routes.setdefault(tenant_id, []).append(RouteRule(position, prefix, trunk, strip, prepend))
    return {tenant_id: tuple(rules) for tenant_id, rules in routes.items()}


def load_number_settings(db: sqlite_utils.Database) -> dict[int, NumberSettings]:
    """Every tenant's number settings, by tenant id."""
    rows = db.conn.execute(
        "SELECT id, country_code, national_prefix, international_prefix FROM tenants"
    )
    return {
        tenant_id: NumberSettings(cc, national, intl) for tenant_id, cc, national, intl in rows
    }
