"""The SRTP policy on the command line: ``tenant add/srtp/list`` and
``trunk add/srtp/list``, run in-process against a dev instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.media.policy import SrtpPolicy, check_config
from tests.test_cli import Result, cli, run


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A development instance with tenant acme.example."""
    assert run("init", "--dev", str(tmp_path / "var")).status == 0
    config = tmp_path / "var" / "telemancer.toml"
    assert cli(config, "tenant", "add", "Acme", "--domain", "acme.example").status == 0
    return config


def _table(result: Result) -> list[dict[str, str]]:
    """A listing's rows as dictionaries keyed by the header."""
    header, *rows = (line.split() for line in result.out.splitlines())
    return [dict(zip(header, row, strict=True)) for row in rows]


def _audit(instance: Path) -> list[dict[str, object]]:
    export = cli(instance, "audit", "export")
    assert export.status == 0
    return [json.loads(line) for line in export.out.splitlines()]


def _state(instance: Path) -> tuple[str, ...]:
    """What a refused command must not change: the audit chain, tenants and trunks."""
    listings = [("audit", "export"), ("tenant", "list"), ("trunk", "list", "acme.example")]
    return tuple(cli(instance, *argv).out for argv in listings)


# -- tenants ----------------------------------------------------------------------


def test_tenant_add_takes_a_policy_and_list_shows_it(instance: Path) -> None:
    """tenant add defaults to optional, --srtp sets another policy, and tenant list
    has an SRTP column."""
    added = cli(instance, "tenant", "add", "Bravo", "--domain", "bravo.example", "--srtp", "off")
    assert added.status == 0, added.err
    policies = {row["DOMAIN"]: row["SRTP"] for row in _table(cli(instance, "tenant", "list"))}
    assert policies == {"acme.example": "optional", "bravo.example": "off"}
    (record,) = [r for r in _audit(instance) if r["target"] == "tenant:bravo.example"]
    assert json.loads(str(record["details"]))["srtp"] == "off"


def test_tenant_srtp_changes_the_policy_with_an_audit_record(instance: Path) -> None:
    """tenant srtp DOMAIN POLICY says what changed and is audited as tenant.update;
    the same policy again says nothing changed and writes no record."""
    changed = cli(instance, "tenant", "srtp", "ACME.example", "required")
    assert changed.status == 0, changed.err
    assert changed.out == "tenant acme.example: srtp is now required (was optional)\n"
    assert changed.err == ""  # plaintext SIP is off in a dev instance: nothing to warn of
    updates = [r for r in _audit(instance) if r["action"] == "tenant.update"]
    assert [json.loads(str(r["details"])) for r in updates] == [{"changed": {"srtp": "required"}}]
    again = cli(instance, "tenant", "srtp", "acme.example", "required")
    assert again.status == 0 and "already required; nothing changed" in again.out
    assert len([r for r in _audit(instance) if r["action"] == "tenant.update"]) == 1
    assert _table(cli(instance, "tenant", "list"))[0]["SRTP"] == "required"
    assert cli(instance, "audit", "verify").status == 0


def test_required_tenant_warns_when_plaintext_sip_is_on(instance: Path) -> None:
    """With plaintext SIP enabled, requiring SRTP warns on stderr that phones on
    UDP/TCP cannot call (their legs cannot carry keys); the change is still made."""
    text = instance.read_text()
    instance.write_text(text.replace("plaintext_enabled = false", "plaintext_enabled = true"))
    changed = cli(instance, "tenant", "srtp", "acme.example", "required")
    assert changed.status == 0
    assert "warning" in changed.err and "sip.plaintext_enabled" in changed.err
    added = cli(
        instance, "tenant", "add", "Bravo", "--domain", "bravo.example", "--srtp", "required"
    )
    assert added.status == 0 and "warning" in added.err
    assert cli(instance, "tenant", "srtp", "acme.example", "off").err == ""


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (("tenant", "srtp", "acme.example", "mandatory"), 2, "invalid choice: 'mandatory'"),
        (("tenant", "srtp", "acme.example", "REQUIRED"), 2, "invalid choice"),
        (("tenant", "srtp", "acme.example"), 2, "the following arguments are required"),
        (("tenant", "srtp", "nowhere.example", "off"), 1, "no tenant with domain"),
        (("tenant", "add", "B", "--domain", "b.example", "--srtp", "yes"), 2, "invalid choice"),
    ],
)
def test_bad_tenant_policy_input_is_refused(
    instance: Path,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    status: int,
    message: str,
) -> None:
    """An unknown policy is a usage error (exit 2, argparse's message on the
    process's stderr, listing the choices); an unknown tenant is exit 1; neither
    writes anything."""
    before = _state(instance)
    capsys.readouterr()
    result = cli(instance, *argv)
    err = result.err + capsys.readouterr().err
    assert (result.status, result.out) == (status, "")
    assert message in err
    if "invalid choice" in message:
        assert "'required', 'optional', 'off'" in err
    assert _state(instance) == before


# -- trunks -----------------------------------------------------------------------


def _add_trunk(instance: Path, name: str, *extra: str) -> Result:
    return cli(instance, "trunk", "add", "acme.example", name, "--host", "10.0.0.5", *extra)


def test_trunk_add_and_srtp_with_list_and_audit(instance: Path) -> None:
    """trunk add --srtp stores the policy, trunk list shows it, and trunk srtp
    DOMAIN NAME POLICY changes it with a trunk.update record (none when unchanged)."""
    assert _add_trunk(instance, "carrier", "--srtp", "required").status == 0
    assert _add_trunk(instance, "lan", "--transport", "udp").status == 0
    listed = {r["NAME"]: r["SRTP"] for r in _table(cli(instance, "trunk", "list", "acme.example"))}
    assert listed == {"carrier": "required", "lan": "optional"}
    changed = cli(instance, "trunk", "srtp", "acme.example", "carrier", "optional")
    assert changed.status == 0, changed.err
    assert changed.out == "trunk carrier of acme.example: srtp is now optional (was required)\n"
    (update,) = [r for r in _audit(instance) if r["action"] == "trunk.update"]
    assert update["target"] == "trunk:carrier@acme.example"
    assert json.loads(str(update["details"])) == {
        "changed": {"srtp": "optional"},
        "password_changed": False,
    }
    again = cli(instance, "trunk", "srtp", "acme.example", "carrier", "optional")
    assert again.status == 0 and "nothing changed" in again.out
    assert len([r for r in _audit(instance) if r["action"] == "trunk.update"]) == 1
    assert cli(instance, "trunk", "srtp", "acme.example", "lan", "off").status == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_required_on_a_clear_trunk_is_refused(instance: Path, transport: str) -> None:
    """Requiring SRTP on a UDP or TCP trunk exits 1 with check_config's message,
    on add and on trunk srtp, and leaves the database as it was."""
    message = check_config(SrtpPolicy.REQUIRED, transport)
    assert message is not None
    before = _state(instance)
    refused = _add_trunk(instance, "lan", "--transport", transport, "--srtp", "required")
    assert (refused.status, refused.out, refused.err) == (1, "", f"telemancer: {message}\n")
    assert _state(instance) == before
    assert _add_trunk(instance, "lan", "--transport", transport).status == 0
    before = _state(instance)
    refused = cli(instance, "trunk", "srtp", "acme.example", "lan", "required")
    assert (refused.status, refused.err) == (1, f"telemancer: {message}\n")
    assert _state(instance) == before
    assert _table(cli(instance, "trunk", "list", "acme.example"))[0]["SRTP"] == "optional"


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (("trunk", "srtp", "acme.example", "carrier", "always"), 2, "invalid choice"),
        (("trunk", "srtp", "acme.example", "nope", "off"), 1, "no trunk 'nope'"),
        (("trunk", "srtp", "nowhere.example", "carrier", "off"), 1, "no tenant with domain"),
        (
            ("trunk", "add", "acme.example", "x", "--host", "h.example", "--srtp", "on"),
            2,
            "choice",
        ),
    ],
)
def test_bad_trunk_policy_input_is_refused(
    instance: Path,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    status: int,
    message: str,
) -> None:
    """Unknown policies are usage errors; unknown trunks and tenants exit 1."""
    assert _add_trunk(instance, "carrier").status == 0
    before = _state(instance)
    capsys.readouterr()
    result = cli(instance, *argv)
    assert (result.status, result.out) == (status, "")
    assert message in result.err + capsys.readouterr().err
    assert _state(instance) == before
