"""Call detail records, hourly aggregates and live calls in the store."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.sip.cdr import CallDetailRecord
from appliance.store.audit import Actor, records
from appliance.store.cdrs import (
    CDR_COLUMNS,
    CdrRepository,
    HourlyAggregate,
    LiveCallEntry,
    LiveCallRow,
    aggregate_closed_hours,
    hour_start,
    hourly,
    late_cdr_counts,
    list_live_calls,
    replace_live_calls,
    write_cdr,
    write_cdrs,
    write_live_calls,
)
from appliance.store.database import write_transaction
from appliance.store.migrations import migrate
from appliance.store.tenants import Directory, Tenant
from tests.conftest import OLD_TENANT_SQL, FakeClock, database_at

#: The fake clock's start (2027-01-15T08:00:00Z) is aligned to an hour.
T = 1_800_000_000.0
H0, H1, H2, H3 = (T - 4 * 3600, T - 3 * 3600, T - 2 * 3600, T - 3600)


@pytest.fixture
def tenants(directory: Directory, actor: Actor) -> tuple[Tenant, Tenant]:
    """Tenants acme.example and bravo.example."""
    return (
        directory.add_tenant(
            actor, "Acme", "acme.example", max_extensions=5, max_concurrent_calls=9
        ),
        directory.add_tenant(
            actor, "Bravo", "bravo.example", max_extensions=5, max_concurrent_calls=9
        ),
    )


def cdr(
    tenant: Tenant | int,
    call_id: str,
    setup_at: float,
    ended_at: float,
    *,
    answered_at: float | None = None,
    status: int | None = None,
    **changes: Any,
) -> CallDetailRecord:
    """A record: answered (200) if ``answered_at`` is given, else failed with ``status``."""
    answered = answered_at is not None
    record = CallDetailRecord(
        tenant_id=tenant if isinstance(tenant, int) else tenant.id,
        call_id=call_id,
        caller="sip:200@acme.example",
        callee="sip:201@acme.example",
        direction="internal",
        trunk=None,
        setup_at=setup_at,
        ringing_at=None,
        answered_at=answered_at,
        ended_at=ended_at,
        disposition="answered" if answered else "failed",
        hangup_by="caller" if answered else None,
        final_status=200 if answered else (status or 404),
        caller_transport="tls",
        callee_transport="tls" if answered else None,
    )
    return dataclasses.replace(record, **changes)


def full_record(tenant: Tenant) -> CallDetailRecord:
    """A record with every field set, media and identity included."""
    return CallDetailRecord(
        tenant_id=tenant.id,
        call_id="a84b4c76e66710@pc33.acme.example",
        caller="sip:+15551230000@acme.example",
        callee="sip:+15559870000@carrier.example",
        direction="outbound",
        trunk="carrier-1",
        setup_at=T - 100.125,
        ringing_at=T - 99.5,
        answered_at=T - 90.25,
        ended_at=T - 10.0,
        disposition="answered",
        hangup_by="callee",
        final_status=200,
        caller_transport="tls",
        callee_transport="udp",
        media={"codec": "opus", "srtp": True, "packets": {"sent": 4012, "lost": 3}},
        identity={"attest": "A", "verstat": "TN-Validation-Passed", "ü": ["ok"]},
    )


def test_columns_are_the_record_fields() -> None:
    """The stored columns are exactly CallDetailRecord's fields, in order."""
    assert tuple(f.name for f in dataclasses.fields(CallDetailRecord)) == CDR_COLUMNS


def test_round_trip_keeps_every_field(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """A written record reads back equal, media and identity JSON included."""
    record = full_record(tenants[0])
    assert write_cdr(directory.db, record)
    assert list(CdrRepository(directory.scope(tenants[0].id)).records()) == [record]
    media, identity = directory.db.conn.execute("SELECT media, identity FROM cdrs").fetchone()
    assert media == '{"codec":"opus","packets":{"lost":3,"sent":4012},"srtp":true}'
    assert identity == '{"attest":"A","verstat":"TN-Validation-Passed","ü":["ok"]}'


def test_a_call_is_recorded_once(directory: Directory, tenants: tuple[Tenant, Tenant]) -> None:
    """A second record of the same call is refused with False and no second row; the same
    Call-ID in another tenant is a different call."""
    acme, bravo = tenants
    first = cdr(acme, "c1", T - 60, T - 30)
    assert write_cdr(directory.db, first)
    assert not write_cdr(directory.db, dataclasses.replace(first, final_status=503))
    assert write_cdrs(directory.db, [first, cdr(acme, "c2", T - 50, T - 40), first]) == 1
    assert write_cdr(directory.db, cdr(bravo, "c1", T - 60, T - 30))
    assert directory.db.conn.execute("SELECT COUNT(*) FROM cdrs").fetchone() == (3,)
    stored = list(CdrRepository(directory.scope(acme.id)).records())
    assert stored == [first, cdr(acme, "c2", T - 50, T - 40)]


def test_cdr_writes_are_not_audited(directory: Directory, tenants: tuple[Tenant, Tenant]) -> None:
    """Records are the service's bookkeeping: writing them adds no audit record."""
    before = list(records(directory.db))
    write_cdr(directory.db, cdr(tenants[0], "c1", T - 60, T - 30))
    assert list(records(directory.db)) == before


def test_a_record_breaking_a_check_is_refused(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """Only a duplicate is skipped: a value outside the schema's rules raises, storing nothing."""
    bad: Any = "sideways"
    with pytest.raises(sqlite3.IntegrityError):
        write_cdr(directory.db, cdr(tenants[0], "c1", T - 60, T - 30, direction=bad))
    with pytest.raises(sqlite3.IntegrityError):
        write_cdr(directory.db, cdr(999, "c1", T - 60, T - 30))
    assert directory.db.conn.execute("SELECT COUNT(*) FROM cdrs").fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE cdrs SET final_status = 200",
        "DELETE FROM cdrs",
        "INSERT OR REPLACE INTO cdrs SELECT * FROM cdrs",
        "REPLACE INTO cdrs SELECT * FROM cdrs",
        "INSERT INTO cdrs SELECT * FROM cdrs WHERE true"
        " ON CONFLICT DO UPDATE SET caller = 'someone else'",
        "UPDATE cdr_hourly SET calls = 0",
        "DELETE FROM cdr_hourly",
        "INSERT OR REPLACE INTO cdr_hourly SELECT * FROM cdr_hourly",
        "INSERT INTO cdr_hourly SELECT * FROM cdr_hourly WHERE true"
        " ON CONFLICT DO UPDATE SET calls = 0",
    ],
)
def test_records_and_aggregates_are_immutable(
    directory: Directory, tenants: tuple[Tenant, Tenant], clock: FakeClock, statement: str
) -> None:
    """UPDATE, DELETE, INSERT OR REPLACE and upserts abort on cdrs and cdr_hourly,
    through the store's own connection (recursive triggers on)."""
    write_cdr(directory.db, cdr(tenants[0], "c1", H0 + 10, H0 + 20))
    assert aggregate_closed_hours(directory.db, clock()) == 1
    before = _dump(directory)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        directory.db.conn.execute(statement)
    assert _dump(directory) == before


def _dump(directory: Directory) -> tuple[list[Any], list[Any]]:
    conn = directory.db.conn
    return (
        conn.execute("SELECT * FROM cdrs ORDER BY id").fetchall(),
        conn.execute("SELECT * FROM cdr_hourly ORDER BY tenant_id, hour_start").fetchall(),
    )


def test_a_scope_sees_only_its_tenant(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """Tenant A's repository never yields B's records or aggregates, and the reverse."""
    acme, bravo = tenants
    write_cdrs(
        directory.db,
        [
            cdr(acme, "a1", H0 + 1, H0 + 2),
            cdr(bravo, "b1", H0 + 3, H0 + 4),
            cdr(acme, "a2", H1 + 1, H1 + 2),
        ],
    )
    aggregate_closed_hours(directory.db, T)
    acme_repo = CdrRepository(directory.scope(acme.id))
    bravo_repo = CdrRepository(directory.scope(bravo.id))
    assert [r.call_id for r in acme_repo.records()] == ["a1", "a2"]
    assert [r.call_id for r in bravo_repo.records()] == ["b1"]
    assert {h.tenant_id for h in acme_repo.hourly()} == {acme.id}
    assert [(h.tenant_id, h.hour_start) for h in hourly(directory.scope(bravo.id))] == [
        (bravo.id, H0)
    ]


def test_since_and_until_select_by_setup_time(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """since is inclusive and until exclusive, on setup_at, and results come by setup time."""
    acme = tenants[0]
    write_cdrs(
        directory.db,
        [cdr(acme, f"c{i}", T - 1000 + 100 * i, T - 1000 + 100 * i + 500) for i in (3, 0, 2, 1)],
    )
    repo = CdrRepository(directory.scope(acme.id))
    assert [r.call_id for r in repo.records()] == ["c0", "c1", "c2", "c3"]
    assert [r.call_id for r in repo.records(since=T - 900)] == ["c1", "c2", "c3"]
    assert [r.call_id for r in repo.records(until=T - 800)] == ["c0", "c1"]
    assert [r.call_id for r in repo.records(T - 900, T - 800)] == ["c1"]
    assert list(repo.records(T, None)) == []


def test_records_are_streamed(directory: Directory, tenants: tuple[Tenant, Tenant]) -> None:
    """records() is a lazy iterator (not a list) and walks 5,000 rows in setup order."""
    acme = tenants[0]
    assert write_cdrs(directory.db, [cdr(acme, f"c{i}", H0 + i, H0 + i + 30) for i in range(5000)])
    stream = CdrRepository(directory.scope(acme.id)).records()
    assert isinstance(stream, Iterator) and not isinstance(stream, list | tuple)
    assert next(stream).call_id == "c0"
    rest = [r.setup_at for r in stream]
    assert len(rest) == 4999 and rest == sorted(rest)


def scenario(acme: Tenant, bravo: Tenant) -> list[CallDetailRecord]:
    """Calls over hours H0-H3 (none set up in H2) and one in the open hour T."""
    return [
        # H0: a1 answered 290 s; a2 busy and a3 cancelled overlap it (3 at once);
        # a4 answered at the end of H0 and runs 600 s into H1 (690 s billable).
        cdr(acme, "a1", H0 + 100, H0 + 400, answered_at=H0 + 110),
        cdr(acme, "a2", H0 + 200, H0 + 230, status=486, disposition="busy"),
        cdr(acme, "a3", H0 + 210, H0 + 240, status=487, disposition="cancelled"),
        cdr(acme, "a4", H0 + 3500, H1 + 600, answered_at=H0 + 3510),
        # H1: a5 overlaps a4, carried from H0 (2 at once); a6 fails alone.
        cdr(acme, "a5", H1 + 60, H1 + 125, answered_at=H1 + 65),
        cdr(acme, "a6", H1 + 700, H1 + 710, status=404),
        # H3: a8 starts the instant a7 ends: never 2 at once (intervals are half-open).
        cdr(acme, "a7", H3 + 10, H3 + 80, answered_at=H3 + 20),
        cdr(acme, "a8", H3 + 80, H3 + 90, status=503),
        # The open hour: not aggregated.
        cdr(acme, "a9", T + 10, T + 20, status=404),
        # Bravo's call overlaps Acme's but counts only for Bravo.
        cdr(bravo, "b1", H0 + 150, H0 + 260, answered_at=H0 + 160),
    ]


def expected_hours(acme: Tenant, bravo: Tenant) -> list[HourlyAggregate]:
    """What scenario() adds up to, hour by hour."""
    return [
        HourlyAggregate(acme.id, H0, 4, 2, 290.0 + 690.0, {486: 1, 487: 1}, 3),
        HourlyAggregate(acme.id, H1, 2, 1, 60.0, {404: 1}, 2),
        HourlyAggregate(acme.id, H3, 2, 1, 60.0, {503: 1}, 1),
        HourlyAggregate(bravo.id, H0, 1, 1, 100.0, {}, 1),
    ]


def _all_hours(directory: Directory, tenants: tuple[Tenant, Tenant]) -> list[HourlyAggregate]:
    return [h for t in tenants for h in CdrRepository(directory.scope(t.id)).hourly()]


def test_aggregates_of_closed_hours(directory: Directory, tenants: tuple[Tenant, Tenant]) -> None:
    """Calls, answers, billable seconds, failures by status and peak concurrency are right
    per tenant and closed hour; hours without a call set up in them and the open hour get
    no row."""
    acme, bravo = tenants
    write_cdrs(directory.db, scenario(acme, bravo))
    assert aggregate_closed_hours(directory.db, T + 1800) == 4
    assert _all_hours(directory, tenants) == expected_hours(acme, bravo)
    first = CdrRepository(directory.scope(acme.id)).hourly()[0]
    assert first.billable_minutes == pytest.approx(980 / 60)
    stored = directory.db.conn.execute(
        "SELECT failures FROM cdr_hourly WHERE tenant_id = ? AND hour_start = ?", (acme.id, H0)
    ).fetchone()
    assert stored == ('{"486":1,"487":1}',)
    assert [h.hour_start for h in hourly(directory.scope(acme.id), since=H1, until=H3)] == [H1]


def test_the_open_hour_is_not_aggregated(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """An hour is aggregated only once hour_start + 3600 <= now."""
    acme = tenants[0]
    write_cdr(directory.db, cdr(acme, "c1", H3 + 10, H3 + 20))
    assert aggregate_closed_hours(directory.db, T - 0.001) == 0
    assert hourly(directory.scope(acme.id)) == []
    assert aggregate_closed_hours(directory.db, T) == 1
    assert [h.hour_start for h in hourly(directory.scope(acme.id))] == [H3]


def test_aggregating_twice_adds_nothing(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """A second run inserts no row and leaves the rows exactly as they were."""
    write_cdrs(directory.db, scenario(*tenants))
    assert aggregate_closed_hours(directory.db, T + 1800) == 4
    before = _dump(directory)[1]
    assert aggregate_closed_hours(directory.db, T + 1800) == 0
    assert aggregate_closed_hours(directory.db, T + 3599) == 0
    assert _dump(directory)[1] == before
    assert _all_hours(directory, tenants) == expected_hours(*tenants)


def test_aggregation_resumes_where_it_stopped(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """Hour by hour, each run adds the hours closed since the last; the result is the
    same as one run at the end, including the peak carried across hour boundaries."""
    write_cdrs(directory.db, scenario(*tenants))
    added = [aggregate_closed_hours(directory.db, now) for now in (H1, H2, H3, T, T + 1800)]
    assert added == [2, 1, 0, 1, 0]
    assert _all_hours(directory, tenants) == expected_hours(*tenants)


def test_a_late_record_leaves_its_hour_unchanged(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """A record arriving after its hour (or a later one) was aggregated is not folded in:
    the row stays as it was, and late_cdr_counts reports it."""
    acme, bravo = tenants
    write_cdrs(directory.db, scenario(acme, bravo))
    aggregate_closed_hours(directory.db, T + 1800)
    assert late_cdr_counts(directory.db) == {}
    before = _dump(directory)[1]
    write_cdr(directory.db, cdr(acme, "late-1", H1 + 900, H1 + 950, answered_at=H1 + 910))
    write_cdr(directory.db, cdr(acme, "late-2", H2 + 5, H2 + 6))
    assert aggregate_closed_hours(directory.db, T + 1800) == 0
    assert _dump(directory)[1] == before
    assert late_cdr_counts(directory.db) == {acme.id: 2}


def test_a_call_in_progress_holds_back_its_hour(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """While a call set up in an hour is live, that hour and the tenant's later ones wait
    (other tenants do not); once its record is written they are aggregated with it."""
    acme, bravo = tenants
    write_cdrs(directory.db, [c for c in scenario(acme, bravo) if c.call_id != "a5"])
    write_live_calls(
        directory.db, [LiveCallEntry(acme.id, "a5", "x", "y", "internal", "answered", H1 + 60)]
    )
    assert aggregate_closed_hours(directory.db, T + 1800) == 2
    assert [(h.tenant_id, h.hour_start) for h in _all_hours(directory, tenants)] == [
        (acme.id, H0),
        (bravo.id, H0),
    ]
    write_cdr(directory.db, cdr(acme, "a5", H1 + 60, H1 + 125, answered_at=H1 + 65))
    assert list_live_calls(directory.db) == []
    assert aggregate_closed_hours(directory.db, T + 1800) == 2
    assert _all_hours(directory, tenants) == expected_hours(acme, bravo)
    assert late_cdr_counts(directory.db) == {}


def test_live_calls_save_update_delete_and_list(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """Saving again updates a call's state; delete removes it; the list joins the domain,
    filters by it (any case) and orders by domain then setup time."""
    acme, bravo = tenants
    ringing = LiveCallEntry(acme.id, "c1", "sip:200@a", "sip:201@a", "internal", "ringing", T - 5)
    write_live_calls(
        directory.db,
        [
            ringing,
            LiveCallEntry(acme.id, "c0", "sip:202@a", "sip:9@b", "outbound", "ringing", T),
            LiveCallEntry(bravo.id, "c1", "sip:1@b", "sip:2@b", "inbound", "ringing", T),
        ],
    )
    answered = dataclasses.replace(ringing, state="answered", answered_at=T - 1)
    write_live_calls(directory.db, [answered])
    acme_rows = [
        LiveCallRow(
            "acme.example", "c1", "sip:200@a", "sip:201@a", "internal", "answered", T - 5, T - 1
        ),
        LiveCallRow("acme.example", "c0", "sip:202@a", "sip:9@b", "outbound", "ringing", T, None),
    ]
    assert list_live_calls(directory.db, "ACME.example") == acme_rows
    assert [(r.domain, r.call_id) for r in list_live_calls(directory.db)] == [
        ("acme.example", "c1"),
        ("acme.example", "c0"),
        ("bravo.example", "c1"),
    ]
    assert list_live_calls(directory.db, "nowhere.example") == []
    write_live_calls(directory.db, [dataclasses.replace(answered, state="ended")])
    assert [r.call_id for r in list_live_calls(directory.db, "acme.example")] == ["c0"]
    assert [r.call_id for r in list_live_calls(directory.db, "bravo.example")] == ["c1"]


def test_a_recorded_call_never_comes_back_to_life(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """Writing a record removes the live row in the same transaction, and a state change
    arriving after the record is refused, so stale rows cannot hold back aggregation."""
    acme = tenants[0]
    live = LiveCallEntry(acme.id, "c1", "a", "b", "internal", "answered", T - 60, T - 50)
    write_live_calls(directory.db, [live])
    write_cdr(directory.db, cdr(acme, "c1", T - 60, T - 10, answered_at=T - 50))
    assert list_live_calls(directory.db) == []
    write_live_calls(directory.db, [live])
    assert list_live_calls(directory.db) == []
    replace_live_calls(directory.db, [live])
    assert list_live_calls(directory.db) == []


def test_replace_live_calls_reconciles(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """replace_live_calls leaves exactly the given calls; with none it empties the table."""
    acme, bravo = tenants
    write_live_calls(
        directory.db, [LiveCallEntry(acme.id, "gone", "a", "b", "internal", "ringing", T)]
    )
    kept = [
        LiveCallEntry(acme.id, "c1", "a", "b", "internal", "answered", T - 9, T - 8),
        LiveCallEntry(bravo.id, "c2", "c", "d", "inbound", "ringing", T - 7),
    ]
    replace_live_calls(directory.db, kept)
    assert [(r.domain, r.call_id) for r in list_live_calls(directory.db)] == [
        ("acme.example", "c1"),
        ("bravo.example", "c2"),
    ]
    replace_live_calls(directory.db, [])
    assert list_live_calls(directory.db) == []


def test_hour_start_is_the_utc_hour() -> None:
    """hour_start floors epoch time to the hour."""
    assert hour_start(T) == T
    assert hour_start(T + 3599.999) == T
    assert hour_start(T - 0.001) == T - 3600


def test_live_call_batches_save_end_and_never_revive_a_recorded_call(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """The service's once-a-second batch: calls in progress are saved or updated, an
    ended one is removed, and a call already recorded is not brought back."""
    acme, bravo = tenants
    ringing = LiveCallEntry(acme.id, "c1", "a", "b", "internal", "ringing", T - 5)
    write_live_calls(
        directory.db,
        [ringing, LiveCallEntry(bravo.id, "c2", "c", "d", "inbound", "ringing", T - 4)],
    )
    assert [(r.call_id, r.state) for r in list_live_calls(directory.db)] == [
        ("c1", "ringing"),
        ("c2", "ringing"),
    ]
    write_cdr(directory.db, cdr(acme, "c3", T - 60, T - 10))
    write_live_calls(
        directory.db,
        [
            dataclasses.replace(ringing, state="answered", answered_at=T - 1),
            LiveCallEntry(bravo.id, "c2", "c", "d", "inbound", "ended", T - 4),
            LiveCallEntry(acme.id, "c3", "a", "b", "internal", "answered", T - 60, T - 50),
        ],
    )
    assert [(r.call_id, r.state, r.answered_at) for r in list_live_calls(directory.db)] == [
        ("c1", "answered", T - 1)
    ]


def test_a_retry_with_the_same_call_id_is_another_call(
    directory: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """A call refused before it rang, retried by the phone with the same Call-ID
    (RFC 3261 §8.1.3.5), gets its own record and can be live meanwhile; only the
    same call (same setup time) written twice is a duplicate."""
    acme = tenants[0]
    refused = cdr(acme, "c1", T - 60, T - 60, status=488)
    assert write_cdr(directory.db, refused)
    retry = LiveCallEntry(acme.id, "c1", "x", "y", "internal", "answered", T - 50, T - 45)
    write_live_calls(directory.db, [retry])
    assert [r.call_id for r in list_live_calls(directory.db)] == ["c1"]
    answered = cdr(acme, "c1", T - 50, T - 10, answered_at=T - 45)
    assert write_cdr(directory.db, answered)
    assert not write_cdr(directory.db, answered)
    assert list_live_calls(directory.db) == []
    assert list(CdrRepository(directory.scope(acme.id)).records()) == [refused, answered]


def test_migration_6_keeps_every_record_and_its_immutability(tmp_path: Path) -> None:
    """A version 5 database's records survive the table rebuild with their ids; the
    rebuilt table is append-only again and takes a retry with the same Call-ID."""
    db = database_at(tmp_path / "old.sqlite3", 5)
    try:
        with write_transaction(db):
            db.conn.execute(OLD_TENANT_SQL)
            db.conn.execute(
                "INSERT INTO cdrs (id, tenant_id, call_id, caller, callee, direction,"
                " setup_at, ended_at, disposition, final_status, caller_transport, media,"
                " identity) VALUES (7, 1, 'c1', 'a', 'b', 'internal', 10, 20, 'failed', 404,"
                " 'tls', '{}', '{}')"
            )
        before = db.conn.execute("SELECT * FROM cdrs").fetchall()
        assert migrate(db)[0] == 6
        assert db.conn.execute("SELECT * FROM cdrs").fetchall() == before
        for statement in ("UPDATE cdrs SET caller = 'z'", "DELETE FROM cdrs"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.conn.execute(statement)
        assert write_cdr(db, cdr(1, "c1", 30, 40))
        indexes = {row[1] for row in db.conn.execute("PRAGMA index_list(cdrs)")}
        assert {"cdrs_tenant_setup", "cdrs_tenant_ended"} <= indexes
    finally:
        db.close()
