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

This module holds the :class:`Proxy` and the order of its work; the records it
keeps are in ``proxy_state``, and the parts that read on their own beside it
in ``proxy_auth`` (step 1), ``proxy_address`` (step 2, Via and Record-Route),
``call_media`` (step 4 and every answer), ``quota`` (step 5), ``carriers``
(trunks), ``in_dialog`` and ``proxy_timers``.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Sequence

from appliance.media.policy import OfferPlan
from appliance.sip import digest
from appliance.sip.actions import Action, CallEnded, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.call_media import CallMedia, MediaPorts
from appliance.sip.call_parties import Parties, call_parties, caller_srtp, identify_caller
from appliance.sip.calls import Admission, Call, Leg
from appliance.sip.carriers import ping_branch, pinged, toward_carrier, with_trunk_credentials
from appliance.sip.dialplan import TrunkEntry
from appliance.sip.directory import SipDirectory
from appliance.sip.errors import SipError
from appliance.sip.forking import cancel_branch, forked_invite, invite_branch
from appliance.sip.forwarding import (
    is_sdp,
    strip_for_forwarding,
    synthetic_timeout,
    with_body,
    with_cseq,
    without_top_via,
)
from appliance.sip.in_dialog import (
    bye_request,
    dialog_legs,
    dialog_transactions,
    refuse_answer,
    session_interval,
)
from appliance.sip.message import Message, Rewrite, parse_datagram
from appliance.sip.proxy_address import (
    ProxyAddress,
    pop_our_routes,
    record_routes,
    routes_toward_callee,
    routes_toward_caller,
    via,
)
from appliance.sip.proxy_state import Branch, Upstream, live_call, method_of, sends, server_key
from appliance.sip.proxy_timers import ProxyTimers
from appliance.sip.quota import CallRefusedError, QuotaError, refused_call
from appliance.sip.registrar import Flow, Registrar
from appliance.sip.responses import response
from appliance.sip.routing import Internal
from appliance.sip.sdp_exchange import Refused, plan_targets, read_offer
from appliance.sip.transaction import (
    DeliverResponse,
    InviteServerTransaction,
    NonInviteClientTransaction,
    Timeout,
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
            raise refused_call(error, message, flow, now, caller, parties) from None
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
            raise QuotaError(
                message,
                flow,
                now,
                tenant_id=tenant.id,
                caller=parties.caller,
                callee=parties.callee,
                limit=tenant.max_concurrent_calls,
                direction=parties.direction,
                trunk=parties.trunk_name,
            )
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

    def _answer_carrier(self, branch: Branch, challenge: Message, now: float) -> list[Action]:
        """Answer a carrier's 401/407 with the trunk's credentials, once, on a new
        branch that replaces the challenged one."""
        trunk, upstream, call = branch.trunk, branch.upstream, branch.call
        assert trunk is not None and upstream is not None and call is not None
        new_id = self._branch_id()
        authorized = with_trunk_credentials(branch.request, trunk, challenge, lambda: new_id)
        if authorized is None:
            return []
        upstream.branches.remove(branch.id)
        call.callee_cseq_offset += 1
        if call.media is not None:
            call.media.rebranch(branch.id, new_id)
        return self._start_branch(
            call, upstream, branch.flow, authorized, new_id, now, trunk, authenticated=True
        )

    def _session_refreshed(self, call: Call, answer: Message, now: float) -> None:
        """RFC 4028: a 2xx to the INVITE or to a refresh (re-INVITE, UPDATE) that
        carries Session-Expires says when the session dies unless refreshed again,
        and the call ends then (both phones would have sent BYE by that time);
        one without turns the session timer off, and the maximum duration
        applies again."""
        interval = session_interval(answer)
        if interval is None:
            if call.session_expires_at is not None:  # turned off
                call.session_expires_at = None
                self.timers.push(max(call.deadline, now), "deadline", call.call_id)
            return
        call.session_expires_at = now + interval
        self.timers.push(call.session_expires_at, "session", call.call_id)

    def _callee_leg(self, branch: Branch, response: Message, *, cseq: int) -> Leg:
        """The callee's side of the dialog ``response`` (a 1xx or 2xx with a tag)
        creates on ``branch``."""
        contact = response.contacts[0].uri if response.contacts else ""
        routes = routes_toward_callee(self.addresses, self.directory, response)
        return Leg(branch.flow, response.to.tag, contact, cseq, routes)

    def _in_dialog(self, message: Message, flow: Flow, now: float) -> list[Action]:
        call = self.calls.get(message.call_id)
        callee = None
        if call is not None:
            callee = (
                call.callee_leg
                or call.early.get(message.to.tag or "")
                or call.early.get(message.from_.tag or "")
            )
        if call is None or callee is None:
            if message.method == "ACK":
                return []
            raise SipError(481, "Call/Transaction Does Not Exist")
        source, target = dialog_legs(call.caller_leg, callee, message, flow)
        if not self._reachable(target.flow):
            raise SipError(480, "Temporarily Unavailable")
        source.cseq = max(source.cseq, message.cseq.number)
        rewrite = Rewrite(message)
        if source is call.caller_leg:
            with_cseq(message, rewrite, call.callee_cseq_offset)
        pop_our_routes(self.addresses, self.directory, message, rewrite)
        strip_for_forwarding(message, rewrite, source=flow.remote, keep_routes=True)
        branch_id = self._branch_id()
        rewrite.insert_first("Via", via(self.addresses, target.flow, branch_id))
        media, refused = call.media, False
        offering = media is not None and (
            message.method == "INVITE" or (message.method == "UPDATE" and bool(message.body))
        )
        if media is not None and message.method == "ACK" and media.awaiting_ack:
            answered = media.ack(message, now)
            refused = isinstance(answered, Refused)
            with_body(message, rewrite, b"" if isinstance(answered, Refused) else answered)
        elif media is not None and offering and message.body:
            from_caller = source is call.caller_leg
            with_body(message, rewrite, media.reoffer(branch_id, message, from_caller=from_caller))
        elif media is not None and offering:  # a re-INVITE without an offer
            media.expect_offer(branch_id, from_caller=target is call.caller_leg)
        elif is_sdp(message):  # an SDP where we take no offer (PRACK...): never passed on
            with_body(message, rewrite, b"")
        data = rewrite.to_bytes()
        actions: list[Action] = []
        if message.method == "BYE" and call.state == "answered":
            hangup = "caller" if source is call.caller_leg else "callee"
            actions += self._ended(call, now, status=200, hangup_by=hangup)
        elif message.method == "BYE":  # an early dialog's: the INVITE's answer (487) ends it
            call.cancelled_by = "caller" if source is call.caller_leg else "callee"
        if message.method == "ACK":
            actions.append(Send(target.flow, data))
            if refused:  # the answer in the ACK is unusable: the call cannot have media
                call.end_reason = "sdp-answer-refused"
                actions += self._hang_up(call, now, hangup_by="system")
            return actions
        transaction, server = dialog_transactions(
            message.method,
            data,
            reliable_down=target.flow.transport != "udp",
            reliable_up=flow.transport != "udp",
            now=now,
        )
        server.receive_request(message.wire, now)
        key = server_key(message)
        upstream = Upstream(message, flow, server, key, [branch_id])
        self._upstream[key] = upstream
        self._branches[branch_id] = Branch(
            branch_id, target.flow, data, transaction, None, upstream
        )
        if offering:
            self._branches[branch_id].media = call.media
        self.timers.touch("upstream", key)
        self.timers.touch("branch", branch_id)
        return [*actions, *sends(target.flow, transaction.start(now))]

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
        actions: list[Action] = []
        for branch_id in upstream.branches:
            branch = self._branches.get(branch_id)
            if branch is None or branch.id == skip or branch.final or branch.cancelled:
                continue
            branch.cancelled = True
            cancel = cancel_branch(branch, now)
            self.timers.touch("branch", cancel.id)
            self._branches[cancel.id] = cancel
            actions += sends(branch.flow, cancel.transaction.start(now))
        return actions

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
        if branch is None or method_of(branch.request) != method:
            return []
        if branch.ping is not None:
            return pinged(
                branch, message.status, now, branches=self._branches, trunk_down=self.trunk_down
            )
        try:
            transaction_actions = branch.transaction.receive_response(
                message.status, message.wire, now
            )
            actions = sends(branch.flow, transaction_actions)
            for action in transaction_actions:
                if isinstance(action, DeliverResponse):
                    actions += self._deliver(branch, message, now)
            self.timers.touch("branch", branch.id)
            return actions
        finally:
            self.timers.schedule_touched()

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

    def _deliver(self, branch: Branch, message: Message, now: float) -> list[Action]:
        upstream = branch.upstream
        if upstream is None:  # our own CANCEL or BYE: nothing to pass on
            return []
        self.timers.touch("upstream", upstream.key)
        status = message.status
        body: bytes | None = b"" if is_sdp(message) else None
        if branch.refused_ack is not None and status < 300:
            return [Send(branch.flow, branch.refused_ack)] if status >= 200 else []
        if (
            200 <= status < 300
            and branch.call is not None
            and (branch.call.state == "ended" or upstream.winner not in ("", branch.id))
        ):
            # Another fork answered first, or a 6xx ended the call: this dialog ends
            # here. The caller has one call, and the relay one callee to talk to.
            ended = branch.call.state == "ended"
            why = "the call had already ended" if ended else "the call was answered elsewhere"
            return self._end_answered_branch(branch, message, why, now)
        if branch.media is not None and status > 100:
            if status >= 300:
                branch.media.failed(branch.id)
            else:
                answer = branch.media.answer(
                    branch.id, message, branch.flow.transport, now, final=status >= 200
                )
                if isinstance(answer, Refused):
                    return self._refuse(branch, message, answer, now)
                body = answer if answer is not None else body
        upward = without_top_via(message, cseq=upstream.message.first("cseq"), body=body)
        call = branch.call
        actions: list[Action] = []
        if status < 200:
            branch.provisional = True
            tag = message.to.tag
            if call is not None and status > 100 and tag and call.callee_leg is None:
                call.early.setdefault(tag, self._callee_leg(branch, message, cseq=0))
            if call is not None and status >= 180 and call.ringing_at is None:
                call.ringing_at = now
                call.state = "ringing"
                actions.append(live_call(call))
            if status == 100:
                return actions
            return actions + sends(
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
                upstream.answered, upstream.winner = True, branch.id
                # The 2xx confirms its dialog: target and route set come from it
                # (§13.2.2.4); requests the callee sent while early keep counting.
                early = call.early.get(message.to.tag or "")
                call.callee_leg = self._callee_leg(
                    branch, message, cseq=early.cseq if early else 0
                )
                call.early.clear()
                call.answered_at = now
                call.state = "answered"
                actions.append(live_call(call))
                actions += self._cancel_branches(upstream, now, skip=branch.id)
                self._session_refreshed(call, message, now)
            elif call is None and upstream.message.method in ("INVITE", "UPDATE"):
                refreshed = self.calls.get(upstream.message.call_id)
                if refreshed is not None and refreshed.state == "answered":
                    self._session_refreshed(refreshed, message, now)
            return actions + sends(
                upstream.flow, upstream.server.send_response(status, upward, now)
            )
        upstream.consider(status, upward, message)
        if status >= 600:
            actions += self._cancel_branches(upstream, now, skip=branch.id)
        pending = [
            b for b in (self._branches.get(i) for i in upstream.branches) if b and not b.final
        ]
        if (pending and status < 600) or upstream.answered:
            return actions
        best_status, best = upstream.best_answer()
        if call is not None:
            actions += self._ended(call, now, status=best_status, hangup_by=call.cancelled_by)
        return actions + sends(
            upstream.flow, upstream.server.send_response(best_status, best, now)
        )

    def _refuse(
        self, branch: Branch, answer: Message, refused: Refused, now: float
    ) -> list[Action]:
        """A 2xx whose SDP we cannot use: ACK it, and answer its request with the
        refusal (488 and a Warning). On an INVITE's branch, that leg gets a BYE
        and the branch counts as failed (another may still answer); on a
        re-INVITE the whole call ends, since the other leg cannot be left
        believing in a session that no longer exists."""
        upstream = branch.upstream
        assert upstream is not None
        reject = refused.reject
        failed = synthetic_timeout(upstream.message, reject.status, reject.reason, reject.warning)
        call = self.calls.get(upstream.message.call_id)
        if branch.call is None and call is not None:  # a re-INVITE
            actions = self._end_answered_branch(
                branch, answer, reject.warning_text, now, bye=False
            )
            actions += self._deliver(branch, failed, now)
            call.end_reason = "sdp-answer-refused"
            return actions + self._hang_up(call, now, hangup_by="system")
        actions = self._end_answered_branch(branch, answer, reject.warning_text, now)
        return actions + self._deliver(branch, failed, now)

    def _end_answered_branch(
        self, branch: Branch, answer: Message, why: str, now: float, *, bye: bool = True
    ) -> list[Action]:
        """ACK a 2xx on ``branch`` that we do not keep (the ACK is kept for the 2xx's
        retransmissions) and, unless ``bye`` is False, end its dialog with a BYE."""
        ack_id, bye_id = self._branch_id(), self._branch_id()
        vias = (via(self.addresses, branch.flow, ack_id), via(self.addresses, branch.flow, bye_id))
        routes = routes_toward_callee(self.addresses, self.directory, answer)
        ack, bye_data = refuse_answer(parse_datagram(branch.request), answer, routes, vias, why)
        branch.refused_ack = ack
        actions: list[Action] = [Send(branch.flow, ack)]
        if bye:
            actions += self._send_own(branch.flow, bye_data, bye_id, now)
        return actions

    def _send_own(self, flow: Flow, data: bytes, branch_id: str, now: float) -> list[Action]:
        """Send a request of our own (a BYE ending a dialog) in a client transaction,
        so that over UDP it is retransmitted until answered (§17.1.2); its answer
        ends there (:meth:`_deliver`)."""
        transaction = NonInviteClientTransaction(data, reliable=flow.transport != "udp", now=now)
        self._branches[branch_id] = Branch(branch_id, flow, data, transaction, None, None)
        self.timers.touch("branch", branch_id)
        return sends(flow, transaction.start(now))

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
        self.timers.push(now + REAP_AFTER_SECONDS, "reap", call.call_id)
        return [CallEnded(record), live_call(call)]

    # -- connections, timers -----------------------------------------------

    def flow_closed(self, flow: Flow, now: float) -> list[Action]:
        """A TLS/TCP connection closed: calls with a leg on it end now."""
        try:
            return self._flow_closed(flow, now)
        finally:
            self.timers.schedule_touched()

    def _flow_closed(self, flow: Flow, now: float) -> list[Action]:
        self.open_connections.discard(flow.connection)
        self.certificates.pop(flow.connection, None)
        actions: list[Action] = []
        for branch in list(self._branches.values()):
            if branch.flow == flow and not branch.final and branch.upstream is not None:
                # A fork whose connection is gone (or never came up) fails now (§16.7).
                self.timers.touch("branch", branch.id)
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
                    branch_id = self._branch_id()
                    bye = bye_request(call, leg, peer, self.addresses, branch_id)
                    actions += self._send_own(leg.flow, bye, branch_id, now)
        else:
            for upstream in self._upstream.values():
                if upstream.message.call_id == call.call_id:
                    actions += self._cancel_branches(upstream, now)
        status = 200 if call.state == "answered" else 503
        return actions + self._ended(call, now, status=status, hangup_by=hangup_by)

    def media_idle(self, call_ids: Iterable[str], now: float) -> list[Action]:
        """Calls whose media has been silent both ways for the relay's idle time
        end with BYE on both legs (CDR ``end_reason`` ``media-timeout``). A call
        still ringing, or put on hold, is left to its other timers."""
        actions: list[Action] = []
        try:
            for call_id in call_ids:
                call = self.calls.get(call_id)
                if call is None or call.state != "answered" or call.media is None:
                    continue
                if call.media.on_hold:
                    continue
                call.end_reason = "media-timeout"
                actions += self._hang_up(call, now, hangup_by="system")
        finally:
            self.timers.schedule_touched()
        return actions

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
                return actions + pinged(
                    branch, None, now, branches=self._branches, trunk_down=self.trunk_down
                )
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
                if upstream.message.call_id == call.call_id and upstream.message.method == "INVITE"
                for action in self._cancel_branches(upstream, now)
            ]
        if kind == "session":
            call.end_reason = "session-expired"
        if kind in ("deadline", "session"):
            return self._hang_up(call, now, hangup_by="system")
        del self.calls[call.call_id]  # reap: retransmissions of its BYE have had their time
        return []
