"""Argon2id password hashing for people (sysadmins, tenant admins).

Parameters follow OWASP's Argon2id minimum (19 MiB, t=2, p=1): about 24 ms a
verify on this class of machine, against ~195 ms for argon2-cffi's defaults.
Callers on the reactor must hash in a bounded thread pool.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


class PasswordPolicyError(ValueError):
    """A password that must not be accepted; the message says why, never the password."""


def check_policy(password: str) -> None:
    """Refuse passwords that are too short, too long or contain control characters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise PasswordPolicyError("password must not contain control characters")


def hash_password(password: str) -> str:
    """Return the Argon2id PHC string for ``password``."""
    return HASHER.hash(password)


def verify_password(phc: str, password: str) -> bool:
    """Whether ``password`` matches ``phc``; a malformed hash never matches."""
    try:
        return HASHER.verify(phc, password)
    except (VerificationError, InvalidHashError):
        return False
