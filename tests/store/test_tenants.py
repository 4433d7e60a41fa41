"""Tenants, users and the tenant scope."""

from __future__ import annotations

import pytest

from appliance.store.audit import Actor, records
from appliance.store.tenants import (
    ConflictError,
    Directory,
    InvalidInputError,
    NotFoundError,
    normalize_domain,
)

HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def _two_tenants(directory: Directory, actor: Actor) -> tuple[int, int]:
    a = directory.add_tenant(
        actor, "Acme", "acme.example", max_extensions=5, max_concurrent_calls=2
    )
    b = directory.add_tenant(
        actor, "Bravo", "bravo.example", max_extensions=5, max_concurrent_calls=2
    )
    directory.scope(a.id).add_user(actor, "alice@acme", "admin", HASH)
    directory.scope(a.id).add_user(actor, "amy@acme", "read-only", HASH)
    directory.scope(b.id).add_user(actor, "bob@bravo", "admin", HASH)
    return a.id, b.id


def test_scope_sees_only_its_own_tenants_rows(directory: Directory, actor: Actor) -> None:
    """A scope for tenant A lists, finds and reports only A's rows, never B's."""
    a, b = _two_tenants(directory, actor)
    scope_a, scope_b = directory.scope(a), directory.scope(b)
    assert [u.username for u in scope_a.users()] == ["alice@acme", "amy@acme"]
    assert [u.username for u in scope_b.users()] == ["bob@bravo"]
    assert all(u.tenant_id == a for u in scope_a.users())
    assert scope_a.user("alice@acme").tenant_id == a
    with pytest.raises(NotFoundError):
        scope_a.user("bob@bravo")
    with pytest.raises(NotFoundError):
        scope_b.user("alice@acme")
    assert scope_a.tenant().domain == "acme.example"


def test_sysadmins_are_outside_every_tenant(directory: Directory, actor: Actor) -> None:
    """Sysadmins have no tenant and no tenant scope lists them."""
    a, _ = _two_tenants(directory, actor)
    directory.add_sysadmin(actor, "root-admin", HASH)
    assert [u.username for u in directory.sysadmins()] == ["root-admin"]
    assert "root-admin" not in [u.username for u in directory.scope(a).users()]
    with pytest.raises(NotFoundError):
        directory.scope(a).user("root-admin")


def test_scope_for_a_missing_tenant_is_refused(directory: Directory) -> None:
    """No scope can be made for a tenant that does not exist."""
    with pytest.raises(NotFoundError):
        directory.scope(999)


def test_every_write_is_audited_in_its_transaction(directory: Directory, actor: Actor) -> None:
    """Adding tenants and users writes one audit record each, naming actor and tenant."""
    a, b = _two_tenants(directory, actor)
    log = [(r.action, r.target, r.tenant_id, r.actor, r.source) for r in records(directory.db)]
    assert log == [
        ("tenant.add", "tenant:acme.example", a, "unix:operator", "console"),
        ("tenant.add", "tenant:bravo.example", b, "unix:operator", "console"),
        ("user.add", "user:alice@acme", a, "unix:operator", "console"),
        ("user.add", "user:amy@acme", a, "unix:operator", "console"),
        ("user.add", "user:bob@bravo", b, "unix:operator", "console"),
    ]
    assert all("argon2" not in r.details for r in records(directory.db))


def test_refused_write_leaves_no_row_and_no_audit_record(
    directory: Directory, actor: Actor
) -> None:
    """A duplicate domain is a conflict, and neither the row nor its audit record lands."""
    directory.add_tenant(actor, "Acme", "acme.example", max_extensions=1, max_concurrent_calls=1)
    with pytest.raises(ConflictError):
        directory.add_tenant(
            actor, "Other", "ACME.example", max_extensions=1, max_concurrent_calls=1
        )
    assert [t.name for t in directory.tenants()] == ["Acme"]
    assert [r.action for r in records(directory.db)] == ["tenant.add"]


@pytest.mark.parametrize(
    ("name", "domain", "role", "username"),
    [
        ("", "ok.example", "admin", "u"),
        ("Acme", "nodot", "admin", "u"),
        ("Acme", "-bad.example", "admin", "u"),
        ("Acme", "ok.example", "sysadmin", "u"),
        ("Acme", "ok.example", "admin", "Has Space"),
    ],
)
def test_invalid_input_is_refused(
    directory: Directory, actor: Actor, name: str, domain: str, role: str, username: str
) -> None:
    """Bad names, domains, roles and usernames are refused with InvalidInputError."""
    with pytest.raises(InvalidInputError):
        tenant = directory.add_tenant(
            actor, name, domain, max_extensions=1, max_concurrent_calls=1
        )
        directory.scope(tenant.id).add_user(actor, username, role, HASH)


def test_domains_are_normalised() -> None:
    """Domains are compared lower-case without a trailing dot."""
    assert normalize_domain(" PBX.Example.COM. ") == "pbx.example.com"
