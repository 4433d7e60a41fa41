"""Secrets given by reference, never inline in the config file.

A secret value in the config is one of:

- ``file:PATH``: the file's contents (relative paths are relative to the
  config file); in production the file must not be readable by group or other;
- ``env:NAME``: the environment variable ``NAME``;
- ``credential:NAME``: a systemd credential, ``$CREDENTIALS_DIRECTORY/NAME``.

One trailing newline is stripped, so ``echo key > file`` works. The resolved
value lives in a :class:`Secret` whose ``repr`` never shows it.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SecretError(ValueError):
    """A reference that cannot be resolved; the message never holds the value."""


@dataclass(frozen=True)
class Secret:
    """A resolved secret. ``reference`` is safe to print, ``value`` is not."""

    reference: str
    value: bytes = field(repr=False)
    path: Path | None = None

    def __str__(self) -> str:
        return f"<secret {self.reference}>"


def resolve_secret(
    reference: str, base_dir: Path, environ: Mapping[str, str], *, production: bool
) -> Secret:
    """Resolve one reference, raising :class:`SecretError` with a clear reason."""
    scheme, sep, target = reference.partition(":")
    if not sep or not target:
        raise SecretError("must be a reference: file:PATH, env:NAME or credential:NAME")
    if scheme == "file":
        path = base_dir / target
        return Secret(reference, _read_secret_file(path, production=production), path)
    if scheme == "env":
        if target not in environ:
            raise SecretError(f"environment variable {target} is not set")
        return Secret(reference, _strip_newline(environ[target].encode()))
    if scheme == "credential":
        directory = environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError("CREDENTIALS_DIRECTORY is not set (not started by systemd?)")
        if "/" in target or target in {".", ".."}:
            raise SecretError("credential name must not contain '/'")
        path = Path(directory) / target
        return Secret(reference, _read_secret_file(path, production=production), path)
    # Not echoed: a mistyped inline secret's text before the colon may be part of it.
    raise SecretError("unknown secret scheme (use file:PATH, env:NAME or credential:NAME)")


def _read_secret_file(path: Path, *, production: bool) -> bytes:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise SecretError(f"file not found: {path}") from None
    except OSError as e:
        raise SecretError(f"cannot read {path}: {e.strerror}") from None
    if production and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"{path} is accessible by group or other (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    return _strip_newline(data)


def _strip_newline(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def derive_key(secret: Secret, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from ``secret`` with HKDF-SHA256, so
    one configured secret can key several mechanisms without reuse."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return hkdf.derive(secret.value)
