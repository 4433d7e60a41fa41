"""The trunk commands of ``telemancer`` (trunk, did, route, dialplan), run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance.store.database import open_database
from appliance.store.sealed import SealError
from appliance.store.sip_dialplan import load_trunks
from appliance.store.trunk_health import record_health
from appliance.store.trunks import associated_data, sealing_key
from tests.test_cli import Result, cli, run

PASSWORD = "carrier-Secret-4711"
PIN = "0123456789abcdef" * 4


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A development instance with tenants acme.example (extension 200) and bravo.example."""
    assert run("init", "--dev", str(tmp_path / "var")).status == 0
    config = tmp_path / "var" / "telemancer.toml"
    assert cli(config, "tenant", "add", "Acme", "--domain", "acme.example").status == 0
    assert cli(config, "tenant", "add", "Bravo", "--domain", "bravo.example").status == 0
    added = cli(config, "extension", "add", "acme.example", "200", stdin="phone-secret-4711\n")
    assert added.status == 0, added.err
    return config


def _rows(result: Result) -> list[list[str]]:
    """The table's lines split into cells, header first."""
    return [line.split() for line in result.out.splitlines()]


def _audit(instance: Path) -> list[dict[str, object]]:
    export = cli(instance, "audit", "export")
    assert export.status == 0
    return [json.loads(line) for line in export.out.splitlines()]


def _database_bytes(instance: Path) -> bytes:
    var = instance.parent
    return b"".join(p.read_bytes() for p in var.glob("telemancer.sqlite3*"))


def _add_carrier(instance: Path, *extra: str) -> Result:
    return cli(
        instance,
        "trunk",
        "add",
        "acme.example",
        "carrier",
        "--host",
        "sbc.carrier.example",
        "--username",
        "acct42",
        "--password-stdin",
        *extra,
        stdin=f"{PASSWORD}\n",
    )


def test_trunk_add_and_list_never_show_the_password(instance: Path) -> None:
    """add reads the password from stdin and stores it sealed; list shows every
    setting but the password; the audit says only "password_changed"."""
    ca = instance.parent / "tls" / "ca.crt"
    added = _add_carrier(
        instance,
        "--port",
        "5062",
        "--caller-id",
        "+442079460000",
        "--tls-domain",
        "edge.carrier.example",
        "--ca-bundle",
        str(ca),
        "--fingerprint",
        PIN,
        "--inbound-network",
        "192.0.2.0/24",
        "--inbound-network",
        "198.51.100.7",
        "--inbound-fingerprint",
        PIN.upper(),
    )
    assert added.status == 0, added.err
    assert added.out.splitlines() == [
        "added trunk carrier to acme.example (tls to sbc.carrier.example:5062)",
        "the carrier password is stored sealed",
    ]
    assert added.err == ""
    listed = cli(instance, "trunk", "list", "ACME.example")
    assert listed.status == 0, listed.err
    assert _rows(listed) == [
        [
            "NAME",
            "ENABLED",
            "TRANSPORT",
            "HOST",
            "PORT",
            "USERNAME",
            "CALLER-ID",
            "TLS-DOMAIN",
            "CA",
            "PIN",
            "INBOUND",
            "INBOUND-PIN",
            "SRTP",
        ],
        [
            "carrier",
            "yes",
            "tls",
            "sbc.carrier.example",
            "5062",
            "acct42",
            "+442079460000",
            "edge.carrier.example",
            "custom",
            "sha256",
            "192.0.2.0/24,198.51.100.7/32",
            "sha256",
            "optional",
        ],
    ]
    assert PASSWORD not in listed.out
    records = _audit(instance)
    assert PASSWORD not in json.dumps(records)
    (trunk_add,) = [r for r in records if r["action"] == "trunk.add"]
    assert trunk_add["target"] == "trunk:carrier@acme.example"
    assert json.loads(str(trunk_add["details"]))["password_changed"] is True
    assert PASSWORD.encode() not in _database_bytes(instance)
    assert cli(instance, "audit", "verify").status == 0


def test_the_service_key_opens_what_the_cli_sealed(instance: Path) -> None:
    """The CLI seals with sealing_key(config), so the service's load_trunks, using the
    same function, gets the password back; the sealed value is bound to the trunk."""
    assert _add_carrier(instance).status == 0
    config = config_module.load(instance, {})
    db = open_database(config.database_path)
    try:
        (entry,) = load_trunks(db, sealing_key(config))
        assert entry.credentials == ("acct42", PASSWORD)
        (sealed,) = db.conn.execute("SELECT password_sealed FROM trunks").fetchone()
    finally:
        db.close()
    assert sealed.startswith("v1:")
    assert associated_data(entry.tenant_id, "carrier") != associated_data(entry.tenant_id, "x")


def test_passwords_never_come_from_argv(instance: Path) -> None:
    """There is no --password option, a password as an extra argument is a usage
    error, and --username and --password-stdin must come together (exit 2)."""
    base = ("trunk", "add", "acme.example", "carrier", "--host", "sbc.carrier.example")
    assert cli(instance, *base, "--username", "u", "--password", PASSWORD).status == 2
    assert cli(instance, *base, "--username", "u", "--password-stdin", PASSWORD).status == 2
    alone = cli(instance, *base, "--username", "u", stdin=f"{PASSWORD}\n")
    assert alone.status == 2 and "--username and --password-stdin go together" in alone.err
    orphan = cli(instance, *base, "--password-stdin", stdin=f"{PASSWORD}\n")
    assert orphan.status == 2 and "go together" in orphan.err
    empty = cli(instance, *base, "--username", "u", "--password-stdin", stdin="")
    assert empty.status == 1 and "no password on stdin" in empty.err
    control = cli(instance, *base, "--username", "u", "--password-stdin", stdin="pa\x07ss\n")
    assert control.status == 1 and "control characters" in control.err
    assert _rows(cli(instance, "trunk", "list", "acme.example"))[1:] == []
    assert not any(r["action"] == "trunk.add" for r in _audit(instance))


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (("--host", "bad_host"), 1, "invalid host"),
        (("--host", "h.example", "--port", "0"), 2, "a port is 1-65535"),
        (("--host", "h.example", "--port", "x"), 2, "expected a whole number"),
        (("--host", "h.example", "--transport", "sctp"), 2, "invalid choice"),
        (("--host", "h.example", "--caller-id", "02079460000"), 1, "invalid caller ID"),
        (("--host", "h.example", "--fingerprint", "abc"), 1, "invalid fingerprint"),
        (("--host", "h.example", "--inbound-network", "10.0.0.1/8"), 1, "host bits set"),
        (("--host", "h.example", "--inbound-network", "0.0.0.0/0"), 1, "from anywhere"),
        (("--host", "h.example", "--ca-bundle", "/nonexistent/ca.pem"), 1, "cannot read"),
        ((), 2, "--host"),
    ],
)
def test_trunk_add_refusals(
    instance: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    status: int,
    message: str,
) -> None:
    """Bad values are exit 1 with the store's reason; malformed options exit 2 with
    argparse's (which writes to the process's stderr)."""
    capsys.readouterr()
    result = cli(instance, "trunk", "add", "acme.example", "carrier", *extra)
    assert result.status == status
    assert message in result.err + capsys.readouterr().err
    assert _rows(cli(instance, "trunk", "list", "acme.example"))[1:] == []


def test_trunk_add_warns_about_plaintext_and_refuses_duplicates(instance: Path) -> None:
    """A udp trunk is added with a warning on stderr; the same name again is exit 1;
    an unknown tenant is exit 1."""
    base = ("trunk", "add", "acme.example", "lab", "--host", "10.0.0.5")
    added = cli(instance, *base, "--transport", "udp", "--port", "5060")
    assert added.status == 0, added.err
    assert "udp is plaintext" in added.err and "sip.internal_subnets" in added.err
    again = cli(instance, *base)
    assert again.status == 1 and "trunk lab exists in acme.example" in again.err
    unknown = cli(instance, "trunk", "add", "nowhere.example", "x", "--host", "h.example")
    assert unknown.status == 1 and "no tenant" in unknown.err


def test_trunk_remove(instance: Path) -> None:
    """remove deletes a trunk no route uses, refuses one in use, and another
    tenant's name is not found."""
    assert _add_carrier(instance).status == 0
    assert cli(instance, "route", "add", "acme.example", "+44", "carrier").status == 0
    in_use = cli(instance, "trunk", "remove", "acme.example", "carrier")
    assert in_use.status == 1 and "used by the route(s) at position 1" in in_use.err
    other = cli(instance, "trunk", "remove", "bravo.example", "carrier")
    assert other.status == 1 and "no trunk 'carrier'" in other.err
    assert cli(instance, "route", "remove", "acme.example", "1").status == 0
    removed = cli(instance, "trunk", "remove", "acme.example", "carrier")
    assert removed.status == 0 and removed.out.strip() == "removed trunk carrier"
    assert _rows(cli(instance, "trunk", "list", "acme.example"))[1:] == []
    actions = [r["action"] for r in _audit(instance)]
    assert actions[-4:] == ["trunk.add", "route.add", "route.remove", "trunk.remove"]


def test_did_add_list_remove(instance: Path) -> None:
    """DIDs ring an extension, are listed, removed, and belong to one tenant only."""
    added = cli(instance, "did", "add", "acme.example", "+442079460000", "200")
    assert added.status == 0, added.err
    assert added.out.strip() == "+442079460000 now rings extension 200"
    listed = _rows(cli(instance, "did", "list", "acme.example"))
    assert listed[0] == ["NUMBER", "EXTENSION", "CREATED"]
    assert [r[:2] for r in listed[1:]] == [["+442079460000", "200"]]
    taken = cli(instance, "did", "add", "bravo.example", "+442079460000", "200")
    assert taken.status == 1
    taken = cli(instance, "did", "add", "bravo.example", "+442079460000", "300")
    assert taken.status == 1
    invalid = cli(instance, "did", "add", "acme.example", "02079460001", "200")
    assert invalid.status == 1 and "expected E.164" in invalid.err
    no_ext = cli(instance, "did", "add", "acme.example", "+442079460001", "999")
    assert no_ext.status == 1 and "no extension" in no_ext.err
    assert cli(instance, "did", "add", "acme.example", "+442079460000").status == 2
    assert _rows(cli(instance, "did", "list", "bravo.example"))[1:] == []
    removed = cli(instance, "did", "remove", "acme.example", "+442079460000")
    assert removed.status == 0 and "removed DID +442079460000" in removed.out
    missing = cli(instance, "did", "remove", "acme.example", "+442079460000")
    assert missing.status == 1 and "no DID" in missing.err
    actions = [r["action"] for r in _audit(instance)]
    assert actions.count("did.add") == 1 and actions.count("did.remove") == 1


def test_did_conflict_names_no_other_tenant(instance: Path) -> None:
    """Another tenant's DID is refused without saying whose it is."""
    assert cli(instance, "did", "add", "acme.example", "+442079460000", "200").status == 0
    assert cli(instance, "extension", "add", "bravo.example", "300", stdin="x" * 9).status == 0
    taken = cli(instance, "did", "add", "bravo.example", "+442079460000", "300")
    assert taken.status == 1
    assert taken.err.strip() == "telemancer: DID +442079460000 is already assigned"
    assert "acme" not in taken.err


def test_route_add_list_remove(instance: Path) -> None:
    """Rules are listed in position order with strip and prepend; a taken position,
    an unknown trunk or a bad prefix is exit 1, a bad position exit 2."""
    assert _add_carrier(instance).status == 0
    first = cli(instance, "route", "add", "acme.example", "+", "carrier", "--position", "10")
    assert first.status == 0 and first.out.strip() == "added route 10: + via carrier"
    uk = cli(
        instance,
        "route",
        "add",
        "acme.example",
        "44",
        "carrier",
        "--position",
        "2",
        "--strip",
        "3",
        "--prepend",
        "0",
    )
    assert uk.status == 0, uk.err
    assert cli(instance, "route", "add", "acme.example", "+1", "carrier").status == 0
    assert _rows(cli(instance, "route", "list", "acme.example")) == [
        ["POSITION", "PREFIX", "TRUNK", "STRIP", "PREPEND"],
        ["2", "44", "carrier", "3", "0"],
        ["10", "+", "carrier", "0", "-"],
        ["11", "+1", "carrier", "0", "-"],
    ]
    taken = cli(instance, "route", "add", "acme.example", "+33", "carrier", "--position", "2")
    assert taken.status == 1 and "position 2 is taken" in taken.err
    unknown = cli(instance, "route", "add", "acme.example", "+33", "nope")
    assert unknown.status == 1 and "no trunk 'nope'" in unknown.err
    bad = cli(instance, "route", "add", "acme.example", "44x", "carrier")
    assert bad.status == 1 and "invalid prefix" in bad.err
    zero = cli(instance, "route", "add", "acme.example", "+33", "carrier", "--position", "0")
    assert zero.status == 2
    assert (
        cli(instance, "route", "add", "acme.example", "+3", "carrier", "--strip", "-1").status == 2
    )
    other = cli(instance, "route", "add", "bravo.example", "+44", "carrier")
    assert other.status == 1 and "no trunk" in other.err
    removed = cli(instance, "route", "remove", "acme.example", "10")
    assert removed.status == 0 and removed.out.strip() == "removed route 10"
    assert [r[0] for r in _rows(cli(instance, "route", "list", "acme.example"))[1:]] == [
        "2",
        "11",
    ]
    missing = cli(instance, "route", "remove", "acme.example", "10")
    assert missing.status == 1 and "no route at position 10" in missing.err
    assert cli(instance, "route", "remove", "acme.example", "ten").status == 2
    assert cli(instance, "audit", "verify").status == 0


def test_dialplan_set_and_show(instance: Path) -> None:
    """set changes only the options given and prints the result; show prints them;
    no option is exit 2, a bad value exit 1 with nothing changed."""
    shown = cli(instance, "dialplan", "show", "acme.example")
    assert shown.status == 0
    assert shown.out.splitlines() == [
        "country code: (unset)",
        "national prefix: 0",
        "international prefix: 00",
    ]
    changed = cli(instance, "dialplan", "set", "acme.example", "--country-code", "44")
    assert changed.status == 0, changed.err
    assert changed.out.splitlines()[0] == "country code: 44"
    nanp = cli(
        instance,
        "dialplan",
        "set",
        "bravo.example",
        "--country-code",
        "1",
        "--national-prefix",
        "1",
        "--international-prefix",
        "011",
    )
    assert nanp.status == 0 and "international prefix: 011" in nanp.out
    nothing = cli(instance, "dialplan", "set", "acme.example")
    assert nothing.status == 2 and "give at least one of" in nothing.err
    bad = cli(instance, "dialplan", "set", "acme.example", "--country-code", "044")
    assert bad.status == 1 and "invalid country code" in bad.err
    none = cli(instance, "dialplan", "set", "acme.example", "--national-prefix", "")
    assert none.status == 0 and "national prefix: (none)" in none.out
    assert cli(instance, "dialplan", "show", "acme.example").out.splitlines() == [
        "country code: 44",
        "national prefix: (none)",
        "international prefix: 00",
    ]
    sets = [r for r in _audit(instance) if r["action"] == "dialplan.set"]
    assert [r["target"] for r in sets] == [
        "dialplan:acme.example",
        "dialplan:bravo.example",
        "dialplan:acme.example",
    ]


def test_help_lists_the_new_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """The top-level help names trunk, did, route and dialplan."""
    assert run("--help").status == 0
    out = capsys.readouterr().out
    for command in ("trunk", "did", "route", "dialplan"):
        assert command in out


def test_trunk_health_lists_pings_newest_first(instance: Path) -> None:
    """`trunk health` shows each recorded OPTIONS ping, newest first, up or down."""
    assert _add_carrier(instance).status == 0
    db = open_database(instance.parent / "telemancer.sqlite3")
    try:
        trunk_id = db.conn.execute("SELECT id FROM trunks").fetchone()[0]
        record_health(db, trunk_id, 1_800_000_000.0, True, 200, 0.012)
        record_health(db, trunk_id, 1_800_000_030.0, False, None, None)
    finally:
        db.close()
    result = cli(instance, "trunk", "health", "acme.example", "carrier")
    assert result.status == 0, result.err
    lines = [line.split() for line in result.out.splitlines()[1:]]
    assert [line[1] for line in lines] == ["down", "up"]
    assert lines[1][2:] == ["200", "12", "ms"]


def _credentials(instance: Path) -> tuple[str | None, str | None]:
    """The carrier credentials as the service would load them now."""
    config = config_module.load(instance, {})
    db = open_database(config.database_path)
    try:
        (entry,) = load_trunks(db, sealing_key(config))
    finally:
        db.close()
    return entry.credentials or (None, None)


def test_trunk_passwd_replaces_the_sealed_password(instance: Path) -> None:
    """passwd reads the new password from stdin and keeps the username unless
    given; audited as trunk.update with "password_changed" and never the
    password; a trunk without a username needs --username."""
    assert _add_carrier(instance).status == 0
    changed = cli(instance, "trunk", "passwd", "acme.example", "carrier", stdin="new-Secret-1\n")
    assert changed.status == 0, changed.err
    assert "stored sealed" in changed.out
    assert _credentials(instance) == ("acct42", "new-Secret-1")
    renamed = cli(
        instance,
        *("trunk", "passwd", "acme.example", "carrier", "--username", "acct43"),
        stdin="new-Secret-2\n",
    )
    assert renamed.status == 0 and _credentials(instance) == ("acct43", "new-Secret-2")
    records = [r for r in _audit(instance) if r["action"] == "trunk.update"]
    assert [json.loads(str(r["details"]))["password_changed"] for r in records] == [True, True]
    assert "new-Secret" not in json.dumps(_audit(instance))
    bare = ("trunk", "add", "acme.example", "bare", "--host", "sbc.carrier.example")
    assert cli(instance, *bare).status == 0
    nameless = cli(instance, "trunk", "passwd", "acme.example", "bare", stdin="x-Secret-3\n")
    assert nameless.status == 2 and "give --username" in nameless.err
    unknown = cli(instance, "trunk", "passwd", "acme.example", "nope", stdin="x-Secret-3\n")
    assert unknown.status == 1 and "no trunk" in unknown.err


def test_trunk_reseal_after_the_jwt_key_is_replaced(instance: Path) -> None:
    """With jwt_signing_key replaced, the stored password no longer opens (the
    service would refuse to start); reseal with the old secret seals it under
    the new one, audited as trunk.reseal; run again it has nothing to do; an
    old secret that opens nothing changes nothing and says so."""
    assert _add_carrier(instance).status == 0
    key_file = instance.parent / "secrets" / "jwt-signing.key"
    old_file = instance.parent / "old-jwt.key"
    old_file.write_bytes(key_file.read_bytes())
    key_file.write_text("a-brand-new-jwt-signing-key-for-this-test\n")
    with pytest.raises(SealError):
        _credentials(instance)
    wrong = instance.parent / "wrong-jwt.key"
    wrong.write_text("not-the-key-that-sealed-anything\n")
    refused = cli(instance, "trunk", "reseal", "--old-jwt-key", f"file:{wrong}")
    assert refused.status == 1 and "carrier@acme.example" in refused.err
    assert "nothing was changed" in refused.err
    resealed = cli(instance, "trunk", "reseal", "--old-jwt-key", f"file:{old_file}")
    assert resealed.status == 0, resealed.err
    assert "sealed 1 carrier password(s)" in resealed.out
    assert "carrier@acme.example" in resealed.out and "0 already were" in resealed.out
    assert _credentials(instance) == ("acct42", PASSWORD)
    (record,) = [r for r in _audit(instance) if r["action"] == "trunk.reseal"]
    assert record["target"] == "trunk:carrier@acme.example"
    assert PASSWORD not in json.dumps(_audit(instance))
    again = cli(instance, "trunk", "reseal", "--old-jwt-key", f"file:{old_file}")
    assert again.status == 0 and "sealed 0 carrier password(s)" in again.out
    assert "1 already were" in again.out
    missing = cli(instance, "trunk", "reseal", "--old-jwt-key", "env:NO_SUCH_VARIABLE")
    assert missing.status == 1 and "--old-jwt-key" in missing.err
