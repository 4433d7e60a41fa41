"""Errors that carry their wire response, as h11's protocol errors do.

A :class:`SipError` raised while handling a request says exactly what to
answer: the status, the reason phrase and any header the answer needs (for
instance ``Unsupported`` with 420). Where no answer can be sent (a broken
response, a message with no Via), the caller drops the message instead.
"""

from __future__ import annotations


class SipError(Exception):
    """A refused message; ``status``/``reason``/``headers`` are the answer."""

    def __init__(
        self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


def bad_request(why: str) -> SipError:
    """400 with a reason phrase naming the problem (never echoing secrets)."""
    return SipError(400, f"Bad Request ({why})")


def too_large(why: str) -> SipError:
    """513 Message Too Large."""
    return SipError(513, f"Message Too Large ({why})")
