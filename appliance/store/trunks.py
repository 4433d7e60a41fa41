"""Trunks to carriers, DIDs, dial-plan routes and number settings (docs/trunks.md).

Tenant rows are reached only through :meth:`TenantScope.trunks`; every write
records its audit entry in the same transaction, and no audit record ever
holds a carrier password (``"password_changed": true`` says that one was set).
The password is stored sealed (:mod:`appliance.store.sealed`), bound to the
trunk's tenant and name, because the SIP service needs it in clear to answer
the carrier's 401/407.

What the repository accepts is checked by :mod:`appliance.store.trunk_checks`.
The system-level reads for the SIP service are in
:mod:`appliance.store.sip_dialplan`, and the OPTIONS ping history in
:mod:`appliance.store.trunk_health`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from appliance.media.policy import SrtpPolicy
from appliance.secrets import Secret, derive_key
from appliance.sip.dialplan import CallerIdMode, NumberSettings, RouteRule, Transport
from appliance.store.audit import format_time
from appliance.store.database import write_transaction
from appliance.store.sealed import SealError, seal, unseal
from appliance.store.tenants import ConflictError, InvalidInputError, NotFoundError
from appliance.store.trunk_checks import (
    check_ca_bundle,
    check_e164,
    check_fingerprint,
    check_host,
    check_name,
    check_networks,
    check_number_settings,
    check_password,
    check_port,
    check_prefix,
    check_srtp,
    check_transport,
    check_username,
)

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.store.audit import Actor
    from appliance.store.tenants import TenantScope

__all__ = [
    "SEALING_PURPOSE",
    "Did",
    "NumberSettings",
    "Route",
    "RouteRule",
    "SealError",
    "Trunk",
    "TrunkRepository",
    "TrunkSettings",
    "sealing_key",
    "sealing_key_of",
]

#: The HKDF purpose of the key that seals carrier passwords.
SEALING_PURPOSE = "telemancer trunk credentials"
MAX_STRIP = 16

_PREPEND = re.compile(r"\+?[0-9]{0,15}")


def sealing_key(config: Config) -> bytes:
    """The key that seals carrier passwords; the CLI and the service both use this.

    Derived from ``secrets.jwt_signing_key``: replacing that secret makes the
    stored passwords unreadable until ``telemancer trunk reseal`` seals them
    again (:mod:`appliance.store.trunk_reseal`).
    """
    return sealing_key_of(config.secrets.jwt_signing_key)


def sealing_key_of(jwt_signing_key: Secret) -> bytes:
    """The sealing key that one JWT signing secret gives (a replaced one, too)."""
    return derive_key(jwt_signing_key, SEALING_PURPOSE)


@dataclass(frozen=True)
class TrunkSettings:
    """Everything about a trunk but its name and credentials. ``caller_id``
    None passes the extension's number as is; an E.164 value is sent on every
    call ("fixed"). ``tls_domain`` None verifies the carrier as ``host``.
    ``srtp`` is the call legs' SRTP policy; ``required`` needs ``transport``
    ``tls`` (checked on every add and update, so no change of either breaks it)."""

    host: str
    port: int | None = None
    transport: str = "tls"
    caller_id: str | None = None
    tls_domain: str | None = None
    ca_bundle: str | None = field(default=None, repr=False)
    fingerprint: str | None = None
    inbound_networks: tuple[str, ...] = ()
    inbound_fingerprint: str | None = None
    enabled: bool = True
    srtp: str = SrtpPolicy.OPTIONAL


@dataclass(frozen=True)
class Trunk:
    """One trunk as stored. ``tls_domain`` None means "verify the host name";
    the password is only ever here sealed, and only :meth:`TrunkRepository.credentials`
    opens it."""

    id: int
    tenant_id: int
    name: str
    host: str
    port: int | None
    transport: Transport
    username: str | None
    password_sealed: str | None = field(repr=False)
    caller_id_mode: CallerIdMode
    caller_id: str | None
    tls_domain: str | None
    ca_bundle: str | None = field(repr=False)
    fingerprint: str | None
    enabled: bool
    inbound_networks: tuple[str, ...]
    inbound_fingerprint: str | None
    created_at: str
    srtp: SrtpPolicy = SrtpPolicy.OPTIONAL

    @property
    def verify_domain(self) -> str:
        """The identity the carrier's certificate must carry."""
        return self.tls_domain or self.host

    def settings(self) -> TrunkSettings:
        """This trunk's settings, to change with ``dataclasses.replace``."""
        return TrunkSettings(
            self.host,
            self.port,
            self.transport,
            self.caller_id,
            self.tls_domain,
            self.ca_bundle,
            self.fingerprint,
            self.inbound_networks,
            self.inbound_fingerprint,
            self.enabled,
            self.srtp,
        )


@dataclass(frozen=True)
class Did:
    """A DID of this tenant and the extension it rings."""

    id: int
    tenant_id: int
    number: str
    extension: str
    extension_id: int
    created_at: str


@dataclass(frozen=True)
class Route:
    """One outbound dial-plan rule of this tenant."""

    id: int
    tenant_id: int
    position: int
    prefix: str
    trunk: str
    trunk_id: int
    strip: int
    prepend: str
    created_at: str

    def rule(self) -> RouteRule:
        """The rule as :func:`appliance.sip.dialplan.route` takes it."""
        return RouteRule(self.position, self.prefix, self.trunk, self.strip, self.prepend)


def associated_data(tenant_id: int, name: str) -> bytes:
    """What a trunk's sealed password is bound to: its tenant and its name."""
    return f"telemancer trunk password\x00{tenant_id}\x00{name}".encode()


# -- the repository ----------------------------------------------------------

_TRUNK_COLUMNS = ", ".join(f.name for f in fields(Trunk))
_TRUNK_SELECT = f"SELECT {_TRUNK_COLUMNS} FROM trunks WHERE tenant_id = ?"  # noqa: S608
_DID_SELECT = (
    "SELECT d.id, d.tenant_id, d.number, e.number AS extension, d.extension_id, d.created_at"
    " FROM dids d JOIN extensions e ON e.id = d.extension_id AND e.tenant_id = d.tenant_id"
    " WHERE d.tenant_id = ?"
)
_ROUTE_SELECT = (
    "SELECT r.id, r.tenant_id, r.position, r.prefix, t.name AS trunk, r.trunk_id, r.strip,"
    " r.prepend, r.created_at"
    " FROM routes r JOIN trunks t ON t.id = r.trunk_id AND t.tenant_id = r.tenant_id"
    " WHERE r.tenant_id = ?"
)


class TrunkRepository:
    """One tenant's trunks, DIDs, routes and number settings."""

    def __init__(self, scope: TenantScope, sealing_key: bytes) -> None:
        self._scope = scope
        self._directory = scope.directory
        self._key = sealing_key
        self.tenant_id = scope.tenant_id

    # trunks

    def add(
        self,
        actor: Actor,
        name: str,
        settings: TrunkSettings,
        credentials: tuple[str, str] | None = None,
    ) -> Trunk:
        """Create a trunk (audited as ``trunk.add``; the password is sealed, and the
        record says only ``"password_changed"``)."""
        name = check_name(name)
        values = _columns(settings)
        values.update(self._sealed(name, credentials))
        domain = self.domain()
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            row = {"tenant_id": self.tenant_id, "name": name, **values}
            row["created_at"] = format_time(now)
            self._insert("trunks", row, f"trunk {name} exists in {domain}")
            trunk = self.get(name)
            details = {**_audit_view(trunk), "password_changed": credentials is not None}
            self._audit(actor, "trunk.add", f"trunk:{name}@{domain}", now, details)
        return trunk

    def update(self, actor: Actor, name: str, settings: TrunkSettings) -> Trunk:
        """Replace a trunk's settings, keeping its credentials (audited as
        ``trunk.update`` with the new values of what changed). Start from
        ``dataclasses.replace(trunk.settings(), ...)``. No change, no write."""
        return self._change(actor, self.get(name), _columns(settings), password_changed=False)

    def set_srtp(self, actor: Actor, name: str, srtp: str) -> Trunk:
        """Change a trunk's SRTP policy (audited as ``trunk.update``); ``required``
        is refused unless the trunk is signalled over TLS. No change, no write."""
        return self.update(actor, name, replace(self.get(name).settings(), srtp=srtp))

    def set_credentials(
        self, actor: Actor, name: str, credentials: tuple[str, str] | None
    ) -> Trunk:
        """Set (or with None, remove) the username and password toward the carrier
        (audited as ``trunk.update``: the username if it changed, and
        ``"password_changed": true``; never the password)."""
        current = self.get(name)
        values = self._sealed(name, credentials)
        changed = current.password_sealed is not None or credentials is not None
        return self._change(actor, current, values, password_changed=changed)

    def _sealed(self, name: str, credentials: tuple[str, str] | None) -> dict[str, str | None]:
        if credentials is None:
            return {"username": None, "password_sealed": None}
        username, password = credentials
        sealed = seal(self._key, check_password(password), associated_data(self.tenant_id, name))
        return {"username": check_username(username), "password_sealed": sealed}

    def _change(
        self, actor: Actor, current: Trunk, values: dict[str, Any], *, password_changed: bool
    ) -> Trunk:
        before = _audit_view(current)
        after = _audit_view(_with_values(current, values))
        changes = {key: value for key, value in after.items() if before[key] != value}
        if not changes and not password_changed:
            return current
        domain = self.domain()
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            db.conn.execute(
                f"UPDATE trunks SET {', '.join(f'{key} = ?' for key in values)}"  # noqa: S608
                " WHERE id = ? AND tenant_id = ?",
                (*values.values(), current.id, self.tenant_id),
            )
            details = {"changed": changes, "password_changed": password_changed}
            self._audit(actor, "trunk.update", f"trunk:{current.name}@{domain}", now, details)
        return self.get(current.name)

    def remove(self, actor: Actor, name: str) -> None:
        """Delete a trunk and its health history (audited as ``trunk.remove``);
        refused while routes use it."""
        trunk = self.get(name)
        domain = self.domain()
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            positions = [
                str(row[0])
                for row in db.conn.execute(
                    "SELECT position FROM routes WHERE tenant_id = ? AND trunk_id = ?"
                    " ORDER BY position",
                    (self.tenant_id, trunk.id),
                )
            ]
            if positions:
                raise ConflictError(
                    f"trunk {name} is used by the route(s) at position {', '.join(positions)};"
                    " remove them first"
                )
            db.conn.execute(
                "DELETE FROM trunks WHERE id = ? AND tenant_id = ?", (trunk.id, self.tenant_id)
            )
            self._audit(actor, "trunk.remove", f"trunk:{name}@{domain}", now, {})

    def list(self) -> list[Trunk]:
        """This tenant's trunks, by name."""
        rows = self._directory.db.conn.execute(_TRUNK_SELECT + " ORDER BY name", (self.tenant_id,))
        return [_trunk(row) for row in _dicts(rows)]

    def get(self, name: str) -> Trunk:
        """One of this tenant's trunks, or :class:`NotFoundError`."""
        rows = self._directory.db.conn.execute(
            _TRUNK_SELECT + " AND name = ?", (self.tenant_id, name)
        )
        for row in _dicts(rows):
            return _trunk(row)
        raise NotFoundError(f"no trunk {name!r} in this tenant")

    def credentials(self, trunk: Trunk) -> tuple[str, str] | None:
        """``(username, password)`` toward the carrier, unsealed; None without them.

        Raises :class:`SealError` if the stored value does not open (the key
        changed, or it was copied from another trunk)."""
        if trunk.tenant_id != self.tenant_id:
            raise NotFoundError(f"no trunk {trunk.name!r} in this tenant")
        if trunk.username is None or trunk.password_sealed is None:
            return None
        password = unseal(
            self._key, trunk.password_sealed, associated_data(self.tenant_id, trunk.name)
        )
        return trunk.username, password

    # DIDs

    def add_did(self, actor: Actor, number: str, extension: str) -> Did:
        """Map the E.164 ``number`` to one of this tenant's extensions (audited as
        ``did.add``). A number belongs to one tenant: taken anywhere is a conflict."""
        number = check_e164(number, "DID")
        target = self._scope.extensions().get(extension)
        domain = self.domain()
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            self._insert(
                "dids",
                {
                    "tenant_id": self.tenant_id,
                    "number": number,
                    "extension_id": target.id,
                    "created_at": format_time(now),
                },
                f"DID {number} is already assigned",
            )
            self._audit(
                actor, "did.add", f"did:{number}@{domain}", now, {"extension": target.number}
            )
        return self._did(number)

    def remove_did(self, actor: Actor, number: str) -> None:
        """Delete one of this tenant's DIDs (audited as ``did.remove``)."""
        did = self._did(number)
        domain = self.domain()
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            db.conn.execute(
                "DELETE FROM dids WHERE id = ? AND tenant_id = ?", (did.id, self.tenant_id)
            )
            self._audit(
                actor, "did.remove", f"did:{number}@{domain}", now, {"extension": did.extension}
            )

    def dids(self) -> builtins.list[Did]:
        """This tenant's DIDs, by number."""
        rows = self._directory.db.conn.execute(
            _DID_SELECT + " ORDER BY d.number", (self.tenant_id,)
        )
        return [Did(**row) for row in _dicts(rows)]

    def _did(self, number: str) -> Did:
        rows = self._directory.db.conn.execute(
            _DID_SELECT + " AND d.number = ?", (self.tenant_id, number)
        )
        for row in _dicts(rows):
            return Did(**row)
        raise NotFoundError(f"no DID {number!r} in this tenant")

    # routes

    def add_route(
        self,
        actor: Actor,
        prefix: str,
        trunk: str,
        *,
        position: int | None = None,
        strip: int = 0,
        prepend: str = "",
    ) -> Route:
        """Add an outbound rule (audited as ``route.add``) at ``position``, or after
        the last one. A taken position is a conflict: rules are never shifted."""
        prefix = check_prefix(prefix)
        if position is not None and position < 1:
            raise InvalidInputError("route position must be 1 or more")
        if not 0 <= strip <= MAX_STRIP:
            raise InvalidInputError(f"strip must be 0-{MAX_STRIP}")
        if not _PREPEND.fullmatch(prepend):
            raise InvalidInputError(
                f"invalid prepend {prepend!r}: digits with an optional leading '+'"
            )
        target = self.get(trunk)
        domain = self.domain()
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            if position is None:
                (last,) = db.conn.execute(
                    "SELECT COALESCE(MAX(position), 0) FROM routes WHERE tenant_id = ?",
                    (self.tenant_id,),
                ).fetchone()
                position = int(last) + 1
            self._insert(
                "routes",
                {
                    "tenant_id": self.tenant_id,
                    "position": position,
                    "prefix": prefix,
                    "trunk_id": target.id,
                    "strip": strip,
                    "prepend": prepend,
                    "created_at": format_time(now),
                },
                f"position {position} is taken in {domain}",
            )
            details = {"prefix": prefix, "trunk": trunk, "strip": strip, "prepend": prepend}
            self._audit(actor, "route.add", f"route:{position}@{domain}", now, details)
        return self._route(position)

    def remove_route(self, actor: Actor, position: int) -> None:
        """Delete the rule at ``position`` (audited as ``route.remove``)."""
        rule = self._route(position)
        domain = self.domain()
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            db.conn.execute(
                "DELETE FROM routes WHERE id = ? AND tenant_id = ?", (rule.id, self.tenant_id)
            )
            details = {"prefix": rule.prefix, "trunk": rule.trunk}
            self._audit(actor, "route.remove", f"route:{position}@{domain}", now, details)

    def routes(self) -> builtins.list[Route]:
        """This tenant's rules, in position order."""
        rows = self._directory.db.conn.execute(
            _ROUTE_SELECT + " ORDER BY r.position", (self.tenant_id,)
        )
        return [Route(**row) for row in _dicts(rows)]

    def _route(self, position: int) -> Route:
        rows = self._directory.db.conn.execute(
            _ROUTE_SELECT + " AND r.position = ?", (self.tenant_id, position)
        )
        for row in _dicts(rows):
            return Route(**row)
        raise NotFoundError(f"no route at position {position} in this tenant")

    # number settings

    def number_settings(self) -> NumberSettings:
        """How this tenant's dialled numbers become E.164."""
        tenant = self._scope.tenant()
        return NumberSettings(
            tenant.country_code, tenant.national_prefix, tenant.international_prefix
        )

    def set_number_settings(
        self,
        actor: Actor,
        *,
        country_code: str | None = None,
        national_prefix: str | None = None,
        international_prefix: str | None = None,
    ) -> NumberSettings:
        """Change the given settings, keep the others (audited as ``dialplan.set``
        with the new values of all three)."""
        current = self.number_settings()
        settings = check_number_settings(
            NumberSettings(
                current.country_code if country_code is None else country_code,
                current.national_prefix if national_prefix is None else national_prefix,
                current.international_prefix
                if international_prefix is None
                else international_prefix,
            )
        )
        domain = self.domain()
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            db.conn.execute(
                "UPDATE tenants SET country_code = ?, national_prefix = ?,"
                " international_prefix = ? WHERE id = ?",
                (
                    settings.country_code,
                    settings.national_prefix,
                    settings.international_prefix,
                    self.tenant_id,
                ),
            )
            details = {
                "country_code": settings.country_code,
                "national_prefix": settings.national_prefix,
                "international_prefix": settings.international_prefix,
            }
            self._audit(actor, "dialplan.set", f"dialplan:{domain}", now, details)
        return settings

    # helpers

    def domain(self) -> str:
        """The tenant's SIP domain."""
        return self._scope.tenant().domain

    def _insert(self, table: str, values: dict[str, Any], conflict: str) -> None:
        try:
            self._directory.db.table(table).insert(values)
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                raise ConflictError(conflict) from None
            raise

    def _audit(
        self, actor: Actor, action: str, target: str, now: float, details: Mapping[str, Any]
    ) -> None:
        self._directory.audit.append(
            self._directory.db,
            actor,
            action,
            target,
            now=now,
            tenant_id=self.tenant_id,
            details=details,
        )


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _columns(settings: TrunkSettings) -> dict[str, Any]:
    """Validated column values for ``settings`` (all but name and credentials)."""
    s = settings
    return {
        "host": check_host(s.host),
        "port": check_port(s.port),
        "transport": check_transport(s.transport),
        "caller_id_mode": "pass" if s.caller_id is None else "fixed",
        "caller_id": None if s.caller_id is None else check_e164(s.caller_id, "caller ID"),
        "tls_domain": None if s.tls_domain is None else check_host(s.tls_domain, "TLS domain"),
        "ca_bundle": None if s.ca_bundle is None else check_ca_bundle(s.ca_bundle),
        "fingerprint": None if s.fingerprint is None else check_fingerprint(s.fingerprint),
        "inbound_networks": json.dumps(list(check_networks(s.inbound_networks))),
        "inbound_fingerprint": None
        if s.inbound_fingerprint is None
        else check_fingerprint(s.inbound_fingerprint, "inbound fingerprint"),
        "enabled": 1 if s.enabled else 0,
        "srtp": check_srtp(s.srtp, s.transport).value,
    }


def _trunk(row: Mapping[str, Any]) -> Trunk:
    values = dict(row)
    values["enabled"] = bool(values["enabled"])
    values["inbound_networks"] = tuple(json.loads(values["inbound_networks"]))
    values["srtp"] = SrtpPolicy(values["srtp"])
    return Trunk(**values)


def _with_values(trunk: Trunk, values: Mapping[str, Any]) -> Trunk:
    """``trunk`` as it will read once ``values`` (some columns) are written."""
    columns = dict(values)
    if "enabled" in columns:
        columns["enabled"] = bool(columns["enabled"])
    if "inbound_networks" in columns:
        columns["inbound_networks"] = tuple(json.loads(columns["inbound_networks"]))
    if "srtp" in columns:
        columns["srtp"] = SrtpPolicy(columns["srtp"])
    return replace(trunk, **columns)


def _audit_view(trunk: Trunk) -> dict[str, Any]:
    """A trunk as its audit records show it: never the password (sealed or not);
    the CA bundle by its SHA-256, since PEM text is long."""
    bundle = trunk.ca_bundle
    return {
        "host": trunk.host,
        "port": trunk.port,
        "transport": trunk.transport,
        "username": trunk.username,
        "caller_id_mode": trunk.caller_id_mode,
        "caller_id": trunk.caller_id,
        "tls_domain": trunk.tls_domain,
        "ca_bundle": None
        if bundle is None
        else "sha256:" + hashlib.sha256(bundle.encode()).hexdigest(),
        "fingerprint": trunk.fingerprint,
        "inbound_networks": list(trunk.inbound_networks),
        "inbound_fingerprint": trunk.inbound_fingerprint,
        "enabled": trunk.enabled,
        "srtp": trunk.srtp.value,
    }
