"""The SIP commands of ``telemancer`` (extension, registrations, bans), run in-process."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance.cli import CommandError
from appliance.cli_sip import check_sip_password
from appliance.sip import digest
from appliance.sip.registrar import Binding, Flow
from appliance.store import open_directory
from appliance.store.audit import Actor, format_time
from appliance.store.checkpoints import CheckpointKey
from appliance.store.sipstate import StoredBlock, save_bindings, save_block
from appliance.store.tenants import Directory
from tests.test_cli import Result, cli, run

PASSWORD = "phone-secret-4711"
ROBOT = Actor("test:fail2ban-alike", "service")


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A development instance with tenant acme.example (at most 2 extensions)."""
    assert run("init", "--dev", str(tmp_path / "var")).status == 0
    config = tmp_path / "var" / "telemancer.toml"
    added = cli(
        config, "tenant", "add", "Acme", "--domain", "acme.example", "--max-extensions", "2"
    )
    assert added.status == 0, added.err
    assert cli(config, "tenant", "add", "Bravo", "--domain", "bravo.example").status == 0
    return config


@pytest.fixture
def store(instance: Path) -> Iterator[Directory]:
    """The instance's store opened as the service would, signing with its audit key."""
    config = config_module.load(instance, {})
    key = CheckpointKey.from_pem(config.secrets.audit_signing_key.value)
    directory = open_directory(config.database_path, key, config.audit.checkpoint_every, time.time)
    yield directory
    directory.db.close()


def _rows(result: Result) -> list[list[str]]:
    """The table's lines split into cells, header first."""
    return [line.split() for line in result.out.splitlines()]


def _add(instance: Path, domain: str, number: str, password: str = PASSWORD) -> Result:
    return cli(instance, "extension", "add", domain, number, stdin=f"{password}\n")


def _audit_ok(instance: Path) -> None:
    verified = cli(instance, "audit", "verify")
    assert verified.status == 0, verified.out


def test_extension_add_and_list(instance: Path) -> None:
    """add reads the password from stdin and confirms; list shows numbers and times only."""
    added = _add(instance, "ACME.example", "200")
    assert added.status == 0, added.err
    assert added.out.strip() == "added extension 200@acme.example"
    assert _add(instance, "acme.example", "201").status == 0
    listed = cli(instance, "extension", "list", "acme.example")
    assert listed.status == 0
    rows = _rows(listed)
    assert rows[0] == ["NUMBER", "CREATED"]
    assert [r[0] for r in rows[1:]] == ["200", "201"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", r[1]) for r in rows[1:])
    for algorithm in digest.ALGORITHMS:
        assert digest.ha1(algorithm, "200", "acme.example", PASSWORD) not in listed.out
    assert _rows(cli(instance, "extension", "list", "bravo.example")) == [["NUMBER", "CREATED"]]
    export = cli(instance, "audit", "export").out
    assert export.count('"action":"extension.add"') == 2 and PASSWORD not in export
    _audit_ok(instance)


def test_extension_passwords_are_never_accepted_in_argv(instance: Path) -> None:
    """Neither add nor passwd has a --password option: argv is a usage error (exit 2)."""
    for action in ("add", "passwd"):
        result = cli(instance, "extension", action, "acme.example", "200", "--password", PASSWORD)
        assert result.status == 2, action
        result = cli(instance, "extension", action, "acme.example", "200", PASSWORD)
        assert result.status == 2, action
    assert _rows(cli(instance, "extension", "list", "acme.example")) == [["NUMBER", "CREATED"]]


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("short\n", "too short"),
        ("1234567\n", "too short"),
        ("pass\x07word-long\n", "control characters"),
        ("pass\tword-long\n", "control characters"),
        ("", "no password on stdin"),
    ],
)
def test_extension_add_refuses_bad_passwords(instance: Path, stdin: str, message: str) -> None:
    """Short passwords, control characters and an empty stdin are exit 1; nothing is created."""
    result = cli(instance, "extension", "add", "acme.example", "200", stdin=stdin)
    assert result.status == 1 and message in result.err
    assert _rows(cli(instance, "extension", "list", "acme.example")) == [["NUMBER", "CREATED"]]
    assert "extension.add" not in cli(instance, "audit", "export").out


def test_sip_password_rule() -> None:
    """Eight printable characters of any script pass; seven, or a control character, do not."""
    check_sip_password("12345678")
    check_sip_password("pässwörd mit Leerzeichen")
    for bad in ("1234567", "12345678\x00", "\x1b[31m-red-", "abcdefgh\x7f"):
        with pytest.raises(CommandError):
            check_sip_password(bad)


def test_extension_add_quota_duplicate_and_unknown_tenant(instance: Path) -> None:
    """The quota, a duplicate number and an unknown domain are each exit 1 with the reason."""
    assert _add(instance, "acme.example", "200").status == 0
    duplicate = _add(instance, "acme.example", "200")
    assert duplicate.status == 1 and "extension 200 exists in acme.example" in duplicate.err
    assert _add(instance, "acme.example", "201").status == 0
    over = _add(instance, "acme.example", "202")
    assert over.status == 1
    assert over.err.strip() == "telemancer: acme.example is at its limit of 2 extensions"
    unknown = _add(instance, "nowhere.example", "200")
    assert unknown.status == 1 and "no tenant" in unknown.err
    invalid = _add(instance, "acme.example", "Bad Number")
    assert invalid.status == 1 and "invalid extension number" in invalid.err
    listed = _rows(cli(instance, "extension", "list", "acme.example"))
    assert [r[0] for r in listed[1:]] == ["200", "201"]
    assert cli(instance, "audit", "export").out.count('"action":"extension.add"') == 2


def test_extension_passwd_replaces_the_ha1_values(instance: Path) -> None:
    """passwd stores the new password's HA1 values and writes an extension.passwd record."""
    assert _add(instance, "acme.example", "200").status == 0
    changed = cli(
        instance, "extension", "passwd", "acme.example", "200", stdin="new-secret-0815\n"
    )
    assert changed.status == 0, changed.err
    assert "200@acme.example" in changed.out
    conn = sqlite3.connect(instance.parent / "telemancer.sqlite3")
    try:
        stored = conn.execute(
            "SELECT ha1_sha256, ha1_md5 FROM extensions WHERE number = '200'"
        ).fetchone()
    finally:
        conn.close()
    assert stored == (
        digest.ha1(digest.SHA256, "200", "acme.example", "new-secret-0815"),
        digest.ha1(digest.MD5, "200", "acme.example", "new-secret-0815"),
    )
    export = cli(instance, "audit", "export").out
    assert '"action":"extension.passwd"' in export and "new-secret" not in export
    _audit_ok(instance)


def test_extension_passwd_refusals(instance: Path) -> None:
    """An unknown extension, another tenant's number or a short password change nothing."""
    assert _add(instance, "acme.example", "200").status == 0
    unknown = cli(instance, "extension", "passwd", "acme.example", "999", stdin=f"{PASSWORD}\n")
    assert unknown.status == 1 and "no extension" in unknown.err
    other = cli(instance, "extension", "passwd", "bravo.example", "200", stdin=f"{PASSWORD}\n")
    assert other.status == 1 and "no extension" in other.err
    short = cli(instance, "extension", "passwd", "acme.example", "200", stdin="short\n")
    assert short.status == 1 and "too short" in short.err
    assert "extension.passwd" not in cli(instance, "audit", "export").out


def test_registrations_list(instance: Path, store: Directory) -> None:
    """Live bindings are listed with seconds left and their flow, all or one domain's."""
    assert _add(instance, "acme.example", "200").status == 0
    acme = store.tenant_by_domain("acme.example")
    ext = store.scope(acme.id).extensions().get("200")
    now = time.time()
    flow = Flow("tls", ("2001:db8::1", 50123), "conn-1")
    save_bindings(
        store.db,
        [
            Binding(acme.id, ext.id, "sip:200@[2001:db8::1]", now + 600, "c", 1, flow, "Yealink"),
            Binding(acme.id, ext.id, "sip:200@gone.example", now - 1, "c", 1, flow, "Old"),
        ],
        [],
    )
    listed = cli(instance, "registrations", "list")
    assert listed.status == 0, listed.err
    rows = _rows(listed)
    assert rows[0] == ["DOMAIN", "NUMBER", "CONTACT", "EXPIRES", "FLOW", "USER-AGENT"]
    assert len(rows) == 2
    domain, number, contact, expires_in, seconds, described, agent = rows[1]
    assert (domain, number, contact, agent) == (
        "acme.example",
        "200",
        "sip:200@[2001:db8::1]",
        "Yealink",
    )
    assert expires_in == "in" and re.fullmatch(r"(59\d|600)s", seconds)
    assert described == "tls:[2001:db8::1]:50123"
    assert len(_rows(cli(instance, "registrations", "list", "Acme.Example"))) == 2
    assert _rows(cli(instance, "registrations", "list", "bravo.example")) == [rows[0]]
    unknown = cli(instance, "registrations", "list", "nowhere.example")
    assert unknown.status == 1 and "no tenant" in unknown.err


def test_registrations_list_escapes_what_phones_sent(instance: Path, store: Directory) -> None:
    """A User-Agent with terminal escape sequences is printed escaped, never raw."""
    assert _add(instance, "acme.example", "200").status == 0
    acme = store.tenant_by_domain("acme.example")
    ext = store.scope(acme.id).extensions().get("200")
    flow = Flow("udp", ("192.0.2.10", 5060))
    evil = Binding(acme.id, ext.id, "sip:x@y", time.time() + 60, "c", 1, flow, "\x1b]0;pwn\x07")
    save_bindings(store.db, [evil], [])
    listed = cli(instance, "registrations", "list")
    assert "\x1b" not in listed.out and "\x07" not in listed.out
    assert "\\x1b]0;pwn\\x07" in listed.out


def test_bans_list_and_lift(instance: Path, store: Directory) -> None:
    """list shows blocks in force in UTC; lift normalises the IP, deletes and audits it."""
    now = time.time()
    block = StoredBlock("192.0.2.66", "digest-brute-force", now - 10, now + 3600)
    save_block(store.db, store.audit, ROBOT, block, now)
    expired = StoredBlock("198.51.100.7", "scanner", now - 7200, now - 3600)
    save_block(store.db, store.audit, ROBOT, expired, now)
    listed = cli(instance, "bans", "list")
    assert listed.status == 0, listed.err
    assert _rows(listed) == [
        ["IP", "REASON", "SINCE", "UNTIL"],
        ["192.0.2.66", "digest-brute-force", format_time(now - 10), format_time(now + 3600)],
    ]
    lifted = cli(instance, "bans", "lift", "::ffff:192.0.2.66")
    assert lifted.status == 0, lifted.err
    assert "192.0.2.66" in lifted.out
    assert _rows(cli(instance, "bans", "list")) == [["IP", "REASON", "SINCE", "UNTIL"]]
    export = cli(instance, "audit", "export").out.splitlines()
    unblock = [line for line in export if '"action":"sip.unblock"' in line]
    assert len(unblock) == 1
    assert '"target":"ip:192.0.2.66"' in unblock[0] and "lifted by operator" in unblock[0]
    assert '"source":"console"' in unblock[0]
    _audit_ok(instance)


def test_bans_lift_refusals(instance: Path, store: Directory) -> None:
    """Lifting an unblocked IP or a non-IP is exit 1 and audits nothing; no IP is exit 2."""
    now = time.time()
    save_block(store.db, store.audit, ROBOT, StoredBlock("192.0.2.66", "x", now, now + 60), now)
    missing = cli(instance, "bans", "lift", "192.0.2.67")
    assert missing.status == 1 and "no block for 192.0.2.67" in missing.err
    garbage = cli(instance, "bans", "lift", "not-an-ip")
    assert garbage.status == 1 and "not an IP address" in garbage.err
    assert cli(instance, "bans", "lift").status == 2
    assert "sip.unblock" not in cli(instance, "audit", "export").out
    assert [r[0] for r in _rows(cli(instance, "bans", "list"))[1:]] == ["192.0.2.66"]


def test_help_says_a_running_service_picks_changes_up(capsys: pytest.CaptureFixture[str]) -> None:
    """The bans and extension help tell the operator no restart is needed."""
    for command in ("bans", "extension"):
        assert run(command, "--help").status == 0
        assert "running service picks changes up from the database" in capsys.readouterr().out
