"""Fixtures shared across the suite: a real store on a temporary file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from appliance.store import open_directory
from appliance.store.audit import Actor
from appliance.store.checkpoints import CheckpointKey
from appliance.store.database import open_database, write_transaction
from appliance.store.migrations import MIGRATIONS, _statements
from appliance.store.tenants import Directory


def database_at(path: Path, version: int) -> sqlite_utils.Database:
    """A database built by the first ``version`` migrations only, to test the next."""
    db = open_database(path)
    for applied in range(1, version + 1):
        with write_transaction(db):
            for statement in _statements(MIGRATIONS[applied - 1]):
                db.conn.execute(statement)
            db.conn.execute(f"PRAGMA user_version = {applied}")
    return db


#: A tenant row as an older schema takes it (for tests of a migration).
OLD_TENANT_SQL = (
    "INSERT INTO tenants (name, domain, max_extensions, max_concurrent_calls, created_at)"
    " VALUES ('Old', 'old.example', 3, 2, 'then')"
)


class FakeClock:
    """A settable clock: tests move time, nothing sleeps."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A clock starting at a fixed instant."""
    return FakeClock()


@pytest.fixture
def checkpoint_key() -> CheckpointKey:
    """A fresh Ed25519 checkpoint key."""
    return CheckpointKey.from_pem(CheckpointKey.generate_pem())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test database lives."""
    return tmp_path / "telemancer.sqlite3"


@pytest.fixture
def directory(
    db_path: Path, checkpoint_key: CheckpointKey, clock: FakeClock
) -> Iterator[Directory]:
    """A migrated store on a real file, checkpointing every 5 records."""
    store = open_directory(db_path, checkpoint_key, 5, clock)
    yield store
    store.db.close()


@pytest.fixture
def actor() -> Actor:
    """An operator on the console."""
    return Actor("unix:operator", "console")
