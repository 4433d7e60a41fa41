"""The SRTP policy of tenants and trunks (migration 5): stored, checked, audited,
and handed to the SIP core in its directory."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from appliance.media.policy import SrtpPolicy, check_config
from appliance.store.audit import Actor, AuditRecord, records
from appliance.store.database import write_transaction
from appliance.store.migrations import MIGRATIONS, migrate, schema_version
from appliance.store.sip_dialplan import load_trunks
from appliance.store.sipstate import load_directory
from appliance.store.tenants import Directory, InvalidInputError, NotFoundError, Tenant
from appliance.store.trunks import TrunkRepository, TrunkSettings
from tests.conftest import OLD_TENANT_SQL, database_at

KEY = bytes(range(32))
SETTINGS = TrunkSettings(host="sbc.carrier.example")


def _tenant(directory: Directory, actor: Actor, domain: str = "acme.example") -> Tenant:
    return directory.add_tenant(
        actor, domain.split(".")[0], domain, max_extensions=5, max_concurrent_calls=2
    )


def _trunks(directory: Directory, tenant: Tenant) -> TrunkRepository:
    return directory.scope(tenant.id).trunks(KEY)


def _last(directory: Directory) -> AuditRecord:
    return list(records(directory.db))[-1]


def _count(directory: Directory) -> int:
    return len(list(records(directory.db)))


# -- migration 5 ----------------------------------------------------------------


def test_migration_5_keeps_rows_and_defaults_them_to_optional(tmp_path: Path) -> None:
    """A version 4 database with a tenant and a UDP trunk migrates to 5 with both
    rows intact and both policies "optional" (sound on any transport), and the
    SIP directory then carries them."""
    db = database_at(tmp_path / "old.sqlite3", 4)
    try:
        with write_transaction(db):
            db.conn.execute(OLD_TENANT_SQL)
            db.conn.execute(
                "INSERT INTO trunks (tenant_id, name, host, transport, created_at)"
                " VALUES (1, 'lan', '10.0.0.1', 'udp', 'then')"
            )
        assert migrate(db)[0] == 5
        assert schema_version(db) == len(MIGRATIONS)
        tenant = db.conn.execute(
            "SELECT name, domain, max_extensions, srtp FROM tenants"
        ).fetchall()
        assert tenant == [("Old", "old.example", 3, "optional")]
        trunk = db.conn.execute("SELECT name, host, transport, srtp FROM trunks").fetchall()
        assert trunk == [("lan", "10.0.0.1", "udp", "optional")]
        sip = load_directory(db, KEY)
        entry = sip.tenant("old.example")
        assert entry is not None and entry.srtp is SrtpPolicy.OPTIONAL
        assert [t.srtp for t in sip.trunks()] == [SrtpPolicy.OPTIONAL]
    finally:
        db.close()


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("UPDATE tenants SET srtp = ?", ("mandatory",)),
        ("UPDATE tenants SET srtp = ?", ("REQUIRED",)),
        ("UPDATE trunks SET srtp = ?", ("",)),
        ("UPDATE trunks SET srtp = 'required', transport = ?", ("udp",)),
        ("UPDATE trunks SET srtp = 'required', transport = ?", ("tcp",)),
    ],
)
def test_the_database_refuses_bad_policies(
    directory: Directory, actor: Actor, sql: str, params: tuple[str]
) -> None:
    """CHECK constraints refuse anything but required/optional/off (case matters),
    and "required" on a trunk not signalled over TLS, whatever path writes it."""
    _trunks(directory, _tenant(directory, actor)).add(actor, "carrier", SETTINGS)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"), write_transaction(directory.db):
        directory.db.conn.execute(sql, params)
    assert directory.db.conn.execute("SELECT srtp FROM tenants").fetchall() == [("optional",)]


# -- tenants ----------------------------------------------------------------------


def test_tenant_policy_defaults_to_optional_and_is_audited_on_add(
    directory: Directory, actor: Actor
) -> None:
    """A tenant added without a policy is "optional"; one added with a policy keeps
    it, and the tenant.add record says which."""
    assert _tenant(directory, actor).srtp is SrtpPolicy.OPTIONAL
    assert json.loads(_last(directory).details)["srtp"] == "optional"
    strict = directory.add_tenant(
        actor, "Bravo", "bravo.example", max_extensions=1, max_concurrent_calls=1, srtp="required"
    )
    assert strict.srtp is SrtpPolicy.REQUIRED
    assert directory.tenant_by_domain("bravo.example").srtp is SrtpPolicy.REQUIRED
    assert json.loads(_last(directory).details)["srtp"] == "required"


def test_set_tenant_srtp_writes_an_audit_record(directory: Directory, actor: Actor) -> None:
    """Changing a tenant's policy stores it and is audited as tenant.update with the
    new value; setting the same value again writes nothing."""
    tenant = _tenant(directory, actor)
    changed = directory.set_tenant_srtp(actor, tenant.id, "required")
    assert changed.srtp is SrtpPolicy.REQUIRED
    assert directory.tenant(tenant.id).srtp is SrtpPolicy.REQUIRED
    last = _last(directory)
    assert (last.action, last.target, last.tenant_id) == (
        "tenant.update",
        "tenant:acme.example",
        tenant.id,
    )
    assert json.loads(last.details) == {"changed": {"srtp": "required"}}
    count = _count(directory)
    assert directory.set_tenant_srtp(actor, tenant.id, "required") == changed
    assert _count(directory) == count
    assert directory.set_tenant_srtp(actor, tenant.id, SrtpPolicy.OFF).srtp is SrtpPolicy.OFF
    assert json.loads(_last(directory).details) == {"changed": {"srtp": "off"}}


@pytest.mark.parametrize("bad", ["mandatory", "Required", "", "srtp"])
def test_bad_tenant_policy_is_refused_without_a_change(
    directory: Directory, actor: Actor, bad: str
) -> None:
    """An unknown policy is an InvalidInputError naming the choices, on add and on
    change, and neither the row nor the audit chain moves."""
    tenant = _tenant(directory, actor)
    count = _count(directory)
    with pytest.raises(InvalidInputError, match="expected one of required, optional, off"):
        directory.set_tenant_srtp(actor, tenant.id, bad)
    with pytest.raises(InvalidInputError, match="invalid srtp policy"):
        directory.add_tenant(
            actor, "Bravo", "bravo.example", max_extensions=1, max_concurrent_calls=1, srtp=bad
        )
    assert directory.tenant(tenant.id).srtp is SrtpPolicy.OPTIONAL
    assert [t.domain for t in directory.tenants()] == ["acme.example"]
    assert _count(directory) == count
    with pytest.raises(NotFoundError):
        directory.set_tenant_srtp(actor, 999, "off")


# -- trunks -----------------------------------------------------------------------


def test_trunk_policy_is_stored_and_changed_with_an_audit_record(
    directory: Directory, actor: Actor
) -> None:
    """A TLS trunk may require SRTP; set_srtp changes the policy and is audited as
    trunk.update with the new value only; the same value again writes nothing."""
    trunks = _trunks(directory, _tenant(directory, actor))
    assert trunks.add(actor, "carrier", SETTINGS).srtp is SrtpPolicy.OPTIONAL
    assert json.loads(_last(directory).details)["srtp"] == "optional"
    changed = trunks.set_srtp(actor, "carrier", "required")
    assert changed.srtp is SrtpPolicy.REQUIRED and trunks.get("carrier") == changed
    last = _last(directory)
    assert (last.action, last.target) == ("trunk.update", "trunk:carrier@acme.example")
    assert json.loads(last.details) == {"changed": {"srtp": "required"}, "password_changed": False}
    count = _count(directory)
    assert trunks.set_srtp(actor, "carrier", "required") == changed
    assert _count(directory) == count
    strict = trunks.add(actor, "strict", dataclasses.replace(SETTINGS, srtp="required"))
    assert strict.srtp is SrtpPolicy.REQUIRED and strict.settings().srtp == "required"
    with pytest.raises(NotFoundError):
        trunks.set_srtp(actor, "nope", "off")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_required_is_refused_on_a_clear_trunk(
    directory: Directory, actor: Actor, transport: str
) -> None:
    """A UDP or TCP trunk cannot require SRTP (SDES keys would travel in clear):
    add, set_srtp and a transport change are each refused with check_config's
    message, and nothing is written."""
    trunks = _trunks(directory, _tenant(directory, actor))
    message = check_config(SrtpPolicy.REQUIRED, transport)
    assert message is not None and "needs TLS signalling" in message
    clear = dataclasses.replace(SETTINGS, transport=transport)
    count = _count(directory)
    with pytest.raises(InvalidInputError) as caught:
        trunks.add(actor, "lan", dataclasses.replace(clear, srtp="required"))
    assert str(caught.value) == message
    assert trunks.list() == [] and _count(directory) == count

    trunks.add(actor, "lan", clear)
    trunks.add(actor, "tls", dataclasses.replace(SETTINGS, srtp="required"))
    count = _count(directory)
    with pytest.raises(InvalidInputError) as caught:
        trunks.set_srtp(actor, "lan", "required")
    assert str(caught.value) == message
    with pytest.raises(InvalidInputError):
        trunks.update(
            actor, "tls", dataclasses.replace(trunks.get("tls").settings(), transport=transport)
        )
    assert trunks.get("lan").srtp is SrtpPolicy.OPTIONAL
    assert trunks.get("tls").transport == "tls"
    assert _count(directory) == count
    assert trunks.set_srtp(actor, "lan", "off").srtp is SrtpPolicy.OFF


def test_bad_trunk_policy_is_refused(directory: Directory, actor: Actor) -> None:
    """An unknown trunk policy names the choices and changes nothing."""
    trunks = _trunks(directory, _tenant(directory, actor))
    trunks.add(actor, "carrier", SETTINGS)
    count = _count(directory)
    with pytest.raises(InvalidInputError, match="expected one of required, optional, off"):
        trunks.set_srtp(actor, "carrier", "always")
    assert trunks.get("carrier").srtp is SrtpPolicy.OPTIONAL and _count(directory) == count


# -- the SIP core's view ----------------------------------------------------------


def test_the_sip_directory_carries_both_policies(directory: Directory, actor: Actor) -> None:
    """load_directory gives TenantEntry.srtp and TrunkEntry.srtp as SrtpPolicy values."""
    acme = _tenant(directory, actor)
    bravo = _tenant(directory, actor, "bravo.example")
    directory.set_tenant_srtp(actor, acme.id, "required")
    _trunks(directory, acme).add(actor, "carrier", dataclasses.replace(SETTINGS, srtp="required"))
    lan = dataclasses.replace(SETTINGS, host="10.0.0.1", transport="udp", srtp="off")
    _trunks(directory, bravo).add(actor, "lan", lan)
    sip = load_directory(directory.db, KEY)
    tenants = {domain: sip.tenant(domain) for domain in sip.domains()}
    assert {d: t.srtp if t else None for d, t in tenants.items()} == {
        "acme.example": SrtpPolicy.REQUIRED,
        "bravo.example": SrtpPolicy.OPTIONAL,
    }
    trunk_a, trunk_b = sip.trunk(acme.id, "carrier"), sip.trunk(bravo.id, "lan")
    assert trunk_a is not None and trunk_a.srtp is SrtpPolicy.REQUIRED
    assert trunk_b is not None and trunk_b.srtp is SrtpPolicy.OFF
    assert [t.srtp for t in load_trunks(directory.db, KEY)] == [
        SrtpPolicy.REQUIRED,
        SrtpPolicy.OFF,
    ]
