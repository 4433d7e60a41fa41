"""The stateful proxy (RFC 3261 §16) for calls between one tenant's phones.

Sans-I/O like the edge, which hands it every request that is not for the
registrar and every response. Order of work for an initial INVITE, each
step failing closed with the SIP status the edge answers:

1. the caller authenticates with Proxy-Authorization (407 challenge; the
   same Digest rules and brute-force rule as REGISTER);
2. the Request-URI must name an extension of the caller's own tenant: no
   other domain, no ``maddr``, no pre-loaded Route but our own (403/404);
3. the extension must have a reachable registration (480);
4. the tenant's concurrent-call quota is reserved (503, before anything rings);
5. the INVITE is forked to every contact, each over the flow it registered on.

In-dialog requests follow the Record-Route we inserted: they are matched to
their call by Call-ID and tags and sent over the other leg's flow.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from appliance.sip import digest
from appliance.sip.actions import Action, CallEnded, LiveCall, QuotaRefused, Send, TrunkHealth
from appliance.sip.blocklist import Blocklist, BlockStarted
from appliance.sip.calls import Admission, Call, Leg
from appliance.sip.cdr import Direction
from appliance.sip.dialplan import TrunkEntry
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.errors import SipError
from appliance.sip.forwarding import (
    ack_for_failure,
    cancel_for,
    strip_for_forwarding,
    synthetic_timeout,
    with_credentials,
    with_cseq,
    without_top_via,
)
from appliance.sip.grammar import SipUri, parse_name_addr, parse_sip_uri, split_commas
from appliance.sip.message import Message, Rewrite, header_name, parse_datagram
from appliance.sip.registrar import Flow, Registrar
from appliance.sip.responses import response
from appliance.sip.routing import Internal, Outbound, from_carrier, from_phone
from appliance.sip.transaction import (
    MAGIC_COOKIE,
    DeliverResponse,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    Timeout,
    Transmit,
)

#: How long a call may ring before its branches are cancelled (Timer C, §16.6).
RING_TIMEOUT_SECONDS = 180.0
#: How long an ended call is remembered, for late in-dialog requests (64*T1).
REAP_AFTER_SECONDS = 32.0
#: A call's longest life when its phones use no session timers: then it is
#: ended with BYE on both legs, so a lost BYE cannot hold a quota slot forever.
DEFAULT_MAX_CALL_SECONDS = 4 * 3600.0
#: Connection ids of the flows toward carriers (opened by the service on demand).
CARRIER_PREFIX = "trunk-"
#: Methods forwarded inside a dialog.
IN_DIALOG_METHODS = frozenset(
    {"ACK", "BYE", "INVITE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER", "MESSAGE", "OPTIONS"}
)


class BlockedError(Exception):
    """The request's credentials tripped the brute-force rule: answer nothing."""

    def __init__(self, started: BlockStarted) -> None:
        super().__init__(started.ip)
        self.started = started


@dataclass(frozen=True)
class ProxyAddress:
    """Where phones reach the proxy on one transport (for Via and Record-Route)."""

    transport: str
    host: str
    port: int

    def uri(self) -> str:
        """Our Record-Route URI on this transport (RFC 3261 §16.6 step 4, loose routing)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.port};transport={self.transport};lr"


@dataclass
class _Branch:
    """One fork of an INVITE (or one forwarded non-INVITE request)."""

    id: str
    flow: Flow
    request: bytes
    transaction: InviteClientTransaction | NonInviteClientTransaction
    call: Call | None
    upstream: _Upstream | None
    final: int = 0
    provisional: bool = False
    cancelled: bool = False
    #: Set on a branch toward a carrier: whose credentials answer its challenge.
    trunk: TrunkEntry | None = None
    authenticated: bool = False
    #: Set on an OPTIONS ping: which trunk, and when it was sent.
    ping: tuple[int, float] | None = None


@dataclass
class _Upstream:
    """The request as it reached us: where answers go back to."""

    message: Message
    flow: Flow
    server: InviteServerTransaction | NonInviteServerTransaction
    key: tuple[str, str, str]
    branches: list[str] = field(default_factory=list)
    best: tuple[int, bytes] | None = None
    answered: bool = False
    challenges: list[tuple[str, str]] = field(default_factory=list)


class Proxy:
    """Routes calls between registered phones of one tenant."""

    def __init__(
        self,
        directory: SipDirectory,
        verifier: digest.DigestVerifier,
        registrar: Registrar,
        blocklist: Blocklist,
        addresses: Sequence[ProxyAddress],
        *,
        max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
    ) -> None:
        self.directory = directory
        self.verifier = verifier
        self.registrar = registrar
        self.blocklist = blocklist
        self.addresses = {a.transport: a for a in addresses}
        self.max_call_seconds = max_call_seconds
        self.admission = Admission()
        self.calls: dict[str, Call] = {}
        self.open_connections: set[str] = set()
        #: Where each trunk's carrier is reached, resolved by the service (RFC 3263).
        self.trunk_flows: dict[int, list[Flow]] = {}
        #: Trunks whose carrier stopped answering our OPTIONS pings.
        self.trunk_down: set[int] = set()
        #: Client-certificate fingerprints by connection, for identifying carriers.
        self.certificates: dict[str, str] = {}
        self._branches: dict[str, _Branch] = {}
        self._upstream: dict[tuple[str, str, str], _Upstream] = {}
        self._ids = itertools.count(1)
        self._salt = secrets.token_hex(4)
        # Deadlines, soonest first: (when, sequence, kind, key). Entries go stale
        # when their object moves on; they are checked when they come up.
        self._heap: list[tuple[float, int, str, object]] = []
        self._touched: set[tuple[str, object]] = set()

    # -- requests -----------------------------------------------------------

    def request(self, message: Message, flow: Flow, now: float) -> list[Action]:
        """Handle a request the edge does not answer itself; raise SipError to answer."""
        try:
            return self._request(message, flow, now)
        finally:
            self._schedule_touched()

    def _request(self, message: Message, flow: Flow, now: float) -> list[Action]:
        key = self._server_key(message)
        if message.method == "ACK":
            invite = self._upstream.get(self._server_key(message, method="INVITE"))
            if invite is not None and isinstance(invite.server, InviteServerTransaction):
                self._touched.add(("upstream", invite.key))
                return _sends(invite.flow, invite.server.receive_ack(now))
        if key in self._upstream:
            upstream = self._upstream[key]
            self._touched.add(("upstream", key))
            return _sends(upstream.flow, upstream.server.receive_request(message.wire, now))
        if message.method == "CANCEL":
            return self._cancel(message, flow, now)
        if self._looped(message):
            raise SipError(482, "Loop Detected")
        if message.to.tag is not None:
            return self._in_dialog(message, flow, now)
        if message.method != "INVITE":
            raise SipError(405, "Method Not Allowed", (("Allow", "INVITE, ACK, CANCEL, BYE"),))
        return self._invite(message, flow, now)

    def _looped(self, message: Message) -> bool:
        """§16.3 step 4: a request carrying a Via we put there has come back to us.
        (We never forward to ourselves, so there are no legitimate spirals.)"""
        prefix = f"z9hg4bk-tm{self._salt}-"
        return any((via.branch or "").lower().startswith(prefix) for via in message.vias)

    def _invite(self, message: Message, flow: Flow, now: float) -> list[Action]:
        carrier = self.directory.carrier_for(
            flow.remote[0], self.certificates.get(flow.connection)
        )
        uri = parse_sip_uri(message.uri)
        direction: Direction
        trunk_name: str | None
        if carrier is not None:
            self._check_request_uri(message, uri)
            tenant = self._tenant_of(carrier.tenant_id)
            decision: Internal | Outbound = from_carrier(self.directory, carrier, uri.user)
            from_uri = _sip(message.from_.uri)
            caller_aor = f"{from_uri.user}@{from_uri.host}" if from_uri else message.from_.uri
            direction, trunk_name = "inbound", carrier.name
        else:
            tenant, caller = self._authenticate(message, flow, now)
            self._check_request_uri(message, uri)
            if uri.host.lower() != tenant.domain:
                if self.directory.tenant(uri.host) is not None:
                    raise SipError(403, "Forbidden (calls between tenants are not allowed)")
                raise SipError(403, "Forbidden (no route to that domain)")
            decision = from_phone(self.directory, tenant, uri.user, self._usable_trunks())
            caller_aor = f"{caller.number}@{tenant.domain}"
            direction = "internal" if isinstance(decision, Internal) else "outbound"
            trunk_name = decision.trunk.name if isinstance(decision, Outbound) else None
        if isinstance(decision, Internal):
            callee_aor = f"{decision.extension.number}@{tenant.domain}"
            targets = [
                b
                for b in self.registrar.bindings(decision.extension.id, now)
                if self._reachable(b.flow)
            ]
            if not targets:
                raise SipError(480, "Temporarily Unavailable")
        else:
            callee_aor = decision.e164
            carrier_flows = self.trunk_flows.get(decision.trunk.id, [])
            if not carrier_flows:
                raise SipError(503, "Service Unavailable (carrier not reachable)")
        call_id = message.call_id
        if not self.admission.reserve(tenant.id, tenant.max_concurrent_calls):
            limit = tenant.max_concurrent_calls
            raise _QuotaError(tenant.id, call_id, caller_aor, callee_aor, limit, direction)
        contact = message.contacts[0].uri if message.contacts else ""
        call = Call(
            tenant_id=tenant.id,
            call_id=call_id,
            caller=caller_aor,
            callee=callee_aor,
            direction=direction,
            setup_at=now,
            caller_leg=Leg(flow, message.from_.tag, contact, message.cseq.number),
            deadline=now + self.max_call_seconds,
            trunk=trunk_name,
        )
        self.calls[call_id] = call
        self._push(call.setup_at + RING_TIMEOUT_SECONDS, "ring", call_id)
        self._push(call.deadline, "deadline", call_id)
        server = InviteServerTransaction(reliable=flow.transport != "udp", now=now)
        key = self._server_key(message)
        upstream = _Upstream(message, flow, server, key)
        self._upstream[key] = upstream
        self._touched.add(("upstream", key))
        actions: list[Action] = [_live(call)]
        server.receive_request(message.wire, now)
        trying = response(message, 100, "Trying", source=flow.remote)
        actions += _sends(flow, server.send_response(100, trying, now))
        if isinstance(decision, Internal):
            for binding in targets:
                actions += self._fork(call, upstream, binding.flow, binding.contact, now)
        else:
            trunk = decision.trunk
            host = trunk.tls_domain if trunk.transport == "tls" else trunk.host
            identity = (
                trunk.caller_id if trunk.caller_id_mode == "fixed" else caller_aor.split("@")[0]
            )
            actions += self._fork(
                call,
                upstream,
                carrier_flows[0],
                f"sip:{decision.number}@{host}",
                now,
                trunk=trunk,
                asserted=f"<sip:{identity}@{tenant.domain}>",
            )
        return actions

    def _tenant_of(self, tenant_id: int) -> TenantEntry:
        tenant = self.directory.tenant_by_id(tenant_id)
        if tenant is None or not tenant.active:
            raise SipError(403, "Forbidden (tenant not active)")
        return tenant

    def _check_request_uri(self, message: Message, uri: SipUri) -> None:
        """No ``maddr``, and a pre-loaded Route may only name us: no open relay."""
        if uri.params.has("maddr"):
            raise SipError(403, "Forbidden (maddr is not honoured)")
        for route in message.routes:
            route_uri = _sip(route.uri)
            if route_uri is None or not self._is_us(route_uri):
                raise SipError(403, "Forbidden (Route to elsewhere)")

    def _usable_trunks(self) -> set[str] | None:
        """Trunk names whose carrier answers our pings (None: no ping yet, all usable)."""
        if not self.trunk_down:
            return None
        return {t.name for t in self.directory.trunks() if t.id not in self.trunk_down}

    def _authenticate(
        self, message: Message, flow: Flow, now: float
    ) -> tuple[TenantEntry, ExtensionEntry]:
        """The caller's tenant and extension, from Proxy-Authorization (407 if absent)."""
        from_uri = _sip(message.from_.uri)
        tenant = self.directory.tenant(from_uri.host) if from_uri else None
        if from_uri is None or tenant is None or not tenant.active or not from_uri.user:
            raise SipError(403, "Forbidden (From is not an extension served here)")
        credentials = None
        for field_ in message.all("proxy-authorization"):
            try:
                parsed = digest.parse_credentials(field_.value)
            except digest.DigestParseError:
                raise SipError(400, "Bad Request (malformed Proxy-Authorization)") from None
            if (
                isinstance(parsed, digest.Credentials)
                and parsed.params.get("realm") == tenant.domain
            ):
                credentials = parsed
        if credentials is None:
            raise self._challenge(tenant, flow, now, stale=False)
        extension = self.directory.extension(tenant.id, credentials.username or "")
        result = self.verifier.verify(
            credentials,
            message.method,
            extension.ha1 if extension else None,
            tenant.domain,
            now=now,
            source_ip=flow.remote[0],
        )
        if result.outcome is digest.AuthOutcome.STALE:
            raise self._challenge(tenant, flow, now, stale=True)
        if result.outcome is not digest.AuthOutcome.OK or extension is None:
            if result.reason is digest.FailureReason.CREDENTIALS:
                started = self.blocklist.record_failure(flow.remote[0], now)
                if started is not None:
                    raise BlockedError(started)
            raise self._challenge(tenant, flow, now, stale=False)
        self.blocklist.record_success(flow.remote[0], now)
        if extension.number != from_uri.user:
            raise SipError(403, "Forbidden (credentials are for another extension)")
        return tenant, extension

    def _challenge(self, tenant: TenantEntry, flow: Flow, now: float, *, stale: bool) -> SipError:
        values = self.verifier.challenge(
            tenant.domain, now=now, source_ip=flow.remote[0], stale=stale
        )
        headers = tuple(("Proxy-Authenticate", value) for value in values)
        return SipError(407, "Proxy Authentication Required", headers)

    def _reachable(self, flow: Flow) -> bool:
        """UDP flows always; a TLS/TCP flow while its connection is up, and a
        carrier's, which the service opens on first use."""
        return (
            flow.transport == "udp"
            or flow.connection in self.open_connections
            or flow.connection.startswith(CARRIER_PREFIX)
        )

    def _is_us(self, uri: SipUri) -> bool:
        return any(
            uri.host.strip("[]").lower() == a.host.lower() and (uri.port or 5060) == a.port
            for a in self.addresses.values()
        ) or (uri.user is None and self.directory.tenant(uri.host) is not None)

    # -- forwarding ---------------------------------------------------------

    def _branch_id(self) -> str:
        return f"z9hG4bK-tm{self._salt}-{next(self._ids)}"

    def _via(self, flow: Flow, branch: str) -> str:
        address = self.addresses.get(flow.transport) or next(iter(self.addresses.values()))
        host = f"[{address.host}]" if ":" in address.host else address.host
        return f"SIP/2.0/{flow.transport.upper()} {host}:{address.port};branch={branch}"

    def _record_routes(self, inbound: Flow, outbound: Flow) -> list[str]:
        """Our Record-Route entries, top first: two when the legs differ in
        transport (RFC 5658), so each side sees the interface it talks to."""
        near = self.addresses.get(outbound.transport)
        far = self.addresses.get(inbound.transport)
        uris = [a.uri() for a in (near, far) if a is not None]
        return [f"<{uri}>" for uri in dict.fromkeys(uris)] or [
            f"<{next(iter(self.addresses.values())).uri()}>"
        ]

    def _fork(
        self,
        call: Call,
        upstream: _Upstream,
        target: Flow,
        request_uri: str,
        now: float,
        *,
        trunk: TrunkEntry | None = None,
        asserted: str | None = None,
    ) -> list[Action]:
        """Send one branch of the INVITE to ``request_uri`` over ``target``."""
        branch_id = self._branch_id()
        message = upstream.message
        rewrite = Rewrite(message).replace_start_line(f"INVITE {request_uri} SIP/2.0")
        strip_for_forwarding(message, rewrite)
        if asserted is not None:
            for field_ in message.all("p-asserted-identity") + message.all("remote-party-id"):
                rewrite.remove(field_)
            rewrite.insert_first("P-Asserted-Identity", asserted)
        # Edits at one offset keep their order: the first inserted stays on top.
        for rr in self._record_routes(upstream.flow, target):
            rewrite.insert_first("Record-Route", rr)
        rewrite.insert_first("Via", self._via(target, branch_id))
        return self._start_branch(call, upstream, target, rewrite.to_bytes(), now, trunk)

    def _start_branch(
        self,
        call: Call,
        upstream: _Upstream,
        target: Flow,
        data: bytes,
        now: float,
        trunk: TrunkEntry | None,
        *,
        authenticated: bool = False,
    ) -> list[Action]:
        request = parse_datagram(data)
        transaction = InviteClientTransaction(
            data,
            reliable=target.transport != "udp",
            now=now,
            ack_for=lambda raw: ack_for_failure(request, raw),
        )
        branch_id = request.vias[0].branch or ""
        branch = _Branch(branch_id, target, data, transaction, call, upstream)
        branch.trunk, branch.authenticated = trunk, authenticated
        self._branches[branch_id] = branch
        self._touched.add(("branch", branch_id))
        upstream.branches.append(branch_id)
        call.branches.append(branch_id)
        return _sends(target, transaction.start(now))

    def _answer_carrier(self, branch: _Branch, challenge: Message, now: float) -> list[Action]:
        """Answer a carrier's 401/407 with the trunk's credentials, once, on a new
        branch that replaces the challenged one."""
        trunk, upstream, call = branch.trunk, branch.upstream, branch.call
        assert trunk is not None and upstream is not None and call is not None
        credentials = trunk.credentials
        authorized = (
            with_credentials(
                parse_datagram(branch.request), challenge, credentials, self._branch_id()
            )
            if credentials
            else None
        )
        if authorized is None:
            return []
        upstream.branches.remove(branch.id)
        call.callee_cseq_offset += 1
        return self._start_branch(
            call, upstream, branch.flow, authorized, now, trunk, authenticated=True
        )

    def _in_dialog(self, message: Message, flow: Flow, now: float) -> list[Action]:
        call = self.calls.get(message.call_id)
        if call is None or call.callee_leg is None:
            if message.method == "ACK":
                return []
            raise SipError(481, "Call/Transaction Does Not Exist")
        from_tag = message.from_.tag
        if from_tag == call.caller_leg.tag and flow.remote[0] == call.caller_leg.flow.remote[0]:
            source, target = call.caller_leg, call.callee_leg
        elif from_tag == call.callee_leg.tag and flow.remote[0] == call.callee_leg.flow.remote[0]:
            source, target = call.callee_leg, call.caller_leg
        else:
            raise SipError(481, "Call/Transaction Does Not Exist")
        if not self._reachable(target.flow):
            raise SipError(480, "Temporarily Unavailable")
        source.cseq = max(source.cseq, message.cseq.number)
        rewrite = Rewrite(message)
        if source is call.caller_leg:
            with_cseq(message, rewrite, call.callee_cseq_offset)
        self._pop_our_routes(message, rewrite)
        strip_for_forwarding(message, rewrite, keep_routes=True)
        branch_id = self._branch_id()
        rewrite.insert_first("Via", self._via(target.flow, branch_id))
        data = rewrite.to_bytes()
        actions: list[Action] = []
        if message.method == "BYE":
            hangup = "caller" if source is call.caller_leg else "callee"
            actions += self._ended(call, now, status=200, hangup_by=hangup)
        if message.method == "ACK":
            return [*actions, Send(target.flow, data)]
        reliable_down = target.flow.transport != "udp"
        reliable_up = flow.transport != "udp"
        transaction: InviteClientTransaction | NonInviteClientTransaction
        server: InviteServerTransaction | NonInviteServerTransaction
        if message.method == "INVITE":  # a re-INVITE: hold, codec change, refresh
            forwarded = parse_datagram(data)
            transaction = InviteClientTransaction(
                data,
                reliable=reliable_down,
                now=now,
                ack_for=lambda raw: ack_for_failure(forwarded, raw),
            )
            server = InviteServerTransaction(reliable=reliable_up, now=now)
        else:
            transaction = NonInviteClientTransaction(data, reliable=reliable_down, now=now)
            server = NonInviteServerTransaction(reliable=reliable_up, now=now)
        server.receive_request(message.wire, now)
        key = self._server_key(message)
        upstream = _Upstream(message, flow, server, key, [branch_id])
        self._upstream[key] = upstream
        self._branches[branch_id] = _Branch(
            branch_id, target.flow, data, transaction, None, upstream
        )
        self._touched.update({("upstream", key), ("branch", branch_id)})
        return [*actions, *_sends(target.flow, transaction.start(now))]

    def _pop_our_routes(self, message: Message, rewrite: Rewrite) -> None:
        """Loose routing (§16.4): remove our own entries from the top of the route set,
        keeping any that name other hops."""
        for route_field in message.all("route"):
            values = split_commas(route_field.value)
            kept = list(values)
            while kept and self._names_us(kept[0]):
                kept.pop(0)
            if not kept:
                rewrite.remove(route_field)
            elif len(kept) != len(values):
                rewrite.replace(route_field, ", ".join(kept))
            if kept:
                return

    def _names_us(self, route: str) -> bool:
        try:
            uri = _sip(parse_name_addr(route).uri)
        except SipError:
            return False
        return uri is not None and self._is_us(uri)

    def _cancel(self, message: Message, flow: Flow, now: float) -> list[Action]:
        invite_key = self._server_key(message, method="INVITE")
        upstream = self._upstream.get(invite_key)
        if upstream is None:
            raise SipError(481, "Call/Transaction Does Not Exist")
        actions: list[Action] = [Send(flow, response(message, 200, "OK", source=flow.remote))]
        call = self.calls.get(message.call_id)
        if call is not None and call.state != "ended":
            call.cancelled_by = "caller"
        return actions + self._cancel_branches(upstream, now)

    def _cancel_branches(self, upstream: _Upstream, now: float, skip: str = "") -> list[Action]:
        actions: list[Action] = []
        for branch_id in upstream.branches:
            branch = self._branches.get(branch_id)
            if branch is None or branch.id == skip or branch.final or branch.cancelled:
                continue
            branch.cancelled = True
            cancel = cancel_for(parse_datagram(branch.request))
            transaction = NonInviteClientTransaction(
                cancel, reliable=branch.flow.transport != "udp", now=now
            )
            cancel_id = f"{branch.id}-cancel"
            self._touched.add(("branch", cancel_id))
            self._branches[cancel_id] = _Branch(
                cancel_id, branch.flow, cancel, transaction, None, None
            )
            actions += _sends(branch.flow, transaction.start(now))
        return actions

    def refused_call(
        self, message: Message, flow: Flow, refused: QuotaRefused, now: float
    ) -> list[Action]:
        """The record of a call refused at admission (it never rang)."""
        call = Call(
            tenant_id=refused.tenant_id,
            call_id=refused.call_id,
            caller=refused.caller,
            callee=refused.callee,
            direction="internal",
            setup_at=now,
            caller_leg=Leg(flow, message.from_.tag, "", message.cseq.number),
            deadline=now,
        )
        record = call.record(now, status=503, hangup_by=None, disposition="rejected-quota")
        return [CallEnded(record)]

    # -- responses ----------------------------------------------------------

    def response(self, message: Message, flow: Flow, now: float) -> list[Action]:
        """A response from downstream: matched to its branch by our Via branch and
        the CSeq method (a CANCEL's answer shares its INVITE's branch)."""
        try:
            branch_id = message.vias[0].branch or ""
            method = message.cseq.method
        except (SipError, IndexError):
            return []
        if method == "CANCEL":
            branch_id = f"{branch_id}-cancel"
        branch = self._branches.get(branch_id)
        if branch is None or _method(branch.request) != method:
            return []
        if branch.ping is not None:
            return self._pinged(branch, message.status, now)
        try:
            transaction_actions = branch.transaction.receive_response(
                message.status, message.wire, now
            )
            actions = _sends(branch.flow, transaction_actions)
            for action in transaction_actions:
                if isinstance(action, DeliverResponse):
                    actions += self._deliver(branch, message, now)
            self._touched.add(("branch", branch.id))
            return actions
        finally:
            self._schedule_touched()

    def ping(self, trunk: TrunkEntry, flow: Flow, now: float) -> list[Action]:
        """Send an OPTIONS to a trunk's carrier; its answer (or Timer F) becomes a
        :class:`TrunkHealth`, and a carrier that stops answering is routed around."""
        try:
            branch_id = self._branch_id()
            host = trunk.tls_domain if trunk.transport == "tls" else trunk.host
            ours = self.addresses.get(flow.transport) or next(iter(self.addresses.values()))
            lines = [
                f"OPTIONS sip:{host} SIP/2.0",
                f"Via: {self._via(flow, branch_id)}",
                "Max-Forwards: 70",
                f"From: <sip:{ours.host}>;tag={branch_id[-12:]}",
                f"To: <sip:{host}>",
                f"Call-ID: {branch_id}@{ours.host}",
                "CSeq: 1 OPTIONS",
                "Content-Length: 0",
            ]
            data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            transaction = NonInviteClientTransaction(
                data, reliable=flow.transport != "udp", now=now
            )
            branch = _Branch(branch_id, flow, data, transaction, None, None)
            branch.ping = (trunk.id, now)
            self._branches[branch_id] = branch
            self._touched.add(("branch", branch_id))
            return _sends(flow, transaction.start(now))
        finally:
            self._schedule_touched()

    def _pinged(self, branch: _Branch, status: int | None, now: float) -> list[Action]:
        assert branch.ping is not None
        if status is not None and status < 200:
            return []
        trunk_id, sent = branch.ping
        branch.ping = None
        del self._branches[branch.id]
        up = status is not None and status < 500
        if up:
            self.trunk_down.discard(trunk_id)
        else:
            self.trunk_down.add(trunk_id)
        rtt = now - sent if status is not None else None
        return [TrunkHealth(trunk_id, now, up, status, rtt)]

    def _deliver(self, branch: _Branch, message: Message, now: float) -> list[Action]:
        upstream = branch.upstream
        if upstream is None:  # our own CANCEL or BYE: nothing to pass on
            return []
        self._touched.add(("upstream", upstream.key))
        status = message.status
        upward = without_top_via(message, cseq=upstream.message.first("cseq"))
        call = branch.call
        actions: list[Action] = []
        if status < 200:
            branch.provisional = True
            if call is not None and status >= 180 and call.ringing_at is None:
                call.ringing_at = now
                call.state = "ringing"
                actions.append(_live(call))
            if status == 100:
                return actions
            return actions + _sends(
                upstream.flow, upstream.server.send_response(status, upward, now)
            )
        if (
            status in (401, 407)
            and branch.trunk is not None
            and not branch.authenticated
            and (answered := self._answer_carrier(branch, message, now))
        ):
            branch.final = status
            return actions + answered
        branch.final = status
        if status < 300:
            if call is not None and not upstream.answered:
                upstream.answered = True
                contact = message.contacts[0].uri if message.contacts else ""
                call.callee_leg = Leg(branch.flow, message.to.tag, contact, 0)
                call.answered_at = now
                call.state = "answered"
                actions.append(_live(call))
                actions += self._cancel_branches(upstream, now, skip=branch.id)
            return actions + _sends(
                upstream.flow, upstream.server.send_response(status, upward, now)
            )
        if status in (401, 407):
            # §16.7 step 7: every branch's challenge goes up with the best answer.
            name = "www-authenticate" if status == 401 else "proxy-authenticate"
            upstream.challenges += [(name, f.value) for f in message.all(name)]
        if upstream.best is None or _better(status, upstream.best[0]):
            upstream.best = (status, upward)
        if status >= 600:
            actions += self._cancel_branches(upstream, now, skip=branch.id)
        pending = [
            b for b in (self._branches.get(i) for i in upstream.branches) if b and not b.final
        ]
        if (pending and status < 600) or upstream.answered:
            return actions
        best_status, best = upstream.best
        if best_status in (401, 407) and upstream.challenges:
            best = _with_challenges(best, upstream.challenges)
        if call is not None:
            actions += self._ended(call, now, status=best_status, hangup_by=call.cancelled_by)
        return actions + _sends(
            upstream.flow, upstream.server.send_response(best_status, best, now)
        )

    def _ended(
        self, call: Call, now: float, *, status: int, hangup_by: str | None
    ) -> list[Action]:
        record = call.end(
            now,
            self.admission,
            status=status,
            hangup_by=hangup_by,  # type: ignore[arg-type]
        )
        if record is None:
            return []
        self._push(now + REAP_AFTER_SECONDS, "reap", call.call_id)
        return [CallEnded(record), _live(call)]

    # -- connections, timers -----------------------------------------------

    def flow_closed(self, flow: Flow, now: float) -> list[Action]:
        """A TLS/TCP connection closed: calls with a leg on it end now."""
        try:
            return self._flow_closed(flow, now)
        finally:
            self._schedule_touched()

    def _flow_closed(self, flow: Flow, now: float) -> list[Action]:
        self.open_connections.discard(flow.connection)
        self.certificates.pop(flow.connection, None)
        actions: list[Action] = []
        for branch in list(self._branches.values()):
            if branch.flow == flow and not branch.final and branch.upstream is not None:
                # A fork whose connection is gone (or never came up) fails now (§16.7).
                self._touched.add(("branch", branch.id))
                branch.transaction.transport_error(now)
                failed = synthetic_timeout(branch.upstream.message, 503, "Service Unavailable")
                actions += self._deliver(branch, failed, now)
        for call in list(self.calls.values()):
            legs = [call.caller_leg, call.callee_leg]
            if call.state != "ended" and any(leg and leg.flow == flow for leg in legs):
                actions += self._hang_up(call, now, hangup_by="system")
        return actions

    def _hang_up(self, call: Call, now: float, *, hangup_by: str) -> list[Action]:
        """End a call from our side: BYE to answered legs still reachable, CANCEL to
        pending branches, then the record."""
        actions: list[Action] = []
        if call.state == "answered" and call.callee_leg is not None:
            for leg, peer in (
                (call.caller_leg, call.callee_leg),
                (call.callee_leg, call.caller_leg),
            ):
                if self._reachable(leg.flow):
                    actions.append(Send(leg.flow, self._bye(call, leg, peer)))
        else:
            for upstream in self._upstream.values():
                if upstream.message.call_id == call.call_id:
                    actions += self._cancel_branches(upstream, now)
        status = 200 if call.state == "answered" else 503
        return actions + self._ended(call, now, status=status, hangup_by=hangup_by)

    def _bye(self, call: Call, to_leg: Leg, from_leg: Leg) -> bytes:
        """A BYE from the proxy toward ``to_leg``, within the dialog."""
        address = self.addresses.get(to_leg.flow.transport) or next(iter(self.addresses.values()))
        to_leg.cseq += 1
        from_leg.cseq += 1
        is_callee = to_leg is call.callee_leg
        from_aor, to_aor = (call.caller, call.callee) if is_callee else (call.callee, call.caller)
        lines = [
            f"BYE {to_leg.contact or 'sip:' + to_aor} SIP/2.0",
            f"Via: {self._via(to_leg.flow, self._branch_id())}",
            "Max-Forwards: 70",
            f"From: <sip:{from_aor}>;tag={from_leg.tag}",
            f"To: <sip:{to_aor}>;tag={to_leg.tag}",
            f"Call-ID: {call.call_id}",
            f"CSeq: {from_leg.cseq + 1000} BYE",
            f'Reason: SIP;cause=200;text="ended by the proxy ({address.transport})"',
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _push(self, when: float, kind: str, key: object) -> None:
        heapq.heappush(self._heap, (when, next(self._ids), kind, key))

    def _schedule_touched(self) -> None:
        """Put the next deadline of every transaction touched since the last call
        on the heap; forget the ones that have ended."""
        for kind, key in self._touched:
            if kind == "branch":
                branch = self._branches.get(key)  # type: ignore[call-overload]
                if branch is None:
                    continue
                if branch.transaction.state is State.TERMINATED:
                    del self._branches[branch.id]
                elif (due := branch.transaction.next_timer()) is not None:
                    self._push(due, kind, key)
            else:
                upstream = self._upstream.get(key)  # type: ignore[call-overload]
                if upstream is None:
                    continue
                if upstream.server.state is State.TERMINATED:
                    del self._upstream[upstream.key]
                elif (due := upstream.server.next_timer()) is not None:
                    self._push(due, kind, key)
        self._touched.clear()

    def _due(self, entry: tuple[float, int, str, object]) -> bool:
        """Whether a heap entry still stands for a deadline (lazy deletion)."""
        when, _, kind, key = entry
        if kind == "branch":
            branch = self._branches.get(key)  # type: ignore[call-overload]
            return branch is not None and branch.transaction.next_timer() == when
        if kind == "upstream":
            upstream = self._upstream.get(key)  # type: ignore[call-overload]
            return upstream is not None and upstream.server.next_timer() == when
        call = self.calls.get(str(key))
        if call is None:
            return False
        if kind == "ring":
            return call.state in ("proceeding", "ringing")
        if kind == "deadline":
            return call.state != "ended" and call.deadline == when
        return kind == "reap" and call.state == "ended"

    def next_timer(self) -> float | None:
        """The earliest deadline of any branch, server transaction or call."""
        while self._heap and not self._due(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> list[Action]:
        """Fire transaction timers, ring timeouts and maximum durations that are due."""
        actions: list[Action] = []
        try:
            while self._heap and self._heap[0][0] <= now:
                entry = heapq.heappop(self._heap)
                if self._due(entry):
                    actions += self._fire(entry[2], entry[3], now)
        finally:
            self._schedule_touched()
        return actions

    def _fire(self, kind: str, key: object, now: float) -> list[Action]:
        if kind == "branch":
            branch = self._branches[key]  # type: ignore[index]
            self._touched.add(("branch", key))
            fired = branch.transaction.handle_timer(now)
            actions = _sends(branch.flow, fired)
            if branch.ping is not None and any(isinstance(a, Timeout) for a in fired):
                return actions + self._pinged(branch, None, now)
            pending = branch.upstream if not branch.final else None
            if pending is not None and any(isinstance(a, Timeout) for a in fired):
                actions += self._deliver(branch, synthetic_timeout(pending.message), now)
            return actions
        if kind == "upstream":
            upstream = self._upstream[key]  # type: ignore[index]
            self._touched.add(("upstream", key))
            return _sends(upstream.flow, upstream.server.handle_timer(now))
        call = self.calls[str(key)]
        if kind == "ring":  # Timer C: stop ringing
            call.cancelled_by = "system"
            return [
                action
                for upstream in self._upstream.values()
                if upstream.message.call_id == call.call_id and upstream.message.method == "INVITE"
                for action in self._cancel_branches(upstream, now)
            ]
        if kind == "deadline":
            return self._hang_up(call, now, hangup_by="system")
        del self.calls[call.call_id]  # reap: retransmissions of its BYE have had their time
        return []

    def _server_key(self, message: Message, method: str | None = None) -> tuple[str, str, str]:
        """§17.2.3 matching: branch, sent-by and method; for an RFC 2543 peer with no
        magic cookie, Call-ID, CSeq number and From tag stand in for the branch."""
        top = message.vias[0]
        sent_by = f"{top.host}:{top.port or 5060}".lower()
        branch = (top.branch or "").lower()
        if not branch.startswith(MAGIC_COOKIE.lower()):
            branch = f"2543|{message.call_id}|{message.cseq.number}|{message.from_.tag}"
        return (branch, sent_by, method or message.method)


class _QuotaError(SipError):
    """503 for the concurrent-call quota, remembering what to audit."""

    def __init__(
        self,
        tenant_id: int,
        call_id: str,
        caller: str,
        callee: str,
        limit: int,
        direction: Direction,
    ) -> None:
        warning = f'399 telemancer "concurrent call quota of {limit} reached"'
        super().__init__(503, "Service Unavailable (call quota)", (("Warning", warning),))
        self.refused = QuotaRefused(tenant_id, call_id, caller, callee, limit)
        self.direction = direction


def quota_refusal(error: SipError) -> QuotaRefused | None:
    """The audit-worthy refusal carried by a quota 503, if it is one."""
    return error.refused if isinstance(error, _QuotaError) else None


def _live(call: Call) -> LiveCall:
    return LiveCall(
        call.tenant_id,
        call.call_id,
        call.caller,
        call.callee,
        call.direction,
        call.state,
        call.setup_at,
        call.answered_at,
    )


def _sends(flow: Flow, actions: Sequence[object]) -> list[Action]:
    return [Send(flow, a.raw) for a in actions if isinstance(a, Transmit)]


def _sip(uri: str) -> SipUri | None:
    try:
        return parse_sip_uri(uri)
    except SipError:
        return None


def _better(status: int, best: int) -> bool:
    """RFC 3261 §16.7 step 6: 6xx over everything, then 4xx, 5xx, 3xx (401/407 kept)."""

    def rank(code: int) -> int:
        return {6: 0, 4: 1, 5: 2, 3: 3}.get(code // 100, 4)

    return rank(status) < rank(best)


def _method(request: bytes) -> str:
    """The method of a request we built or forwarded (its first word)."""
    return request.split(b" ", 1)[0].decode("latin-1")


def _with_challenges(response_bytes: bytes, challenges: list[tuple[str, str]]) -> bytes:
    """The best 401/407 carrying every branch's challenge, each once."""
    answer = parse_datagram(response_bytes)
    present = {(f.name, f.value) for f in answer.fields}
    rewrite = Rewrite(answer)
    for name, value in challenges:
        if (name, value) not in present:
            present.add((name, value))
            rewrite.insert_first(header_name(name), value)
    return rewrite.to_bytes()
