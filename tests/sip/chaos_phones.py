"""The phones of the call chaos test (``test_call_chaos``): a caller and a
callee that behave as RFC 3261 user agents do, sloppily enough to be
realistic (they may vanish, never ACK, hang up at any point), over UDP or a
connection (TCP: nothing is retransmitted but a 2xx to an INVITE, §13.3.1.4).
Once answered, both may talk in the dialog (:class:`Dialog`: re-INVITE with
or without an offer, UPDATE, INFO, OPTIONS) and answer the other side's.
Sans-I/O like the core: they take parsed messages and ``now`` and return the
datagrams they send; their timers fire when :meth:`retransmit` is called."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from appliance.sip.message import Message, parse_datagram
from appliance.sip.registrar import Flow
from appliance.sip.transaction import T1
from appliance.testing.sipclient import SipTestClient

#: The extension every call rings.
CALLEE = "2000"
#: How long a phone retransmits a request or an unacknowledged final answer (64*T1).
GIVE_UP = 64 * T1
#: What a user may start in an answered dialog: the method, and whether it offers SDP.
TALK = {
    "reinvite": ("INVITE", True),
    "reinvite without offer": ("INVITE", False),
    "update": ("UPDATE", True),
    "update without offer": ("UPDATE", False),
    "info": ("INFO", False),
    "options": ("OPTIONS", False),
}
REASONS = {200: "OK", 481: "Call/Transaction Does Not Exist", 491: "Request Pending"}


def hop_by_hop(method: str, invite: Message, to: str) -> bytes:
    """The caller's ACK for a failure, or its CANCEL: the INVITE's branch and CSeq
    number, with ``to`` and the INVITE's Route (RFC 3261 §9.1, §17.1.1.3)."""
    lines = [
        f"{method} {invite.uri} SIP/2.0",
        f"Via: {invite.first('via')}",
        "Max-Forwards: 70",
        f"From: {invite.first('from')}",
        f"To: {to}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.number} {method}",
        *[f"Route: {f.value}" for f in invite.all("route")],
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Pending:
    """A request (or final answer) a phone sends again until it is answered (or
    ACKed), for 64*T1 after it first sent it."""

    data: bytes
    since: float


@dataclass
class Dialog:
    """One phone's side of a confirmed dialog (RFC 3261 §12): the requests it
    sends in it (one of each method at a time, one offer at a time, §14.1) and
    how it answers the other side's: 200 (with an SDP answer, or an offer to a
    re-INVITE without one), 491 while its own offer is pending (§14.2),
    ``offer_status`` to every offer if that is a refusal, 481 once it ended."""

    client: SipTestClient
    call_id: str
    local: str
    remote: str
    target: str
    routes: tuple[str, ...]
    reliable: bool
    offer_status: int = 200
    #: Our requests waiting for their final answer, by method.
    sent: dict[str, tuple[Message, Pending]] = field(default_factory=dict)
    #: Our ACK for each final answer to our re-INVITEs (by CSeq number), sent again
    #: for its retransmissions.
    acks: dict[int, bytes] = field(default_factory=dict)
    #: Our answers to their requests, by branch and method, for retransmissions.
    answers: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: Our 2xx to their re-INVITE (its CSeq number) until ACKed, and whether it
    #: carries our offer (their re-INVITE had none: the answer comes in the ACK).
    unacked: tuple[int, Pending] | None = None
    offered_in_answer: bool = False
    ended: bool = False
    #: The final answers to our requests: (method, status).
    finals: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def of_caller(cls, client: SipTestClient, answer: Message, reliable: bool) -> Dialog:
        """The caller's dialog from the 2xx to its INVITE (§12.1.2)."""
        target = answer.contacts[0].uri if answer.contacts else f"sip:{client.domain}"
        routes = tuple(f.value for f in answer.all("record-route"))[::-1]
        local, remote = answer.first("from") or "", answer.first("to") or ""
        return cls(client, answer.call_id, local, remote, target, routes, reliable)

    @classmethod
    def of_callee(cls, client: SipTestClient, invite: Message, tag: str, reliable: bool) -> Dialog:
        """The callee's dialog from the INVITE it answered 2xx with ``tag`` (§12.1.1)."""
        target = invite.contacts[0].uri if invite.contacts else f"sip:{client.domain}"
        routes = tuple(f.value for f in invite.all("record-route"))
        local, remote = f"{invite.first('to')};tag={tag}", invite.first("from") or ""
        return cls(client, invite.call_id, local, remote, target, routes, reliable)

    def build(self, method: str, *, cseq: int | None = None, body: bytes = b"") -> bytes:
        """A request in the dialog (§12.2.1.1); the next CSeq unless given one (an ACK's)."""
        client = self.client
        if cseq is None:
            client.cseq += 1
            cseq = client.cseq
        host, port = client.local
        lines = [
            f"{method} {self.target} SIP/2.0",
            f"Via: SIP/2.0/{client.transport} {host}:{port}"
            f";branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: {self.local}",
            f"To: {self.remote}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            *[f"Route: {route}" for route in self.routes],
        ]
        if method in ("INVITE", "UPDATE"):  # target refresh requests carry a Contact
            lines.append(f"Contact: <sip:{client.user}@{host}:{port}>")
        if body:
            lines.append("Content-Type: application/sdp")
        head = "\r\n".join([*lines, f"Content-Length: {len(body)}"])
        return head.encode() + b"\r\n\r\n" + body

    @property
    def offering(self) -> bool:
        """Whether an offer of ours (or an exchange we started) is unanswered."""
        invite, update = self.sent.get("INVITE"), self.sent.get("UPDATE")
        return (
            invite is not None
            or (update is not None and bool(update[0].body))
            or (self.unacked is not None and self.offered_in_answer)
        )

    def request(self, method: str, now: float, *, offer: bool = False) -> list[bytes]:
        """The user starts ``method`` in the dialog, if it may now."""
        if self.ended or method in self.sent:
            return []
        starts_exchange = method == "INVITE" or (method == "UPDATE" and offer)
        if starts_exchange and (self.offering or self.unacked is not None):
            return []
        data = self.build(method, body=self.client.sdp() if offer else b"")
        self.sent[method] = (parse_datagram(data), Pending(data, now))
        if method == "BYE":
            self.ended = True
        return [data]

    def owns(self, response: Message) -> bool:
        """Whether ``response`` answers one of the requests this dialog sent."""
        method, number = response.cseq.method, response.cseq.number
        sent = self.sent.get(method)
        if sent is not None and sent[0].cseq.number == number:
            return True
        return method == "INVITE" and number in self.acks

    def receive_response(self, response: Message, now: float) -> list[bytes]:
        """An answer to our request: a final one to a re-INVITE is ACKed (a 2xx
        end to end with the SDP answer if it offered, §13.2.2.4; a failure hop by
        hop, §17.1.1.3), and again for each retransmission."""
        method, number, status = response.cseq.method, response.cseq.number, response.status
        if method == "INVITE" and number in self.acks:
            return [self.acks[number]] if status >= 200 else []
        if status < 200:
            return []
        request, _ = self.sent.pop(method)
        self.finals.append((method, status))
        if method != "INVITE":
            return []
        if status >= 300:
            ack = hop_by_hop("ACK", request, response.first("to") or "")
        else:
            offered = not request.body and bool(response.body)
            body = self.client.sdp_answer(response) if offered else b""
            ack = self.build("ACK", cseq=number, body=body)
        self.acks[number] = ack
        return [ack]

    def receive_request(self, request: Message, now: float) -> list[bytes]:
        """The other side's request in the dialog (or its ACK), answered."""
        method = request.method
        if method == "ACK":
            if self.unacked is not None and request.cseq.number == self.unacked[0]:
                self.unacked = None
            return []
        key = (request.top_via.branch or "", method)
        if key in self.answers:  # a retransmission
            return [self.answers[key]]
        status, body = self._answer(request)
        reason = REASONS.get(status, "Chaos")
        data = self.client.answer(request, status, reason, body=body)
        self.answers[key] = data
        if method == "INVITE" and status == 200:
            self.unacked = (request.cseq.number, Pending(data, now))
            self.offered_in_answer = not request.body
        if method == "BYE":
            self.ended, self.unacked = True, None
        return [data]

    def _answer(self, request: Message) -> tuple[int, bytes]:
        method = request.method
        if method == "BYE":
            return 200, b""
        if self.ended:
            return 481, b""
        offers = method == "INVITE" or (method == "UPDATE" and bool(request.body))
        if not offers:
            return 200, b""
        if self.offering or (method == "INVITE" and self.unacked is not None):
            return 491, b""
        if self.offer_status != 200:
            return self.offer_status, b""
        if request.body:
            return 200, self.client.sdp_answer(request)
        return 200, self.client.sdp()  # a re-INVITE without an offer: ours is in the 2xx

    def retransmit(self, now: float) -> list[bytes]:
        """Our requests until answered (over UDP), within 64*T1, and our 2xx to a
        re-INVITE until ACKed; a 2xx never ACKed ends the dialog (§13.3.1.4)."""
        sent = []
        for method, (_, pending) in list(self.sent.items()):
            if now - pending.since >= GIVE_UP:
                del self.sent[method]  # Timer B or F: given up
            elif not self.reliable:
                sent.append(pending.data)
        if self.unacked is not None:
            _, pending = self.unacked
            if now - pending.since < GIVE_UP:
                sent.append(pending.data)
            else:
                self.unacked = None
                sent += self.request("BYE", now)
        return sent


@dataclass
class Caller:
    """A phone that dials, authenticates, ACKs (unless ``acks`` is False) and
    hangs up with CANCEL or BYE (in an early dialog too), as RFC 3261 lets a UAC."""

    flow: Flow
    client: SipTestClient
    acks: bool
    invite: Message | None = None
    challenged: set[str] = field(default_factory=set)
    answer: Message | None = None
    ack: bytes | None = None
    provisional: bool = False
    #: The first provisional answer that set up an early dialog.
    early: Message | None = None
    final: int = 0
    hung_up: bool = False
    cancelled: bool = False
    gone: bool = False
    pending: dict[str, Pending] = field(default_factory=dict)
    #: Every final answer to its INVITEs: (branch, status, To tag).
    finals: list[tuple[str, int, str]] = field(default_factory=list)
    #: The dialog its first 2xx set up, and how it answers offers in it.
    dialog: Dialog | None = None
    offer_status: int = 200

    @property
    def reliable(self) -> bool:
        """Over a connection: no retransmissions (§17.1.1.2, §17.1.2.2)."""
        return self.flow.transport != "udp"

    def dial(self, now: float, authorization: str | None = None) -> list[bytes]:
        """A new INVITE (the first, or one answering a challenge)."""
        data = self.client.invite(CALLEE, authorization=authorization)
        self.invite, self.provisional, self.final = parse_datagram(data), False, 0
        self.pending["INVITE"] = Pending(data, now)
        return [data]

    def hang_up(self, now: float, *, early_bye: bool = False) -> list[bytes]:
        """BYE once answered; while ringing, CANCEL (once a provisional came,
        §9.1) or with ``early_bye`` a BYE in the early dialog (§15)."""
        if self.gone or self.hung_up or self.invite is None:
            return []
        self.hung_up = True
        if self.answer is not None:
            return self._bye(self.answer, now)
        if early_bye and self.early is not None and not self.final:
            return self._bye(self.early, now)
        return self._cancel(now)

    def talk(self, action: str, now: float) -> list[bytes]:
        """A request of :data:`TALK` in the answered dialog."""
        if self.gone or self.hung_up or self.dialog is None:
            return []
        method, offer = TALK[action]
        return self.dialog.request(method, now, offer=offer)

    def _bye(self, dialog: Message, now: float) -> list[bytes]:
        data = self.client.in_dialog("BYE", dialog)
        self.pending["BYE"] = Pending(data, now)
        if self.dialog is not None and dialog is self.answer:
            self.dialog.ended = True
        return [data]

    def _cancel(self, now: float) -> list[bytes]:
        invite = self.invite
        if invite is None or self.final or not self.provisional or self.cancelled:
            return []
        self.cancelled = True
        data = hop_by_hop("CANCEL", invite, invite.first("to") or "")
        self.pending["CANCEL"] = Pending(data, now)
        return [data]

    def receive(self, message: Message, now: float) -> list[bytes]:
        """What the phone sends back for a datagram from the edge."""
        if self.gone:
            return []
        dialog = self.dialog
        if message.is_request:
            if dialog is not None:
                return dialog.receive_request(message, now)
            if message.method == "BYE":
                return [self.client.answer(message, 200, "OK")]
            return []
        if dialog is not None and dialog.owns(message):
            return dialog.receive_response(message, now)
        method = message.cseq.method
        if method != "INVITE":
            if message.status >= 200:
                self.pending.pop(method, None)
            return []
        invite = self.invite
        if invite is None or message.top_via.branch != invite.top_via.branch:
            return []  # a late answer to an INVITE we have given up on
        self.pending.pop("INVITE", None)
        if message.status < 200:
            self.provisional = True
            if message.status > 100 and message.to.tag and self.early is None:
                self.early = message
            return self._cancel(now) if self.hung_up else []
        self.finals.append((invite.top_via.branch or "", message.status, message.to.tag or ""))
        self.final = self.final or message.status
        if message.status >= 300:
            sent = [hop_by_hop("ACK", invite, message.first("to") or "")] if self.acks else []
            branch = invite.top_via.branch or ""
            if message.status == 407 and branch not in self.challenged and not self.hung_up:
                self.challenged.add(branch)
                if len(self.challenged) <= 3:
                    uri = f"sip:{CALLEE}@{self.client.domain}"
                    auth = self.client.authorization(message, method="INVITE", uri=uri)
                    sent += self.dial(now, auth)
            return sent
        sent = []
        if self.answer is None:
            self.answer = message
            self.ack = self.client.in_dialog("ACK", message)
            self.dialog = Dialog.of_caller(self.client, message, self.reliable)
            self.dialog.offer_status = self.offer_status
            if self.hung_up:  # the 200 crossed our CANCEL: end the dialog (§9.1)
                sent += self._bye(message, now)
        if self.acks:
            assert self.ack is not None
            sent.insert(0, self.ack)
        return sent

    def retransmit(self, now: float) -> list[bytes]:
        """Its requests still unanswered, within 64*T1 (over UDP only)."""
        if self.gone:
            return []
        sent = [] if self.dialog is None else self.dialog.retransmit(now)
        if self.reliable:
            return sent
        return [p.data for p in self.pending.values() if now - p.since < GIVE_UP] + sent


@dataclass
class Callee:
    """The registered phone's side of one call: it rings, answers (with an RFC
    4028 session timer or not) or refuses, answers CANCEL and BYE, and
    retransmits its final answer until ACKed (over a connection, a 2xx only)."""

    client: SipTestClient
    tag: str
    invite: Message | None = None
    last: bytes | None = None
    final: int = 0
    final_at: float = 0.0
    acked: bool = False
    bye: Pending | None = None
    byed: bool = False
    gone: bool = False
    reliable: bool = False
    #: The dialog its 2xx set up, and how it answers offers in it.
    dialog: Dialog | None = None
    offer_status: int = 200

    def act(self, action: str, now: float) -> list[bytes]:
        """The user's ``action`` (ring, answer, a status to refuse with, bye, vanish,
        or one of :data:`TALK` once ACKed), if it makes sense now."""
        invite = self.invite
        if self.gone or invite is None:
            return []
        if action == "vanish":
            self.gone = True
            return []
        if action == "bye":
            return self._hang_up(now) if self.final == 200 and self.acked else []
        if action in TALK:
            if self.dialog is None or not self.acked or self.byed:
                return []
            method, offer = TALK[action]
            return self.dialog.request(method, now, offer=offer)
        if self.final:
            return []
        statuses = {"trying": 100, "ring": 180, "answer": 200, "answer with session timer": 200}
        status = statuses.get(action) or int(action)
        self.last = self.client.answer(invite, status, "Chaos", tag=self.tag)
        if action == "answer with session timer":
            header = b"Session-Expires: 90;refresher=uac\r\nContent-Length:"
            self.last = self.last.replace(b"Content-Length:", header, 1)
        if status >= 200:
            self.final, self.final_at = status, now
        if status == 200:
            self.dialog = Dialog.of_callee(self.client, invite, self.tag, self.reliable)
            self.dialog.offer_status = self.offer_status
        return [self.last]

    def _hang_up(self, now: float) -> list[bytes]:
        if self.byed or self.invite is None:
            return []
        self.byed = True
        dialog = self.dialog or Dialog.of_callee(self.client, self.invite, self.tag, self.reliable)
        dialog.ended = True
        data = dialog.build("BYE")
        self.bye = Pending(data, now)
        return [data]

    def receive(self, message: Message, now: float) -> list[bytes]:
        """What the phone sends back for a datagram from the edge."""
        if self.gone:
            return []
        dialog = self.dialog
        if not message.is_request:
            if dialog is not None and dialog.owns(message):
                return dialog.receive_response(message, now)
            if message.cseq.method == "BYE" and message.status >= 200:
                self.bye = None
            return []
        if message.method == "INVITE" and message.to.tag is None:
            if self.invite is None:
                self.invite = message
            elif message.top_via.branch != self.invite.top_via.branch:
                return []
            return [] if self.last is None else [self.last]
        if message.method == "ACK":
            unacked = None if dialog is None else dialog.unacked
            if dialog is not None and unacked and message.cseq.number == unacked[0]:
                return dialog.receive_request(message, now)
            self.acked = True
            return []
        if dialog is not None and message.method != "CANCEL":
            return dialog.receive_request(message, now)
        if message.method not in ("CANCEL", "BYE"):
            return []
        if self.invite is None:  # a CANCEL overtook its INVITE
            return [self.client.answer(message, 481, "Call/Transaction Does Not Exist")]
        sent = [self.client.answer(message, 200, "OK", tag=self.tag)]
        if not self.final:  # CANCEL, or BYE while early (§15.1.2)
            self.last = self.client.answer(self.invite, 487, "Request Terminated", tag=self.tag)
            self.final, self.final_at = 487, now
            sent.append(self.last)
        return sent

    def retransmit(self, now: float) -> list[bytes]:
        """Its final answer until ACKed (over a connection, only a 2xx) and its BYE
        until answered (over UDP), within 64*T1; a 2xx never ACKed ends with a BYE
        (§13.3.1.4)."""
        if self.gone:
            return []
        sent = [] if self.dialog is None else self.dialog.retransmit(now)
        if self.final and not self.acked and self.last is not None:
            if now - self.final_at < GIVE_UP:
                if self.final == 200 or not self.reliable:
                    sent.append(self.last)
            elif self.final == 200:
                sent += self._hang_up(now)
        if self.bye is not None and now - self.bye.since < GIVE_UP and not self.reliable:
            sent.append(self.bye.data)
        return sent
