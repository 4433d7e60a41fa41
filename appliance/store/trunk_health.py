"""Trunk health: the OPTIONS ping history of each trunk (docs/trunks.md).

The SIP service writes every ping with :func:`record_health` (system-level,
not audited); the CLI reads one trunk's history through a tenant scope with
:func:`health`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlite_utils

from appliance.store.database import write_transaction
from appliance.store.tenants import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from appliance.store.tenants import TenantScope

__all__ = ["DEFAULT_HEALTH_LIMIT", "HealthSample", "health", "record_health"]

DEFAULT_HEALTH_LIMIT = 100


@dataclass(frozen=True)
class HealthSample:
    """One OPTIONS ping of a trunk: when, whether it was up, the status (None
    without an answer) and the round trip in seconds."""

    at: float
    up: bool
    status: int | None
    rtt: float | None


def record_health(
    db: sqlite_utils.Database,
    trunk_id: int,
    at: float,
    up: bool,
    status: int | None,
    rtt: float | None,
) -> None:
    """Store one OPTIONS ping result (written by the service; not audited: no
    person changed anything). :class:`NotFoundError` for an unknown trunk."""
    if status is not None and not 100 <= status <= 699:
        raise InvalidInputError(f"invalid SIP status {status}: expected 100-699")
    if rtt is not None and rtt < 0:
        raise InvalidInputError("round-trip time must not be negative")
    with write_transaction(db):
        cursor = db.conn.execute(
            "INSERT INTO trunk_health (tenant_id, trunk_id, at, up, status, rtt)"
            " SELECT tenant_id, id, ?, ?, ?, ? FROM trunks WHERE id = ?",
            (at, 1 if up else 0, status, rtt, trunk_id),
        )
        if cursor.rowcount != 1:
            raise NotFoundError(f"no trunk with id {trunk_id}")


def health(
    scope: TenantScope, trunk_name: str, limit: int = DEFAULT_HEALTH_LIMIT
) -> list[HealthSample]:
    """The latest ``limit`` pings of one of the scope's trunks, newest first."""
    if limit < 1:
        raise InvalidInputError("limit must be 1 or more")
    rows = scope.directory.db.conn.execute(
        "SELECT h.at, h.up, h.status, h.rtt FROM trunk_health h"
        " JOIN trunks t ON t.id = h.trunk_id AND t.tenant_id = h.tenant_id"
        " WHERE h.tenant_id = ? AND t.name = ? ORDER BY h.at DESC, h.id DESC LIMIT ?",
        (scope.tenant_id, trunk_name, limit),
    )
    samples = [HealthSample(at, bool(up), status, rtt) for at, up, status, rtt in rows]
    if (
        not samples
        and not scope.directory.db.conn.execute(
            "SELECT 1 FROM trunks WHERE tenant_id = ? AND name = ?", (scope.tenant_id, trunk_name)
        ).fetchone()
    ):
        raise NotFoundError(f"no trunk {trunk_name!r} in this tenant")
    return samples
