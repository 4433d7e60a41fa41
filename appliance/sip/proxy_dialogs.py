"""The proxy's work on answered and early calls: requests inside a dialog,
session timers, and every way the proxy ends a call itself (BYE to both
legs, a dead connection, silent media, an answer it cannot keep).

A part of :class:`~appliance.sip.proxy.Proxy`, which inherits it; kept in its
own module so that each reads in one sitting. Its methods use the proxy's
tables and each other's methods, so they are typed on
:class:`~appliance.sip.proxy_parts.ProxyParts` (``self: ProxyParts``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from appliance.sip.actions import Action, CallEnded, Send
from appliance.sip.calls import Call, Leg
from appliance.sip.errors import SipError
from appliance.sip.forwarding import (
    is_sdp,
    strip_for_forwarding,
    synthetic_timeout,
    with_body,
    with_cseq,
)
from appliance.sip.in_dialog import (
    bye_request,
    dialog_legs,
    dialog_transactions,
    refuse_answer,
    session_interval,
)
from appliance.sip.message import Message, Rewrite, parse_datagram
from appliance.sip.proxy_address import pop_our_routes, routes_toward_callee, via
from appliance.sip.proxy_state import Branch, Upstream, live_call, sends, server_key
from appliance.sip.registrar import Flow
from appliance.sip.sdp_exchange import Refused
from appliance.sip.transaction import NonInviteClientTransaction, State

if TYPE_CHECKING:
    from appliance.sip.proxy_parts import ProxyParts

#: How long an ended call is remembered, for late in-dialog requests (64*T1).
REAP_AFTER_SECONDS = 32.0


class Dialogs:
    """Requests inside dialogs, session timers and the proxy's own hang-ups."""

    def _session_refreshed(self: ProxyParts, call: Call, answer: Message, now: float) -> None:
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

    def _callee_leg(self: ProxyParts, branch: Branch, response: Message, *, cseq: int) -> Leg:
        """The callee's side of the dialog ``response`` (a 1xx or 2xx with a tag)
        creates on ``branch``."""
        contact = response.contacts[0].uri if response.contacts else ""
        routes = routes_toward_callee(self.addresses, self.directory, response)
        # The response carries the From and To of the request this branch sent.
        return Leg(
            branch.flow,
            response.to.tag,
            contact,
            cseq,
            routes,
            response.to.uri,
            response.from_.uri,
        )

    def _in_dialog(self: ProxyParts, message: Message, flow: Flow, now: float) -> list[Action]:
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
        if call.state == "ended" and message.method not in ("ACK", "BYE"):
            # Over on our side (its record written, its media released): a request
            # crossing our BYE or CANCEL has no dialog left to go to (§12.2.2).
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
        answering = (
            media is not None
            and media.awaiting_ack
            and (message.method == "ACK" or (message.method == "PRACK" and bool(message.body)))
        )
        # A PRACK's SDP once the first exchange is done is a new offer, answered in
        # its 2xx (RFC 3262 §5), as an UPDATE's is.
        offering = (
            media is not None
            and not answering
            and (
                message.method == "INVITE"
                or (message.method in ("UPDATE", "PRACK") and bool(message.body))
            )
        )
        if media is not None and answering:
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
        if refused:  # the answer in the ACK or PRACK is unusable: the call cannot have media
            call.end_reason = "sdp-answer-refused"
        if message.method == "ACK":
            actions.append(Send(target.flow, data))
            if refused:
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
        actions += sends(target.flow, transaction.start(now))
        if refused:  # a PRACK's: the call ends before it is answered
            actions += self._hang_up(call, now, hangup_by="system")
        return actions

    def _hang_up(self: ProxyParts, call: Call, now: float, *, hangup_by: str) -> list[Action]:
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
                if upstream.call_id == call.call_id:
                    actions += self._cancel_branches(upstream, now)
        status = 200 if call.state == "answered" else 503
        return actions + self._ended(call, now, status=status, hangup_by=hangup_by)

    def _send_own(
        self: ProxyParts, flow: Flow, data: bytes, branch_id: str, now: float
    ) -> list[Action]:
        """Send a request of our own (a BYE ending a dialog) in a client transaction,
        so that over UDP it is retransmitted until answered (§17.1.2); its answer
        ends there (:meth:`_deliver`)."""
        transaction = NonInviteClientTransaction(data, reliable=flow.transport != "udp", now=now)
        self._branches[branch_id] = Branch(branch_id, flow, data, transaction, None, None)
        self.timers.touch("branch", branch_id)
        return sends(flow, transaction.start(now))

    def _end_answered_branch(
        self: ProxyParts,
        branch: Branch,
        answer: Message,
        why: str,
        now: float,
        *,
        bye: bool = True,
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

    def _ended(
        self: ProxyParts, call: Call, now: float, *, status: int, hangup_by: str | None
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

    def flow_closed(self: ProxyParts, flow: Flow, now: float) -> list[Action]:
        """A TLS/TCP connection closed: calls with a leg on it end now."""
        try:
            return self._flow_closed(flow, now)
        finally:
            self.timers.schedule_touched()

    def _flow_closed(self: ProxyParts, flow: Flow, now: float) -> list[Action]:
        self.open_connections.discard(flow.connection)
        self.certificates.pop(flow.connection, None)
        actions: list[Action] = []
        for branch in list(self._branches.values()):
            if branch.flow == flow and branch.ping is not None:
                # A ping over a connection that is gone (or never came up) fails now.
                self.timers.touch("branch", branch.id)
                branch.transaction.transport_error(now)
                actions += self._pinged(branch, None, now)
            elif branch.flow == flow and not branch.final and branch.upstream is not None:
                # A fork whose connection is gone (or never came up) fails now (§16.7).
                self.timers.touch("branch", branch.id)
                branch.transaction.transport_error(now)
                failed = synthetic_timeout(branch.upstream.message, 503, "Service Unavailable")
                actions += self._deliver(branch, failed, now)
                if branch.transaction.state is not State.TERMINATED:
                    # An INVITE that was ringing absorbs the error (it sends nothing
                    # in Proceeding), but no answer can come over a closed connection.
                    del self._branches[branch.id]
        for call in list(self.calls.values()):
            legs = [call.caller_leg, call.callee_leg]
            if call.state != "ended" and any(leg and leg.flow == flow for leg in legs):
                actions += self._hang_up(call, now, hangup_by="system")
        return actions

    def media_idle(self: ProxyParts, call_ids: Iterable[str], now: float) -> list[Action]:
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
