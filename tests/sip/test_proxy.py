"""The proxy in memory: calls between phones of one tenant over TLS flows,
forking, CANCEL, quotas released on every ending, and isolation tricks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pytest

from appliance.media.policy import SrtpPolicy
from appliance.media.relay import PortPool, Relay
from appliance.sip import digest
from appliance.sip.actions import Action, CallEnded, LiveCall, QuotaRefused, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import Message, parse_datagram
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.registrar import Flow, Registrar
from appliance.testing.sipclient import SipTestClient

DOMAIN, OTHER = "acme.example", "bravo.example"
NOW = 1_800_000_000.0
PROXY = ProxyAddress("tls", "127.0.0.1", 5061)


def _ha1(number: str, domain: str) -> dict[str, str]:
    return {alg: digest.ha1(alg, number, domain, f"pw-{number}") for alg in digest.ALGORITHMS}


def _edge(max_calls: int = 5, *, srtp: SrtpPolicy = SrtpPolicy.OPTIONAL) -> SipEdge:
    tenants = [
        TenantEntry(1, DOMAIN, "active", 10, max_calls, srtp),
        TenantEntry(2, OTHER, "active", 10, 5),
    ]
    extensions = [
        ExtensionEntry(11, 1, "1001", _ha1("1001", DOMAIN)),
        ExtensionEntry(12, 1, "1002", _ha1("1002", DOMAIN)),
        ExtensionEntry(13, 1, "1003", _ha1("1003", DOMAIN)),
        ExtensionEntry(21, 2, "1002", _ha1("1002", OTHER)),
    ]
    verifier = digest.DigestVerifier(digest.NonceFactory(b"k" * 32, 300))
    return SipEdge(
        SipDirectory(tenants, extensions),
        verifier,
        Registrar(),
        Blocklist(),
        [PROXY],
        media=Relay(PortPool()),
        media_address="127.0.0.1",
        max_call_seconds=3600,
    )


@dataclass
class Phone:
    """A registered phone: its test client and the flow it registered on."""

    client: SipTestClient
    flow: Flow


def _phone(
    edge: SipEdge, number: str, port: int, domain: str = DOMAIN, *, transport: str = "tls"
) -> Phone:
    """``number`` registered over ``transport`` (TLS or TCP on a connection of its own)."""
    connection = "" if transport == "udp" else f"{transport}-{number}-{port}-{domain}"
    flow = Flow(transport, ("127.0.0.20", port), connection)
    if connection:
        edge.connection_opened(flow)
    client = SipTestClient(
        number, domain, f"pw-{number}", transport=transport.upper(), local=("127.0.0.20", port)
    )
    challenge = _only(edge.message_received(parse_datagram(client.register()), flow, NOW), flow)
    auth = client.authorization(challenge)
    ok = _only(
        edge.message_received(parse_datagram(client.register(authorization=auth)), flow, NOW), flow
    )
    assert ok.status == 200
    return Phone(client, flow)


def _to(actions: Sequence[Action], flow: Flow) -> list[Message]:
    return [parse_datagram(a.data) for a in actions if isinstance(a, Send) and a.flow == flow]


def _only(actions: Sequence[Action], flow: Flow) -> Message:
    (message,) = _to(actions, flow)
    return message


def _send(edge: SipEdge, phone: Phone, data: bytes, now: float = NOW) -> list[Action]:
    return edge.message_received(parse_datagram(data), phone.flow, now)


def _dial(
    edge: SipEdge,
    caller: Phone,
    callee: str,
    now: float = NOW,
    *,
    domain: str | None = None,
    extra: tuple[str, ...] = (),
    body: bytes | None = None,
) -> list[Action]:
    """INVITE through the 407 challenge; return the actions of the authenticated INVITE."""
    first = caller.client.invite(callee, domain=domain, extra=extra, body=body)
    challenge = _only(_send(edge, caller, first, now), caller.flow)
    assert challenge.status == 407
    uri = f"sip:{callee}@{domain or caller.client.domain}"
    auth = caller.client.authorization(challenge, method="INVITE", uri=uri)
    again = caller.client.invite(callee, authorization=auth, domain=domain, extra=extra, body=body)
    return _send(edge, caller, again, now)


def _forked_call(edge: SipEdge) -> tuple[Phone, Phone, Phone, Message, Message]:
    """1001 (alice) calls 1002, registered twice (desk and mobile): the proxy forks.
    Returns alice, desk, mobile and the INVITE each fork got."""
    alice = _phone(edge, "1001", 5062)
    desk, mobile = _phone(edge, "1002", 5064), _phone(edge, "1002", 5066)
    actions = _dial(edge, alice, "1002")
    return alice, desk, mobile, _only(actions, desk.flow), _only(actions, mobile.flow)


def _records(actions: Sequence[Action]) -> list[CallEnded]:
    return [a for a in actions if isinstance(a, CallEnded)]


def test_a_call_between_two_phones() -> None:
    """INVITE with proxy auth, 100 Trying, the INVITE forwarded over the callee's own
    TLS connection with our Via and Record-Route, 180 and 200 back without our Via,
    ACK and BYE along the Record-Route, and one CDR when it ends."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    actions = _dial(edge, alice, "1002")
    assert _only(actions, alice.flow).status == 100
    invite = _only(actions, bob.flow)
    assert invite.uri == "sip:1002@127.0.0.20:5064;transport=tls"
    assert invite.vias[0].host == "127.0.0.1"
    assert (invite.vias[0].branch or "").startswith("z9hG4bK")
    assert invite.first("record-route") == "<sip:127.0.0.1:5061;transport=tls;lr>"
    assert invite.max_forwards == 69 and not invite.all("proxy-authorization")
    assert invite.vias[1].params.get("received") == "127.0.0.20"  # RFC 3581 §4
    ringing = _only(_send(edge, bob, bob.client.answer(invite, 180, "Ringing")), alice.flow)
    assert ringing.status == 180 and len(ringing.vias) == 1
    answer = _only(_send(edge, bob, bob.client.answer(invite, 200, "OK")), alice.flow)
    assert answer.status == 200 and answer.to.tag == "callee"
    assert edge.proxy.admission.count(1) == 1
    ack = _only(_send(edge, alice, alice.client.in_dialog("ACK", answer)), bob.flow)
    assert ack.method == "ACK" and not ack.all("route")
    bye_actions = _send(edge, alice, alice.client.in_dialog("BYE", answer), NOW + 30)
    bye = _only(bye_actions, bob.flow)
    (ended,) = _records(bye_actions)
    record = ended.record
    assert (record.caller, record.callee, record.direction) == (
        "1001@acme.example",
        "1002@acme.example",
        "internal",
    )
    assert (record.disposition, record.hangup_by, record.final_status) == (
        "answered",
        "caller",
        200,
    )
    assert (record.caller_transport, record.callee_transport) == ("tls", "tls")
    assert record.billable_seconds == 30 and record.ringing_at == NOW
    assert edge.proxy.admission.count(1) == 0
    done = _only(_send(edge, bob, bob.client.answer(bye, 200, "OK")), alice.flow)
    assert done.status == 200 and done.cseq.method == "BYE"


def test_forking_rings_every_contact_and_cancels_the_rest() -> None:
    """An extension registered twice rings on both connections; the first 200 wins and
    the other branch gets a CANCEL."""
    edge = _edge()
    alice, desk, mobile, desk_invite, mobile_invite = _forked_call(edge)
    assert desk_invite.vias[0].branch != mobile_invite.vias[0].branch
    _send(edge, mobile, mobile.client.answer(mobile_invite, 180, "Ringing", tag="mobile"))
    answered = _send(edge, desk, desk.client.answer(desk_invite, 200, "OK", tag="desk"))
    assert _only(answered, alice.flow).status == 200
    cancel = _only(answered, mobile.flow)
    assert cancel.method == "CANCEL" and cancel.vias[0].branch == mobile_invite.vias[0].branch
    late = _send(edge, mobile, mobile.client.answer(mobile_invite, 487, "Request Terminated"))
    assert _to(late, alice.flow) == []


def test_a_fork_that_said_nothing_yet_gets_its_cancel_with_its_first_provisional() -> None:
    """RFC 3261 §9.1: no CANCEL before a provisional answer. The fork that has not
    answered when another wins gets none then; its first provisional answer
    brings it, and is not passed up. Its 487 ends it there."""
    edge = _edge()
    alice, desk, mobile, desk_invite, mobile_invite = _forked_call(edge)
    answered = _send(edge, desk, desk.client.answer(desk_invite, 200, "OK", tag="desk"))
    assert _only(answered, alice.flow).status == 200 and _to(answered, mobile.flow) == []
    ringing = _send(edge, mobile, mobile.client.answer(mobile_invite, 180, "Ringing"))
    assert _to(ringing, alice.flow) == []
    cancel = _only(ringing, mobile.flow)
    assert cancel.method == "CANCEL" and cancel.vias[0].branch == mobile_invite.vias[0].branch
    late = _send(edge, mobile, mobile.client.answer(mobile_invite, 487, "Request Terminated"))
    assert _to(late, alice.flow) == []


def test_cancel_from_the_caller() -> None:
    """CANCEL while ringing: 200 to the CANCEL, CANCEL downstream, the 487 passed up,
    a 'cancelled' CDR and the slot released."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    _send(edge, bob, bob.client.answer(invite, 180, "Ringing"))
    last = _last_invite(edge)
    cancel = last.replace(b"INVITE sip", b"CANCEL sip").replace(b" INVITE\r\n", b" CANCEL\r\n")
    actions = _send(edge, alice, cancel)
    assert _only(actions, alice.flow).status == 200
    assert _only(actions, bob.flow).method == "CANCEL"
    terminated = _send(edge, bob, bob.client.answer(invite, 487, "Request Terminated"))
    assert _only(terminated, alice.flow).status == 487
    (ended,) = _records(terminated)
    assert ended.record.disposition == "cancelled" and edge.proxy.admission.count(1) == 0
    assert ended.record.hangup_by == "caller"
    assert cast(Relay, edge.proxy.media).pool.in_use == 0  # its media ports too


def _last_invite(edge: SipEdge) -> bytes:
    """The caller's authenticated INVITE as the proxy holds it."""
    upstream = next(u for u in edge.proxy._upstream.values() if u.message.method == "INVITE")
    return upstream.message.wire


@pytest.mark.parametrize(
    ("status", "disposition"), [(486, "busy"), (480, "no-answer"), (500, "failed")]
)
def test_final_failures_end_the_call(status: int, disposition: str) -> None:
    """A non-2xx final is passed up, the CDR says why, and the slot is released."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    actions = _send(edge, bob, bob.client.answer(invite, status, "No"))
    assert _only(actions, alice.flow).status == status
    (ended,) = _records(actions)
    assert ended.record.disposition == disposition and edge.proxy.admission.count(1) == 0
    assert cast(Relay, edge.proxy.media).pool.in_use == 0


def test_quota_refuses_the_call_before_anything_rings() -> None:
    """With max 1 concurrent call, a second INVITE gets 503 with a Warning naming the
    quota, a refusal to audit and a 'rejected-quota' CDR; the callee sees nothing."""
    edge = _edge(max_calls=1)
    alice, bob, carol = (
        _phone(edge, n, p) for n, p in (("1001", 5062), ("1002", 5064), ("1003", 5068))
    )
    assert _to(_dial(edge, alice, "1002"), bob.flow)
    actions = _dial(edge, carol, "1002")
    refused = _only(actions, carol.flow)
    assert refused.status == 503 and "quota" in (refused.first("warning") or "")
    assert _to(actions, bob.flow) == []
    assert [a.limit for a in actions if isinstance(a, QuotaRefused)] == [1]
    (ended,) = _records(actions)
    assert ended.record.disposition == "rejected-quota"
    assert edge.proxy.admission.count(1) == 1


def test_timeout_releases_the_slot() -> None:
    """A callee that never answers: Timer B ends the branch with 408 upstream and a
    'no-answer' CDR, and the slot comes back."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    assert _to(_dial(edge, alice, "1002"), bob.flow)
    due = edge.next_timer()
    assert due is not None and due <= NOW + 32
    actions = edge.handle_timer(NOW + 32)
    assert _only(actions, alice.flow).status == 408
    (ended,) = _records(actions)
    assert ended.record.disposition == "no-answer" and edge.proxy.admission.count(1) == 0
    assert cast(Relay, edge.proxy.media).pool.in_use == 0


def test_a_dead_connection_ends_the_call() -> None:
    """When the callee's TLS connection drops mid-call, the caller gets a BYE, the CDR
    says the system hung up, and the slot is released."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    _send(edge, bob, bob.client.answer(invite, 200, "OK"))
    actions = edge.connection_closed(bob.flow, NOW + 5)
    assert _only(actions, alice.flow).method == "BYE"
    (ended,) = _records(actions)
    assert ended.record.hangup_by == "system" and edge.proxy.admission.count(1) == 0
    assert cast(Relay, edge.proxy.media).pool.in_use == 0


def test_maximum_duration_ends_the_call() -> None:
    """A call still up at max_call_seconds is ended with BYE on both legs."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    _send(edge, bob, bob.client.answer(invite, 200, "OK"))
    actions = edge.handle_timer(NOW + 3600)
    assert _only(actions, alice.flow).method == "BYE" and _only(actions, bob.flow).method == "BYE"
    assert _records(actions) and edge.proxy.admission.count(1) == 0
    assert cast(Relay, edge.proxy.media).pool.in_use == 0


def _behind(answer: bytes, record_route: str) -> bytes:
    """``answer`` as it arrives when a proxy between us and the callee record-routed:
    its entry on top of ours."""
    return answer.replace(
        b"Record-Route:", f"Record-Route: {record_route}\r\nRecord-Route:".encode(), 1
    )


def test_our_byes_follow_each_dialogs_route_set() -> None:
    """When we end a call ourselves, each BYE carries the Route set of its leg's
    dialog without our own entries, as that party's requests would: toward the
    caller, the Record-Route entries proxies before us added (in order); toward
    the callee, those added after us (reversed). A carrier's proxy that routes
    in-dialog requests by Route (Kamailio's loose_route) drops a BYE without."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    upstream = ("<sip:edge1.example;lr>", "<sip:edge2.example;lr>")
    extra = (f"Record-Route: {upstream[0]}, {upstream[1]}",)
    invite = _only(_dial(edge, alice, "1002", extra=extra), bob.flow)
    answer = bob.client.answer(invite, 200, "OK")
    answer = _behind(_behind(answer, "<sip:far.example;lr>"), "<sip:near.example;lr>")
    _send(edge, bob, answer)
    actions = edge.handle_timer(NOW + 3600)
    to_alice, to_bob = _only(actions, alice.flow), _only(actions, bob.flow)
    assert [r.uri for r in to_alice.routes] == ["sip:edge1.example;lr", "sip:edge2.example;lr"]
    assert [r.uri for r in to_bob.routes] == ["sip:far.example;lr", "sip:near.example;lr"]
    assert to_bob.uri == "sip:1002@127.0.0.20:5064;transport=tls"  # the callee's Contact


def test_our_bye_over_udp_is_retransmitted_until_answered() -> None:
    """A BYE we send ourselves runs in a client transaction: toward a phone on UDP
    it is sent again on Timer E until the phone answers, then never again."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    udp = Flow("udp", ("127.0.0.20", 5070))
    client = SipTestClient("1002", DOMAIN, "pw-1002", transport="UDP", local=udp.remote)
    challenge = _only(edge.message_received(parse_datagram(client.register()), udp, NOW), udp)
    registered = client.register(authorization=client.authorization(challenge))
    assert _only(edge.message_received(parse_datagram(registered), udp, NOW), udp).status == 200
    bob = Phone(client, udp)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    _send(edge, bob, bob.client.answer(invite, 200, "OK"))
    bye = _only(edge.handle_timer(NOW + 3600), bob.flow)
    assert bye.method == "BYE"
    again = _only(edge.handle_timer(NOW + 3600.5), bob.flow)
    assert again.wire == bye.wire
    assert _to(_send(edge, bob, bob.client.answer(bye, 200, "OK"), NOW + 3600.6), alice.flow) == []
    assert _to(edge.handle_timer(NOW + 3610), bob.flow) == []


def test_a_refused_answer_is_acked_and_ended_along_its_route_set() -> None:
    """The ACK and BYE for a 2xx we cannot keep (a second fork's) follow the route
    set that 2xx sets up."""
    edge = _edge()
    _, desk, mobile, desk_invite, mobile_invite = _forked_call(edge)
    _send(edge, desk, desk.client.answer(desk_invite, 200, "OK", tag="desk"))
    late = mobile.client.answer(mobile_invite, 200, "OK", tag="mobile")
    ended = _to(_send(edge, mobile, _behind(late, "<sip:sbc.example;lr>")), mobile.flow)
    assert [(m.method, [r.uri for r in m.routes]) for m in ended] == [
        ("ACK", ["sip:sbc.example;lr"]),
        ("BYE", ["sip:sbc.example;lr"]),
    ]


@pytest.mark.parametrize(
    ("callee", "invite", "status"),
    [
        ("1002", {"domain": OTHER}, 403),
        ("9999", {}, 404),
        ("1002", {"extra": ("Route: <sip:evil.example;lr>",)}, 403),
    ],
)
def test_isolation_tricks(callee: str, invite: dict[str, object], status: int) -> None:
    """Another tenant's domain in the Request-URI, an unknown extension, and a Route
    to elsewhere are refused; tenant B's phone never hears anything."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    other_bob = _phone(edge, "1002", 5070, domain=OTHER)
    actions = _dial(edge, alice, callee, **invite)  # type: ignore[arg-type]
    assert _only(actions, alice.flow).status == status
    assert _to(actions, other_bob.flow) == []


def test_maddr_and_to_tricks_never_reach_another_tenant() -> None:
    """maddr in the Request-URI is refused; a To naming tenant B's extension does not
    route there: only the Request-URI routes, inside the caller's tenant."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    other_bob = _phone(edge, "1002", 5070, domain=OTHER)
    maddr = alice.client.invite("1002").replace(
        b"INVITE sip:1002@acme.example", b"INVITE sip:1002@acme.example;maddr=127.0.0.20"
    )
    challenge = _only(_send(edge, alice, maddr), alice.flow)
    auth = alice.client.authorization(challenge, method="INVITE", uri="sip:1002@acme.example")
    data = alice.client.invite("1002", authorization=auth).replace(
        b"INVITE sip:1002@acme.example", b"INVITE sip:1002@acme.example;maddr=127.0.0.20"
    )
    assert _only(_send(edge, alice, data), alice.flow).status == 403
    forged_to = alice.client.invite("1002", authorization=auth).replace(
        b"To: <sip:1002@acme.example>", b"To: <sip:1002@bravo.example>"
    )
    challenge = _only(_send(edge, alice, forged_to), alice.flow)
    auth = alice.client.authorization(challenge, method="INVITE", uri="sip:1002@acme.example")
    forged_to = alice.client.invite("1002", authorization=auth).replace(
        b"To: <sip:1002@acme.example>", b"To: <sip:1002@bravo.example>"
    )
    actions = _send(edge, alice, forged_to)
    assert _to(actions, other_bob.flow) == [] and _to(actions, bob.flow)


def test_unreachable_and_unregistered() -> None:
    """480 when the extension has no registration, or only one whose connection is gone."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    assert _only(_dial(edge, alice, "1003"), alice.flow).status == 480
    bob = _phone(edge, "1002", 5064)
    edge.connection_closed(bob.flow, NOW)
    assert _only(_dial(edge, alice, "1002"), alice.flow).status == 480


@pytest.mark.parametrize(
    ("callee", "domain", "body", "status", "disposition"),
    [
        ("9999", DOMAIN, None, 404, "failed"),
        ("1003", DOMAIN, None, 480, "no-answer"),
        ("1002", OTHER, None, 403, "failed"),
        ("1002", DOMAIN, b"v=0\r\n", 400, "failed"),
    ],
)
def test_a_call_refused_before_it_rings_is_recorded(
    callee: str, domain: str, body: bytes | None, status: int, disposition: str
) -> None:
    """One record per call, also for a call refused once its caller is known: a
    number that does not exist, a callee not registered, another tenant, an
    unusable offer. Nothing rings and no quota slot stays taken."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    actions = _dial(edge, alice, callee, domain=domain, body=body)
    assert _only(actions, alice.flow).status == status and _to(actions, bob.flow) == []
    (ended,) = _records(actions)
    record = ended.record
    assert (record.caller, record.callee, record.direction) == (
        "1001@acme.example",
        f"{callee}@{domain}",
        "internal",
    )
    assert (record.disposition, record.final_status, record.answered_at) == (
        disposition,
        status,
        None,
    )
    assert edge.proxy.admission.count(1) == 0 and not edge.proxy.calls


def test_a_request_refused_before_its_caller_is_known_is_not_a_call() -> None:
    """The 407 that starts every call, and a From no tenant serves, leave no record."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    challenged = _send(edge, alice, alice.client.invite("1002"))
    assert _only(challenged, alice.flow).status == 407 and _records(challenged) == []
    stranger = SipTestClient("1001", "nowhere.example", "pw", transport="TLS")
    refused = _send(edge, alice, stranger.invite("1002", domain=DOMAIN))
    assert _only(refused, alice.flow).status == 403 and _records(refused) == []


def test_a_bye_in_an_early_dialog_ends_the_call_with_the_invites_answer() -> None:
    """The caller may end an early dialog with BYE (§15): it reaches the callee, and
    the call ends, recorded as cancelled by the caller, when the INVITE's 487
    comes back."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    ringing = _only(_send(edge, bob, bob.client.answer(invite, 180, "Ringing")), alice.flow)
    bye = _send(edge, alice, alice.client.in_dialog("BYE", ringing))
    assert _only(bye, bob.flow).method == "BYE" and _records(bye) == []
    _send(edge, bob, bob.client.answer(_only(bye, bob.flow), 200, "OK"))
    ended = _send(edge, bob, bob.client.answer(invite, 487, "Request Terminated"))
    assert _only(ended, alice.flow).status == 487
    (record,) = _records(ended)
    assert (record.record.disposition, record.record.hangup_by) == ("cancelled", "caller")
    assert edge.proxy.admission.count(1) == 0


def test_reconciliation_corrects_drift() -> None:
    """Reconciliation resets counters to the calls actually live and reports drift."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    _dial(edge, alice, "1002")
    edge.proxy.admission.reserve(1, 10)
    drift = edge.proxy.admission.reconcile(edge.proxy.calls.values())
    assert drift == {1: (2, 1)} and edge.proxy.admission.count(1) == 1
    assert [a for a in _dial(edge, bob, "1001") if isinstance(a, LiveCall)]


def test_reinvite_and_the_cancel_answer_do_not_confuse_branches() -> None:
    """A re-INVITE from the callee reaches the caller over the caller's own connection
    and its 200 comes back; the 200 answering our CANCEL on a forked branch is not
    taken for that branch's INVITE answer."""
    edge = _edge()
    alice, desk, mobile, desk_invite, mobile_invite = _forked_call(edge)
    _send(edge, mobile, mobile.client.answer(mobile_invite, 180, "Ringing", tag="mobile"))
    answered = _send(edge, desk, desk.client.answer(desk_invite, 200, "OK", tag="desk"))
    answer = _only(answered, alice.flow)
    cancel = _only(answered, mobile.flow)
    assert _to(_send(edge, mobile, mobile.client.answer(cancel, 200, "OK")), alice.flow) == []
    assert edge.proxy.calls[answer.call_id].state == "answered"
    # The callee's re-INVITE: its From is the dialog's To (tag "desk"), and back.
    caller_side, callee_side = (
        (answer.first("from") or "").encode(),
        (answer.first("to") or "").encode(),
    )
    # desk's leg is on SRTP (it accepted our best-effort offer): it must stay so.
    srtp_offer = desk.client.sdp(crypto=desk.client.crypto_offer())
    reinvite = (
        desk.client.in_dialog("INVITE", answer, body=srtp_offer)
        .replace(caller_side, b"PLACEHOLDER")
        .replace(callee_side, caller_side)
        .replace(b"PLACEHOLDER", callee_side)
    )
    forwarded = _only(_send(edge, desk, reinvite), alice.flow)
    assert forwarded.method == "INVITE" and forwarded.to.tag == alice.client.from_tag
    back = _only(_send(edge, alice, alice.client.answer(forwarded, 200, "OK")), desk.flow)
    assert back.status == 200 and back.cseq.method == "INVITE"


def test_ack_for_a_failure_is_absorbed() -> None:
    """The caller's ACK for a 486 we passed up ends our INVITE server transaction and
    goes nowhere else."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    busy = _only(_send(edge, bob, bob.client.answer(invite, 486, "Busy Here")), alice.flow)
    ack = (
        _last_invite(edge).replace(b"INVITE sip", b"ACK sip").replace(b" INVITE\r\n", b" ACK\r\n")
    )
    ack = ack.replace(b"To: <sip:1002@acme.example>", f"To: {busy.first('to')}".encode())
    assert _send(edge, alice, ack) == []


def test_ring_timeout_cancels_once_and_the_timer_moves_on() -> None:
    """Timer C cancels the ringing branches once; the next deadline is in the future,
    so the service never spins on an expired timer."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    _send(edge, bob, bob.client.answer(invite, 180, "Ringing"))
    actions = edge.handle_timer(NOW + 180)
    assert [m.method for m in _to(actions, bob.flow)] == ["CANCEL"]
    due = edge.next_timer()
    assert due is not None and due > NOW + 180
    assert _to(edge.handle_timer(NOW + 180), bob.flow) == []


def test_a_request_that_comes_back_is_a_loop() -> None:
    """An INVITE carrying one of our own branches has looped back: 482."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    forwarded = _only(_dial(edge, alice, "1002"), bob.flow)
    looped = forwarded.wire.replace(
        b"INVITE sip:1002@127.0.0.20:5064", b"INVITE sip:1002@acme.example"
    )
    assert _only(_send(edge, bob, looped), bob.flow).status == 482


def test_challenges_of_every_branch_go_up_together() -> None:
    """When the best answer is a 401, the challenges of all challenging branches are
    combined into it (§16.7 step 7)."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    desk, mobile = _phone(edge, "1002", 5064), _phone(edge, "1002", 5066)
    actions = _dial(edge, alice, "1002")
    for phone, realm in ((desk, "desk.example"), (mobile, "mobile.example")):
        invite = _only(actions, phone.flow)
        challenge = phone.client.answer(invite, 401, "Unauthorized").replace(
            b"Contact:",
            f'WWW-Authenticate: Digest realm="{realm}", nonce="n"\r\nContact:'.encode(),
        )
        answered = _send(edge, phone, challenge)
    up = _only(answered, alice.flow)
    assert up.status == 401
    realms = sorted(f.value for f in up.all("www-authenticate"))
    assert realms == [
        'Digest realm="desk.example", nonce="n"',
        'Digest realm="mobile.example", nonce="n"',
    ]


def test_bridged_transports_get_two_record_routes() -> None:
    """A call from a TLS phone to a phone registered over UDP carries two Record-Route
    entries (RFC 5658): the callee sees our UDP face first, the caller our TLS one."""
    tenants = [TenantEntry(1, DOMAIN, "active", 10, 5)]
    extensions = [
        ExtensionEntry(11, 1, "1001", _ha1("1001", DOMAIN)),
        ExtensionEntry(12, 1, "1002", _ha1("1002", DOMAIN)),
    ]
    verifier = digest.DigestVerifier(digest.NonceFactory(b"k" * 32, 300))
    addresses = [PROXY, ProxyAddress("udp", "10.0.0.1", 5060)]
    edge = SipEdge(
        SipDirectory(tenants, extensions),
        verifier,
        Registrar(),
        Blocklist(),
        addresses,
        media=Relay(PortPool()),
        media_address="127.0.0.1",
    )
    alice = _phone(edge, "1001", 5062)
    udp_flow = Flow("udp", ("127.0.0.30", 5070))
    client = SipTestClient("1002", DOMAIN, "pw-1002", local=udp_flow.remote)
    challenge = _only(
        edge.message_received(parse_datagram(client.register()), udp_flow, NOW), udp_flow
    )
    auth = client.authorization(challenge)
    edge.message_received(parse_datagram(client.register(authorization=auth)), udp_flow, NOW)
    invite = _only(_dial(edge, alice, "1002"), udp_flow)
    assert [f.value for f in invite.all("record-route")] == [
        "<sip:10.0.0.1:5060;transport=udp;lr>",
        "<sip:127.0.0.1:5061;transport=tls;lr>",
    ]
    assert invite.vias[0].transport == "UDP"


def test_a_fork_answering_after_a_6xx_does_not_revive_the_call() -> None:
    """desk declines with 603, which ends the call and cancels mobile; mobile
    answers 200 anyway: it gets ACK and BYE, the caller nothing more, and there is
    one CDR."""
    edge = _edge()
    alice, desk, mobile, desk_invite, mobile_invite = _forked_call(edge)
    declined = _send(edge, desk, desk.client.answer(desk_invite, 603, "Decline", tag="desk"))
    assert _only(declined, alice.flow).status == 603 and len(_records(declined)) == 1
    late = _send(edge, mobile, mobile.client.answer(mobile_invite, 200, "OK", tag="mobile"))
    assert [m.method for m in _to(late, mobile.flow)] == ["ACK", "BYE"]
    assert _to(late, alice.flow) == [] and _records(late) == []
    assert edge.proxy.calls[desk_invite.call_id].state == "ended"
    assert cast(Relay, edge.proxy.media).pool.in_use == 0


def test_a_second_fork_answering_is_ended_not_passed_up() -> None:
    """desk and mobile both answer (mobile before our CANCEL reached it): mobile's
    200 gets ACK and BYE, the caller only ever sees desk's, and the relay keeps
    talking to desk."""
    edge = _edge()
    alice, desk, mobile, desk_invite, mobile_invite = _forked_call(edge)
    desk.client.media_port = 40002
    _send(edge, desk, desk.client.answer(desk_invite, 200, "OK", tag="desk"))
    again = desk.client.answer(desk_invite, 200, "OK", tag="desk")
    assert _only(_send(edge, desk, again), alice.flow).status == 200  # a retransmission
    late = _send(edge, mobile, mobile.client.answer(mobile_invite, 200, "OK", tag="mobile"))
    assert [m.method for m in _to(late, mobile.flow)] == ["ACK", "BYE"]
    assert _to(late, alice.flow) == []
    session = next(iter(cast(Relay, edge.proxy.media).sessions.values()))
    assert session.b.expected == ("127.0.0.20", 40002)


def _with_session_timer(response: bytes, header: str) -> bytes:
    return response.replace(b"Content-Length:", f"{header}\r\nContent-Length:".encode(), 1)


def test_session_timers_end_a_call_nobody_refreshes() -> None:
    """RFC 4028: the 2xx's Session-Expires sets when the session dies unless
    refreshed; a re-INVITE's 2xx refreshes it (here with a new interval). A call
    left unrefreshed past that ends with BYE on both legs, recorded with
    end_reason session-expired, and the maximum duration no longer cuts a call
    whose phones refresh it."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    answer = _with_session_timer(
        bob.client.answer(invite, 200, "OK"), "Session-Expires: 1800;refresher=uac"
    )
    answered = _only(_send(edge, bob, answer), alice.flow)
    _send(edge, alice, alice.client.in_dialog("ACK", answered))
    assert _to(edge.handle_timer(NOW + 1799), bob.flow) == []
    reinvite = _only(
        _send(edge, alice, alice.client.in_dialog("INVITE", answered), NOW + 1000), bob.flow
    )
    refreshed = _with_session_timer(bob.client.answer(reinvite, 200, "OK"), "x: 3000")
    assert _only(_send(edge, bob, refreshed, NOW + 1000), alice.flow).status == 200
    assert _to(edge.handle_timer(NOW + 3600), bob.flow) == []  # no maximum duration
    assert _to(edge.handle_timer(NOW + 3999), bob.flow) == []
    actions = edge.handle_timer(NOW + 4000)
    assert _only(actions, alice.flow).method == "BYE" and _only(actions, bob.flow).method == "BYE"
    (ended,) = _records(actions)
    assert ended.record.media["end_reason"] == "session-expired"
    assert ended.record.hangup_by == "system"


def test_an_interval_below_rfc_4028s_minimum_counts_as_90_seconds() -> None:
    """Session-Expires: 10 would end calls early: it counts as 90 s (Min-SE)."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    _send(
        edge, bob, _with_session_timer(bob.client.answer(invite, 200, "OK"), "Session-Expires: 10")
    )
    assert _records(edge.handle_timer(NOW + 89)) == []
    assert _records(edge.handle_timer(NOW + 90))


def test_early_dialogs_per_call_are_bounded() -> None:
    """A callee inventing a tag per provisional response gets 16 early dialogs
    kept, no more: a request in a seventeenth is 481."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    ringing = [
        _only(_send(edge, bob, bob.client.answer(invite, 180, "Ringing", tag=f"t{n}")), alice.flow)
        for n in range(17)
    ]
    assert len(edge.proxy.calls[invite.call_id].early) == 16
    assert _only(_send(edge, alice, alice.client.in_dialog("INFO", ringing[15])), bob.flow)
    assert (
        _only(_send(edge, alice, alice.client.in_dialog("INFO", ringing[16])), alice.flow).status
        == 481
    )


def test_an_answered_request_is_let_go_and_parsed_again_when_needed() -> None:
    """Once the INVITE is answered its transaction lives on (Timer L) holding
    only bytes and the fields the proxy reads; asked for, the request is the
    same again, and a 2xx retransmitted afterwards goes up with its CSeq."""
    edge = _edge()
    alice, bob = _phone(edge, "1001", 5062), _phone(edge, "1002", 5064)
    invite = _only(_dial(edge, alice, "1002"), bob.flow)
    (pending,) = [u for u in edge.proxy._upstream.values() if u.method == "INVITE"]
    assert pending.parsed is not None  # still read while the call is set up
    ok = bob.client.answer(invite, 200, "OK")
    first = _only(_send(edge, bob, ok), alice.flow)
    assert pending.parsed is None
    assert (pending.message.call_id, pending.message.method) == (invite.call_id, "INVITE")
    again = _only(_send(edge, bob, ok), alice.flow)
    assert again.first("cseq") == first.first("cseq") == pending.cseq
