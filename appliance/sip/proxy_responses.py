"""The proxy's response handling (RFC 3261 §16.7): a response from downstream
matched to its branch, passed up or held for the best final answer, the
carrier's challenge answered, and a 2xx that cannot be kept ended.

A part of :class:`~appliance.sip.proxy.Proxy`, which inherits it; its methods
use the proxy's tables and each other's methods, so they are typed on
:class:`~appliance.sip.proxy_parts.ProxyParts` (``self: ProxyParts``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.sip.actions import Action, Send
from appliance.sip.carriers import with_trunk_credentials
from appliance.sip.errors import SipError
from appliance.sip.forwarding import (
    is_sdp,
    on_another_server,
    synthetic_timeout,
    without_top_via,
)
from appliance.sip.message import Message
from appliance.sip.proxy_address import via
from appliance.sip.proxy_state import Branch, live_call, method_of, sends
from appliance.sip.registrar import Flow
from appliance.sip.sdp_exchange import Refused
from appliance.sip.transaction import DeliverResponse

if TYPE_CHECKING:
    from appliance.sip.proxy_parts import ProxyParts

#: Early dialogs kept per call (one per tag a callee's provisional responses
#: carry): enough for any forking, and a bound for a peer inventing tags.
MAX_EARLY_DIALOGS = 16


class Responses:
    """Responses from downstream, and what each of them sets off."""

    def response(self: ProxyParts, message: Message, flow: Flow, now: float) -> list[Action]:
        """A response from downstream: matched to its branch by our Via branch and
        the CSeq method (a CANCEL's answer shares its INVITE's branch)."""
        try:
            branch_id = message.top_via.branch or ""
            method = message.cseq.method
        except (SipError, IndexError):
            return []
        if method == "CANCEL":
            branch_id = f"{branch_id}-cancel"
        branch = self._branches.get(branch_id)
        if branch is None or method_of(branch.request) != method:
            return []
        if branch.ping is not None:
            return self._pinged(branch, message.status, now)
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

    def _deliver(self: ProxyParts, branch: Branch, message: Message, now: float) -> list[Action]:
        upstream = branch.upstream
        if upstream is None:  # our own CANCEL or BYE: nothing to pass on
            return []
        self.timers.touch("upstream", upstream.key)
        status = message.status
        body: bytes | None = b"" if is_sdp(message) else None
        if branch.refused_ack is not None and status < 300:
            return [Send(branch.flow, branch.refused_ack)] if status >= 200 else []
        if status < 200 and branch.cancelled and not branch.provisional:
            # Cancelled before it said anything: now its CANCEL may go (§9.1).
            branch.provisional = True
            return self._send_cancel(branch, now)
        if (
            200 <= status < 300
            and branch.call is not None
            and (branch.call.state == "ended" or upstream.winner not in ("", branch.id))
        ):
            # Another fork answered first, or a 6xx ended the call: this dialog ends
            # here. The caller has one call, and the relay one callee to talk to.
            ended = branch.call.state == "ended"
            why = "the call had already ended" if ended else "the call was answered elsewhere"
            ending = self._end_answered_branch(branch, message, why, now)
            if ended and upstream.unanswered:
                # We ended the call (its longest life, a lost connection) while this
                # 2xx crossed our CANCEL: the branch ends as cancelled, so the
                # caller's INVITE still gets its final answer (§16.7).
                terminated = synthetic_timeout(upstream.message, 487, "Request Terminated")
                ending += self._deliver(branch, terminated, now)
            return ending
        if branch.media is not None and 100 < status < 300:
            answer = branch.media.answer(
                branch.id, message, branch.flow.transport, now, final=status >= 200
            )
            if isinstance(answer, Refused):
                return self._refuse(branch, message, answer, now)
            body = answer if answer is not None else body
        upward = without_top_via(message, cseq=upstream.cseq, body=body)
        call = branch.call
        actions: list[Action] = []
        if status < 200:
            branch.provisional = True
            if not upstream.unanswered or (call is not None and call.state == "ended"):
                # The caller has its final answer (another fork's 2xx, a 6xx), or we
                # ended the call and our CANCEL crossed this: nothing rings again.
                return []
            tag = message.to.tag
            dialogs = call.early if call is not None and call.callee_leg is None else None
            if dialogs is not None and status > 100 and tag and len(dialogs) < MAX_EARLY_DIALOGS:
                dialogs.setdefault(tag, self._callee_leg(branch, message, cseq=0))
            if call is not None and status >= 180 and call.ringing_at is None:
                call.ringing_at = now
                call.state = "ringing"
                actions.append(live_call(call))
            if status == 100:
                return actions
            return actions + sends(
                upstream.flow, upstream.server.send_response(status, upward, now)
            )
        if branch.trunk is not None and status in (401, 407, 408, 503):
            handled = self._carrier_failure(branch, message, now)
            if handled is not None:
                return actions + handled
        branch.final = status
        if status >= 300 and branch.media is not None:
            branch.media.failed(branch.id)
        if status < 300:
            if call is not None and not upstream.winner:
                upstream.winner = branch.id
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
            elif call is None and upstream.method in ("INVITE", "UPDATE"):
                refreshed = self.calls.get(upstream.call_id)
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
        if (pending and status < 600) or not upstream.unanswered:
            return actions  # more answers to wait for, or the caller has its final one
        best_status, best = upstream.best_answer()
        if call is not None:
            actions += self._ended(call, now, status=best_status, hangup_by=call.cancelled_by)
        return actions + sends(
            upstream.flow, upstream.server.send_response(best_status, best, now)
        )

    def _carrier_failure(
        self: ProxyParts, branch: Branch, message: Message, now: float
    ) -> list[Action] | None:
        """A trunk branch's 401/407/408/503 that the caller does not hear as it
        is, or None for one it does. While the call may still be set up, the
        INVITE goes again on a new branch that keeps this one's offer: with the
        trunk's credentials for a carrier's challenge (once), or to the
        carrier's next server. A challenge we do not answer is ours, not the
        caller's (its realm means nothing to a phone): the caller hears 487 once
        the call is cancelled or ended, else 403, the carrier having refused
        the trunk's credentials."""
        status, upstream, call = message.status, branch.upstream, branch.call
        assert upstream is not None
        challenge = status in (401, 407)
        if _may_retry(branch) and not (challenge and branch.authenticated):
            if challenge:
                retried = self._answer_carrier(branch, message, now)
            else:
                retried = self._next_server(branch, now)
            if retried:
                branch.final = status
                return retried
        if not challenge:
            return None
        if branch.cancelled or call is None or call.state == "ended":
            stand_in = synthetic_timeout(upstream.message, 487, "Request Terminated")
        else:
            call.end_reason = "trunk-credentials-refused"
            stand_in = synthetic_timeout(upstream.message, 403, "Forbidden")
        return self._deliver(branch, stand_in, now)

    def _refuse(
        self: ProxyParts, branch: Branch, answer: Message, refused: Refused, now: float
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
        call = self.calls.get(upstream.call_id)
        if branch.call is None and call is not None:  # a re-INVITE
            actions = self._end_answered_branch(
                branch, answer, reject.warning_text, now, bye=False
            )
            actions += self._deliver(branch, failed, now)
            call.end_reason = "sdp-answer-refused"
            return actions + self._hang_up(call, now, hangup_by="system")
        actions = self._end_answered_branch(branch, answer, reject.warning_text, now)
        return actions + self._deliver(branch, failed, now)

    def _next_server(self: ProxyParts, branch: Branch, now: float) -> list[Action]:
        """RFC 3263 §4.3: an INVITE that one of a carrier's servers failed (503, a
        timeout, a lost connection) goes to the trunk's next located server, on a
        new branch that replaces the failed one; nothing when none is left."""
        trunk, upstream, call = branch.trunk, branch.upstream, branch.call
        assert trunk is not None and upstream is not None and call is not None
        flows = self.trunk_flows.get(trunk.id, [])
        following = flows[flows.index(branch.flow) + 1 :] if branch.flow in flows else []
        if not following:
            return []
        target, new_id = following[0], self._branch_id()
        request = on_another_server(branch.request, via(self.addresses, target, new_id))
        upstream.branches.remove(branch.id)
        if call.media is not None:
            call.media.rebranch(branch.id, new_id)
        return self._start_branch(call, upstream, target, request, new_id, now, trunk)

    def _answer_carrier(
        self: ProxyParts, branch: Branch, challenge: Message, now: float
    ) -> list[Action]:
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


def _may_retry(branch: Branch) -> bool:
    """Whether a trunk branch's failure may send its INVITE again: not once the
    caller has cancelled, the call has ended or another branch answered."""
    upstream, call = branch.upstream, branch.call
    return (
        branch.trunk is not None
        and call is not None
        and call.state != "ended"
        and upstream is not None
        and not upstream.winner
        and not branch.cancelled
    )
