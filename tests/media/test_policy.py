"""SRTP policy decisions per leg (appliance.media.policy): every table row,
the never-downgrade rule, bridging and the configuration check."""

from __future__ import annotations

import base64
import hashlib
import itertools

import pytest

from appliance.media.policy import (
    ANSWER_CHECK_TABLE,
    ANSWER_TABLE,
    BYE_BAD_ANSWER,
    BYE_NO_SRTP,
    OFFER_TABLE,
    PLAIN,
    REJECT_CLEAR,
    REJECT_CONFIG,
    REJECT_DOWNGRADE,
    REJECT_NO_SUITE,
    REJECT_OFF,
    REJECT_OFFER_DOWNGRADE,
    REJECT_REQUIRED,
    Accept,
    AckThenBye,
    AnswerClass,
    LegMode,
    LegState,
    OfferClass,
    OfferKind,
    OfferPlan,
    Profile,
    Protection,
    Reject,
    Signalling,
    SrtpPolicy,
    answer_offer,
    bridge,
    check_answer,
    check_config,
    classify_answer,
    classify_offer,
    plan_offer,
    profile_of,
    signalling_of,
    state_of,
)
from appliance.media.sdes import OFFER_ORDER, Suite, parse_crypto


class CountingSource:
    """A deterministic random source: different bytes on every call."""

    def __init__(self) -> None:
        self.requests: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.requests.append(size)
        return hashlib.shake_256(b"policy" + len(self.requests).to_bytes(8, "big")).digest(size)


def crypto_line(suite: Suite, tag: int = 1, seed: bytes = b"peer") -> str:
    """A peer's ``a=crypto`` value for ``suite`` with a key derived from ``seed``."""
    key = hashlib.shake_256(seed + suite.value.encode()).digest(suite.key_salt_length)
    return f"{tag} {suite.value} inline:{base64.b64encode(key).decode()}"


PEER_LINE = crypto_line(Suite.AES_CM_128_HMAC_SHA1_80)
NULL_LINE = "1 NULL_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)).decode()
SRTP_MODE = LegMode(Protection.SRTP, Suite.AES_CM_128_HMAC_SHA1_80)

#: An offer of each class: its m-line profile and ``a=crypto`` values.
OFFERS: dict[OfferClass, tuple[Profile, list[str]]] = {
    OfferClass.PLAIN: (Profile.AVP, []),
    OfferClass.BEST_EFFORT: (Profile.AVP, [PEER_LINE]),
    OfferClass.SRTP: (Profile.SAVP, [PEER_LINE]),
    OfferClass.UNUSABLE: (Profile.SAVP, [NULL_LINE]),
}
REQ, OPT, OFF = SrtpPolicy.REQUIRED, SrtpPolicy.OPTIONAL, SrtpPolicy.OFF


# Small pieces


def test_signalling_of_transports() -> None:
    """Only TLS may carry keys; UDP, TCP and anything unknown are clear."""
    assert signalling_of("tls") is signalling_of("TLS") is Signalling.TLS
    for transport in ("udp", "tcp", "ws", ""):
        assert signalling_of(transport) is Signalling.CLEAR


def test_profile_of_m_line_protocols() -> None:
    """RTP profiles map to AVP/SAVP with feedback variants folded in; DTLS-SRTP
    and non-RTP protocols are not ours to answer."""
    assert profile_of("RTP/AVP") is profile_of("RTP/AVPF") is Profile.AVP
    assert profile_of("RTP/SAVP") is profile_of("rtp/savpf") is Profile.SAVP
    assert profile_of("UDP/TLS/RTP/SAVP") is None
    assert profile_of("udptl") is None


def test_leg_modes_are_consistent() -> None:
    """An SRTP mode names its suite and a plain one has none."""
    assert LegMode(Protection.PLAIN) == PLAIN
    with pytest.raises(ValueError, match="suite"):
        LegMode(Protection.SRTP)
    with pytest.raises(ValueError, match="suite"):
        LegMode(Protection.PLAIN, Suite.AEAD_AES_128_GCM)
    assert state_of(None) is LegState.NEW
    assert state_of(PLAIN) is LegState.PLAIN
    assert state_of(SRTP_MODE) is LegState.SRTP


def test_warning_header_value() -> None:
    """A rejection carries its status, reason phrase and a Warning value."""
    assert (REJECT_REQUIRED.status, REJECT_REQUIRED.reason) == (488, "Not Acceptable Here")
    assert REJECT_REQUIRED.warning == '399 telemancer "SRTP required"'
    assert REJECT_CONFIG.status == 500
    assert BYE_NO_SRTP.upstream.status == BYE_BAD_ANSWER.upstream.status == 488


@pytest.mark.parametrize(("offer_class", "offer"), OFFERS.items(), ids=str)
def test_offer_classes(offer_class: OfferClass, offer: tuple[Profile, list[str]]) -> None:
    """Profile and acceptable crypto together give the offer's class; refused
    lines count as no crypto."""
    assert classify_offer(*offer) is offer_class
    assert classify_offer(Profile.AVP, [NULL_LINE]) is OfferClass.PLAIN


def test_tables_are_complete() -> None:
    """Every combination has exactly one row in each table: nothing is decided
    by a fall-through default."""
    signalling, policies = list(Signalling), list(SrtpPolicy)
    assert set(ANSWER_TABLE) == set(itertools.product(policies, signalling, OfferClass))
    assert set(OFFER_TABLE) == set(itertools.product(policies, signalling, LegState))
    assert set(ANSWER_CHECK_TABLE) == set(itertools.product(OfferKind, AnswerClass))


# Answering an offer: every row of ANSWER_TABLE

S, P = "srtp", "plain"
ANSWER_ROWS: list[tuple[SrtpPolicy, str, OfferClass, str | Reject]] = [
    (REQ, "tls", OfferClass.PLAIN, REJECT_REQUIRED),
    (REQ, "tls", OfferClass.BEST_EFFORT, S),
    (REQ, "tls", OfferClass.SRTP, S),
    (REQ, "tls", OfferClass.UNUSABLE, REJECT_NO_SUITE),
    (REQ, "udp", OfferClass.PLAIN, REJECT_CONFIG),
    (REQ, "udp", OfferClass.BEST_EFFORT, REJECT_CONFIG),
    (REQ, "tcp", OfferClass.SRTP, REJECT_CONFIG),
    (REQ, "udp", OfferClass.UNUSABLE, REJECT_CONFIG),
    (OPT, "tls", OfferClass.PLAIN, P),
    (OPT, "tls", OfferClass.BEST_EFFORT, S),
    (OPT, "tls", OfferClass.SRTP, S),
    (OPT, "tls", OfferClass.UNUSABLE, REJECT_NO_SUITE),
    (OPT, "udp", OfferClass.PLAIN, P),
    (OPT, "udp", OfferClass.BEST_EFFORT, P),
    (OPT, "tcp", OfferClass.SRTP, REJECT_CLEAR),
    (OPT, "udp", OfferClass.UNUSABLE, REJECT_CLEAR),
    (OFF, "tls", OfferClass.PLAIN, P),
    (OFF, "tls", OfferClass.BEST_EFFORT, P),
    (OFF, "tls", OfferClass.SRTP, REJECT_OFF),
    (OFF, "tls", OfferClass.UNUSABLE, REJECT_OFF),
    (OFF, "udp", OfferClass.PLAIN, P),
    (OFF, "tcp", OfferClass.BEST_EFFORT, P),
    (OFF, "udp", OfferClass.SRTP, REJECT_OFF),
    (OFF, "udp", OfferClass.UNUSABLE, REJECT_OFF),
]


def test_answer_rows_cover_the_table() -> None:
    """The rows below are the whole of :data:`ANSWER_TABLE`."""
    assert {(p, signalling_of(t), c) for p, t, c, _ in ANSWER_ROWS} == set(ANSWER_TABLE)


@pytest.mark.parametrize(("policy", "transport", "offer_class", "expected"), ANSWER_ROWS)
def test_answer_table_row(
    policy: SrtpPolicy, transport: str, offer_class: OfferClass, expected: str | Reject
) -> None:
    """Each row: SRTP answers echo the accepted tag with a fresh key of ours;
    plain answers carry no keys; refusals carry their status and Warning."""
    profile, crypto = OFFERS[offer_class]
    source = CountingSource()
    decision = answer_offer(policy, transport, profile, crypto, random_bytes=source)
    if isinstance(expected, Reject):
        assert decision == expected
        assert decision.warning.startswith('399 telemancer "')
        assert source.requests == []
        return
    assert isinstance(decision, Accept)
    if expected == P:
        assert decision == Accept(PLAIN)
        assert source.requests == []
        return
    assert decision.mode == SRTP_MODE
    assert decision.inbound == parse_crypto(PEER_LINE)
    assert decision.outbound is not None and decision.crypto_line is not None
    assert parse_crypto(decision.crypto_line) == decision.outbound
    assert decision.outbound.tag == 1
    assert decision.outbound.key_salt != decision.inbound.key_salt
    assert source.requests == [30]


def test_required_leg_refuses_a_plain_offer_with_488_and_warning() -> None:
    """The product rule spelled out: required + RTP/AVP offer → 488 with
    ``Warning: 399 telemancer "SRTP required"``."""
    decision = answer_offer(REQ, "tls", Profile.AVP, [])
    assert isinstance(decision, Reject)
    assert (decision.status, decision.reason) == (488, "Not Acceptable Here")
    assert decision.warning == '399 telemancer "SRTP required"'


def test_answer_picks_the_offerers_first_acceptable_line() -> None:
    """With several acceptable lines the offerer's first one is answered, by
    its tag, and unacceptable lines before it are skipped."""
    crypto = [
        NULL_LINE,
        crypto_line(Suite.AEAD_AES_128_GCM, tag=5),
        crypto_line(Suite.AEAD_AES_256_GCM, tag=6),
    ]
    decision = answer_offer(OPT, "tls", Profile.SAVP, crypto, random_bytes=CountingSource())
    assert isinstance(decision, Accept) and decision.outbound is not None
    assert decision.mode == LegMode(Protection.SRTP, Suite.AEAD_AES_128_GCM)
    assert decision.outbound.tag == 5
    assert decision.crypto_line is not None and decision.crypto_line.startswith(
        "5 AEAD_AES_128_GCM"
    )


def test_two_answers_never_share_our_key() -> None:
    """Answering the same offer on two calls (or a re-INVITE) draws a new key each
    time, with the real random source."""
    first = answer_offer(REQ, "tls", Profile.SAVP, [PEER_LINE])
    second = answer_offer(REQ, "tls", Profile.SAVP, [PEER_LINE])
    assert isinstance(first, Accept) and isinstance(second, Accept)
    assert first.outbound is not None and second.outbound is not None
    assert first.outbound.key != second.outbound.key
    assert first.outbound.salt != second.outbound.salt


# The never-downgrade rule for re-INVITEs

PLAIN_ROWS = [row for row in ANSWER_ROWS if row[3] == P]
SRTP_ROWS = [row for row in ANSWER_ROWS if row[3] == S]


@pytest.mark.parametrize(("policy", "transport", "offer_class", "expected"), PLAIN_ROWS)
def test_reinvite_never_downgrades_an_srtp_leg(
    policy: SrtpPolicy, transport: str, offer_class: OfferClass, expected: str
) -> None:
    """A re-INVITE that would make an SRTP leg plain is refused 488 (the
    existing session is left alone), whatever the policy row says."""
    profile, crypto = OFFERS[offer_class]
    assert answer_offer(policy, transport, profile, crypto, current=SRTP_MODE) == REJECT_DOWNGRADE
    assert answer_offer(policy, transport, profile, crypto, current=PLAIN) == Accept(PLAIN)
    assert REJECT_DOWNGRADE.warning == '399 telemancer "SRTP cannot be downgraded to RTP"'


@pytest.mark.parametrize(("policy", "transport", "offer_class", "expected"), SRTP_ROWS)
def test_reinvite_keeps_or_upgrades_to_srtp(
    policy: SrtpPolicy, transport: str, offer_class: OfferClass, expected: str
) -> None:
    """A re-INVITE with SRTP is accepted on an SRTP leg (fresh keys) and on a
    plain leg (an upgrade)."""
    profile, crypto = OFFERS[offer_class]
    for current in (SRTP_MODE, PLAIN):
        decision = answer_offer(policy, transport, profile, crypto, current=current)
        assert isinstance(decision, Accept) and decision.mode == SRTP_MODE


# What we offer: every row of OFFER_TABLE

OFFER_ROWS: list[tuple[SrtpPolicy, str, LegMode | None, OfferKind | Reject]] = [
    (REQ, "tls", None, OfferKind.SRTP),
    (REQ, "tls", PLAIN, OfferKind.SRTP),
    (REQ, "tls", SRTP_MODE, OfferKind.SRTP),
    (REQ, "udp", None, REJECT_CONFIG),
    (REQ, "tcp", PLAIN, REJECT_CONFIG),
    (REQ, "udp", SRTP_MODE, REJECT_CONFIG),
    (OPT, "tls", None, OfferKind.BEST_EFFORT),
    (OPT, "tls", PLAIN, OfferKind.BEST_EFFORT),
    (OPT, "tls", SRTP_MODE, OfferKind.SRTP),
    (OPT, "udp", None, OfferKind.PLAIN),
    (OPT, "tcp", PLAIN, OfferKind.PLAIN),
    (OPT, "udp", SRTP_MODE, REJECT_OFFER_DOWNGRADE),
    (OFF, "tls", None, OfferKind.PLAIN),
    (OFF, "tls", PLAIN, OfferKind.PLAIN),
    (OFF, "tls", SRTP_MODE, REJECT_OFFER_DOWNGRADE),
    (OFF, "udp", None, OfferKind.PLAIN),
    (OFF, "udp", PLAIN, OfferKind.PLAIN),
    (OFF, "tcp", SRTP_MODE, REJECT_OFFER_DOWNGRADE),
]


def test_offer_rows_cover_the_table() -> None:
    """The rows below are the whole of :data:`OFFER_TABLE`."""
    rows = {(p, signalling_of(t), state_of(c)) for p, t, c, _ in OFFER_ROWS}
    assert rows == set(OFFER_TABLE)


@pytest.mark.parametrize(("policy", "transport", "current", "expected"), OFFER_ROWS)
def test_offer_table_row(
    policy: SrtpPolicy,
    transport: str,
    current: LegMode | None,
    expected: OfferKind | Reject,
) -> None:
    """Each row: SRTP is RTP/SAVP with our lines, best effort RTP/AVP with our
    lines, plain RTP/AVP with no crypto at all; refusals draw no keys."""
    source = CountingSource()
    plan = plan_offer(policy, transport, current=current, random_bytes=source)
    if isinstance(expected, Reject):
        assert plan == expected
        assert source.requests == []
        return
    assert isinstance(plan, OfferPlan)
    assert plan.kind is expected
    if expected is OfferKind.PLAIN:
        assert plan == OfferPlan(OfferKind.PLAIN, Profile.AVP)
        assert source.requests == []
        return
    assert plan.profile is (Profile.SAVP if expected is OfferKind.SRTP else Profile.AVP)
    assert [a.tag for a in plan.crypto] == [1, 2, 3, 4, 5]
    assert [a.suite for a in plan.crypto] == list(OFFER_ORDER)
    assert [parse_crypto(v) for v in plan.lines] == list(plan.crypto)
    assert len(source.requests) == len(OFFER_ORDER)


def test_no_crypto_is_ever_offered_over_clear_signalling() -> None:
    """Whatever the policy and state, a leg signalled over UDP or TCP is never
    sent an ``a=crypto`` line."""
    for policy, transport, current in itertools.product(
        SrtpPolicy, ("udp", "tcp"), (None, PLAIN, SRTP_MODE)
    ):
        plan = plan_offer(policy, transport, current=current)
        assert isinstance(plan, Reject) or (plan.lines == () and plan.profile is Profile.AVP)


def test_plans_draw_fresh_keys_per_leg() -> None:
    """Two legs (or an offer and its re-INVITE) get disjoint keys, with the
    real random source; suites can be narrowed per leg."""
    first = plan_offer(REQ, "tls")
    second = plan_offer(REQ, "tls", current=SRTP_MODE)
    narrow = plan_offer(OPT, "tls", suites=[Suite.AES_CM_128_HMAC_SHA1_80])
    assert isinstance(first, OfferPlan) and isinstance(second, OfferPlan)
    assert {a.key_salt for a in first.crypto}.isdisjoint(a.key_salt for a in second.crypto)
    assert isinstance(narrow, OfferPlan)
    assert [(a.tag, a.suite) for a in narrow.crypto] == [(1, Suite.AES_CM_128_HMAC_SHA1_80)]


# Judging the answer to our offer: every row of ANSWER_CHECK_TABLE


def make_plan(kind: OfferKind) -> OfferPlan:
    """Our plan of ``kind`` (deterministic keys)."""
    policy = {OfferKind.SRTP: REQ, OfferKind.BEST_EFFORT: OPT, OfferKind.PLAIN: OFF}[kind]
    plan = plan_offer(policy, "tls", random_bytes=CountingSource())
    assert isinstance(plan, OfferPlan) and plan.kind is kind
    return plan


#: An answer matching tag 4 (AES_CM_128_HMAC_SHA1_80) of our default offer.
MATCHING = crypto_line(Suite.AES_CM_128_HMAC_SHA1_80, tag=4, seed=b"callee")
#: Answers that are invalid whatever we offered.
INVALID_ANSWERS: dict[str, tuple[Profile, list[str]]] = {
    "savp-without-crypto": (Profile.SAVP, []),
    "tag-not-offered": (Profile.SAVP, [crypto_line(Suite.AES_CM_128_HMAC_SHA1_80, tag=9)]),
    "suite-mismatch": (Profile.SAVP, [crypto_line(Suite.AES_CM_128_HMAC_SHA1_80, tag=1)]),
    "two-lines": (Profile.SAVP, [MATCHING, crypto_line(Suite.AEAD_AES_128_GCM, tag=3)]),
    "refused-param": (Profile.SAVP, [MATCHING + " UNAUTHENTICATED_SRTP"]),
    "malformed": (Profile.SAVP, ["4 AES_CM_128_HMAC_SHA1_80 inline:%%%"]),
}

CHECK_ROWS: list[tuple[OfferKind, AnswerClass, Protection | AckThenBye]] = [
    (OfferKind.SRTP, AnswerClass.MATCHED, Protection.SRTP),
    (OfferKind.SRTP, AnswerClass.NO_CRYPTO, BYE_NO_SRTP),
    (OfferKind.SRTP, AnswerClass.INVALID, BYE_BAD_ANSWER),
    (OfferKind.BEST_EFFORT, AnswerClass.MATCHED, Protection.SRTP),
    (OfferKind.BEST_EFFORT, AnswerClass.NO_CRYPTO, Protection.PLAIN),
    (OfferKind.BEST_EFFORT, AnswerClass.INVALID, BYE_BAD_ANSWER),
    (OfferKind.PLAIN, AnswerClass.MATCHED, BYE_BAD_ANSWER),
    (OfferKind.PLAIN, AnswerClass.NO_CRYPTO, Protection.PLAIN),
    (OfferKind.PLAIN, AnswerClass.INVALID, BYE_BAD_ANSWER),
]


@pytest.mark.parametrize(("kind", "answer_class", "expected"), CHECK_ROWS)
def test_answer_check_table_row(
    kind: OfferKind, answer_class: AnswerClass, expected: Protection | AckThenBye
) -> None:
    """Each row of the table, then exercised through :func:`check_answer` with
    real answers of that class (a plain offer can never be matched)."""
    assert ANSWER_CHECK_TABLE[kind, answer_class] == expected
    plan = make_plan(kind)
    if answer_class is AnswerClass.MATCHED:
        answers = {
            "matching": (Profile.SAVP, [MATCHING]),
            "matching-avp": (Profile.AVP, [MATCHING]),
        }
    elif answer_class is AnswerClass.NO_CRYPTO:
        answers = {"plain": (Profile.AVP, [])}
    else:
        answers = INVALID_ANSWERS
    if kind is OfferKind.PLAIN and answer_class is AnswerClass.MATCHED:
        answers = {}
    for name, (profile, crypto) in answers.items():
        assert classify_answer(plan, profile, crypto)[0] is answer_class, name
        decision = check_answer(plan, profile, crypto)
        if isinstance(expected, AckThenBye):
            assert decision == expected, name
        elif expected is Protection.PLAIN:
            assert decision == Accept(PLAIN), name
        else:
            assert isinstance(decision, Accept), name
            assert decision.mode == SRTP_MODE
            assert decision.inbound == parse_crypto(MATCHING)
            assert decision.outbound == plan.crypto[3]
            assert decision.crypto_line is None


def test_stray_crypto_in_the_answer_to_a_plain_offer_is_refused() -> None:
    """An answer naming a key we never offered cannot be used: ACK+BYE."""
    plan = make_plan(OfferKind.PLAIN)
    assert check_answer(plan, Profile.AVP, [MATCHING]) == BYE_BAD_ANSWER


def test_required_leg_with_plain_answer_is_acked_and_byed() -> None:
    """The product rule spelled out: required leg, answer without crypto → ACK,
    BYE, and 488 with a Warning upstream (or the next route)."""
    decision = check_answer(make_plan(OfferKind.SRTP), Profile.AVP, [])
    assert isinstance(decision, AckThenBye)
    assert decision.upstream.status == 488
    assert decision.upstream.warning == '399 telemancer "callee did not accept SRTP"'


def test_our_echoed_key_is_refused_in_an_answer() -> None:
    """A callee that answers with our own offered key is refused."""
    plan = make_plan(OfferKind.SRTP)
    assert check_answer(plan, Profile.SAVP, [plan.lines[3]]) == BYE_BAD_ANSWER


# Bridging


def test_bridge_plain_phone_to_srtp_trunk() -> None:
    """A phone on UDP 5060 (optional, so plain) calling a TLS trunk that
    requires SRTP: the caller leg is plain, the callee leg SRTP, the plan is
    bridged, and no key crosses legs."""
    caller = answer_offer(OPT, "udp", Profile.AVP, [])
    plan = plan_offer(REQ, "tls", random_bytes=CountingSource())
    assert isinstance(caller, Accept) and isinstance(plan, OfferPlan)
    callee = check_answer(plan, Profile.SAVP, [MATCHING])
    assert isinstance(callee, Accept)
    media = bridge(caller, callee)
    assert (media.a.mode, media.b.mode) == (PLAIN, SRTP_MODE)
    assert media.bridged


def test_bridge_srtp_phone_to_plain_trunk_never_forwards_keys() -> None:
    """An SRTP phone on TLS calling a trunk signalled over UDP: the phone gets
    SRTP with our key, the trunk gets an offer without any crypto."""
    caller = answer_offer(OPT, "tls", Profile.SAVP, [PEER_LINE])
    plan = plan_offer(OPT, "udp")
    assert isinstance(caller, Accept) and isinstance(plan, OfferPlan)
    assert plan.lines == () and plan.crypto == ()
    callee = check_answer(plan, Profile.AVP, [])
    assert isinstance(callee, Accept)
    media = bridge(caller, callee)
    assert media.a.mode == SRTP_MODE and media.b.mode == PLAIN and media.bridged


def test_bridge_srtp_to_srtp_uses_separate_keys() -> None:
    """SRTP on both legs is not "bridged" but still four distinct keys; a key
    that appears on both legs is refused."""
    caller = answer_offer(REQ, "tls", Profile.SAVP, [PEER_LINE])
    plan = plan_offer(REQ, "tls")
    assert isinstance(caller, Accept) and isinstance(plan, OfferPlan)
    callee = check_answer(plan, Profile.SAVP, [MATCHING])
    assert isinstance(callee, Accept)
    media = bridge(caller, callee)
    assert not media.bridged
    keys = [
        attr.key_salt
        for attr in (caller.inbound, caller.outbound, callee.inbound, callee.outbound)
        if attr is not None
    ]
    assert len(set(keys)) == 4
    copied = Accept(callee.mode, caller.inbound, callee.outbound)
    with pytest.raises(ValueError, match="both legs"):
        bridge(caller, copied)


# repr never shows keys


def test_decisions_never_show_keys_in_repr() -> None:
    """``repr`` of an answer decision, an offer plan and a media plan shows
    modes and suites, never a key or our ``a=crypto`` value."""
    caller = answer_offer(REQ, "tls", Profile.SAVP, [PEER_LINE])
    plan = plan_offer(REQ, "tls")
    assert isinstance(caller, Accept) and isinstance(plan, OfferPlan)
    assert caller.inbound is not None and caller.outbound is not None
    texts = [
        repr(caller),
        str(caller),
        repr(plan),
        str(plan),
        repr(bridge(caller, caller_plain())),
    ]
    secrets_ = [caller.crypto_line or "", PEER_LINE.split("inline:")[1], *plan.lines]
    for attr in (caller.inbound, caller.outbound, *plan.crypto):
        secrets_ += [
            base64.b64encode(attr.key_salt).decode(),
            attr.key.hex(),
            attr.salt.hex(),
            repr(attr.key)[2:-1],
        ]
    for text in texts:
        assert "AES_CM_128_HMAC_SHA1_80" in text or "AEAD" in text
        for secret in secrets_:
            assert secret not in text


def caller_plain() -> Accept:
    """A plain leg, for plans that need a second side."""
    return Accept(PLAIN)


# Configuration


@pytest.mark.parametrize(
    ("policy", "transport", "problem"),
    [
        ("required", "tls", None),
        ("required", "TLS", None),
        (SrtpPolicy.REQUIRED, "udp", "needs TLS signalling"),
        ("required", "tcp", "signalled over TCP"),
        ("required", "udp", "signalled over UDP"),
        ("optional", "udp", None),
        ("optional", "tcp", None),
        ("optional", "tls", None),
        ("off", "udp", None),
        ("off", "tls", None),
        ("REQUIRED", "tls", "srtp must be one of required, optional, off"),
        ("mandatory", "tls", "srtp must be one of"),
        ("required", "sctp", "unknown signalling transport 'sctp'"),
    ],
)
def test_check_config(policy: SrtpPolicy | str, transport: str, problem: str | None) -> None:
    """Requiring SRTP on a leg not signalled over TLS is a configuration error
    (keys would cross the wire in clear); an unknown policy or transport is
    one too; everything else is sound."""
    found = check_config(policy, transport)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
