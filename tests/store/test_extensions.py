"""SIP extensions: HA1 only, tenant-scoped, quota enforced by the database."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from appliance.sip import digest
from appliance.store.audit import Actor, records
from appliance.store.extensions import ExtensionRepository, QuotaExceededError
from appliance.store.tenants import (
    ConflictError,
    Directory,
    InvalidInputError,
    NotFoundError,
    Tenant,
)
from tests.conftest import FakeClock

PASSWORD = "phone-secret-4711"
OTHER_PASSWORD = "another-secret-0815"


def _tenant(directory: Directory, actor: Actor, domain: str, max_extensions: int = 5) -> Tenant:
    name = domain.split(".")[0].capitalize()
    return directory.add_tenant(
        actor, name, domain, max_extensions=max_extensions, max_concurrent_calls=2
    )


def _extensions(directory: Directory, tenant: Tenant) -> ExtensionRepository:
    return directory.scope(tenant.id).extensions()


def _database_bytes(db_path: Path) -> bytes:
    """The database file with its WAL and shared-memory files, as on disk."""
    parts = [db_path, db_path.with_name(db_path.name + "-wal")]
    parts.append(db_path.with_name(db_path.name + "-shm"))
    return b"".join(p.read_bytes() for p in parts if p.exists())


def test_add_list_and_get_through_the_scope(
    directory: Directory, actor: Actor, clock: FakeClock
) -> None:
    """An added extension is listed by number and found by get, with its tenant and time."""
    tenant = _tenant(directory, actor, "acme.example")
    repo = _extensions(directory, tenant)
    added = repo.add(actor, "201", PASSWORD)
    clock.advance(1)
    repo.add(actor, "200", PASSWORD)
    assert [e.number for e in repo.list()] == ["200", "201"]
    got = repo.get("201")
    assert got == added
    assert got.tenant_id == tenant.id
    assert got.created_at == "2027-01-15T08:00:00.000000Z"
    with pytest.raises(NotFoundError):
        repo.get("999")


@pytest.mark.parametrize("algorithm", [digest.SHA256, digest.MD5])
def test_ha1_values_are_digest_ha1_of_number_domain_password(
    directory: Directory, actor: Actor, algorithm: str
) -> None:
    """Each stored HA1 is H(number:domain:password) for its algorithm, as the verifier needs."""
    repo = _extensions(directory, _tenant(directory, actor, "acme.example"))
    extension = repo.add(actor, "200", PASSWORD)
    expected = digest.ha1(algorithm, "200", "acme.example", PASSWORD)
    assert extension.ha1_by_algorithm()[algorithm] == expected
    python_name = {digest.SHA256: "sha256", digest.MD5: "md5"}[algorithm]
    by_hand = hashlib.new(python_name, f"200:acme.example:{PASSWORD}".encode()).hexdigest()
    assert expected == by_hand


def test_set_password_replaces_both_ha1_values(directory: Directory, actor: Actor) -> None:
    """set_password stores the new password's HA1 values and nothing else changes."""
    repo = _extensions(directory, _tenant(directory, actor, "acme.example"))
    before = repo.add(actor, "200", PASSWORD)
    repo.set_password(actor, "200", OTHER_PASSWORD)
    after = repo.get("200")
    assert after.ha1_sha256 == digest.ha1(digest.SHA256, "200", "acme.example", OTHER_PASSWORD)
    assert after.ha1_md5 == digest.ha1(digest.MD5, "200", "acme.example", OTHER_PASSWORD)
    assert (after.id, after.number, after.created_at) == (
        before.id,
        before.number,
        before.created_at,
    )
    with pytest.raises(NotFoundError):
        repo.set_password(actor, "999", OTHER_PASSWORD)


def test_no_password_is_stored_anywhere_in_the_database_files(
    directory: Directory, actor: Actor, db_path: Path
) -> None:
    """Neither the first nor a changed password appears in the database, WAL or shm bytes."""
    repo = _extensions(directory, _tenant(directory, actor, "acme.example"))
    repo.add(actor, "200", PASSWORD)
    repo.set_password(actor, "200", OTHER_PASSWORD)
    on_disk = _database_bytes(db_path)
    assert digest.ha1(digest.SHA256, "200", "acme.example", OTHER_PASSWORD).encode() in on_disk
    assert PASSWORD.encode() not in on_disk
    assert OTHER_PASSWORD.encode() not in on_disk


def test_scopes_are_isolated(directory: Directory, actor: Actor) -> None:
    """Tenant A's scope neither sees nor changes B's extensions, even with the same number."""
    a = _tenant(directory, actor, "acme.example")
    b = _tenant(directory, actor, "bravo.example")
    repo_a, repo_b = _extensions(directory, a), _extensions(directory, b)
    repo_b.add(actor, "300", PASSWORD)
    b_before = repo_b.get("300")
    assert repo_a.list() == []
    with pytest.raises(NotFoundError):
        repo_a.get("300")
    with pytest.raises(NotFoundError):
        repo_a.set_password(actor, "300", OTHER_PASSWORD)
    assert repo_b.get("300") == b_before
    # The same number in A is a different extension with A's realm in its HA1.
    a_ext = repo_a.add(actor, "300", PASSWORD)
    assert a_ext.id != b_before.id and a_ext.ha1_sha256 != b_before.ha1_sha256
    repo_a.set_password(actor, "300", OTHER_PASSWORD)
    assert repo_b.get("300") == b_before
    assert [e.tenant_id for e in repo_b.list()] == [b.id]


@pytest.mark.parametrize(
    "number", ["", "Alice", "-200", ".200", "2 00", "200@x", "a" * 33, "20\n0", "ü"]
)
def test_invalid_numbers_are_refused(directory: Directory, actor: Actor, number: str) -> None:
    """Numbers other than 1-32 of [a-z0-9._-], led by a letter or digit, are refused."""
    repo = _extensions(directory, _tenant(directory, actor, "acme.example"))
    with pytest.raises(InvalidInputError):
        repo.add(actor, number, PASSWORD)
    assert repo.list() == []
    assert [r.action for r in records(directory.db)] == ["tenant.add"]


def test_duplicate_number_is_a_conflict(directory: Directory, actor: Actor) -> None:
    """Adding an existing number again is a ConflictError and writes no audit record."""
    repo = _extensions(directory, _tenant(directory, actor, "acme.example"))
    first = repo.add(actor, "200", PASSWORD)
    with pytest.raises(ConflictError):
        repo.add(actor, "200", OTHER_PASSWORD)
    assert repo.list() == [first]
    assert [r.action for r in records(directory.db)] == ["tenant.add", "extension.add"]


def test_quota_refuses_the_extra_extension_and_writes_nothing(
    directory: Directory, actor: Actor
) -> None:
    """With max_extensions=2 the third add raises QuotaExceededError; no row, no audit."""
    tenant = _tenant(directory, actor, "acme.example", max_extensions=2)
    repo = _extensions(directory, tenant)
    repo.add(actor, "200", PASSWORD)
    repo.add(actor, "201", PASSWORD)
    audit_before = list(records(directory.db))
    with pytest.raises(QuotaExceededError, match=r"acme\.example is at its limit of 2"):
        repo.add(actor, "202", PASSWORD)
    assert [e.number for e in repo.list()] == ["200", "201"]
    assert list(records(directory.db)) == audit_before
    # Another tenant's quota is its own.
    other = _extensions(directory, _tenant(directory, actor, "bravo.example", max_extensions=2))
    other.add(actor, "202", PASSWORD)


def test_quota_holds_against_a_raw_insert_from_another_connection(
    directory: Directory, actor: Actor, db_path: Path
) -> None:
    """The trigger, not the repository, enforces the quota: a plain sqlite3 INSERT aborts."""
    tenant = _tenant(directory, actor, "acme.example", max_extensions=2)
    repo = _extensions(directory, tenant)
    repo.add(actor, "200", PASSWORD)
    conn = sqlite3.connect(db_path)
    try:
        insert = (
            "INSERT INTO extensions (tenant_id, number, ha1_sha256, ha1_md5, created_at)"
            " VALUES (?, ?, 'x', 'y', 'now')"
        )
        with conn:
            conn.execute(insert, (tenant.id, "201"))  # the second still fits
        with pytest.raises(sqlite3.IntegrityError, match="extension quota exceeded"), conn:
            conn.execute(insert, (tenant.id, "202"))
        count = conn.execute(
            "SELECT COUNT(*) FROM extensions WHERE tenant_id = ?", (tenant.id,)
        ).fetchone()[0]
    finally:
        conn.close()
    assert count == 2
    assert [e.number for e in repo.list()] == ["200", "201"]


def test_every_write_is_audited_without_secrets(directory: Directory, actor: Actor) -> None:
    """add and set_password each write one record naming the extension; no HA1 or password."""
    tenant = _tenant(directory, actor, "acme.example")
    repo = _extensions(directory, tenant)
    extension = repo.add(actor, "200", PASSWORD)
    repo.set_password(actor, "200", OTHER_PASSWORD)
    log = list(records(directory.db))
    assert [(r.action, r.target, r.tenant_id, r.actor) for r in log[1:]] == [
        ("extension.add", "extension:200@acme.example", tenant.id, "unix:operator"),
        ("extension.passwd", "extension:200@acme.example", tenant.id, "unix:operator"),
    ]
    secrets = {PASSWORD, OTHER_PASSWORD, extension.ha1_sha256, extension.ha1_md5}
    secrets |= set(repo.get("200").ha1_by_algorithm().values())
    for record in log:
        assert not any(secret in record.to_json() for secret in secrets)
