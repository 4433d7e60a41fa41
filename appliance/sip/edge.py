"""The SIP edge: what a received request turns into, for the part of SIP that
phones meet first (REGISTER, OPTIONS). Sans-I/O: messages, flows and ``now``
in; :data:`Action` values out, for the transport and the service to carry out.

Order of work for a request, each step failing closed:

1. a blocked source address gets nothing (the transport also drops early);
2. RFC 3261 checks (:mod:`appliance.sip.validate`) answer malformed input;
3. on UDP, a retransmission is absorbed by its server transaction;
4. REGISTER: domain → Digest → brute-force rule → registrar.

Only a REGISTER whose credentials are wrong (wrong password or unknown user,
against a nonce we issued to that very address) counts against its source
address. Not counted: the first unauthenticated REGISTER, a stale nonce, a
nonce that is not ours, a replayed nonce count or malformed parameters: all of
those can be sent from a spoofed UDP source, and counting them would let
anyone get a victim blocked. The fifth failure is not answered: the address
is blocked from that moment on.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence

from appliance.sip import digest, limits
from appliance.sip.actions import (
    Action,
    BindingsChanged,
    BlockChanged,
    CallEnded,
    CloseConnections,
    Send,
)
from appliance.sip.blocklist import Blocklist
from appliance.sip.call_media import MediaPorts
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.errors import SipError
from appliance.sip.grammar import SipUri, parse_sip_uri
from appliance.sip.message import Message, parse_datagram
from appliance.sip.proxy import DEFAULT_MAX_CALL_SECONDS, Proxy
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.proxy_auth import BlockedError
from appliance.sip.quota import CallRefusedError, quota_refusal
from appliance.sip.registrar import Flow, Registrar
from appliance.sip.responses import response
from appliance.sip.transaction import (
    MAGIC_COOKIE,
    T1,
    InviteServerTransaction,
    ServerKey,
    State,
    Transmit,
    server_key,
)
from appliance.sip.validate import check_request, check_response

#: Methods this element handles.
ALLOWED_METHODS = "REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE, UPDATE, INFO"


#: How long a UDP non-INVITE request answered at once is remembered: Timer J.
ANSWERED_SECONDS = 64 * T1


class SipEdge:
    """Registrar and OPTIONS responder with Digest auth and the brute-force rule."""

    def __init__(
        self,
        directory: SipDirectory,
        verifier: digest.DigestVerifier,
        registrar: Registrar,
        blocklist: Blocklist,
        addresses: Sequence[ProxyAddress] = (ProxyAddress("tls", "127.0.0.1", 5061),),
        *,
        media: MediaPorts,
        media_address: str,
        max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
    ) -> None:
        self.verifier = verifier
        self.registrar = registrar
        self.blocklist = blocklist
        self.proxy = Proxy(
            directory,
            verifier,
            registrar,
            blocklist,
            addresses,
            media=media,
            media_address=media_address,
            max_call_seconds=max_call_seconds,
        )
        self.directory = directory
        self._transactions: dict[ServerKey, tuple[InviteServerTransaction, Flow]] = {}
        # UDP non-INVITE requests answered at once. Their server transaction
        # (RFC 3261 §17.2.2) goes straight to Completed, where all it does until
        # Timer J is send the same response again for each retransmission, so
        # the response is all that is kept. Every record lives ANSWERED_SECONDS,
        # so insertion order is expiry order and a deque replaces the heap.
        self._answered: dict[ServerKey, bytes] = {}
        self._answered_expiry: deque[tuple[float, ServerKey]] = deque()
        self.max_transactions = limits.MAX_SERVER_TRANSACTIONS
        self._timers: list[tuple[float, ServerKey]] = []
        self.counters: dict[str, int] = {}

    @property
    def directory(self) -> SipDirectory:
        """Tenants and extensions; swapped whole when the store changes."""
        return self._directory

    @directory.setter
    def directory(self, directory: SipDirectory) -> None:
        self._directory = directory
        self.proxy.directory = directory

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def connection_opened(self, flow: Flow) -> None:
        """A TLS/TCP connection is up: requests may be sent over it."""
        self.proxy.open_connections.add(flow.connection)

    def connection_certified(self, flow: Flow, fingerprint: str) -> None:
        """A TLS peer's certificate (SHA-256): carriers are identified by it."""
        self.proxy.certificates[flow.connection] = fingerprint

    def connection_closed(self, flow: Flow, now: float) -> list[Action]:
        """A TLS/TCP connection is gone: calls with a leg on it end."""
        return self.proxy.flow_closed(flow, now)

    def is_blocked(self, ip: str, now: float) -> bool:
        """Whether everything from ``ip`` is to be dropped."""
        return self.blocklist.is_blocked(ip, now)

    def datagram_received(self, data: bytes, flow: Flow, now: float) -> list[Action]:
        """Handle one UDP datagram."""
        if self.blocklist.is_blocked(flow.remote[0], now):
            self._count("dropped_blocked")
            return []
        try:
            message = parse_datagram(data)
        except SipError:
            self._count("dropped_malformed")
            return []
        return self.message_received(message, flow, now)

    def message_received(self, message: Message, flow: Flow, now: float) -> list[Action]:
        """Handle one complete message from any transport."""
        if self.blocklist.is_blocked(flow.remote[0], now):
            self._count("dropped_blocked")
            return []
        if not message.is_request:
            try:
                check_response(message)
            except SipError:
                self._count("dropped_malformed_responses")
                return []
            return self.proxy.response(message, flow, now)
        key = self._key(message, flow)
        if message.method == "ACK":
            if key is not None and key in self._transactions:
                return self._ack(key, now)
            try:
                check_request(message)
                return self.proxy.request(message, flow, now)
            except SipError:
                return []  # an ACK is never answered
        if key is not None:
            answered = self._answered.get(key)
            if answered is not None:
                self._count("retransmissions")
                return [Send(flow, answered)]
            if key in self._transactions:
                self._count("retransmissions")
                transaction, _ = self._transactions[key]
                return self._sends(flow, transaction.receive_request(message.wire, now))
        try:
            for_us = self._for_us(message)
            check_request(message, for_us=for_us)
            if message.method == "REGISTER":
                return self._register(message, flow, now, key)
            if message.method == "OPTIONS" and for_us:
                headers = (("Allow", ALLOWED_METHODS), ("Accept", "application/sdp"))
                return self._answer(message, flow, now, key, 200, "OK", headers)
            return self.proxy.request(message, flow, now)
        except BlockedError as blocked:
            self._count("blocks")
            return [BlockChanged(blocked.started), CloseConnections(blocked.started.ip)]
        except SipError as error:
            self._count(f"answered_{error.status}")
            answer = self._answer(
                message, flow, now, key, error.status, error.reason, error.headers
            )
            if isinstance(error, CallRefusedError):
                answer.append(CallEnded(error.record))
            refused = quota_refusal(error)
            return answer if refused is None else [*answer, refused]

    def _register(
        self, message: Message, flow: Flow, now: float, key: ServerKey | None
    ) -> list[Action]:
        tenant = self._tenant(message)
        to_uri = _sip_uri(message.to.uri)
        if to_uri is None or to_uri.host.lower() != tenant.domain or not to_uri.user:
            raise SipError(403, "Forbidden (To must be an extension of this domain)")
        ip = flow.remote[0]
        credentials = self._credentials(message, tenant.domain)
        if credentials is None:
            return self._challenge(message, flow, now, key, tenant, stale=False)
        extension = self.directory.extension(tenant.id, credentials.username or "")
        result = self.verifier.verify(
            credentials,
            "REGISTER",
            extension.ha1 if extension is not None else None,
            tenant.domain,
            now=now,
            source_ip=ip,
        )
        if result.outcome is digest.AuthOutcome.STALE:
            return self._challenge(message, flow, now, key, tenant, stale=True)
        if result.outcome is not digest.AuthOutcome.OK or extension is None:
            if result.reason is digest.FailureReason.CREDENTIALS:
                return self._auth_failed(message, flow, now, key, tenant)
            return self._challenge(message, flow, now, key, tenant, stale=False)
        self.blocklist.record_success(ip, now)
        if extension.number != to_uri.user:
            raise SipError(403, "Forbidden (credentials are for another extension)")
        return self._bind(message, flow, now, key, extension)

    def _tenant(self, message: Message) -> TenantEntry:
        uri = parse_sip_uri(message.uri)
        tenant = self.directory.tenant(uri.host)
        if tenant is None or not tenant.active:
            raise SipError(403, "Forbidden (domain not served here)")
        return tenant

    def _credentials(self, message: Message, realm: str) -> digest.Credentials | None:
        """The Authorization for ``realm``; None when there is none to check."""
        for field in message.all("authorization"):
            try:
                parsed = digest.parse_credentials(field.value)
            except digest.DigestParseError:
                raise SipError(400, "Bad Request (malformed Authorization)") from None
            if isinstance(parsed, digest.UnsupportedScheme):
                continue
            if parsed.params.get("realm") == realm:
                return parsed
        return None

    def _auth_failed(
        self, message: Message, flow: Flow, now: float, key: ServerKey | None, tenant: TenantEntry
    ) -> list[Action]:
        self._count("auth_failures")
        started = self.blocklist.record_failure(flow.remote[0], now)
        if started is None:
            return self._challenge(message, flow, now, key, tenant, stale=False)
        self._count("blocks")
        return [BlockChanged(started), CloseConnections(started.ip)]

    def _challenge(
        self,
        message: Message,
        flow: Flow,
        now: float,
        key: ServerKey | None,
        tenant: TenantEntry,
        *,
        stale: bool,
    ) -> list[Action]:
        values = self.verifier.challenge(
            tenant.domain, now=now, source_ip=flow.remote[0], stale=stale
        )
        headers = tuple(("WWW-Authenticate", value) for value in values)
        return self._answer(message, flow, now, key, 401, "Unauthorized", headers)

    def _bind(
        self,
        message: Message,
        flow: Flow,
        now: float,
        key: ServerKey | None,
        extension: ExtensionEntry,
    ) -> list[Action]:
        result = self.registrar.register(extension.tenant_id, extension.id, message, flow, now)
        self._count("registers_ok" if result.status == 200 else f"answered_{result.status}")
        actions = self._answer(
            message, flow, now, key, result.status, result.reason, result.headers
        )
        if result.saved or result.removed:
            actions.append(BindingsChanged(result.saved, result.removed))
        return actions

    def _for_us(self, message: Message) -> bool:
        """A Request-URI with no user naming a served domain or an address literal."""
        try:
            uri = parse_sip_uri(message.uri)
        except SipError:
            return False
        if uri.user:
            return False
        host = uri.host.lower()
        return self.directory.tenant(host) is not None or host[:1] == "[" or host[:1].isdigit()

    @staticmethod
    def _key(message: Message, flow: Flow) -> ServerKey | None:
        """The server transaction key; None on reliable flows (nothing is
        retransmitted there) and for requests without an RFC 3261 branch."""
        if flow.transport != "udp":
            return None
        try:
            top = message.vias[0]
        except (SipError, IndexError):
            return None
        branch = top.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            return None
        return server_key(branch, f"{top.host}:{top.port or 5060}", message.method)

    def _answer(
        self,
        message: Message,
        flow: Flow,
        now: float,
        key: ServerKey | None,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> list[Action]:
        if not message.all("via"):
            self._count("dropped_unanswerable")
            return []
        data = response(message, status, reason, headers, source=flow.remote)
        if key is None:
            return [Send(flow, data)]
        if message.method != "INVITE":
            self._remember_answer(key, data, now)
            return [Send(flow, data)]
        transaction = InviteServerTransaction(reliable=False, now=now)
        transaction.receive_request(message.wire, now)
        actions = transaction.send_response(status, data, now)
        self._track(key, transaction, flow)
        return self._sends(flow, actions)

    def _ack(self, key: ServerKey | None, now: float) -> list[Action]:
        entry = self._transactions.get(key) if key is not None else None
        if key is not None and entry is not None and isinstance(entry[0], InviteServerTransaction):
            entry[0].receive_ack(now)
            self._track(key, entry[0], entry[1])
        return []  # an ACK is never answered

    def _remember_answer(self, key: ServerKey, data: bytes, now: float) -> None:
        answered = self._answered
        if key not in answered:
            while answered and len(answered) + len(self._transactions) >= self.max_transactions:
                self._forget_answer()
                self._count("transactions_evicted")
            self._answered_expiry.append((now + ANSWERED_SECONDS, key))
        answered[key] = data

    def _forget_answer(self) -> None:
        _, key = self._answered_expiry.popleft()
        self._answered.pop(key, None)

    def _track(self, key: ServerKey, transaction: InviteServerTransaction, flow: Flow) -> None:
        deadline = transaction.next_timer()
        if transaction.state is State.TERMINATED or deadline is None:
            self._transactions.pop(key, None)
            return
        if key not in self._transactions:
            while len(self._answered) + len(self._transactions) >= self.max_transactions:
                if self._answered:
                    self._forget_answer()
                else:
                    del self._transactions[next(iter(self._transactions))]
                self._count("transactions_evicted")
        self._transactions[key] = (transaction, flow)
        heapq.heappush(self._timers, (deadline, key))

    @staticmethod
    def _sends(flow: Flow, actions: Sequence[object]) -> list[Action]:
        return [Send(flow, a.raw) for a in actions if isinstance(a, Transmit)]

    def next_timer(self) -> float | None:
        """The earliest deadline among transactions, bindings and blocks."""
        deadlines = [
            d
            for d in (
                self._timers[0][0] if self._timers else None,
                self._answered_expiry[0][0] if self._answered_expiry else None,
                self.registrar.next_timer(),
                self.blocklist.next_timer(),
                self.proxy.next_timer(),
            )
            if d is not None
        ]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> list[Action]:
        """Fire everything due: retransmissions, transaction ends, expiries."""
        actions: list[Action] = []
        expiry = self._answered_expiry
        while expiry and expiry[0][0] <= now:
            self._forget_answer()
        while self._timers and self._timers[0][0] <= now:
            _, key = heapq.heappop(self._timers)
            entry = self._transactions.get(key)
            if entry is None:
                continue
            transaction, flow = entry
            due = transaction.next_timer()
            if due is not None and due > now:
                heapq.heappush(self._timers, (due, key))
                continue
            actions += self._sends(flow, transaction.handle_timer(now))
            self._track(key, transaction, flow)
        expired = self.registrar.handle_timer(now)
        if expired:
            actions.append(BindingsChanged((), tuple(expired)))
        actions += [BlockChanged(lifted) for lifted in self.blocklist.handle_timer(now)]
        actions += self.proxy.handle_timer(now)
        return actions


def _sip_uri(uri: str) -> SipUri | None:
    try:
        return parse_sip_uri(uri)
    except SipError:
        return None
