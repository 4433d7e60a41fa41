"""Sealing secrets the appliance must read back in clear (carrier passwords).

A sealed value is AES-256-GCM over the UTF-8 plaintext with a fresh 96-bit
nonce, and *associated data* naming the row it belongs to, so a sealed value
copied into another row (another trunk, another tenant) does not open there.
The key is passed in by the caller (derived from a configured secret with
:func:`appliance.secrets.derive_key`); nothing here reads configuration.

Token format: ``v1:`` then URL-safe base64 (no padding) of nonce || ciphertext
|| 16-byte tag. The version prefix leaves room for another algorithm or key
later without guessing.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_PREFIX = "v1:"


class SealError(ValueError):
    """A token that does not open: wrong key, wrong associated data, or damaged.

    The message never holds the token or the plaintext.
    """


def seal(key: bytes, plaintext: str, associated: bytes) -> str:
    """Encrypt ``plaintext`` under ``key`` (32 bytes), bound to ``associated``."""
    aead = AESGCM(_check_key(key))
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + aead.encrypt(nonce, plaintext.encode("utf-8"), associated)
    return _PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def unseal(key: bytes, token: str, associated: bytes) -> str:
    """The plaintext sealed in ``token``; :class:`SealError` unless ``key`` and
    ``associated`` are the ones it was sealed with and it is intact."""
    aead = AESGCM(_check_key(key))
    if not token.startswith(_PREFIX):
        raise SealError("not a sealed value (unknown format)")
    body = token[len(_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise SealError("sealed value is damaged (not base64)") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise SealError("sealed value is damaged (too short)")
    try:
        plaintext = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
    except InvalidTag:
        raise SealError(
            "sealed value does not open: another key, another row, or damaged"
        ) from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise SealError("sealed value is not UTF-8 text") from None


def _check_key(key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise ValueError(f"sealing key must be {KEY_BYTES} bytes, got {len(key)}")
    return key
