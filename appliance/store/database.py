"""Opening the database and running write transactions.

Connections use ``isolation_level=None`` so Python never opens a transaction
on its own: every write goes through :func:`write_transaction`, which takes
the write lock up front (``BEGIN IMMEDIATE``) so the CLI and the running
service can both write without a mid-transaction ``SQLITE_BUSY``.
sqlite-utils nests its own writes as savepoints inside it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_MS = 5000


def open_database(path: Path | str) -> sqlite_utils.Database:
    """Open ``path`` (created if missing) with the pragmas the store relies on."""
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    # FULL: an audit record acknowledged is an audit record on disk.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    # Without this, INSERT OR REPLACE deletes rows without firing DELETE triggers.
    conn.execute("PRAGMA recursive_triggers=ON")
    return sqlite_utils.Database(conn, execute_plugins=False)


@contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction; roll back on error."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")
