"""The four RFC 3261 §17 transaction state machines, as corrected by RFC 6026.

Sans-I/O and parser-free: inputs are plain values (a status code, the raw
bytes of a message, ``now``) and every input returns a list of
:data:`Action` values for the caller to carry out. Time is a parameter; the
adapter asks :meth:`next_timer` for the earliest deadline, re-arms one
``callLater`` for it and calls :meth:`handle_timer` when it fires, as aioquic
does. Nothing here reads a clock, so tests drive the timers with plain floats.

Each machine is an explicit transition table (as in h11's ``_state.py``)
mapping ``(State, Event)`` to a :class:`Transition`: the new state, the
effects in order, and the timers it starts. A change of state stops every
running timer the transition does not ``keep``, so no timer outlives the state
that needs it; entering ``Terminated`` stops them all and emits
:class:`Terminated`. The tables and their diagrams are in
``docs/state-machines/transactions.md``.

An input the table does not list is handled by who produced it:

* the network (a response, a request, an ACK, a transport error) can always
  duplicate, delay or reorder, so those inputs are *absorbed*: they return no
  actions and change nothing, as RFC 3261 absorbs retransmissions;
* the transaction user (start, a response to send) and timers are ours, so an
  input out of place is a caller bug and raises :class:`LocalProtocolError`.
  RFC 3261 §17.2.2 says a further final response from the TU "MUST be
  discarded"; raising discards it too, and also tells the caller.

In ``Idle`` (created, nothing sent or received) only the opening input is
allowed: nothing can be matched to a transaction that is not on the wire yet.

Two things stay with the caller. Matching messages to transactions (branch,
sent-by, method) is the transport's job; :func:`server_key` gives the §17.2.3
key. Sending 100 Trying for an INVITE is the TU's job, within
:data:`TRYING_AFTER` unless it answers sooner (§17.2.1): the server transaction
has no hidden timer, and until the TU has sent a response it answers
retransmitted INVITEs with nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, NamedTuple

#: RTT estimate (RFC 3261 Table 4).
T1: Final = 0.5
#: Longest retransmission interval for non-INVITE requests and INVITE responses.
T2: Final = 4.0
#: Longest time a message stays in the network.
T4: Final = 5.0
#: Timer D on unreliable transports: "at least 32 seconds" (§17.1.1.2).
TIMER_D: Final = 32.0
#: The TU sends 100 Trying for an INVITE it will not answer within this many
#: seconds (§17.2.1). Documentation for the TU: no timer here acts on it.
TRYING_AFTER: Final = 0.2
#: Branch prefix of RFC 3261 elements (§8.1.1.7); other branches are RFC 2543's.
MAGIC_COOKIE: Final = "z9hG4bK"


class _Name(enum.Enum):
    """An enum whose members hash by identity, in C.

    Members are singletons compared by identity, so identity hashing agrees
    with equality. ``enum.Enum`` hashes the member's name in a Python method,
    and every transition looks up (state, event) and timer keys: this is
    about a third cheaper per lookup.
    """

    __hash__ = object.__hash__


class State(_Name):
    """Transaction states; each machine uses the subset its table names."""

    IDLE = "Idle"
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Timer(_Name):
    """The RFC 3261 and RFC 6026 transaction timers (C is the proxy TU's), and
    the §9.1 limit on waiting for an INVITE's final answer once it is cancelled."""

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 -- the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    #: 64*T1 after a CANCEL: an INVITE still without its final answer is given up.
    GIVE_UP = "give up"


class Event(_Name):
    """Inputs to the tables: from the TU, from the network, or a timer firing."""

    START = "start"
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    REQUEST = "request"
    ACK = "ACK"
    TU_PROVISIONAL = "1xx from TU"
    TU_SUCCESS = "2xx from TU"
    TU_FAILURE = "300-699 from TU"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_GIVE_UP = "Timer give up"


#: The event each timer produces when it fires.
TIMER_EVENTS: Final[Mapping[Timer, Event]] = {t: Event["TIMER_" + t.name] for t in Timer}
#: Inputs from the network side, absorbed when the table does not list them.
NETWORK_EVENTS: Final = frozenset(
    {
        Event.PROVISIONAL,
        Event.SUCCESS,
        Event.FAILURE,
        Event.REQUEST,
        Event.ACK,
        Event.TRANSPORT_ERROR,
    }
)
#: Timers that only run on unreliable transports (they retransmit).
RETRANSMISSION_TIMERS: Final = frozenset({Timer.A, Timer.E, Timer.G})


class Effect(_Name):
    """What a transition does, in table order, before its timers start."""

    SEND_REQUEST = "send request"
    SEND_ACK = "send ACK"
    SEND_RESPONSE = "send response"
    RESEND_RESPONSE = "resend last response"
    RESPONSE_TO_TU = "response to TU"
    REQUEST_TO_TU = "request to TU"
    TIMEOUT_TO_TU = "timeout to TU"
    ERROR_TO_TU = "transport error to TU"
    #: Re-arm the timer that fired at twice its interval (E and G capped at T2).
    BACK_OFF = "re-arm doubled"
    #: Re-arm the timer that fired at T2 (Timer E in Proceeding, §17.1.2.2).
    HOLD_AT_T2 = "re-arm at T2"


@dataclass(frozen=True)
class Transition:
    """One table entry: the state to enter, its effects and its timers."""

    target: State
    effects: tuple[Effect, ...] = ()
    start: tuple[Timer, ...] = ()
    keep: tuple[Timer, ...] = ()


Table = Mapping[tuple[State, Event], Transition]


@dataclass(frozen=True)
class Transmit:
    """Send these bytes to the peer over the transaction's transport."""

    raw: bytes


@dataclass(frozen=True)
class DeliverResponse:
    """Pass a received response to the TU."""

    status: int
    raw: bytes


@dataclass(frozen=True)
class DeliverRequest:
    """Pass a received request (or, in Accepted, an ACK) to the TU."""

    raw: bytes


@dataclass(frozen=True)
class Timeout:
    """Timer B, F or H fired: no final response, or (H) no ACK for ours."""

    timer: Timer


@dataclass(frozen=True)
class TransportError:
    """The transport failed to send for this transaction; the TU decides what next."""


@dataclass(frozen=True)
class Terminated:
    """The transaction is over: the caller drops it and its matching key."""


Action = Transmit | DeliverResponse | DeliverRequest | Timeout | TransportError | Terminated


class LocalProtocolError(Exception):
    """The caller gave an input its transaction's table does not allow.

    A bug on our side rather than the peer's, so there is no response to send
    (compare :class:`appliance.sip.errors.SipError`).
    """

    def __init__(self, machine: str, state: State, event: Event) -> None:
        super().__init__(f"{machine}: {event.value!r} is not allowed in {state.value}")
        self.state = state
        self.event = event


class ServerKey(NamedTuple):
    """What a request is matched on to find its server transaction (§17.2.3)."""

    branch: str
    sent_by: str
    method: str


def server_key(branch: str, sent_by: str, method: str) -> ServerKey:
    """The §17.2.3 key of a request carrying an RFC 3261 branch.

    An ACK matches the INVITE transaction it acknowledges, so its key carries
    the method INVITE. A CANCEL is a transaction of its own and keeps CANCEL;
    to find the INVITE it cancels (§9.2), ask for the key with ``"INVITE"``.
    Branch and sent-by are tokens and host names, which compare without case
    (§7.3.1); methods compare with case (§7.1). A branch without the magic
    cookie comes from an RFC 2543 element, which must be matched by §17.2.3's
    older rules, so it raises ValueError rather than produce a key that
    could match the wrong transaction.
    """
    branch = branch.lower()
    if not branch.startswith(MAGIC_COOKIE.lower()):
        raise ValueError(f"branch {branch!r} lacks the RFC 3261 magic cookie")
    return ServerKey(branch, sent_by.lower(), "INVITE" if method == "ACK" else method)


def _response_event(status: int, *, from_tu: bool) -> Event:
    """The event for a response status; ValueError outside 100-699."""
    if not 100 <= status <= 699:
        raise ValueError(f"{status} is not a SIP response status")
    kind = 0 if status < 200 else 1 if status < 300 else 2
    if from_tu:
        return (Event.TU_PROVISIONAL, Event.TU_SUCCESS, Event.TU_FAILURE)[kind]
    return (Event.PROVISIONAL, Event.SUCCESS, Event.FAILURE)[kind]


class _Transaction:
    """The table interpreter and timers shared by the four machines."""

    TABLE: ClassVar[Table]

    def __init__(
        self, *, reliable: bool, now: float, t1: float = T1, t2: float = T2, t4: float = T4
    ) -> None:
        if not 0 < t1 <= t2 or t4 <= 0:
            raise ValueError("timers need 0 < T1 <= T2 and T4 > 0")
        self.reliable = reliable
        #: When the caller created the transaction; timers start with the first input.
        self.created_at = now
        self.t1, self.t2, self.t4, self.timer_d = t1, t2, t4, TIMER_D
        self._state = State.IDLE
        self._deadlines: dict[Timer, float] = {}
        self._intervals: dict[Timer, float] = {}

    @property
    def state(self) -> State:
        """The current state; only inputs move it."""
        return self._state

    @property
    def timers(self) -> Mapping[Timer, float]:
        """The running timers and their absolute deadlines (a copy)."""
        return dict(self._deadlines)

    def next_timer(self) -> float | None:
        """The earliest deadline, or None when no timer runs."""
        return min(self._deadlines.values(), default=None)

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``, earliest first, each at most once.

        A retransmission timer re-arms from ``now``, not from its old deadline,
        so an adapter that wakes late sends one retransmission, not a burst.
        On a tie a timeout fires before a retransmission, which it makes moot.
        Calling this with nothing due (or in any state) does nothing.
        """
        actions: list[Action] = []
        fired: set[Timer] = set()
        while True:
            due = [t for t, at in self._deadlines.items() if at <= now and t not in fired]
            if not due:
                return actions
            timer = min(due, key=lambda t: (self._deadlines[t], t in RETRANSMISSION_TIMERS))
            fired.add(timer)
            del self._deadlines[timer]
            actions += self._handle(TIMER_EVENTS[timer], now, timer=timer)

    def _duration(self, timer: Timer) -> float:
        """A timer's first interval on this transaction's transport (Table 4)."""
        if timer in RETRANSMISSION_TIMERS:
            return self.t1
        if timer is Timer.D:
            return 0.0 if self.reliable else self.timer_d
        if timer in (Timer.I, Timer.K):
            return 0.0 if self.reliable else self.t4
        if timer is Timer.J:
            return 0.0 if self.reliable else 64 * self.t1
        return 64 * self.t1  # B, F, H, L, M, GIVE_UP

    def _handle(
        self,
        event: Event,
        now: float,
        *,
        status: int = 0,
        raw: bytes = b"",
        timer: Timer | None = None,
    ) -> list[Action]:
        """Look the input up in the table and carry out its transition."""
        transition = self.TABLE.get((self._state, event))
        if transition is None:
            if self._state is not State.IDLE and event in NETWORK_EVENTS:
                return []
            raise LocalProtocolError(type(self).__name__, self._state, event)
        if transition.target is not self._state:
            for running in set(self._deadlines) - set(transition.keep):
                del self._deadlines[running]
        self._state = transition.target
        actions: list[Action] = []
        for effect in transition.effects:
            actions += self._perform(effect, now, status, raw, timer)
        for started in transition.start:
            if started in RETRANSMISSION_TIMERS and self.reliable:
                continue
            self._arm(started, now, self._duration(started))
        if self._state is State.TERMINATED:
            self._deadlines.clear()
            actions.append(Terminated())
        return actions

    def _arm(self, timer: Timer, now: float, interval: float) -> None:
        self._intervals[timer] = interval
        self._deadlines[timer] = now + interval

    def _perform(
        self, effect: Effect, now: float, status: int, raw: bytes, timer: Timer | None
    ) -> list[Action]:
        """Carry out one effect; subclasses add the client or server ones."""
        if effect is Effect.TIMEOUT_TO_TU and timer is not None:
            return [Timeout(timer)]
        if effect is Effect.ERROR_TO_TU:
            return [TransportError()]
        if effect is Effect.BACK_OFF and timer is not None:
            doubled = 2 * self._intervals[timer]
            self._arm(timer, now, doubled if timer is Timer.A else min(doubled, self.t2))
            return []
        if effect is Effect.HOLD_AT_T2 and timer is not None:
            self._arm(timer, now, self.t2)
            return []
        raise TypeError(f"{type(self).__name__} cannot perform {effect}")


class _ClientTransaction(_Transaction):
    """Sends one request; passes its responses to the TU (§17.1)."""

    def __init__(
        self,
        request: bytes,
        *,
        reliable: bool,
        now: float,
        t1: float = T1,
        t2: float = T2,
        t4: float = T4,
    ) -> None:
        super().__init__(reliable=reliable, now=now, t1=t1, t2=t2, t4=t4)
        self.request = request

    def start(self, now: float) -> list[Action]:
        """Send the request and start the transaction's timers."""
        return self._handle(Event.START, now)

    def receive_response(self, status: int, raw: bytes, now: float) -> list[Action]:
        """A response the transport matched to this transaction (§17.1.3)."""
        return self._handle(_response_event(status, from_tu=False), now, status=status, raw=raw)

    def transport_error(self, now: float) -> list[Action]:
        """The transport could not send for this transaction (§17.1.4)."""
        return self._handle(Event.TRANSPORT_ERROR, now)

    def _perform(
        self, effect: Effect, now: float, status: int, raw: bytes, timer: Timer | None
    ) -> list[Action]:
        if effect is Effect.SEND_REQUEST:
            return [Transmit(self.request)]
        if effect is Effect.RESPONSE_TO_TU:
            return [DeliverResponse(status, raw)]
        return super()._perform(effect, now, status, raw, timer)


class _ServerTransaction(_Transaction):
    """Receives one request; sends the TU's responses (§17.2)."""

    def __init__(
        self, *, reliable: bool, now: float, t1: float = T1, t2: float = T2, t4: float = T4
    ) -> None:
        super().__init__(reliable=reliable, now=now, t1=t1, t2=t2, t4=t4)
        self.last_response: bytes | None = None

    def receive_request(self, raw: bytes, now: float) -> list[Action]:
        """The request that created the transaction, or a retransmission of it."""
        return self._handle(Event.REQUEST, now, raw=raw)

    def send_response(self, status: int, raw: bytes, now: float) -> list[Action]:
        """A response from the TU, sent and remembered for retransmissions."""
        return self._handle(_response_event(status, from_tu=True), now, status=status, raw=raw)

    def transport_error(self, now: float) -> list[Action]:
        """The transport could not send a response (§17.2.4)."""
        return self._handle(Event.TRANSPORT_ERROR, now)

    def _perform(
        self, effect: Effect, now: float, status: int, raw: bytes, timer: Timer | None
    ) -> list[Action]:
        if effect is Effect.REQUEST_TO_TU:
            return [DeliverRequest(raw)]
        if effect is Effect.SEND_RESPONSE:
            self.last_response = raw
            return [Transmit(raw)]
        if effect is Effect.RESEND_RESPONSE:
            return [] if self.last_response is None else [Transmit(self.last_response)]
        return super()._perform(effect, now, status, raw, timer)


#: Short names for the tables below only (deleted after them).
S, E, X, Tm = State, Event, Effect, Timer

#: Figure 5 of RFC 3261 as redrawn by RFC 6026 §8.4.
INVITE_CLIENT_TABLE: Final[Table] = {
    (S.IDLE, E.START): Transition(S.CALLING, (X.SEND_REQUEST,), start=(Tm.A, Tm.B)),
    (S.CALLING, E.TIMER_A): Transition(S.CALLING, (X.SEND_REQUEST, X.BACK_OFF)),
    (S.CALLING, E.TIMER_B): Transition(S.TERMINATED, (X.TIMEOUT_TO_TU,)),
    (S.CALLING, E.TRANSPORT_ERROR): Transition(S.TERMINATED, (X.ERROR_TO_TU,)),
    (S.CALLING, E.PROVISIONAL): Transition(S.PROCEEDING, (X.RESPONSE_TO_TU,)),
    (S.CALLING, E.SUCCESS): Transition(S.ACCEPTED, (X.RESPONSE_TO_TU,), start=(Tm.M,)),
    (S.CALLING, E.FAILURE): Transition(S.COMPLETED, (X.SEND_ACK, X.RESPONSE_TO_TU), start=(Tm.D,)),
    (S.PROCEEDING, E.PROVISIONAL): Transition(S.PROCEEDING, (X.RESPONSE_TO_TU,)),
    (S.PROCEEDING, E.SUCCESS): Transition(S.ACCEPTED, (X.RESPONSE_TO_TU,), start=(Tm.M,)),
    (S.PROCEEDING, E.FAILURE): Transition(
        S.COMPLETED, (X.SEND_ACK, X.RESPONSE_TO_TU), start=(Tm.D,)
    ),
    (S.PROCEEDING, E.TIMER_GIVE_UP): Transition(S.TERMINATED, (X.TIMEOUT_TO_TU,)),
    (S.COMPLETED, E.FAILURE): Transition(S.COMPLETED, (X.SEND_ACK,)),
    (S.COMPLETED, E.TRANSPORT_ERROR): Transition(S.TERMINATED, (X.ERROR_TO_TU,)),
    (S.COMPLETED, E.TIMER_D): Transition(S.TERMINATED),
    (S.ACCEPTED, E.SUCCESS): Transition(S.ACCEPTED, (X.RESPONSE_TO_TU,)),
    (S.ACCEPTED, E.TIMER_M): Transition(S.TERMINATED),
}

_TO_NON_INVITE_COMPLETED = Transition(S.COMPLETED, (X.RESPONSE_TO_TU,), start=(Tm.K,))

#: Figure 6 of RFC 3261 (§17.1.2.2).
NON_INVITE_CLIENT_TABLE: Final[Table] = {
    (S.IDLE, E.START): Transition(S.TRYING, (X.SEND_REQUEST,), start=(Tm.E, Tm.F)),
    (S.TRYING, E.TIMER_E): Transition(S.TRYING, (X.SEND_REQUEST, X.BACK_OFF)),
    (S.TRYING, E.TIMER_F): Transition(S.TERMINATED, (X.TIMEOUT_TO_TU,)),
    (S.TRYING, E.TRANSPORT_ERROR): Transition(S.TERMINATED, (X.ERROR_TO_TU,)),
    (S.TRYING, E.PROVISIONAL): Transition(S.PROCEEDING, (X.RESPONSE_TO_TU,), keep=(Tm.E, Tm.F)),
    (S.TRYING, E.SUCCESS): _TO_NON_INVITE_COMPLETED,
    (S.TRYING, E.FAILURE): _TO_NON_INVITE_COMPLETED,
    (S.PROCEEDING, E.TIMER_E): Transition(S.PROCEEDING, (X.SEND_REQUEST, X.HOLD_AT_T2)),
    (S.PROCEEDING, E.TIMER_F): Transition(S.TERMINATED, (X.TIMEOUT_TO_TU,)),
    (S.PROCEEDING, E.TRANSPORT_ERROR): Transition(S.TERMINATED, (X.ERROR_TO_TU,)),
    (S.PROCEEDING, E.PROVISIONAL): Transition(S.PROCEEDING, (X.RESPONSE_TO_TU,)),
    (S.PROCEEDING, E.SUCCESS): _TO_NON_INVITE_COMPLETED,
    (S.PROCEEDING, E.FAILURE): _TO_NON_INVITE_COMPLETED,
    (S.COMPLETED, E.SUCCESS): Transition(S.COMPLETED),
    (S.COMPLETED, E.FAILURE): Transition(S.COMPLETED),
    (S.COMPLETED, E.TIMER_K): Transition(S.TERMINATED),
}

#: Figure 7 of RFC 3261 as redrawn by RFC 6026 §7.1. A transport error leaves
#: the state as it is (RFC 6026 §7.1) so retransmitted INVITEs are still absorbed.
INVITE_SERVER_TABLE: Final[Table] = {
    (S.IDLE, E.REQUEST): Transition(S.PROCEEDING, (X.REQUEST_TO_TU,)),
    (S.PROCEEDING, E.REQUEST): Transition(S.PROCEEDING, (X.RESEND_RESPONSE,)),
    (S.PROCEEDING, E.TU_PROVISIONAL): Transition(S.PROCEEDING, (X.SEND_RESPONSE,)),
    (S.PROCEEDING, E.TU_SUCCESS): Transition(S.ACCEPTED, (X.SEND_RESPONSE,), start=(Tm.L,)),
    (S.PROCEEDING, E.TU_FAILURE): Transition(S.COMPLETED, (X.SEND_RESPONSE,), start=(Tm.G, Tm.H)),
    (S.PROCEEDING, E.TRANSPORT_ERROR): Transition(S.PROCEEDING, (X.ERROR_TO_TU,)),
    (S.COMPLETED, E.REQUEST): Transition(S.COMPLETED, (X.RESEND_RESPONSE,)),
    (S.COMPLETED, E.TIMER_G): Transition(S.COMPLETED, (X.RESEND_RESPONSE, X.BACK_OFF)),
    (S.COMPLETED, E.TIMER_H): Transition(S.TERMINATED, (X.TIMEOUT_TO_TU,)),
    (S.COMPLETED, E.ACK): Transition(S.CONFIRMED, start=(Tm.I,)),
    (S.COMPLETED, E.TRANSPORT_ERROR): Transition(S.COMPLETED, (X.ERROR_TO_TU,)),
    (S.CONFIRMED, E.ACK): Transition(S.CONFIRMED),
    (S.CONFIRMED, E.TIMER_I): Transition(S.TERMINATED),
    (S.ACCEPTED, E.REQUEST): Transition(S.ACCEPTED),
    (S.ACCEPTED, E.ACK): Transition(S.ACCEPTED, (X.REQUEST_TO_TU,)),
    (S.ACCEPTED, E.TU_SUCCESS): Transition(S.ACCEPTED, (X.SEND_RESPONSE,)),
    (S.ACCEPTED, E.TRANSPORT_ERROR): Transition(S.ACCEPTED, (X.ERROR_TO_TU,)),
    (S.ACCEPTED, E.TIMER_L): Transition(S.TERMINATED),
}

_TO_NON_INVITE_SERVER_COMPLETED = Transition(S.COMPLETED, (X.SEND_RESPONSE,), start=(Tm.J,))

#: Figure 8 of RFC 3261 (§17.2.2).
NON_INVITE_SERVER_TABLE: Final[Table] = {
    (S.IDLE, E.REQUEST): Transition(S.TRYING, (X.REQUEST_TO_TU,)),
    (S.TRYING, E.REQUEST): Transition(S.TRYING),
    (S.TRYING, E.TU_PROVISIONAL): Transition(S.PROCEEDING, (X.SEND_RESPONSE,)),
    (S.TRYING, E.TU_SUCCESS): _TO_NON_INVITE_SERVER_COMPLETED,
    (S.TRYING, E.TU_FAILURE): _TO_NON_INVITE_SERVER_COMPLETED,
    (S.PROCEEDING, E.REQUEST): Transition(S.PROCEEDING, (X.RESEND_RESPONSE,)),
    (S.PROCEEDING, E.TU_PROVISIONAL): Transition(S.PROCEEDING, (X.SEND_RESPONSE,)),
    (S.PROCEEDING, E.TU_SUCCESS): _TO_NON_INVITE_SERVER_COMPLETED,
    (S.PROCEEDING, E.TU_FAILURE): _TO_NON_INVITE_SERVER_COMPLETED,
    (S.PROCEEDING, E.TRANSPORT_ERROR): Transition(S.TERMINATED, (X.ERROR_TO_TU,)),
    (S.COMPLETED, E.REQUEST): Transition(S.COMPLETED, (X.RESEND_RESPONSE,)),
    (S.COMPLETED, E.TRANSPORT_ERROR): Transition(S.TERMINATED, (X.ERROR_TO_TU,)),
    (S.COMPLETED, E.TIMER_J): Transition(S.TERMINATED),
}


class InviteClientTransaction(_ClientTransaction):
    """Sends an INVITE (§17.1.1, RFC 6026 §8.4).

    ``ack_for`` builds the ACK for a 300-699 response from its raw bytes, per
    §17.1.1.3; the transaction sends it, and sends it again for every
    retransmission of that response. A 2xx is never ACKed here: it moves the
    transaction to Accepted, where every further 2xx (a retransmission, or
    another fork's answer) goes to the TU, which ACKs each in a new
    transaction, until Timer M ends it.
    """

    TABLE = INVITE_CLIENT_TABLE

    def __init__(
        self,
        request: bytes,
        *,
        reliable: bool,
        now: float,
        ack_for: Callable[[bytes], bytes],
        t1: float = T1,
        t2: float = T2,
        t4: float = T4,
        timer_d: float = TIMER_D,
    ) -> None:
        super().__init__(request, reliable=reliable, now=now, t1=t1, t2=t2, t4=t4)
        if timer_d < 0:
            raise ValueError("timers need Timer D >= 0")
        self.timer_d = timer_d
        self._ack_for = ack_for
        self._ack: bytes | None = None

    def cancel_sent(self, now: float) -> None:
        """A CANCEL for this INVITE went out (the TU sends it only once a provisional
        answer came, §9.1). Should no final answer follow within 64*T1, the
        transaction is given up: a :class:`Timeout` to the TU, then Terminated,
        so a callee that fell silent cannot hold the call for ever."""
        if self._state is State.PROCEEDING and Timer.GIVE_UP not in self._deadlines:
            self._arm(Timer.GIVE_UP, now, self._duration(Timer.GIVE_UP))

    def _perform(
        self, effect: Effect, now: float, status: int, raw: bytes, timer: Timer | None
    ) -> list[Action]:
        if effect is Effect.SEND_ACK:
            # A retransmitted final is answered with the same ACK (§17.1.1.2).
            if self._ack is None:
                self._ack = self._ack_for(raw)
            return [Transmit(self._ack)]
        return super()._perform(effect, now, status, raw, timer)


class NonInviteClientTransaction(_ClientTransaction):
    """Sends any request but INVITE and ACK (§17.1.2)."""

    TABLE = NON_INVITE_CLIENT_TABLE


class InviteServerTransaction(_ServerTransaction):
    """Receives an INVITE (§17.2.1, RFC 6026 §7.1).

    A 2xx from the TU moves it to Accepted, where the TU's own 2xx
    retransmissions (§13.3.1.4) pass through, retransmitted INVITEs are
    absorbed rather than answered, and a matching ACK goes to the TU, until
    Timer L ends it.
    """

    TABLE = INVITE_SERVER_TABLE

    def receive_ack(self, now: float, raw: bytes = b"") -> list[Action]:
        """An ACK matched to this transaction.

        In Completed it is the ACK for our 300-699 and confirms the
        transaction; in Accepted RFC 6026 passes it to the TU, which is why
        the raw bytes may be given.
        """
        return self._handle(Event.ACK, now, raw=raw)


class NonInviteServerTransaction(_ServerTransaction):
    """Receives any request but INVITE and ACK (§17.2.2)."""

    TABLE = NON_INVITE_SERVER_TABLE


del S, E, X, Tm

Transaction = (
    InviteClientTransaction
    | NonInviteClientTransaction
    | InviteServerTransaction
    | NonInviteServerTransaction
)
