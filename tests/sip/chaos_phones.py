"""The phones of the call chaos test (``test_call_chaos``): a caller and a
callee that behave as RFC 3261 user agents do, sloppily enough to be
realistic (they may vanish, never ACK, hang up at any point), over UDP.
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


def hop_by_hop(method: str, invite: Message, to: str) -> bytes:
    """The caller's ACK for a failure, or its CANCEL: the INVITE's branch and CSeq
    number, with ``to`` (RFC 3261 §9.1, §17.1.1.3)."""
    lines = [
        f"{method} {invite.uri} SIP/2.0",
        f"Via: {invite.first('via')}",
        "Max-Forwards: 70",
        f"From: {invite.first('from')}",
        f"To: {to}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.number} {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def callee_bye(client: SipTestClient, invite: Message, tag: str) -> bytes:
    """The callee's BYE in the dialog the forwarded ``invite`` set up: to the
    caller's Contact, along the Record-Route."""
    host, port = client.local
    lines = [
        f"BYE {invite.contacts[0].uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: {invite.first('to')};tag={tag}",
        f"To: {invite.first('from')}",
        f"Call-ID: {invite.call_id}",
        "CSeq: 1 BYE",
        *[f"Route: {f.value}" for f in invite.all("record-route")],
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

    def _bye(self, dialog: Message, now: float) -> list[bytes]:
        data = self.client.in_dialog("BYE", dialog)
        self.pending["BYE"] = Pending(data, now)
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
        if message.is_request:
            if message.method == "BYE":
                return [self.client.answer(message, 200, "OK")]
            return []
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
            if self.hung_up:  # the 200 crossed our CANCEL: end the dialog (§9.1)
                sent += self._bye(message, now)
        if self.acks:
            assert self.ack is not None
            sent.insert(0, self.ack)
        return sent

    def retransmit(self, now: float) -> list[bytes]:
        """Its requests still unanswered, within 64*T1."""
        if self.gone:
            return []
        return [p.data for p in self.pending.values() if now - p.since < GIVE_UP]


@dataclass
class Callee:
    """The registered phone's side of one call: it rings, answers (with an RFC
    4028 session timer or not) or refuses, answers CANCEL and BYE, and
    retransmits its final answer until ACKed."""

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

    def act(self, action: str, now: float) -> list[bytes]:
        """The user's ``action`` (ring, answer, a status to refuse with, bye, vanish),
        if it makes sense now."""
        invite = self.invite
        if self.gone or invite is None:
            return []
        if action == "vanish":
            self.gone = True
            return []
        if action == "bye":
            return self._hang_up(now) if self.final == 200 and self.acked else []
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
        return [self.last]

    def _hang_up(self, now: float) -> list[bytes]:
        if self.byed or self.invite is None:
            return []
        self.byed = True
        data = callee_bye(self.client, self.invite, self.tag)
        self.bye = Pending(data, now)
        return [data]

    def receive(self, message: Message, now: float) -> list[bytes]:
        """What the phone sends back for a datagram from the edge."""
        if self.gone:
            return []
        if not message.is_request:
            if message.cseq.method == "BYE" and message.status >= 200:
                self.bye = None
            return []
        if message.method == "INVITE":
            if self.invite is None:
                self.invite = message
            elif message.top_via.branch != self.invite.top_via.branch:
                return []
            return [] if self.last is None else [self.last]
        if message.method == "ACK":
            self.acked = True
            return []
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
        """Its final answer until ACKed and its BYE until answered, within 64*T1;
        a 2xx never ACKed ends with a BYE (§13.3.1.4)."""
        if self.gone:
            return []
        sent = []
        if self.final and not self.acked and self.last is not None:
            if now - self.final_at < GIVE_UP:
                sent.append(self.last)
            elif self.final == 200:
                sent += self._hang_up(now)
        if self.bye is not None and now - self.bye.since < GIVE_UP:
            sent.append(self.bye.data)
        return sent
