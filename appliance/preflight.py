"""Production refusals: checks that run after the config loads and before any
listener opens. Each failure is a ``(key, message)`` problem, reported
together with the others as a :class:`~appliance.config.ConfigError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.config import DEV_JWT_SIGNING_KEY, Config, ConfigError

MIN_JWT_KEY_BYTES = 32


def check(config: Config, sysfs: Path = Path("/sys")) -> None:
    """Raise :class:`ConfigError` if a production instance must not start."""
    if not config.production:
        return
    problems: list[tuple[str, str]] = []
    key = config.secrets.jwt_signing_key.value
    if key == DEV_JWT_SIGNING_KEY:
        problems.append(
            ("secrets.jwt_signing_key", "is the development default; refusing in production")
        )
    elif len(key) < MIN_JWT_KEY_BYTES:
        problems.append(
            (
                "secrets.jwt_signing_key",
                f"is {len(key)} bytes; production needs at least {MIN_JWT_KEY_BYTES}",
            )
        )
    if not config.allow_unencrypted_storage and not is_on_encrypted_device(config.data_dir, sysfs):
        problems.append(
            (
                "data_dir",
                f"{config.data_dir} is not on an encrypted (dm-crypt) block device;"
                " refusing in production (allow_unencrypted_storage = true overrides,"
                " and is audited at every start)",
            )
        )
    if problems:
        raise ConfigError(problems)


def is_on_encrypted_device(path: Path, sysfs: Path = Path("/sys")) -> bool:
    """Whether ``path``'s filesystem sits on dm-crypt, directly or further down.

    As systemd's ``blockdev_is_encrypted()``: the block device's
    ``dm/uuid`` starts with ``CRYPT-``, or one of its ``slaves/`` does (LVM
    on LUKS). A filesystem with no block device (tmpfs, overlay) is not
    encrypted.
    """
    dev = path.stat().st_dev
    device_dir = sysfs / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    return _device_encrypted(device_dir, depth=0)


def _device_encrypted(device_dir: Path, depth: int) -> bool:
    if depth > 8 or not device_dir.exists():
        return False
    try:
        uuid = (device_dir / "dm" / "uuid").read_text().strip()
    except OSError:
        uuid = ""
    if uuid.startswith("CRYPT-"):
        return True
    slaves = device_dir / "slaves"
    if not slaves.is_dir():
        return False
    return any(_device_encrypted(slave, depth + 1) for slave in sorted(slaves.iterdir()))
