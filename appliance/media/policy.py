"""SRTP policy: what each leg of a call offers, answers and accepts (sans-I/O).

Every trunk, and every tenant for its phones, sets ``srtp`` to ``required``,
``optional`` or ``off``. Each leg is decided on its own, because the relay
terminates media on both sides (:mod:`appliance.media.relay`): a phone on plain
RTP can call a trunk that requires SRTP, and the relay bridges RTP ↔ SRTP.
Every decision below returns the leg's :class:`LegMode` (plain, or SRTP and the
suite) with its keys, so the relay knows what to do on each side::

    caller ──offer──► answer_offer() ─► Accept(mode A) │ Reject(488/500, Warning)
                                                     │
                          plan_offer() ◄─────────────┘ (per callee leg)
                               │ OfferPlan(kind, profile, our lines) │ Reject(500)
                               ▼
    callee ◄──offer──   ──answer──► check_answer() ─► Accept(mode B) │ AckThenBye(488)
                                                     │
                          bridge(A, B) ─► MediaPlan: per-leg modes for the relay

SDES keys travel in the SDP, so ``a=crypto`` is only ever sent on legs
signalled over TLS. A leg signalled over UDP or TCP is :attr:`Signalling.CLEAR`:
it never gets crypto from us, and a configuration that requires SRTP on one is
an error :func:`check_config` reports (and the tables refuse, failing closed).

How we answer an offer (:data:`ANSWER_TABLE`). Offer classes: ``plain`` is
RTP/AVP without an acceptable ``a=crypto``; ``best-effort`` is RTP/AVP with one
(baresip's ``mediaenc=srtp``; the answer may drop the crypto and stay plain);
``srtp`` is RTP/SAVP with one; ``unusable`` is RTP/SAVP without one::

    policy    signalling │ plain     best-effort  srtp           unusable
    ─────────────────────┼─────────────────────────────────────────────────────
    required  tls        │ 488 req   SRTP         SRTP           488 suite
    required  clear      │ 500 conf  500 conf     500 conf       500 conf
    optional  tls        │ plain     SRTP         SRTP           488 suite
    optional  clear      │ plain     plain        488 tls        488 tls
    off       tls        │ plain     plain        488 off        488 off
    off       clear      │ plain     plain        488 off        488 off

``488 off``: answering an RTP/SAVP offer with RTP/AVP would reject the stream
(RFC 4568 §7.1.3); for the sole audio stream that is a failed call, so we say
so with 488 and a Warning instead of a confusing answer. ``plain`` for a
best-effort offer answers RTP/AVP without crypto; the offerer's keys are then
unused. Then the never-downgrade rule: on a re-INVITE, a leg that is SRTP is
never answered plain (488 ``downgrade``, whatever the row says), and the
existing session stays as it was (the caller changes nothing on a Reject).

What we offer a leg (:data:`OFFER_TABLE`), by its current state (``new`` for
the initial INVITE)::

    policy    signalling │ new            plain          srtp
    ─────────────────────┼──────────────────────────────────────────
    required  tls        │ srtp           srtp           srtp
    required  clear      │ 500 conf       500 conf       500 conf
    optional  tls        │ best-effort    best-effort    srtp
    optional  clear      │ plain          plain          500 downgrade
    off       any        │ plain          plain          500 downgrade

``srtp`` is RTP/SAVP with our lines (no plain answer possible); ``best-effort``
is RTP/AVP with our lines, so a peer without SRTP can answer plain: "use SRTP
if the peer accepts it", without RFC 5939 capability negotiation, which phones
rarely implement. A leg already on SRTP is offered RTP/SAVP only: optional
never means a silent downgrade. ``off`` never offers crypto, and an ``off``
leg that is somehow SRTP (the policy changed mid-call) is not re-offered at
all rather than downgraded or given keys against its policy.

How we judge the answer to our offer (:data:`ANSWER_CHECK_TABLE`). Answer
classes: ``matched`` has exactly one acceptable line whose tag and suite are
one of ours; ``none`` is RTP/AVP without ``a=crypto``; ``invalid`` is
anything else (a bad, foreign or extra line, RTP/SAVP without crypto)::

    we offered   │ matched      none           invalid
    ─────────────┼────────────────────────────────────────
    srtp         │ SRTP         ACK+BYE        ACK+BYE
    best-effort  │ SRTP         plain          ACK+BYE
    plain        │ ACK+BYE      plain          ACK+BYE

An answer arrives in a 2xx that cannot be refused: ``ACK+BYE`` tells the
caller to ACK it, BYE that leg and answer upstream with the 488 it carries
(or try the next route). A stray ``a=crypto`` in the answer to a plain offer
names a key we never offered, so the peer would send media we cannot read: it
is refused the same way. The answer's profile is not compared with the
offer's beyond that: a matched key is secure whatever the m-line says.

Warnings are ``399 telemancer "<text>"`` (RFC 3261 §20.43): a phone or a
carrier's support desk can tell why the call failed. They never carry keys.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from .sdes import (
    OFFER_ORDER,
    CryptoAttribute,
    RandomBytes,
    Suite,
    answer_for,
    choose_offered,
    offer_lines,
    select_answer,
)

#: The warn-agent of our Warning header values.
WARN_AGENT = "telemancer"


class SrtpPolicy(StrEnum):
    """A trunk's or a tenant's ``srtp`` setting."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    OFF = "off"


class Signalling(StrEnum):
    """Whether a leg's SIP travels over TLS, the only transport that may carry keys."""

    TLS = "tls"
    #: UDP or TCP (or anything unknown: fail closed).
    CLEAR = "clear"


def signalling_of(transport: str) -> Signalling:
    """The :class:`Signalling` of a SIP transport name (``"tls"``, ``"tcp"``, ``"udp"``)."""
    return Signalling.TLS if transport.lower() == "tls" else Signalling.CLEAR


class Profile(StrEnum):
    """An m-line's RTP transport profile, feedback variants folded in."""

    AVP = "RTP/AVP"
    SAVP = "RTP/SAVP"


def profile_of(proto: str) -> Profile | None:
    """The profile of an m-line ``proto`` (the AVPF/SAVPF feedback variants
    fold into AVP/SAVP), or ``None`` for one we do not relay, such as
    DTLS-SRTP's ``UDP/TLS/RTP/SAVP``: the caller answers such a stream 488."""
    return _PROFILES.get(proto.upper())


_PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        "RTP/AVP": Profile.AVP,
        "RTP/AVPF": Profile.AVP,
        "RTP/SAVP": Profile.SAVP,
        "RTP/SAVPF": Profile.SAVP,
    }
)


class Protection(StrEnum):
    """How media on one leg travels."""

    PLAIN = "plain"
    SRTP = "srtp"


@dataclass(frozen=True)
class LegMode:
    """A leg's media: plain RTP, or SRTP with ``suite``."""

    protection: Protection
    suite: Suite | None = None

    def __post_init__(self) -> None:
        if (self.protection is Protection.SRTP) != (self.suite is not None):
            raise ValueError("an SRTP leg has a suite and a plain leg has none")


PLAIN = LegMode(Protection.PLAIN)


class LegState(StrEnum):
    """Where a leg stands when a new offer is made: before its first answer, or
    already established (re-INVITE) as plain or as SRTP."""

    NEW = "new"
    PLAIN = "plain"
    SRTP = "srtp"


def state_of(current: LegMode | None) -> LegState:
    """The :class:`LegState` of a leg whose negotiated mode is ``current``."""
    if current is None:
        return LegState.NEW
    return LegState.SRTP if current.protection is Protection.SRTP else LegState.PLAIN


class OfferClass(StrEnum):
    """What a peer's offer allows (see the module docstring)."""

    PLAIN = "plain"
    BEST_EFFORT = "best-effort"
    SRTP = "srtp"
    UNUSABLE = "unusable"


class OfferKind(StrEnum):
    """What we offer a leg."""

    PLAIN = "plain"
    BEST_EFFORT = "best-effort"
    SRTP = "srtp"


class AnswerClass(StrEnum):
    """What a peer's answer to our offer holds."""

    MATCHED = "matched"
    NO_CRYPTO = "none"
    INVALID = "invalid"


@dataclass(frozen=True)
class Reject:
    """Refuse the offer (or the call) with ``status`` and a Warning."""

    status: int
    reason: str
    warning_text: str

    @property
    def warning(self) -> str:
        """The Warning header value, e.g. ``399 telemancer "SRTP required"``."""
        return f'399 {WARN_AGENT} "{self.warning_text}"'


@dataclass(frozen=True)
class AckThenBye:
    """A 2xx answer we cannot use: ACK it, BYE the leg, then answer upstream
    with ``upstream`` (or try the next route)."""

    upstream: Reject


@dataclass(frozen=True)
class Accept:
    """Media on one leg is agreed: its mode and keys.

    ``inbound`` is the peer's line (it unprotects what the peer sends),
    ``outbound`` ours (it protects what we send); both ``None`` on a plain leg.
    ``crypto_line`` is the ``a=crypto`` value to put in our answer (only from
    :func:`answer_offer` on an SRTP leg); it carries our key, so no ``repr``.
    """

    mode: LegMode
    inbound: CryptoAttribute | None = None
    outbound: CryptoAttribute | None = None
    crypto_line: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class OfferPlan:
    """Our offer to one leg: its kind, m-line profile, our lines and their
    ``a=crypto`` values (in this order, tags 1, 2, 3...; no ``repr``)."""

    kind: OfferKind
    profile: Profile
    crypto: tuple[CryptoAttribute, ...] = ()
    lines: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class MediaPlan:
    """Both legs of a call for the relay: ``a`` faces the caller, ``b`` the callee."""

    a: Accept
    b: Accept

    @property
    def bridged(self) -> bool:
        """True when one leg is plain and the other SRTP (RTP ↔ SRTP)."""
        return self.a.mode.protection is not self.b.mode.protection


_NOT_ACCEPTABLE = "Not Acceptable Here"
_INTERNAL = "Server Internal Error"

REJECT_REQUIRED = Reject(488, _NOT_ACCEPTABLE, "SRTP required")
REJECT_NO_SUITE = Reject(488, _NOT_ACCEPTABLE, "no acceptable SRTP crypto suite")
REJECT_OFF = Reject(488, _NOT_ACCEPTABLE, "SRTP not enabled for this leg")
REJECT_CLEAR = Reject(488, _NOT_ACCEPTABLE, "SRTP keys need TLS signalling")
REJECT_DOWNGRADE = Reject(488, _NOT_ACCEPTABLE, "SRTP cannot be downgraded to RTP")
#: A leg that requires SRTP but is not signalled over TLS (see :func:`check_config`).
REJECT_CONFIG = Reject(500, _INTERNAL, "SRTP required but signalling is not TLS")
#: An SRTP leg whose policy no longer lets us offer it SRTP.
REJECT_OFFER_DOWNGRADE = Reject(500, _INTERNAL, "SRTP cannot be downgraded to RTP")
BYE_NO_SRTP = AckThenBye(Reject(488, _NOT_ACCEPTABLE, "callee did not accept SRTP"))
BYE_BAD_ANSWER = AckThenBye(Reject(488, _NOT_ACCEPTABLE, "unacceptable SRTP answer"))

_P, _S = Protection.PLAIN, Protection.SRTP
_REQ, _OPT, _OFF = SrtpPolicy.REQUIRED, SrtpPolicy.OPTIONAL, SrtpPolicy.OFF
_TLS, _CLEAR = Signalling.TLS, Signalling.CLEAR

#: (policy, signalling, offer class) → how we answer the offer.
ANSWER_TABLE: Mapping[tuple[SrtpPolicy, Signalling, OfferClass], Protection | Reject] = (
    MappingProxyType(
        {
            (_REQ, _TLS, OfferClass.PLAIN): REJECT_REQUIRED,
            (_REQ, _TLS, OfferClass.BEST_EFFORT): _S,
            (_REQ, _TLS, OfferClass.SRTP): _S,
            (_REQ, _TLS, OfferClass.UNUSABLE): REJECT_NO_SUITE,
            (_REQ, _CLEAR, OfferClass.PLAIN): REJECT_CONFIG,
            (_REQ, _CLEAR, OfferClass.BEST_EFFORT): REJECT_CONFIG,
            (_REQ, _CLEAR, OfferClass.SRTP): REJECT_CONFIG,
            (_REQ, _CLEAR, OfferClass.UNUSABLE): REJECT_CONFIG,
            (_OPT, _TLS, OfferClass.PLAIN): _P,
            (_OPT, _TLS, OfferClass.BEST_EFFORT): _S,
            (_OPT, _TLS, OfferClass.SRTP): _S,
            (_OPT, _TLS, OfferClass.UNUSABLE): REJECT_NO_SUITE,
            (_OPT, _CLEAR, OfferClass.PLAIN): _P,
            (_OPT, _CLEAR, OfferClass.BEST_EFFORT): _P,
            (_OPT, _CLEAR, OfferClass.SRTP): REJECT_CLEAR,
            (_OPT, _CLEAR, OfferClass.UNUSABLE): REJECT_CLEAR,
            (_OFF, _TLS, OfferClass.PLAIN): _P,
            (_OFF, _TLS, OfferClass.BEST_EFFORT): _P,
            (_OFF, _TLS, OfferClass.SRTP): REJECT_OFF,
            (_OFF, _TLS, OfferClass.UNUSABLE): REJECT_OFF,
            (_OFF, _CLEAR, OfferClass.PLAIN): _P,
            (_OFF, _CLEAR, OfferClass.BEST_EFFORT): _P,
            (_OFF, _CLEAR, OfferClass.SRTP): REJECT_OFF,
            (_OFF, _CLEAR, OfferClass.UNUSABLE): REJECT_OFF,
        }
    )
)

#: (policy, signalling, leg state) → what we offer the leg.
OFFER_TABLE: Mapping[tuple[SrtpPolicy, Signalling, LegState], OfferKind | Reject] = (
    MappingProxyType(
        {
            (_REQ, _TLS, LegState.NEW): OfferKind.SRTP,
            (_REQ, _TLS, LegState.PLAIN): OfferKind.SRTP,
            (_REQ, _TLS, LegState.SRTP): OfferKind.SRTP,
            (_REQ, _CLEAR, LegState.NEW): REJECT_CONFIG,
            (_REQ, _CLEAR, LegState.PLAIN): REJECT_CONFIG,
            (_REQ, _CLEAR, LegState.SRTP): REJECT_CONFIG,
            (_OPT, _TLS, LegState.NEW): OfferKind.BEST_EFFORT,
            (_OPT, _TLS, LegState.PLAIN): OfferKind.BEST_EFFORT,
            (_OPT, _TLS, LegState.SRTP): OfferKind.SRTP,
            (_OPT, _CLEAR, LegState.NEW): OfferKind.PLAIN,
            (_OPT, _CLEAR, LegState.PLAIN): OfferKind.PLAIN,
            (_OPT, _CLEAR, LegState.SRTP): REJECT_OFFER_DOWNGRADE,
            (_OFF, _TLS, LegState.NEW): OfferKind.PLAIN,
            (_OFF, _TLS, LegState.PLAIN): OfferKind.PLAIN,
            (_OFF, _TLS, LegState.SRTP): REJECT_OFFER_DOWNGRADE,
            (_OFF, _CLEAR, LegState.NEW): OfferKind.PLAIN,
            (_OFF, _CLEAR, LegState.PLAIN): OfferKind.PLAIN,
            (_OFF, _CLEAR, LegState.SRTP): REJECT_OFFER_DOWNGRADE,
        }
    )
)

#: (what we offered, what the answer holds) → the leg's protection, or ACK+BYE.
ANSWER_CHECK_TABLE: Mapping[tuple[OfferKind, AnswerClass], Protection | AckThenBye] = (
    MappingProxyType(
        {
            (OfferKind.SRTP, AnswerClass.MATCHED): _S,
            (OfferKind.SRTP, AnswerClass.NO_CRYPTO): BYE_NO_SRTP,
            (OfferKind.SRTP, AnswerClass.INVALID): BYE_BAD_ANSWER,
            (OfferKind.BEST_EFFORT, AnswerClass.MATCHED): _S,
            (OfferKind.BEST_EFFORT, AnswerClass.NO_CRYPTO): _P,
            (OfferKind.BEST_EFFORT, AnswerClass.INVALID): BYE_BAD_ANSWER,
            (OfferKind.PLAIN, AnswerClass.MATCHED): BYE_BAD_ANSWER,
            (OfferKind.PLAIN, AnswerClass.NO_CRYPTO): _P,
            (OfferKind.PLAIN, AnswerClass.INVALID): BYE_BAD_ANSWER,
        }
    )
)


def classify_offer(profile: Profile, crypto: Sequence[str]) -> OfferClass:
    """The :class:`OfferClass` of one offered stream: its profile and ``a=crypto`` values."""
    acceptable = choose_offered(crypto) is not None
    if profile is Profile.SAVP:
        return OfferClass.SRTP if acceptable else OfferClass.UNUSABLE
    return OfferClass.BEST_EFFORT if acceptable else OfferClass.PLAIN


def answer_offer(
    policy: SrtpPolicy,
    transport: str,
    profile: Profile,
    crypto: Sequence[str],
    *,
    current: LegMode | None = None,
    random_bytes: RandomBytes = secrets.token_bytes,
) -> Accept | Reject:
    """Decide how to answer a leg's offer (one audio stream), per :data:`ANSWER_TABLE`.

    ``transport`` is the leg's SIP transport, ``profile`` and ``crypto`` the
    offered m-line's profile and ``a=crypto`` values, ``current`` the leg's
    mode before a re-INVITE (``None`` for an initial INVITE). On :class:`Accept`
    the answer uses the offer's profile and, on SRTP, exactly one line:
    ``crypto_line``, with a fresh key. On :class:`Reject` nothing changes.
    """
    row = ANSWER_TABLE[policy, signalling_of(transport), classify_offer(profile, crypto)]
    if isinstance(row, Reject):
        return row
    if row is Protection.PLAIN:
        if state_of(current) is LegState.SRTP:
            return REJECT_DOWNGRADE
        return Accept(PLAIN)
    chosen = answer_for(crypto, random_bytes)
    if chosen is None:  # pragma: no cover - the offer was just classified acceptable
        return REJECT_NO_SUITE
    theirs, ours, line = chosen
    return Accept(LegMode(Protection.SRTP, ours.suite), theirs, ours, line)


def plan_offer(
    policy: SrtpPolicy,
    transport: str,
    *,
    current: LegMode | None = None,
    random_bytes: RandomBytes = secrets.token_bytes,
    suites: Sequence[Suite] = OFFER_ORDER,
) -> OfferPlan | Reject:
    """What to offer a leg, per :data:`OFFER_TABLE`, with fresh keys when it is SRTP.

    ``current`` is the leg's mode before a re-INVITE (``None`` for the
    initial INVITE); ``suites`` narrows what is offered (strongest first).
    Keep the plan: :func:`check_answer` needs it to judge the answer.
    """
    row = OFFER_TABLE[policy, signalling_of(transport), state_of(current)]
    if isinstance(row, Reject):
        return row
    if row is OfferKind.PLAIN:
        return OfferPlan(row, Profile.AVP)
    offered = offer_lines(random_bytes, suites)
    return OfferPlan(
        row,
        Profile.SAVP if row is OfferKind.SRTP else Profile.AVP,
        tuple(attribute for attribute, _ in offered),
        tuple(line for _, line in offered),
    )


def classify_answer(
    plan: OfferPlan, profile: Profile, crypto: Sequence[str]
) -> tuple[AnswerClass, CryptoAttribute | None]:
    """The :class:`AnswerClass` of an answer to ``plan``, and the peer's matched line."""
    if not crypto:
        return (AnswerClass.NO_CRYPTO if profile is Profile.AVP else AnswerClass.INVALID), None
    theirs = select_answer(plan.crypto, crypto)
    return (AnswerClass.INVALID if theirs is None else AnswerClass.MATCHED), theirs


def check_answer(plan: OfferPlan, profile: Profile, crypto: Sequence[str]) -> Accept | AckThenBye:
    """Judge a leg's answer to our ``plan``, per :data:`ANSWER_CHECK_TABLE`.

    On SRTP, ``inbound`` is the peer's answer line and ``outbound`` our offer
    line with the same tag.
    """
    answer_class, theirs = classify_answer(plan, profile, crypto)
    row = ANSWER_CHECK_TABLE[plan.kind, answer_class]
    if isinstance(row, AckThenBye):
        return row
    if row is Protection.PLAIN or theirs is None:
        return Accept(PLAIN)
    ours = next(attribute for attribute in plan.crypto if attribute.tag == theirs.tag)
    return Accept(LegMode(Protection.SRTP, theirs.suite), theirs, ours)


def bridge(a: Accept, b: Accept) -> MediaPlan:
    """Both legs' modes for the relay: ``a`` (caller side) and ``b`` (callee side).

    Raises :class:`ValueError` if any key appears on both legs: keys are never
    copied between legs, and a leg that echoed another's key is refused.
    """
    keys = [attr.key_salt for attr in (a.inbound, a.outbound) if attr is not None]
    for attr in (b.inbound, b.outbound):
        if attr is not None and any(secrets.compare_digest(attr.key_salt, k) for k in keys):
            raise ValueError("the same SRTP key appears on both legs")
    return MediaPlan(a, b)


def check_config(policy: SrtpPolicy | str, signalling_transport: str) -> str | None:
    """The problem with an ``srtp`` setting for a leg signalled over
    ``signalling_transport``, or ``None`` if it is sound.

    SDES keys travel in the SDP, so ``required`` needs TLS signalling: over
    UDP or TCP every call would fail (and the keys would be readable on the
    wire if we sent them). ``optional`` and ``off`` work everywhere: over UDP
    or TCP they mean plain RTP.
    """
    try:
        setting = SrtpPolicy(policy)
    except ValueError:
        return f"srtp must be one of {', '.join(p.value for p in SrtpPolicy)}"
    transport = signalling_transport.lower()
    if transport not in {"tls", "tcp", "udp"}:
        return f"unknown signalling transport {signalling_transport!r}"
    if setting is SrtpPolicy.REQUIRED and transport != "tls":
        return (
            f'srtp = "required" needs TLS signalling: SDES keys travel in the SDP,'
            f" and this leg is signalled over {transport.upper()}"
        )
    return None
