"""The append-only, hash-chained audit log.

Each record's ``hash`` is SHA-256 over the previous record's hash and the
record's own columns in canonical JSON, so changing, removing or reordering a
record breaks every link after it, even for someone who drops the triggers and
edits the file. Signed checkpoints (:mod:`appliance.store.checkpoints`) catch
what a chain cannot: a truncated tail or a chain rebuilt from scratch.

Records are written by :meth:`AuditLog.append` inside the same transaction as
the change they describe.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.store.checkpoints import Checkpoint, CheckpointKey, signature_valid

GENESIS_HASH = "0" * 64
COLUMNS = (
    "seq",
    "ts",
    "actor",
    "tenant_id",
    "source",
    "action",
    "target",
    "details",
    "prev_hash",
    "hash",
)


@dataclass(frozen=True)
class Actor:
    """Who made a change: a user, token or the local console, and from where."""

    name: str
    source: str


@dataclass(frozen=True)
class AuditRecord:
    """One row of ``audit_log``, exactly as stored."""

    seq: int
    ts: str
    actor: str
    tenant_id: int | None
    source: str
    action: str
    target: str
    details: str
    prev_hash: str
    hash: str

    def to_json(self) -> str:
        """One line of ``telemancer audit export``."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> AuditRecord:
        """Parse an exported line; raise ValueError if a column is missing."""
        data: Any = json.loads(line)
        if not isinstance(data, dict) or set(data) != set(COLUMNS):
            raise ValueError("export line does not hold exactly the audit columns")
        return cls(**data)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, record: AuditRecord | Mapping[str, Any]) -> str:
    """The hash a record must carry, given the hash before it.

    Covers every column but ``seq`` and ``hash``: position is bound by the link
    to the previous hash and by sequence contiguity, which keeps a swapped pair
    recognisable as a swap rather than as two edits.
    """
    row = asdict(record) if isinstance(record, AuditRecord) else record
    body = [row[name] for name in COLUMNS[1:-2]]
    payload = prev_hash + "\n" + canonical_json(body)
    return hashlib.sha256(payload.encode()).hexdigest()


def format_time(now: float) -> str:
    """UTC ISO 8601 with microseconds, as stored in ``ts`` columns."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    """Appends records and writes a signed checkpoint every ``checkpoint_every``."""

    def __init__(self, key: CheckpointKey, checkpoint_every: int) -> None:
        self.key = key
        self.checkpoint_every = checkpoint_every

    def append(
        self,
        db: sqlite_utils.Database,
        actor: Actor,
        action: str,
        target: str,
        *,
        now: float,
        tenant_id: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record; must run inside the change's write transaction."""
        if not db.conn.in_transaction:
            raise RuntimeError("audit records are written inside the change's transaction")
        last = db.conn.execute(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        fields: dict[str, Any] = {
            "seq": seq,
            "ts": format_time(now),
            "actor": actor.name,
            "tenant_id": tenant_id,
            "source": actor.source,
            "action": action,
            "target": target,
            "details": canonical_json(dict(details or {})),
            "prev_hash": prev_hash,
        }
        record = AuditRecord(**fields, hash=chain_hash(prev_hash, fields))
        db.table("audit_log").insert(asdict(record))
        last_checkpoint = latest_checkpoint_seq(db)
        if seq - last_checkpoint >= self.checkpoint_every:
            self._store_checkpoint(db, self.key.sign(seq, record.hash, record.ts))
        return record

    def checkpoint(self, db: sqlite_utils.Database, now: float) -> Checkpoint | None:
        """Sign the chain's head if records arrived since the last checkpoint."""
        last = db.conn.execute(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if last is None or last[0] <= latest_checkpoint_seq(db):
            return None
        checkpoint = self.key.sign(last[0], last[1], format_time(now))
        self._store_checkpoint(db, checkpoint)
        return checkpoint

    @staticmethod
    def _store_checkpoint(db: sqlite_utils.Database, checkpoint: Checkpoint) -> None:
        db.conn.execute(
            "INSERT INTO audit_checkpoints (seq, hash, ts, key_id, signature)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                checkpoint.seq,
                checkpoint.hash,
                checkpoint.ts,
                checkpoint.key_id,
                checkpoint.signature,
            ),
        )


def latest_checkpoint_seq(db: sqlite_utils.Database) -> int:
    """The highest checkpointed sequence number, 0 if none."""
    return int(
        db.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints").fetchone()[0]
    )


def records(db: sqlite_utils.Database, after: int = 0) -> Iterator[AuditRecord]:
    """Stored records in sequence order, streamed."""
    for row in db.table("audit_log").rows_where("seq > ?", [after], order_by="seq"):
        yield AuditRecord(**row)


def checkpoints(db: sqlite_utils.Database) -> list[Checkpoint]:
    """Stored checkpoints in sequence order."""
    rows = db.table("audit_checkpoints").rows_where(order_by="seq")
    return [Checkpoint(**row) for row in rows]


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: records verified, the head hash, the first break if any."""

    records: int
    head_hash: str
    last_checkpoint: int | None
    broken_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the chain and every checkpoint agree."""
        return self.broken_seq is None


def verify(
    chain: Iterable[AuditRecord],
    known_checkpoints: Iterable[Checkpoint],
    public_key: Ed25519PublicKey,
    *,
    start: tuple[int, str] = (0, GENESIS_HASH),
) -> Verdict:
    """Walk ``chain`` from ``start`` and report the first break.

    ``start`` is a ``(seq, hash)`` already verified, for incremental checks.
    A break is one of: a checkpoint whose signature is invalid; a record whose
    columns no longer give its hash (content changed); a sequence gap (record
    missing); a record linked to a hash found later in the chain (order
    changed) or to none (record missing); a record that disagrees with a
    signed checkpoint (chain rebuilt); a chain that ends before a checkpoint
    (truncated).
    """
    problems: list[tuple[int, str]] = []
    signed: dict[int, Checkpoint] = {}
    for cp in known_checkpoints:
        if signature_valid(cp, public_key):
            signed.setdefault(cp.seq, cp)
            if signed[cp.seq].hash != cp.hash:
                problems.append((cp.seq, "two signed checkpoints disagree"))
        else:
            problems.append((cp.seq, "checkpoint signature invalid"))
    seq, head = start
    matched: int | None = max((s for s in signed if s <= seq), default=None)
    rows = iter(chain)
    for record in rows:
        expected = seq + 1
        if record.seq != expected:
            if record.seq > expected:
                problems.append((expected, "record missing (sequence gap)"))
            else:
                problems.append((record.seq, "order changed (sequence out of place)"))
            break
        if chain_hash(record.prev_hash, record) != record.hash:
            problems.append((record.seq, "content changed (hash does not match the record)"))
            break
        if record.prev_hash != head:
            later = any(other.hash == record.prev_hash for other in rows)
            reason = "order changed" if later else "record missing"
            problems.append((record.seq, f"{reason} (does not link to the previous record)"))
            break
        checkpoint = signed.get(record.seq)
        if checkpoint is not None:
            if checkpoint.hash != record.hash:
                problems.append((record.seq, "differs from a signed checkpoint (chain rewritten)"))
                break
            matched = record.seq
        seq, head = record.seq, record.hash
    else:
        beyond = [s for s in signed if s > seq]
        if beyond:
            problems.append(
                (
                    seq + 1,
                    f"chain ends at {seq}, before signed checkpoint {max(beyond)} (truncated)",
                )
            )
    if not problems:
        return Verdict(seq, head, matched)
    broken, reason = min(problems)
    return Verdict(seq, head, matched, broken, reason)


def verify_database(
    db: sqlite_utils.Database,
    public_key: Ed25519PublicKey,
    extra_checkpoints: Iterable[Checkpoint] = (),
) -> Verdict:
    """Verify the stored chain against stored and exported checkpoints."""
    return verify(records(db), [*checkpoints(db), *extra_checkpoints], public_key)
