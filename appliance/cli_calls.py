"""The call commands of ``telemancer``: call detail records and calls in progress.

Registered on the parser by :func:`add_call_commands`; same rules as the rest
of :mod:`appliance.cli` (thin, exit 0/1/2). Every command here only reads,
except ``cdr aggregate``, which adds hourly aggregate rows: derived figures,
not a person's change to tenant data, so it writes no audit record. Times are
printed in UTC; ``--since`` and ``--until`` take ISO 8601 and mean UTC unless
they carry an offset.
"""

from __future__ import annotations

import argparse
import csv
import datetime

from appliance.cli import Console, _table
from appliance.cli_sip import _printable, _store
from appliance.sip.cdr import CallDetailRecord
from appliance.store.audit import canonical_json, format_time
from appliance.store.cdrs import (
    CDR_COLUMNS,
    CdrRepository,
    aggregate_closed_hours,
    late_cdr_counts,
    list_live_calls,
)

#: The columns of ``cdr export``: every record field, then the billable seconds.
EXPORT_COLUMNS: tuple[str, ...] = (*CDR_COLUMNS, "billable_seconds")
_TIME_COLUMNS = frozenset({"setup_at", "ringing_at", "answered_at", "ended_at"})


def add_call_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cdr`` and ``calls`` to the command tree."""
    cdr = commands.add_parser("cdr", help="call detail records").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    cdr_list = cdr.add_parser("list", help="a tenant's call records, by setup time")
    cdr_list.add_argument("domain", metavar="DOMAIN", help="the tenant's SIP domain")
    _add_window(cdr_list)
    cdr_list.set_defaults(func=cmd_cdr_list)
    export = cdr.add_parser(
        "export", help="every field of a tenant's call records, streamed to stdout"
    )
    export.add_argument("domain", metavar="DOMAIN", help="the tenant's SIP domain")
    export.add_argument("--format", choices=["csv"], required=True, help="output format")
    _add_window(export)
    export.set_defaults(func=cmd_cdr_export)
    cdr.add_parser(
        "aggregate", help="add the hourly aggregates of every hour closed since the last run"
    ).set_defaults(func=cmd_cdr_aggregate)

    calls = commands.add_parser("calls", help="show calls in progress").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    calls_list = calls.add_parser("list", help="calls in progress, of one tenant or all")
    calls_list.add_argument("domain", metavar="DOMAIN", nargs="?")
    calls_list.set_defaults(func=cmd_calls_list)


def _add_window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", type=iso_time, metavar="TIME", help="calls set up at or after TIME (ISO 8601)"
    )
    parser.add_argument(
        "--until", type=iso_time, metavar="TIME", help="calls set up before TIME (ISO 8601)"
    )


def iso_time(text: str) -> float:
    """Parse an ISO 8601 time (UTC unless it has an offset) into epoch seconds."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2027-01-15T08:00:00Z, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _utc(when: float) -> str:
    """UTC to the second, for tables."""
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_cdr_list(args: argparse.Namespace, console: Console) -> int:
    """``cdr list DOMAIN [--since TIME] [--until TIME]``."""
    with _store(args, console) as directory:
        scope = directory.scope(directory.tenant_by_domain(args.domain).id)
        rows = [
            (
                _utc(r.setup_at),
                _printable(r.caller),
                _printable(r.callee),
                r.direction,
                r.disposition,
                str(r.final_status),
                f"{r.billable_seconds:.1f}s",
                r.hangup_by or "-",
            )
            for r in CdrRepository(scope).records(args.since, args.until)
        ]
    _table(
        console,
        ("SETUP", "CALLER", "CALLEE", "DIRECTION", "DISPOSITION", "STATUS", "DURATION", "HANGUP"),
        rows,
    )
    return 0


def cmd_cdr_export(args: argparse.Namespace, console: Console) -> int:
    """``cdr export DOMAIN --format csv``: a header, then one line per record, streamed."""
    with _store(args, console) as directory:
        scope = directory.scope(directory.tenant_by_domain(args.domain).id)
        writer = csv.writer(console.stdout)
        writer.writerow(EXPORT_COLUMNS)
        for record in CdrRepository(scope).records(args.since, args.until):
            writer.writerow(export_row(record))
    return 0


def export_row(record: CallDetailRecord) -> list[str]:
    """One CSV line: times in UTC ISO 8601 with microseconds, JSON for media and
    identity, empty cells for absent values. Cells are the data as recorded
    (caller and callee come from the network): do not open the file in a
    spreadsheet that evaluates formulas without care."""
    cells = []
    for name in CDR_COLUMNS:
        value = getattr(record, name)
        if value is None:
            cells.append("")
        elif name in _TIME_COLUMNS:
            cells.append(format_time(value))
        elif name in ("media", "identity"):
            cells.append(canonical_json(dict(value)))
        else:
            cells.append(str(value))
    cells.append(repr(record.billable_seconds))
    return cells


def cmd_cdr_aggregate(args: argparse.Namespace, console: Console) -> int:
    """``cdr aggregate``: add the rows of the hours closed since the last run.

    Writes derived figures only (no person's change to tenant data), so no
    audit record. Warns about records that arrived after their hour was added up.
    """
    with _store(args, console) as directory:
        added = aggregate_closed_hours(directory.db, console.clock())
        late = late_cdr_counts(directory.db)
        domains = {tenant.id: tenant.domain for tenant in directory.tenants()}
    console.out(f"added {added} hourly aggregate row{'' if added == 1 else 's'}")
    for tenant_id, count in late.items():
        print(
            f"telemancer: warning: {domains.get(tenant_id, tenant_id)}: {count} late call"
            f" record{'' if count == 1 else 's'} (arrived after the hour was aggregated),"
            " left out of the hourly figures",
            file=console.stderr,
        )
    return 0


def cmd_calls_list(args: argparse.Namespace, console: Console) -> int:
    """``calls list [DOMAIN]``: calls in progress, with the time each was set up."""
    with _store(args, console) as directory:
        domain = None if args.domain is None else directory.tenant_by_domain(args.domain).domain
        calls = list_live_calls(directory.db, domain)
    _table(
        console,
        ("DOMAIN", "CALL-ID", "CALLER", "CALLEE", "DIRECTION", "STATE", "SINCE"),
        [
            (
                c.domain,
                _printable(c.call_id),
                _printable(c.caller),
                _printable(c.callee),
                c.direction,
                _printable(c.state),
                _utc(c.setup_at),
            )
            for c in calls
        ],
    )
    return 0
