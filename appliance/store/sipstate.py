"""What the SIP service keeps in the store: the directory it serves,
registrations (so they survive a restart) and IP blocks.

Registrations change with every phone refresh, so they are written in
batches by the service and are not audited (phones are not people or
tokens). Blocks and lifts are audited.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from appliance.media.policy import SrtpPolicy
from appliance.sip import digest
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.registrar import Binding, Flow
from appliance.store.audit import Actor, AuditLog
from appliance.store.database import write_transaction
from appliance.store.sip_dialplan import load_dids, load_number_settings, load_routes, load_trunks


def data_version(db: sqlite_utils.Database) -> int:
    """Changes whenever another connection commits (``PRAGMA data_version``)."""
    return int(db.conn.execute("PRAGMA data_version").fetchone()[0])


def load_directory(db: sqlite_utils.Database, sealing_key: bytes) -> SipDirectory:
    """Every tenant, extension, trunk, DID, route and numbering, for the SIP core
    (carrier passwords unsealed with ``sealing_key``)."""
    tenants = [
        TenantEntry(
            r["id"],
            r["domain"],
            r["status"],
            r["max_extensions"],
            r["max_concurrent_calls"],
            SrtpPolicy(r["srtp"]),
        )
        for r in db.table("tenants").rows
    ]
    extensions = [
        ExtensionEntry(
            r["id"],
            r["tenant_id"],
            r["number"],
            {digest.SHA256: r["ha1_sha256"], digest.MD5: r["ha1_md5"]},
        )
        for r in db.table("extensions").rows
    ]
    return SipDirectory(
        tenants,
        extensions,
        trunks=load_trunks(db, sealing_key),
        dids=load_dids(db),
        routes=load_routes(db),
        numbering=load_number_settings(db),
    )


def save_bindings(db: sqlite_utils.Database, saved: list[Binding], removed: list[Binding]) -> None:
    """Write a batch of registration changes in one transaction."""
    with write_transaction(db):
        db.conn.executemany(
            "DELETE FROM registrations WHERE extension_id = ? AND contact = ?",
            [(b.extension_id, b.contact) for b in removed],
        )
        db.conn.executemany(
            "INSERT OR REPLACE INTO registrations (tenant_id, extension_id, contact,"
            " expires_at, call_id, cseq, transport, source, flow, user_agent)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    b.tenant_id,
                    b.extension_id,
                    b.contact,
                    b.expires_at,
                    b.call_id,
                    b.cseq,
                    b.flow.transport,
                    f"{b.flow.remote[0]}|{b.flow.remote[1]}",
                    b.flow.connection,
                    b.user_agent,
                )
                for b in saved
            ],
        )


def load_bindings(db: sqlite_utils.Database, now: float) -> list[Binding]:
    """Registrations that have not expired, for the registrar at start."""
    rows = db.table("registrations").rows_where("expires_at > ?", [now])
    return [_binding(row) for row in rows]


def _binding(row: dict[str, object]) -> Binding:
    host, _, port = str(row["source"]).rpartition("|")
    flow = Flow(str(row["transport"]), (host, int(port)), str(row["flow"]))
    return Binding(
        int(str(row["tenant_id"])),
        int(str(row["extension_id"])),
        str(row["contact"]),
        float(str(row["expires_at"])),
        str(row["call_id"]),
        int(str(row["cseq"])),
        flow,
        str(row["user_agent"]),
    )


@dataclass(frozen=True)
class RegistrationRow:
    """One line of ``telemancer registrations list``."""

    domain: str
    number: str
    contact: str
    expires_at: float
    flow: str
    user_agent: str


def list_registrations(
    db: sqlite_utils.Database, now: float, domain: str | None = None
) -> list[RegistrationRow]:
    """Live registrations, for one tenant or all (a sysadmin view)."""
    sql = (
        "SELECT t.domain, e.number, r.contact, r.expires_at, r.transport, r.source,"
        " r.user_agent FROM registrations r JOIN extensions e ON e.id = r.extension_id"
        " JOIN tenants t ON t.id = r.tenant_id WHERE r.expires_at > ?"
    )
    params: list[object] = [now]
    if domain is not None:
        sql += " AND t.domain = ?"
        params.append(domain.lower())
    rows = db.conn.execute(sql + " ORDER BY t.domain, e.number, r.contact", params)
    out = []
    for dom, number, contact, expires_at, transport, source, user_agent in rows:
        host, _, port = source.rpartition("|")
        flow = Flow(transport, (host, int(port))).describe()
        out.append(RegistrationRow(dom, number, contact, expires_at, flow, user_agent))
    return out


@dataclass(frozen=True)
class StoredBlock:
    """A blocked source IP."""

    ip: str
    reason: str
    since: float
    until: float


def save_block(
    db: sqlite_utils.Database, audit: AuditLog, actor: Actor, block: StoredBlock, now: float
) -> None:
    """Record a block (audited as ``sip.block``)."""
    with write_transaction(db):
        db.conn.execute(
            "INSERT OR REPLACE INTO ip_blocks (ip, reason, since, until) VALUES (?, ?, ?, ?)",
            (block.ip, block.reason, block.since, block.until),
        )
        audit.append(
            db,
            actor,
            "sip.block",
            f"ip:{block.ip}",
            now=now,
            details={"reason": block.reason, "until": block.until},
        )


def delete_block(
    db: sqlite_utils.Database, audit: AuditLog, actor: Actor, ip: str, reason: str, now: float
) -> bool:
    """Remove a block (audited as ``sip.unblock``); False if there was none."""
    with write_transaction(db):
        cursor = db.conn.execute("DELETE FROM ip_blocks WHERE ip = ?", (ip,))
        if cursor.rowcount == 0:
            return False
        audit.append(db, actor, "sip.unblock", f"ip:{ip}", now=now, details={"reason": reason})
    return True


def load_blocks(db: sqlite_utils.Database, now: float) -> list[StoredBlock]:
    """Blocks still in force."""
    rows = db.table("ip_blocks").rows_where("until > ?", [now], order_by="since")
    return [StoredBlock(r["ip"], r["reason"], r["since"], r["until"]) for r in rows]
