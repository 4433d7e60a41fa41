"""What the SIP service keeps in the store: directory, registrations, IP blocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.sip import digest
from appliance.sip.registrar import Binding, Flow
from appliance.store.audit import Actor, records
from appliance.store.database import open_database
from appliance.store.extensions import Extension
from appliance.store.sipstate import (
    RegistrationRow,
    StoredBlock,
    data_version,
    delete_block,
    list_registrations,
    load_bindings,
    load_blocks,
    load_directory,
    save_bindings,
    save_block,
)
from appliance.store.tenants import Directory
from tests.conftest import FakeClock

PASSWORD = "phone-secret-4711"


@pytest.fixture
def phones(directory: Directory, actor: Actor) -> tuple[Extension, Extension, Extension]:
    """Extensions 200 and 201 of acme.example and 200 of bravo.example."""
    acme = directory.add_tenant(
        actor, "Acme", "acme.example", max_extensions=5, max_concurrent_calls=2
    )
    bravo = directory.add_tenant(
        actor, "Bravo", "bravo.example", max_extensions=5, max_concurrent_calls=3
    )
    acme_ext = directory.scope(acme.id).extensions()
    bravo_ext = directory.scope(bravo.id).extensions()
    return (
        acme_ext.add(actor, "200", PASSWORD),
        acme_ext.add(actor, "201", PASSWORD),
        bravo_ext.add(actor, "200", PASSWORD),
    )


def _binding(ext: Extension, contact: str, expires_at: float, flow: Flow) -> Binding:
    return Binding(ext.tenant_id, ext.id, contact, expires_at, "call-1", 7, flow, "TestPhone/1.0")


TLS_V6 = Flow("tls", ("2001:db8::1", 50123), "conn-17")
UDP_V4 = Flow("udp", ("192.0.2.10", 5060))


def test_bindings_round_trip_and_expired_ones_stay_behind(
    directory: Directory, phones: tuple[Extension, Extension, Extension], clock: FakeClock
) -> None:
    """Saved bindings load back equal (flow included); expired and removed ones do not."""
    a200, a201, b200 = phones
    now = clock()
    live = [
        _binding(a200, "sip:200@192.0.2.10:5060", now + 593.25, UDP_V4),
        _binding(a200, "sip:200@[2001:db8::1]:50123;transport=tls", now + 60, TLS_V6),
        _binding(b200, "sip:200@192.0.2.99", now + 3600, UDP_V4),
    ]
    expired = _binding(a201, "sip:201@192.0.2.11", now, UDP_V4)
    save_bindings(directory.db, [*live, expired], [])
    assert sorted(load_bindings(directory.db, now), key=repr) == sorted(live, key=repr)
    save_bindings(directory.db, [], [live[2]])
    assert set(load_bindings(directory.db, now)) == set(live[:2])
    assert load_bindings(directory.db, now + 3600) == []


def test_saving_a_binding_again_replaces_it(
    directory: Directory, phones: tuple[Extension, Extension, Extension], clock: FakeClock
) -> None:
    """A refresh of the same contact replaces the row (new expiry, CSeq and flow)."""
    a200 = phones[0]
    contact = "sip:200@192.0.2.10:5060"
    save_bindings(directory.db, [_binding(a200, contact, clock() + 60, UDP_V4)], [])
    refreshed = Binding(a200.tenant_id, a200.id, contact, clock() + 120, "call-1", 8, TLS_V6)
    save_bindings(directory.db, [refreshed], [])
    assert load_bindings(directory.db, clock()) == [refreshed]


def test_registrations_are_not_audited(
    directory: Directory, phones: tuple[Extension, Extension, Extension], clock: FakeClock
) -> None:
    """Phone refreshes are not people's changes: saving bindings writes no audit record."""
    before = list(records(directory.db))
    save_bindings(directory.db, [_binding(phones[0], "sip:a@b.example", clock() + 60, UDP_V4)], [])
    assert list(records(directory.db)) == before


def test_list_registrations_by_domain(
    directory: Directory, phones: tuple[Extension, Extension, Extension], clock: FakeClock
) -> None:
    """The list joins domain and number, describes the flow, and filters by domain."""
    a200, a201, b200 = phones
    now = clock()
    save_bindings(
        directory.db,
        [
            _binding(a201, "sip:201@[2001:db8::1]", now + 60, TLS_V6),
            _binding(a200, "sip:200@192.0.2.10", now + 600, UDP_V4),
            _binding(b200, "sip:200@192.0.2.99", now + 30, UDP_V4),
            _binding(a200, "sip:200@192.0.2.12", now - 1, UDP_V4),
        ],
        [],
    )
    acme = [
        RegistrationRow(
            "acme.example",
            "200",
            "sip:200@192.0.2.10",
            now + 600,
            "udp:192.0.2.10:5060",
            "TestPhone/1.0",
        ),
        RegistrationRow(
            "acme.example",
            "201",
            "sip:201@[2001:db8::1]",
            now + 60,
            "tls:[2001:db8::1]:50123",
            "TestPhone/1.0",
        ),
    ]
    assert list_registrations(directory.db, now, "acme.example") == acme
    assert list_registrations(directory.db, now, "ACME.example") == acme
    everyone = list_registrations(directory.db, now)
    assert [(r.domain, r.number) for r in everyone] == [
        ("acme.example", "200"),
        ("acme.example", "201"),
        ("bravo.example", "200"),
    ]
    assert list_registrations(directory.db, now, "nowhere.example") == []
    assert [r.domain for r in list_registrations(directory.db, now + 60)] == ["acme.example"]


def test_load_directory_holds_every_tenant_and_extension(
    directory: Directory, phones: tuple[Extension, Extension, Extension]
) -> None:
    """The SIP directory has each tenant's quotas and each extension's HA1 by algorithm."""
    a200, _, b200 = phones
    sip = load_directory(directory.db, b"k" * 32)
    assert sip.domains() == ["acme.example", "bravo.example"]
    bravo = sip.tenant("BRAVO.example")
    assert bravo is not None
    assert (bravo.id, bravo.max_extensions, bravo.max_concurrent_calls) == (b200.tenant_id, 5, 3)
    assert bravo.active
    entry = sip.extension(b200.tenant_id, "200")
    assert entry is not None and entry.id == b200.id
    assert entry.ha1 == {
        digest.SHA256: digest.ha1(digest.SHA256, "200", "bravo.example", PASSWORD),
        digest.MD5: digest.ha1(digest.MD5, "200", "bravo.example", PASSWORD),
    }
    assert sip.extension(a200.tenant_id, "201") is not None
    assert sip.extension(b200.tenant_id, "201") is None
    assert sip.tenant("nowhere.example") is None


def test_blocks_save_load_and_delete_with_audit(
    directory: Directory, actor: Actor, clock: FakeClock
) -> None:
    """Blocks in force load by age, expired ones do not; block and lift are audited."""
    now = clock()
    first = StoredBlock("192.0.2.66", "digest brute force", now - 10, now + 3600)
    second = StoredBlock("2001:db8::66", "scanner", now - 5, now + 60)
    old = StoredBlock("198.51.100.1", "scanner", now - 7200, now - 3600)
    for block in (second, old, first):
        save_block(directory.db, directory.audit, actor, block, now)
    assert load_blocks(directory.db, now) == [first, second]
    assert load_blocks(directory.db, now + 60) == [first]
    assert delete_block(directory.db, directory.audit, actor, "192.0.2.66", "lifted", now)
    assert load_blocks(directory.db, now) == [second]
    assert not delete_block(directory.db, directory.audit, actor, "192.0.2.66", "again", now)
    log = [(r.action, r.target, json.loads(r.details)) for r in records(directory.db)]
    assert log == [
        ("sip.block", "ip:2001:db8::66", {"reason": "scanner", "until": now + 60}),
        ("sip.block", "ip:198.51.100.1", {"reason": "scanner", "until": now - 3600}),
        ("sip.block", "ip:192.0.2.66", {"reason": "digest brute force", "until": now + 3600}),
        ("sip.unblock", "ip:192.0.2.66", {"reason": "lifted"}),
    ]
    assert all(r.actor == actor.name and r.tenant_id is None for r in records(directory.db))


def test_blocking_an_ip_again_replaces_its_block(
    directory: Directory, actor: Actor, clock: FakeClock
) -> None:
    """A second block of the same IP replaces the first (one row, the later terms)."""
    now = clock()
    save_block(
        directory.db, directory.audit, actor, StoredBlock("192.0.2.66", "a", now, now + 60), now
    )
    longer = StoredBlock("192.0.2.66", "b", now + 1, now + 600)
    save_block(directory.db, directory.audit, actor, longer, now + 1)
    assert load_blocks(directory.db, now) == [longer]


def test_data_version_moves_when_another_connection_commits(
    directory: Directory, actor: Actor, clock: FakeClock, db_path: Path
) -> None:
    """data_version changes after another connection's commit, not after this one's own."""
    before = data_version(directory.db)
    directory.add_tenant(actor, "Acme", "acme.example", max_extensions=1, max_concurrent_calls=1)
    assert data_version(directory.db) == before
    other = open_database(db_path)
    try:
        save_block(
            other, directory.audit, actor, StoredBlock("192.0.2.1", "x", clock(), clock() + 9), 0
        )
    finally:
        other.close()
    after = data_version(directory.db)
    assert after != before
    assert data_version(directory.db) == after
    assert [b.ip for b in load_blocks(directory.db, clock())] == ["192.0.2.1"]
