"""Trunks, DIDs, routes, number settings and trunk health: tenant-scoped, audited,
carrier passwords sealed and never in an audit record."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from appliance.pki import make_dev_certificates
from appliance.sip.dialplan import NumberSettings, RouteRule
from appliance.store.audit import Actor, records
from appliance.store.database import write_transaction
from appliance.store.migrations import migrate
from appliance.store.sealed import SealError, seal, unseal
from appliance.store.sip_dialplan import load_dids, load_number_settings, load_routes, load_trunks
from appliance.store.tenants import (
    ConflictError,
    Directory,
    InvalidInputError,
    NotFoundError,
    Tenant,
)
from appliance.store.trunk_health import health, record_health
from appliance.store.trunks import TrunkRepository, TrunkSettings, associated_data
from tests.conftest import OLD_TENANT_SQL, FakeClock, database_at

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PASSWORD = "carrier-Secret-4711"
OTHER_PASSWORD = "rotated-Secret-0815"
SETTINGS = TrunkSettings(host="sbc.carrier.example")
PIN = "0123456789abcdef" * 4


def _tenant(directory: Directory, actor: Actor, domain: str) -> Tenant:
    name = domain.split(".")[0].capitalize()
    return directory.add_tenant(actor, name, domain, max_extensions=5, max_concurrent_calls=2)


def _trunks(directory: Directory, tenant: Tenant, key: bytes = KEY) -> TrunkRepository:
    return directory.scope(tenant.id).trunks(key)


@pytest.fixture
def acme(directory: Directory, actor: Actor) -> TrunkRepository:
    """Tenant acme.example's repository, with extension 200."""
    tenant = _tenant(directory, actor, "acme.example")
    directory.scope(tenant.id).extensions().add(actor, "200", "phone-secret-4711")
    return _trunks(directory, tenant)


@pytest.fixture
def bravo(directory: Directory, actor: Actor) -> TrunkRepository:
    """Tenant bravo.example's repository, with extension 300."""
    tenant = _tenant(directory, actor, "bravo.example")
    directory.scope(tenant.id).extensions().add(actor, "300", "phone-secret-4711")
    return _trunks(directory, tenant)


def _database_bytes(db_path: Path) -> bytes:
    """The database file with its WAL and shared-memory files, as on disk."""
    parts = [db_path, db_path.with_name(db_path.name + "-wal")]
    parts.append(db_path.with_name(db_path.name + "-shm"))
    return b"".join(p.read_bytes() for p in parts if p.exists())


def _actions(directory: Directory) -> list[str]:
    return [r.action for r in records(directory.db)]


# -- trunks ------------------------------------------------------------------


def test_add_get_and_list_with_defaults(acme: TrunkRepository, clock: FakeClock) -> None:
    """A trunk added with only a host is TLS, passes caller ID, verifies its host
    name, uses the system roots and is enabled; list is by name."""
    added = acme.add(Actor("unix:operator", "console"), "zeta", SETTINGS)
    clock.advance(1)
    acme.add(Actor("unix:operator", "console"), "alpha", SETTINGS)
    assert [t.name for t in acme.list()] == ["alpha", "zeta"]
    assert acme.get("zeta") == added
    assert (added.transport, added.port, added.caller_id_mode, added.caller_id) == (
        "tls",
        None,
        "pass",
        None,
    )
    assert (added.tls_domain, added.verify_domain, added.ca_bundle) == (
        None,
        "sbc.carrier.example",
        None,
    )
    assert added.enabled and added.inbound_networks == () and added.username is None
    assert added.tenant_id == acme.tenant_id
    assert added.created_at == "2027-01-15T08:00:00.000000Z"
    assert acme.credentials(added) is None
    with pytest.raises(NotFoundError):
        acme.get("nope")


def test_every_setting_is_stored_and_normalised(acme: TrunkRepository, actor: Actor) -> None:
    """Host and TLS domain are lower-cased, fingerprints lose colons and case,
    bare addresses become /32 networks, a fixed caller ID sets the mode."""
    ca = make_dev_certificates(datetime.datetime.now(datetime.UTC)).ca_certificate.decode()
    colons = ":".join(PIN.upper()[i : i + 2] for i in range(0, 64, 2))
    trunk = acme.add(
        actor,
        "carrier-1",
        TrunkSettings(
            host="SBC.Carrier.Example.",
            port=5062,
            transport="tcp",
            caller_id="+442079460000",
            tls_domain="Edge.Carrier.Example",
            ca_bundle=ca,
            fingerprint=colons,
            inbound_networks=("192.0.2.0/24", "198.51.100.7", "2001:db8::/32", "192.0.2.0/24"),
            inbound_fingerprint=PIN.upper(),
            enabled=False,
        ),
    )
    assert (trunk.host, trunk.port, trunk.transport) == ("sbc.carrier.example", 5062, "tcp")
    assert (trunk.caller_id_mode, trunk.caller_id) == ("fixed", "+442079460000")
    assert trunk.verify_domain == "edge.carrier.example"
    assert trunk.ca_bundle == ca and trunk.fingerprint == PIN and trunk.inbound_fingerprint == PIN
    assert trunk.inbound_networks == ("192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32")
    assert not trunk.enabled
    assert trunk.settings().host == "sbc.carrier.example"
    ipv6 = acme.add(actor, "v6", TrunkSettings(host="[2001:DB8::1]"))
    assert ipv6.host == "2001:db8::1"


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("Carrier", SETTINGS, "invalid trunk name"),
        ("-carrier", SETTINGS, "invalid trunk name"),
        ("a" * 33, SETTINGS, "invalid trunk name"),
        ("c", TrunkSettings(host="bad_host.example"), "invalid host"),
        ("c", TrunkSettings(host="-x.example"), "invalid host"),
        ("c", TrunkSettings(host="192.0.2"), "invalid host"),
        ("c", TrunkSettings(host="fe80::1%eth0"), "invalid host"),
        ("c", TrunkSettings(host=""), "invalid host"),
        ("c", TrunkSettings(host="h.example", port=0), "invalid port"),
        ("c", TrunkSettings(host="h.example", port=65536), "invalid port"),
        ("c", TrunkSettings(host="h.example", transport="sctp"), "invalid transport"),
        ("c", TrunkSettings(host="h.example", caller_id="02079460000"), "invalid caller ID"),
        ("c", TrunkSettings(host="h.example", caller_id="+0123"), "invalid caller ID"),
        ("c", TrunkSettings(host="h.example", tls_domain="*.x.example"), "invalid TLS domain"),
        ("c", TrunkSettings(host="h.example", ca_bundle="not pem"), "invalid CA bundle"),
        ("c", TrunkSettings(host="h.example", fingerprint="ab" * 31), "invalid fingerprint"),
        ("c", TrunkSettings(host="h.example", fingerprint="zz" * 32), "invalid fingerprint"),
        (
            "c",
            TrunkSettings(host="h.example", inbound_fingerprint="12"),
            "invalid inbound fingerprint",
        ),
        ("c", TrunkSettings(host="h.example", inbound_networks=("x",)), "expected a CIDR"),
        (
            "c",
            TrunkSettings(host="h.example", inbound_networks=("192.0.2.1/24",)),
            r"host bits set \(did you mean 192\.0\.2\.0/24\?\)",
        ),
        ("c", TrunkSettings(host="h.example", inbound_networks=("0.0.0.0/0",)), "anywhere"),
        ("c", TrunkSettings(host="h.example", inbound_networks=("::/0",)), "anywhere"),
    ],
)
def test_invalid_trunks_are_refused_and_nothing_is_written(
    acme: TrunkRepository,
    actor: Actor,
    name: str,
    settings: TrunkSettings,
    message: str,
    directory: Directory,
) -> None:
    """Each broken rule is an InvalidInputError saying which; no row, no audit record."""
    audit_before = _actions(directory)
    with pytest.raises(InvalidInputError, match=message):
        acme.add(actor, name, settings)
    assert acme.list() == []
    assert _actions(directory) == audit_before


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        (("", PASSWORD), "invalid username"),
        (("acct 42", PASSWORD), "invalid username"),
        (('acct"42', PASSWORD), "invalid username"),
        (("acct42", ""), "1-256 characters"),
        (("acct42", "x" * 257), "1-256 characters"),
        (("acct42", "pass\nword"), "control characters"),
    ],
)
def test_invalid_credentials_are_refused(
    acme: TrunkRepository, actor: Actor, credentials: tuple[str, str], message: str
) -> None:
    """Usernames that would break a Digest header and unusable passwords are refused."""
    with pytest.raises(InvalidInputError, match=message):
        acme.add(actor, "carrier", SETTINGS, credentials)
    assert acme.list() == []


def test_duplicate_name_is_a_conflict(
    acme: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """A second trunk with the same name in one tenant is a ConflictError, unaudited."""
    acme.add(actor, "carrier", SETTINGS)
    with pytest.raises(ConflictError, match=r"trunk carrier exists in acme\.example"):
        acme.add(actor, "carrier", TrunkSettings(host="other.example"))
    assert _actions(directory).count("trunk.add") == 1


def test_credentials_round_trip_and_the_password_is_sealed_on_disk(
    acme: TrunkRepository, actor: Actor, db_path: Path
) -> None:
    """credentials() gives the password back; on disk (database, WAL, shm) there
    is only the sealed value, which unseals under this trunk's associated data."""
    trunk = acme.add(actor, "carrier", SETTINGS, ("acct42", PASSWORD))
    assert acme.credentials(trunk) == ("acct42", PASSWORD)
    assert trunk.password_sealed is not None and trunk.password_sealed.startswith("v1:")
    assert PASSWORD not in repr(trunk) and trunk.password_sealed not in repr(trunk)
    on_disk = _database_bytes(db_path)
    assert trunk.password_sealed.encode() in on_disk
    assert PASSWORD.encode() not in on_disk
    assert PASSWORD.encode("utf-16-le") not in on_disk
    associated = associated_data(acme.tenant_id, "carrier")
    assert unseal(KEY, trunk.password_sealed, associated) == PASSWORD


def test_audit_records_never_hold_the_password(
    acme: TrunkRepository, actor: Actor, db_path: Path, directory: Directory
) -> None:
    """add, set_credentials and remove are audited naming the trunk, with
    "password_changed" and never the password or its sealed form."""
    trunk = acme.add(actor, "carrier", SETTINGS, ("acct42", PASSWORD))
    changed = acme.set_credentials(actor, "carrier", ("acct43", OTHER_PASSWORD))
    acme.remove(actor, "carrier")
    log = [r for r in records(directory.db) if r.action.startswith("trunk.")]
    assert [(r.action, r.target, r.tenant_id) for r in log] == [
        ("trunk.add", "trunk:carrier@acme.example", acme.tenant_id),
        ("trunk.update", "trunk:carrier@acme.example", acme.tenant_id),
        ("trunk.remove", "trunk:carrier@acme.example", acme.tenant_id),
    ]
    added, updated = json.loads(log[0].details), json.loads(log[1].details)
    assert added["password_changed"] is True and added["username"] == "acct42"
    assert updated == {"changed": {"username": "acct43"}, "password_changed": True}
    secrets = [PASSWORD, OTHER_PASSWORD, trunk.password_sealed, changed.password_sealed]
    for record in records(directory.db):
        assert not any(str(secret) in record.to_json() for secret in secrets)
    assert OTHER_PASSWORD.encode() not in _database_bytes(db_path)


def test_a_sealed_password_does_not_open_in_another_row(
    acme: TrunkRepository, bravo: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """Copying a sealed password into another trunk's row (same tenant, or the same
    name in another tenant) makes credentials() fail rather than leak it."""
    a1 = acme.add(actor, "carrier", SETTINGS, ("acct-a", PASSWORD))
    acme.add(actor, "backup", SETTINGS, ("acct-b", OTHER_PASSWORD))
    bravo.add(actor, "carrier", SETTINGS, ("acct-c", OTHER_PASSWORD))
    db = directory.db
    with write_transaction(db):
        db.conn.execute(
            "UPDATE trunks SET password_sealed = ? WHERE name IN ('backup', 'carrier')"
            " AND id != ?",
            (a1.password_sealed, a1.id),
        )
    with pytest.raises(SealError):
        acme.credentials(acme.get("backup"))
    with pytest.raises(SealError):
        bravo.credentials(bravo.get("carrier"))
    assert acme.credentials(acme.get("carrier")) == ("acct-a", PASSWORD)
    with pytest.raises(SealError, match="trunk backup of tenant"):
        load_trunks(db, KEY)


def test_another_key_does_not_open_a_password(
    directory: Directory, acme: TrunkRepository, actor: Actor
) -> None:
    """Under another key (the JWT secret was replaced) credentials() raises SealError."""
    trunk = acme.add(actor, "carrier", SETTINGS, ("acct42", PASSWORD))
    rekeyed = _trunks(directory, directory.scope(acme.tenant_id).tenant(), OTHER_KEY)
    with pytest.raises(SealError, match="does not open"):
        rekeyed.credentials(trunk)
    with pytest.raises(NotFoundError):
        TrunkRepository(directory.scope(acme.tenant_id), KEY).credentials(
            dataclasses.replace(trunk, tenant_id=acme.tenant_id + 1)
        )


def test_update_changes_settings_and_audits_only_what_changed(
    acme: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """update replaces the settings, keeps the credentials, audits the new values of
    the changed fields only; an update that changes nothing writes nothing."""
    trunk = acme.add(actor, "carrier", SETTINGS, ("acct42", PASSWORD))
    new = dataclasses.replace(trunk.settings(), port=5080, caller_id="+442079460000")
    updated = acme.update(actor, "carrier", new)
    assert (updated.port, updated.caller_id_mode, updated.caller_id) == (
        5080,
        "fixed",
        "+442079460000",
    )
    assert acme.credentials(updated) == ("acct42", PASSWORD)
    last = list(records(directory.db))[-1]
    assert last.action == "trunk.update"
    assert json.loads(last.details) == {
        "changed": {"port": 5080, "caller_id_mode": "fixed", "caller_id": "+442079460000"},
        "password_changed": False,
    }
    count = len(_actions(directory))
    assert acme.update(actor, "carrier", new) == updated
    assert len(_actions(directory)) == count
    with pytest.raises(InvalidInputError):
        acme.update(actor, "carrier", dataclasses.replace(new, port=0))
    with pytest.raises(NotFoundError):
        acme.update(actor, "nope", new)


def test_set_credentials_replaces_and_removes(
    acme: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """New credentials reseal; None removes them; removing none is no write."""
    acme.add(actor, "carrier", SETTINGS)
    count = len(_actions(directory))
    acme.set_credentials(actor, "carrier", None)
    assert len(_actions(directory)) == count
    trunk = acme.set_credentials(actor, "carrier", ("acct42", PASSWORD))
    assert acme.credentials(trunk) == ("acct42", PASSWORD)
    cleared = acme.set_credentials(actor, "carrier", None)
    assert (cleared.username, cleared.password_sealed) == (None, None)
    assert acme.credentials(cleared) is None
    assert _actions(directory)[-2:] == ["trunk.update", "trunk.update"]


def test_remove_refused_while_routes_use_the_trunk(
    acme: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """A trunk that routes name cannot be removed (the message lists them); once
    they are gone it is removed along with its health history."""
    trunk = acme.add(actor, "carrier", SETTINGS)
    acme.add_route(actor, "+44", "carrier")
    acme.add_route(actor, "+1", "carrier", position=5)
    record_health(directory.db, trunk.id, 1.0, True, 200, 0.02)
    with pytest.raises(ConflictError, match=r"position 1, 5; remove them first"):
        acme.remove(actor, "carrier")
    acme.remove_route(actor, 1)
    acme.remove_route(actor, 5)
    acme.remove(actor, "carrier")
    assert acme.list() == []
    count = directory.db.conn.execute("SELECT COUNT(*) FROM trunk_health").fetchone()[0]
    assert count == 0
    with pytest.raises(NotFoundError):
        acme.remove(actor, "carrier")


# -- isolation -----------------------------------------------------------------


def test_scopes_are_isolated(
    acme: TrunkRepository, bravo: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """Tenant B neither sees nor changes A's trunks, DIDs, routes or health, and
    cannot route to A's trunk or ring A's extension; the same names are free in B."""
    a_trunk = acme.add(actor, "carrier", SETTINGS, ("acct", PASSWORD))
    acme.add_did(actor, "+442079460000", "200")
    acme.add_route(actor, "+44", "carrier")
    record_health(directory.db, a_trunk.id, 1.0, True, 200, 0.01)
    assert (bravo.list(), bravo.dids(), bravo.routes()) == ([], [], [])
    for attempt in (
        lambda: bravo.get("carrier"),
        lambda: bravo.remove(actor, "carrier"),
        lambda: bravo.update(actor, "carrier", SETTINGS),
        lambda: bravo.set_credentials(actor, "carrier", None),
        lambda: bravo.remove_did(actor, "+442079460000"),
        lambda: bravo.remove_route(actor, 1),
        lambda: bravo.add_route(actor, "+44", "carrier"),
        lambda: bravo.add_did(actor, "+442079460001", "200"),
        lambda: health(directory.scope(bravo.tenant_id), "carrier"),
        lambda: bravo.credentials(a_trunk),
    ):
        with pytest.raises(NotFoundError):
            attempt()
    b_trunk = bravo.add(actor, "carrier", SETTINGS)
    bravo.add_route(actor, "+44", "carrier")
    assert b_trunk.id != a_trunk.id
    assert [r.trunk_id for r in acme.routes()] == [a_trunk.id]
    assert acme.credentials(acme.get("carrier")) == ("acct", PASSWORD)


def test_the_database_refuses_cross_tenant_references(
    acme: TrunkRepository,
    bravo: TrunkRepository,
    actor: Actor,
    db_path: Path,
    directory: Directory,
) -> None:
    """Composite foreign keys stop a raw INSERT routing to another tenant's trunk or
    pointing a DID at another tenant's extension."""
    a_trunk = acme.add(actor, "carrier", SETTINGS)
    a_ext = directory.scope(acme.tenant_id).extensions().get("200")
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA foreign_keys=ON")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), conn:
            conn.execute(
                "INSERT INTO routes (tenant_id, position, prefix, trunk_id, created_at)"
                " VALUES (?, 1, '+', ?, 'now')",
                (bravo.tenant_id, a_trunk.id),
            )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), conn:
            conn.execute(
                "INSERT INTO dids (tenant_id, number, extension_id, created_at)"
                " VALUES (?, '+442079460000', ?, 'now')",
                (bravo.tenant_id, a_ext.id),
            )
    finally:
        conn.close()


# -- DIDs ----------------------------------------------------------------------


def test_dids_add_list_remove(acme: TrunkRepository, actor: Actor, directory: Directory) -> None:
    """A DID maps an E.164 number to an extension, is listed by number, removed and
    audited as did.add / did.remove with the extension."""
    directory.scope(acme.tenant_id).extensions().add(actor, "201", "phone-secret-4711")
    acme.add_did(actor, "+442079460002", "201")
    did = acme.add_did(actor, "+442079460001", "200")
    assert (did.number, did.extension, did.tenant_id) == ("+442079460001", "200", acme.tenant_id)
    assert [(d.number, d.extension) for d in acme.dids()] == [
        ("+442079460001", "200"),
        ("+442079460002", "201"),
    ]
    acme.remove_did(actor, "+442079460002")
    assert [d.number for d in acme.dids()] == ["+442079460001"]
    log = [r for r in records(directory.db) if r.action.startswith("did.")]
    assert [(r.action, r.target, json.loads(r.details)) for r in log] == [
        ("did.add", "did:+442079460002@acme.example", {"extension": "201"}),
        ("did.add", "did:+442079460001@acme.example", {"extension": "200"}),
        ("did.remove", "did:+442079460002@acme.example", {"extension": "201"}),
    ]
    with pytest.raises(NotFoundError):
        acme.remove_did(actor, "+442079460002")


def test_a_did_belongs_to_one_tenant(
    acme: TrunkRepository, bravo: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """The same number cannot be added twice, in the same or another tenant; the
    refusal does not say which tenant holds it."""
    acme.add_did(actor, "+442079460000", "200")
    with pytest.raises(ConflictError, match=r"^DID \+442079460000 is already assigned$"):
        bravo.add_did(actor, "+442079460000", "300")
    with pytest.raises(ConflictError):
        acme.add_did(actor, "+442079460000", "200")
    assert bravo.dids() == []
    assert _actions(directory).count("did.add") == 1


@pytest.mark.parametrize("number", ["02079460000", "+0442079460000", "+44 20", "+4", ""])
def test_dids_must_be_e164(acme: TrunkRepository, actor: Actor, number: str) -> None:
    """Numbers that are not E.164 are refused; so is an unknown extension."""
    with pytest.raises(InvalidInputError, match=r"expected E\.164"):
        acme.add_did(actor, number, "200")
    with pytest.raises(NotFoundError, match="no extension"):
        acme.add_did(actor, "+442079460000", "999")


# -- routes --------------------------------------------------------------------


def test_routes_are_listed_in_position_order(
    acme: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """Rules come back by position whatever the order they were added in; without
    a position a rule goes after the last; rule() is what the dial plan takes."""
    acme.add(actor, "uk", SETTINGS)
    acme.add(actor, "world", SETTINGS)
    acme.add_route(actor, "+", "world", position=10)
    acme.add_route(actor, "44", "uk", position=2, strip=3, prepend="0")
    last = acme.add_route(actor, "+1", "world")
    assert last.position == 11
    assert [(r.position, r.prefix, r.trunk) for r in acme.routes()] == [
        (2, "44", "uk"),
        (10, "+", "world"),
        (11, "+1", "world"),
    ]
    assert acme.routes()[0].rule() == RouteRule(2, "44", "uk", 3, "0")
    log = [r for r in records(directory.db) if r.action == "route.add"]
    assert [r.target for r in log] == [
        "route:10@acme.example",
        "route:2@acme.example",
        "route:11@acme.example",
    ]
    assert json.loads(log[1].details) == {
        "prefix": "44",
        "trunk": "uk",
        "strip": 3,
        "prepend": "0",
    }


def test_route_positions_are_unique_and_never_shifted(
    acme: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """A taken position is a conflict; removing a rule leaves the others in place."""
    acme.add(actor, "uk", SETTINGS)
    acme.add_route(actor, "+44", "uk")
    acme.add_route(actor, "+1", "uk")
    with pytest.raises(ConflictError, match=r"position 1 is taken in acme\.example"):
        acme.add_route(actor, "+33", "uk", position=1)
    acme.remove_route(actor, 1)
    assert [(r.position, r.prefix) for r in acme.routes()] == [(2, "+1")]
    assert _actions(directory)[-1] == "route.remove"
    with pytest.raises(NotFoundError):
        acme.remove_route(actor, 1)


@pytest.mark.parametrize(
    ("prefix", "options", "message"),
    [
        ("", {}, "invalid prefix"),
        ("44x", {}, "invalid prefix"),
        ("++44", {}, "invalid prefix"),
        ("+44", {"position": 0}, "position must be 1 or more"),
        ("+44", {"strip": -1}, "strip must be 0-16"),
        ("+44", {"strip": 17}, "strip must be 0-16"),
        ("+44", {"prepend": "0a"}, "invalid prepend"),
        ("+44", {"prepend": "0+"}, "invalid prepend"),
    ],
)
def test_invalid_routes_are_refused(
    acme: TrunkRepository, actor: Actor, prefix: str, options: dict[str, Any], message: str
) -> None:
    """Prefixes are digits with an optional leading '+'; position, strip and prepend
    are checked; an unknown trunk is NotFoundError."""
    acme.add(actor, "uk", SETTINGS)
    with pytest.raises(InvalidInputError, match=message):
        acme.add_route(actor, prefix, "uk", **options)
    with pytest.raises(NotFoundError):
        acme.add_route(actor, "+44", "nope")
    assert acme.routes() == []


# -- number settings -----------------------------------------------------------


def test_number_settings_default_set_and_audited(
    acme: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """New tenants have no country code, "0" and "00"; set changes only what is
    given, is visible on the Tenant too, and is audited as dialplan.set."""
    assert acme.number_settings() == NumberSettings("", "0", "00")
    assert acme.set_number_settings(actor, country_code="44") == NumberSettings("44", "0", "00")
    nanp = acme.set_number_settings(
        actor, country_code="1", national_prefix="1", international_prefix="011"
    )
    assert nanp == NumberSettings("1", "1", "011") == acme.number_settings()
    tenant = directory.scope(acme.tenant_id).tenant()
    assert (tenant.country_code, tenant.national_prefix, tenant.international_prefix) == (
        "1",
        "1",
        "011",
    )
    last = list(records(directory.db))[-1]
    assert (last.action, last.target) == ("dialplan.set", "dialplan:acme.example")
    assert json.loads(last.details) == {
        "country_code": "1",
        "national_prefix": "1",
        "international_prefix": "011",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"country_code": "044"}, "invalid country code"),
        ({"country_code": "1234"}, "invalid country code"),
        ({"country_code": "+44"}, "invalid country code"),
        ({"national_prefix": "0a"}, "invalid national prefix"),
        ({"international_prefix": "00000"}, "invalid international prefix"),
        ({"national_prefix": "00"}, "must differ"),
    ],
)
def test_invalid_number_settings_are_refused(
    acme: TrunkRepository,
    actor: Actor,
    options: dict[str, str],
    message: str,
    directory: Directory,
) -> None:
    """Country codes are 1-3 digits not led by 0; prefixes 0-4 digits and distinct."""
    with pytest.raises(InvalidInputError, match=message):
        acme.set_number_settings(actor, **options)
    assert acme.number_settings() == NumberSettings()
    assert "dialplan.set" not in _actions(directory)


def test_migration_4_gives_existing_tenants_the_default_settings(tmp_path: Path) -> None:
    """A database at version 3 with a tenant migrates to 4 with the defaults."""
    db = database_at(tmp_path / "old.sqlite3", 3)
    try:
        with write_transaction(db):
            db.conn.execute(OLD_TENANT_SQL)
        assert migrate(db)[0] == 4
        assert load_number_settings(db) == {1: NumberSettings("", "0", "00")}
    finally:
        db.close()


# -- system-level loads and health ----------------------------------------------


def test_loads_for_the_sip_service(
    acme: TrunkRepository, bravo: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """load_trunks gives every enabled trunk with its password in clear and TLS
    domain resolved; load_dids, load_routes and load_number_settings cover all tenants."""
    acme.add(
        actor,
        "carrier",
        TrunkSettings(host="sbc.carrier.example", inbound_networks=("192.0.2.0/24",)),
        ("acct", PASSWORD),
    )
    acme.add(actor, "off", dataclasses.replace(SETTINGS, enabled=False))
    bravo.add(actor, "carrier", TrunkSettings(host="10.0.0.1", tls_domain="sbc.bravo.example"))
    acme.add_did(actor, "+442079460000", "200")
    bravo.add_did(actor, "+12125550123", "300")
    acme.add_route(actor, "+", "carrier", position=2)
    acme.add_route(actor, "+44", "off", position=1, strip=3, prepend="0")
    bravo.set_number_settings(actor, country_code="1", national_prefix="1")

    trunks = load_trunks(directory.db, KEY)
    assert [(t.tenant_id, t.name) for t in trunks] == [
        (acme.tenant_id, "carrier"),
        (bravo.tenant_id, "carrier"),
    ]
    a, b = trunks
    assert a.credentials == ("acct", PASSWORD) and b.credentials is None
    assert PASSWORD not in repr(a)
    assert (a.tls_domain, b.tls_domain) == ("sbc.carrier.example", "sbc.bravo.example")
    assert a.inbound_networks == (ipaddress.ip_network("192.0.2.0/24"),)
    assert a.admits("192.0.2.9") and not b.admits("192.0.2.9")

    dids = load_dids(directory.db)
    assert dids["+442079460000"].tenant_id == acme.tenant_id
    assert dids["+442079460000"].extension == "200"
    assert dids["+12125550123"].tenant_id == bravo.tenant_id
    assert load_routes(directory.db) == {
        acme.tenant_id: (RouteRule(1, "+44", "off", 3, "0"), RouteRule(2, "+", "carrier"))
    }
    assert load_number_settings(directory.db) == {
        acme.tenant_id: NumberSettings("", "0", "00"),
        bravo.tenant_id: NumberSettings("1", "1", "00"),
    }


def test_health_history(
    acme: TrunkRepository, bravo: TrunkRepository, actor: Actor, directory: Directory
) -> None:
    """record_health stores pings under the trunk's tenant, unaudited; health gives
    the latest first, up to ``limit``, and only for the scope's own trunk."""
    trunk = acme.add(actor, "carrier", SETTINGS)
    db = directory.db
    audit_before = _actions(directory)
    record_health(db, trunk.id, 100.0, True, 200, 0.021)
    record_health(db, trunk.id, 130.0, False, None, None)
    record_health(db, trunk.id, 160.0, False, 503, 0.5)
    assert _actions(directory) == audit_before
    latest = health(directory.scope(acme.tenant_id), "carrier", limit=2)
    assert [(s.at, s.up, s.status, s.rtt) for s in latest] == [
        (160.0, False, 503, 0.5),
        (130.0, False, None, None),
    ]
    assert len(health(directory.scope(acme.tenant_id), "carrier")) == 3
    (tenant_id,) = db.conn.execute("SELECT DISTINCT tenant_id FROM trunk_health").fetchone()
    assert tenant_id == acme.tenant_id
    bravo.add(actor, "quiet", SETTINGS)
    assert health(directory.scope(bravo.tenant_id), "quiet") == []
    with pytest.raises(NotFoundError):
        health(directory.scope(bravo.tenant_id), "carrier")
    with pytest.raises(NotFoundError):
        record_health(db, 9999, 1.0, True, 200, 0.1)
    with pytest.raises(InvalidInputError):
        record_health(db, trunk.id, 1.0, True, 99, 0.1)
    with pytest.raises(InvalidInputError):
        record_health(db, trunk.id, 1.0, True, 200, -0.1)
    with pytest.raises(InvalidInputError):
        health(directory.scope(acme.tenant_id), "carrier", limit=0)


# -- sealing -------------------------------------------------------------------


def test_seal_round_trip_and_refusals() -> None:
    """A sealed value opens with its key and associated data only; each seal is
    fresh; damaged, foreign and wrongly keyed values raise SealError."""
    first = seal(KEY, "pässword", b"row-1")
    assert first != seal(KEY, "pässword", b"row-1")
    assert unseal(KEY, first, b"row-1") == "pässword"
    with pytest.raises(SealError):
        unseal(KEY, first, b"row-2")
    with pytest.raises(SealError):
        unseal(OTHER_KEY, first, b"row-1")
    flipped = first[:-2] + ("A" if first[-2] != "A" else "B") + first[-1]
    for broken in (flipped, "v1:", "v1:!!!", "v2:" + first[3:], first[3:], "v1:" + "A" * 20):
        with pytest.raises(SealError):
            unseal(KEY, broken, b"row-1")
    with pytest.raises(ValueError, match="32 bytes"):
        seal(b"short", "x", b"")
    with pytest.raises(ValueError, match="32 bytes"):
        unseal(b"short", first, b"row-1")
