"""The proxy as its parts see it.

:class:`~appliance.sip.proxy.Proxy` is one object whose methods live in three
modules: ``proxy`` (requests, forking, timers), ``proxy_responses`` (answers
from downstream) and ``proxy_dialogs`` (requests inside dialogs, session
timers, and hanging up). The last two are mixins; their methods are typed on
:class:`ProxyParts`, which names every table and method they use of the whole,
so the coupling between the three is written down in one place and checked
by mypy wherever they are called on a :class:`Proxy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from appliance.sip.actions import Action
    from appliance.sip.calls import Admission, Call, Leg
    from appliance.sip.dialplan import TrunkEntry
    from appliance.sip.directory import SipDirectory
    from appliance.sip.message import Message
    from appliance.sip.proxy_address import Addresses
    from appliance.sip.proxy_state import Branch, Upstream
    from appliance.sip.proxy_timers import ProxyTimers
    from appliance.sip.registrar import Flow
    from appliance.sip.sdp_exchange import Refused


class ProxyParts(Protocol):
    """What the proxy's mixins use of it: its tables, then its methods."""

    timers: ProxyTimers
    calls: dict[str, Call]
    open_connections: set[str]
    certificates: dict[str, str]
    admission: Admission
    trunk_down: set[int]
    trunk_flows: dict[int, list[Flow]]
    _branches: dict[str, Branch]
    _upstream: dict[tuple[str, str, str], Upstream]

    @property
    def addresses(self) -> Addresses: ...
    @property
    def directory(self) -> SipDirectory: ...

    # proxy.py
    def _branch_id(self) -> str: ...
    def _reachable(self, flow: Flow) -> bool: ...
    def _pinged(self, branch: Branch, status: int | None, now: float) -> list[Action]: ...
    def _cancel_branches(self, upstream: Upstream, now: float, skip: str = "") -> list[Action]: ...
    def _send_cancel(self, branch: Branch, now: float) -> list[Action]: ...
    def _start_branch(
        self,
        call: Call,
        upstream: Upstream,
        target: Flow,
        data: bytes,
        branch_id: str,
        now: float,
        trunk: TrunkEntry | None,
        *,
        authenticated: bool = False,
    ) -> list[Action]: ...

    # proxy_responses.py
    def _deliver(self, branch: Branch, message: Message, now: float) -> list[Action]: ...
    def _refuse(
        self, branch: Branch, answer: Message, refused: Refused, now: float
    ) -> list[Action]: ...
    def _carrier_failure(
        self, branch: Branch, message: Message, now: float
    ) -> list[Action] | None: ...
    def _answer_carrier(self, branch: Branch, challenge: Message, now: float) -> list[Action]: ...
    def _next_server(self, branch: Branch, now: float) -> list[Action]: ...

    # proxy_dialogs.py
    def _session_refreshed(self, call: Call, answer: Message, now: float) -> None: ...
    def _callee_leg(self, branch: Branch, response: Message, *, cseq: int) -> Leg: ...
    def _hang_up(self, call: Call, now: float, *, hangup_by: str) -> list[Action]: ...
    def _send_own(self, flow: Flow, data: bytes, branch_id: str, now: float) -> list[Action]: ...
    def _end_answered_branch(
        self, branch: Branch, answer: Message, why: str, now: float, *, bye: bool = True
    ) -> list[Action]: ...
    def _ended(
        self, call: Call, now: float, *, status: int, hangup_by: str | None
    ) -> list[Action]: ...
    def _flow_closed(self, flow: Flow, now: float) -> list[Action]: ...
