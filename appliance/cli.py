"""``telemancer``: the command line, for operators and the recovery console.

Thin by design: it parses arguments, calls the store or the service, and
prints. Exit status 0 is success, 1 a refused or failed operation (the
message says why, on stderr), 2 a usage error. The SIP commands (extensions,
registrations, bans) live in :mod:`appliance.cli_sip`; a running service picks
their changes up from the database, with no restart.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

import sqlite_utils

from appliance import config as config_module
from appliance.config import Config, ConfigError
from appliance.media.policy import SrtpPolicy
from appliance.passwords import PasswordPolicyError, check_policy, hash_password
from appliance.store import open_directory
from appliance.store.audit import (
    Actor,
    AuditRecord,
    checkpoints,
    records,
    verify,
    verify_database,
)
from appliance.store.checkpoints import Checkpoint, CheckpointKey, CheckpointKeyError
from appliance.store.database import open_database
from appliance.store.migrations import migrate, schema_version
from appliance.store.tenants import TENANT_ROLES, Directory, StoreError

DEFAULT_CONFIG = "/etc/telemancer/telemancer.toml"
#: The values of ``--srtp`` and of ``tenant srtp`` / ``trunk srtp`` (appliance.media.policy).
SRTP_POLICIES = tuple(policy.value for policy in SrtpPolicy)
_Parsed = TypeVar("_Parsed")


class CommandError(Exception):
    """A failure to report on stderr with exit status 1."""


class Console:
    """The streams and environment a command runs with (injected for tests)."""

    def __init__(self, stdin: TextIO, stdout: TextIO, stderr: TextIO, environ: Mapping[str, str]):
        self.stdin, self.stdout, self.stderr, self.environ = stdin, stdout, stderr, environ
        self.clock: Callable[[], float] = time.time

    def out(self, line: str = "") -> None:
        """Print one line to stdout."""
        print(line, file=self.stdout)

    def actor(self) -> Actor:
        """The local operator, as the audit log names them."""
        return Actor(f"unix:{getpass.getuser()}", "console")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(prog="telemancer", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=Path,
        help=f"config file (default: $TELEMANCER_CONFIG or {DEFAULT_CONFIG})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create a development instance")
    init.add_argument("--dev", type=Path, required=True, metavar="DIR", help="instance directory")
    init.set_defaults(func=cmd_init)

    for name, func, text in (
        ("run", cmd_run, "run the appliance in the foreground"),
        ("check-config", cmd_check_config, "validate the config and print a redacted summary"),
        ("migrate", cmd_migrate, "apply pending database migrations"),
    ):
        commands.add_parser(name, help=text).set_defaults(func=func)

    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    tenant_add = tenant.add_parser("add", help="create a tenant (one SIP domain)")
    tenant_add.add_argument("name")
    tenant_add.add_argument("--domain", required=True, help="the tenant's SIP domain")
    tenant_add.add_argument("--max-extensions", type=_non_negative, default=50)
    tenant_add.add_argument("--max-calls", type=_non_negative, default=10)
    tenant_add.add_argument(
        "--srtp", choices=SRTP_POLICIES, default="optional", help="SRTP policy of its phones"
    )
    tenant_add.set_defaults(func=cmd_tenant_add)
    tenant.add_parser("list", help="list tenants").set_defaults(func=cmd_tenant_list)
    tenant_srtp = tenant.add_parser("srtp", help="set the SRTP policy of a tenant's phones")
    tenant_srtp.add_argument("domain", metavar="DOMAIN", help="the tenant's SIP domain")
    tenant_srtp.add_argument("policy", metavar="POLICY", choices=SRTP_POLICIES, help="%(choices)s")
    tenant_srtp.set_defaults(func=cmd_tenant_srtp)

    user = commands.add_parser("user", help="manage people who sign in").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    user_add = user.add_parser("add", help="create a user; the password is read from stdin")
    user_add.add_argument("username")
    kind = user_add.add_mutually_exclusive_group(required=True)
    kind.add_argument("--sysadmin", action="store_true", help="a sysadmin (no tenant)")
    kind.add_argument("--tenant", metavar="DOMAIN", help="the tenant's SIP domain")
    user_add.add_argument("--role", choices=TENANT_ROLES, default="admin")
    user_add.set_defaults(func=cmd_user_add)
    user_list = user.add_parser("list", help="list sysadmins, or a tenant's users")
    user_list.add_argument("--tenant", metavar="DOMAIN")
    user_list.set_defaults(func=cmd_user_list)

    audit = commands.add_parser("audit", help="verify and export the audit chain").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    verify_cmd = audit.add_parser("verify", help="verify the chain and its checkpoints")
    verify_cmd.add_argument(
        "--checkpoint", type=Path, metavar="FILE", help="exported checkpoints to compare against"
    )
    verify_cmd.add_argument(
        "--export", type=Path, metavar="FILE", help="verify an export instead of the database"
    )
    verify_cmd.set_defaults(func=cmd_audit_verify)
    audit.add_parser("export", help="print every record as JSON lines").set_defaults(
        func=cmd_audit_export
    )
    audit.add_parser("checkpoints", help="print signed checkpoints as JSON lines").set_defaults(
        func=cmd_audit_checkpoints
    )
    audit.add_parser("checkpoint", help="sign the chain's head now").set_defaults(
        func=cmd_audit_checkpoint
    )

    from appliance.cli_sip import add_sip_commands

    add_sip_commands(commands)

    from appliance.cli_calls import add_call_commands

    add_call_commands(commands)

    from appliance.cli_trunks import add_trunk_commands

    add_trunk_commands(commands)
    return parser


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run one command; return its exit status."""
    console = Console(
        stdin or sys.stdin,
        stdout or sys.stdout,
        stderr or sys.stderr,
        os.environ if environ is None else environ,
    )
    # Everything the CLI creates (database, WAL, keys) is for the service user only.
    os.umask(0o077)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        status: int = args.func(args, console)
    except BrokenPipeError:
        # `telemancer audit export | head`: the reader has gone; stop quietly.
        _silence(console.stdout)
        return 1
    except ConfigError as e:
        print("configuration problems:", file=console.stderr)
        for key, message in e.problems:
            print(f"  {key}: {message}", file=console.stderr)
        return 1
    except (CommandError, StoreError, PasswordPolicyError, CheckpointKeyError) as e:
        print(f"telemancer: {e}", file=console.stderr)
        return 1
    return status


def _silence(stream: TextIO) -> None:
    """Point a closed pipe at /dev/null so the interpreter's final flush is quiet."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _config(args: argparse.Namespace, console: Console) -> Config:
    path = args.config or Path(console.environ.get("TELEMANCER_CONFIG", DEFAULT_CONFIG))
    return config_module.load(path, console.environ)


def _directory(config: Config, console: Console) -> Directory:
    key = _checkpoint_key(config)
    return open_directory(config.database_path, key, config.audit.checkpoint_every, console.clock)


def _existing_database(config: Config) -> sqlite_utils.Database:
    """Open the database for reading, refusing to create an empty one by accident."""
    if not config.database_path.exists():
        raise CommandError(f"no database at {config.database_path} (run `telemancer migrate`)")
    return open_database(config.database_path)


def _checkpoint_key(config: Config) -> CheckpointKey:
    try:
        return CheckpointKey.from_pem(config.secrets.audit_signing_key.value)
    except CheckpointKeyError as e:
        raise ConfigError([("secrets.audit_signing_key", str(e))]) from None


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    """``init --dev DIR``."""
    from appliance.devinstance import CONFIG_NAME, FIRST_SYSADMIN, init_dev

    directory: Path = args.dev
    result = init_dev(directory, console.actor(), console.clock, console.environ)
    if not result.changed:
        console.out(f"{directory}: development instance already initialised; nothing changed.")
        return 0
    for path in result.written:
        console.out(f"wrote {path}")
    if result.sysadmin_password is not None:
        console.out()
        console.out("First sysadmin credentials (shown once; stored only as an Argon2id hash):")
        console.out(f"  username: {FIRST_SYSADMIN}")
        console.out(f"  password: {result.sysadmin_password}")
        console.out()
    console.out(f"Run it with: telemancer --config {directory / CONFIG_NAME} run")
    return 0


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """``run``: the appliance in the foreground until SIGTERM or SIGINT."""
    from appliance.runner import run

    return run(_config(args, console), console.stdout, console.environ)


def cmd_check_config(args: argparse.Namespace, console: Console) -> int:
    """``check-config``: every start-up check, then a redacted summary."""
    from appliance.service import prepare

    config = _config(args, console)
    prepare(config)
    for line in config_module.redacted_summary(config):
        console.out(line)
    console.out("configuration OK")
    return 0


def cmd_migrate(args: argparse.Namespace, console: Console) -> int:
    """``migrate``: bring the schema up to date."""
    db = open_database(_config(args, console).database_path)
    try:
        applied = migrate(db)
        version = schema_version(db)
    finally:
        db.close()
    if applied:
        console.out(f"applied migrations {', '.join(map(str, applied))}; schema is at {version}")
    else:
        console.out(f"schema is up to date at version {version}")
    return 0


def cmd_tenant_add(args: argparse.Namespace, console: Console) -> int:
    """``tenant add``."""
    config = _config(args, console)
    directory = _directory(config, console)
    tenant = directory.add_tenant(
        console.actor(),
        args.name,
        args.domain,
        max_extensions=args.max_extensions,
        max_concurrent_calls=args.max_calls,
        srtp=args.srtp,
    )
    console.out(f"added tenant {tenant.name} ({tenant.domain}), id {tenant.id}")
    _warn_required_over_plaintext(console, config, tenant.srtp)
    return 0


def cmd_tenant_srtp(args: argparse.Namespace, console: Console) -> int:
    """``tenant srtp DOMAIN POLICY``: audited as ``tenant.update``."""
    config = _config(args, console)
    directory = _directory(config, console)
    try:
        before = directory.tenant_by_domain(args.domain)
        after = directory.set_tenant_srtp(console.actor(), before.id, args.policy)
    finally:
        directory.db.close()
    if after.srtp is before.srtp:
        console.out(f"tenant {after.domain}: srtp is already {after.srtp}; nothing changed")
    else:
        console.out(f"tenant {after.domain}: srtp is now {after.srtp} (was {before.srtp})")
    _warn_required_over_plaintext(console, config, after.srtp)
    return 0


def _warn_required_over_plaintext(console: Console, config: Config, policy: SrtpPolicy) -> None:
    """Phones on plaintext SIP cannot carry SDES keys: with ``required`` their calls
    fail (the media policy answers 500), which the operator should hear now."""
    if policy is SrtpPolicy.REQUIRED and config.sip.plaintext_enabled:
        print(
            "telemancer: warning: srtp required: phones registered over plaintext UDP/TCP"
            " (sip.plaintext_enabled) cannot make or take calls; SRTP keys need TLS signalling",
            file=console.stderr,
        )


def cmd_tenant_list(args: argparse.Namespace, console: Console) -> int:
    """``tenant list``."""
    directory = _directory(_config(args, console), console)
    rows = [
        (
            str(t.id),
            t.name,
            t.domain,
            str(t.max_extensions),
            str(t.max_concurrent_calls),
            t.status,
            t.srtp.value,
        )
        for t in directory.tenants()
    ]
    _table(console, ("ID", "NAME", "DOMAIN", "MAX-EXT", "MAX-CALLS", "STATUS", "SRTP"), rows)
    return 0


def cmd_user_add(args: argparse.Namespace, console: Console) -> int:
    """``user add``: the password comes from stdin, never from argv."""
    directory = _directory(_config(args, console), console)
    tenant_scope = (
        None if args.sysadmin else directory.scope(directory.tenant_by_domain(args.tenant).id)
    )
    password = _read_password(console)
    check_policy(password)
    password_hash = hash_password(password)
    if tenant_scope is None:
        user = directory.add_sysadmin(console.actor(), args.username, password_hash)
    else:
        user = tenant_scope.add_user(console.actor(), args.username, args.role, password_hash)
    where = "sysadmin" if user.tenant_id is None else f"{user.role} of {args.tenant}"
    console.out(f"added user {user.username} ({where})")
    return 0


def _read_password(console: Console) -> str:
    if console.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != first:
            raise CommandError("passwords do not match")
        return first
    line = console.stdin.readline()
    if not line:
        raise CommandError("no password on stdin (pipe it in, or run on a terminal)")
    return line.rstrip("\r\n")


def cmd_user_list(args: argparse.Namespace, console: Console) -> int:
    """``user list``."""
    directory = _directory(_config(args, console), console)
    if args.tenant:
        users = directory.scope(directory.tenant_by_domain(args.tenant).id).users()
    else:
        users = directory.sysadmins()
    _table(
        console,
        ("USERNAME", "ROLE", "CREATED"),
        [(u.username, u.role, u.created_at) for u in users],
    )
    return 0


def cmd_audit_verify(args: argparse.Namespace, console: Console) -> int:
    """``audit verify``: exit 0 if intact, 1 with the first broken record otherwise."""
    config = _config(args, console)
    key = _checkpoint_key(config)
    exported = _read_lines(args.checkpoint, Checkpoint.from_json) if args.checkpoint else []
    if args.export:
        chain = _read_lines(args.export, AuditRecord.from_json)
        verdict = verify(chain, exported, key.public_key)
    else:
        db = _existing_database(config)
        try:
            verdict = verify_database(db, key.public_key, exported)
        finally:
            db.close()
    checkpoint = verdict.last_checkpoint or "none"
    if verdict.ok:
        console.out(
            f"audit chain OK: {verdict.records} records; last verified checkpoint: {checkpoint}"
        )
        return 0
    console.out(f"audit chain BROKEN at record {verdict.broken_seq}: {verdict.reason}")
    console.out(f"records verified before the break: {verdict.records}")
    return 1


def _read_lines(path: Path, parse: Callable[[str], _Parsed]) -> list[_Parsed]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror}") from None
    parsed = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            parsed.append(parse(line))
        except (ValueError, TypeError) as e:
            raise CommandError(f"{path}:{number}: {e}") from None
    return parsed


def cmd_audit_export(args: argparse.Namespace, console: Console) -> int:
    """``audit export``: every record, one JSON object a line, streamed."""
    db = _existing_database(_config(args, console))
    try:
        for record in records(db):
            console.out(record.to_json())
    finally:
        db.close()
    return 0


def cmd_audit_checkpoints(args: argparse.Namespace, console: Console) -> int:
    """``audit checkpoints``: the signed checkpoints, for safekeeping elsewhere."""
    db = _existing_database(_config(args, console))
    try:
        for checkpoint in checkpoints(db):
            console.out(checkpoint.to_json())
    finally:
        db.close()
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace, console: Console) -> int:
    """``audit checkpoint``: sign the head now, e.g. just before exporting checkpoints."""
    directory = _directory(_config(args, console), console)
    try:
        checkpoint = directory.checkpoint_audit()
    finally:
        directory.db.close()
    if checkpoint is None:
        console.out("the latest record is already checkpointed; nothing to sign")
    else:
        console.out(f"signed checkpoint at record {checkpoint.seq}")
    return 0


def _table(console: Console, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        console.out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
