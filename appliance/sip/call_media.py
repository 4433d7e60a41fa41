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
4. a re-INVITE or UPDATE: :meth:`CallMedia.reoffer`, then :meth:`answer` on
   the way back. A downgrade is refused with 488 and the relay keeps working
   on the old keys until an answer is accepted.

:meth:`CallMedia.close` releases the ports and returns both legs' counters
for the call's record. Keys are never copied between legs: our lines are
made with fresh randomness for each leg, and the rewriter drops every
incoming key line. Only the first audio stream is relayed; other streams
(video, T.38) are declined with port 0.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Protocol

from appliance.media.policy import (
    Accept,
    AckThenBye,
    LegMode,
    OfferPlan,
    Profile,
    Reject,
    SrtpPolicy,
    answer_offer,
    bridge,
    check_answer,
    plan_offer,
    profile_of,
)
from appliance.media.relay import Cipher, MediaIdle, MediaSession
from appliance.media.relay import Leg as RelayLeg
from appliance.media.sdes import CryptoAttribute, RandomBytes
from appliance.media.sdp import (
    MediaRewrite,
    Origin,
    SessionDescription,
    parse_sdp,
    rewrite_for_leg,
)
from appliance.media.srtp import Direction, SrtpContext
from appliance.sip.errors import SipError
from appliance.sip.message import Message

SDP_TYPE = "application/sdp"
_NOT_ACCEPTABLE = "Not Acceptable Here"
#: An INVITE (or re-INVITE) without an offer: the offer would come in the 2xx
#: and the answer in the ACK, which this relay does not negotiate yet.
REJECT_LATE_OFFER = Reject(488, _NOT_ACCEPTABLE, "an SDP offer is required in the INVITE")
REJECT_NO_AUDIO = Reject(488, _NOT_ACCEPTABLE, "no RTP audio stream to relay")
REJECT_NO_ANSWER = Reject(488, _NOT_ACCEPTABLE, "no usable SDP answer")
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


@dataclass(frozen=True)
class Refused:
    """A 2xx answer we cannot use: ACK it, BYE the leg, answer ``reject`` upstream."""

    reject: Reject


@dataclass(frozen=True)
class Offer:
    """A peer's offer, read: the description, which section is relayed, and our
    answer to it (its mode and keys)."""

    description: SessionDescription
    index: int
    accept: Accept

    @property
    def rtcp_mux(self) -> bool:
        """Whether the offerer proposed rtcp-mux (we accept it, and propose it on)."""
        return self.description.media[self.index].rtcp_mux


def rejected(reject: Reject) -> SipError:
    """The SipError answering with ``reject``'s status and Warning."""
    return SipError(reject.status, reject.reason, (("Warning", reject.warning),))


def sdp_of(message: Message) -> SessionDescription | None:
    """The message's session description, None without a body (415 for a body
    that is not SDP, 400/488 for SDP we cannot read or relay)."""
    if not message.body:
        return None
    content_type = (message.first("content-type") or "").split(";")[0].strip().lower()
    if content_type != SDP_TYPE:
        raise SipError(415, "Unsupported Media Type", (("Accept", SDP_TYPE),))
    return parse_sdp(message.body)


def read_offer(
    message: Message,
    policy: SrtpPolicy,
    transport: str,
    *,
    current: LegMode | None = None,
    index: int | None = None,
    random_bytes: RandomBytes = secrets.token_bytes,
) -> Offer:
    """Read the offer in ``message`` from a leg with ``policy`` signalled over
    ``transport`` and decide our answer; raise the SipError that refuses it.

    ``current`` and ``index`` are the leg's mode and relayed section before a
    re-INVITE: a re-offer keeps its streams in place (RFC 3264 §8).
    """
    description = sdp_of(message)
    if description is None:
        raise rejected(REJECT_LATE_OFFER)
    if index is None:
        index = _audio_index(description)
    elif index >= len(description.media) or description.media[index].is_disabled:
        raise rejected(REJECT_NO_AUDIO)
    section = description.media[index]
    profile = profile_of(section.proto)
    if profile is None:
        raise rejected(REJECT_NO_AUDIO)
    decision = answer_offer(
        policy, transport, profile, section.crypto, current=current, random_bytes=random_bytes
    )
    if isinstance(decision, Reject):
        raise rejected(decision)
    return Offer(description, index, decision)


def _audio_index(description: SessionDescription) -> int:
    for index, section in enumerate(description.media):
        if section.media == "audio" and not section.is_disabled and profile_of(section.proto):
            return index
    raise rejected(REJECT_NO_AUDIO)


@dataclass
class Side:
    """One leg as negotiated: its policy and transport, its relay leg, its mode
    (None before the first answer) and the ``o=`` line we write toward it."""

    policy: SrtpPolicy
    transport: str | None
    leg: RelayLeg
    session_id: int = field(default_factory=lambda: secrets.randbelow(2**62))
    version: int = 0
    mode: LegMode | None = None

    def next_origin(self, address: str) -> Origin:
        """Our ``o=`` for the next description this side gets (version + 1)."""
        self.version += 1
        return Origin.for_address(address, self.session_id, self.version)


@dataclass
class Exchange:
    """One offer in flight: who made it, our answer to them, and what each
    branch toward the other side was offered."""

    offerer: Side
    answerer: Side
    offer: Offer
    offerer_origin: Origin
    answerer_origin: Origin
    plans: dict[str, OfferPlan] = field(default_factory=dict)
    answered: bool = False


class CallMedia:
    """One call's media: two sides, the exchange in flight, the relay session."""

    def __init__(
        self,
        ports: MediaPorts,
        session: MediaSession,
        address: str,
        caller: Side,
        callee: Side,
        offer: Offer,
    ) -> None:
        self.ports = ports
        self.session = session
        self.address = address
        self.caller = caller
        self.callee = callee
        self.index = offer.index
        #: Whether either side has put the stream on hold (no media expected).
        self.on_hold = False
        #: Bodies already written for an answer, by (branch, the answer's SDP):
        #: retransmissions, and a 2xx repeating its 18x's answer, get the same
        #: bytes, even once a later exchange has started.
        self.written: dict[tuple[str, bytes], bytes] = {}
        self.exchange = Exchange(
            caller, callee, offer, caller.next_origin(address), callee.next_origin(address)
        )

    @classmethod
    def open(
        cls,
        ports: MediaPorts,
        call_id: str,
        offer: Offer,
        *,
        address: str,
        caller: tuple[SrtpPolicy, str],
        callee_policy: SrtpPolicy,
        now: float,
    ) -> CallMedia:
        """Take the relay's ports for a new call (raise 503 when there are none)."""
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
        exchange = self.exchange
        exchange.plans[branch_id] = plan
        section = exchange.offer.description.media[self.index]
        rewrite = MediaRewrite(
            self.address,
            exchange.answerer.leg.rtp_port,
            rtcp_mux=section.rtcp_mux,
            srtp=plan.profile is Profile.SAVP,
            crypto=plan.lines,
        )
        return self._write(exchange.offer.description, exchange.answerer_origin, rewrite)

    def rebranch(self, old_id: str, new_id: str) -> None:
        """A branch re-sent with credentials keeps the offer it carried."""
        plan = self.exchange.plans.get(old_id)
        if plan is not None:
            self.exchange.plans[new_id] = plan

    def answer(
        self, branch_id: str, message: Message, transport: str, now: float, *, final: bool
    ) -> bytes | Refused | None:
        """Judge the answer in ``message`` (a 18x or 2xx on ``branch_id``, signalled
        over ``transport``) and write the offerer's answer.

        Returns the body to send upstream (``b""`` drops an unusable early
        answer), None when the response is not part of the exchange (no body,
        or an answer already given), or :class:`Refused` for a 2xx we must end.
        """
        written = self.written.get((branch_id, message.body))
        if written is not None:
            return written
        exchange = self.exchange
        plan = exchange.plans.get(branch_id)
        if plan is None:
            return None
        try:
            description = sdp_of(message)
        except SipError:
            description = None
            if not final:
                return b""
            return Refused(REJECT_NO_ANSWER)
        if description is None:
            if final and not exchange.answered:
                return Refused(REJECT_NO_ANSWER)
            return None
        decision = self._judge(plan, description)
        if isinstance(decision, Reject):
            return Refused(decision) if final else b""
        self._apply(exchange, decision, description, transport, now)
        body = self._answer_body(exchange, description)
        self.written[(branch_id, message.body)] = body
        exchange.answered = True
        return body

    def _judge(self, plan: OfferPlan, answer: SessionDescription) -> Accept | Reject:
        if self.index >= len(answer.media):
            return REJECT_NO_ANSWER
        section = answer.media[self.index]
        profile = profile_of(section.proto)
        if section.is_disabled or profile is None:
            return REJECT_NO_ANSWER
        checked = check_answer(plan, profile, section.crypto)
        if isinstance(checked, AckThenBye):
            return checked.upstream
        try:
            bridge(self.exchange.offer.accept, checked)
        except ValueError:
            return REJECT_NO_ANSWER
        return checked

    def _apply(
        self,
        exchange: Exchange,
        theirs: Accept,
        answer: SessionDescription,
        transport: str,
        now: float,
    ) -> None:
        """Point both relay legs at the new descriptions, with their keys."""
        ours = exchange.offer.accept
        offer_section = exchange.offer.description.media[self.index]
        answer_section = answer.media[self.index]
        for side, accept, description, section in (
            (exchange.offerer, ours, exchange.offer.description, offer_section),
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
        self.on_hold = exchange.offer.description.is_on_hold(offer_section) or answer.is_on_hold(
            answer_section
        )

    def _answer_body(self, exchange: Exchange, answer: SessionDescription) -> bytes:
        accept = exchange.offer.accept
        offered = exchange.offer.description.media[self.index]
        rewrite = MediaRewrite(
            self.address,
            exchange.offerer.leg.rtp_port,
            rtcp_mux=offered.rtcp_mux and answer.media[self.index].rtcp_mux,
            srtp=profile_of(offered.proto) is Profile.SAVP,
            crypto=() if accept.crypto_line is None else (accept.crypto_line,),
        )
        return self._write(answer, exchange.offerer_origin, rewrite)

    def _write(
        self, description: SessionDescription, origin: Origin, rewrite: MediaRewrite
    ) -> bytes:
        media = [rewrite if i == self.index else None for i in range(len(description.media))]
        return rewrite_for_leg(description, origin, media).encode()

    def reoffer(
        self,
        branch_id: str,
        message: Message,
        *,
        from_caller: bool,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> bytes:
        """A re-INVITE or UPDATE offer from one side: the body for the other side,
        or the SipError refusing it (nothing changes until an answer is accepted)."""
        if self.exchange.plans and not self.exchange.answered:
            raise SipError(491, "Request Pending")
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
        plan = plan_offer(
            answerer.policy, answerer.transport, current=answerer.mode, random_bytes=random_bytes
        )
        if isinstance(plan, Reject):
            raise rejected(plan)
        self.exchange = Exchange(
            offerer,
            answerer,
            offer,
            offerer.next_origin(self.address),
            answerer.next_origin(self.address),
        )
        return self.offer_body(branch_id, plan)

    def failed(self, branch_id: str) -> None:
        """A branch's offer was turned down (a non-2xx final): forget its plan."""
        self.exchange.plans.pop(branch_id, None)

    def close(self) -> dict[str, object]:
        """Release the ports; each leg's counters for the call's record."""
        session = self.ports.close(self.session.call_id) or self.session
        return {"caller": session.a.counters(), "callee": session.b.counters()}


def _context(attribute: CryptoAttribute | None, direction: Direction) -> SrtpContext | None:
    if attribute is None:
        return None
    return SrtpContext(attribute.suite.value, attribute.key, attribute.salt, direction)
