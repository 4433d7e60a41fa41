"""``telemancer init --dev DIR``: a ready-to-run development instance.

Writes, where missing: a dev CA and server certificate (ECDSA P-256), random
secrets (mode 0600), the config file, the database, and a first sysadmin with
a random password that is shown once and stored only as an Argon2id hash.
Every step checks before it writes, so a second run changes nothing and a run
interrupted half-way is finished by the next one.
"""

from __future__ import annotations

import datetime
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appliance import config as config_module
from appliance.passwords import hash_password
from appliance.pki import make_dev_certificates
from appliance.store import open_directory
from appliance.store.audit import Actor
from appliance.store.checkpoints import CheckpointKey

CONFIG_NAME = "telemancer.toml"
FIRST_SYSADMIN = "admin"

DEV_CONFIG = """\
# Development instance written by `telemancer init --dev`. Not for production:
# mode = "development" skips the production refusals (docs/config.md).
mode = "development"
data_dir = "."

[admin]
listen = "127.0.0.1:8443"

[sip]
tls_listen = "127.0.0.1:5061"
# Plaintext SIP (UDP and TCP) is off unless enabled, and then only for these subnets.
plaintext_enabled = false
plaintext_listen = "127.0.0.1:5060"
internal_subnets = ["127.0.0.0/24"]

[media]
# The RTP/SRTP relay binds here and writes this address into SDP (advertised_address
# defaults to listen); each call takes two even/odd port pairs from the range.
listen = "127.0.0.1"
port_min = 20000
port_max = 29999
idle_timeout = 60

[tls]
certificate = "tls/server.crt"
private_key = "file:tls/server.key"
chain = "tls/ca.crt"

[secrets]
jwt_signing_key = "file:secrets/jwt-signing.key"
audit_signing_key = "file:secrets/audit-signing.key"

[audit]
checkpoint_every = 100
checkpoint_interval_seconds = 600

[log]
format = "auto"
level = "info"
"""


@dataclass
class InitResult:
    """What ``init`` did: the files it wrote and, once, the first password."""

    written: list[Path] = field(default_factory=list)
    sysadmin_password: str | None = None

    @property
    def changed(self) -> bool:
        """False when the instance was complete already."""
        return bool(self.written) or self.sysadmin_password is not None


def init_dev(
    directory: Path, actor: Actor, clock: Callable[[], float], environ: Mapping[str, str]
) -> InitResult:
    """Create or complete the development instance in ``directory``."""
    result = InitResult()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in ("tls", "secrets"):
        (directory / sub).mkdir(mode=0o700, exist_ok=True)

    tls_files = [
        directory / "tls" / name for name in ("ca.crt", "ca.key", "server.crt", "server.key")
    ]
    if not all(path.exists() for path in tls_files):
        now = datetime.datetime.fromtimestamp(clock(), datetime.UTC)
        certs = make_dev_certificates(now)
        contents = (certs.ca_certificate, certs.ca_key, certs.server_certificate, certs.server_key)
        for path, data in zip(tls_files, contents, strict=True):
            _replace_private(path, data, result)

    _write_once(
        directory / "secrets" / "jwt-signing.key",
        lambda: secrets.token_urlsafe(48).encode() + b"\n",
        result,
    )
    _write_once(directory / "secrets" / "audit-signing.key", CheckpointKey.generate_pem, result)
    _write_once(directory / CONFIG_NAME, DEV_CONFIG.encode, result)

    cfg = config_module.load(directory / CONFIG_NAME, environ)
    store = open_directory(
        cfg.database_path,
        CheckpointKey.from_pem(cfg.secrets.audit_signing_key.value),
        cfg.audit.checkpoint_every,
        clock,
    )
    try:
        if not store.sysadmins():
            password = secrets.token_urlsafe(18)
            store.add_sysadmin(actor, FIRST_SYSADMIN, hash_password(password))
            result.sysadmin_password = password
        if result.written:
            store.record(
                actor,
                "instance.init",
                str(directory.resolve()),
                details={"written": [str(p.relative_to(directory)) for p in result.written]},
            )
    finally:
        store.db.close()
    return result


def _write_once(path: Path, make: Callable[[], bytes], result: InitResult) -> None:
    if path.exists():
        return
    _replace_private(path, make(), result)


def _replace_private(path: Path, data: bytes, result: InitResult) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)
    result.written.append(path)
