"""Chaos: whole calls over UDP through the real edge, proxy and media relay,
with no sockets. The network drops, duplicates and reorders datagrams, the
phones answer, refuse, hang up, forget to ACK or vanish, and the clock jumps.
Whatever happens, every datagram the edge sends is well formed, and once all
timers have run out nothing is left behind: no quota slot, no relay port, no
call or transaction, and each admitted call has left exactly one record."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.media.relay import PortPool, Relay
from appliance.sip import digest
from appliance.sip.actions import Action, CallEnded, LiveCall, QuotaRefused, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.cdr import CallDetailRecord
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import parse_datagram
from appliance.sip.proxy import RING_TIMEOUT_SECONDS
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.registrar import Flow, Registrar
from appliance.sip.transaction import T4
from appliance.sip.validate import check_request, check_response
from appliance.testing.sipclient import SipTestClient
from tests.sip.chaos_phones import CALLEE, GIVE_UP, Callee, Caller
from tests.sip.test_proxy import DOMAIN, NOW, _ha1, _only

TENANT = 1
CALLEE_FLOW = Flow("udp", ("127.0.0.3", 5080))
#: A datagram still in flight this long after it was sent is lost: RFC 3261's
#: T4 is the longest a message stays in the network.
LIFETIME = T4 - 1
#: Fake time the chaos may take before the settling: with the settling, well
#: inside the callee's registration (3600 s), so calls keep finding it.
CHAOS_SECONDS = 1200.0
#: The service's timer tick, slowed down (it fires every due deadline at once).
SETTLE_STEP = 1.0
CLOCK_JUMPS = (0.05, 0.2, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0, 5.0, 17.0, 33.0, 65.0, 190.0)
FINAL_FAILURES = (486, 603, 404, 500)


def _edge(max_calls: int, max_call_seconds: float) -> tuple[SipEdge, Relay]:
    """The appliance's SIP core for one tenant over UDP, with a relay whose
    ports we can count, and the callee registered."""
    numbers = [f"100{i}" for i in range(1, 6)] + [CALLEE]
    extensions = [
        ExtensionEntry(index + 10, TENANT, number, _ha1(number, DOMAIN))
        for index, number in enumerate(numbers)
    ]
    relay = Relay(PortPool(choose=lambda size: size - 1))
    edge = SipEdge(
        SipDirectory([TenantEntry(TENANT, DOMAIN, "active", 10, max_calls)], extensions),
        digest.DigestVerifier(digest.NonceFactory(b"k" * 32, 300)),
        Registrar(),
        Blocklist(),
        [ProxyAddress("udp", "127.0.0.1", 5060)],
        media=relay,
        media_address="127.0.0.1",
        max_call_seconds=max_call_seconds,
    )
    phone = _client(CALLEE, CALLEE_FLOW)
    challenge = _only(
        edge.datagram_received(phone.register(expires=3600), CALLEE_FLOW, NOW), CALLEE_FLOW
    )
    auth = phone.authorization(challenge)
    registered = edge.datagram_received(
        phone.register(expires=3600, authorization=auth), CALLEE_FLOW, NOW
    )
    assert _only(registered, CALLEE_FLOW).status == 200
    return edge, relay


def _client(number: str, flow: Flow, call_id: str | None = None) -> SipTestClient:
    client = SipTestClient(number, DOMAIN, f"pw-{number}", transport="UDP", local=flow.remote)
    if call_id is not None:
        client.call_id = call_id
    return client


@dataclass
class Datagram:
    """A datagram on the wire: to the edge from ``flow``, or from the edge to it."""

    to_edge: bool
    flow: Flow
    data: bytes
    sent_at: float


class Network:
    """The edge, its phones and the datagrams between them, on a fake clock."""

    def __init__(self, edge: SipEdge, relay: Relay, acks: Sequence[bool]) -> None:
        self.edge, self.relay, self.now = edge, relay, NOW
        self.callers: list[Caller] = []
        self.callees: dict[str, Callee] = {}
        for index, caller_acks in enumerate(acks):
            flow = Flow("udp", ("127.0.0.2", 6000 + index))
            call_id = f"chaos-{index}@127.0.0.2"
            self.callers.append(
                Caller(flow, _client(f"100{index + 1}", flow, call_id), caller_acks)
            )
            self.callees[call_id] = Callee(_client(CALLEE, CALLEE_FLOW), f"callee-{index}")
        self.in_flight: list[Datagram] = []
        self.records: list[CallDetailRecord] = []
        self.admitted: set[str] = set()
        self.refused: set[str] = set()
        #: Calls reported live again after they ended (must stay empty).
        self.revived: set[str] = set()
        self._ended: set[str] = set()
        self.next_media_check = NOW

    # -- the phones' side ----------------------------------------------------

    def phone_sends(self, flow: Flow, datagrams: Sequence[bytes]) -> None:
        """Put what a phone sent on the wire."""
        self.in_flight += [Datagram(True, flow, data, self.now) for data in datagrams]

    def start(self, index: int) -> None:
        """Caller ``index`` dials (once)."""
        caller = self.callers[index]
        if caller.invite is None:
            self.phone_sends(caller.flow, caller.dial(self.now))

    def retransmit(self) -> None:
        """Every phone's retransmission timers fire."""
        for caller in self.callers:
            self.phone_sends(caller.flow, caller.retransmit(self.now))
        for callee in self.callees.values():
            self.phone_sends(CALLEE_FLOW, callee.retransmit(self.now))

    # -- the wire ------------------------------------------------------------

    def deliver(self, index: int, *, duplicate: bool = False) -> None:
        """Deliver a datagram in flight (any, so out of order); a duplicate leaves
        a copy on the wire."""
        datagram = self.in_flight[index] if duplicate else self.in_flight.pop(index)
        if datagram.to_edge:
            self.carry(self.edge.datagram_received(datagram.data, datagram.flow, self.now))
            return
        message = parse_datagram(datagram.data)
        if datagram.flow == CALLEE_FLOW:
            callee = self.callees[message.call_id]
            self.phone_sends(CALLEE_FLOW, callee.receive(message, self.now))
            return
        (caller,) = [c for c in self.callers if c.flow == datagram.flow]
        self.phone_sends(caller.flow, caller.receive(message, self.now))

    def carry(self, actions: Sequence[Action]) -> None:
        """Check and carry out what the edge asked for."""
        flows = {CALLEE_FLOW, *(c.flow for c in self.callers)}
        sends = [a for a in actions if isinstance(a, Send)]
        for send in sends:
            assert send.flow in flows, send
            _check_wellformed(send.data)
        # Timers due together fire in an order that varies from run to run (it
        # follows hashes of random branch ids): put them in a reproducible order.
        sends.sort(key=lambda s: (s.flow, _summary(s.data)))
        self.in_flight += [Datagram(False, s.flow, s.data, self.now) for s in sends]
        for action in actions:
            if isinstance(action, CallEnded):
                self.records.append(action.record)
            elif isinstance(action, LiveCall):
                if action.state == "proceeding":
                    self.admitted.add(action.call_id)
                if action.state == "ended":
                    self._ended.add(action.call_id)
                elif action.call_id in self._ended:
                    self.revived.add(action.call_id)
            elif isinstance(action, QuotaRefused):
                self.refused.add(action.call_id)
        proxy = self.edge.proxy
        live = sum(call.state != "ended" for call in proxy.calls.values())
        assert not self.revived, f"ended calls came back: {self.revived}"
        assert proxy.admission.count(TENANT) == live, "slots taken differ from live calls"

    # -- time -------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """The clock moves on: datagrams past their lifetime are lost, and the
        service's periodic work runs once, as after a stalled reactor."""
        self.now += seconds
        self.in_flight = [d for d in self.in_flight if self.now - d.sent_at <= LIFETIME]
        self.tick()

    def tick(self) -> None:
        """The service's timer tick (only when a deadline is due) and, every five
        seconds, its media idle check."""
        due = self.edge.next_timer()
        if due is not None and due <= self.now:
            self.carry(self.edge.handle_timer(self.now))
            after = self.edge.next_timer()
            assert after is None or after > self.now, "a deadline is due after handle_timer"
        if self.now >= self.next_media_check:
            self.next_media_check = self.now + 5.0
            idle = [i.call_id for i in self.relay.expire_idle(self.now)]
            if idle:
                self.carry(self.edge.proxy.media_idle(idle, self.now))

    def settle(self, *, network_up: bool, seconds: float) -> None:
        """Run the clock ``seconds`` on: with the network up every datagram
        arrives and phones keep retransmitting; down, everything is lost."""
        end = self.now + seconds
        while self.now < end:
            if network_up:
                self.retransmit()
                for _ in range(200):
                    if not self.in_flight:
                        break
                    self.deliver(0)
                assert not self.in_flight, "the edge and the phones kept talking"
            else:
                self.in_flight.clear()
            self.advance(SETTLE_STEP)


def _summary(data: bytes) -> tuple[str, str, str]:
    """Start line, Call-ID and CSeq: what tells apart the datagrams of one tick."""
    message = parse_datagram(data)
    return message.start_line, message.call_id, message.first("cseq") or ""


def _check_wellformed(data: bytes) -> None:
    """What the edge sends parses without defect and passes our own checks."""
    message = parse_datagram(data)
    assert message.defect is None, (message.defect, data)
    if message.is_request:
        check_request(message)
    else:
        check_response(message)
    _ = message.vias  # every Via, not only the top one a response is matched on


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[int, float, list[bool]]:
    """The tenant's quota (2 refuses some calls), the longest call (8 s ends
    calls still ringing; 240 s leaves media timeout, session timers and Timer C
    to act first) and whether each caller ACKs."""
    max_calls = draw(st.sampled_from([2, 20]))
    max_call_seconds = draw(st.sampled_from([8.0, 45.0, 240.0]))
    acks = draw(st.lists(st.sampled_from([True, True, True, False]), min_size=1, max_size=4))
    return max_calls, max_call_seconds, acks


WIRE_OPS = ("deliver",) * 10 + ("drop", "duplicate")
OPS = (*WIRE_OPS, "retransmit", "user", "user", "user", "start", "clock")
#: What a callee's user may do, before and after answering 200 (a status
#: is a refusal).
RINGING_ACTIONS: tuple[str, ...] = ("trying", "ring", "ring", "ring", "answer", "answer")
RINGING_ACTIONS += ("answer with session timer", "vanish", *map(str, FINAL_FAILURES))
ANSWERED_ACTIONS = ("bye", "bye", "vanish")
#: What a caller's user may do once it hears ringing (or is answered).
CALLER_ACTIONS = ("hang up", "hang up", "hang up", "early bye", "vanish")


def _chaos_step(network: Network, data: st.DataObject) -> None:
    """One thing happening: on the wire, in a phone, or to the clock."""
    op = data.draw(st.sampled_from(OPS))
    if op in WIRE_OPS:
        if not network.in_flight:
            return
        index = data.draw(st.integers(0, len(network.in_flight) - 1))
        if op == "drop":
            del network.in_flight[index]
        else:
            network.deliver(index, duplicate=op == "duplicate")
    elif op == "retransmit":
        network.retransmit()
    elif op == "start":
        idle = [i for i, caller in enumerate(network.callers) if caller.invite is None]
        if idle:
            network.start(data.draw(st.sampled_from(idle)))
    elif op == "clock":
        jump = data.draw(st.sampled_from(CLOCK_JUMPS))
        if network.now + jump < NOW + CHAOS_SECONDS:
            network.advance(jump)
    else:
        _user_acts(network, data)


def _user_acts(network: Network, data: st.DataObject) -> None:
    """A user of a phone that has something to do does one of its things."""
    callers = [c for c in network.callers if c.provisional and not c.gone and not c.hung_up]
    callees = [c for c in network.callees.values() if c.invite is not None and not c.gone]
    callees = [c for c in callees if not c.final or (c.final == 200 and not c.byed)]
    if not callers and not callees:
        return
    phones: list[Caller | Callee] = [*callers, *callees]
    phone = data.draw(st.sampled_from(phones))
    if isinstance(phone, Caller):
        action = data.draw(st.sampled_from(CALLER_ACTIONS))
        if action == "vanish":
            phone.gone = True
            return
        sent = phone.hang_up(network.now, early_bye=action == "early bye")
        network.phone_sends(phone.flow, sent)
        return
    actions = ANSWERED_ACTIONS if phone.final else RINGING_ACTIONS
    network.phone_sends(CALLEE_FLOW, phone.act(data.draw(st.sampled_from(actions)), network.now))


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_scenario(), st.integers(20, 200), st.booleans(), st.data())
def test_chaotic_calls_leave_nothing_behind(
    scenario: tuple[int, float, list[bool]], steps: int, network_up: bool, data: st.DataObject
) -> None:
    """Concurrent calls with datagrams lost, duplicated and reordered, phones
    misbehaving and the clock jumping; then every timer runs out (past the
    longest call and Timer C). Nothing escapes the edge, all it sends is well
    formed, every slot, port, call and transaction is given back, and every
    admitted call has exactly one record (a refused one, its refusal's)."""
    max_calls, max_call_seconds, acks = scenario
    edge, relay = _edge(max_calls, max_call_seconds)
    network = Network(edge, relay, acks)
    for _ in range(steps):
        _chaos_step(network, data)
    network.settle(network_up=network_up, seconds=max_call_seconds + RING_TIMEOUT_SECONDS + 200.0)
    _assert_nothing_left(network)


def _assert_nothing_left(network: Network) -> None:
    edge, proxy, relay = network.edge, network.edge.proxy, network.relay
    assert proxy.admission.count(TENANT) == 0, "a quota slot is still taken"
    assert relay.pool.in_use == 0 and not relay.sessions, "relay ports are still held"
    assert not proxy.calls, f"calls remembered: {set(proxy.calls)}"
    assert not proxy._upstream, f"server transactions left: {set(proxy._upstream)}"
    assert not proxy._branches, f"client transactions left: {set(proxy._branches)}"
    assert not edge._transactions and not edge._answered, "edge transactions left"
    assert proxy.next_timer() is None, "the proxy still has a deadline"
    ended = Counter(record.call_id for record in network.records)
    assert network.admitted.isdisjoint(network.refused)
    for call_id in network.admitted:
        assert ended[call_id] == 1, f"{call_id}: {ended[call_id]} records"
    for record in network.records:
        if record.call_id in network.refused:
            assert record.disposition == "rejected-quota", record
            assert ended[record.call_id] == 1
        else:
            assert record.call_id in network.admitted, record


def _flush(network: Network) -> None:
    """Deliver everything in flight, in order, and what it sets off."""
    while network.in_flight:
        network.deliver(0)


def test_a_branch_cancelled_after_ringing_is_given_up_and_the_caller_answered() -> None:
    """The callee rings, then falls silent (unplugged). Timer C CANCELs the
    branch; nothing answers. RFC 3261 §9.1 and §16.8: the INVITE client
    transaction is given up 64*T1 after the CANCEL, and the caller gets a
    final answer (408). (It used to stay in Proceeding with no timer, holding
    the slot and the ports until the longest call, and its transactions for
    ever.)"""
    edge, relay = _edge(max_calls=20, max_call_seconds=4 * 3600.0)
    network = Network(edge, relay, [True])
    network.start(0)
    _flush(network)
    callee = network.callees[network.callers[0].client.call_id]
    network.phone_sends(CALLEE_FLOW, callee.act("ring", network.now))
    _flush(network)
    callee.gone = True
    network.settle(network_up=True, seconds=RING_TIMEOUT_SECONDS + 2 * GIVE_UP + 10)
    assert network.callers[0].final == 408
    assert edge.proxy.admission.count(TENANT) == 0 and relay.pool.in_use == 0
    assert [r.disposition for r in network.records] == ["no-answer"]
    assert not edge.proxy._upstream and not edge.proxy._branches


def test_an_answer_crossing_our_cancel_still_gives_the_caller_a_final_answer() -> None:
    """The maximum duration ends a call still ringing (as a closed connection
    would): CANCEL to the callee, whose 200 crosses it. The proxy ACKs and
    BYEs that 200, and the branch ends as cancelled, so the caller's INVITE
    gets its final answer. (It used to get none: its server transaction stayed
    in Proceeding for ever and the phone rang on.)"""
    edge, relay = _edge(max_calls=20, max_call_seconds=45.0)
    network = Network(edge, relay, [True])
    network.start(0)
    _flush(network)
    callee = network.callees[network.callers[0].client.call_id]
    network.phone_sends(CALLEE_FLOW, callee.act("ring", network.now))
    _flush(network)
    network.advance(45.0)
    (cancel,) = network.in_flight
    assert parse_datagram(cancel.data).method == "CANCEL"
    network.phone_sends(CALLEE_FLOW, callee.act("answer", network.now))
    network.deliver(1)  # the 200 reaches the edge before the CANCEL reaches the callee
    _flush(network)
    network.settle(network_up=True, seconds=300.0)
    assert [r.disposition for r in network.records] == ["failed"]
    assert network.callers[0].final >= 300
    assert not edge.proxy._upstream


def test_a_ringing_after_the_call_ended_does_not_revive_it() -> None:
    """The maximum duration ends call 0 before the callee rang: its record is
    written and its slot released, and a CANCEL goes out. The callee's 180
    crosses the CANCEL: the ended call stays ended. (It used to be set back to
    ringing, and the 487 answering the CANCEL ended it again: a second record,
    and a second release that took call 1's slot, though call 1 was up.)"""
    edge, relay = _edge(max_calls=20, max_call_seconds=8.0)
    network = Network(edge, relay, [True, True])
    network.start(0)
    _flush(network)
    network.advance(5.0)
    network.start(1)
    _flush(network)
    call_ids = [c.client.call_id for c in network.callers]
    callees = [network.callees[call_id] for call_id in call_ids]
    network.phone_sends(CALLEE_FLOW, callees[1].act("answer", network.now))
    _flush(network)
    network.advance(3.0)  # call 0's longest life is over
    assert [r.disposition for r in network.records] == ["failed"]
    assert edge.proxy.admission.count(TENANT) == 1
    network.phone_sends(CALLEE_FLOW, callees[0].act("ring", network.now))
    network.deliver(len(network.in_flight) - 1)  # the 180 crosses the CANCEL
    _flush(network)
    assert [r.call_id for r in network.records] == [call_ids[0]]
    assert edge.proxy.admission.count(TENANT) == 1, "call 1 lost its slot"
    assert not network.revived
