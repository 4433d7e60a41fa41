"""The audit chain: append-only by trigger, tamper-evident without them.

Tampering tests edit the database file through plain ``sqlite3`` with the
triggers dropped, as someone with file access would.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from appliance.store.audit import (
    Actor,
    AuditRecord,
    checkpoints,
    records,
    verify,
    verify_database,
)
from appliance.store.checkpoints import Checkpoint, CheckpointKey
from appliance.store.database import write_transaction
from appliance.store.tenants import Directory
from tests.conftest import FakeClock

TEXT_COLUMNS = ("ts", "actor", "source", "action", "target", "details", "prev_hash", "hash")


def _fill(directory: Directory, actor: Actor, clock: FakeClock, count: int) -> None:
    for i in range(count):
        clock.advance(1)
        directory.record(
            actor,
            "test.event",
            f"thing:{i}",
            tenant_id=i % 3 or None,
            details={"i": i, "note": "ünïcode"},
        )


def _tamper(db_path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Edit the file as an attacker would: a plain connection, triggers dropped."""
    conn = sqlite3.connect(db_path)
    triggers = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name LIKE 'audit%'"
    ).fetchall()
    for (name,) in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def _flip(text: str) -> str:
    """The same text with one character in the middle changed."""
    i = len(text) // 2
    return text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :]


def test_clean_chain_verifies(
    directory: Directory, actor: Actor, clock: FakeClock, checkpoint_key: CheckpointKey
) -> None:
    """An untouched chain verifies, and checkpoints land every 5 records."""
    _fill(directory, actor, clock, 12)
    verdict = verify_database(directory.db, checkpoint_key.public_key)
    assert verdict.ok and verdict.records == 12 and verdict.last_checkpoint == 10
    assert [cp.seq for cp in checkpoints(directory.db)] == [5, 10]


def test_triggers_refuse_update_delete_and_replace(
    directory: Directory, actor: Actor, clock: FakeClock
) -> None:
    """UPDATE, DELETE, INSERT OR REPLACE and an out-of-chain INSERT all abort."""
    _fill(directory, actor, clock, 6)
    row = directory.db.conn.execute("SELECT * FROM audit_log WHERE seq = 2").fetchone()
    for sql, params in [
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", ()),
        ("DELETE FROM audit_log WHERE seq = 2", ()),
        ("INSERT OR REPLACE INTO audit_log VALUES (?,?,?,?,?,?,?,?,?,?)", row),
        ("INSERT INTO audit_log VALUES (99,?,?,?,?,?,?,?,?,?)", row[1:]),
        ("UPDATE audit_checkpoints SET hash = 'x'", ()),
        ("DELETE FROM audit_checkpoints", ()),
    ]:
        with pytest.raises(sqlite3.DatabaseError, match=r"append-only|extend the chain"):
            directory.db.conn.execute(sql, params)
    assert len(list(records(directory.db))) == 6


@pytest.mark.parametrize("column", TEXT_COLUMNS)
def test_one_changed_byte_in_any_text_column_is_caught(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
    column: str,
) -> None:
    """Changing one character of any text column of record 3 breaks the chain at 3."""
    _fill(directory, actor, clock, 8)
    original = directory.db.conn.execute(
        f"SELECT {column} FROM audit_log WHERE seq = 3"
    ).fetchone()[0]
    _tamper(db_path, f"UPDATE audit_log SET {column} = ? WHERE seq = 3", (_flip(original),))
    verdict = verify_database(directory.db, checkpoint_key.public_key)
    assert (verdict.broken_seq, verdict.records) == (3, 2)
    assert verdict.reason is not None and verdict.reason.startswith("content changed")


def test_changed_tenant_is_caught(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """Moving a record to another tenant (an integer column) is a content change."""
    _fill(directory, actor, clock, 8)
    _tamper(db_path, "UPDATE audit_log SET tenant_id = 7 WHERE seq = 4")
    verdict = verify_database(directory.db, checkpoint_key.public_key)
    assert verdict.broken_seq == 4 and str(verdict.reason).startswith("content changed")


def test_renumbered_record_is_caught(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """Changing a record's sequence number leaves a gap where it was."""
    _fill(directory, actor, clock, 8)
    _tamper(db_path, "UPDATE audit_log SET seq = 1003 WHERE seq = 3")
    verdict = verify_database(directory.db, checkpoint_key.public_key)
    assert verdict.broken_seq == 3 and str(verdict.reason).startswith("record missing")


def test_deleted_record_is_caught(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """A record deleted from the middle is reported missing at its sequence number."""
    _fill(directory, actor, clock, 8)
    _tamper(db_path, "DELETE FROM audit_log WHERE seq = 6")
    verdict = verify_database(directory.db, checkpoint_key.public_key)
    assert (verdict.broken_seq, verdict.records) == (6, 5)
    assert str(verdict.reason).startswith("record missing")


def test_deleted_and_renumbered_record_is_caught(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """Deleting a record and closing the gap still breaks the link after it."""
    _fill(directory, actor, clock, 8)
    _tamper(db_path, "DELETE FROM audit_log WHERE seq = 6")
    for seq in (7, 8):
        _tamper(db_path, "UPDATE audit_log SET seq = ? WHERE seq = ?", (seq - 1, seq))
    verdict = verify_database(directory.db, checkpoint_key.public_key)
    assert verdict.broken_seq == 6 and str(verdict.reason).startswith("record missing")


def test_swapped_records_are_caught(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """Two records exchanged in place are reported as an order change."""
    _fill(directory, actor, clock, 8)
    _tamper(db_path, "UPDATE audit_log SET seq = -1 WHERE seq = 4")
    _tamper(db_path, "UPDATE audit_log SET seq = 4 WHERE seq = 5")
    _tamper(db_path, "UPDATE audit_log SET seq = 5 WHERE seq = -1")
    verdict = verify_database(directory.db, checkpoint_key.public_key)
    assert verdict.broken_seq == 4 and str(verdict.reason).startswith("order changed")


def test_truncated_tail_is_caught_by_an_exported_checkpoint(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """Cutting records and checkpoints off the end passes the chain check alone, but
    not against a checkpoint exported before the cut."""
    _fill(directory, actor, clock, 12)
    exported = checkpoints(directory.db)
    _tamper(db_path, "DELETE FROM audit_log WHERE seq > 7")
    _tamper(db_path, "DELETE FROM audit_checkpoints WHERE seq > 7")
    assert verify_database(directory.db, checkpoint_key.public_key).ok
    verdict = verify_database(directory.db, checkpoint_key.public_key, exported)
    assert verdict.broken_seq == 8 and "truncated" in str(verdict.reason)


def test_truncated_tail_is_caught_by_a_stored_checkpoint(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """Cutting records but leaving the checkpoints is caught by the stored ones."""
    _fill(directory, actor, clock, 12)
    _tamper(db_path, "DELETE FROM audit_log WHERE seq > 7")
    verdict = verify_database(directory.db, checkpoint_key.public_key)
    assert verdict.broken_seq == 8 and "truncated" in str(verdict.reason)


def test_rebuilt_chain_is_caught_by_a_checkpoint(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """Editing a record and recomputing every later hash leaves a self-consistent chain
    that no longer matches the signed checkpoint."""
    _fill(directory, actor, clock, 12)
    exported = checkpoints(directory.db)
    chain = list(records(directory.db))
    forged = [dataclasses.replace(chain[0], actor="mallory")]
    from appliance.store.audit import chain_hash

    forged[0] = dataclasses.replace(forged[0], hash=chain_hash(forged[0].prev_hash, forged[0]))
    for record in chain[1:]:
        linked = dataclasses.replace(record, prev_hash=forged[-1].hash)
        forged.append(dataclasses.replace(linked, hash=chain_hash(linked.prev_hash, linked)))
    assert verify(forged, [], checkpoint_key.public_key).ok
    verdict = verify(forged, exported, checkpoint_key.public_key)
    assert verdict.broken_seq == 5 and "checkpoint" in str(verdict.reason)


def test_forged_checkpoint_signature_is_caught(
    directory: Directory,
    actor: Actor,
    clock: FakeClock,
    checkpoint_key: CheckpointKey,
    db_path: Path,
) -> None:
    """A checkpoint whose signature does not verify is reported at its sequence number,
    as is one signed by a different key."""
    _fill(directory, actor, clock, 6)
    cp = checkpoints(directory.db)[0]
    tampered = dataclasses.replace(cp, hash=_flip(cp.hash))
    verdict = verify(records(directory.db), [tampered], checkpoint_key.public_key)
    assert verdict.broken_seq == 5 and verdict.reason == "checkpoint signature invalid"
    other_key = CheckpointKey.from_pem(CheckpointKey.generate_pem())
    foreign = other_key.sign(cp.seq, cp.hash, cp.ts)
    verdict = verify(records(directory.db), [foreign], checkpoint_key.public_key)
    assert verdict.broken_seq == 5 and verdict.reason == "checkpoint signature invalid"


def test_export_round_trips_and_verifies_offline(
    directory: Directory, actor: Actor, clock: FakeClock, checkpoint_key: CheckpointKey
) -> None:
    """JSON-lines export parses back to identical records that verify without the database."""
    _fill(directory, actor, clock, 7)
    lines = [r.to_json() for r in records(directory.db)]
    parsed = [AuditRecord.from_json(line) for line in lines]
    assert parsed == list(records(directory.db))
    cps = [Checkpoint.from_json(cp.to_json()) for cp in checkpoints(directory.db)]
    assert verify(parsed, cps, checkpoint_key.public_key).ok
    edited = [*parsed[:2], dataclasses.replace(parsed[2], target="thing:x"), *parsed[3:]]
    assert verify(edited, cps, checkpoint_key.public_key).broken_seq == 3


def test_incremental_verification_matches_full(
    directory: Directory, actor: Actor, clock: FakeClock, checkpoint_key: CheckpointKey
) -> None:
    """Verifying from a known-good head checks only the new records, with the same result."""
    _fill(directory, actor, clock, 4)
    first = verify_database(directory.db, checkpoint_key.public_key)
    _fill(directory, actor, clock, 3)
    later = verify(
        records(directory.db, after=first.records),
        checkpoints(directory.db),
        checkpoint_key.public_key,
        start=(first.records, first.head_hash),
    )
    assert later.ok and later.records == 7
    assert later == verify_database(directory.db, checkpoint_key.public_key)


def test_timed_checkpoint_only_when_the_chain_moved(
    directory: Directory, actor: Actor, clock: FakeClock
) -> None:
    """A timed checkpoint signs the head once; without new records it writes nothing."""
    _fill(directory, actor, clock, 2)
    made = directory.checkpoint_audit()
    assert made is not None and made.seq == 2
    assert directory.checkpoint_audit() is None


def test_append_outside_a_transaction_is_refused(directory: Directory, actor: Actor) -> None:
    """The audit record must share the change's transaction; appending bare is a bug."""
    with pytest.raises(RuntimeError):
        directory.audit.append(directory.db, actor, "x", "y", now=0.0)
    with write_transaction(directory.db):
        directory.audit.append(directory.db, actor, "x", "y", now=0.0)
    assert len(list(records(directory.db))) == 1
