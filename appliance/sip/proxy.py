"""The stateful proxy (RFC 3261 §16) for calls between one tenant's phones.

Sans-I/O like the edge, which hands it every request that is not for the
registrar and every response. Order of work for an initial INVITE, each
step failing closed with the SIP status the edge answers:

1. the caller authenticates with Proxy-Authorization (407 challenge; the
   same Digest rules and brute-force rule as REGISTER);
2. the Request-URI must name an extension of the caller's own tenant: no
   other domain, no ``maddr``, no pre-loaded Route but our own (403/404);
3. the extension must have a reachable registration (480);
4. the SDP offer is read and each leg's SRTP policy applied (488 with a
   Warning when the policy refuses it: ``call_media``);
5. the tenant's concurrent-call quota is reserved and the relay's ports taken
   (503, before anything rings);
6. the INVITE is forked to every contact, each over the flow it registered on,
   each with its own SDP: our relay's address and port, and its own keys.

In-dialog requests follow the Record-Route we inserted: they are matched to
their call by Call-ID and tags and sent over the other leg's flow.

This module holds the :class:`Proxy`, the order of its work on requests and
its timers. Its methods for responses are in ``proxy_responses`` and those for
dialogs (in-dialog requests, session timers, hanging up) in
``proxy_dialogs``, both mixed in (``proxy_parts`` says what they use of the
whole). The records it keeps are in ``proxy_state``, and the parts that read on
their own beside it in ``call_parties`` and ``proxy_auth`` (step 1),
``proxy_address`` (step 2, Via and Record-Route), ``call_media`` (step 4 and
every answer), ``quota`` (refusals and step 5), ``carriers`` (trunks),
``in_dialog`` and ``proxy_timers``.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence

from appliance.media.policy import OfferPlan
from appliance.sip import digest
from appliance.sip.actions import Action, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.call_media import CallMedia, MediaPorts
from appliance.sip.call_parties import Parties, call_parties, caller_srtp, identify_caller
from appliance.sip.calls import Admission, Call, Leg
from appliance.sip.carriers import ping_branch, ping_failed, pinged, toward_carrier
from appliance.sip.dialplan import TrunkEntry
from appliance.sip.directory import SipDirectory
from appliance.sip.errors import SipError
from appliance.sip.forking import cancel_branch, forked_invite, invite_branch
from appliance.sip.forwarding import synthetic_timeout
from appliance.sip.message import Message
from appliance.sip.proxy_address import (
    Addresses,
    ProxyAddress,
    record_routes,
    routes_toward_caller,
    via,
)
from appliance.sip.proxy_dialogs import Dialogs
from appliance.sip.proxy_responses import Responses
from appliance.sip.proxy_state import Branch, Upstream, live_call, sends, server_key
from appliance.sip.proxy_timers import ProxyTimers
from appliance.sip.quota import CallRefusedError, QuotaError, refused_call, refused_record
from appliance.sip.registrar import Flow, Registrar
from appliance.sip.responses import response
from appliance.sip.routing import Internal
from appliance.sip.sdp_exchange import plan_targets, read_offer
from appliance.sip.transaction import InviteClientTransaction, InviteServerTransaction, Timeout

#: How long a call may ring before its branches are cancelled (Timer C, §16.6).
RING_TIMEOUT_SECONDS = 180.0
#: A call's longest life when its phones use no session timers: then it is
#: ended with BYE on both legs, so a lost BYE cannot hold a quota slot forever.
DEFAULT_MAX_CALL_SECONDS = 4 * 3600.0
#: Connection ids of the flows toward carriers (opened by the service on demand).
CARRIER_PREFIX = "trunk-"
#: Methods forwarded inside a dialog.
IN_DIALOG_METHODS = frozenset(
    {"ACK", "BYE", "INVITE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER", "MESSAGE", "OPTIONS"}
)


class Proxy(Responses, Dialogs):
    """Routes calls between registered phones of one tenant."""

    def __init__(
        self,
        directory: SipDirectory,
        verifier: digest.DigestVerifier,
        registrar: Registrar,
        blocklist: Blocklist,
        addresses: Sequence[ProxyAddress],
        *,
        media: MediaPorts,
        media_address: str,
        max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
    ) -> None:
        self.directory = directory
        #: The relay every call's media goes through, and the address SDP names for it.
        self.media = media
        self.media_address = media_address
        self.verifier = verifier
        self.registrar = registrar
        self.blocklist = blocklist
        self.addresses = Addresses(addresses)
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
        self._branches: dict[str, Branch] = {}
        self._upstream: dict[tuple[str, str, str], Upstream] = {}
        self._ids = itertools.count(1)
        self._salt = secrets.token_hex(4)
        self.timers = ProxyTimers(self._branches, self._upstream, self.calls, self._ids)

    # -- requests -----------------------------------------------------------

    def request(self, message: Message, flow: Flow, now: float) -> list[Action]:
        """Handle a request the edge does not answer itself; raise SipError to answer."""
        try:
            return self._request(message, flow, now)
        finally:
            self.timers.schedule_touched()

    def _request(self, message: Message, flow: Flow, now: float) -> list[Action]:
        key = server_key(message)
        if message.method == "ACK":
            invite = self._upstream.get(server_key(message, method="INVITE"))
            if invite is not None and isinstance(invite.server, InviteServerTransaction):
                self.timers.touch("upstream", invite.key)
                return sends(invite.flow, invite.server.receive_ack(now))
        if key in self._upstream:
            upstream = self._upstream[key]
            self.timers.touch("upstream", key)
            return sends(upstream.flow, upstream.server.receive_request(message.wire, now))
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
        caller = identify_caller(
            message,
            flow,
            now,
            directory=self.directory,
            verifier=self.verifier,
            blocklist=self.blocklist,
            certificate=self.certificates.get(flow.connection),
        )
        parties: Parties | None = None
        try:
            parties = call_parties(
                message,
                caller,
                directory=self.directory,
                addresses=self.addresses,
                trunk_down=self.trunk_down,
            )
            plans, media = self._admit(message, flow, parties, now)
        except CallRefusedError:
            raise
        except SipError as error:  # refused before anything rang: recorded all the same
            raise refused_call(error, message, flow, now, parties or caller) from None
        return self._start_call(message, flow, parties, plans, media, now)

    def _admit(
        self, message: Message, flow: Flow, parties: Parties, now: float
    ) -> tuple[list[tuple[tuple[Flow, str], OfferPlan]], CallMedia]:
        """Where the call may ring, with what offer, and its media: refused (480,
        488, 503) before the quota slot is reserved, or with it released."""
        tenant, decision = parties.tenant, parties.decision
        if isinstance(decision, Internal):
            targets = [
                (b.flow, b.contact)
                for b in self.registrar.bindings(decision.extension.id, now)
                if self._reachable(b.flow)
            ]
            if not targets:
                raise SipError(480, "Temporarily Unavailable")
            callee_policy = tenant.srtp
        else:
            carrier_flows = self.trunk_flows.get(decision.trunk.id, [])
            if not carrier_flows:
                raise SipError(503, "Service Unavailable (carrier not reachable)")
            targets = [(carrier_flows[0], "")]
            callee_policy = decision.trunk.srtp
        caller_policy = caller_srtp(self.directory, parties)
        offer = read_offer(message, caller_policy, flow.transport)
        plans = plan_targets(callee_policy, targets)
        if not self.admission.reserve(tenant.id, tenant.max_concurrent_calls):
            record = refused_record(
                message, flow, now, parties, status=503, disposition="rejected-quota"
            )
            raise QuotaError(record, tenant.max_concurrent_calls)
        try:
            media = CallMedia.open(
                self.media,
                message.call_id,
                offer,
                address=self.media_address,
                caller=(caller_policy, flow.transport),
                callee_policy=callee_policy,
                now=now,
            )
        except SipError:
            self.admission.release(tenant.id)
            raise
        return plans, media

    def _start_call(
        self,
        message: Message,
        flow: Flow,
        parties: Parties,
        plans: list[tuple[tuple[Flow, str], OfferPlan]],
        media: CallMedia,
        now: float,
    ) -> list[Action]:
        """Record an admitted call, answer 100 and ring every target."""
        call_id, decision = message.call_id, parties.decision
        contact = message.contacts[0].uri if message.contacts else ""
        call = Call(
            tenant_id=parties.tenant.id,
            call_id=call_id,
            caller=parties.caller,
            callee=parties.callee,
            direction=parties.direction,
            setup_at=now,
            caller_leg=Leg(
                flow,
                message.from_.tag,
                contact,
                message.cseq.number,
                routes_toward_caller(message),
                message.from_.uri,
                message.to.uri,
            ),
            deadline=now + self.max_call_seconds,
            trunk=parties.trunk_name,
            media=media,
        )
        self.calls[call_id] = call
        self.timers.push(call.setup_at + RING_TIMEOUT_SECONDS, "ring", call_id)
        self.timers.push(call.deadline, "deadline", call_id)
        server = InviteServerTransaction(reliable=flow.transport != "udp", now=now)
        key = server_key(message)
        upstream = Upstream(message, flow, server, key)
        self._upstream[key] = upstream
        self.timers.touch("upstream", key)
        actions: list[Action] = [live_call(call)]
        server.receive_request(message.wire, now)
        trying = response(message, 100, "Trying", source=flow.remote)
        actions += sends(flow, server.send_response(100, trying, now))
        if isinstance(decision, Internal):
            for (target, contact), plan in plans:
                actions += self._fork(call, upstream, target, contact, plan, now)
        else:
            request_uri, asserted = toward_carrier(
                decision.trunk, decision.number, parties.caller, parties.tenant.domain
            )
            ((target, _), plan) = plans[0]
            actions += self._fork(
                call,
                upstream,
                target,
                request_uri,
                plan,
                now,
                trunk=decision.trunk,
                asserted=asserted,
            )
        return actions

    def _reachable(self, flow: Flow) -> bool:
        """UDP flows always; a TLS/TCP flow while its connection is up, and a
        carrier's, which the service opens on first use."""
        return (
            flow.transport == "udp"
            or flow.connection in self.open_connections
            or flow.connection.startswith(CARRIER_PREFIX)
        )

    # -- forwarding ---------------------------------------------------------

    def _branch_id(self) -> str:
        return f"z9hG4bK-tm{self._salt}-{next(self._ids)}"

    def _fork(
        self,
        call: Call,
        upstream: Upstream,
        target: Flow,
        request_uri: str,
        plan: OfferPlan,
        now: float,
        *,
        trunk: TrunkEntry | None = None,
        asserted: str | None = None,
    ) -> list[Action]:
        """Send one branch of the INVITE to ``request_uri`` over ``target``,
        offering it ``plan``."""
        branch_id = self._branch_id()
        media = call.media
        assert media is not None
        if media.exchange is None:  # late offer: the 2xx will bring one
            media.expect_offer(branch_id, from_caller=False)
            body = b""
        else:
            body = media.offer_body(branch_id, plan)
        data = forked_invite(
            upstream.message,
            request_uri,
            source=upstream.flow.remote,
            via=via(self.addresses, target, branch_id),
            record_routes=record_routes(self.addresses, upstream.flow, target),
            asserted=asserted,
            body=body,
        )
        return self._start_branch(call, upstream, target, data, branch_id, now, trunk)

    def _start_branch(
        self,
        call: Call,
        upstream: Upstream,
        target: Flow,
        data: bytes,
        branch_id: str,
        now: float,
        trunk: TrunkEntry | None,
        *,
        authenticated: bool = False,
    ) -> list[Action]:
        branch = invite_branch(data, branch_id, target, call, upstream, now)
        branch.trunk, branch.authenticated = trunk, authenticated
        branch.media = call.media
        self._branches[branch.id] = branch
        self.timers.touch("branch", branch.id)
        upstream.branches.append(branch.id)
        call.branches.append(branch.id)
        return sends(target, branch.transaction.start(now))

    def _cancel(self, message: Message, flow: Flow, now: float) -> list[Action]:
        invite_key = server_key(message, method="INVITE")
        upstream = self._upstream.get(invite_key)
        if upstream is None:
            raise SipError(481, "Call/Transaction Does Not Exist")
        actions: list[Action] = [Send(flow, response(message, 200, "OK", source=flow.remote))]
        call = self.calls.get(message.call_id)
        if call is not None and call.state != "ended":
            call.cancelled_by = "caller"
        return actions + self._cancel_branches(upstream, now)

    def _cancel_branches(self, upstream: Upstream, now: float, skip: str = "") -> list[Action]:
        """CANCEL every pending branch of ``upstream`` but ``skip``. A branch that
        has had no provisional answer is only marked: RFC 3261 §9.1 forbids a
        CANCEL before one, so its CANCEL goes with its first provisional answer
        (:meth:`_deliver`), and Timer B ends it if none ever comes."""
        actions: list[Action] = []
        for branch_id in upstream.branches:
            branch = self._branches.get(branch_id)
            if branch is None or branch.id == skip or branch.final or branch.cancelled:
                continue
            branch.cancelled = True
            if branch.provisional:
                actions += self._send_cancel(branch, now)
        return actions

    def _send_cancel(self, branch: Branch, now: float) -> list[Action]:
        """The CANCEL of ``branch``'s INVITE, in a transaction of its own; the INVITE
        is given up if no final answer follows within 64*T1 (§9.1)."""
        cancel = cancel_branch(branch, now)
        self.timers.touch("branch", cancel.id)
        self._branches[cancel.id] = cancel
        if isinstance(branch.transaction, InviteClientTransaction):
            branch.transaction.cancel_sent(now)
            self.timers.touch("branch", branch.id)
        return sends(branch.flow, cancel.transaction.start(now))

    # -- trunks, timers ------------------------------------------------------

    def ping(self, trunk: TrunkEntry, flow: Flow, now: float) -> list[Action]:
        """Send an OPTIONS to a trunk's carrier; its answer (or Timer F) becomes a
        :class:`TrunkHealth`, and a carrier that stops answering is routed around."""
        try:
            branch = ping_branch(trunk, flow, self._branch_id(), self.addresses, now)
            self._branches[branch.id] = branch
            self.timers.touch("branch", branch.id)
            return sends(flow, branch.transaction.start(now))
        finally:
            self.timers.schedule_touched()

    def _pinged(self, branch: Branch, status: int | None, now: float) -> list[Action]:
        """A ping's final answer (``status``), or None when none can come (Timer F,
        a lost connection). A failed server hands the ping to the trunk's next
        located server, as a call would go there (RFC 3263 §4.3): the trunk is
        down only when no server of it answers."""
        assert branch.ping is not None
        trunk = branch.ping[0]
        if ping_failed(status):
            flows = self.trunk_flows.get(trunk.id, [])
            following = flows[flows.index(branch.flow) + 1 :] if branch.flow in flows else []
            if following:
                branch.ping = None
                self._branches.pop(branch.id, None)
                return self.ping(trunk, following[0], now)
        return pinged(branch, status, now, branches=self._branches, trunk_down=self.trunk_down)

    def next_timer(self) -> float | None:
        """The earliest deadline of any branch, server transaction or call."""
        return self.timers.next_timer()

    def handle_timer(self, now: float) -> list[Action]:
        """Fire transaction timers, ring timeouts and maximum durations that are due."""
        actions: list[Action] = []
        try:
            for kind, key in self.timers.pop_due(now):
                actions += self._fire(kind, key, now)
        finally:
            self.timers.schedule_touched()
        return actions

    def _fire(self, kind: str, key: object, now: float) -> list[Action]:
        if kind == "branch":
            branch = self._branches[key]  # type: ignore[index]
            self.timers.touch("branch", key)
            fired = branch.transaction.handle_timer(now)
            actions = sends(branch.flow, fired)
            if branch.ping is not None and any(isinstance(a, Timeout) for a in fired):
                return actions + self._pinged(branch, None, now)
            pending = branch.upstream if not branch.final else None
            if pending is not None and any(isinstance(a, Timeout) for a in fired):
                actions += self._deliver(branch, synthetic_timeout(pending.message), now)
            return actions
        if kind == "upstream":
            upstream = self._upstream[key]  # type: ignore[index]
            self.timers.touch("upstream", key)
            return sends(upstream.flow, upstream.server.handle_timer(now))
        call = self.calls[str(key)]
        if kind == "ring":  # Timer C: stop ringing
            call.cancelled_by = "system"
            return [
                action
                for upstream in self._upstream.values()
                if upstream.call_id == call.call_id and upstream.method == "INVITE"
                for action in self._cancel_branches(upstream, now)
            ]
        if kind == "session":
            call.end_reason = "session-expired"
        if kind in ("deadline", "session"):
            return self._hang_up(call, now, hangup_by="system")
        del self.calls[call.call_id]  # reap: retransmissions of its BYE have had their time
        return []
