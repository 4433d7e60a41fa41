"""Production refusals (``preflight.check``), the dm-crypt probe, and ``service.prepare``."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance import preflight
from appliance.config import DEV_JWT_SIGNING_KEY, Config, ConfigError, load
from appliance.devinstance import DEV_CONFIG
from appliance.pki import DevCertificates, make_dev_certificates
from appliance.preflight import MIN_JWT_KEY_BYTES, is_on_encrypted_device
from appliance.secrets import Secret
from appliance.service import Prepared, prepare
from appliance.store.checkpoints import CheckpointKey

GOOD_JWT = b"a-production-jwt-signing-key-of-plenty-of-bytes-0123456789"

#: The development config without its comments, and its production twin.
DEV = "".join(line for line in DEV_CONFIG.splitlines(keepends=True) if not line.startswith("#"))
PROD = DEV.replace('mode = "development"', 'mode = "production"')


@functools.cache
def _certs() -> DevCertificates:
    return make_dev_certificates(datetime.datetime.now(datetime.UTC))


@functools.cache
def _other_certs() -> DevCertificates:
    return make_dev_certificates(datetime.datetime.now(datetime.UTC))


@functools.cache
def _audit_pem() -> bytes:
    return CheckpointKey.generate_pem()


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def _load(
    root: Path, text: str = PROD, *, jwt: bytes = GOOD_JWT, environ: dict[str, str] | None = None
) -> Config:
    """Write a complete instance under ``root`` (owner-only secret files) and load it."""
    certs = _certs()
    _write_private(root / "tls" / "ca.crt", certs.ca_certificate)
    _write_private(root / "tls" / "server.crt", certs.server_certificate)
    _write_private(root / "tls" / "server.key", certs.server_key)
    _write_private(root / "secrets" / "jwt-signing.key", jwt)
    _write_private(root / "secrets" / "audit-signing.key", _audit_pem())
    path = root / "telemancer.toml"
    path.write_text(text, encoding="utf-8")
    return load(path, environ or {})


# --- fake /sys ---------------------------------------------------------------------


def _dev_link(sysfs: Path, path: Path) -> Path:
    """``sysfs/dev/block/MAJ:MIN`` for the device ``path`` really lives on."""
    dev = path.stat().st_dev
    return sysfs / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"


def _block(sysfs: Path, name: str, uuid: str | None = None) -> Path:
    """A fake ``/sys/devices/virtual/block/NAME`` with an optional ``dm/uuid``."""
    device = sysfs / "devices" / "virtual" / "block" / name
    device.mkdir(parents=True)
    if uuid is not None:
        (device / "dm").mkdir()
        (device / "dm" / "uuid").write_text(uuid + "\n")
    return device


def _link_slave(device: Path, slave: Path) -> None:
    """Add ``slave`` to ``device/slaves/`` as the kernel does: a relative symlink."""
    (device / "slaves").mkdir(exist_ok=True)
    (device / "slaves" / slave.name).symlink_to(Path("..") / ".." / slave.name)


def _point_at(sysfs: Path, path: Path, device: Path) -> None:
    """Make ``/sys/dev/block/MAJ:MIN`` for ``path`` a symlink to ``device``."""
    link = _dev_link(sysfs, path)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(device)


def _encrypted_sysfs(tmp_path: Path, data_dir: Path) -> Path:
    """A fake /sys on which ``data_dir``'s device is a LUKS2 mapping."""
    sysfs = tmp_path / "sys-encrypted"
    _point_at(sysfs, data_dir, _block(sysfs, "dm-0", "CRYPT-LUKS2-0123456789abcdef-root"))
    return sysfs


def test_dm_crypt_device_is_encrypted(tmp_path: Path) -> None:
    """A device whose ``dm/uuid`` starts with ``CRYPT-`` (dm-crypt/LUKS) counts as encrypted."""
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    device = _dev_link(sysfs, data)
    (device / "dm").mkdir(parents=True)
    (device / "dm" / "uuid").write_text("CRYPT-LUKS2-abc123def456-luks-root\n")
    assert is_on_encrypted_device(data, sysfs)


def test_lvm_on_luks_is_encrypted(tmp_path: Path) -> None:
    """An LVM volume whose slave device is dm-crypt counts as encrypted (LVM on LUKS)."""
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    crypt = _block(sysfs, "dm-0", "CRYPT-LUKS2-abc123def456-luks-pv")
    lvm = _block(sysfs, "dm-1", "LVM-xyzXYZ0123456789")
    _link_slave(lvm, crypt)
    _point_at(sysfs, data, lvm)
    assert is_on_encrypted_device(data, sysfs)


def test_lvm_on_luks_with_plain_directories(tmp_path: Path) -> None:
    """The probe also follows a ``slaves/`` symlink from a plain MAJ:MIN directory."""
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    device = _dev_link(sysfs, data)
    (device / "dm").mkdir(parents=True)
    (device / "dm" / "uuid").write_text("LVM-xyz")
    crypt = tmp_path / "elsewhere" / "dm-7"
    (crypt / "dm").mkdir(parents=True)
    (crypt / "dm" / "uuid").write_text("CRYPT-PLAIN-abc")
    (device / "slaves").mkdir()
    (device / "slaves" / "dm-7").symlink_to(crypt)
    assert is_on_encrypted_device(data, sysfs)


def test_lvm_on_plain_partition_is_not_encrypted(tmp_path: Path) -> None:
    """LVM whose slaves are plain partitions is not encrypted."""
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    lvm = _block(sysfs, "dm-1", "LVM-xyz")
    _link_slave(lvm, _block(sysfs, "sda2"))
    _point_at(sysfs, data, lvm)
    assert not is_on_encrypted_device(data, sysfs)


def test_plain_device_is_not_encrypted(tmp_path: Path) -> None:
    """A block device with no ``dm/`` directory (a plain partition) is not encrypted."""
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    _point_at(sysfs, data, _block(sysfs, "sda1"))
    assert not is_on_encrypted_device(data, sysfs)


def test_crypt_prefix_must_lead_the_uuid(tmp_path: Path) -> None:
    """A dm device whose uuid merely contains ``CRYPT-`` is not dm-crypt."""
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    _point_at(sysfs, data, _block(sysfs, "dm-3", "LVM-CRYPT-not-really"))
    assert not is_on_encrypted_device(data, sysfs)


def test_missing_device_directory_is_not_encrypted(tmp_path: Path) -> None:
    """No ``/sys/dev/block/MAJ:MIN`` (tmpfs, overlay) means not encrypted, not a crash."""
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    (sysfs / "dev" / "block").mkdir(parents=True)
    assert not is_on_encrypted_device(data, sysfs)
    assert not is_on_encrypted_device(data, tmp_path / "no-sysfs-at-all")


def test_slave_cycle_terminates(tmp_path: Path) -> None:
    """A device listed as its own slave does not recurse forever; it is not encrypted."""
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    loop = _block(sysfs, "dm-9", "LVM-loop")
    _link_slave(loop, loop)
    _point_at(sysfs, data, loop)
    assert not is_on_encrypted_device(data, sysfs)


# --- preflight.check --------------------------------------------------------------


def _check_problems(config: Config, sysfs: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        preflight.check(config, sysfs)
    return caught.value.problems


def test_good_production_config_passes(tmp_path: Path) -> None:
    """A long JWT key and an encrypted data_dir: production starts."""
    config = _load(tmp_path)
    preflight.check(config, _encrypted_sysfs(tmp_path, config.data_dir))


def test_dev_default_jwt_key_refused_in_production(tmp_path: Path) -> None:
    """Production refuses the built-in development JWT key, however it got there."""
    text = PROD.replace(
        'jwt_signing_key = "file:secrets/jwt-signing.key"', 'jwt_signing_key = "env:JWT"'
    )
    config = _load(tmp_path, text, environ={"JWT": DEV_JWT_SIGNING_KEY.decode()})
    assert config.secrets.jwt_signing_key.value == DEV_JWT_SIGNING_KEY
    problems = _check_problems(config, _encrypted_sysfs(tmp_path, config.data_dir))
    assert problems == [
        ("secrets.jwt_signing_key", "is the development default; refusing in production")
    ]


def test_empty_jwt_key_file_refused_in_production(tmp_path: Path) -> None:
    """An empty secret file is a zero-length key, refused as shorter than 32 bytes."""
    config = _load(tmp_path, jwt=b"")
    assert config.secrets.jwt_signing_key.value == b""
    problems = _check_problems(config, _encrypted_sysfs(tmp_path, config.data_dir))
    assert problems == [("secrets.jwt_signing_key", "is 0 bytes; production needs at least 32")]


def test_newline_only_jwt_key_file_is_empty(tmp_path: Path) -> None:
    """A key file holding only a newline is also a zero-length key."""
    config = _load(tmp_path, jwt=b"\n")
    problems = _check_problems(config, _encrypted_sysfs(tmp_path, config.data_dir))
    assert problems[0][1].startswith("is 0 bytes")


def test_short_jwt_key_refused_in_production(tmp_path: Path) -> None:
    """A key one byte short of the minimum is refused; at the minimum it passes."""
    config = _load(tmp_path, jwt=b"k" * (MIN_JWT_KEY_BYTES - 1) + b"\n")
    sysfs = _encrypted_sysfs(tmp_path, config.data_dir)
    assert _check_problems(config, sysfs) == [
        ("secrets.jwt_signing_key", "is 31 bytes; production needs at least 32")
    ]
    exact = dataclasses.replace(
        config,
        secrets=dataclasses.replace(
            config.secrets, jwt_signing_key=Secret("env:X", b"k" * MIN_JWT_KEY_BYTES)
        ),
    )
    preflight.check(exact, sysfs)


def test_unencrypted_data_dir_refused_in_production(tmp_path: Path) -> None:
    """Production refuses a data_dir that is not on dm-crypt, naming the override."""
    config = _load(tmp_path)
    problems = _check_problems(config, tmp_path / "empty-sys")
    assert [key for key, _ in problems] == ["data_dir"]
    assert str(config.data_dir) in problems[0][1]
    assert "allow_unencrypted_storage = true" in problems[0][1]


def test_allow_unencrypted_storage_overrides(tmp_path: Path) -> None:
    """``allow_unencrypted_storage = true`` lets production start on unencrypted storage."""
    text = PROD.replace('data_dir = "."', 'data_dir = "."\nallow_unencrypted_storage = true')
    config = _load(tmp_path, text)
    assert config.allow_unencrypted_storage
    preflight.check(config, tmp_path / "empty-sys")


def test_override_does_not_excuse_a_weak_key(tmp_path: Path) -> None:
    """The storage override covers storage only; a short JWT key is still refused."""
    text = PROD.replace('data_dir = "."', 'data_dir = "."\nallow_unencrypted_storage = true')
    config = _load(tmp_path, text, jwt=b"short")
    problems = _check_problems(config, tmp_path / "empty-sys")
    assert [key for key, _ in problems] == ["secrets.jwt_signing_key"]


def test_production_problems_reported_together(tmp_path: Path) -> None:
    """A weak key and unencrypted storage come back as two problems in one error."""
    config = _load(tmp_path, jwt=b"short")
    problems = _check_problems(config, tmp_path / "empty-sys")
    assert [key for key, _ in problems] == ["secrets.jwt_signing_key", "data_dir"]


def test_development_skips_every_refusal(tmp_path: Path) -> None:
    """Development starts with the dev JWT key, an empty key or unencrypted storage."""
    config = _load(tmp_path, DEV, jwt=b"")
    unencrypted = tmp_path / "empty-sys"
    preflight.check(config, unencrypted)
    dev_key = dataclasses.replace(
        config,
        secrets=dataclasses.replace(
            config.secrets, jwt_signing_key=Secret("builtin", DEV_JWT_SIGNING_KEY)
        ),
    )
    preflight.check(dev_key, unencrypted)


# --- service.prepare: everything at once ---------------------------------------------


def _prepare_problems(config: Config, sysfs: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        prepare(config, sysfs)
    return caught.value.problems


def _ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_prepare_succeeds_for_a_good_config(tmp_path: Path) -> None:
    """A good production config yields TLS options and the checkpoint key."""
    config = _load(tmp_path)
    prepared = prepare(config, _encrypted_sysfs(tmp_path, config.data_dir))
    assert isinstance(prepared, Prepared)
    expected = CheckpointKey.from_pem(_audit_pem())
    assert prepared.checkpoint_key.key_id == expected.key_id
    assert prepared.tls_options.getContext() is not None


def test_prepare_succeeds_for_development(tmp_path: Path) -> None:
    """The development config passes every start-up check on any storage."""
    config = _load(tmp_path, DEV)
    assert isinstance(prepare(config, tmp_path / "empty-sys"), Prepared)


def test_prepare_reports_preflight_tls_and_audit_problems_together(tmp_path: Path) -> None:
    """Refusals, an unreadable certificate and a wrong-kind audit key come back in one error."""
    config = _load(tmp_path, jwt=b"too-short")
    (tmp_path / "tls" / "server.crt").write_bytes(b"this is not a PEM certificate\n")
    broken = dataclasses.replace(
        config,
        secrets=dataclasses.replace(
            config.secrets,
            audit_signing_key=Secret("file:secrets/audit-signing.key", _ec_key_pem()),
        ),
    )
    problems = _prepare_problems(broken, tmp_path / "empty-sys")
    assert [key for key, _ in problems] == [
        "secrets.jwt_signing_key",
        "data_dir",
        "tls.certificate",
        "secrets.audit_signing_key",
    ]
    messages = dict(problems)
    assert messages["tls.certificate"].startswith("not a valid PEM file")
    assert messages["secrets.audit_signing_key"] == "must be an Ed25519 private key"


def test_prepare_reports_audit_key_file_holding_an_ec_key(tmp_path: Path) -> None:
    """An audit key file with an EC key (loaded from disk) is refused as not Ed25519."""
    root = tmp_path / "inst"
    _load(root)
    _write_private(root / "secrets" / "audit-signing.key", _certs().ca_key)
    config = load(root / "telemancer.toml", {})
    problems = _prepare_problems(config, _encrypted_sysfs(tmp_path, config.data_dir))
    assert problems == [("secrets.audit_signing_key", "must be an Ed25519 private key")]


def test_prepare_reports_key_not_matching_certificate(tmp_path: Path) -> None:
    """A private key from another certificate is a ``tls.private_key`` problem, with the rest."""
    root = tmp_path / "inst"
    _load(root, jwt=b"short")
    _write_private(root / "tls" / "server.key", _other_certs().server_key)
    _write_private(root / "secrets" / "audit-signing.key", b"not a key at all\n")
    config = load(root / "telemancer.toml", {})
    problems = _prepare_problems(config, _encrypted_sysfs(tmp_path, config.data_dir))
    assert [key for key, _ in problems] == [
        "secrets.jwt_signing_key",
        "tls.private_key",
        "secrets.audit_signing_key",
    ]
    messages = dict(problems)
    assert messages["tls.private_key"].startswith("does not match tls.certificate")
    assert messages["secrets.audit_signing_key"].startswith("not a PEM private key")


def test_prepare_reports_bad_private_key_and_chain(tmp_path: Path) -> None:
    """A private key or chain file that is not PEM is reported at its own key."""
    root = tmp_path / "inst"
    _load(root)
    _write_private(root / "tls" / "server.key", b"garbage\n")
    (root / "tls" / "ca.crt").write_bytes(b"no certificates here\n")
    config = load(root / "telemancer.toml", {})
    problems = _prepare_problems(config, _encrypted_sysfs(tmp_path, config.data_dir))
    assert [key for key, _ in problems] == ["tls.private_key", "tls.chain"]
    assert all(message.startswith("not a valid PEM file") for _, message in problems)


def test_prepare_problems_never_hold_secret_values(tmp_path: Path) -> None:
    """The combined error names keys and reasons, never the secrets themselves."""
    config = _load(tmp_path, jwt=b"short-secret-jwt")
    (tmp_path / "tls" / "server.crt").write_bytes(b"not a cert")
    with pytest.raises(ConfigError) as caught:
        prepare(config, tmp_path / "empty-sys")
    text = str(caught.value)
    assert "short-secret-jwt" not in text
    for line in _certs().server_key.decode().splitlines():
        if not line.startswith("-----"):
            assert line not in text
