"""Call detail records, their hourly aggregates, and the calls in progress.

The SIP service writes one :class:`~appliance.sip.cdr.CallDetailRecord` per
call when it ends (:func:`write_cdr`); triggers keep the table append-only
and ``UNIQUE (tenant_id, call_id, setup_at)`` keeps a call from being recorded
twice (a retry with the same Call-ID is another call, set up later).
Writing a record also removes the call from ``live_calls`` in the same
transaction, so a call is always in exactly one of the two tables (or in
``cdrs`` only): the aggregator relies on that.

Records and aggregates are read only through a tenant scope
(:class:`CdrRepository`). The system-wide jobs (:func:`aggregate_closed_hours`,
:func:`late_cdr_counts`, :func:`list_live_calls` for the sysadmin CLI) take
the database. Writes here are the service's bookkeeping, not a person's
change, so none of them is audited.

Hourly aggregation, in short (the long version is docs/cdrs.md): a call
counts wholly in the UTC hour of its ``setup_at``; an hour is aggregated once
it has ended *and* no call set up in it is still in progress; rows are never
edited, so a record that arrives after its hour was aggregated stays out of
the figures and is reported by :func:`late_cdr_counts`.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import sqlite_utils

from appliance.sip.cdr import CallDetailRecord
from appliance.store.audit import canonical_json
from appliance.store.database import write_transaction

if TYPE_CHECKING:
    from appliance.store.tenants import TenantScope

HOUR = 3600.0

#: The ``cdrs`` columns that hold a record, in :class:`CallDetailRecord` field order.
CDR_COLUMNS: tuple[str, ...] = (
    "tenant_id",
    "call_id",
    "caller",
    "callee",
    "direction",
    "trunk",
    "setup_at",
    "ringing_at",
    "answered_at",
    "ended_at",
    "disposition",
    "hangup_by",
    "final_status",
    "caller_transport",
    "callee_transport",
    "media",
    "identity",
)

_SELECT_CDRS = (
    "SELECT tenant_id, call_id, caller, callee, direction, trunk, setup_at, ringing_at,"
    " answered_at, ended_at, disposition, hangup_by, final_status, caller_transport,"
    " callee_transport, media, identity FROM cdrs WHERE tenant_id = ?"
)
# ON CONFLICT ... DO NOTHING rather than INSERT OR IGNORE: only the duplicate
# is skipped; a CHECK or foreign-key failure still raises.
_INSERT_CDR = (
    "INSERT INTO cdrs (tenant_id, call_id, caller, callee, direction, trunk, setup_at,"
    " ringing_at, answered_at, ended_at, disposition, hangup_by, final_status,"
    " caller_transport, callee_transport, media, identity)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, call_id, setup_at) DO NOTHING"
)
_DELETE_LIVE_CALL = "DELETE FROM live_calls WHERE tenant_id = ? AND call_id = ?"
_DELETE_RECORDED_LIVE_CALL = _DELETE_LIVE_CALL + " AND setup_at = ?"


def hour_start(when: float) -> float:
    """The start of the UTC hour holding epoch time ``when``."""
    return math.floor(when / HOUR) * HOUR


# -- records -----------------------------------------------------------------


def write_cdr(db: sqlite_utils.Database, record: CallDetailRecord) -> bool:
    """Store one record in its own transaction; False if the call was already recorded.

    The first record of a call stands: a second one is not stored, whatever
    it holds. Either way the call's ``live_calls`` row is removed.
    """
    with write_transaction(db):
        return _insert_cdr(db, record)


def write_cdrs(db: sqlite_utils.Database, records: Iterable[CallDetailRecord]) -> int:
    """Store a batch in one transaction; return how many were new (duplicates skipped)."""
    with write_transaction(db):
        return sum(_insert_cdr(db, record) for record in records)


def _insert_cdr(db: sqlite_utils.Database, record: CallDetailRecord) -> bool:
    cursor = db.conn.execute(
        _INSERT_CDR,
        (
            record.tenant_id,
            record.call_id,
            record.caller,
            record.callee,
            record.direction,
            record.trunk,
            record.setup_at,
            record.ringing_at,
            record.answered_at,
            record.ended_at,
            record.disposition,
            record.hangup_by,
            record.final_status,
            record.caller_transport,
            record.callee_transport,
            canonical_json(dict(record.media)),
            canonical_json(dict(record.identity)),
        ),
    )
    db.conn.execute(
        _DELETE_RECORDED_LIVE_CALL, (record.tenant_id, record.call_id, record.setup_at)
    )
    return cursor.rowcount == 1


def _record(row: tuple[Any, ...]) -> CallDetailRecord:
    values = dict(zip(CDR_COLUMNS, row, strict=True))
    values["media"] = json.loads(values["media"])
    values["identity"] = json.loads(values["identity"])
    return CallDetailRecord(**values)


@dataclass(frozen=True)
class HourlyAggregate:
    """One tenant's calls set up in one UTC hour (a ``cdr_hourly`` row)."""

    tenant_id: int
    hour_start: float
    calls: int
    answered: int
    billable_seconds: float
    #: Unanswered calls by final SIP status (486 busy, 487 cancelled, ...).
    failures: Mapping[int, int]
    #: Most of the tenant's calls in progress at one instant within the hour.
    peak_concurrent: int

    @property
    def billable_minutes(self) -> float:
        """``billable_seconds`` in minutes (not rounded)."""
        return self.billable_seconds / 60


class CdrRepository:
    """One tenant's call records and hourly aggregates; every query is bound to the scope."""

    def __init__(self, scope: TenantScope) -> None:
        self._db = scope.directory.db
        self.tenant_id = scope.tenant_id

    def records(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[CallDetailRecord]:
        """Records set up in ``[since, until)``, by ``setup_at``, streamed from the cursor."""
        sql, params = _window(_SELECT_CDRS, "setup_at", self.tenant_id, since, until)
        for row in self._db.conn.execute(sql + " ORDER BY setup_at, id", params):
            yield _record(row)

    def hourly(
        self, since: float | None = None, until: float | None = None
    ) -> list[HourlyAggregate]:
        """Aggregated hours starting in ``[since, until)``, oldest first."""
        sql, params = _window(
            "SELECT tenant_id, hour_start, calls, answered, billable_seconds, failures,"
            " peak_concurrent FROM cdr_hourly WHERE tenant_id = ?",
            "hour_start",
            self.tenant_id,
            since,
            until,
        )
        out = []
        for tenant_id, start, calls, answered, billable, failures, peak in self._db.conn.execute(
            sql + " ORDER BY hour_start", params
        ):
            by_status = {int(status): count for status, count in json.loads(failures).items()}
            out.append(
                HourlyAggregate(tenant_id, start, calls, answered, billable, by_status, peak)
            )
        return out


def hourly(
    scope: TenantScope, since: float | None = None, until: float | None = None
) -> list[HourlyAggregate]:
    """The scope's aggregated hours starting in ``[since, until)`` (see :class:`CdrRepository`)."""
    return CdrRepository(scope).hourly(since, until)


def _window(
    sql: str, column: str, tenant_id: int, since: float | None, until: float | None
) -> tuple[str, list[object]]:
    params: list[object] = [tenant_id]
    if since is not None:
        sql += f" AND {column} >= ?"
        params.append(since)
    if until is not None:
        sql += f" AND {column} < ?"
        params.append(until)
    return sql, params


# -- hourly aggregation ----------------------------------------------------------


@dataclass
class _Hour:
    """An hour being added up."""

    start: float
    peak: int
    calls: int = 0
    answered: int = 0
    billable: float = 0.0
    failures: dict[int, int] = field(default_factory=dict)

    def add(self, answered_at: float | None, ended_at: float, status: int) -> None:
        self.calls += 1
        if answered_at is None:
            self.failures[status] = self.failures.get(status, 0) + 1
        else:
            self.answered += 1
            # The rule of CallDetailRecord.billable_seconds.
            self.billable += max(0.0, ended_at - answered_at)


def aggregate_closed_hours(db: sqlite_utils.Database, now: float) -> int:
    """Add the ``cdr_hourly`` rows of every tenant's newly closed hours; return how many.

    An hour closes for a tenant when it has ended (``hour_start + 3600 <= now``)
    and none of the tenant's calls set up in it is still in ``live_calls``; it
    gets a row if any call was set up in it. Each tenant resumes after its
    latest aggregated hour (a watermark, so nothing aggregated is rescanned)
    and stops before its first hour that is not closed, in one transaction per
    tenant. Rows are only ever inserted (``ON CONFLICT DO NOTHING``): running
    again inserts nothing new for the same data, and a record arriving later
    for an hour at or before the watermark is left out (:func:`late_cdr_counts`).
    """
    first_open = hour_start(now)
    tenants = [tenant_id for (tenant_id,) in db.conn.execute("SELECT id FROM tenants ORDER BY id")]
    inserted = 0
    for tenant_id in tenants:
        with write_transaction(db):
            inserted += _aggregate_tenant(db, tenant_id, first_open)
    return inserted


def _aggregate_tenant(db: sqlite_utils.Database, tenant_id: int, first_open: float) -> int:
    (last,) = db.conn.execute(
        "SELECT MAX(hour_start) FROM cdr_hourly WHERE tenant_id = ?", (tenant_id,)
    ).fetchone()
    if last is not None:
        start = last + HOUR
    else:
        (first,) = db.conn.execute(
            "SELECT MIN(setup_at) FROM cdrs WHERE tenant_id = ?", (tenant_id,)
        ).fetchone()
        if first is None:
            return 0
        start = hour_start(first)
    (live,) = db.conn.execute(
        "SELECT MIN(setup_at) FROM live_calls WHERE tenant_id = ? AND setup_at >= ?",
        (tenant_id, start),
    ).fetchone()
    end = first_open if live is None else min(first_open, hour_start(live))
    if start >= end:
        return 0
    inserted = 0
    for hour in list(_hours(db, tenant_id, start, end)):
        cursor = db.conn.execute(
            "INSERT INTO cdr_hourly (tenant_id, hour_start, calls, answered, billable_seconds,"
            " failures, peak_concurrent) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (tenant_id, hour_start) DO NOTHING",
            (
                tenant_id,
                hour.start,
                hour.calls,
                hour.answered,
                hour.billable,
                canonical_json({str(status): n for status, n in hour.failures.items()}),
                hour.peak,
            ),
        )
        inserted += cursor.rowcount
    return inserted


def _hours(db: sqlite_utils.Database, tenant_id: int, start: float, end: float) -> Iterator[_Hour]:
    """Sweep the calls set up in ``[start, end)`` in order, one hour at a time.

    ``ending`` is a heap of the end times of the calls in progress (intervals
    are ``[setup_at, ended_at)``), seeded with the calls set up before
    ``start`` that were still going at ``start``; its size after a call starts
    is the concurrency then. Concurrency only rises when a call starts, so an
    hour's peak is its count at the hour's first instant or just after one of
    its calls started. Memory is bounded by the concurrency, not the hours.
    """
    ending = [
        ended_at
        for (ended_at,) in db.conn.execute(
            "SELECT ended_at FROM cdrs INDEXED BY cdrs_tenant_ended"
            " WHERE tenant_id = ? AND ended_at > ? AND setup_at < ?",
            (tenant_id, start, start),
        )
    ]
    heapq.heapify(ending)
    current: _Hour | None = None
    rows = db.conn.execute(
        "SELECT setup_at, answered_at, ended_at, final_status FROM cdrs"
        " WHERE tenant_id = ? AND setup_at >= ? AND setup_at < ? ORDER BY setup_at, id",
        (tenant_id, start, end),
    )
    for setup_at, answered_at, ended_at, status in rows:
        hour = hour_start(setup_at)
        if current is None or current.start != hour:
            if current is not None:
                yield current
            _drop_ended(ending, hour)
            current = _Hour(hour, peak=len(ending))
        _drop_ended(ending, setup_at)
        if ended_at > setup_at:
            heapq.heappush(ending, ended_at)
        current.peak = max(current.peak, len(ending))
        current.add(answered_at, ended_at, status)
    if current is not None:
        yield current


def _drop_ended(ending: list[float], at: float) -> None:
    while ending and ending[0] <= at:
        heapq.heappop(ending)


def late_cdr_counts(db: sqlite_utils.Database) -> dict[int, int]:
    """Records left out of the hourly figures because they arrived late, by tenant id.

    A record is late when its setup hour is at or before the tenant's latest
    aggregated hour and was not counted there. Counts the tenant's records
    up to that hour through the ``(tenant_id, setup_at)`` index, so its cost
    grows with the history: meant for an operator's check or a log line, not
    for every call.
    """
    rows = db.conn.execute(
        "SELECT h.tenant_id, (SELECT COUNT(*) FROM cdrs c WHERE c.tenant_id = h.tenant_id"
        " AND c.setup_at < h.mark) - h.counted FROM (SELECT tenant_id,"
        " MAX(hour_start) + 3600 AS mark, SUM(calls) AS counted FROM cdr_hourly"
        " GROUP BY tenant_id) h ORDER BY h.tenant_id"
    )
    return {tenant_id: late for tenant_id, late in rows if late > 0}


# -- calls in progress -----------------------------------------------------------


class LiveCallFields(Protocol):
    """What the store keeps of a call in progress (the SIP core's ``LiveCall`` action fits)."""

    @property
    def tenant_id(self) -> int: ...
    @property
    def call_id(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def callee(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def setup_at(self) -> float: ...
    @property
    def answered_at(self) -> float | None: ...


@dataclass(frozen=True)
class LiveCallEntry:
    """A call in progress, as a plain value (for callers without a SIP action at hand)."""

    tenant_id: int
    call_id: str
    caller: str
    callee: str
    direction: str
    state: str
    setup_at: float
    answered_at: float | None = None


@dataclass(frozen=True)
class LiveCallRow:
    """One line of ``telemancer calls list``."""

    domain: str
    call_id: str
    caller: str
    callee: str
    direction: str
    state: str
    setup_at: float
    answered_at: float | None


# A call that already has a record has ended: it is never made live again,
# whatever order the service's writes arrive in.
_SAVE_LIVE_CALL = (
    "INSERT OR REPLACE INTO live_calls (tenant_id, call_id, caller, callee, direction, state,"
    " setup_at, answered_at) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE NOT EXISTS"
    " (SELECT 1 FROM cdrs WHERE tenant_id = ? AND call_id = ? AND setup_at = ?)"
)


def _live_values(call: LiveCallFields) -> tuple[object, ...]:
    return (
        call.tenant_id,
        call.call_id,
        call.caller,
        call.callee,
        call.direction,
        call.state,
        call.setup_at,
        call.answered_at,
        call.tenant_id,
        call.call_id,
        call.setup_at,
    )


def write_live_calls(db: sqlite_utils.Database, calls: Iterable[LiveCallFields]) -> None:
    """Apply a batch of live-call changes in one transaction: a call in state
    ``ended`` is forgotten, any other is saved (unless already recorded).

    The service writes what changed each second this way: one commit, and so
    one WAL sync, instead of one per call.
    """
    ended: list[tuple[object, ...]] = []
    current: list[tuple[object, ...]] = []
    for call in calls:
        if call.state == "ended":
            ended.append((call.tenant_id, call.call_id))
        else:
            current.append(_live_values(call))
    with write_transaction(db):
        db.conn.executemany(_DELETE_LIVE_CALL, ended)
        db.conn.executemany(_SAVE_LIVE_CALL, current)


def replace_live_calls(db: sqlite_utils.Database, calls: Iterable[LiveCallFields]) -> None:
    """Make ``live_calls`` exactly ``calls`` (less any already recorded), in one transaction.

    For reconciliation, and with no calls at service start: rows left by a
    process that died would otherwise hold back their hours' aggregation.
    """
    with write_transaction(db):
        db.conn.execute("DELETE FROM live_calls")
        db.conn.executemany(_SAVE_LIVE_CALL, [_live_values(call) for call in calls])


def list_live_calls(db: sqlite_utils.Database, domain: str | None = None) -> list[LiveCallRow]:
    """Calls in progress, of one tenant or all (a sysadmin view), by domain and setup time."""
    sql = (
        "SELECT t.domain, l.call_id, l.caller, l.callee, l.direction, l.state, l.setup_at,"
        " l.answered_at FROM live_calls l JOIN tenants t ON t.id = l.tenant_id"
    )
    params: list[object] = []
    if domain is not None:
        sql += " WHERE t.domain = ?"
        params.append(domain.strip().lower())
    rows = db.conn.execute(sql + " ORDER BY t.domain, l.setup_at, l.call_id", params)
    return [LiveCallRow(*row) for row in rows]
