"""What the SIP core asks its adapters to do. Plain immutable values: the core
returns them, the service (:mod:`appliance.sipservice`) carries them out."""

from __future__ import annotations

from typing import NamedTuple

from appliance.sip.blocklist import BlockLifted, BlockStarted
from appliance.sip.cdr import CallDetailRecord, Direction
from appliance.sip.registrar import Binding, Flow


class Send(NamedTuple):
    """Send ``data`` back over ``flow`` (to its source address on UDP)."""

    flow: Flow
    data: bytes


class CloseConnections(NamedTuple):
    """Close every TLS/TCP connection from ``ip`` (it was just blocked)."""

    ip: str


class BindingsChanged(NamedTuple):
    """Registrations to persist (``saved``) and delete (``removed``)."""

    saved: tuple[Binding, ...]
    removed: tuple[Binding, ...]


class BlockChanged(NamedTuple):
    """A block began or ended: persist and audit it."""

    event: BlockStarted | BlockLifted


class CallEnded(NamedTuple):
    """A call ended: store its record."""

    record: CallDetailRecord


class LiveCall(NamedTuple):
    """A call started or changed state (``state`` "ended" removes it): for
    ``telemancer calls list``."""

    tenant_id: int
    call_id: str
    caller: str
    callee: str
    direction: str
    state: str
    setup_at: float
    answered_at: float | None


class QuotaRefused(NamedTuple):
    """A call was refused at admission for the tenant's concurrent-call quota."""

    tenant_id: int
    call_id: str
    caller: str
    callee: str
    limit: int
    direction: Direction = "internal"


class TrunkHealth(NamedTuple):
    """The answer (or silence) to an OPTIONS ping of a trunk's carrier."""

    trunk_id: int
    at: float
    up: bool
    status: int | None
    rtt: float | None


Action = (
    Send
    | CloseConnections
    | BindingsChanged
    | BlockChanged
    | CallEnded
    | LiveCall
    | QuotaRefused
    | TrunkHealth
)
