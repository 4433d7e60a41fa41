"""What the stateful proxy remembers about each request it forwards.

The proxy (RFC 3261 §16) keeps one :class:`Upstream` per request as it reached
us, which is where answers go back to, and one :class:`Branch` per copy it sent
on. The proxy and the modules it draws on (carriers, in-dialog forwarding,
quota, authentication) share these records and the small pure helpers below,
so they live in a module of their own rather than inside ``proxy.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from appliance.sip.actions import Action, LiveCall, Send
from appliance.sip.call_media import CallMedia
from appliance.sip.calls import Call
from appliance.sip.dialplan import TrunkEntry
from appliance.sip.errors import SipError
from appliance.sip.grammar import SipUri, parse_sip_uri
from appliance.sip.message import Message, Rewrite, header_name, parse_datagram
from appliance.sip.registrar import Flow
from appliance.sip.transaction import (
    MAGIC_COOKIE,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    Transmit,
)

#: Server transaction states before the final answer.
_UNANSWERED = frozenset({State.TRYING, State.PROCEEDING})


@dataclass
class Branch:
    """One fork of an INVITE (or one forwarded non-INVITE request)."""

    id: str
    flow: Flow
    request: bytes
    transaction: InviteClientTransaction | NonInviteClientTransaction
    call: Call | None
    upstream: Upstream | None
    final: int = 0
    provisional: bool = False
    cancelled: bool = False
    #: Set on a branch toward a carrier: whose credentials answer its challenge.
    trunk: TrunkEntry | None = None
    authenticated: bool = False
    #: Set on an OPTIONS ping: which trunk, and when it was sent.
    ping: tuple[TrunkEntry, float] | None = None
    #: Set on a branch carrying an SDP offer: the call's media, which judges the answer.
    media: CallMedia | None = None
    #: The ACK we sent for a 2xx whose answer we refused, re-sent on its retransmissions.
    refused_ack: bytes | None = None


@dataclass
class Upstream:
    """The request as it reached us: where answers go back to.

    Its transaction outlives its answer by up to 32 s (Timers J and L), and
    every call keeps two (the INVITE's and the BYE's). Parsed, a request is a
    few dozen objects the garbage collector walks, so once answered it is let
    go (:meth:`let_go`) and kept as bytes, parsed again on the rare later use;
    what the proxy reads of it in passing is kept as plain fields.
    """

    parsed: Message | None
    flow: Flow
    server: InviteServerTransaction | NonInviteServerTransaction
    key: tuple[str, str, str]
    branches: list[str] = field(default_factory=list)
    best: tuple[int, bytes] | None = None
    #: The branch whose 2xx answered the INVITE ("" until one has).
    winner: str = ""
    challenges: list[tuple[str, str]] = field(default_factory=list)
    wire: bytes = b""
    method: str = ""
    call_id: str = ""
    #: The CSeq header as it came (responses going up carry it).
    cseq: str = ""

    def __post_init__(self) -> None:
        request = self.parsed
        assert request is not None
        self.wire, self.method, self.call_id = request.wire, request.method, request.call_id
        self.cseq = request.first("cseq") or ""

    @property
    def message(self) -> Message:
        """The request, parsed (again, if it was let go)."""
        if self.parsed is None:
            self.parsed = parse_datagram(self.wire)
        return self.parsed

    @property
    def unanswered(self) -> bool:
        """Whether the request still waits for its final answer (only one may go up)."""
        return self.server.state in _UNANSWERED

    def let_go(self) -> None:
        """Drop the parsed request (it is answered): :attr:`message` parses it again."""
        self.parsed = None

    def consider(self, status: int, upward: bytes, answer: Message) -> None:
        """Keep a branch's final failure ``answer`` (``upward`` as it would go up)
        if it is the best so far, and its challenges."""
        if status in (401, 407):
            # §16.7 step 7: every branch's challenge goes up with the best answer.
            name = "www-authenticate" if status == 401 else "proxy-authenticate"
            self.challenges += [(name, f.value) for f in answer.all(name)]
        if self.best is None or better(status, self.best[0]):
            self.best = (status, upward)

    def best_answer(self) -> tuple[int, bytes]:
        """The best answer kept, to go up once no branch is pending."""
        assert self.best is not None
        best_status, best = self.best
        if best_status in (401, 407) and self.challenges:
            best = with_challenges(best, self.challenges)
        return best_status, best


def server_key(message: Message, method: str | None = None) -> tuple[str, str, str]:
    """§17.2.3 matching: branch, sent-by and method; for an RFC 2543 peer with no
    magic cookie, Call-ID, CSeq number and From tag stand in for the branch."""
    top = message.vias[0]
    sent_by = f"{top.host}:{top.port or 5060}".lower()
    branch = (top.branch or "").lower()
    if not branch.startswith(MAGIC_COOKIE.lower()):
        branch = f"2543|{message.call_id}|{message.cseq.number}|{message.from_.tag}"
    return (branch, sent_by, method or message.method)


def live_call(call: Call) -> LiveCall:
    """The call as the live-calls view shows it."""
    return LiveCall(
        call.tenant_id,
        call.call_id,
        call.caller,
        call.callee,
        call.direction,
        call.state,
        call.setup_at,
        call.answered_at,
    )


def sends(flow: Flow, actions: Sequence[object]) -> list[Action]:
    """A transaction's transmissions, as sends over ``flow``."""
    return [Send(flow, a.raw) for a in actions if isinstance(a, Transmit)]


def sip_or_none(uri: str) -> SipUri | None:
    """``uri`` parsed as a SIP URI, or None when it is not one."""
    try:
        return parse_sip_uri(uri)
    except SipError:
        return None


def better(status: int, best: int) -> bool:
    """RFC 3261 §16.7 step 6: 6xx over everything, then 4xx, 5xx, 3xx (401/407 kept)."""

    def rank(code: int) -> int:
        return {6: 0, 4: 1, 5: 2, 3: 3}.get(code // 100, 4)

    return rank(status) < rank(best)


def method_of(request: bytes) -> str:
    """The method of a request we built or forwarded (its first word)."""
    return request.split(b" ", 1)[0].decode("latin-1")


def with_challenges(response_bytes: bytes, challenges: list[tuple[str, str]]) -> bytes:
    """The best 401/407 carrying every branch's challenge, each once."""
    answer = parse_datagram(response_bytes)
    present = {(f.name, f.value) for f in answer.fields}
    rewrite = Rewrite(answer)
    for name, value in challenges:
        if (name, value) not in present:
            present.add((name, value))
            rewrite.insert_first(header_name(name), value)
    return rewrite.to_bytes()
