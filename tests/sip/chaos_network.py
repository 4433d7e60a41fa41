"""The network of the call chaos test (``test_call_chaos``): the real edge,
proxy and relay for one tenant, the phones of :mod:`tests.sip.chaos_phones`
and the datagrams between them, on a fake clock, with no sockets.

UDP datagrams may be lost, duplicated and reordered, and die of old age. A
connection (a TCP flow) delivers in order, never loses or duplicates, until it
closes (:meth:`Network.close`): then what is on it is lost, its phones can no
longer be reached, and the edge is told, as the service tells it. The callee's
extension may be registered on several devices (contacts), each on its own
flow, so the proxy forks every call to all of them.

Besides the end-of-run checks (:func:`assert_nothing_left`), every step checks
that what the edge sends is well formed and goes to a phone, that no request
goes over a connection known to be closed, that a call ended is never live
again, that the slots taken are the live calls, and that no caller is given
two dialogs, or a 2xx after a failure, or two different failures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.media.relay import PortPool, Relay
from appliance.sip import digest
from appliance.sip.actions import Action, CallEnded, LiveCall, QuotaRefused, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.cdr import CallDetailRecord
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import parse_datagram
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.registrar import Flow, Registrar
from appliance.sip.transaction import T4
from appliance.sip.validate import check_request, check_response
from appliance.testing.sipclient import SipTestClient
from tests.sip.chaos_phones import CALLEE, Callee, Caller
from tests.sip.test_proxy import DOMAIN, NOW, _ha1, _only

TENANT = 1
#: A datagram still in flight this long after it was sent is lost: RFC 3261's
#: T4 is the longest a message stays in the network.
LIFETIME = T4 - 1
#: Fake time the chaos may take before the settling: with the settling, well
#: inside the callee's registration (3600 s), so calls keep finding it.
CHAOS_SECONDS = 1200.0
#: The service's timer tick, slowed down (it fires every due deadline at once).
SETTLE_STEP = 1.0


def contact_flow(index: int, transport: str = "udp") -> Flow:
    """The flow of the callee's ``index``-th device, each on its own address."""
    host = f"127.0.0.{3 + index}"
    if transport == "udp":
        return Flow("udp", (host, 5080))
    return Flow(transport, (host, 5090), f"{transport}-contact-{index}")


def caller_flow(index: int, transport: str = "udp") -> Flow:
    """The flow of caller ``index``."""
    remote = ("127.0.0.2", 6000 + index)
    return (
        Flow("udp", remote) if transport == "udp" else Flow(transport, remote, f"caller-{index}")
    )


#: The callee's only device in the first chaos test.
CALLEE_FLOW = contact_flow(0)


def client(number: str, flow: Flow, call_id: str | None = None) -> SipTestClient:
    """A phone of extension ``number`` on ``flow``."""
    phone = SipTestClient(
        number, DOMAIN, f"pw-{number}", transport=flow.transport.upper(), local=flow.remote
    )
    if call_id is not None:
        phone.call_id = call_id
    return phone


def chaos_edge(
    max_calls: int, max_call_seconds: float, contacts: Sequence[Flow] = (CALLEE_FLOW,)
) -> tuple[SipEdge, Relay]:
    """The appliance's SIP core for one tenant over UDP and TCP, with a relay
    whose ports we can count, and the callee registered on every flow of
    ``contacts`` (each connection opened first)."""
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
        [ProxyAddress("udp", "127.0.0.1", 5060), ProxyAddress("tcp", "127.0.0.1", 5060)],
        media=relay,
        media_address="127.0.0.1",
        max_call_seconds=max_call_seconds,
    )
    for flow in contacts:
        register(edge, flow, NOW)
    return edge, relay


def register(edge: SipEdge, flow: Flow, now: float) -> None:
    """The callee's device on ``flow`` registers (its connection opened first),
    through the Digest challenge, for an hour."""
    if flow.connection:
        edge.connection_opened(flow)
    phone = client(CALLEE, flow)
    first = parse_datagram(phone.register(expires=3600))
    auth = phone.authorization(_only(edge.message_received(first, flow, now), flow))
    again = parse_datagram(phone.register(expires=3600, authorization=auth))
    assert _only(edge.message_received(again, flow, now), flow).status == 200


@dataclass
class Datagram:
    """A datagram on the wire: to the edge from ``flow``, or from the edge to it."""

    to_edge: bool
    flow: Flow
    data: bytes
    sent_at: float


@dataclass
class Contact:
    """One registered device of the callee's extension: its side of every call."""

    flow: Flow
    callees: dict[str, Callee]


class Network:
    """The edge, its phones and the datagrams between them, on a fake clock:
    callers ``index`` dial from ``caller_flows`` (UDP by default) and ACK as
    ``acks`` says, and the callee's extension answers on ``contacts``."""

    def __init__(
        self,
        edge: SipEdge,
        relay: Relay,
        acks: Sequence[bool],
        *,
        caller_flows: Sequence[Flow] = (),
        contacts: Sequence[Flow] = (CALLEE_FLOW,),
    ) -> None:
        self.edge, self.relay, self.now = edge, relay, NOW
        self.callers: list[Caller] = []
        self.contacts = [Contact(flow, {}) for flow in contacts]
        for index, caller_acks in enumerate(acks):
            flow = caller_flows[index] if caller_flows else caller_flow(index)
            if flow.connection:
                edge.connection_opened(flow)
            call_id = f"chaos-{index}@127.0.0.2"
            self.callers.append(
                Caller(flow, client(f"100{index + 1}", flow, call_id), caller_acks)
            )
            for number, contact in enumerate(self.contacts):
                tag = f"callee-{index}" if number == 0 else f"callee-{index}-{number}"
                reliable = contact.flow.transport != "udp"
                callee = Callee(client(CALLEE, contact.flow), tag, reliable=reliable)
                contact.callees[call_id] = callee
        #: The first device's side of each call, by Call-ID.
        self.callees = self.contacts[0].callees
        self.flows = {c.flow for c in self.callers} | {c.flow for c in self.contacts}
        self.connected = any(flow.connection for flow in self.flows)
        #: Connections closed (their flows' connection ids).
        self.closed: set[str] = set()
        self.in_flight: list[Datagram] = []
        self.records: list[CallDetailRecord] = []
        self.admitted: set[str] = set()
        self.refused: set[str] = set()
        #: Calls refused before anything rang for another reason than the quota.
        self.rejected: set[str] = set()
        #: Calls reported live again after they ended (must stay empty).
        self.revived: set[str] = set()
        self._ended: set[str] = set()
        self.next_media_check = NOW
        #: What happened, one line each, when a list is given (to debug a failure).
        self.trace: list[str] | None = None

    def note(self, what: str, data: bytes = b"") -> None:
        """Add to the trace, if kept: ``what`` and the start line, CSeq and tags of ``data``."""
        if self.trace is None:
            return
        if data:
            message = parse_datagram(data)
            tags = f"{message.from_.tag}>{message.to.tag}"
            what += f" {message.start_line} | {message.first('cseq')} | {tags}"
        self.trace.append(f"{self.now - NOW:9.3f} {what}")

    # -- the phones' side ----------------------------------------------------

    def phone_sends(self, flow: Flow, datagrams: Sequence[bytes]) -> None:
        """Put what a phone sent on the wire (lost on a closed connection)."""
        if flow.connection not in self.closed:
            self.in_flight += [Datagram(True, flow, data, self.now) for data in datagrams]
        for data in datagrams:
            self.note(f"{flow.remote[0]} sends", data)

    def start(self, index: int) -> None:
        """Caller ``index`` dials (once)."""
        caller = self.callers[index]
        if caller.invite is None:
            self.phone_sends(caller.flow, caller.dial(self.now))

    def retransmit(self) -> None:
        """Every phone's retransmission timers fire."""
        for caller in self.callers:
            self.phone_sends(caller.flow, caller.retransmit(self.now))
        for contact in self.contacts:
            for callee in contact.callees.values():
                self.phone_sends(contact.flow, callee.retransmit(self.now))

    def open_connections(self) -> list[Flow]:
        """The phones' connections still up, any of which may close."""
        return [f for f in sorted(self.flows) if f.connection and f.connection not in self.closed]

    def reconnect(self, contact: Contact) -> None:
        """The device of ``contact``, its connection lost, connects again from the
        next port and registers over the new connection: the calls it has not
        been offered yet reach it there. Its binding on the closed connection
        stays in the registrar beside the new one, until it expires."""
        old = contact.flow
        host, port = old.remote
        flow = Flow(old.transport, (host, port + 1), f"{old.connection}+")
        register(self.edge, flow, self.now)
        self.note(f"connection {flow.connection} opened, registered")
        contact.flow = flow
        self.flows.add(flow)
        for callee in contact.callees.values():
            if callee.invite is None:
                callee.gone, callee.client.local = False, flow.remote

    def close(self, flow: Flow) -> None:
        """The connection of ``flow`` is lost: what is on it with it, its phones
        cannot be reached (they are as good as gone), and the edge is told."""
        self.closed.add(flow.connection)
        self.note(f"connection {flow.connection} closed")
        self.in_flight = [d for d in self.in_flight if d.flow != flow]
        for caller in self.callers:
            caller.gone = caller.gone or caller.flow == flow
        for contact in self.contacts:
            if contact.flow == flow:
                for callee in contact.callees.values():
                    callee.gone = True
        self.carry(self.edge.connection_closed(flow, self.now))

    # -- the wire ------------------------------------------------------------

    def drop(self, index: int) -> None:
        """Lose a datagram in flight (a connection loses nothing)."""
        if self.in_flight[index].flow.transport == "udp":
            self.note("lost", self.in_flight.pop(index).data)

    def deliver(self, index: int, *, duplicate: bool = False) -> None:
        """Deliver a datagram in flight (any, so out of order); a duplicate leaves
        a copy on the wire. On a connection, the oldest of its direction goes,
        once."""
        datagram = self.in_flight[index]
        stream = datagram.flow.transport != "udp"
        if stream:
            index = next(
                i
                for i, d in enumerate(self.in_flight)
                if d.flow == datagram.flow and d.to_edge == datagram.to_edge
            )
            datagram, duplicate = self.in_flight[index], False
        if not duplicate:
            del self.in_flight[index]
        where = datagram.flow.remote[0]
        self.note(f"to edge from {where}" if datagram.to_edge else f"to {where}", datagram.data)
        if datagram.to_edge:
            if stream:
                actions = self.edge.message_received(
                    parse_datagram(datagram.data), datagram.flow, self.now
                )
            else:
                actions = self.edge.datagram_received(datagram.data, datagram.flow, self.now)
            self.carry(actions)
            return
        message = parse_datagram(datagram.data)
        for contact in self.contacts:
            if datagram.flow == contact.flow:
                callee = contact.callees[message.call_id]
                self.phone_sends(contact.flow, callee.receive(message, self.now))
                return
        (caller,) = [c for c in self.callers if c.flow == datagram.flow]
        self.phone_sends(caller.flow, caller.receive(message, self.now))
        _check_answers(caller)

    def carry(self, actions: Sequence[Action]) -> None:
        """Check and carry out what the edge asked for."""
        sends = [a for a in actions if isinstance(a, Send)]
        for send in sends:
            self.note(f"edge sends to {send.flow.remote[0]}", send.data)
            assert send.flow in self.flows, send
            _check_wellformed(send.data)
            if send.flow.connection in self.closed:
                assert not parse_datagram(send.data).is_request, ("closed", send)
        # Timers due together fire in an order that varies from run to run (it
        # follows hashes of random branch ids): put them in a reproducible order.
        sends.sort(key=lambda s: (s.flow, _summary(s.data)))
        self.in_flight += [
            Datagram(False, s.flow, s.data, self.now)
            for s in sends
            if s.flow.connection not in self.closed
        ]
        for action in actions:
            if isinstance(action, CallEnded):
                self.records.append(action.record)
                if action.record.call_id not in self.admitted | self.refused:
                    self.rejected.add(action.record.call_id)
            elif isinstance(action, LiveCall):
                if action.state == "proceeding":
                    self.admitted.add(action.call_id)
                if action.state == "ended":
                    self._ended.add(action.call_id)
                elif action.call_id in self._ended:
                    self.revived.add(action.call_id)
            elif isinstance(action, QuotaRefused):
                self.refused.add(action.call_id)
                self.rejected.discard(action.call_id)
        proxy = self.edge.proxy
        live = sum(call.state != "ended" for call in proxy.calls.values())
        assert not self.revived, f"ended calls came back: {self.revived}"
        assert proxy.admission.count(TENANT) == live, "slots taken differ from live calls"

    # -- time -------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """The clock moves on: a connection delivers in time what it carries,
        UDP datagrams past their lifetime are lost, and the service's periodic
        work runs once, as after a stalled reactor."""
        for _ in range(1000):
            late = [
                i
                for i, d in enumerate(self.in_flight)
                if d.flow.transport != "udp" and self.now + seconds - d.sent_at > LIFETIME
            ]
            if not late:
                break
            self.deliver(late[0])
        else:
            raise AssertionError("the edge and the phones kept talking")
        self.now += seconds
        self.note(f"clock +{seconds}")
        self.in_flight = [d for d in self.in_flight if self.now - d.sent_at <= LIFETIME]
        self.tick()

    def tick(self) -> None:
        """The service's timer tick (only when a deadline is due) and, every five
        seconds, its media idle check."""
        due = self.edge.next_timer()
        if due is not None and due <= self.now:
            self.carry(self.edge.handle_timer(self.now))
            after = self.edge.next_timer()
            if after is not None and after <= self.now and self.connected:
                # A timer of length 0 on a connection (Timer J, K, I, D) started by
                # what fired is due at once: the next tick fires it.
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
        arrives and phones keep retransmitting; down, everything is lost and
        the connections break."""
        if not network_up:
            for flow in self.open_connections():
                self.close(flow)
        end = self.now + seconds
        while self.now < end:
            if network_up:
                self.retransmit()
                for _ in range(400):
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


def _check_answers(caller: Caller) -> None:
    """A caller has one call: all the 2xx it is given set up one dialog (a
    second fork's is ended by the proxy, docs/sip-profile.md), and an INVITE
    answered with a failure gets no 2xx and no other failure (§16.7)."""
    tags = {tag for _, status, tag in caller.finals if status < 300}
    assert len(tags) <= 1, f"{caller.client.call_id}: two dialogs {caller.finals}"
    for branch in {branch for branch, _, _ in caller.finals}:
        statuses = {status for b, status, _ in caller.finals if b == branch}
        failures = {status for status in statuses if status >= 300}
        assert len(failures) <= 1 and not (failures and len(statuses) > 1), caller.finals


def assert_nothing_left(network: Network) -> None:
    """Once every timer has run out: no slot, port, call, transaction or
    deadline is left, and each call has exactly one record (an admitted one
    its own; a refused one its refusal's)."""
    edge, proxy, relay = network.edge, network.edge.proxy, network.relay
    assert proxy.admission.count(TENANT) == 0, "a quota slot is still taken"
    assert relay.pool.in_use == 0 and not relay.sessions, "relay ports are still held"
    assert not proxy.calls, f"calls remembered: {set(proxy.calls)}"
    assert not proxy._upstream, f"server transactions left: {set(proxy._upstream)}"
    assert not proxy._branches, "client transactions left: " + "; ".join(
        f"{b.id} {b.request[:60]!r} over {b.flow.describe()} in {b.transaction.state.value}"
        f" (timers {dict(b.transaction.timers)}, final {b.final})"
        for b in proxy._branches.values()
    )
    assert not edge._transactions and not edge._answered, "edge transactions left"
    assert proxy.next_timer() is None, "the proxy still has a deadline"
    ended = Counter(record.call_id for record in network.records)
    assert network.admitted.isdisjoint(network.refused | network.rejected)
    for call_id in network.admitted:
        assert ended[call_id] == 1, f"{call_id}: {ended[call_id]} records"
    for record in network.records:
        if record.call_id in network.refused:
            assert record.disposition == "rejected-quota", record
            assert ended[record.call_id] == 1
        elif record.call_id in network.rejected:
            # Every device of the callee unreachable (its connection lost): 480.
            assert (record.final_status, record.answered_at) == (480, None), record
            assert ended[record.call_id] == 1
        else:
            assert record.call_id in network.admitted, record


def flush(network: Network) -> None:
    """Deliver everything in flight, in order, and what it sets off."""
    while network.in_flight:
        network.deliver(0)
