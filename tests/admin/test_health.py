"""``GET /healthz`` in memory, through treq's StubTreq."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, cast

from treq.testing import StubTreq
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.trial.unittest import SynchronousTestCase

from appliance.admin.health import HealthApp
from appliance.store.audit import Actor
from appliance.store.checkpoints import CheckpointKey
from appliance.store.migrations import MIGRATIONS
from appliance.store.tenants import Directory
from appliance.testing.store import InlineStore


def _client(health: HealthApp) -> Any:
    """An in-memory HTTP client for the app (StubTreq's methods are dynamic)."""
    return StubTreq(health.app.resource())


def _get(case: SynchronousTestCase, treq: Any) -> tuple[int, dict[str, Any]]:
    response = case.successResultOf(treq.get("https://appliance.test/healthz"))
    body = case.successResultOf(response.content())
    return response.code, json.loads(body)


def test_healthy_store_and_chain(
    directory: Directory, checkpoint_key: CheckpointKey, actor: Actor
) -> None:
    """An intact chain answers 200 with the record count; new records are picked up."""
    case = SynchronousTestCase()
    directory.record(actor, "test.event", "x")
    treq = _client(HealthApp(InlineStore(directory), checkpoint_key.public_key))
    code, body = _get(case, treq)
    assert code == 200
    assert body == {
        "status": "ok",
        "store": {"ok": True, "schema_version": len(MIGRATIONS)},
        "audit": {"ok": True, "records": 1, "last_checkpoint": None},
    }
    directory.record(actor, "test.event", "y")
    assert _get(case, treq)[1]["audit"]["records"] == 2


def test_broken_chain_is_503(
    directory: Directory, checkpoint_key: CheckpointKey, actor: Actor, db_path: Path
) -> None:
    """A chain edited behind the store's back turns health to 503 with the broken record."""
    case = SynchronousTestCase()
    for target in ("a", "b", "c"):
        directory.record(actor, "test.event", target)
    treq = _client(HealthApp(InlineStore(directory), checkpoint_key.public_key))
    assert _get(case, treq)[0] == 200
    directory.record(actor, "test.event", "d")
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET target = 'e' WHERE seq = 4")
    conn.commit()
    code, body = _get(case, treq)
    assert code == 503 and body["status"] == "failing"
    assert body["audit"]["broken_seq"] == 4 and body["audit"]["ok"] is False


def test_store_failure_is_503(directory: Directory, checkpoint_key: CheckpointKey) -> None:
    """When the store cannot answer, health says so with 503 and no internals."""
    case = SynchronousTestCase()
    directory.db.close()
    health = HealthApp(InlineStore(directory), checkpoint_key.public_key)
    events: list[LogEvent] = []
    health.log = Logger(observer=cast(ILogObserver, events.append))
    code, body = _get(case, _client(health))
    assert code == 503 and body == {
        "status": "failing",
        "store": {"ok": False, "error": "unavailable"},
    }
    assert [e["log_format"] for e in events] == ["health check could not read the store"]
