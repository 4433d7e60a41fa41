"""Signed checkpoints of the audit chain.

A checkpoint is an Ed25519 signature over ``(seq, hash, ts)`` of one audit
record. Exported and kept elsewhere, it proves the chain once reached ``seq``
with that hash, so truncating the tail or rebuilding the chain from scratch
(which a hash chain alone cannot reveal to someone holding the file) is caught.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class CheckpointKeyError(ValueError):
    """The configured audit signing key is not an Ed25519 private key."""


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint, as stored and as exported (one JSON line)."""

    seq: int
    hash: str
    ts: str
    key_id: str
    signature: str

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return signed_message(self.seq, self.hash, self.ts)

    def to_json(self) -> str:
        """One line of ``telemancer audit checkpoints`` output."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Checkpoint:
        """Parse one exported line; raise ValueError if it is not a checkpoint."""
        data: Any = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("checkpoint line is not a JSON object")
        try:
            return cls(
                seq=int(data["seq"]),
                hash=str(data["hash"]),
                ts=str(data["ts"]),
                key_id=str(data["key_id"]),
                signature=str(data["signature"]),
            )
        except KeyError as e:
            raise ValueError(f"checkpoint line lacks {e.args[0]!r}") from None


def signed_message(seq: int, chain_hash: str, ts: str) -> bytes:
    """Canonical bytes for ``(seq, hash, ts)``."""
    return json.dumps(
        {"seq": seq, "hash": chain_hash, "ts": ts}, sort_keys=True, separators=(",", ":")
    ).encode()


class CheckpointKey:
    """The Ed25519 key that signs checkpoints, loaded from a PEM secret."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_pem(cls, pem: bytes) -> CheckpointKey:
        """Load a PKCS#8 PEM Ed25519 private key."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as e:
            raise CheckpointKeyError(f"not a PEM private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointKeyError("must be an Ed25519 private key")
        return cls(key)

    @staticmethod
    def generate_pem() -> bytes:
        """A new PKCS#8 PEM Ed25519 private key, for ``init``."""
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, seq: int, chain_hash: str, ts: str) -> Checkpoint:
        """Sign the chain's state at ``seq``."""
        signature = self._private_key.sign(signed_message(seq, chain_hash, ts))
        return Checkpoint(seq, chain_hash, ts, self.key_id, base64.b64encode(signature).decode())


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: SHA-256 of its raw bytes, 16 hex digits."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signature_valid(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """Whether ``checkpoint`` was signed by ``public_key``'s private key."""
    if checkpoint.key_id != key_id(public_key):
        return False
    try:
        public_key.verify(
            base64.b64decode(checkpoint.signature, validate=True), checkpoint.message()
        )
    except (InvalidSignature, ValueError):
        return False
    return True
