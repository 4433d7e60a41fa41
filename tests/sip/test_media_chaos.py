"""Chaos over SDP: calls through the real edge, proxy and relay (in memory),
phone to phone, out through a trunk and in from its carrier, whose INVITE,
2xx, ACK, re-INVITEs and UPDATEs carry whatever a phone or carrier might send
(plain or SRTP profiles; valid keys of every suite; NULL, F8 and AES-192
suites, MKIs, KDR, UNENCRYPTED_SRTP, garbled keys; several lines, repeated
tags; hold; a video stream; no SDP at all), under every pair of tenant and
trunk policies, over TLS or UDP.

Whatever they send, the never-downgrade rules hold at every step:
- no ``a=crypto`` ever goes to a leg signalled in the clear (SDES keys travel
  in the SDP);
- every SDP sent to a leg whose policy requires SRTP carries keys;
- no key a phone sent ever appears in what we send, and no key we send one
  leg appears on the other;
- media goes through the relay or nowhere: every address in what we send is
  the relay's, the audio port one of its ports, any other stream (video,
  which the relay does not carry) disabled with port 0;
- a leg whose policy requires SRTP is never set to plain RTP in the relay, a
  leg once on SRTP stays on SRTP for the rest of the call, and the relay
  leg's suite matches the leg's negotiated mode;
- a re-INVITE or UPDATE refused with 488 leaves both relay legs as they were;
- nothing escapes the edge, and all it sends parses and passes validation.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import assume, event, given
from hypothesis import strategies as st

from appliance.media.policy import Protection, SrtpPolicy
from appliance.media.relay import PortPool, Relay
from appliance.media.sdes import Suite
from appliance.sip import digest
from appliance.sip.actions import Action, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.dialplan import DidEntry, NumberSettings, RouteRule
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import Message, parse_datagram
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.registrar import Flow, Registrar
from appliance.sip.validate import check_request, check_response
from appliance.testing.sipclient import SipTestClient
from tests.sip.chaos_phones import Dialog
from tests.sip.test_call_chaos import chaos
from tests.sip.test_proxy import DOMAIN, NOW, _ha1, _phone
from tests.sip.test_trunk_calls import CARRIER, _trunk

#: The DID the carrier calls in on (it rings 1002), and where it calls from.
DID = "+441632960999"
CARRIER_INBOUND = "127.0.0.49"
_KEY_RE = re.compile(rb"inline:([A-Za-z0-9+/=]+)")
_CONNECTION_RE = re.compile(rb"^c=IN IP4 (\S+)\r$", re.MULTILINE)
_PORT_RE = re.compile(rb"^m=\w+ ([0-9]+) ", re.MULTILINE)
#: The relay's address, in every SDP we send.
MEDIA = "127.0.0.1"


def _key(suite: Suite, fill: int) -> str:
    """A key and salt of ``suite``'s length, unpadded base64 when ``fill`` is odd."""
    text = base64.b64encode(bytes([fill]) * (suite.key_length + suite.salt_length)).decode()
    return text.rstrip("=") if fill % 2 else text


#: Lines no policy may accept: each refused suite or parameter, a garbled key.
BAD_LINES = (
    "{tag} NULL_HMAC_SHA1_80 inline:{key}",
    "{tag} F8_128_HMAC_SHA1_80 inline:{key}",
    "{tag} AES_192_CM_HMAC_SHA1_80 inline:{key}",
    "{tag} AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4",
    "{tag} AES_CM_128_HMAC_SHA1_80 inline:{key} KDR=1",
    "{tag} AES_CM_128_HMAC_SHA1_80 inline:{key} UNENCRYPTED_SRTP",
    "{tag} AES_CM_128_HMAC_SHA1_80 inline:{key} UNAUTHENTICATED_SRTP",
    "{tag} AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!",
)


@st.composite
def crypto_lines(draw: st.DrawFn) -> list[str]:
    """The ``a=crypto`` values of one SDP: none, or a few good and bad lines,
    tags possibly repeated (an offer repeating a tag is refused whole)."""
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        tag = draw(st.integers(1, 4))
        fill = draw(st.integers(1, 250))
        if draw(st.integers(0, 3)) == 0:
            template = draw(st.sampled_from(BAD_LINES))
            lines.append(template.format(tag=tag, key=_key(Suite.AES_CM_128_HMAC_SHA1_80, fill)))
        else:
            suite = draw(st.sampled_from(list(Suite)))
            lines.append(f"{tag} {suite.value} inline:{_key(suite, fill)}")
    return lines


@st.composite
def descriptions(draw: st.DrawFn, client: SipTestClient) -> bytes:
    """An SDP body a phone might send: plain or SRTP profile, any crypto lines,
    maybe on hold (a direction attribute, or the RFC 2543 ``c=0.0.0.0``)."""
    profile = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP"]))
    hold = draw(st.sampled_from([[], [], [], ["sendonly"], ["inactive"], ["recvonly"]]))
    kind = draw(st.sampled_from(["keys", "keys", "plain", "chaos"]))
    crypto = {"keys": client.crypto_offer(), "plain": []}.get(kind) or draw(crypto_lines())
    body = client.sdp(profile=profile, crypto=crypto, attributes=hold)
    if draw(st.integers(0, 9)) == 0:
        body = re.sub(rb"c=IN IP4 [0-9.]+", b"c=IN IP4 0.0.0.0", body, count=1)
    if draw(st.integers(0, 4)) == 0:  # a video stream, which the relay does not carry
        video = [f"m=video {client.media_port + 2} {profile} 96", "a=rtpmap:96 H264/90000"]
        if draw(st.booleans()):
            video.insert(1, f"c=IN IP4 {client.local[0]}")
        video += [f"a=crypto:{line}" for line in draw(crypto_lines())]
        body += ("\r\n".join(video) + "\r\n").encode()
    return body


@st.composite
def answers(draw: st.DrawFn, client: SipTestClient, offer: bytes) -> bytes:
    """The answer a phone gives ``offer``: a proper one most of the time (its
    profile, one line it can use), else anything :func:`descriptions` makes."""
    if offer and draw(st.integers(0, 2)) > 0:
        return client.sdp_answer(parse_datagram(_with_body(offer)))
    return draw(descriptions(client))


def _with_body(body: bytes) -> bytes:
    """A throwaway message carrying ``body``, for the test client's SDP answer."""
    head = "OPTIONS sip:x SIP/2.0\r\nContent-Type: application/sdp\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


@dataclass
class Party:
    """A registered phone, or the carrier: its flow and test client."""

    number: str
    flow: Flow
    client: SipTestClient
    dialog: Dialog | None = None


def _carrier_flow(transport: str) -> Flow:
    """The trunk's flow to its carrier: its TLS connection, or UDP."""
    return CARRIER if transport == "tls" else Flow("udp", (CARRIER.remote[0], 5060))


def _edge(phones: SrtpPolicy, trunk: SrtpPolicy, carrier: Flow) -> SipEdge:
    """One tenant whose phones' legs have the policy ``phones``, with a trunk
    (policy ``trunk``) to ``carrier`` that national numbers are routed to."""
    directory = SipDirectory(
        [TenantEntry(1, DOMAIN, "active", 10, 5, phones)],
        [ExtensionEntry(11 + i, 1, n, _ha1(n, DOMAIN)) for i, n in enumerate(("1001", "1002"))],
        trunks=[_trunk(srtp=trunk, transport=carrier.transport)],
        dids={DID: DidEntry(DID, 1, 12, "1002")},
        routes={1: (RouteRule(1, "+44", "carrier"),)},
        numbering={1: NumberSettings(country_code="44")},
    )
    edge = SipEdge(
        directory,
        digest.DigestVerifier(digest.NonceFactory(b"k" * 32, 300)),
        Registrar(),
        Blocklist(),
        [ProxyAddress("udp", "127.0.0.1", 5060), ProxyAddress("tls", "127.0.0.1", 5061)],
        media=Relay(PortPool()),
        media_address="127.0.0.1",
    )
    if carrier.connection:
        edge.connection_opened(carrier)
    edge.proxy.trunk_flows[7] = [carrier]
    return edge


def _carrier(flow: Flow) -> Party:
    """The carrier, at the end of the trunk's ``flow``."""
    client = SipTestClient(
        "carrier", "carrier.example", "", transport=flow.transport.upper(), local=flow.remote
    )
    return Party("01632960123", flow, client)


def _inbound_carrier(edge: SipEdge, transport: str) -> Party:
    """The carrier calling in from its inbound network, over ``transport``."""
    flow = Flow(transport, (CARRIER_INBOUND, 7000), "carrier-in" if transport == "tls" else "")
    if flow.connection:
        edge.connection_opened(flow)
    client = SipTestClient(
        "+447700900100", "carrier.example", "", transport=transport.upper(), local=flow.remote
    )
    return Party("+447700900100", flow, client)


def _register(edge: SipEdge, number: str, port: int, transport: str) -> Party:
    """Register ``number`` over ``transport`` (TLS on a connection of its own)."""
    phone = _phone(edge, number, port, transport=transport)
    return Party(number, phone.flow, phone.client)


def _sent(actions: Sequence[Action]) -> list[tuple[Flow, bytes]]:
    return [(a.flow, a.data) for a in actions if isinstance(a, Send)]


@dataclass
class Checked:
    """The edge as the phones reach it, checking every step's invariants."""

    edge: SipEdge
    parties: tuple[Party, Party]
    #: The policy of each party's leg (caller's, callee's).
    policies: tuple[SrtpPolicy, SrtpPolicy]
    #: Every key a phone put in its SDP, and every key we sent each flow.
    theirs: set[bytes] = field(default_factory=set)
    ours: dict[Flow, set[bytes]] = field(default_factory=dict)
    #: Legs that have been on SRTP (0 caller, 1 callee): they must stay so.
    secured: set[int] = field(default_factory=set)

    def send(self, party: Party, data: bytes) -> dict[Flow, list[Message]]:
        """``party`` sends ``data``: what the edge sends each flow, checked."""
        message = parse_datagram(data)
        self.theirs.update(_KEY_RE.findall(message.body))
        before = self._relay_state()
        out: dict[Flow, list[Message]] = {}
        for flow, wire in _sent(self.edge.message_received(message, party.flow, NOW)):
            sent = parse_datagram(wire)
            if sent.is_request:
                check_request(sent)
            else:
                check_response(sent)
            self._check_sdp(flow, sent)
            out.setdefault(flow, []).append(sent)
        renegotiating = message.method in ("INVITE", "UPDATE") and message.to.tag
        refused = [m for m in out.get(party.flow, []) if m.status == 488]
        if renegotiating and refused:
            assert self._relay_state() == before, "a refused re-offer changed the relay"
        self._check_legs()
        return out

    def _check_sdp(self, flow: Flow, message: Message) -> None:
        keys = set(_KEY_RE.findall(message.body))
        assert not keys & self.theirs, "a phone's key was sent on"
        for other, sent in self.ours.items():
            assert other == flow or not keys & sent, "one leg's key went to the other"
        self.ours.setdefault(flow, set()).update(keys)
        if not message.body:
            return
        assert flow.transport == "tls" or b"a=crypto" not in message.body, "keys in the clear"
        (index,) = [i for i, party in enumerate(self.parties) if party.flow == flow]
        if self.policies[index] is SrtpPolicy.REQUIRED:
            assert b"a=crypto" in message.body, "plain SDP to a leg that requires SRTP"
        # Media goes through the relay or nowhere: every address is ours, the
        # audio port one of the relay's, any other stream disabled (port 0).
        assert set(_CONNECTION_RE.findall(message.body)) <= {MEDIA.encode()}, "media bypass"
        (audio, *others) = _PORT_RE.findall(message.body)
        assert int(audio) != self.parties[1 - index].client.media_port, "media bypass"
        assert all(int(port) == 0 for port in others), "a stream the relay does not carry"

    def _calls(self) -> list[object]:
        return [c for c in self.edge.proxy.calls.values() if c.state != "ended"]

    def _relay_state(self) -> list[tuple[object, ...]]:
        relay = self.edge.proxy.media
        assert isinstance(relay, Relay)
        return [
            (leg.expected, leg.suite, leg.inbound, leg.outbound, leg.rtcp_mux)
            for session in relay.sessions.values()
            for leg in (session.a, session.b)
        ]

    def _check_legs(self) -> None:
        for call in self.edge.proxy.calls.values():
            media = call.media
            if media is None or call.state == "ended":
                continue
            for index, side in enumerate((media.caller, media.callee)):
                mode = side.mode
                if mode is None:
                    continue
                srtp = mode.protection is not Protection.PLAIN
                assert (side.leg.suite is not None) == srtp, "relay leg and mode disagree"
                if self.policies[index] is SrtpPolicy.REQUIRED:
                    assert srtp, "a leg that requires SRTP is on plain RTP"
                if index in self.secured:
                    assert srtp, "a leg on SRTP went back to plain RTP"
                if srtp:
                    self.secured.add(index)


def _final(out: dict[Flow, list[Message]], party: Party) -> Message | None:
    """The final answer ``party`` got to its INVITE in ``out``, if any."""
    finals = [m for m in out.get(party.flow, []) if not m.is_request and m.status >= 200]
    return finals[-1] if finals else None


def _request(out: dict[Flow, list[Message]], party: Party, method: str) -> Message | None:
    requests = [m for m in out.get(party.flow, []) if m.is_request and m.method == method]
    return requests[-1] if requests else None


@chaos(400)
@given(
    st.sampled_from(list(SrtpPolicy)),
    st.sampled_from(list(SrtpPolicy)),
    st.sampled_from(["tls", "tls", "udp"]),
    st.sampled_from(["tls", "tls", "udp", "trunk"]),
    st.sampled_from(["tls", "tls", "udp", "trunk"]),
    st.data(),
)
def test_no_sdp_ever_downgrades_or_leaks_a_leg(
    phones: SrtpPolicy,
    trunk: SrtpPolicy,
    carrier: str,
    caller: str,
    callee: str,
    data: st.DataObject,
) -> None:
    """A call from a phone (over TLS or UDP) or in from the carrier to a DID,
    to another phone or out through the trunk, whose INVITE, 2xx, ACK,
    re-INVITEs and UPDATEs carry any SDP a phone or carrier might send, under
    the tenant's and the trunk's policies, the trunk over TLS or UDP: the
    invariants of this module hold at every step, and the call ends with
    nothing held. (A trunk requiring SRTP over UDP is a configuration error,
    refused before it could carry a call.)"""
    assume(not (carrier == "udp" and trunk is SrtpPolicy.REQUIRED))
    edge = _edge(phones, trunk, _carrier_flow(carrier))
    if caller == "trunk":
        callee = "tls" if callee == "trunk" else callee  # the carrier calls a DID
        alice = _inbound_carrier(edge, carrier)
    else:
        alice = _register(edge, "1001", 5062, caller)
    bob = (
        _carrier(_carrier_flow(carrier))
        if callee == "trunk"
        else _register(edge, "1002", 5064, callee)
    )
    policies = tuple(trunk if side == "trunk" else phones for side in (caller, callee))
    net = Checked(edge, (alice, bob), (policies[0], policies[1]))
    late = data.draw(st.integers(0, 4)) == 0
    offer = b"" if late else data.draw(descriptions(alice.client))
    target = DID if caller == "trunk" else bob.number
    out = net.send(alice, alice.client.invite(target, body=offer))
    challenge = _final(out, alice)
    if caller != "trunk":  # a phone's INVITE is challenged, a carrier's never
        assert challenge is not None and challenge.status == 407
        uri = f"sip:{bob.number}@{DOMAIN}"
        auth = alice.client.authorization(challenge, method="INVITE", uri=uri)
        out = net.send(alice, alice.client.invite(bob.number, body=offer, authorization=auth))
    invite = _request(out, bob, "INVITE")
    if invite is None:
        event(f"not forwarded {[m.status for m in out.get(alice.flow, [])]}")
        assert _final(out, alice) is not None
        return _hung_up(net)
    reply = (
        data.draw(answers(bob.client, invite.body))
        if invite.body
        else data.draw(descriptions(bob.client))
    )
    out = net.send(bob, bob.client.answer(invite, 200, "OK", tag="callee", body=reply))
    answer = _final(out, alice)
    assert answer is not None
    event(f"initial {answer.status}")
    if answer.status != 200:
        return _hung_up(net)
    alice.dialog = Dialog.of_caller(alice.client, answer, False)
    bob.dialog = Dialog.of_callee(bob.client, invite, "callee", False)
    ack_body = data.draw(answers(alice.client, answer.body)) if late else b""
    net.send(alice, alice.dialog.build("ACK", cseq=answer.cseq.number, body=ack_body))
    for _ in range(data.draw(st.integers(0, 4))):
        if not net._calls():
            break
        offerer, answerer = (alice, bob) if data.draw(st.booleans()) else (bob, alice)
        _renegotiate(net, offerer, answerer, data)
    if net._calls():
        assert alice.dialog is not None
        net.send(alice, alice.dialog.build("BYE"))
    event(f"secured {sorted(net.secured)}")
    _hung_up(net)


def _renegotiate(net: Checked, offerer: Party, answerer: Party, data: st.DataObject) -> None:
    """``offerer`` sends a re-INVITE (maybe without an offer) or an UPDATE with
    an offer (RFC 3311), ``answerer`` answers 200 with any SDP or refuses with
    488, and the offerer ACKs a re-INVITE's 2xx (with its answer, if late)."""
    assert offerer.dialog is not None and answerer.dialog is not None
    method = data.draw(st.sampled_from(["INVITE", "INVITE", "UPDATE"]))
    late = method == "INVITE" and data.draw(st.integers(0, 3)) == 0
    body = b"" if late else data.draw(descriptions(offerer.client))
    out = net.send(offerer, offerer.dialog.build(method, body=body))
    forwarded = _request(out, answerer, method)
    if forwarded is None:
        event(f"{method} not forwarded {[m.status for m in out.get(offerer.flow, [])]}")
        return
    if data.draw(st.integers(0, 5)) == 0:
        reply, status = b"", 488
    elif forwarded.body:
        reply, status = data.draw(answers(answerer.client, forwarded.body)), 200
    else:
        reply, status = data.draw(descriptions(answerer.client)), 200
    reason = "OK" if status == 200 else "Not Acceptable Here"
    out = net.send(answerer, answerer.client.answer(forwarded, status, reason, body=reply))
    final = _final(out, offerer)
    event(f"{method} {final.status if final else None}")
    if final is None or final.status != 200 or method != "INVITE":
        return  # a failure's ACK is hop by hop: the edge's timers end its transaction
    ack_body = data.draw(answers(offerer.client, final.body)) if late else b""
    net.send(offerer, offerer.dialog.build("ACK", cseq=final.cseq.number, body=ack_body))


def _hung_up(net: Checked) -> None:
    """Once every timer has run out, no call, slot or relay port is left."""
    for hours in range(5, 9):
        for flow, wire in _sent(net.edge.handle_timer(NOW + hours * 3600)):
            net._check_sdp(flow, parse_datagram(wire))
    relay = net.edge.proxy.media
    assert isinstance(relay, Relay)
    assert not net.edge.proxy.calls and relay.pool.in_use == 0
    assert net.edge.proxy.admission.count(1) == 0
