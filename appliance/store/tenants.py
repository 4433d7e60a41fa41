"""Tenants, users and the tenant scope.

Tenant-owned rows are reachable only through a :class:`TenantScope`, which
carries the tenant id and adds it to every query it runs; no other code path
reads them. System-level objects (the tenants themselves, sysadmins) live on
:class:`Directory`. Every write records its audit entry in the same
transaction.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import sqlite_utils

from appliance.media.policy import SrtpPolicy
from appliance.store.audit import Actor, AuditLog, AuditRecord, format_time
from appliance.store.checkpoints import Checkpoint
from appliance.store.database import write_transaction

if TYPE_CHECKING:
    from appliance.store.extensions import ExtensionRepository
    from appliance.store.trunks import TrunkRepository

TenantRole = Literal["admin", "read-only"]
TENANT_ROLES: tuple[TenantRole, ...] = ("admin", "read-only")

_DOMAIN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,127}")


class StoreError(Exception):
    """A refused store operation; ``kind`` maps to the wire status later."""

    kind = "invalid"


class InvalidInputError(StoreError):
    """The input breaks a rule; the message says which."""


class ConflictError(StoreError):
    """The object exists already."""

    kind = "conflict"


class NotFoundError(StoreError):
    """No such object (in this scope)."""

    kind = "not-found"


@dataclass(frozen=True)
class Tenant:
    """A tenant: one SIP domain with its quotas."""

    id: int
    name: str
    domain: str
    max_extensions: int
    max_concurrent_calls: int
    status: str
    created_at: str
    # Number settings (migration 4; docs/trunks.md): how dialled numbers become E.164.
    country_code: str = ""
    national_prefix: str = "0"
    international_prefix: str = "00"
    # The SRTP policy of the tenant's phones (migration 5; appliance.media.policy).
    srtp: SrtpPolicy = SrtpPolicy.OPTIONAL


@dataclass(frozen=True)
class User:
    """A person who signs in: a sysadmin (no tenant) or a tenant user."""

    id: int
    tenant_id: int | None
    username: str
    role: str
    password_hash: str
    created_at: str


def normalize_domain(domain: str) -> str:
    """Lower-case and check a SIP domain (RFC 1123 host name, at least two labels)."""
    domain = domain.strip().rstrip(".").lower()
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(map(_DOMAIN_LABEL.fullmatch, labels)):
        raise InvalidInputError(
            f"invalid SIP domain {domain!r}: expected a host name like pbx.example.com"
        )
    return domain


def parse_srtp(policy: str) -> SrtpPolicy:
    """An ``srtp`` setting as typed by an operator (``required``, ``optional`` or ``off``)."""
    try:
        return SrtpPolicy(policy)
    except ValueError:
        raise InvalidInputError(
            f"invalid srtp policy {policy!r}: expected one of"
            f" {', '.join(p.value for p in SrtpPolicy)}"
        ) from None


def _tenant(row: Mapping[str, Any]) -> Tenant:
    return Tenant(**{**row, "srtp": SrtpPolicy(row["srtp"])})


def _check_username(username: str) -> str:
    if not _USERNAME.fullmatch(username):
        raise InvalidInputError(
            "invalid username: use 1-128 lower-case letters, digits and . _ @ + -"
        )
    return username


class Directory:
    """System-level store API: tenants, sysadmins, and scopes into tenants."""

    def __init__(self, db: sqlite_utils.Database, audit: AuditLog, clock: Callable[[], float]):
        self.db = db
        self.audit = audit
        self.clock = clock

    def add_tenant(
        self,
        actor: Actor,
        name: str,
        domain: str,
        *,
        max_extensions: int,
        max_concurrent_calls: int,
        srtp: str = SrtpPolicy.OPTIONAL,
    ) -> Tenant:
        """Create a tenant (audited as ``tenant.add``). ``srtp`` is its phones'
        SRTP policy; any value works whatever transport a phone uses, because
        the SIP core decides per call (a ``required`` phone on UDP gets 500)."""
        if not _TENANT_NAME.fullmatch(name):
            raise InvalidInputError("invalid tenant name: 1-64 letters, digits, space and . _ -")
        domain = normalize_domain(domain)
        if max_extensions < 0 or max_concurrent_calls < 0:
            raise InvalidInputError("quotas must not be negative")
        policy = parse_srtp(srtp)
        now = self.clock()
        with write_transaction(self.db):
            tenant_id = self._insert(
                "tenants",
                {
                    "name": name,
                    "domain": domain,
                    "max_extensions": max_extensions,
                    "max_concurrent_calls": max_concurrent_calls,
                    "status": "active",
                    "srtp": policy.value,
                    "created_at": format_time(now),
                },
                what=f"a tenant named {name!r} or with domain {domain!r}",
            )
            self.audit.append(
                self.db,
                actor,
                "tenant.add",
                f"tenant:{domain}",
                now=now,
                tenant_id=tenant_id,
                details={
                    "name": name,
                    "domain": domain,
                    "max_extensions": max_extensions,
                    "max_concurrent_calls": max_concurrent_calls,
                    "srtp": policy.value,
                },
            )
        return self.tenant(tenant_id)

    def set_tenant_srtp(self, actor: Actor, tenant_id: int, srtp: str) -> Tenant:
        """Change the SRTP policy of a tenant's phones (audited as ``tenant.update``
        with ``{"changed": {"srtp": ...}}``, like ``trunk.update``). No change, no write."""
        policy = parse_srtp(srtp)
        tenant = self.tenant(tenant_id)
        if tenant.srtp is policy:
            return tenant
        now = self.clock()
        with write_transaction(self.db):
            self.db.conn.execute(
                "UPDATE tenants SET srtp = ? WHERE id = ?", (policy.value, tenant.id)
            )
            self.audit.append(
                self.db,
                actor,
                "tenant.update",
                f"tenant:{tenant.domain}",
                now=now,
                tenant_id=tenant.id,
                details={"changed": {"srtp": policy.value}},
            )
        return self.tenant(tenant.id)

    def tenants(self) -> list[Tenant]:
        """All tenants, by domain."""
        return [_tenant(row) for row in self.db.table("tenants").rows_where(order_by="domain")]

    def tenant(self, tenant_id: int) -> Tenant:
        """The tenant with ``tenant_id``, or :class:`NotFoundError`."""
        for row in self.db.table("tenants").rows_where("id = ?", [tenant_id]):
            return _tenant(row)
        raise NotFoundError(f"no tenant with id {tenant_id}")

    def tenant_by_domain(self, domain: str) -> Tenant:
        """The tenant serving ``domain``, or :class:`NotFoundError`."""
        for row in self.db.table("tenants").rows_where("domain = ?", [domain.strip().lower()]):
            return _tenant(row)
        raise NotFoundError(f"no tenant with domain {domain!r}")

    def record(
        self,
        actor: Actor,
        action: str,
        target: str,
        *,
        tenant_id: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Write an audit record for an event that changes no row (a start, a warning)."""
        with write_transaction(self.db):
            return self.audit.append(
                self.db,
                actor,
                action,
                target,
                now=self.clock(),
                tenant_id=tenant_id,
                details=details,
            )

    def checkpoint_audit(self) -> Checkpoint | None:
        """Sign the audit chain's head if it moved since the last checkpoint."""
        with write_transaction(self.db):
            return self.audit.checkpoint(self.db, self.clock())

    def scope(self, tenant_id: int) -> TenantScope:
        """A scope for one existing tenant."""
        return TenantScope(self, self.tenant(tenant_id).id)

    def add_sysadmin(self, actor: Actor, username: str, password_hash: str) -> User:
        """Create a sysadmin (audited as ``user.add``; the hash is not in the record)."""
        return self._add_user(actor, None, _check_username(username), "sysadmin", password_hash)

    def sysadmins(self) -> list[User]:
        """Users with no tenant."""
        rows = self.db.table("users").rows_where("tenant_id IS NULL", order_by="username")
        return [User(**row) for row in rows]

    def _add_user(
        self, actor: Actor, tenant_id: int | None, username: str, role: str, password_hash: str
    ) -> User:
        now = self.clock()
        with write_transaction(self.db):
            user_id = self._insert(
                "users",
                {
                    "tenant_id": tenant_id,
                    "username": username,
                    "role": role,
                    "password_hash": password_hash,
                    "created_at": format_time(now),
                },
                what=f"a user named {username!r}",
            )
            self.audit.append(
                self.db,
                actor,
                "user.add",
                f"user:{username}",
                now=now,
                tenant_id=tenant_id,
                details={"role": role},
            )
        return User(**self.db.table("users").get(user_id))

    def _insert(self, table: str, values: dict[str, Any], what: str) -> int:
        try:
            inserted = self.db.table(table).insert(values)
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                raise ConflictError(f"there is already {what}") from None
            raise
        assert inserted.last_pk is not None
        return int(inserted.last_pk)


class TenantScope:
    """The only way to tenant-owned rows: every query is bound to ``tenant_id``."""

    def __init__(self, directory: Directory, tenant_id: int) -> None:
        self.directory = directory
        self.tenant_id = tenant_id

    def tenant(self) -> Tenant:
        """This scope's tenant."""
        return self.directory.tenant(self.tenant_id)

    def extensions(self) -> ExtensionRepository:
        """This tenant's SIP extensions."""
        from appliance.store.extensions import ExtensionRepository

        return ExtensionRepository(self)

    def trunks(self, sealing_key: bytes) -> TrunkRepository:
        """This tenant's trunks, DIDs, routes and number settings.

        ``sealing_key`` seals and unseals carrier passwords
        (:func:`appliance.store.trunks.sealing_key`).
        """
        from appliance.store.trunks import TrunkRepository

        return TrunkRepository(self, sealing_key)

    def add_user(self, actor: Actor, username: str, role: str, password_hash: str) -> User:
        """Create a user of this tenant (audited)."""
        if role not in TENANT_ROLES:
            raise InvalidInputError(f"role must be one of {', '.join(TENANT_ROLES)}")
        return self.directory._add_user(
            actor, self.tenant_id, _check_username(username), role, password_hash
        )

    def users(self) -> list[User]:
        """This tenant's users."""
        rows = self.directory.db.table("users").rows_where(
            "tenant_id = ?", [self.tenant_id], order_by="username"
        )
        return [User(**row) for row in rows]

    def user(self, username: str) -> User:
        """One of this tenant's users; :class:`NotFoundError` for anyone else's."""
        rows = self.directory.db.table("users").rows_where(
            "tenant_id = ? AND username = ?", [self.tenant_id, username]
        )
        for row in rows:
            return User(**row)
        raise NotFoundError(f"no user {username!r} in this tenant")
