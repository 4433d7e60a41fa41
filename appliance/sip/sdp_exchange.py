"""One RFC 3264 offer/answer exchange on one leg of a relayed call: the offer
as read and judged under the leg's SRTP policy, and the state of each leg
(sans-I/O). :mod:`appliance.sip.call_media` runs the exchanges of a call.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from appliance.media.policy import (
    Accept,
    LegMode,
    OfferPlan,
    Reject,
    SrtpPolicy,
    answer_offer,
    plan_offer,
    profile_of,
)
from appliance.media.relay import Leg as RelayLeg
from appliance.media.sdes import RandomBytes
from appliance.media.sdp import Origin, SessionDescription, parse_sdp
from appliance.sip.errors import SipError
from appliance.sip.forwarding import SDP_TYPE, is_sdp
from appliance.sip.message import Message
from appliance.sip.registrar import Flow

_NOT_ACCEPTABLE = "Not Acceptable Here"
REJECT_NO_AUDIO = Reject(488, _NOT_ACCEPTABLE, "no RTP audio stream to relay")
REJECT_NO_ANSWER = Reject(488, _NOT_ACCEPTABLE, "no usable SDP answer")


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


class MediaPolicyError(SipError):
    """An offer the SRTP policy (or the relay) refuses: ``reject``'s status and
    Warning, kept whole so a refusal inside a 2xx can become :class:`Refused`."""

    def __init__(self, reject: Reject) -> None:
        super().__init__(reject.status, reject.reason, (("Warning", reject.warning),))
        self.reject = reject


def sdp_of(message: Message) -> SessionDescription | None:
    """The message's session description, None without a body (415 for a body
    that is not SDP, 400/488 for SDP we cannot read or relay)."""
    if not message.body:
        return None
    if not is_sdp(message):
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
) -> Offer | None:
    """Read the offer in ``message`` from a leg with ``policy`` signalled over
    ``transport`` and decide our answer; raise the SipError that refuses it.
    None when there is no offer (no body: a late offer).

    ``current`` and ``index`` are the leg's mode and relayed section before a
    re-INVITE: a re-offer keeps its streams in place (RFC 3264 §8).
    """
    description = sdp_of(message)
    if description is None:
        return None
    if index is None:
        index = _audio_index(description)
    elif index >= len(description.media) or description.media[index].is_disabled:
        raise MediaPolicyError(REJECT_NO_AUDIO)
    section = description.media[index]
    profile = profile_of(section.proto)
    if profile is None:
        raise MediaPolicyError(REJECT_NO_AUDIO)
    decision = answer_offer(
        policy, transport, profile, section.crypto, current=current, random_bytes=random_bytes
    )
    if isinstance(decision, Reject):
        raise MediaPolicyError(decision)
    return Offer(description, index, decision)


def _audio_index(description: SessionDescription) -> int:
    for index, section in enumerate(description.media):
        if section.media == "audio" and not section.is_disabled and profile_of(section.proto):
            return index
    raise MediaPolicyError(REJECT_NO_AUDIO)


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


def plan_targets(
    policy: SrtpPolicy, targets: list[tuple[Flow, str]]
) -> list[tuple[tuple[Flow, str], OfferPlan]]:
    """What each target is offered under the callee leg's ``policy``; targets the
    policy cannot serve are left out, and with none left the call is refused."""
    plans: list[tuple[tuple[Flow, str], OfferPlan]] = []
    refusals: list[Reject] = []
    for target in targets:
        plan = plan_offer(policy, target[0].transport)
        if isinstance(plan, Reject):
            refusals.append(plan)
        else:
            plans.append((target, plan))
    if not plans:
        raise MediaPolicyError(refusals[0])
    return plans
