"""SIP extensions: a tenant's phones, with Digest HA1 values and never a password.

Reached only through :meth:`TenantScope.extensions`. The tenant's extension
quota is enforced by a trigger inside the INSERT itself (migration 2), so two
concurrent creators cannot both slip under the limit.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.sip import digest
from appliance.store.audit import format_time
from appliance.store.database import write_transaction
from appliance.store.tenants import ConflictError, InvalidInputError, NotFoundError, StoreError

if TYPE_CHECKING:
    from appliance.store.audit import Actor
    from appliance.store.tenants import TenantScope

_NUMBER = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


class QuotaExceededError(StoreError):
    """The tenant is at its extension limit."""

    kind = "quota"


@dataclass(frozen=True)
class Extension:
    """One extension; ``ha1_*`` are H(number:domain:password) per algorithm."""

    id: int
    tenant_id: int
    number: str
    ha1_sha256: str
    ha1_md5: str
    created_at: str

    def ha1_by_algorithm(self) -> dict[str, str]:
        """The HA1 values keyed by Digest algorithm name."""
        return {digest.SHA256: self.ha1_sha256, digest.MD5: self.ha1_md5}


def check_number(number: str) -> str:
    """Refuse numbers that are not 1-32 lower-case letters, digits, '.', '_' or '-'."""
    if not _NUMBER.fullmatch(number):
        raise InvalidInputError(
            "invalid extension number: 1-32 lower-case letters, digits, '.', '_' or '-'"
        )
    return number


class ExtensionRepository:
    """One tenant's extensions; every query is bound to the scope's tenant."""

    def __init__(self, scope: TenantScope) -> None:
        self._scope = scope
        self._directory = scope.directory
        self.tenant_id = scope.tenant_id

    def add(self, actor: Actor, number: str, password: str) -> Extension:
        """Create an extension (audited as ``extension.add``); the quota is checked atomically."""
        number = check_number(number)
        domain = self._scope.tenant().domain
        now = self._directory.clock()
        values = {
            "tenant_id": self.tenant_id,
            "number": number,
            "ha1_sha256": digest.ha1(digest.SHA256, number, domain, password),
            "ha1_md5": digest.ha1(digest.MD5, number, domain, password),
            "created_at": format_time(now),
        }
        db = self._directory.db
        with write_transaction(db):
            try:
                db.table("extensions").insert(values)
            except sqlite3.IntegrityError as e:
                if "UNIQUE" in str(e):
                    raise ConflictError(f"extension {number} exists in {domain}") from None
                if "quota" in str(e):
                    raise QuotaExceededError(
                        f"{domain} is at its limit of {self._scope.tenant().max_extensions}"
                        " extensions"
                    ) from None
                raise
            self._directory.audit.append(
                db,
                actor,
                "extension.add",
                f"extension:{number}@{domain}",
                now=now,
                tenant_id=self.tenant_id,
            )
        return self.get(number)

    def set_password(self, actor: Actor, number: str, password: str) -> None:
        """Replace an extension's HA1 values (audited as ``extension.passwd``)."""
        extension = self.get(number)
        domain = self._scope.tenant().domain
        now = self._directory.clock()
        db = self._directory.db
        with write_transaction(db):
            db.conn.execute(
                "UPDATE extensions SET ha1_sha256 = ?, ha1_md5 = ? WHERE id = ? AND tenant_id = ?",
                (
                    digest.ha1(digest.SHA256, number, domain, password),
                    digest.ha1(digest.MD5, number, domain, password),
                    extension.id,
                    self.tenant_id,
                ),
            )
            self._directory.audit.append(
                db,
                actor,
                "extension.passwd",
                f"extension:{number}@{domain}",
                now=now,
                tenant_id=self.tenant_id,
            )

    def list(self) -> list[Extension]:
        """This tenant's extensions, by number."""
        rows = self._directory.db.table("extensions").rows_where(
            "tenant_id = ?", [self.tenant_id], order_by="number"
        )
        return [Extension(**row) for row in rows]

    def get(self, number: str) -> Extension:
        """One of this tenant's extensions, or :class:`NotFoundError`."""
        rows = self._directory.db.table("extensions").rows_where(
            "tenant_id = ? AND number = ?", [self.tenant_id, number]
        )
        for row in rows:
            return Extension(**row)
        raise NotFoundError(f"no extension {number!r} in this tenant")
