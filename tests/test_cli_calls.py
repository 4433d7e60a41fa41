"""The call commands of ``telemancer`` (cdr list/export/aggregate, calls list), run in-process."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance.cli_calls import EXPORT_COLUMNS, iso_time
from appliance.store import open_directory
from appliance.store.audit import format_time
from appliance.store.cdrs import (
    CdrRepository,
    LiveCallEntry,
    hour_start,
    write_cdr,
    write_cdrs,
    write_live_calls,
)
from appliance.store.checkpoints import CheckpointKey
from appliance.store.tenants import Directory, Tenant
from tests.store.test_cdrs import cdr, full_record
from tests.test_cli import Result, cli, run

#: 2027-01-15T08:00:00Z
T = 1_800_000_000.0


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A development instance with tenants acme.example and bravo.example."""
    assert run("init", "--dev", str(tmp_path / "var")).status == 0
    config = tmp_path / "var" / "telemancer.toml"
    assert cli(config, "tenant", "add", "Acme", "--domain", "acme.example").status == 0
    assert cli(config, "tenant", "add", "Bravo", "--domain", "bravo.example").status == 0
    return config


@pytest.fixture
def store(instance: Path) -> Iterator[Directory]:
    """The instance's store, opened as the service would."""
    config = config_module.load(instance, {})
    key = CheckpointKey.from_pem(config.secrets.audit_signing_key.value)
    directory = open_directory(config.database_path, key, config.audit.checkpoint_every, time.time)
    yield directory
    directory.db.close()


@pytest.fixture
def tenants(store: Directory) -> tuple[Tenant, Tenant]:
    """Acme and Bravo."""
    return store.tenant_by_domain("acme.example"), store.tenant_by_domain("bravo.example")


def _rows(result: Result) -> list[list[str]]:
    """The table's lines split into cells, header first."""
    return [line.split() for line in result.out.splitlines()]


def test_cdr_list_shows_a_tenants_records_by_setup_time(
    instance: Path, store: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """The table has the setup time in UTC, parties, direction, disposition, status,
    billable duration and who hung up, for that tenant only, oldest first."""
    acme, bravo = tenants
    write_cdrs(
        store.db,
        [
            cdr(acme, "c2", T + 60, T + 70, status=486, disposition="busy"),
            cdr(acme, "c1", T, T + 95.5, answered_at=T + 5),
            cdr(bravo, "b1", T + 30, T + 40),
        ],
    )
    listed = cli(instance, "cdr", "list", "ACME.example")
    assert listed.status == 0, listed.err
    assert _rows(listed) == [
        ["SETUP", "CALLER", "CALLEE", "DIRECTION", "DISPOSITION", "STATUS", "DURATION", "HANGUP"],
        [
            "2027-01-15T08:00:00Z",
            "sip:200@acme.example",
            "sip:201@acme.example",
            "internal",
            "answered",
            "200",
            "90.5s",
            "caller",
        ],
        [
            "2027-01-15T08:01:00Z",
            "sip:200@acme.example",
            "sip:201@acme.example",
            "internal",
            "busy",
            "486",
            "0.0s",
            "-",
        ],
    ]


def test_cdr_list_since_and_until(
    instance: Path, store: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """--since (inclusive) and --until (exclusive) take ISO 8601, UTC unless an offset says
    otherwise, and select by setup time."""
    acme = tenants[0]
    write_cdrs(store.db, [cdr(acme, f"c{i}", T + 3600 * i, T + 3600 * i + 10) for i in range(4)])

    def setups(*argv: str) -> list[str]:
        result = cli(instance, "cdr", "list", "acme.example", *argv)
        assert result.status == 0, result.err
        return [row[0][11:13] for row in _rows(result)[1:]]

    assert setups() == ["08", "09", "10", "11"]
    assert setups("--since", "2027-01-15T09:00:00Z") == ["09", "10", "11"]
    assert setups("--until", "2027-01-15T10:00:00") == ["08", "09"]
    assert setups("--since", "2027-01-15T10:00:00+01:00", "--until", "2027-01-15T10:00Z") == ["09"]
    assert setups("--since", "2027-01-16") == []


@pytest.mark.parametrize("bad", ["yesterday", "2027-13-01", "1800000000", ""])
def test_bad_times_are_usage_errors(
    instance: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    """A --since or --until that is not ISO 8601 is exit 2 with a message naming the option."""
    for command in ("list", "export"):
        extra = ["--format", "csv"] if command == "export" else []
        for option in ("--since", "--until"):
            result = cli(instance, "cdr", command, "acme.example", *extra, option, bad)
            assert result.status == 2
            err = capsys.readouterr().err
            assert f"argument {option}: expected an ISO 8601 time" in err


def test_iso_time() -> None:
    """Naive times are UTC; offsets are honoured; dates mean midnight UTC."""
    assert iso_time("2027-01-15T08:00:00Z") == T
    assert iso_time("2027-01-15T08:00:00") == T
    assert iso_time("2027-01-15T09:00:00+01:00") == T
    assert iso_time("2027-01-15T08:00:00.250Z") == T + 0.25
    assert iso_time("2027-01-15") == T - 8 * 3600


def test_unknown_domain_is_exit_1(instance: Path) -> None:
    """cdr list, cdr export and calls list refuse a domain no tenant serves."""
    for argv in (
        ("cdr", "list", "nowhere.example"),
        ("cdr", "export", "nowhere.example", "--format", "csv"),
        ("calls", "list", "nowhere.example"),
    ):
        result = cli(instance, *argv)
        assert result.status == 1 and "no tenant" in result.err, argv
        assert result.out == ""


def test_cdr_export_writes_every_field_of_every_record_as_csv(
    instance: Path, store: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """The export has a header of every field plus billable_seconds, then one parseable line
    per record (all of them, not a page), quoting awkward values; times in UTC ISO 8601,
    media and identity as JSON, absent values empty."""
    acme, bravo = tenants
    full = dataclasses.replace(full_record(acme), caller='"Boss, The"\n<sip:1@acme.example>')
    many = [cdr(acme, f"c{i:04d}", T + i, T + i + 1) for i in range(1200)]
    write_cdrs(store.db, [full, *many, cdr(bravo, "b1", T, T + 1)])
    result = cli(instance, "cdr", "export", "acme.example", "--format", "csv")
    assert result.status == 0, result.err
    lines = list(csv.reader(io.StringIO(result.out, newline="")))
    assert lines[0] == list(EXPORT_COLUMNS)
    assert len(lines) == 1 + 1 + 1200
    rows = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
    first = rows[0]
    assert first["call_id"] == full.call_id and first["caller"] == full.caller
    assert first["setup_at"] == format_time(full.setup_at)
    assert first["answered_at"] == format_time(T - 90.25)
    assert json.loads(first["media"]) == full.media
    assert json.loads(first["identity"]) == full.identity
    assert first["final_status"] == "200" and first["trunk"] == "carrier-1"
    assert float(first["billable_seconds"]) == full.billable_seconds
    assert [r["call_id"] for r in rows[1:]] == [f"c{i:04d}" for i in range(1200)]
    assert rows[1]["answered_at"] == "" and rows[1]["hangup_by"] == ""
    assert rows[1]["media"] == "{}" and rows[1]["billable_seconds"] == "0.0"
    assert all(r["tenant_id"] == str(acme.id) for r in rows)


def test_cdr_export_window_and_format(
    instance: Path, store: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """--since/--until narrow the export; --format is required and only csv is accepted."""
    acme = tenants[0]
    write_cdrs(store.db, [cdr(acme, f"c{i}", T + 3600 * i, T + 3600 * i + 10) for i in range(3)])
    result = cli(
        instance, "cdr", "export", "acme.example", "--format", "csv", "--since", "2027-01-15T09Z"
    )
    assert result.status == 0, result.err
    assert [line[1] for line in csv.reader(io.StringIO(result.out, newline=""))] == [
        "call_id",
        "c1",
        "c2",
    ]
    assert cli(instance, "cdr", "export", "acme.example").status == 2
    assert cli(instance, "cdr", "export", "acme.example", "--format", "json").status == 2


def test_cdr_aggregate_adds_closed_hours_once_and_is_not_audited(
    instance: Path, store: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """aggregate adds the rows of closed hours and says how many; a second run adds none;
    it writes no audit record; a record arriving late for an aggregated hour is reported."""
    acme, bravo = tenants
    two_hours_ago = hour_start(time.time()) - 2 * 3600
    write_cdrs(
        store.db,
        [
            cdr(
                acme, "a1", two_hours_ago + 10, two_hours_ago + 70, answered_at=two_hours_ago + 20
            ),
            cdr(acme, "a2", two_hours_ago + 3600 + 10, two_hours_ago + 3600 + 20),
            cdr(bravo, "b1", two_hours_ago + 10, two_hours_ago + 20),
        ],
    )
    audit_before = cli(instance, "audit", "export").out
    first = cli(instance, "cdr", "aggregate")
    assert first.status == 0, first.err
    assert first.out.strip() == "added 3 hourly aggregate rows" and first.err == ""
    hours = CdrRepository(store.scope(acme.id)).hourly()
    assert [(h.hour_start, h.calls, h.answered, h.billable_seconds) for h in hours] == [
        (two_hours_ago, 1, 1, 50.0),
        (two_hours_ago + 3600, 1, 0, 0.0),
    ]
    second = cli(instance, "cdr", "aggregate")
    assert second.status == 0 and second.out.strip() == "added 0 hourly aggregate rows"
    assert cli(instance, "audit", "export").out == audit_before
    write_cdr(store.db, cdr(acme, "late", two_hours_ago + 30, two_hours_ago + 40))
    late = cli(instance, "cdr", "aggregate")
    assert late.status == 0 and late.out.strip() == "added 0 hourly aggregate rows"
    assert "warning: acme.example: 1 late call record (arrived after" in late.err


def test_calls_list(instance: Path, store: Directory, tenants: tuple[Tenant, Tenant]) -> None:
    """Live calls are listed with domain, Call-ID, parties, direction, state and setup time,
    all or one domain's, with what phones sent escaped."""
    acme, bravo = tenants
    write_live_calls(
        store.db,
        [
            LiveCallEntry(
                acme.id, "c1@pc", "sip:200@acme", "sip:201@acme", "internal", "ringing", T
            ),
            LiveCallEntry(
                bravo.id, "b1@pc", "\x1b[31mred", "sip:1@bravo", "inbound", "answered", T
            ),
        ],
    )
    header = ["DOMAIN", "CALL-ID", "CALLER", "CALLEE", "DIRECTION", "STATE", "SINCE"]
    listed = cli(instance, "calls", "list")
    assert listed.status == 0, listed.err
    assert _rows(listed) == [
        header,
        [
            "acme.example",
            "c1@pc",
            "sip:200@acme",
            "sip:201@acme",
            "internal",
            "ringing",
            "2027-01-15T08:00:00Z",
        ],
        [
            "bravo.example",
            "b1@pc",
            "\\x1b[31mred",
            "sip:1@bravo",
            "inbound",
            "answered",
            "2027-01-15T08:00:00Z",
        ],
    ]
    assert "\x1b" not in listed.out
    assert [r[1] for r in _rows(cli(instance, "calls", "list", "Bravo.Example"))[1:]] == ["b1@pc"]
    write_cdr(store.db, cdr(acme, "c1@pc", T, T + 5))
    assert [r[1] for r in _rows(cli(instance, "calls", "list"))[1:]] == ["b1@pc"]


def test_read_commands_write_no_audit_records(
    instance: Path, store: Directory, tenants: tuple[Tenant, Tenant]
) -> None:
    """cdr list, cdr export and calls list leave the audit log as it was."""
    write_cdr(store.db, cdr(tenants[0], "c1", T, T + 5))
    before = cli(instance, "audit", "export").out
    for argv in (
        ("cdr", "list", "acme.example"),
        ("cdr", "export", "acme.example", "--format", "csv"),
        ("calls", "list"),
    ):
        assert cli(instance, *argv).status == 0, argv
    assert cli(instance, "audit", "export").out == before
