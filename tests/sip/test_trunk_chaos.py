"""Chaos through a trunk: the call chaos of ``test_call_chaos`` (lossy network,
jumping clock, misbehaving phones, closing connections), with calls out to a
simulated carrier over the tenant's trunk and calls in from the carrier to a
DID. The carrier answers, refuses (486, 503, 603), challenges (401 or 407: the
proxy must answer once with the trunk's credentials, which the carrier
checks), stays silent or vanishes, talks in its dialogs, and the connection
to it may close at any moment (the service opens it again on first use).
The same checks hold as in ``test_call_chaos``: nothing escapes the edge, all
it sends is well formed, and once every timer has run out nothing is left and
each admitted call has exactly one record."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from appliance.media.relay import PortPool, Relay
from appliance.sip import digest
from appliance.sip.actions import Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.dialplan import DidEntry, NumberSettings, RouteRule, TrunkEntry
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import Message, parse_datagram
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.registrar import Flow, Registrar
from appliance.sip.validate import check_request
from appliance.testing.sipclient import SipTestClient
from tests.sip.chaos_network import (
    TENANT,
    Network,
    assert_nothing_left,
    caller_flow,
    contact_flow,
    flush,
    register,
)
from tests.sip.chaos_phones import CALLEE, TALK, Callee, Caller, Pending
from tests.sip.test_call_chaos import Moves, _reproducible, chaos, run_chaos
from tests.sip.test_proxy import DOMAIN, NOW, _ha1

#: The DID the carrier's calls are to; it rings the extension :data:`CALLEE`.
DID = "+441632960999"
CARRIER_DOMAIN = "carrier.example"
TRUNK_USER, TRUNK_PASSWORD = "acme", "carrier-secret"
#: The carrier's server our calls go to, and the address its calls come from.
CARRIER_HOST, CARRIER_INBOUND_HOST = "127.0.0.50", "127.0.0.49"

TRUNK_MOVES = Moves(
    ("deliver",) * 8
    + ("drop", "duplicate", "retransmit", "start", "start", "clock", "close", "reconnect")
    + ("user",) * 7,
    (
        *("trying", "ring", "ring", "answer", "answer", "answer with session timer"),
        *("486", "503", "603", "401", "407", "407", "vanish"),
    ),
    ("bye", *TALK, "vanish"),
    ("hang up", "early bye", "vanish", *("wait",) * 6),
    ("hang up", *TALK, "vanish"),
)


def carrier_flow(transport: str) -> Flow:
    """The flow to the carrier's server as the service locates it (a connection
    the service opens on first use, named as it names them)."""
    if transport == "udp":
        return Flow("udp", (CARRIER_HOST, 5060))
    return Flow(transport, (CARRIER_HOST, 5061), f"trunk-7-{CARRIER_HOST}-5061")


def inbound_flow(index: int, transport: str) -> Flow:
    """The flow the carrier's call ``index`` comes in on (one each)."""
    remote = (CARRIER_INBOUND_HOST, 7000 + index)
    if transport == "udp":
        return Flow("udp", remote)
    return Flow(transport, remote, f"carrier-in-{index}")


def trunk_edge(max_calls: int, max_call_seconds: float, carrier: Flow) -> tuple[SipEdge, Relay]:
    """The SIP core for one tenant with a trunk to the carrier (routes for +44,
    national numbers in the UK) and a DID ringing :data:`CALLEE`."""
    numbers = [f"100{i}" for i in range(1, 6)] + [CALLEE]
    extensions = [
        ExtensionEntry(index + 10, TENANT, number, _ha1(number, DOMAIN))
        for index, number in enumerate(numbers)
    ]
    trunk = TrunkEntry(
        id=7,
        tenant_id=TENANT,
        name="carrier",
        host=CARRIER_DOMAIN,
        port=None,
        transport="udp" if carrier.transport == "udp" else "tls",
        username=TRUNK_USER,
        password=TRUNK_PASSWORD,
        caller_id_mode="fixed",
        caller_id="+441632960000",
        tls_domain=CARRIER_DOMAIN,
        ca_bundle=None,
        fingerprint=None,
        inbound_networks=(ipaddress.ip_network("127.0.0.48/30"),),
        inbound_fingerprint=None,
    )
    directory = SipDirectory(
        [TenantEntry(TENANT, DOMAIN, "active", 10, max_calls)],
        extensions,
        trunks=[trunk],
        dids={DID: DidEntry(DID, TENANT, 15, CALLEE)},
        routes={TENANT: (RouteRule(1, "+44", "carrier"),)},
        numbering={TENANT: NumberSettings(country_code="44")},
    )
    relay = Relay(PortPool(choose=lambda size: size - 1))
    edge = SipEdge(
        directory,
        digest.DigestVerifier(digest.NonceFactory(b"k" * 32, 300)),
        Registrar(),
        Blocklist(),
        [
            ProxyAddress("udp", "127.0.0.1", 5060),
            ProxyAddress("tcp", "127.0.0.1", 5060),
            ProxyAddress("tls", "127.0.0.1", 5061),
        ],
        media=relay,
        media_address="127.0.0.1",
        max_call_seconds=max_call_seconds,
    )
    if carrier.connection:
        edge.connection_opened(carrier)
    edge.proxy.trunk_flows[7] = [carrier]
    return edge, relay


@dataclass
class TrunkCaller(Caller):
    """A caller that dials ``target``: a phone a national number (out through
    the trunk), or the carrier the DID."""

    target: str = CALLEE

    def dial(self, now: float, authorization: str | None = None) -> list[bytes]:
        data = self.client.invite(self.target, authorization=authorization)
        self.invite, self.provisional, self.final = parse_datagram(data), False, 0
        self.pending["INVITE"] = Pending(data, now)
        return [data]


@dataclass
class TrunkCallee(Callee):
    """The carrier's side of an outbound call (``carrier``), or the DID phone's.
    The carrier may challenge with 401 or 407: it takes the next INVITE (a new
    branch) only with valid credentials of the trunk for its challenge. A
    second challenge refuses them (the proxy answers only one)."""

    carrier: bool = False
    challenges: int = 0
    #: The challenge we sent last: (status, nonce).
    challenge: tuple[int, str] | None = None
    #: Branches of INVITEs we challenged (an ACK on one is for its challenge).
    challenged: set[str] = field(default_factory=set)

    def act(self, action: str, now: float) -> list[bytes]:
        if action not in ("401", "407"):
            return super().act(action, now)
        if not self.carrier:
            return super().act("480", now)
        invite = self.invite
        if self.gone or invite is None or self.final:
            return []
        status = int(action)
        self.challenges += 1
        nonce = f"{self.tag}-{self.challenges}"
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        offer = (
            f'{header}: Digest realm="{CARRIER_DOMAIN}", nonce="{nonce}", qop="auth",'
            " algorithm=MD5\r\nContent-Length:"
        )
        reason = "Unauthorized" if status == 401 else "Proxy Authentication Required"
        self.last = self.client.answer(invite, status, reason, tag=self.tag).replace(
            b"Content-Length:", offer.encode(), 1
        )
        self.final, self.final_at, self.challenge = status, now, (status, nonce)
        return [self.last]

    def receive(self, message: Message, now: float) -> list[bytes]:
        if self.gone:
            return []
        invite = self.invite
        if message.is_request and invite is not None and self.challenge is not None:
            branch = message.top_via.branch or ""
            old = branch != invite.top_via.branch
            if old and branch in self.challenged:
                # The ACK of a challenge we have moved on from, or a late copy
                # of the INVITE it challenged: its transaction is over for us.
                return []
            initial = message.method == "INVITE" and message.to.tag is None
            if initial and old and self.final in (401, 407):
                _check_credentials(message, *self.challenge)
                self.challenged.add(invite.top_via.branch or "")
                self.invite, self.last, self.final = message, None, 0
                self.acked, self.challenge = False, None
                return []
        return super().receive(message, now)


def _check_credentials(invite: Message, status: int, nonce: str) -> None:
    """The INVITE answering our challenge carries the trunk's Digest credentials
    for it, in the header the challenge asked for."""
    header = "authorization" if status == 401 else "proxy-authorization"
    credentials = digest.parse_credentials(invite.first(header) or "")
    assert isinstance(credentials, digest.Credentials), invite
    params = credentials.params
    assert (params["username"], params["realm"], params["nonce"]) == (
        TRUNK_USER,
        CARRIER_DOMAIN,
        nonce,
    )
    algorithm = params.get("algorithm", digest.MD5).upper()
    expected = digest.response(
        algorithm,
        digest.ha1(algorithm, TRUNK_USER, CARRIER_DOMAIN, TRUNK_PASSWORD),
        nonce=nonce,
        nc=params["nc"],
        cnonce=params["cnonce"],
        qop="auth",
        method="INVITE",
        uri=params["uri"],
    )
    assert params["response"] == expected, "wrong trunk credentials"


class TrunkNetwork(Network):
    """The network with the carrier as the first contact (every outbound call
    reaches it there) and the DID's phone as the second. When the connection
    to the carrier closes, the calls it carried are lost with it (the carrier
    forgets them), and the service opens it again on its next use."""

    def __init__(
        self,
        edge: SipEdge,
        relay: Relay,
        calls: tuple[tuple[bool, bool, str], ...],
        carrier: Flow,
        phone: Flow,
    ) -> None:
        flows = [
            inbound_flow(i, t) if inbound else caller_flow(i, t)
            for i, (inbound, _, t) in enumerate(calls)
        ]
        acks = [acks for _, acks, _ in calls]
        super().__init__(edge, relay, acks, caller_flows=flows, contacts=(carrier, phone))
        self.carrier = carrier
        for index, (inbound, acks_, _) in enumerate(calls):
            old = self.callers[index]
            if inbound:
                phone_client = SipTestClient(
                    f"+4477009001{index:02d}",
                    CARRIER_DOMAIN,
                    "",
                    transport=old.flow.transport.upper(),
                    local=old.flow.remote,
                )
                phone_client.call_id = old.client.call_id
                self.callers[index] = TrunkCaller(old.flow, phone_client, acks_, target=DID)
            else:
                target = f"0163296{index:04d}"
                self.callers[index] = TrunkCaller(old.flow, old.client, acks_, target=target)
        for number, contact in enumerate(self.contacts):
            for call_id, callee in list(contact.callees.items()):
                phone_client = callee.client
                if number == 0:
                    phone_client = SipTestClient(
                        "carrier",
                        CARRIER_DOMAIN,
                        "",
                        transport=carrier.transport.upper(),
                        local=carrier.remote,
                    )
                contact.callees[call_id] = TrunkCallee(
                    phone_client, callee.tag, reliable=callee.reliable, carrier=number == 0
                )
        self.callees = self.contacts[0].callees

    def close(self, flow: Flow) -> None:
        if flow != self.carrier:
            super().close(flow)
            return
        self.note(f"connection {flow.connection} to the carrier closed")
        self.in_flight = [d for d in self.in_flight if d.flow != flow]
        for callee in self.contacts[0].callees.values():
            callee.gone = callee.gone or callee.invite is not None
        self.carry(self.edge.connection_closed(flow, self.now))


@dataclass(frozen=True)
class TrunkScenario:
    """The quota, the longest call, the transports to the carrier and of the
    DID's phone, and each call: inbound (from the carrier) or outbound,
    whether its caller ACKs, and its caller's transport."""

    max_calls: int
    max_call_seconds: float
    carrier: str
    phone: str
    calls: tuple[tuple[bool, bool, str], ...]


@st.composite
def _trunk_scenario(draw: st.DrawFn) -> TrunkScenario:
    call = st.booleans().flatmap(
        lambda inbound: st.tuples(
            st.just(inbound),
            st.sampled_from([True, True, True, False]),
            st.sampled_from(["udp", "tls"] if inbound else ["udp", "tcp"]),
        )
    )
    return TrunkScenario(
        draw(st.sampled_from([2, 20])),
        draw(st.sampled_from([8.0, 45.0, 240.0, 240.0])),
        draw(st.sampled_from(["tls", "tls", "udp"])),
        draw(st.sampled_from(["udp", "tcp"])),
        tuple(draw(st.lists(call, min_size=1, max_size=4))),
    )


def _trunk_network(scenario: TrunkScenario) -> TrunkNetwork:
    carrier = carrier_flow(scenario.carrier)
    phone = contact_flow(0, scenario.phone)
    edge, relay = trunk_edge(scenario.max_calls, scenario.max_call_seconds, carrier)
    register(edge, phone, NOW)
    return TrunkNetwork(edge, relay, scenario.calls, carrier, phone)


@chaos(200)
@given(_trunk_scenario(), st.integers(40, 300), st.booleans(), st.data())
def test_chaotic_trunk_calls_leave_nothing_behind(
    scenario: TrunkScenario, steps: int, network_up: bool, data: st.DataObject
) -> None:
    """Phones call national numbers out through the trunk, and the carrier
    calls the DID, with the chaos of ``test_call_chaos``: the carrier answers,
    refuses, challenges (answered once with the trunk's credentials, which it
    checks), stays silent or vanishes; the connection to it closes at any
    moment. The same end-of-run checks hold."""
    with _reproducible():
        network = _trunk_network(scenario)
        run_chaos(network, data, TRUNK_MOVES, steps, scenario.max_call_seconds, network_up)


def _outbound_call(
    caller_transport: str = "udp", max_call_seconds: float = 240.0
) -> tuple[TrunkNetwork, Caller, TrunkCallee]:
    """Caller 0's outbound call, its INVITE at the carrier (over TLS): the
    network, the caller, and the carrier's side of the call."""
    scenario = TrunkScenario(
        20, max_call_seconds, "tls", "udp", ((False, True, caller_transport),)
    )
    network = _trunk_network(scenario)
    network.start(0)
    flush(network)
    caller = network.callers[0]
    callee = network.contacts[0].callees[caller.client.call_id]
    assert isinstance(callee, TrunkCallee)
    return network, caller, callee


def test_a_challenged_outbound_call_is_answered_and_ends_cleanly() -> None:
    """The carrier challenges with 407, takes the retried INVITE with the trunk's
    credentials and answers; the caller hangs up: one record, nothing left."""
    with _reproducible():
        network, caller, callee = _outbound_call()
        network.phone_sends(network.carrier, callee.act("407", network.now))
        flush(network)
        assert callee.challenge is None and callee.final == 0, "no retried INVITE"
        network.phone_sends(network.carrier, callee.act("answer", network.now))
        flush(network)
        assert caller.final == 200
        assert caller.answer is not None and b"m=audio" in caller.answer.body, "no media"
        network.phone_sends(caller.flow, caller.hang_up(network.now))
        flush(network)
        network.settle(network_up=True, seconds=300.0)
    assert [r.disposition for r in network.records] == ["answered"]
    assert_nothing_left(network)


def test_the_proxys_bye_on_an_outbound_call_is_well_formed() -> None:
    """An outbound call answered by the carrier reaches its longest life (8 s):
    the proxy BYEs both legs. Its BYEs must parse: the one to the caller has
    the carrier's party in From, the one to the carrier in To, each as that
    leg's INVITE named them. (They used to say ``<sip:+441632960000>``, a SIP
    URI whose host is the number: a strict phone or carrier answers 400, or
    drops it, and keeps the call up.)"""
    with _reproducible():
        network, caller, callee = _outbound_call(max_call_seconds=8.0)
        network.phone_sends(network.carrier, callee.act("answer", network.now))
        flush(network)
        assert caller.final == 200
        ended = network.edge.handle_timer(network.now + 10.0)
    byes = [a.data for a in ended if isinstance(a, Send) and a.data.startswith(b"BYE ")]
    assert len(byes) == 2
    for bye in byes:
        check_request(parse_datagram(bye))


def test_a_carrier_challenge_crossing_the_callers_cancel_is_not_answered() -> None:
    """The caller CANCELs while the carrier has said nothing yet (the CANCEL waits
    for a provisional, RFC 3261 §9.1), and the carrier then challenges: the
    INVITE is not sent again with credentials, the call ends as cancelled.
    (It used to be sent again, and the carrier's 2xx then set up a call the
    caller had cancelled, on a branch whose media had no answer.)"""
    with _reproducible():
        network, caller, callee = _outbound_call("tcp")
        network.phone_sends(caller.flow, caller.hang_up(network.now))
        flush(network)
        network.phone_sends(network.carrier, callee.act("407", network.now))
        flush(network)
        assert callee.challenge is not None, "the cancelled INVITE was sent again"
        network.settle(network_up=True, seconds=300.0)
    assert [r.disposition for r in network.records] == ["cancelled"]
    assert_nothing_left(network)


def test_a_carrier_refusing_the_trunks_credentials_gets_the_caller_a_403() -> None:
    """The carrier challenges the INVITE that carries the trunk's credentials
    again: the proxy answers a challenge only once, and the caller gets 403,
    never the carrier's challenge (its realm is the carrier's, which a phone
    has no credentials for). The challenged call's media plan survives the
    first challenge: it used to be forgotten, so an answered challenged call
    came up with no SDP and no media path."""
    with _reproducible():
        network, caller, callee = _outbound_call()
        for _ in range(2):
            network.phone_sends(network.carrier, callee.act("407", network.now))
            flush(network)
        network.settle(network_up=True, seconds=300.0)
    assert caller.final == 403
    (record,) = network.records
    assert record.disposition == "failed"
    assert record.media["end_reason"] == "trunk-credentials-refused"
    assert_nothing_left(network)
