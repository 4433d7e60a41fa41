"""Versioned schema migrations, tracked in ``PRAGMA user_version``.

Migrations only ever get appended; each runs in its own transaction. The
audit log and its checkpoints are append-only by trigger (UPDATE and DELETE
abort; an INSERT must extend the chain), so are call detail records and their
hourly aggregates, and every tenant-owned table carries ``tenant_id``.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils

from appliance.store.database import write_transaction

MIGRATIONS: tuple[str, ...] = (
    # 1: tenants, users, the audit chain and its signed checkpoints.
    """
    CREATE TABLE tenants (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        domain TEXT NOT NULL UNIQUE,
        max_extensions INTEGER NOT NULL CHECK (max_extensions >= 0),
        max_concurrent_calls INTEGER NOT NULL CHECK (max_concurrent_calls >= 0),
        status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        created_at TEXT NOT NULL
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER REFERENCES tenants(id),
        username TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        CHECK ((tenant_id IS NULL AND role = 'sysadmin')
            OR (tenant_id IS NOT NULL AND role IN ('admin', 'read-only')))
    );
    CREATE INDEX users_tenant ON users(tenant_id);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        actor TEXT NOT NULL,
        tenant_id INTEGER,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_log_tenant ON audit_log(tenant_id, seq);
    CREATE TRIGGER audit_log_extends_chain BEFORE INSERT ON audit_log
    WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log)
      OR NEW.prev_hash IS NOT COALESCE(
           (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1), printf('%064d', 0))
    BEGIN SELECT RAISE(ABORT, 'audit_log insert must extend the chain'); END;
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        ts TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
    );
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
    CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
    """,
    # 2: SIP extensions (HA1 only, quota enforced by trigger), registrations, IP blocks.
    """
    CREATE TABLE extensions (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        number TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (tenant_id, number)
    );
    CREATE TRIGGER extensions_quota BEFORE INSERT ON extensions
    WHEN (SELECT COUNT(*) FROM extensions WHERE tenant_id = NEW.tenant_id)
         >= (SELECT max_extensions FROM tenants WHERE id = NEW.tenant_id)
    BEGIN SELECT RAISE(ABORT, 'extension quota exceeded'); END;
    CREATE TABLE registrations (
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        extension_id INTEGER NOT NULL REFERENCES extensions(id) ON DELETE CASCADE,
        contact TEXT NOT NULL,
        expires_at REAL NOT NULL,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        transport TEXT NOT NULL,
        source TEXT NOT NULL,
        flow TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        PRIMARY KEY (extension_id, contact)
    );
    CREATE INDEX registrations_tenant ON registrations(tenant_id);
    CREATE TABLE ip_blocks (
        ip TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        since REAL NOT NULL,
        until REAL NOT NULL
    );
    """,
    # 3: call detail records and their hourly aggregates (both immutable by
    # trigger), and the calls in progress. Times are epoch seconds (REAL).
    # cdrs_tenant_ended lets the aggregator find the calls in progress at an
    # hour's start without rescanning a tenant's history (docs/cdrs.md).
    """
    CREATE TABLE cdrs (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        call_id TEXT NOT NULL,
        caller TEXT NOT NULL,
        callee TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('internal', 'inbound', 'outbound')),
        trunk TEXT,
        setup_at REAL NOT NULL,
        ringing_at REAL,
        answered_at REAL,
        ended_at REAL NOT NULL,
        disposition TEXT NOT NULL CHECK (disposition IN
            ('answered', 'busy', 'no-answer', 'failed', 'cancelled', 'rejected-quota')),
        hangup_by TEXT CHECK (hangup_by IN ('caller', 'callee', 'system')),
        final_status INTEGER NOT NULL,
        caller_transport TEXT NOT NULL,
        callee_transport TEXT,
        media TEXT NOT NULL CHECK (json_valid(media)),
        identity TEXT NOT NULL CHECK (json_valid(identity)),
        UNIQUE (tenant_id, call_id)
    );
    CREATE INDEX cdrs_tenant_setup ON cdrs(tenant_id, setup_at);
    CREATE INDEX cdrs_tenant_ended ON cdrs(tenant_id, ended_at);
    CREATE TRIGGER cdrs_no_update BEFORE UPDATE ON cdrs
    BEGIN SELECT RAISE(ABORT, 'cdrs is append-only'); END;
    CREATE TRIGGER cdrs_no_delete BEFORE DELETE ON cdrs
    BEGIN SELECT RAISE(ABORT, 'cdrs is append-only'); END;
    CREATE TABLE cdr_hourly (
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        hour_start REAL NOT NULL CHECK (hour_start = 3600 * CAST(hour_start / 3600 AS INTEGER)),
        calls INTEGER NOT NULL CHECK (calls >= 0),
        answered INTEGER NOT NULL CHECK (answered >= 0 AND answered <= calls),
        billable_seconds REAL NOT NULL CHECK (billable_seconds >= 0),
        failures TEXT NOT NULL CHECK (json_valid(failures)),
        peak_concurrent INTEGER NOT NULL CHECK (peak_concurrent >= 0),
        PRIMARY KEY (tenant_id, hour_start)
    );
    CREATE TRIGGER cdr_hourly_no_update BEFORE UPDATE ON cdr_hourly
    BEGIN SELECT RAISE(ABORT, 'cdr_hourly is append-only'); END;
    CREATE TRIGGER cdr_hourly_no_delete BEFORE DELETE ON cdr_hourly
    BEGIN SELECT RAISE(ABORT, 'cdr_hourly is append-only'); END;
    CREATE TABLE live_calls (
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        call_id TEXT NOT NULL,
        caller TEXT NOT NULL,
        callee TEXT NOT NULL,
        direction TEXT NOT NULL,
        state TEXT NOT NULL,
        setup_at REAL NOT NULL,
        answered_at REAL,
        PRIMARY KEY (tenant_id, call_id)
    );
    """,
    # 4: trunks to carriers (password sealed, docs/trunks.md), DIDs, dial-plan
    # routes, trunk health, and each tenant's number settings. The composite
    # foreign keys make the database itself refuse a route to another tenant's
    # trunk or a DID on another tenant's extension.
    """
    ALTER TABLE tenants ADD COLUMN country_code TEXT NOT NULL DEFAULT ''
        CHECK (length(country_code) <= 3 AND country_code NOT GLOB '*[^0-9]*');
    ALTER TABLE tenants ADD COLUMN national_prefix TEXT NOT NULL DEFAULT '0'
        CHECK (length(national_prefix) <= 4 AND national_prefix NOT GLOB '*[^0-9]*');
    ALTER TABLE tenants ADD COLUMN international_prefix TEXT NOT NULL DEFAULT '00'
        CHECK (length(international_prefix) <= 4 AND international_prefix NOT GLOB '*[^0-9]*');
    CREATE UNIQUE INDEX extensions_tenant_id ON extensions(tenant_id, id);
    CREATE TABLE trunks (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        name TEXT NOT NULL,
        host TEXT NOT NULL,
        port INTEGER CHECK (port IS NULL OR port BETWEEN 1 AND 65535),
        transport TEXT NOT NULL DEFAULT 'tls' CHECK (transport IN ('tls', 'tcp', 'udp')),
        username TEXT,
        password_sealed TEXT,
        caller_id_mode TEXT NOT NULL DEFAULT 'pass' CHECK (caller_id_mode IN ('pass', 'fixed')),
        caller_id TEXT,
        tls_domain TEXT,
        ca_bundle TEXT,
        fingerprint TEXT CHECK (fingerprint IS NULL OR length(fingerprint) = 64),
        enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        inbound_networks TEXT NOT NULL DEFAULT '[]'
            CHECK (json_valid(inbound_networks) AND json_type(inbound_networks) = 'array'),
        inbound_fingerprint TEXT
            CHECK (inbound_fingerprint IS NULL OR length(inbound_fingerprint) = 64),
        created_at TEXT NOT NULL,
        CHECK ((username IS NULL) = (password_sealed IS NULL)),
        CHECK ((caller_id_mode = 'fixed') = (caller_id IS NOT NULL)),
        UNIQUE (tenant_id, name),
        UNIQUE (tenant_id, id)
    );
    CREATE TABLE dids (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        number TEXT NOT NULL UNIQUE,
        extension_id INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        FOREIGN KEY (tenant_id, extension_id) REFERENCES extensions(tenant_id, id)
    );
    CREATE INDEX dids_tenant ON dids(tenant_id);
    CREATE TABLE routes (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        position INTEGER NOT NULL CHECK (position >= 1),
        prefix TEXT NOT NULL,
        trunk_id INTEGER NOT NULL,
        strip INTEGER NOT NULL DEFAULT 0 CHECK (strip >= 0),
        prepend TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        UNIQUE (tenant_id, position),
        FOREIGN KEY (tenant_id, trunk_id) REFERENCES trunks(tenant_id, id)
    );
    CREATE TABLE trunk_health (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL,
        trunk_id INTEGER NOT NULL,
        at REAL NOT NULL,
        up INTEGER NOT NULL CHECK (up IN (0, 1)),
        status INTEGER CHECK (status IS NULL OR status BETWEEN 100 AND 699),
        rtt REAL CHECK (rtt IS NULL OR rtt >= 0),
        FOREIGN KEY (tenant_id, trunk_id) REFERENCES trunks(tenant_id, id) ON DELETE CASCADE
    );
    CREATE INDEX trunk_health_trunk_at ON trunk_health(trunk_id, at);
    """,
    # 5: the SRTP policy of each tenant (for its phones) and of each trunk
    # (appliance.media.policy). Existing rows become 'optional': SRTP where the
    # peer offers it over TLS, plain RTP otherwise, so no working call starts
    # failing. SDES keys travel in the SDP, so the database itself refuses
    # 'required' on a trunk not signalled over TLS (media.policy.check_config).
    """
    ALTER TABLE tenants ADD COLUMN srtp TEXT NOT NULL DEFAULT 'optional'
        CHECK (srtp IN ('required', 'optional', 'off'));
    ALTER TABLE trunks ADD COLUMN srtp TEXT NOT NULL DEFAULT 'optional'
        CHECK (srtp IN ('required', 'optional', 'off'))
        CHECK (srtp <> 'required' OR transport = 'tls');
    """,
    # 6: a call is recorded once per Call-ID *and setup time*. Calls refused
    # before they rang are recorded too (404, 480, 488...), and a phone may
    # retry with the same Call-ID (RFC 3261 §8.1.3.5 asks it to): the retry
    # is another call, whose record must not be skipped as a duplicate.
    # SQLite cannot change a constraint in place, so the table is rebuilt
    # with every row and id as they were; its append-only triggers are
    # dropped only for the copy and made again.
    """
    DROP TRIGGER cdrs_no_update;
    DROP TRIGGER cdrs_no_delete;
    CREATE TABLE cdrs_v6 (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        call_id TEXT NOT NULL,
        caller TEXT NOT NULL,
        callee TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('internal', 'inbound', 'outbound')),
        trunk TEXT,
        setup_at REAL NOT NULL,
        ringing_at REAL,
        answered_at REAL,
        ended_at REAL NOT NULL,
        disposition TEXT NOT NULL CHECK (disposition IN
            ('answered', 'busy', 'no-answer', 'failed', 'cancelled', 'rejected-quota')),
        hangup_by TEXT CHECK (hangup_by IN ('caller', 'callee', 'system')),
        final_status INTEGER NOT NULL,
        caller_transport TEXT NOT NULL,
        callee_transport TEXT,
        media TEXT NOT NULL CHECK (json_valid(media)),
        identity TEXT NOT NULL CHECK (json_valid(identity)),
        UNIQUE (tenant_id, call_id, setup_at)
    );
    INSERT INTO cdrs_v6 SELECT id, tenant_id, call_id, caller, callee, direction, trunk,
        setup_at, ringing_at, answered_at, ended_at, disposition, hangup_by, final_status,
        caller_transport, callee_transport, media, identity FROM cdrs;
    DROP TABLE cdrs;
    ALTER TABLE cdrs_v6 RENAME TO cdrs;
    CREATE INDEX cdrs_tenant_setup ON cdrs(tenant_id, setup_at);
    CREATE INDEX cdrs_tenant_ended ON cdrs(tenant_id, ended_at);
    CREATE TRIGGER cdrs_no_update BEFORE UPDATE ON cdrs
    BEGIN SELECT RAISE(ABORT, 'cdrs is append-only'); END;
    CREATE TRIGGER cdrs_no_delete BEFORE DELETE ON cdrs
    BEGIN SELECT RAISE(ABORT, 'cdrs is append-only'); END;
    """,
)


def schema_version(db: sqlite_utils.Database) -> int:
    """The number of migrations applied to ``db``."""
    return int(db.conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply pending migrations; return the versions applied (empty if none).

    Refuses a database newer than this code, rather than guessing.
    """
    current = schema_version(db)
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this release"
            f" ({len(MIGRATIONS)}); refusing to run against it"
        )
    applied = []
    for version in range(current + 1, len(MIGRATIONS) + 1):
        with write_transaction(db):
            for statement in _statements(MIGRATIONS[version - 1]):
                db.conn.execute(statement)
            db.conn.execute(f"PRAGMA user_version = {version:d}")
        applied.append(version)
    return applied


def _statements(script: str) -> list[str]:
    """Split a script into statements (``executescript`` would COMMIT for us)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in migration: {current.strip()[:60]}")
    return statements
