"""The ``telemancer`` command line, run in-process against a dev instance."""

from __future__ import annotations

import io
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.passwords import verify_password
from appliance.store.migrations import MIGRATIONS


@dataclass
class Result:
    """What one command printed and returned."""

    status: int
    out: str
    err: str


def run(*argv: str, stdin: str = "", environ: dict[str, str] | None = None) -> Result:
    """Run one command with captured streams."""
    out, err = io.StringIO(), io.StringIO()
    status = main(
        list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err, environ=environ or {}
    )
    return Result(status, out.getvalue(), err.getvalue())


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A freshly initialised development instance; returns its config file."""
    result = run("init", "--dev", str(tmp_path / "var"))
    assert result.status == 0, result.err
    return tmp_path / "var" / "telemancer.toml"


def cli(config: Path, *argv: str, stdin: str = "") -> Result:
    """Run a command against ``config``."""
    return run("--config", str(config), *argv, stdin=stdin)


def test_init_dev_writes_a_private_instance_and_is_idempotent(tmp_path: Path) -> None:
    """init writes certs, secrets and config with mode 0600 and a first sysadmin whose
    password is printed once and stored only as an Argon2id hash; a second run
    changes nothing and prints no password."""
    first = run("init", "--dev", str(tmp_path / "var"))
    assert first.status == 0
    password = first.out.split("password: ")[1].split()[0]
    var = tmp_path / "var"
    for name in (
        "tls/server.key",
        "tls/ca.key",
        "secrets/jwt-signing.key",
        "secrets/audit-signing.key",
        "telemancer.toml",
    ):
        assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name
    conn = sqlite3.connect(var / "telemancer.sqlite3")
    (stored,) = conn.execute("SELECT password_hash FROM users WHERE username = 'admin'").fetchone()
    assert stored.startswith("$argon2id$") and password not in stored
    assert verify_password(stored, password)
    before = {p: p.read_bytes() for p in var.rglob("*") if p.is_file() and "sqlite" not in p.name}
    second = run("init", "--dev", str(var))
    assert second.status == 0 and "nothing changed" in second.out
    assert "password" not in second.out
    assert before == {p: p.read_bytes() for p in before}


def test_tenant_add_and_list(instance: Path) -> None:
    """Tenants added on the command line are listed with their quotas."""
    added = cli(
        instance,
        "tenant",
        "add",
        "Acme",
        "--domain",
        "Acme.Example",
        "--max-extensions",
        "20",
        "--max-calls",
        "4",
    )
    assert added.status == 0 and "acme.example" in added.out
    listed = cli(instance, "tenant", "list")
    assert listed.status == 0
    assert ["1", "Acme", "acme.example", "20", "4", "active", "optional"] in [
        line.split() for line in listed.out.splitlines()
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("tenant", "add", "Acme", "--domain", "acme.example"), "already"),
        (("tenant", "add", "Bad", "--domain", "not_a_domain"), "invalid SIP domain"),
        (("user", "add", "x", "--tenant", "nowhere.example"), "no tenant"),
    ],
)
def test_refusals_exit_1_with_a_message(
    instance: Path, argv: tuple[str, ...], message: str
) -> None:
    """Conflicts, invalid input and unknown tenants are exit status 1 with a reason."""
    assert cli(instance, "tenant", "add", "Acme", "--domain", "acme.example").status == 0
    result = cli(instance, *argv, stdin="a-long-enough-password\n")
    assert result.status == 1 and message in result.err


def test_negative_quota_is_a_usage_error(instance: Path) -> None:
    """A negative quota is refused by the parser (exit status 2)."""
    result = cli(instance, "tenant", "add", "Acme", "--domain", "a.example", "--max-calls", "-1")
    assert result.status == 2


def test_user_add_reads_the_password_from_stdin(instance: Path) -> None:
    """user add takes the password from stdin, stores only its hash, and audits it."""
    assert cli(instance, "tenant", "add", "Acme", "--domain", "acme.example").status == 0
    result = cli(
        instance,
        "user",
        "add",
        "alice",
        "--tenant",
        "acme.example",
        "--role",
        "read-only",
        stdin="correct horse battery\n",
    )
    assert result.status == 0, result.err
    listed = cli(instance, "user", "list", "--tenant", "acme.example")
    assert "alice" in listed.out and "read-only" in listed.out
    export = cli(instance, "audit", "export").out
    assert '"action":"user.add"' in export and "correct horse" not in export


def test_user_add_refuses_weak_or_missing_passwords(instance: Path) -> None:
    """A short password or an empty stdin is refused and creates nobody."""
    assert cli(instance, "user", "add", "bob", "--sysadmin", stdin="short\n").status == 1
    assert cli(instance, "user", "add", "bob", "--sysadmin", stdin="").status == 1
    assert "bob" not in cli(instance, "user", "list").out


def test_passwords_are_never_accepted_in_argv(instance: Path) -> None:
    """There is no --password option: argv is visible to every local user."""
    result = cli(instance, "user", "add", "bob", "--sysadmin", "--password", "x" * 20)
    assert result.status == 2


def test_audit_verify_reports_tampering(instance: Path) -> None:
    """verify exits 0 on an intact chain and 1 naming the first broken record."""
    cli(instance, "tenant", "add", "Acme", "--domain", "acme.example")
    ok = cli(instance, "audit", "verify")
    assert ok.status == 0 and "audit chain OK" in ok.out
    conn = sqlite3.connect(instance.parent / "telemancer.sqlite3")
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    conn.commit()
    broken = cli(instance, "audit", "verify")
    assert broken.status == 1 and "BROKEN at record 2: content changed" in broken.out


def test_audit_verify_against_exported_checkpoints(instance: Path, tmp_path: Path) -> None:
    """Checkpoints exported before a truncation expose it; the export verifies offline."""
    for i in range(3):
        cli(instance, "tenant", "add", f"T{i}", "--domain", f"t{i}.example")
    assert "signed checkpoint at record 5" in cli(instance, "audit", "checkpoint").out
    assert "nothing to sign" in cli(instance, "audit", "checkpoint").out
    exported = tmp_path / "checkpoints.jsonl"
    exported.write_text(cli(instance, "audit", "checkpoints").out)
    dump = tmp_path / "audit.jsonl"
    dump.write_text(cli(instance, "audit", "export").out)
    assert (
        cli(
            instance, "audit", "verify", "--export", str(dump), "--checkpoint", str(exported)
        ).status
        == 0
    )
    conn = sqlite3.connect(instance.parent / "telemancer.sqlite3")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute("DROP TRIGGER audit_checkpoints_no_delete")
    conn.execute("DELETE FROM audit_log WHERE seq > 2")
    conn.execute("DELETE FROM audit_checkpoints WHERE seq > 2")
    conn.commit()
    assert cli(instance, "audit", "verify").status == 0
    result = cli(instance, "audit", "verify", "--checkpoint", str(exported))
    assert result.status == 1 and "BROKEN at record 3" in result.out and "truncated" in result.out


def test_bad_checkpoint_file_is_a_clear_error(instance: Path, tmp_path: Path) -> None:
    """An unreadable or malformed checkpoint file is exit 1 naming the line."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"seq": 1}\n')
    result = cli(instance, "audit", "verify", "--checkpoint", str(bad))
    assert result.status == 1 and "bad.jsonl:1" in result.err
    missing = cli(instance, "audit", "verify", "--checkpoint", str(tmp_path / "none"))
    assert missing.status == 1 and "cannot read" in missing.err


def test_check_config_prints_a_redacted_summary(instance: Path) -> None:
    """check-config validates everything and never prints a secret's value."""
    result = cli(instance, "check-config")
    assert result.status == 0 and "configuration OK" in result.out
    var = instance.parent
    for secret in ("secrets/jwt-signing.key", "secrets/audit-signing.key", "tls/server.key"):
        lines = (var / secret).read_text().splitlines()
        values = [line for line in lines if line and not line.startswith("-----")]
        assert values and not any(value in result.out for value in values)
    assert "file:secrets/jwt-signing.key" in result.out


def test_config_problems_are_listed_with_key_paths(instance: Path) -> None:
    """A broken config fails with every problem and its key path on stderr."""
    text = instance.read_text().replace('listen = "127.0.0.1:8443"', 'listen = "nowhere"')
    instance.write_text(text + "\n[bogus]\n")
    result = cli(instance, "check-config")
    assert result.status == 1
    assert "admin.listen: expected host:port" in result.err
    assert "bogus: unknown key" in result.err


def test_migrate_reports_the_schema_version(instance: Path) -> None:
    """migrate on an up-to-date database says so."""
    result = cli(instance, "migrate")
    assert result.status == 0 and f"up to date at version {len(MIGRATIONS)}" in result.out


def test_read_commands_refuse_a_missing_database(instance: Path) -> None:
    """Export and verify do not create an empty database where there is none."""
    (instance.parent / "telemancer.sqlite3").unlink()
    result = cli(instance, "audit", "export")
    assert result.status == 1 and "no database" in result.err
    assert not (instance.parent / "telemancer.sqlite3").exists()
