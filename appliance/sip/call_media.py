"""A call's media as the proxy negotiates it: the SDP offer and answer on each
leg, each leg's SRTP policy, and the relay ports they point at (sans-I/O).

Every call's media flows through the relay, so each leg is a separate
RFC 3264 exchange between the phone (or carrier) and us. The proxy calls in at
four moments:

1. an INVITE carrying an offer arrives: :func:`read_offer` parses it and
   decides our answer to the caller (a 488 with a Warning when the policy
   refuses it), before the quota is taken; ``policy.plan_offer`` then decides
   what each branch is offered;
2. the call is admitted: :meth:`CallMedia.open` takes the relay's ports (503
   when there are none) and :meth:`CallMedia.offer_body` writes each branch's
   SDP: our address, the callee-side port and fresh keys for that branch;
3. an answer comes back (18x or 2xx): :meth:`CallMedia.answer` judges it
   against that branch's plan, sets both relay legs and writes the caller's
   answer: our address, the caller-side port and our own key. A 2xx answer we
   cannot use is :class:`Refused`: the proxy ACKs it, BYEs that leg and
   answers 488 upstream. An unusable provisional answer is dropped (the call
   goes on without early media);
4. a re-INVITE or UPDATE with an offer, or a PRACK with one after the first
   exchange: :meth:`CallMedia.reoffer`, then :meth:`answer` on
   the way back. A downgrade is refused with 488 and the relay keeps working
   on the old keys until an answer is accepted.

A request without an offer (late offer) is forwarded without one
(:meth:`CallMedia.expect_offer`); the 2xx, or a reliable provisional response
before it (RFC 3262 §5), then carries the other side's offer, which
:meth:`answer` judges and turns into our offer to the request's sender, whose
answer comes in the ACK, or in the PRACK for a provisional
(:meth:`CallMedia.ack`).

:meth:`CallMedia.close` releases the ports and returns both legs' counters
for the call's record. Keys are never copied between legs: our lines are
made with fresh randomness for each leg, and the rewriter drops every
incoming key line. Only the first audio stream is relayed; other streams
(video, T.38) are declined with port 0.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from appliance.media.policy import (
    Accept,
    AckThenBye,
    OfferPlan,
    Profile,
    Reject,
    SrtpPolicy,
    bridge,
    check_answer,
    plan_offer,
    profile_of,
)
from appliance.media.relay import Cipher, MediaIdle, MediaSession
from appliance.media.relay import Leg as RelayLeg
from appliance.media.sdes import CryptoAttribute, RandomBytes
from appliance.media.sdp import MediaRewrite, Origin, SessionDescription, rewrite_for_leg
from appliance.media.srtp import Direction, SrtpContext
from appliance.sip.errors import SipError
from appliance.sip.message import Message
from appliance.sip.sdp_exchange import (
    REJECT_NO_ANSWER,
    Exchange,
    MediaPolicyError,
    Offer,
    Refused,
    Side,
    read_offer,
    sdp_of,
)

#: Where the plan for our own offer in a 2xx (late offer) is kept: the answer
#: comes in the ACK, not on a branch.
ACK = "ack"
#: The hold address of RFC 2543: the peer receives nothing, so nothing is expected.
_UNSPECIFIED = frozenset({"0.0.0.0", "::"})  # noqa: S104 (SDP addresses, not binds)


class MediaPorts(Protocol):
    """The relay as the proxy drives it (:class:`appliance.media.udp.MediaSockets`
    in the service, a bare :class:`appliance.media.relay.Relay` in tests)."""

    def open(self, call_id: str, now: float) -> MediaSession | None:
        """Ports for both legs of a new call, or None when none can be had."""

    def close(self, call_id: str) -> MediaSession | None:
        """Release a call's ports; its session, for the counters."""

    def expire_idle(self, now: float) -> list[MediaIdle]:
        """Calls whose media has been silent both ways for the idle time."""

    def configure(
        self,
        leg: RelayLeg,
        *,
        expected: tuple[str, int] | None,
        rtcp_mux: bool,
        inbound: Cipher | None,
        outbound: Cipher | None,
        suite: str | None,
        now: float,
    ) -> None:
        """Set a leg from its negotiated SDP."""


class CallMedia:
    """One call's media: two sides, the exchange in flight, the relay session."""

    def __init__(
        self,
        ports: MediaPorts,
        session: MediaSession,
        address: str,
        caller: Side,
        callee: Side,
        offer: Offer | None,
    ) -> None:
        self.ports = ports
        self.session = session
        self.address = address
        self.caller = caller
        self.callee = callee
        #: Whether either side has put the stream on hold (no media expected).
        self.on_hold = False
        #: Bodies already written, by (branch, the SDP they answer or offer):
        #: retransmissions, and a 2xx repeating its 18x's answer, get the same
        #: bytes, even once a later exchange has started.
        self.written: dict[tuple[str, bytes], bytes] = {}
        #: Branches sent without an offer: whether the 2xx bringing one comes
        #: from the caller's side.
        self.late: dict[str, bool] = {}
        #: Whether we offered in a 2xx and the answer is due in the ACK.
        self.awaiting_ack = False
        self.exchange: Exchange | None = None
        if offer is not None:
            self.exchange = self._exchange(caller, callee, offer)

    def _exchange(self, offerer: Side, answerer: Side, offer: Offer) -> Exchange:
        origins = offerer.next_origin(self.address), answerer.next_origin(self.address)
        return Exchange(offerer, answerer, offer, *origins)

    @property
    def index(self) -> int | None:
        """The relayed media section (fixed by the first offer, RFC 3264 §8)."""
        return None if self.exchange is None else self.exchange.offer.index

    @classmethod
    def open(
        cls,
        ports: MediaPorts,
        call_id: str,
        offer: Offer | None,
        *,
        address: str,
        caller: tuple[SrtpPolicy, str],
        callee_policy: SrtpPolicy,
        now: float,
    ) -> CallMedia:
        """Take the relay's ports for a new call (raise 503 when there are none).
        ``offer`` is None for an INVITE without one (late offer)."""
        session = ports.open(call_id, now)
        if session is None:
            raise SipError(503, "Service Unavailable (no media ports)")
        policy, transport = caller
        return cls(
            ports,
            session,
            address,
            Side(policy, transport, session.a),
            Side(callee_policy, None, session.b),
            offer,
        )

    def offer_body(self, branch_id: str, plan: OfferPlan) -> bytes:
        """The SDP for one branch of the exchange in flight, offering ``plan``."""
        exchange = self._current()
        exchange.plans[branch_id] = plan
        offer = exchange.offer
        rewrite = MediaRewrite(
            self.address,
            exchange.answerer.leg.rtp_port,
            rtcp_mux=offer.rtcp_mux,
            srtp=plan.profile is Profile.SAVP,
            crypto=plan.lines,
        )
        return _write(offer.description, exchange.answerer_origin, rewrite, offer.index)

    def _current(self) -> Exchange:
        assert self.exchange is not None, "no offer yet"
        return self.exchange

    def expect_offer(self, branch_id: str, *, from_caller: bool) -> None:
        """``branch_id`` carries a request without an offer (late offer): the 2xx
        answering it brings one, from the caller's side if ``from_caller``."""
        self._check_idle()
        self.late[branch_id] = from_caller

    def rebranch(self, old_id: str, new_id: str) -> None:
        """A branch re-sent with credentials keeps the offer it carried."""
        if old_id in self.late:
            self.late[new_id] = self.late[old_id]
        elif self.exchange is not None and old_id in self.exchange.plans:
            self.exchange.plans[new_id] = self.exchange.plans[old_id]

    def answer(
        self, branch_id: str, message: Message, transport: str, now: float, *, final: bool
    ) -> bytes | Refused | None:
        """Judge the answer in ``message`` (a 18x or 2xx on ``branch_id``, signalled
        over ``transport``) and write the offerer's answer; on a branch sent
        without an offer, take the 2xx's offer and write ours to the other side.

        Returns the body to send upstream (``b""`` drops an unusable early
        answer), None when the response is not part of an exchange (no body,
        or an answer already given), or :class:`Refused` for a 2xx we must end.
        """
        written = self.written.get((branch_id, message.body))
        if written is not None:
            return written
        if branch_id in self.late:
            return self._late_offer(branch_id, message, transport, final=final)
        exchange = self.exchange
        plan = None if exchange is None else exchange.plans.get(branch_id)
        if exchange is None or plan is None:
            # A 2xx on a branch we hold no offer for, while no answer has set the
            # call's media, would bring the call up with no media path: refused.
            unanswered = exchange is not None and not exchange.answered
            return Refused(REJECT_NO_ANSWER) if final and unanswered else None
        try:
            description = sdp_of(message)
        except SipError:
            return Refused(REJECT_NO_ANSWER) if final else b""
        if description is None:
            return Refused(REJECT_NO_ANSWER) if final and not exchange.answered else None
        decision = _judge(exchange, plan, description)
        if isinstance(decision, Reject):
            return Refused(decision) if final else b""
        self._apply(exchange, decision, description, transport, now)
        body = _answer_body(exchange, description, self.address)
        self.written[(branch_id, message.body)] = body
        exchange.answered = True
        return body

    def _late_offer(
        self, branch_id: str, message: Message, transport: str, *, final: bool
    ) -> bytes | Refused | None:
        """The offer in the 2xx (or a reliable 18x) to a request we sent without
        one: judged under the sending side's policy, and our offer to the other
        side written; its answer comes in the ACK or PRACK (:meth:`ack`). An
        offer a reliable 18x makes that we cannot take is dropped (the 2xx may
        offer again); a 2xx's is refused."""
        if not final and not (message.body and _reliable(message)):
            return b"" if message.body else None  # no offer here
        from_caller = self.late[branch_id]
        offerer, answerer = (
            (self.caller, self.callee) if from_caller else (self.callee, self.caller)
        )
        offerer.transport = offerer.transport or transport
        assert answerer.transport is not None
        try:
            offer = read_offer(
                message, offerer.policy, offerer.transport, current=offerer.mode, index=self.index
            )
        except MediaPolicyError as refused:
            return _refuse_offer(refused.reject, final=final)
        except SipError:
            return _refuse_offer(REJECT_NO_ANSWER, final=final)
        if offer is None:
            return _refuse_offer(REJECT_NO_ANSWER, final=final)
        plan = plan_offer(answerer.policy, answerer.transport, current=answerer.mode)
        if isinstance(plan, Reject):
            return _refuse_offer(plan, final=final)
        del self.late[branch_id]
        self.exchange = self._exchange(offerer, answerer, offer)
        body = self.offer_body(ACK, plan)
        self.written[(branch_id, message.body)] = body
        self.awaiting_ack = True
        return body

    def ack(self, message: Message, now: float) -> bytes | Refused:
        """The ACK (or, after a reliable provisional, the PRACK) answering the
        offer we made in that response: the answer judged, both legs set, and
        the answer written for the side that offered."""
        self.awaiting_ack = False
        exchange = self._current()
        plan = exchange.plans.pop(ACK, None)
        try:
            description = sdp_of(message)
        except SipError:
            description = None
        if description is None or plan is None:
            return Refused(REJECT_NO_ANSWER)
        decision = _judge(exchange, plan, description)
        if isinstance(decision, Reject):
            return Refused(decision)
        assert exchange.answerer.transport is not None
        self._apply(exchange, decision, description, exchange.answerer.transport, now)
        exchange.answered = True
        return _answer_body(exchange, description, self.address)

    def _apply(
        self,
        exchange: Exchange,
        theirs: Accept,
        answer: SessionDescription,
        transport: str,
        now: float,
    ) -> None:
        """Point both relay legs at the new descriptions, with their keys."""
        offer = exchange.offer
        offer_section = offer.description.media[offer.index]
        answer_section = answer.media[offer.index]
        for side, accept, description, section in (
            (exchange.offerer, offer.accept, offer.description, offer_section),
            (exchange.answerer, theirs, answer, answer_section),
        ):
            connection = description.connection_of(section)
            expected = None
            if connection is not None and connection.address not in _UNSPECIFIED:
                expected = (connection.address, section.port)
            self.ports.configure(
                side.leg,
                expected=expected,
                rtcp_mux=offer_section.rtcp_mux and answer_section.rtcp_mux,
                inbound=_context(accept.inbound, Direction.INBOUND),
                outbound=_context(accept.outbound, Direction.OUTBOUND),
                suite=None if accept.mode.suite is None else accept.mode.suite.value,
                now=now,
            )
            side.mode = accept.mode
        exchange.answerer.transport = transport
        self.session.last_activity = now
        self.on_hold = offer.description.is_on_hold(offer_section) or answer.is_on_hold(
            answer_section
        )

    def reoffer(
        self,
        branch_id: str,
        message: Message,
        *,
        from_caller: bool,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> bytes:
        """A re-INVITE, UPDATE or PRACK offer from one side: the body for the other side,
        or the SipError refusing it (nothing changes until an answer is accepted)."""
        self._check_idle()
        offerer, answerer = (
            (self.caller, self.callee) if from_caller else (self.callee, self.caller)
        )
        assert offerer.transport is not None and answerer.transport is not None
        offer = read_offer(
            message,
            offerer.policy,
            offerer.transport,
            current=offerer.mode,
            index=self.index,
            random_bytes=random_bytes,
        )
        assert offer is not None
        plan = plan_offer(
            answerer.policy, answerer.transport, current=answerer.mode, random_bytes=random_bytes
        )
        if isinstance(plan, Reject):
            raise MediaPolicyError(plan)
        self.exchange = self._exchange(offerer, answerer, offer)
        return self.offer_body(branch_id, plan)

    def _check_idle(self) -> None:
        """491 while another offer is unanswered (RFC 3261 §14.1)."""
        exchange = self.exchange
        pending = exchange is not None and bool(exchange.plans) and not exchange.answered
        if pending or self.late or self.awaiting_ack:
            raise SipError(491, "Request Pending")

    def failed(self, branch_id: str) -> None:
        """A branch's request was turned down (a non-2xx final): forget what it
        was offered, or that it was waiting for an offer."""
        self.late.pop(branch_id, None)
        if self.exchange is not None:
            self.exchange.plans.pop(branch_id, None)

    def close(self) -> dict[str, object]:
        """Release the ports; each leg's counters for the call's record."""
        session = self.ports.close(self.session.call_id) or self.session
        return {"caller": session.a.counters(), "callee": session.b.counters()}


def _refuse_offer(reject: Reject, *, final: bool) -> Refused | bytes:
    """A 2xx's offer we cannot take ends its dialog; a reliable 18x's is dropped."""
    return Refused(reject) if final else b""


def _reliable(response: Message) -> bool:
    """A provisional response sent reliably (RFC 3262: ``Require: 100rel``), which
    may carry an offer; its answer then comes in the PRACK."""
    return any(option.lower() == "100rel" for option in response.values("require"))


def _judge(exchange: Exchange, plan: OfferPlan, answer: SessionDescription) -> Accept | Reject:
    """The answerer's leg if ``answer`` to ``plan`` is usable, else why not."""
    index = exchange.offer.index
    if index >= len(answer.media):
        return REJECT_NO_ANSWER
    section = answer.media[index]
    profile = profile_of(section.proto)
    if section.is_disabled or profile is None:
        return REJECT_NO_ANSWER
    checked = check_answer(plan, profile, section.crypto)
    if isinstance(checked, AckThenBye):
        return checked.upstream
    try:
        bridge(exchange.offer.accept, checked)
    except ValueError:
        return REJECT_NO_ANSWER
    return checked


def _answer_body(exchange: Exchange, answer: SessionDescription, address: str) -> bytes:
    """Our answer to the offerer: the answerer's description, our side of the relay."""
    offer = exchange.offer
    offered = offer.description.media[offer.index]
    accept = offer.accept
    rewrite = MediaRewrite(
        address,
        exchange.offerer.leg.rtp_port,
        rtcp_mux=offered.rtcp_mux and answer.media[offer.index].rtcp_mux,
        srtp=profile_of(offered.proto) is Profile.SAVP,
        crypto=() if accept.crypto_line is None else (accept.crypto_line,),
    )
    return _write(answer, exchange.offerer_origin, rewrite, offer.index)


def _write(
    description: SessionDescription, origin: Origin, rewrite: MediaRewrite, index: int
) -> bytes:
    media = [rewrite if i == index else None for i in range(len(description.media))]
    return rewrite_for_leg(description, origin, media).encode()


def _context(attribute: CryptoAttribute | None, direction: Direction) -> SrtpContext | None:
    if attribute is None:
        return None
    return SrtpContext(attribute.suite.value, attribute.key, attribute.salt, direction)
