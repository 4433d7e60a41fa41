"""The registrar (RFC 3261 §10.3): bindings from an extension to its contacts.

Sans-I/O. Authentication, the domain check and the brute-force rule happen
before :meth:`Registrar.register` is called. Every binding remembers the
:class:`Flow` its REGISTER arrived on, because a phone behind NAT can only be
reached back over the TLS connection it opened. Changes are returned so the
caller can persist them; :meth:`Registrar.restore` loads them at start.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

from appliance.sip.errors import SipError, bad_request
from appliance.sip.message import Message

DEFAULT_MIN_EXPIRES = 60
DEFAULT_MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600
DEFAULT_MAX_CONTACTS = 10
#: RFC 3261 §10.2.1.1: a larger Expires is read as this much.
_EXPIRES_CEILING = 2**32 - 1


class Flow(NamedTuple):
    """Where a message came from: transport, source address, and the connection
    (a unique id for TLS/TCP; empty for UDP, where the address is the flow)."""

    transport: str
    remote: tuple[str, int]
    connection: str = ""

    def describe(self) -> str:
        """``udp:192.0.2.1:5060`` style, for logs and the registrations list."""
        host, port = self.remote
        host = f"[{host}]" if ":" in host else host
        return f"{self.transport}:{host}:{port}"


class Binding(NamedTuple):
    """One contact of one extension."""

    tenant_id: int
    extension_id: int
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    flow: Flow
    user_agent: str = ""


class RegisterResult(NamedTuple):
    """What to answer, and what changed: ``saved`` to store, ``removed`` to delete."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    saved: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()


class _Request(NamedTuple):
    contact: str
    expires: int


class Registrar:
    """Bindings for every extension, expiring on ``now``."""

    def __init__(
        self,
        *,
        min_expires: int = DEFAULT_MIN_EXPIRES,
        max_expires: int = DEFAULT_MAX_EXPIRES,
        default_expires: int = DEFAULT_EXPIRES,
        max_contacts: int = DEFAULT_MAX_CONTACTS,
    ) -> None:
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        self._bindings: dict[int, dict[str, Binding]] = {}
        self._expiry: list[tuple[float, int, str]] = []

    def register(
        self, tenant_id: int, extension_id: int, message: Message, flow: Flow, now: float
    ) -> RegisterResult:
        """Apply an authenticated REGISTER for ``extension_id``."""
        try:
            requested = self._requested(message)
        except SipError as error:
            return RegisterResult(error.status, error.reason, error.headers)
        held = self._bindings.get(extension_id, {})
        current = {
            contact: binding for contact, binding in held.items() if binding.expires_at > now
        }
        call_id, cseq = message.call_id, message.cseq.number
        user_agent = (message.first("user-agent") or "")[:200]
        saved: list[Binding] = []
        removed: list[Binding] = []
        if requested is None:  # Contact: * with Expires: 0
            removed = list(current.values())
            current = {}
        else:
            for item in requested:
                existing = current.get(item.contact)
                if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                    return RegisterResult(400, "Bad Request (CSeq out of order)", ())
                if item.expires == 0:
                    if existing is not None:
                        removed.append(existing)
                        del current[item.contact]
                    continue
                binding = Binding(
                    tenant_id,
                    extension_id,
                    item.contact,
                    now + item.expires,
                    call_id,
                    cseq,
                    flow,
                    user_agent,
                )
                current[item.contact] = binding
                saved.append(binding)
            if len(current) > self.max_contacts:
                return RegisterResult(
                    403, f"Forbidden (at most {self.max_contacts} contacts per extension)", ()
                )
        self._bindings[extension_id] = current
        for binding in saved:
            # Every held binding has a heap entry due no later than it expires, and
            # handle_timer re-queues a binding it finds refreshed to a later time.
            # So only a new binding, or one refreshed to expire sooner, needs an
            # entry: the heap stays at about one per binding however often phones
            # refresh.
            before = held.get(binding.contact)
            if before is None or binding.expires_at < before.expires_at:
                heapq.heappush(self._expiry, (binding.expires_at, extension_id, binding.contact))
        headers = tuple(
            ("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}")
            for b in current.values()
        )
        return RegisterResult(200, "OK", headers, tuple(saved), tuple(removed))

    def _requested(self, message: Message) -> list[_Request] | None:
        contacts = message.contacts
        header = message.first("expires")
        default = self.default_expires if header is None else _expires_value(header)
        if any(c.uri == "*" for c in contacts):
            if len(contacts) != 1 or header is None or default != 0:
                raise bad_request("Contact: * needs Expires: 0 and no other contact")
            return None
        out = []
        for contact in contacts:
            param = contact.params.get("expires")
            expires = default if param is None else _expires_value(param)
            if 0 < expires < self.min_expires:
                raise SipError(
                    423, "Interval Too Brief", (("Min-Expires", str(self.min_expires)),)
                )
            out.append(_Request(contact.uri, min(expires, self.max_expires)))
        return out

    def bindings(self, extension_id: int, now: float) -> list[Binding]:
        """The live bindings of one extension."""
        return [b for b in self._bindings.get(extension_id, {}).values() if b.expires_at > now]

    def all_bindings(self, now: float) -> list[Binding]:
        """Every live binding."""
        return [b for per in self._bindings.values() for b in per.values() if b.expires_at > now]

    def restore(self, bindings: list[Binding]) -> None:
        """Load persisted bindings at start. Their TLS/TCP connections are gone; the
        phone re-registers over a new one, which replaces the flow."""
        for binding in bindings:
            self._bindings.setdefault(binding.extension_id, {})[binding.contact] = binding
            entry = (binding.expires_at, binding.extension_id, binding.contact)
            heapq.heappush(self._expiry, entry)

    def next_timer(self) -> float | None:
        """When the next binding expires."""
        return self._expiry[0][0] if self._expiry else None

    def handle_timer(self, now: float) -> list[Binding]:
        """Drop expired bindings and return them (for the store to delete)."""
        expired = []
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, extension_id, contact = heapq.heappop(self._expiry)
            per = self._bindings.get(extension_id, {})
            binding = per.get(contact)
            if binding is None:
                continue
            if binding.expires_at > expires_at:  # refreshed since it was queued
                heapq.heappush(self._expiry, (binding.expires_at, extension_id, contact))
                continue
            del per[contact]
            expired.append(binding)
            if not per:
                del self._bindings[extension_id]
        return expired


def _expires_value(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise bad_request("malformed Expires")
    return min(int(text), _EXPIRES_CEILING)
