"""SQLite storage: migrations, tenant-scoped repositories, the audit chain.

Everything here is synchronous and bound to one connection. The CLI calls it
directly; the service calls it only through :class:`appliance.store.thread.StoreThread`,
so the reactor never blocks on the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from appliance.store.audit import AuditLog
from appliance.store.checkpoints import CheckpointKey
from appliance.store.database import open_database
from appliance.store.migrations import migrate
from appliance.store.tenants import Directory


def open_directory(
    path: Path, key: CheckpointKey, checkpoint_every: int, clock: Callable[[], float]
) -> Directory:
    """Open the database at ``path``, bring its schema up to date, and wrap it."""
    db = open_database(path)
    migrate(db)
    return Directory(db, AuditLog(key, checkpoint_every), clock)
