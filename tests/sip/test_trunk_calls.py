"""Calls through trunks, in memory: out to a carrier (E.164, routes, the carrier's
Digest challenge answered with the trunk's credentials) and in from one (DIDs,
identified by source address only)."""

from __future__ import annotations

import ipaddress

from appliance.media.policy import SrtpPolicy
from appliance.media.relay import PortPool, Relay
from appliance.sip import digest
from appliance.sip.actions import Action, CallEnded, TrunkHealth
from appliance.sip.blocklist import Blocklist
from appliance.sip.dialplan import DidEntry, NumberSettings, RouteRule, TrunkEntry
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import parse_datagram
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.registrar import Flow, Registrar
from appliance.testing.sipclient import SipTestClient
from tests.sip.test_proxy import NOW, _dial, _only, _phone, _records, _send, _to

DOMAIN = "acme.example"
CARRIER = Flow("tls", ("127.0.0.50", 5061), "trunk-7")


def _trunk(**changes: object) -> TrunkEntry:
    values: dict[str, object] = {
        "id": 7,
        "tenant_id": 1,
        "name": "carrier",
        "host": "carrier.example",
        "port": None,
        "transport": "tls",
        "username": "acme",
        "password": "carrier-secret",
        "caller_id_mode": "fixed",
        "caller_id": "+441632960000",
        "tls_domain": "carrier.example",
        "ca_bundle": None,
        "fingerprint": None,
        "inbound_networks": (ipaddress.ip_network("127.0.0.48/30"),),
        "inbound_fingerprint": None,
    }
    values.update(changes)
    return TrunkEntry(**values)  # type: ignore[arg-type]


def _edge(*, flows: bool = True, trunk_srtp: SrtpPolicy = SrtpPolicy.OPTIONAL) -> SipEdge:
    def ha1(number: str, domain: str) -> dict[str, str]:
        return {a: digest.ha1(a, number, domain, f"pw-{number}") for a in digest.ALGORITHMS}

    tenants = [
        TenantEntry(1, DOMAIN, "active", 10, 5),
        TenantEntry(2, "bravo.example", "active", 10, 5),
    ]
    extensions = [
        ExtensionEntry(11, 1, "1001", ha1("1001", DOMAIN)),
        ExtensionEntry(12, 1, "1002", ha1("1002", DOMAIN)),
        ExtensionEntry(21, 2, "2001", ha1("2001", "bravo.example")),
    ]
    directory = SipDirectory(
        tenants,
        extensions,
        trunks=[_trunk(srtp=trunk_srtp)],
        dids={
            "+441632960999": DidEntry("+441632960999", 1, 12, "1002"),
            "+441632960777": DidEntry("+441632960777", 2, 21, "2001"),
        },
        routes={1: (RouteRule(1, "+44", "carrier"),)},
        numbering={1: NumberSettings(country_code="44")},
    )
    verifier = digest.DigestVerifier(digest.NonceFactory(b"k" * 32, 300))
    edge = SipEdge(
        directory,
        verifier,
        Registrar(),
        Blocklist(),
        [ProxyAddress("tls", "127.0.0.1", 5061)],
        media=Relay(PortPool()),
        media_address="127.0.0.1",
    )
    if flows:
        edge.proxy.trunk_flows[7] = [CARRIER]
    return edge


CARRIER_PHONE = SipTestClient(
    "carrier", "carrier.example", "", transport="TLS", local=CARRIER.remote
)


def test_outbound_call_goes_to_the_trunk_in_e164() -> None:
    """A national number dialled by a phone leaves through the tenant's trunk as E.164,
    with the trunk's caller ID asserted and the phone's credentials removed."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    invite = _only(_dial(edge, alice, "01632960123"), CARRIER)
    assert invite.uri == "sip:+441632960123@carrier.example"
    assert invite.first("p-asserted-identity") == "<sip:+441632960000@acme.example>"
    assert not invite.all("proxy-authorization")
    call = edge.proxy.calls[invite.call_id]
    assert (call.direction, call.trunk, call.callee) == ("outbound", "carrier", "+441632960123")


def test_the_carriers_challenge_is_answered_with_the_trunk_credentials() -> None:
    """The carrier's 407 is ACKed and answered once with Proxy-Authorization from the
    trunk's credentials on a new branch and CSeq; the caller never sees the 407, and
    the carrier's 200 reaches the caller with an outbound CDR at the end."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    invite = _only(_dial(edge, alice, "01632960123"), CARRIER)
    challenge = CARRIER_PHONE.answer(invite, 407, "Proxy Authentication Required").replace(
        b"Contact:",
        b'Proxy-Authenticate: Digest realm="carrier.example", nonce="abc123", qop="auth",'
        b" algorithm=MD5\r\nContact:",
    )
    actions = edge.message_received(parse_datagram(challenge), CARRIER, NOW)
    ack, retried = _to(actions, CARRIER)
    assert ack.method == "ACK" and _to(actions, alice.flow) == []
    credentials = digest.parse_credentials(retried.first("proxy-authorization") or "")
    assert isinstance(credentials, digest.Credentials)
    params = credentials.params
    assert (params["username"], params["realm"], params["nonce"]) == (
        "acme",
        "carrier.example",
        "abc123",
    )
    expected = digest.response(
        "MD5",
        digest.ha1("MD5", "acme", "carrier.example", "carrier-secret"),
        nonce="abc123",
        nc=params["nc"],
        cnonce=params["cnonce"],
        qop="auth",
        method="INVITE",
        uri=retried.uri,
    )
    assert params["response"] == expected
    assert retried.cseq.number == invite.cseq.number + 1
    assert retried.vias[0].branch != invite.vias[0].branch
    answer = _only(_send_carrier(edge, CARRIER_PHONE.answer(retried, 200, "OK")), alice.flow)
    assert answer.status == 200 and answer.cseq.number == invite.cseq.number
    ack = _only(_send(edge, alice, alice.client.in_dialog("ACK", answer)), CARRIER)
    assert ack.cseq.number == retried.cseq.number
    bye = _send(edge, alice, alice.client.in_dialog("BYE", answer), NOW + 10)
    forwarded_bye = _only(bye, CARRIER)
    assert forwarded_bye.method == "BYE" and forwarded_bye.cseq.number > retried.cseq.number
    (ended,) = _records(bye)
    assert (ended.record.direction, ended.record.trunk) == ("outbound", "carrier")


def _send_carrier(edge: SipEdge, data: bytes) -> list[Action]:
    return edge.message_received(parse_datagram(data), CARRIER, NOW)


def test_unreachable_carrier_is_503() -> None:
    """A trunk whose carrier has not been located gives 503, and frees the slot."""
    edge = _edge(flows=False)
    alice = _phone(edge, "1001", 5062)
    assert _only(_dial(edge, alice, "01632960123"), alice.flow).status == 503
    assert edge.proxy.admission.count(1) == 0


def test_unroutable_number_is_404() -> None:
    """A number no rule covers is 404 (there is no default route)."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    assert _only(_dial(edge, alice, "+15551234567"), alice.flow).status == 404


def test_inbound_call_to_a_did_rings_its_extension_without_a_challenge() -> None:
    """An INVITE from the carrier's address to a DID of the trunk's tenant rings that
    extension; it is not challenged (the carrier is known by its address); the CDR
    says inbound, the trunk, and the caller's number."""
    edge = _edge()
    bob = _phone(edge, "1002", 5064)
    carrier = SipTestClient(
        "+447700900123", "carrier.example", "", transport="TLS", local=CARRIER.remote
    )
    data = carrier.invite("+441632960999")
    actions = edge.message_received(parse_datagram(data), CARRIER, NOW)
    assert _only(actions, CARRIER).status == 100
    invite = _only(actions, bob.flow)
    assert invite.uri.startswith("sip:1002@")
    answered = _send(edge, bob, bob.client.answer(invite, 486, "Busy Here"))
    (ended,) = [a for a in answered if isinstance(a, CallEnded)]
    record = ended.record
    assert (record.direction, record.trunk, record.caller) == (
        "inbound",
        "carrier",
        "+447700900123@carrier.example",
    )


def test_inbound_dids_of_other_tenants_and_unknown_sources_are_refused() -> None:
    """The carrier cannot reach a DID owned by another tenant (404); the same INVITE
    from an address outside the trunk's networks is not the carrier's, whatever its
    headers say, and as a phone's it is refused (403: its From is no extension)."""
    edge = _edge()
    _phone(edge, "2001", 5070, domain="bravo.example")
    carrier = SipTestClient(
        "+447700900123", "carrier.example", "", transport="TLS", local=CARRIER.remote
    )
    other = edge.message_received(parse_datagram(carrier.invite("+441632960777")), CARRIER, NOW)
    assert _only(other, CARRIER).status == 404
    stranger = Flow("tls", ("127.0.0.60", 5061), "tls-stranger")
    edge.connection_opened(stranger)
    spoofed = edge.message_received(parse_datagram(carrier.invite("+441632960999")), stranger, NOW)
    assert _only(spoofed, stranger).status == 403


def test_options_pings_track_trunk_health() -> None:
    """An answered OPTIONS reports the trunk up with its round trip; an unanswered one
    (Timer F) reports it down, and calls needing it then get 503 instead of ringing a
    dead carrier; the next good answer brings it back."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    ping = _only(edge.proxy.ping(_trunk(), CARRIER, NOW), CARRIER)
    assert ping.method == "OPTIONS" and ping.uri == "sip:carrier.example"
    answered = edge.message_received(
        parse_datagram(CARRIER_PHONE.answer(ping, 200, "OK")), CARRIER, NOW + 0.25
    )
    (up,) = [a for a in answered if isinstance(a, TrunkHealth)]
    assert (up.up, up.status, up.rtt) == (True, 200, 0.25)
    silent = _only(edge.proxy.ping(_trunk(), CARRIER, NOW + 1), CARRIER)
    assert silent.method == "OPTIONS"
    expired = edge.handle_timer(NOW + 1 + 32)
    (down,) = [a for a in expired if isinstance(a, TrunkHealth)]
    assert (down.up, down.status, down.rtt) == (False, None, None)
    assert _only(_dial(edge, alice, "01632960123", NOW + 40), alice.flow).status == 503
    again = _only(edge.proxy.ping(_trunk(), CARRIER, NOW + 50), CARRIER)
    edge.message_received(
        parse_datagram(CARRIER_PHONE.answer(again, 200, "OK")), CARRIER, NOW + 50
    )
    assert _to(_dial(edge, alice, "01632960123", NOW + 51), CARRIER)


def test_a_trunk_is_up_while_any_of_its_servers_answers_pings() -> None:
    """A ping the first located server fails (no answer by Timer F, a 5xx, or a
    lost connection) goes to the next server, as a call would; the trunk is
    reported down, and routed around, only when the last server fails too."""
    edge = _edge()
    edge.proxy.trunk_flows[7] = [CARRIER, SECOND]
    alice = _phone(edge, "1001", 5062)
    _only(edge.proxy.ping(_trunk(), CARRIER, NOW), CARRIER)
    moved = edge.handle_timer(NOW + 32)  # Timer F on the first server
    assert [a for a in moved if isinstance(a, TrunkHealth)] == []
    answered = edge.message_received(
        parse_datagram(SECOND_PHONE.answer(_only(moved, SECOND), 200, "OK")), SECOND, NOW + 33
    )
    (up,) = [a for a in answered if isinstance(a, TrunkHealth)]
    assert (up.up, up.status, up.rtt) == (True, 200, 1.0)
    assert _to(_dial(edge, alice, "01632960123", NOW + 34), CARRIER)

    first = _only(edge.proxy.ping(_trunk(), CARRIER, NOW + 40), CARRIER)
    busy = edge.message_received(
        parse_datagram(CARRIER_PHONE.answer(first, 503, "Service Unavailable")), CARRIER, NOW + 40
    )
    lost = edge.connection_closed(SECOND, NOW + 41)  # the second server's connection fails
    (down,) = [a for a in lost if isinstance(a, TrunkHealth)]
    assert _only(busy, SECOND).method == "OPTIONS"
    assert (down.up, down.status) == (False, None)
    assert _only(_dial(edge, alice, "01632960124", NOW + 42), alice.flow).status == 503


def test_an_inbound_call_over_the_quota_is_recorded_as_inbound() -> None:
    """The refused call's CDR keeps its direction: the operator can
    tell carriers' calls refused for quota from the phones'."""
    edge = _edge()
    _phone(edge, "1002", 5064)
    for _ in range(5):  # the tenant's limit, taken
        assert edge.proxy.admission.reserve(1, 5)
    carrier = SipTestClient(
        "+447700900123", "carrier.example", "", transport="TLS", local=CARRIER.remote
    )
    actions = edge.message_received(parse_datagram(carrier.invite("+441632960999")), CARRIER, NOW)
    assert _only(actions, CARRIER).status == 503
    (ended,) = _records(actions)
    assert (ended.record.direction, ended.record.disposition) == ("inbound", "rejected-quota")


def _reliable(response: bytes, rseq: int) -> bytes:
    """``response`` sent reliably (RFC 3262): Require 100rel and an RSeq."""
    return response.replace(
        b"Content-Length:", f"Require: 100rel\r\nRSeq: {rseq}\r\nContent-Length:".encode(), 1
    )


def test_prack_and_update_travel_in_the_early_dialog() -> None:
    """A carrier sends a reliable 183 (RFC 3262) to the INVITE we re-sent with its
    credentials: the caller's PRACK reaches it in that early dialog, with CSeq and
    RAck shifted to the number of the INVITE it saw, and its 200 comes back with
    the caller's CSeq. The carrier's UPDATE (RFC 3311) in the early dialog
    reaches the caller. A PRACK naming no early dialog is 481. The 200 then
    confirms the dialog as usual."""
    edge = _edge()
    alice = _phone(edge, "1001", 5062)
    invite = _only(_dial(edge, alice, "01632960123"), CARRIER)
    challenge = CARRIER_PHONE.answer(invite, 407, "Proxy Authentication Required").replace(
        b"Contact:",
        b'Proxy-Authenticate: Digest realm="carrier.example", nonce="n1", qop="auth"\r\nContact:',
    )
    _ack, retried = _to(_send_carrier(edge, challenge), CARRIER)
    progress = _only(
        _send_carrier(
            edge,
            _reliable(CARRIER_PHONE.answer(retried, 183, "Session Progress", tag="carrier"), 1),
        ),
        alice.flow,
    )
    assert (progress.status, progress.cseq.number, progress.first("rseq")) == (
        183,
        invite.cseq.number,
        "1",
    )
    stray = alice.client.in_dialog("PRACK", progress).replace(b"tag=carrier", b"tag=other")
    assert _only(_send(edge, alice, stray), alice.flow).status == 481
    rack = f"RAck: 1 {invite.cseq.number} INVITE\r\nContent-Length:".encode()
    prack = alice.client.in_dialog("PRACK", progress).replace(b"Content-Length:", rack, 1)
    forwarded = _only(_send(edge, alice, prack), CARRIER)
    assert forwarded.method == "PRACK" and forwarded.uri == progress.contacts[0].uri
    assert forwarded.first("rack") == f"1 {retried.cseq.number} INVITE"
    assert forwarded.cseq.number == parse_datagram(prack).cseq.number + 1
    prack_ok = _only(
        _send_carrier(edge, CARRIER_PHONE.answer(forwarded, 200, "OK", tag="carrier")), alice.flow
    )
    assert (prack_ok.status, prack_ok.cseq.method, prack_ok.cseq.number) == (
        200,
        "PRACK",
        parse_datagram(prack).cseq.number,
    )
    host, port = alice.client.local
    update = (
        "\r\n".join(
            [
                f"UPDATE sip:1001@{host}:{port};transport=tls SIP/2.0",
                "Via: SIP/2.0/TLS 127.0.0.50:5061;branch=z9hG4bKcarrier-update",
                "Max-Forwards: 70",
                f"From: {retried.first('to')};tag=carrier",
                f"To: {retried.first('from')}",
                f"Call-ID: {retried.call_id}",
                "CSeq: 1 UPDATE",
                f"Route: {retried.first('record-route')}",
                "Content-Length: 0",
            ]
        )
        + "\r\n\r\n"
    ).encode()
    relayed = _only(_send_carrier(edge, update), alice.flow)
    assert (relayed.method, relayed.to.tag, relayed.from_.tag) == (
        "UPDATE",
        invite.from_.tag,
        "carrier",
    )
    answer = _only(
        _send_carrier(edge, CARRIER_PHONE.answer(retried, 200, "OK", tag="carrier")), alice.flow
    )
    assert answer.status == 200
    call = edge.proxy.calls[invite.call_id]
    assert call.callee_leg is not None and call.callee_leg.tag == "carrier" and call.early == {}


SECOND = Flow("tls", ("127.0.0.51", 5061), "trunk-7-b")
SECOND_PHONE = SipTestClient(
    "carrier", "carrier.example", "", transport="TLS", local=SECOND.remote
)


def test_a_failed_carrier_server_hands_the_call_to_the_next() -> None:
    """RFC 3263 §4.3: when the first server located for the trunk answers 503, or
    never answers (Timer B), or its connection is lost, the INVITE goes to the
    next one on a new branch, and the caller only sees the outcome; once no
    server is left, the failure reaches the caller."""
    edge = _edge()
    edge.proxy.trunk_flows[7] = [CARRIER, SECOND]
    alice = _phone(edge, "1001", 5062)
    first = _only(_dial(edge, alice, "01632960123", body=alice.client.sdp()), CARRIER)
    busy = _send_carrier(edge, CARRIER_PHONE.answer(first, 503, "Service Unavailable"))
    second = _only(busy, SECOND)
    assert (second.method, second.call_id, second.uri) == ("INVITE", first.call_id, first.uri)
    assert second.vias[0].branch != first.vias[0].branch
    assert [m.status for m in _to(busy, alice.flow)] == []
    ok = SECOND_PHONE.answer(second, 200, "OK", tag="b", body=SECOND_PHONE.sdp())
    answered = _only(edge.message_received(parse_datagram(ok), SECOND, NOW), alice.flow)
    # The new branch carried the offer on: its answer sets the call's media.
    assert answered.status == 200 and b"m=audio" in answered.body

    silent = _only(_dial(edge, alice, "01632960124"), CARRIER)
    moved = edge.handle_timer(NOW + 32)
    assert _only(moved, SECOND).call_id == silent.call_id and _to(moved, alice.flow) == []
    failed = edge.message_received(
        parse_datagram(SECOND_PHONE.answer(_only(moved, SECOND), 503, "Busy")), SECOND, NOW + 33
    )
    assert [m.status for m in _to(failed, alice.flow)] == [503]

    lost = _only(_dial(edge, alice, "01632960125"), CARRIER)
    after = edge.connection_closed(CARRIER, NOW)
    assert _only(after, SECOND).call_id == lost.call_id
