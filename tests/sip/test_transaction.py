"""The RFC 3261 §17 / RFC 6026 transaction machines, driven with a fake ``now``.

Time is a plain float the tests choose; nothing sleeps and no clock is read.
Raw messages are short placeholder bytes: the machines never parse them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.sip.transaction import (
    INVITE_CLIENT_TABLE,
    INVITE_SERVER_TABLE,
    NON_INVITE_CLIENT_TABLE,
    NON_INVITE_SERVER_TABLE,
    RETRANSMISSION_TIMERS,
    TIMER_EVENTS,
    Action,
    DeliverRequest,
    DeliverResponse,
    Effect,
    Event,
    InviteClientTransaction,
    InviteServerTransaction,
    LocalProtocolError,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerKey,
    State,
    Table,
    Terminated,
    Timeout,
    Timer,
    Transaction,
    Transmit,
    TransportError,
    server_key,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machines" / "transactions.md"
INVITE = b"INVITE sip:bob@example.com SIP/2.0"
OPTIONS = b"OPTIONS sip:bob@example.com SIP/2.0"
ACK = b"ACK sip:bob@example.com SIP/2.0"
RAW = {status: f"SIP/2.0 {status}".encode() for status in (100, 180, 200, 486, 603)}


class AckBuilder:
    """An ``ack_for`` that records what it was asked to acknowledge."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, response: bytes) -> bytes:
        self.calls.append(response)
        return b"ACK for " + response


def invite_client(
    reliable: bool = False, now: float = 0.0, ack_for: AckBuilder | None = None
) -> InviteClientTransaction:
    """A new INVITE client transaction for ``INVITE``."""
    return InviteClientTransaction(
        INVITE, reliable=reliable, now=now, ack_for=ack_for or AckBuilder()
    )


def state_of(machine: Transaction) -> State:
    """The machine's state, read through a call so mypy does not carry a
    narrowed state across the inputs that change it."""
    return machine.state


def firings(machine: Transaction, until: float, timer: Timer) -> tuple[list[float], list[Action]]:
    """Run the machine's timers up to ``until``; the times ``timer`` fired and
    every action produced."""
    times: list[float] = []
    actions: list[Action] = []
    while (deadline := machine.next_timer()) is not None and deadline <= until:
        if machine.timers.get(timer) == deadline:
            times.append(deadline)
        actions += machine.handle_timer(deadline)
    return times, actions


# --- INVITE client -----------------------------------------------------------------


def test_invite_client_unreliable_2xx_path() -> None:
    """Over UDP: the INVITE goes out with A and B running, a 1xx stops both, and
    2xx responses reach the TU in Accepted (never ACKed here) until Timer M."""
    acks = AckBuilder()
    tx = invite_client(now=10.0, ack_for=acks)
    assert state_of(tx) is State.IDLE and tx.next_timer() is None
    assert tx.start(10.0) == [Transmit(INVITE)]
    assert state_of(tx) is State.CALLING
    assert tx.timers == {Timer.A: 10.5, Timer.B: 42.0}
    assert tx.receive_response(180, RAW[180], 10.2) == [DeliverResponse(180, RAW[180])]
    assert state_of(tx) is State.PROCEEDING and tx.timers == {}
    assert tx.receive_response(200, RAW[200], 11.0) == [DeliverResponse(200, RAW[200])]
    assert state_of(tx) is State.ACCEPTED and tx.timers == {Timer.M: 43.0}
    assert tx.receive_response(200, RAW[200], 12.0) == [DeliverResponse(200, RAW[200])]
    assert tx.handle_timer(42.9) == []
    assert tx.handle_timer(43.0) == [Terminated()]
    assert state_of(tx) is State.TERMINATED and tx.next_timer() is None
    assert acks.calls == []


def test_invite_client_reliable_runs_no_timer_a() -> None:
    """Over TCP/TLS the INVITE is sent once: only Timer B runs in Calling."""
    tx = invite_client(reliable=True)
    assert tx.start(0.0) == [Transmit(INVITE)]
    assert tx.timers == {Timer.B: 32.0}
    assert tx.receive_response(200, RAW[200], 1.0) == [DeliverResponse(200, RAW[200])]
    assert tx.timers == {Timer.M: 33.0}


def test_invite_client_timer_a_doubles_without_cap_until_timer_b() -> None:
    """Timer A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 (intervals double past T2),
    each resending the INVITE, then Timer B reports a timeout and terminates."""
    tx = invite_client()
    tx.start(0.0)
    times, actions = firings(tx, 40.0, Timer.A)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert actions == [Transmit(INVITE)] * 6 + [Timeout(Timer.B), Terminated()]
    assert state_of(tx) is State.TERMINATED and tx.next_timer() is None


def test_invite_client_acks_a_failure_and_reacks_its_retransmissions() -> None:
    """A 300-699 is ACKed (with the caller's ACK bytes) and passed to the TU; a
    retransmitted final is ACKed again with the same bytes but not passed up;
    Timer D (32 s over UDP) ends the transaction."""
    acks = AckBuilder()
    tx = invite_client(ack_for=acks)
    tx.start(0.0)
    ack = b"ACK for " + RAW[486]
    assert tx.receive_response(486, RAW[486], 2.0) == [
        Transmit(ack),
        DeliverResponse(486, RAW[486]),
    ]
    assert state_of(tx) is State.COMPLETED and tx.timers == {Timer.D: 34.0}
    assert tx.receive_response(486, RAW[486], 3.0) == [Transmit(ack)]
    assert tx.receive_response(486, RAW[486], 4.0) == [Transmit(ack)]
    assert acks.calls == [RAW[486]]
    assert tx.handle_timer(34.0) == [Terminated()]


def test_invite_client_acks_a_failure_after_provisional_even_when_reliable() -> None:
    """The ACK for a non-2xx is sent on reliable transports too, and Timer D is
    zero there: it is due at once."""
    tx = invite_client(reliable=True)
    tx.start(0.0)
    tx.receive_response(180, RAW[180], 0.1)
    actions = tx.receive_response(603, RAW[603], 5.0)
    assert actions == [Transmit(b"ACK for " + RAW[603]), DeliverResponse(603, RAW[603])]
    assert tx.next_timer() == 5.0
    assert tx.handle_timer(5.0) == [Terminated()]


def test_invite_client_transport_errors() -> None:
    """A transport error terminates in Calling and Completed (where the
    transaction sends) and is absorbed in Proceeding and Accepted (it sends
    nothing there, RFC 6026 Figure 5)."""
    calling = invite_client()
    calling.start(0.0)
    assert calling.transport_error(0.1) == [TransportError(), Terminated()]
    completed = invite_client()
    completed.start(0.0)
    completed.receive_response(486, RAW[486], 1.0)
    assert completed.transport_error(1.1) == [TransportError(), Terminated()]
    proceeding = invite_client()
    proceeding.start(0.0)
    proceeding.receive_response(180, RAW[180], 1.0)
    assert proceeding.transport_error(1.1) == []
    assert state_of(proceeding) is State.PROCEEDING
    accepted = invite_client()
    accepted.start(0.0)
    accepted.receive_response(200, RAW[200], 1.0)
    assert accepted.transport_error(1.1) == []
    assert state_of(accepted) is State.ACCEPTED and accepted.timers == {Timer.M: 33.0}


def test_invite_client_absorbs_responses_its_table_does_not_list() -> None:
    """Stray provisionals and finals of the other kind after a final, and late
    responses after termination, change nothing and produce nothing."""
    tx = invite_client()
    tx.start(0.0)
    tx.receive_response(486, RAW[486], 1.0)
    assert tx.receive_response(180, RAW[180], 1.1) == []
    assert tx.receive_response(200, RAW[200], 1.2) == []
    assert state_of(tx) is State.COMPLETED and tx.timers == {Timer.D: 33.0}
    accepted = invite_client()
    accepted.start(0.0)
    accepted.receive_response(200, RAW[200], 1.0)
    assert accepted.receive_response(180, RAW[180], 1.1) == []
    assert accepted.receive_response(486, RAW[486], 1.2) == []
    assert state_of(accepted) is State.ACCEPTED
    accepted.handle_timer(33.0)
    assert accepted.receive_response(200, RAW[200], 34.0) == []
    assert accepted.transport_error(34.0) == []
    assert state_of(accepted) is State.TERMINATED


def test_client_inputs_out_of_order_raise() -> None:
    """Starting twice, or feeding a response or error before the request went
    out, is a caller bug: LocalProtocolError naming the state and event."""
    tx = invite_client()
    with pytest.raises(LocalProtocolError) as caught:
        tx.receive_response(200, RAW[200], 0.0)
    assert (caught.value.state, caught.value.event) == (State.IDLE, Event.SUCCESS)
    with pytest.raises(LocalProtocolError):
        tx.transport_error(0.0)
    tx.start(0.0)
    with pytest.raises(LocalProtocolError):
        tx.start(0.1)
    tx.transport_error(0.2)
    with pytest.raises(LocalProtocolError):
        tx.start(0.3)


def test_late_handle_timer_fires_once_and_rearms_from_now() -> None:
    """An adapter that wakes late gets one retransmission, not a burst, and the
    next interval counts from when it woke."""
    tx = invite_client()
    tx.start(0.0)
    assert tx.handle_timer(10.0) == [Transmit(INVITE)]
    assert tx.timers == {Timer.A: 11.0, Timer.B: 32.0}
    assert tx.handle_timer(10.5) == []


# --- non-INVITE client -------------------------------------------------------------


def test_non_invite_client_unreliable_happy_path() -> None:
    """Over UDP: the request goes out with E and F running, a final response goes
    to the TU and Timer K (T4) ends the transaction."""
    tx = NonInviteClientTransaction(OPTIONS, reliable=False, now=0.0)
    assert tx.start(0.0) == [Transmit(OPTIONS)]
    assert state_of(tx) is State.TRYING and tx.timers == {Timer.E: 0.5, Timer.F: 32.0}
    assert tx.receive_response(200, RAW[200], 0.3) == [DeliverResponse(200, RAW[200])]
    assert state_of(tx) is State.COMPLETED and tx.timers == {Timer.K: 5.3}
    assert tx.handle_timer(5.3) == [Terminated()]


def test_non_invite_client_reliable_sends_once_and_k_is_zero() -> None:
    """Over TCP/TLS no Timer E runs, and Timer K is zero: due at the final."""
    tx = NonInviteClientTransaction(OPTIONS, reliable=True, now=0.0)
    tx.start(0.0)
    assert tx.timers == {Timer.F: 32.0}
    tx.receive_response(180, RAW[180], 1.0)
    assert tx.timers == {Timer.F: 32.0}
    assert tx.receive_response(486, RAW[486], 2.0) == [DeliverResponse(486, RAW[486])]
    assert tx.next_timer() == 2.0
    assert tx.handle_timer(2.0) == [Terminated()]


def test_non_invite_client_timer_e_doubles_capped_at_t2_until_timer_f() -> None:
    """Timer E fires at 0.5, 1.5, 3.5, 7.5, then every T2 (11.5, 15.5, ... 31.5),
    and Timer F reports a timeout at 64*T1."""
    tx = NonInviteClientTransaction(OPTIONS, reliable=False, now=0.0)
    tx.start(0.0)
    times, actions = firings(tx, 40.0, Timer.E)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert actions == [Transmit(OPTIONS)] * 10 + [Timeout(Timer.F), Terminated()]


def test_non_invite_client_timer_e_fires_at_t2_in_proceeding() -> None:
    """A provisional keeps E and F running; the next E firing re-arms at T2 rather
    than doubling, and F still times the transaction out in Proceeding."""
    tx = NonInviteClientTransaction(OPTIONS, reliable=False, now=0.0)
    tx.start(0.0)
    tx.handle_timer(0.5)
    assert tx.receive_response(100, RAW[100], 1.0) == [DeliverResponse(100, RAW[100])]
    assert state_of(tx) is State.PROCEEDING and tx.timers == {Timer.E: 1.5, Timer.F: 32.0}
    times, actions = firings(tx, 40.0, Timer.E)
    assert times == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert actions[-2:] == [Timeout(Timer.F), Terminated()]


def test_non_invite_client_timeout_beats_a_retransmission_due_at_the_same_time() -> None:
    """When E and F fall due together (T1 = T2 = 1), F fires first and the
    pointless retransmission is not sent."""
    tx = NonInviteClientTransaction(OPTIONS, reliable=False, now=0.0, t1=1.0, t2=1.0)
    tx.start(0.0)
    for second in range(1, 64):
        assert tx.handle_timer(float(second)) == [Transmit(OPTIONS)]
    assert tx.timers == {Timer.E: 64.0, Timer.F: 64.0}
    assert tx.handle_timer(64.0) == [Timeout(Timer.F), Terminated()]


def test_non_invite_client_completed_absorbs_retransmitted_finals() -> None:
    """In Completed retransmitted finals, a late provisional and a transport error
    are absorbed; only Timer K ends the transaction."""
    tx = NonInviteClientTransaction(OPTIONS, reliable=False, now=0.0)
    tx.start(0.0)
    tx.receive_response(486, RAW[486], 1.0)
    assert tx.receive_response(486, RAW[486], 1.5) == []
    assert tx.receive_response(200, RAW[200], 1.6) == []
    assert tx.receive_response(180, RAW[180], 1.7) == []
    assert tx.transport_error(1.8) == []
    assert state_of(tx) is State.COMPLETED and tx.timers == {Timer.K: 6.0}


def test_non_invite_client_transport_error_terminates_while_sending() -> None:
    """In Trying and Proceeding a transport error goes to the TU and terminates."""
    for provisional in (False, True):
        tx = NonInviteClientTransaction(OPTIONS, reliable=False, now=0.0)
        tx.start(0.0)
        if provisional:
            tx.receive_response(100, RAW[100], 0.1)
        assert tx.transport_error(0.2) == [TransportError(), Terminated()]
        assert tx.next_timer() is None


# --- INVITE server -----------------------------------------------------------------


def test_invite_server_2xx_path_with_rfc6026_accepted_state() -> None:
    """The INVITE goes to the TU; its retransmissions are answered with the last
    provisional; after the TU's 2xx the transaction is Accepted: retransmitted
    INVITEs are absorbed, the TU's 2xx retransmissions pass through, an ACK goes
    to the TU, and Timer L ends it."""
    tx = InviteServerTransaction(reliable=False, now=0.0)
    assert tx.receive_request(INVITE, 0.0) == [DeliverRequest(INVITE)]
    assert state_of(tx) is State.PROCEEDING and tx.timers == {}
    assert tx.send_response(100, RAW[100], 0.05) == [Transmit(RAW[100])]
    assert tx.receive_request(INVITE, 0.5) == [Transmit(RAW[100])]
    assert tx.send_response(180, RAW[180], 1.0) == [Transmit(RAW[180])]
    assert tx.receive_request(INVITE, 1.5) == [Transmit(RAW[180])]
    assert tx.send_response(200, RAW[200], 2.0) == [Transmit(RAW[200])]
    assert state_of(tx) is State.ACCEPTED and tx.timers == {Timer.L: 34.0}
    assert tx.receive_request(INVITE, 2.5) == []
    assert tx.send_response(200, RAW[200], 2.5) == [Transmit(RAW[200])]
    assert tx.receive_ack(3.0, ACK) == [DeliverRequest(ACK)]
    assert state_of(tx) is State.ACCEPTED
    assert tx.handle_timer(34.0) == [Terminated()]


def test_invite_server_answers_nothing_before_the_tu_responds() -> None:
    """The transaction sends no 100 Trying of its own: until the TU responds, a
    retransmitted INVITE gets no answer and no timer runs."""
    tx = InviteServerTransaction(reliable=False, now=0.0)
    tx.receive_request(INVITE, 0.0)
    assert tx.receive_request(INVITE, 0.5) == []
    assert tx.next_timer() is None


def test_invite_server_failure_retransmits_on_g_until_ack_then_i() -> None:
    """A 300-699 is retransmitted on Timer G at 0.5, 1.5, 3.5, 7.5, 11.5, ...
    (doubling, capped at T2) and on each retransmitted INVITE; the ACK stops G
    and H and Timer I (T4) absorbs further ACKs before ending it."""
    tx = InviteServerTransaction(reliable=False, now=0.0)
    tx.receive_request(INVITE, 0.0)
    assert tx.send_response(486, RAW[486], 0.0) == [Transmit(RAW[486])]
    assert state_of(tx) is State.COMPLETED and tx.timers == {Timer.G: 0.5, Timer.H: 32.0}
    times, actions = firings(tx, 16.0, Timer.G)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert actions == [Transmit(RAW[486])] * 6
    assert tx.receive_request(INVITE, 16.0) == [Transmit(RAW[486])]
    assert tx.receive_ack(17.0) == []
    assert state_of(tx) is State.CONFIRMED and tx.timers == {Timer.I: 22.0}
    assert tx.receive_ack(18.0) == []
    assert tx.receive_request(INVITE, 18.5) == []
    assert tx.handle_timer(22.0) == [Terminated()]


def test_invite_server_timer_h_reports_the_missing_ack() -> None:
    """Without an ACK, Timer H (64*T1) tells the TU and terminates."""
    tx = InviteServerTransaction(reliable=False, now=0.0)
    tx.receive_request(INVITE, 0.0)
    tx.send_response(603, RAW[603], 0.0)
    times, actions = firings(tx, 40.0, Timer.G)
    assert times[-1] == 31.5
    assert actions[-2:] == [Timeout(Timer.H), Terminated()]
    assert state_of(tx) is State.TERMINATED


def test_invite_server_reliable_runs_no_timer_g_and_i_is_zero() -> None:
    """Over TCP/TLS the final is sent once (only H runs) and Timer I is zero."""
    tx = InviteServerTransaction(reliable=True, now=0.0)
    tx.receive_request(INVITE, 0.0)
    tx.send_response(486, RAW[486], 1.0)
    assert tx.timers == {Timer.H: 33.0}
    assert tx.receive_ack(2.0) == []
    assert tx.next_timer() == 2.0
    assert tx.handle_timer(2.0) == [Terminated()]


def test_invite_server_transport_error_keeps_the_state() -> None:
    """RFC 6026 §7.1: a transport error is reported to the TU but the transaction
    stays where it is (timers running), so retransmitted INVITEs are still
    absorbed; in Confirmed, where nothing is sent, it is absorbed."""
    tx = InviteServerTransaction(reliable=False, now=0.0)
    tx.receive_request(INVITE, 0.0)
    assert tx.transport_error(0.1) == [TransportError()]
    assert state_of(tx) is State.PROCEEDING
    tx.send_response(486, RAW[486], 1.0)
    assert tx.transport_error(1.1) == [TransportError()]
    assert state_of(tx) is State.COMPLETED and tx.timers == {Timer.G: 1.5, Timer.H: 33.0}
    tx.receive_ack(2.0)
    assert tx.transport_error(2.1) == []
    accepted = InviteServerTransaction(reliable=False, now=0.0)
    accepted.receive_request(INVITE, 0.0)
    accepted.send_response(200, RAW[200], 1.0)
    assert accepted.transport_error(1.1) == [TransportError()]
    assert state_of(accepted) is State.ACCEPTED and accepted.timers == {Timer.L: 33.0}


def test_invite_server_absorbs_a_stray_ack_in_proceeding() -> None:
    """An ACK before any final response changes nothing."""
    tx = InviteServerTransaction(reliable=False, now=0.0)
    tx.receive_request(INVITE, 0.0)
    assert tx.receive_ack(0.1) == []
    assert state_of(tx) is State.PROCEEDING


def test_invite_server_rejects_responses_out_of_place() -> None:
    """The TU may not respond before the request, send anything but another 2xx
    after a 2xx, or respond at all after a 300-699: LocalProtocolError, and
    nothing is sent (RFC 3261's "MUST be discarded")."""
    tx = InviteServerTransaction(reliable=False, now=0.0)
    with pytest.raises(LocalProtocolError):
        tx.send_response(100, RAW[100], 0.0)
    with pytest.raises(LocalProtocolError):
        tx.receive_ack(0.0)
    tx.receive_request(INVITE, 0.0)
    tx.send_response(200, RAW[200], 1.0)
    for status in (180, 486):
        with pytest.raises(LocalProtocolError):
            tx.send_response(status, RAW[status], 1.1)
    failed = InviteServerTransaction(reliable=False, now=0.0)
    failed.receive_request(INVITE, 0.0)
    failed.send_response(486, RAW[486], 1.0)
    with pytest.raises(LocalProtocolError):
        failed.send_response(200, RAW[200], 1.1)
    assert failed.last_response == RAW[486]


# --- non-INVITE server -------------------------------------------------------------


def test_non_invite_server_unreliable_happy_path() -> None:
    """The request goes to the TU; retransmissions in Trying are discarded; the
    final is sent and resent for each retransmission until Timer J (64*T1)."""
    tx = NonInviteServerTransaction(reliable=False, now=0.0)
    assert tx.receive_request(OPTIONS, 0.0) == [DeliverRequest(OPTIONS)]
    assert state_of(tx) is State.TRYING
    assert tx.receive_request(OPTIONS, 0.5) == []
    assert tx.send_response(200, RAW[200], 1.0) == [Transmit(RAW[200])]
    assert state_of(tx) is State.COMPLETED and tx.timers == {Timer.J: 33.0}
    assert tx.receive_request(OPTIONS, 2.0) == [Transmit(RAW[200])]
    assert tx.handle_timer(33.0) == [Terminated()]


def test_non_invite_server_proceeding_resends_the_last_provisional() -> None:
    """After a provisional, retransmissions are answered with the latest
    provisional, then with the final."""
    tx = NonInviteServerTransaction(reliable=False, now=0.0)
    tx.receive_request(OPTIONS, 0.0)
    assert tx.send_response(100, RAW[100], 0.1) == [Transmit(RAW[100])]
    assert state_of(tx) is State.PROCEEDING
    tx.send_response(180, RAW[180], 0.2)
    assert tx.receive_request(OPTIONS, 0.5) == [Transmit(RAW[180])]
    tx.send_response(486, RAW[486], 1.0)
    assert tx.receive_request(OPTIONS, 1.5) == [Transmit(RAW[486])]


def test_non_invite_server_reliable_j_is_zero() -> None:
    """Over TCP/TLS Timer J is zero: the transaction ends as soon as the caller
    runs its timers."""
    tx = NonInviteServerTransaction(reliable=True, now=0.0)
    tx.receive_request(OPTIONS, 0.0)
    tx.send_response(200, RAW[200], 3.0)
    assert tx.next_timer() == 3.0
    assert tx.handle_timer(3.0) == [Terminated()]


def test_non_invite_server_transport_errors() -> None:
    """A transport error terminates in Proceeding and Completed and is absorbed
    in Trying, where nothing has been sent."""
    trying = NonInviteServerTransaction(reliable=False, now=0.0)
    trying.receive_request(OPTIONS, 0.0)
    assert trying.transport_error(0.1) == []
    assert state_of(trying) is State.TRYING
    trying.send_response(100, RAW[100], 0.2)
    assert trying.transport_error(0.3) == [TransportError(), Terminated()]
    completed = NonInviteServerTransaction(reliable=False, now=0.0)
    completed.receive_request(OPTIONS, 0.0)
    completed.send_response(200, RAW[200], 0.2)
    assert completed.transport_error(0.3) == [TransportError(), Terminated()]
    assert completed.receive_request(OPTIONS, 0.4) == []


def test_non_invite_server_rejects_a_second_final() -> None:
    """A further response from the TU after the final is a caller bug."""
    tx = NonInviteServerTransaction(reliable=False, now=0.0)
    tx.receive_request(OPTIONS, 0.0)
    tx.send_response(200, RAW[200], 0.1)
    with pytest.raises(LocalProtocolError):
        tx.send_response(486, RAW[486], 0.2)
    tx.handle_timer(32.1)
    with pytest.raises(LocalProtocolError):
        tx.send_response(200, RAW[200], 32.2)


# --- values and helpers ------------------------------------------------------------


@pytest.mark.parametrize("status", [0, 99, 700, -200])
def test_statuses_outside_100_to_699_are_refused(status: int) -> None:
    """Neither a received nor a TU status outside 100-699 reaches a table."""
    client = invite_client()
    client.start(0.0)
    with pytest.raises(ValueError, match="not a SIP response status"):
        client.receive_response(status, b"", 0.1)
    server = NonInviteServerTransaction(reliable=False, now=0.0)
    server.receive_request(OPTIONS, 0.0)
    with pytest.raises(ValueError, match="not a SIP response status"):
        server.send_response(status, b"", 0.1)


@pytest.mark.parametrize(
    ("t1", "t2", "t4"), [(0.0, 4.0, 5.0), (0.5, 0.25, 5.0), (0.5, 4.0, 0.0), (-1.0, 4.0, 5.0)]
)
def test_timer_constants_are_validated(t1: float, t2: float, t4: float) -> None:
    """T1 must be positive and at most T2, and T4 positive, or timers could fire
    in a loop or not at all."""
    with pytest.raises(ValueError, match="timers need"):
        NonInviteServerTransaction(reliable=False, now=0.0, t1=t1, t2=t2, t4=t4)


def test_negative_timer_d_is_refused() -> None:
    """Timer D may be zero (reliable transports use zero anyway) but not negative."""
    with pytest.raises(ValueError, match="timers need"):
        InviteClientTransaction(
            INVITE, reliable=False, now=0.0, ack_for=AckBuilder(), timer_d=-1.0
        )


def test_timer_constants_scale_every_timer() -> None:
    """Overriding T1 moves A and B, overriding T4 moves K, and Timer D (its own
    named default, not derived from T1) can be overridden too."""
    tx = InviteClientTransaction(
        INVITE, reliable=False, now=0.0, ack_for=AckBuilder(), t1=0.1, timer_d=40.0
    )
    tx.start(0.0)
    assert tx.timers == {Timer.A: 0.1, Timer.B: pytest.approx(6.4)}
    tx.receive_response(486, RAW[486], 1.0)
    assert tx.timers == {Timer.D: 41.0}
    nict = NonInviteClientTransaction(OPTIONS, reliable=False, now=0.0, t4=2.0)
    nict.start(0.0)
    nict.receive_response(200, RAW[200], 1.0)
    assert nict.timers == {Timer.K: 3.0}


def test_created_at_records_the_creation_time() -> None:
    """The constructor's ``now`` is kept; no timer starts before the first input."""
    tx = InviteServerTransaction(reliable=False, now=123.0)
    assert tx.created_at == 123.0 and tx.next_timer() is None
    assert tx.handle_timer(1e9) == []


def test_server_key_maps_ack_to_invite_and_keeps_cancel_apart() -> None:
    """§17.2.3: an ACK matches its INVITE's transaction, a CANCEL does not; branch
    and sent-by compare without case, the method with case."""
    invite = server_key("z9hG4bK776asdhds", "pc33.atlanta.com:5060", "INVITE")
    assert invite == ServerKey("z9hg4bk776asdhds", "pc33.atlanta.com:5060", "INVITE")
    assert server_key("z9hG4bK776ASDHDS", "PC33.Atlanta.com:5060", "ACK") == invite
    assert server_key("z9hG4bK776asdhds", "pc33.atlanta.com:5060", "CANCEL") != invite
    assert server_key("z9hG4bK776asdhds", "pc33.atlanta.com:5060", "CANCEL").method == "CANCEL"
    assert server_key("z9hG4bK776asdhds", "pc33.atlanta.com:5060", "invite") != invite
    assert server_key("z9hG4bK776asdhds", "pc33.atlanta.com:5070", "INVITE") != invite


def test_server_key_refuses_rfc2543_branches() -> None:
    """A branch without the magic cookie needs RFC 2543 matching, not this key."""
    with pytest.raises(ValueError, match="magic cookie"):
        server_key("776asdhds", "pc33.atlanta.com", "INVITE")


# --- the tables themselves ---------------------------------------------------------

MACHINES: dict[str, tuple[Callable[[], Transaction], Table]] = {
    "invite-client": (invite_client, INVITE_CLIENT_TABLE),
    "non-invite-client": (
        lambda: NonInviteClientTransaction(OPTIONS, reliable=False, now=0.0),
        NON_INVITE_CLIENT_TABLE,
    ),
    "invite-server": (
        lambda: InviteServerTransaction(reliable=False, now=0.0),
        INVITE_SERVER_TABLE,
    ),
    "non-invite-server": (
        lambda: NonInviteServerTransaction(reliable=False, now=0.0),
        NON_INVITE_SERVER_TABLE,
    ),
}

#: Inputs that bring a fresh machine into each state (with a response sent
#: where the state can resend one).
PATHS: dict[str, dict[State, tuple[Event, ...]]] = {
    "invite-client": {
        State.IDLE: (),
        State.CALLING: (Event.START,),
        State.PROCEEDING: (Event.START, Event.PROVISIONAL),
        State.COMPLETED: (Event.START, Event.FAILURE),
        State.ACCEPTED: (Event.START, Event.SUCCESS),
    },
    "non-invite-client": {
        State.IDLE: (),
        State.TRYING: (Event.START,),
        State.PROCEEDING: (Event.START, Event.PROVISIONAL),
        State.COMPLETED: (Event.START, Event.SUCCESS),
    },
    "invite-server": {
        State.IDLE: (),
        State.PROCEEDING: (Event.REQUEST, Event.TU_PROVISIONAL),
        State.COMPLETED: (Event.REQUEST, Event.TU_FAILURE),
        State.CONFIRMED: (Event.REQUEST, Event.TU_FAILURE, Event.ACK),
        State.ACCEPTED: (Event.REQUEST, Event.TU_SUCCESS),
    },
    "non-invite-server": {
        State.IDLE: (),
        State.TRYING: (Event.REQUEST,),
        State.PROCEEDING: (Event.REQUEST, Event.TU_PROVISIONAL),
        State.COMPLETED: (Event.REQUEST, Event.TU_SUCCESS),
    },
}

STATUS_OF = {
    Event.PROVISIONAL: 180,
    Event.SUCCESS: 200,
    Event.FAILURE: 486,
    Event.TU_PROVISIONAL: 180,
    Event.TU_SUCCESS: 200,
    Event.TU_FAILURE: 486,
}
ACTION_OF: dict[Effect, type[Action] | None] = {
    Effect.SEND_REQUEST: Transmit,
    Effect.SEND_ACK: Transmit,
    Effect.SEND_RESPONSE: Transmit,
    Effect.RESEND_RESPONSE: Transmit,
    Effect.RESPONSE_TO_TU: DeliverResponse,
    Effect.REQUEST_TO_TU: DeliverRequest,
    Effect.TIMEOUT_TO_TU: Timeout,
    Effect.ERROR_TO_TU: TransportError,
    Effect.BACK_OFF: None,
    Effect.HOLD_AT_T2: None,
}
EVENT_TIMERS = {event: timer for timer, event in TIMER_EVENTS.items()}


def feed(tx: Transaction, event: Event, now: float) -> list[Action]:
    """Give ``tx`` the input for ``event``; a timer event first runs every other
    timer due before it, then fires it alone."""
    if event in EVENT_TIMERS:
        timer = EVENT_TIMERS[event]
        if timer is Timer.GIVE_UP and isinstance(tx, InviteClientTransaction):
            tx.cancel_sent(now)  # the TU arms it, not a transition
        while True:
            deadline = tx.timers[timer]
            earlier = [at for t, at in tx.timers.items() if t is not timer and at < deadline]
            if not earlier:
                break
            tx.handle_timer(min(earlier))
        assert list(tx.timers.values()).count(deadline) == 1, "a tie would fire two timers"
        return tx.handle_timer(deadline)
    status = STATUS_OF.get(event, 0)
    if isinstance(tx, InviteClientTransaction | NonInviteClientTransaction):
        if event is Event.START:
            return tx.start(now)
        if event is Event.TRANSPORT_ERROR:
            return tx.transport_error(now)
        return tx.receive_response(status, RAW[status], now)
    if event is Event.REQUEST:
        return tx.receive_request(b"request", now)
    if event is Event.TRANSPORT_ERROR:
        return tx.transport_error(now)
    if event is Event.ACK:
        assert isinstance(tx, InviteServerTransaction)
        return tx.receive_ack(now, ACK)
    return tx.send_response(status, RAW[status], now)


ENTRIES = [
    pytest.param(name, state, event, id=f"{name}:{state.value}:{event.value}")
    for name, (_, table) in MACHINES.items()
    for state, event in table
]


@pytest.mark.parametrize(("name", "state", "event"), ENTRIES)
def test_every_table_entry_is_reachable_and_does_what_it_says(
    name: str, state: State, event: Event
) -> None:
    """Each (state, event) entry of each table is reached through real inputs,
    and firing it lands in its target state, produces exactly the kinds of
    action its effects name (plus Terminated on termination) and leaves exactly
    the timers the kept/started/re-armed rules predict."""
    make, table = MACHINES[name]
    transition = table[state, event]
    tx = make()
    for step in PATHS[name][state]:
        feed(tx, step, 1.0)
    assert state_of(tx) is state
    timer = EVENT_TIMERS.get(event)
    running = set(tx.timers) - {timer}
    actions = feed(tx, event, 2.0)
    assert state_of(tx) is transition.target
    expected = [ACTION_OF[e] for e in transition.effects if ACTION_OF[e] is not None]
    if transition.target is State.TERMINATED:
        expected.append(Terminated)
    assert [type(action) for action in actions] == expected
    if transition.target is State.TERMINATED:
        assert set(tx.timers) == set()
    elif transition.target is not state:
        assert set(tx.timers) == (running & set(transition.keep)) | set(transition.start)
    else:
        rearmed = {Effect.BACK_OFF, Effect.HOLD_AT_T2} & set(transition.effects)
        assert set(tx.timers) == running | set(transition.start) | (
            {timer} if rearmed and timer else set()
        )


@pytest.mark.parametrize("name", list(MACHINES))
def test_tables_are_consistent(name: str) -> None:
    """No entry leaves Terminated; Idle has exactly one exit; every state a path
    reaches is a source in the table; every timer that can be running in a state
    has an entry there, so no firing timer can miss its table; and only timer
    events re-arm timers."""
    _, table = MACHINES[name]
    assert all(state is not State.TERMINATED for state, _ in table)
    assert len([key for key in table if key[0] is State.IDLE]) == 1
    assert set(PATHS[name]) == {state for state, _ in table}
    possible: dict[State, set[Timer]] = {state: set() for state in State}
    changed = True
    while changed:
        changed = False
        for (state, _), transition in table.items():
            carried = possible[state] if transition.target is state else set(transition.keep)
            new = (carried | set(transition.start)) - possible[transition.target]
            if transition.target is not State.TERMINATED and new:
                possible[transition.target] |= new
                changed = True
    for state, timers in possible.items():
        for timer in timers:
            assert (state, TIMER_EVENTS[timer]) in table, (state, timer)
    for (_, event), transition in table.items():
        if {Effect.BACK_OFF, Effect.HOLD_AT_T2} & set(transition.effects):
            assert EVENT_TIMERS[event] in RETRANSMISSION_TIMERS


def render(table: Table) -> str:
    """A table as the Markdown rows documented in ``transactions.md``."""
    rows = ["| State | Event | Next state | Effects | Timers |", "|---|---|---|---|---|"]
    for (state, event), transition in table.items():
        effects = ", ".join(effect.value for effect in transition.effects) or "-"
        timers = []
        if transition.start:
            timers.append("start " + ", ".join(t.value for t in transition.start))
        if transition.keep:
            timers.append("keep " + ", ".join(t.value for t in transition.keep))
        row = [state.value, event.value, transition.target.value, effects]
        rows.append("| " + " | ".join([*row, "; ".join(timers) or "-"]) + " |")
    return "\n".join(rows)


@pytest.mark.parametrize("name", list(MACHINES))
def test_documented_tables_match_the_code(name: str) -> None:
    """docs/state-machines/transactions.md shows each table exactly as coded."""
    assert render(MACHINES[name][1]) in DOC.read_text(encoding="utf-8")
