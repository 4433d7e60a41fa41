"""Carrier passwords sealed again under the current key, after
``secrets.jwt_signing_key`` was replaced (docs/trunks.md, "How carrier
passwords are sealed").

The sealing key is derived from that secret, so after a rotation the stored
passwords no longer open, and the SIP service refuses to start, naming the
first trunk. Given the old secret, :func:`reseal_passwords` opens each
password that the current key cannot open with the old key, and seals it
again under the current key. It works across every tenant, like the
rotation that made it necessary. It is all or nothing: if any password opens
under neither key, it names them and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.store.audit import Actor
from appliance.store.database import write_transaction
from appliance.store.sealed import SealError, seal, unseal
from appliance.store.tenants import Directory
from appliance.store.trunks import associated_data


@dataclass(frozen=True)
class Resealed:
    """What :func:`reseal_passwords` did: the trunks it sealed again (as
    ``name@domain``), and how many were under the current key already."""

    resealed: list[str]
    current: int


def reseal_passwords(
    directory: Directory, actor: Actor, old_key: bytes, new_key: bytes
) -> Resealed:
    """Seal under ``new_key`` every carrier password that only ``old_key`` opens
    (each audited as ``trunk.reseal``, without the password).

    Raises :class:`SealError` naming the trunks whose password opens under
    neither key; then nothing is changed.
    """
    db = directory.db
    rows = db.conn.execute(
        "SELECT t.id, t.tenant_id, t.name, t.password_sealed, n.domain FROM trunks t"
        " JOIN tenants n ON n.id = t.tenant_id WHERE t.password_sealed IS NOT NULL"
        " ORDER BY n.domain, t.name"
    ).fetchall()
    updates: list[tuple[int, int, str, str]] = []
    unreadable: list[str] = []
    current = 0
    for trunk_id, tenant_id, name, sealed, domain in rows:
        bound = associated_data(tenant_id, name)
        try:
            unseal(new_key, sealed, bound)
            current += 1
            continue
        except SealError:
            pass
        try:
            password = unseal(old_key, sealed, bound)
        except SealError:
            unreadable.append(f"{name}@{domain}")
            continue
        updates.append((trunk_id, tenant_id, f"{name}@{domain}", seal(new_key, password, bound)))
    if unreadable:
        raise SealError(
            f"the carrier password of {', '.join(unreadable)} opens under neither key;"
            " nothing was changed (enter those passwords again with `trunk passwd`)"
        )
    now = directory.clock()
    with write_transaction(db):
        for trunk_id, tenant_id, target, sealed in updates:
            db.conn.execute(
                "UPDATE trunks SET password_sealed = ? WHERE id = ? AND tenant_id = ?",
                (sealed, trunk_id, tenant_id),
            )
            directory.audit.append(
                db, actor, "trunk.reseal", f"trunk:{target}", now=now, tenant_id=tenant_id
            )
    return Resealed([target for _, _, target, _ in updates], current)
