"""Media through the proxy, in memory: each leg's SDP names the relay and carries
its own keys, the SRTP policy refuses what it must (488 with a Warning, ACK
then BYE for a 2xx we cannot use), ports are taken at admission and given back
on every ending, and media really crosses the relay re-keyed leg to leg."""

from __future__ import annotations

import base64
from typing import cast

from appliance.media.policy import SrtpPolicy
from appliance.media.relay import MediaSession, PortPool, Relay
from appliance.media.sdes import Suite, parse_crypto
from appliance.media.sdp import parse_sdp
from appliance.media.srtp import Direction, SrtpContext
from appliance.sip.actions import CallEnded
from appliance.sip.edge import SipEdge
from appliance.sip.message import Message, parse_datagram
from tests.sip.test_proxy import (
    DOMAIN,
    NOW,
    Phone,
    _dial,
    _edge,
    _only,
    _phone,
    _records,
    _send,
    _to,
)
from tests.sip.test_trunk_calls import CARRIER, CARRIER_PHONE
from tests.sip.test_trunk_calls import _edge as trunk_edge

MEDIA = "127.0.0.1"


def _relay(edge: SipEdge) -> Relay:
    return cast(Relay, edge.proxy.media)


def _session(edge: SipEdge) -> MediaSession:
    """The media of the one call in progress."""
    (session,) = _relay(edge).sessions.values()
    return session


def _m_line(message: Message) -> tuple[str, int, str, tuple[str, ...]]:
    """(c= address, port, profile, crypto values) of the one audio stream."""
    description = parse_sdp(message.body)
    section = description.media[0]
    connection = description.connection_of(section)
    assert connection is not None
    return connection.address, section.port, section.proto, section.crypto


def _keys(crypto: tuple[str, ...] | list[str]) -> set[str]:
    return {line.split("inline:")[1].split("|")[0].split(" ")[0] for line in crypto}


def test_a_plain_call_goes_through_the_relay_with_our_address_on_each_leg() -> None:
    """Optional policy over TLS: the callee is offered SRTP best-effort (RTP/AVP
    with our lines), answers plain, and each phone sees only the relay."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    session = _session(edge)
    address, port, proto, crypto = _m_line(invite)
    assert (address, port, proto) == (MEDIA, session.b.rtp_port, "RTP/AVP")
    assert crypto and b"127.0.0.20" not in invite.body.split(b"o=")[1]
    plain_answer = bob.client.sdp()
    answer = _only(
        _send(edge, bob, bob.client.answer(invite, 200, "OK", body=plain_answer)), alice.flow
    )
    assert _m_line(answer) == (MEDIA, session.a.rtp_port, "RTP/AVP", ())
    assert session.a.expected == ("127.0.0.20", 40000)
    assert session.b.expected == ("127.0.0.20", 40000)
    assert session.a.inbound is None and session.b.outbound is None


def test_srtp_both_ways_with_keys_made_for_each_leg() -> None:
    """Required policy: alice offers SAVP, bob is offered SAVP with our own lines;
    alice's answer has one line with her tag and a key neither phone sent."""
    edge = _edge(srtp=SrtpPolicy.REQUIRED)
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    offered = alice.client.crypto_offer()
    invite = _only(
        _dial(edge, alice, "1002", body=alice.client.sdp(profile="RTP/SAVP", crypto=offered)),
        bob.flow,
    )
    _, _, proto, to_bob = _m_line(invite)
    assert proto == "RTP/SAVP" and not _keys(to_bob) & _keys(offered)
    ok = bob.client.answer(invite, 200, "OK")
    answer = _only(_send(edge, bob, ok), alice.flow)
    _, _, proto, to_alice = _m_line(answer)
    (line,) = to_alice
    assert proto == "RTP/SAVP" and parse_crypto(line).tag == parse_crypto(offered[0]).tag
    bob_answer = parse_sdp(_body(ok)).media[0].crypto
    assert not _keys(to_alice) & (_keys(offered) | _keys(bob_answer) | _keys(to_bob))
    session = _session(edge)
    assert session.a.suite == parse_crypto(offered[0]).suite.value
    assert session.b.suite is not None


def _body(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def test_media_crosses_the_relay_re_keyed() -> None:
    """An SRTP packet from alice, under her key, leaves toward bob under the key
    we offered him, and bob's key opens it."""
    edge = _edge(srtp=SrtpPolicy.REQUIRED)
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    offered = alice.client.crypto_offer()
    body = alice.client.sdp(profile="RTP/SAVP", crypto=offered[:1])
    invite = _only(_dial(edge, alice, "1002", body=body), bob.flow)
    ok = bob.client.answer(invite, 200, "OK")
    _send(edge, bob, ok)
    relay = _relay(edge)
    session = next(iter(relay.sessions.values()))
    alice_key = parse_crypto(offered[0])
    alice_out = SrtpContext(
        alice_key.suite.value, alice_key.key, alice_key.salt, Direction.OUTBOUND
    )
    rtp = (
        bytes([0x80, 0, 0, 1])
        + (160).to_bytes(4, "big")
        + (0x1234).to_bytes(4, "big")
        + b"\xd5" * 160
    )
    forward = relay.receive(session.a.rtp_port, alice_out.protect(rtp), ("127.0.0.20", 40000), NOW)
    assert forward is not None and forward.destination == ("127.0.0.20", 40000)
    # bob unprotects with the line we offered him whose tag he answered.
    (answered,) = parse_sdp(_body(ok)).media[0].crypto
    tag = parse_crypto(answered).tag
    ours = next(
        parse_crypto(v)
        for v in parse_sdp(invite.body).media[0].crypto
        if parse_crypto(v).tag == tag
    )
    bob_in = SrtpContext(ours.suite.value, ours.key, ours.salt, Direction.INBOUND)
    assert bob_in.unprotect(forward.data) == rtp


def test_required_policy_refuses_a_plain_offer_before_anything_is_held() -> None:
    edge = _edge(srtp=SrtpPolicy.REQUIRED)
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    refused = _only(_dial(edge, alice, "1002"), alice.flow)
    assert refused.status == 488
    assert refused.first("warning") == '399 telemancer "SRTP required"'
    assert _to(_dial(edge, alice, "1002"), bob.flow) == []
    assert _relay(edge).pool.in_use == 0 and edge.proxy.admission.count(1) == 0


def test_an_unusable_2xx_answer_is_acked_byed_and_refused_upstream() -> None:
    """Bob answers our SAVP offer with plain RTP: ACK, BYE, 488 to alice, ports freed."""
    edge = _edge(srtp=SrtpPolicy.REQUIRED)
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    body = alice.client.sdp(profile="RTP/SAVP", crypto=alice.client.crypto_offer())
    invite = _only(_dial(edge, alice, "1002", body=body), bob.flow)
    ok = bob.client.answer(invite, 200, "OK", body=bob.client.sdp(profile="RTP/AVP"))
    actions = _send(edge, bob, ok)
    ack, bye = _to(actions, bob.flow)
    assert (ack.method, bye.method) == ("ACK", "BYE") and ack.cseq.number == invite.cseq.number
    assert ack.to.tag == "callee" and bye.uri == ack.uri
    refused = _only(actions, alice.flow)
    assert refused.status == 488
    assert refused.first("warning") == '399 telemancer "callee did not accept SRTP"'
    (record,) = _records(actions)
    assert record.record.final_status == 488 and record.record.disposition == "failed"
    assert _relay(edge).pool.in_use == 0 and edge.proxy.admission.count(1) == 0
    # Bob retransmits his 2xx: he gets our ACK again, alice nothing.
    again = _send(edge, bob, ok)
    assert [m.method for m in _to(again, bob.flow)] == ["ACK"] and _to(again, alice.flow) == []


def test_a_2xx_on_a_branch_whose_offer_was_lost_is_refused_not_passed_up_bare() -> None:
    """Fail closed: should the proxy ever lose the offer a branch carried (a
    carrier's challenge once made it forget it), that branch's 2xx cannot set
    the call's media. It is ACKed, BYEd and refused (488), never passed up
    with its SDP stripped as a call with no media path."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002", body=alice.client.sdp()), bob.flow)
    (call,) = edge.proxy.calls.values()
    assert call.media is not None and call.media.exchange is not None
    call.media.exchange.plans.clear()  # as the bug did
    ok = bob.client.answer(invite, 200, "OK", body=bob.client.sdp())
    actions = _send(edge, bob, ok)
    assert [m.method for m in _to(actions, bob.flow)] == ["ACK", "BYE"]
    assert _only(actions, alice.flow).status == 488
    assert _relay(edge).pool.in_use == 0 and edge.proxy.admission.count(1) == 0


def test_no_ports_is_503_and_the_quota_slot_is_given_back() -> None:
    edge = _edge()
    edge.proxy.media = Relay(PortPool(20000, 20001))  # one pair: a call needs two
    alice, _ = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    refused = _only(_dial(edge, alice, "1002"), alice.flow)
    assert refused.status == 503 and edge.proxy.admission.count(1) == 0


def test_a_late_offer_is_answered_in_the_ack() -> None:
    """An INVITE without SDP: the callee offers in its 2xx, the caller gets our
    offer (the caller-side port, our keys) and answers in the ACK, which reaches
    the callee with our answer (the callee-side port)."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002", body=b""), bob.flow)
    assert invite.body == b"" and invite.first("content-type") is None
    session = _session(edge)
    bob_offer = bob.client.sdp(crypto=bob.client.crypto_offer())
    ok = _only(_send(edge, bob, bob.client.answer(invite, 200, "OK", body=bob_offer)), alice.flow)
    address, port, _, crypto = _m_line(ok)
    assert (address, port) == (MEDIA, session.a.rtp_port) and crypto
    assert not _keys(crypto) & _keys(parse_sdp(bob_offer).media[0].crypto)
    ack = alice.client.in_dialog("ACK", ok, body=alice.client.sdp_answer(ok))
    forwarded = _only(_send(edge, alice, ack), bob.flow)
    assert forwarded.method == "ACK"
    address, port, _, (line,) = _m_line(forwarded)
    assert (address, port) == (MEDIA, session.b.rtp_port) and parse_crypto(line).tag == 1
    assert session.a.expected == session.b.expected == ("127.0.0.20", 40000)
    assert session.a.suite is not None and session.b.suite is not None


def _reliably(response: bytes) -> bytes:
    """``response`` sent reliably (RFC 3262): Require 100rel, RSeq 1."""
    return response.replace(
        b"Content-Length:", b"Require: 100rel\r\nRSeq: 1\r\nContent-Length:", 1
    )


def test_a_late_offer_in_a_reliable_183_is_answered_in_the_prack() -> None:
    """RFC 3262 §5: to an INVITE without SDP the callee offers in a reliable 183;
    the caller gets our offer there and answers in its PRACK, which reaches the
    callee with our answer. The 2xx then carries no new offer, and an unreliable
    18x's SDP is never an offer."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002", body=b""), bob.flow)
    session = _session(edge)
    ringing = bob.client.answer(invite, 180, "Ringing", body=bob.client.sdp())
    assert _only(_send(edge, bob, ringing), alice.flow).body == b""
    bob_offer = bob.client.sdp(crypto=bob.client.crypto_offer())
    progress = bob.client.answer(invite, 183, "Session Progress", body=bob_offer)
    early = _only(_send(edge, bob, _reliably(progress)), alice.flow)
    address, port, _, crypto = _m_line(early)
    assert (address, port) == (MEDIA, session.a.rtp_port) and crypto
    assert not _keys(crypto) & _keys(parse_sdp(bob_offer).media[0].crypto)
    prack = alice.client.in_dialog("PRACK", early, body=alice.client.sdp_answer(early))
    forwarded = _only(_send(edge, alice, prack), bob.flow)
    address, port, _, (line,) = _m_line(forwarded)
    assert forwarded.method == "PRACK" and parse_crypto(line).tag == 1
    assert (address, port) == (MEDIA, session.b.rtp_port)
    assert session.a.expected == session.b.expected == ("127.0.0.20", 40000)
    ok = _only(_send(edge, bob, bob.client.answer(invite, 200, "OK", body=b"")), alice.flow)
    assert ok.status == 200 and ok.body == b""
    assert _only(_send(edge, alice, alice.client.in_dialog("ACK", ok)), bob.flow).body == b""


def test_a_new_offer_in_a_prack_is_negotiated_and_answered_in_its_2xx() -> None:
    """RFC 3262 §5: once a reliable 183 answered the INVITE's offer, a PRACK
    may carry a new offer. The callee gets it rewritten for its leg, and its
    200 to the PRACK carries the answer, rewritten for the caller's leg; a
    PRACK offer while another is unanswered is 491."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    session = _session(edge)
    progress = bob.client.answer(
        invite, 183, "Session Progress", body=bob.client.sdp_answer(invite)
    )
    early = _only(_send(edge, bob, _reliably(progress)), alice.flow)
    assert _m_line(early)[:2] == (MEDIA, session.a.rtp_port)
    held = alice.client.sdp(attributes=["sendonly"])
    prack = _only(_send(edge, alice, alice.client.in_dialog("PRACK", early, body=held)), bob.flow)
    assert prack.method == "PRACK" and _m_line(prack)[:2] == (MEDIA, session.b.rtp_port)
    assert parse_sdp(prack.body).media[0].attributes("sendonly") == ("",)
    again = alice.client.in_dialog("PRACK", early, body=held)
    assert _only(_send(edge, alice, again), alice.flow).status == 491
    ok = bob.client.answer(prack, 200, "OK", body=bob.client.sdp_answer(prack))
    back = _only(_send(edge, bob, ok), alice.flow)
    assert back.status == 200 and back.cseq.method == "PRACK"
    assert _m_line(back)[:2] == (MEDIA, session.a.rtp_port)
    assert edge.proxy.calls[invite.call_id].media.on_hold  # type: ignore[union-attr]


def test_a_late_offer_whose_ack_has_no_answer_ends_the_call() -> None:
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002", body=b""), bob.flow)
    ok = _only(
        _send(edge, bob, bob.client.answer(invite, 200, "OK", body=bob.client.sdp())), alice.flow
    )
    actions = _send(edge, alice, alice.client.in_dialog("ACK", ok))
    assert [m.method for m in _to(actions, bob.flow)] == ["ACK", "BYE"]
    assert [m.method for m in _to(actions, alice.flow)] == ["BYE"]
    (record,) = _records(actions)
    assert record.record.media["end_reason"] == "sdp-answer-refused"
    assert _relay(edge).pool.in_use == 0


def test_a_late_offer_the_policy_refuses_is_acked_and_byed() -> None:
    """Required policy: the callee's plain offer in its 2xx is refused like an
    unusable answer: ACK and BYE to it, 488 to the caller."""
    edge = _edge(srtp=SrtpPolicy.REQUIRED)
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002", body=b""), bob.flow)
    actions = _send(edge, bob, bob.client.answer(invite, 200, "OK", body=bob.client.sdp()))
    assert [m.method for m in _to(actions, bob.flow)] == ["ACK", "BYE"]
    refused = _only(actions, alice.flow)
    assert refused.status == 488 and refused.first("warning") == '399 telemancer "SRTP required"'


def test_a_body_that_is_not_sdp_is_415() -> None:
    edge = _edge()
    alice, _ = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    first = alice.client.invite("1002", body=b"hello").replace(b"application/sdp", b"text/plain")
    challenge = _only(_send(edge, alice, first), alice.flow)
    auth = alice.client.authorization(challenge, method="INVITE", uri=f"sip:1002@{DOMAIN}")
    again = alice.client.invite("1002", authorization=auth, body=b"hello").replace(
        b"application/sdp", b"text/plain"
    )
    refused = _only(_send(edge, alice, again), alice.flow)
    assert refused.status == 415 and refused.first("accept") == "application/sdp"
    assert _relay(edge).pool.in_use == 0


def test_the_record_carries_both_legs_counters_and_ports_are_released() -> None:
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    answer = _only(_send(edge, bob, bob.client.answer(invite, 200, "OK")), alice.flow)
    relay = _relay(edge)
    session = next(iter(relay.sessions.values()))
    rtp = bytes([0x80, 0, 0, 1]) + bytes(8) + b"\xd5" * 160
    assert relay.receive(session.a.rtp_port, rtp, ("127.0.0.20", 40000), NOW) is not None
    bye = alice.client.in_dialog("BYE", answer)
    (record,) = _records(_send(edge, alice, bye))
    media = record.record.media
    assert media["caller"]["packets_in"] == 1  # type: ignore[index]
    assert media["callee"]["packets_out"] == 1  # type: ignore[index]
    assert media["callee"]["suite"] != "plain"  # type: ignore[index]
    assert relay.pool.in_use == 0 and not relay.sessions


def test_silent_media_ends_the_call_but_hold_does_not() -> None:
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    _send(edge, bob, bob.client.answer(invite, 200, "OK"))
    relay = _relay(edge)
    idle = [i.call_id for i in relay.expire_idle(NOW + 61)]
    assert idle == [invite.call_id]
    actions = edge.proxy.media_idle(idle, NOW + 61)
    assert [m.method for m in _to(actions, bob.flow)] == ["BYE"]
    assert [m.method for m in _to(actions, alice.flow)] == ["BYE"]
    (record,) = [a for a in actions if isinstance(a, CallEnded)]
    assert record.record.media["end_reason"] == "media-timeout"
    assert record.record.hangup_by == "system"


def test_a_held_call_is_not_ended_for_silence() -> None:
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    held = alice.client.sdp(attributes=["sendonly"])
    invite = _only(_dial(edge, alice, "1002", body=held), bob.flow)
    assert parse_sdp(invite.body).direction_of(parse_sdp(invite.body).media[0]).value == "sendonly"
    _send(edge, bob, bob.client.answer(invite, 200, "OK"))
    assert edge.proxy.media_idle([invite.call_id], NOW + 61) == []


def _srtp_call(edge: SipEdge) -> tuple[Phone, Phone, Message]:
    """alice calls bob offering SRTP, bob answers: the phones and alice's 200."""
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    body = alice.client.sdp(profile="RTP/SAVP", crypto=alice.client.crypto_offer())
    invite = _only(_dial(edge, alice, "1002", body=body), bob.flow)
    return alice, bob, _only(_send(edge, bob, bob.client.answer(invite, 200, "OK")), alice.flow)


def test_a_downgrading_reinvite_is_488_and_the_session_stays() -> None:
    edge = _edge(srtp=SrtpPolicy.OPTIONAL)
    alice, _, answer = _srtp_call(edge)
    session = _session(edge)
    before = (session.a.inbound, session.a.outbound, session.b.inbound, session.b.outbound)
    plain = alice.client.in_dialog("INVITE", answer, body=alice.client.sdp())
    refused = _only(_send(edge, alice, plain), alice.flow)
    assert refused.status == 488 and "downgraded" in (refused.first("warning") or "")
    assert (session.a.inbound, session.a.outbound, session.b.inbound, session.b.outbound) == before


def test_an_srtp_reinvite_rekeys_both_legs_on_its_answer() -> None:
    edge = _edge(srtp=SrtpPolicy.REQUIRED)
    alice, bob, answer = _srtp_call(edge)
    session = _session(edge)
    before = session.a.inbound
    offer = alice.client.sdp(profile="RTP/SAVP", crypto=alice.client.crypto_offer())
    reinvite = _only(
        _send(edge, alice, alice.client.in_dialog("INVITE", answer, body=offer)), bob.flow
    )
    assert session.a.inbound is before  # nothing changes before the answer
    assert not _keys(parse_sdp(reinvite.body).media[0].crypto) & _keys(
        parse_sdp(offer).media[0].crypto
    )
    back = _only(
        _send(edge, bob, bob.client.answer(reinvite, 200, "OK", tag="callee")), alice.flow
    )
    assert back.status == 200 and len(parse_sdp(back.body).media[0].crypto) == 1
    assert session.a.inbound is not before
    assert parse_sdp(back.body).origin.version == parse_sdp(answer.body).origin.version + 1


def test_a_2xx_retransmission_gets_the_same_answer() -> None:
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    ok = bob.client.answer(invite, 200, "OK")
    first = _only(_send(edge, bob, ok), alice.flow)
    again = _only(_send(edge, bob, ok), alice.flow)
    assert first.body == again.body


def test_base64_keys_never_leak_into_the_other_leg() -> None:
    edge = _edge(srtp=SrtpPolicy.REQUIRED)
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    offered = alice.client.crypto_offer()
    invite = _only(
        _dial(edge, alice, "1002", body=alice.client.sdp(profile="RTP/SAVP", crypto=offered)),
        bob.flow,
    )
    for line in offered:
        key = parse_crypto(line).key
        assert base64.b64encode(key)[:16] not in invite.wire
    assert Suite.AES_256_CM_HMAC_SHA1_80.value in invite.body.decode()


def test_a_reinvite_without_sdp_is_a_late_offer_from_the_other_side() -> None:
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    answer = _only(_send(edge, bob, bob.client.answer(invite, 200, "OK")), alice.flow)
    reinvite = alice.client.in_dialog("INVITE", answer, body=b"")
    forwarded = _only(_send(edge, alice, reinvite), bob.flow)
    assert forwarded.body == b""
    # bob's leg is on SRTP (he took our best-effort offer): his offer keeps it so.
    offer = bob.client.sdp(crypto=bob.client.crypto_offer(), attributes=["sendonly"])
    ok = _only(_send(edge, bob, bob.client.answer(forwarded, 200, "OK", body=offer)), alice.flow)
    assert parse_sdp(ok.body).media[0].attributes("sendonly") == ("",)
    ack = alice.client.in_dialog("ACK", ok, body=alice.client.sdp(attributes=["recvonly"]))
    assert _m_line(_only(_send(edge, alice, ack), bob.flow))[0] == MEDIA
    assert edge.proxy.calls[invite.call_id].media.on_hold  # type: ignore[union-attr]


def test_a_refused_answer_to_a_reinvite_ends_the_whole_call() -> None:
    """bob's leg is SRTP; his plain offer in the 2xx to a late-offer re-INVITE
    would downgrade it: ACK to bob, 488 to alice's re-INVITE, BYE to both."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    answer = _only(_send(edge, bob, bob.client.answer(invite, 200, "OK")), alice.flow)
    forwarded = _only(
        _send(edge, alice, alice.client.in_dialog("INVITE", answer, body=b"")), bob.flow
    )
    actions = _send(edge, bob, bob.client.answer(forwarded, 200, "OK", body=bob.client.sdp()))
    assert [m.method for m in _to(actions, bob.flow)] == ["ACK", "BYE"]
    refused, bye = _to(actions, alice.flow)
    assert refused.status == 488 and "downgraded" in (refused.first("warning") or "")
    assert bye.method == "BYE"
    (record,) = _records(actions)
    assert record.record.media["end_reason"] == "sdp-answer-refused"


def test_a_plain_phone_is_bridged_to_a_carrier_that_requires_srtp() -> None:
    """The tenant lets its phone speak plain RTP; the trunk requires SRTP: the
    carrier is offered RTP/SAVP with our keys, the phone is answered plain, and
    the relay encrypts the phone's packets with the key the carrier chose."""
    edge = trunk_edge(trunk_srtp=SrtpPolicy.REQUIRED)
    alice = _phone(edge, "1001", 5062)
    invite = _only(_dial(edge, alice, "01632960123"), CARRIER)
    _, _, proto, offered = _m_line(invite)
    assert proto == "RTP/SAVP" and offered
    ok = CARRIER_PHONE.answer(invite, 200, "OK")
    answer = _only(edge.message_received(parse_datagram(ok), CARRIER, NOW), alice.flow)
    assert _m_line(answer)[2:] == ("RTP/AVP", ())
    relay = _relay(edge)
    session = next(iter(relay.sessions.values()))
    assert session.a.inbound is None and session.b.outbound is not None
    rtp = bytes([0x80, 0, 0, 1]) + bytes(4) + (0x1234).to_bytes(4, "big") + b"\xd5" * 160
    forward = relay.receive(session.a.rtp_port, rtp, ("127.0.0.20", 40000), NOW)
    assert forward is not None and forward.data != rtp
    (chosen,) = parse_sdp(_body(ok)).media[0].crypto
    tag = parse_crypto(chosen).tag
    ours = next(parse_crypto(v) for v in offered if parse_crypto(v).tag == tag)
    carrier_in = SrtpContext(ours.suite.value, ours.key, ours.salt, Direction.INBOUND)
    assert carrier_in.unprotect(forward.data) == rtp


def test_an_update_offer_is_negotiated_like_a_reinvite() -> None:
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    answer = _only(_send(edge, bob, bob.client.answer(invite, 200, "OK")), alice.flow)
    session = _session(edge)
    before = session.b.inbound
    held = alice.client.sdp(attributes=["sendonly"])
    update = _only(
        _send(edge, alice, alice.client.in_dialog("UPDATE", answer, body=held)), bob.flow
    )
    assert update.method == "UPDATE" and _m_line(update)[:2] == (MEDIA, session.b.rtp_port)
    assert parse_sdp(update.body).media[0].attributes("sendonly") == ("",)
    ok = bob.client.answer(update, 200, "OK", body=bob.client.sdp_answer(update))
    back = _only(_send(edge, bob, ok), alice.flow)
    assert back.status == 200 and _m_line(back)[:2] == (MEDIA, session.a.rtp_port)
    assert session.b.inbound is not before  # bob's new key for what he sends
    assert edge.proxy.calls[invite.call_id].media.on_hold  # type: ignore[union-attr]
