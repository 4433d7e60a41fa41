"""Calls in progress: admission against each tenant's quota, and the record
each call leaves when it ends.

Admission is one synchronous check-and-take on the reactor thread, so two
INVITEs can never both take a tenant's last slot; every way a call ends
goes through :meth:`Call.end`, which is where the slot is given back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from appliance.sip.call_media import CallMedia
from appliance.sip.cdr import CallDetailRecord, Direction, Disposition, HangupBy, disposition_for
from appliance.sip.registrar import Flow

CallState = Literal["proceeding", "ringing", "answered", "ended"]


class Admission:
    """Concurrent-call slots per tenant."""

    def __init__(self) -> None:
        self._active: dict[int, int] = {}

    def reserve(self, tenant_id: int, limit: int) -> bool:
        """Take a slot if one is free; False (and nothing taken) at the limit."""
        taken = self._active.get(tenant_id, 0)
        if taken >= limit:
            return False
        self._active[tenant_id] = taken + 1
        return True

    def release(self, tenant_id: int) -> None:
        """Give a slot back."""
        left = self._active.get(tenant_id, 0) - 1
        if left > 0:
            self._active[tenant_id] = left
        else:
            self._active.pop(tenant_id, None)

    def count(self, tenant_id: int) -> int:
        """Slots taken by ``tenant_id``."""
        return self._active.get(tenant_id, 0)

    def reconcile(self, calls: Iterable[Call]) -> dict[int, tuple[int, int]]:
        """Reset the counters to the calls actually live; return each tenant whose
        counter drifted as ``tenant: (counted, actual)``."""
        actual: dict[int, int] = {}
        for call in calls:
            if call.state != "ended":
                actual[call.tenant_id] = actual.get(call.tenant_id, 0) + 1
        drift = {
            tenant: (self._active.get(tenant, 0), actual.get(tenant, 0))
            for tenant in set(actual) | set(self._active)
            if self._active.get(tenant, 0) != actual.get(tenant, 0)
        }
        self._active = actual
        return drift


@dataclass
class Leg:
    """One side of a call as the proxy sees it: where it is and who it is."""

    flow: Flow
    tag: str | None
    contact: str
    cseq: int
    #: The dialog's route set toward this party, without our own entries: the
    #: Route values of a request we send it ourselves (a BYE, RFC 3261
    #: §12.2.1.1), so it takes the path the party's own requests take.
    routes: tuple[str, ...] = ()
    #: The dialog's URIs as this party knows them, its own (the From of its
    #: INVITE, or the To of the one it was sent) and its peer's: a request we
    #: send it ourselves carries them in To and From (§12.2.1.1). Toward a
    #: carrier they are not the caller's: numbers are normalised to E.164.
    uri: str = ""
    peer_uri: str = ""


@dataclass
class Call:
    """A call from INVITE to its end. Mutable: it is the proxy's working state."""

    tenant_id: int
    call_id: str
    caller: str
    callee: str
    direction: Direction
    setup_at: float
    caller_leg: Leg
    deadline: float
    callee_leg: Leg | None = None
    ringing_at: float | None = None
    answered_at: float | None = None
    state: CallState = "proceeding"
    final_status: int = 0
    trunk: str | None = None
    branches: list[str] = field(default_factory=list)
    #: Who cancelled it before it was answered (the caller's CANCEL, or our Timer C).
    cancelled_by: HangupBy | None = None
    #: Added to the caller's CSeq numbers toward the callee: one for each time we
    #: re-sent the INVITE to answer a carrier's challenge.
    callee_cseq_offset: int = 0
    #: Early dialogs with the callee's branches, by their To tag, until one
    #: answers: a provisional response with a tag creates one (§12.1), and
    #: PRACK (RFC 3262), UPDATE (RFC 3311) and INFO travel in it before the 2xx.
    early: dict[str, Leg] = field(default_factory=dict)
    #: The relay's ports and both legs' negotiation, from admission to the end.
    media: CallMedia | None = None
    #: Why we ended it ourselves when that is not plain from ``hangup_by``
    #: (``media-timeout``, ``session-expired``): recorded in the CDR's media fields.
    end_reason: str | None = None
    #: When the session dies unless refreshed, while the phones use RFC 4028
    #: session timers (the last 2xx to the INVITE or a refresh said for how long).
    session_expires_at: float | None = None

    def end(
        self,
        now: float,
        admission: Admission,
        *,
        status: int,
        hangup_by: HangupBy | None,
        disposition: Disposition | None = None,
    ) -> CallDetailRecord | None:
        """End the call once: release its slot and its media ports and return its
        record, with both legs' media counters (None if it had ended already)."""
        if self.state == "ended":
            return None
        self.state = "ended"
        admission.release(self.tenant_id)
        media: dict[str, object] = {} if self.media is None else self.media.close()
        if self.end_reason is not None:
            media["end_reason"] = self.end_reason
        return self.record(
            now, status=status, hangup_by=hangup_by, disposition=disposition, media=media
        )

    def record(
        self,
        now: float,
        *,
        status: int,
        hangup_by: HangupBy | None,
        disposition: Disposition | None = None,
        media: Mapping[str, object] | None = None,
    ) -> CallDetailRecord:
        """The call's record as of ``now`` (ended then)."""
        if disposition is None:
            disposition = "answered" if self.answered_at is not None else disposition_for(status)
        return CallDetailRecord(
            tenant_id=self.tenant_id,
            call_id=self.call_id,
            caller=self.caller,
            callee=self.callee,
            direction=self.direction,
            trunk=self.trunk,
            setup_at=self.setup_at,
            ringing_at=self.ringing_at,
            answered_at=self.answered_at,
            ended_at=now,
            disposition=disposition,
            hangup_by=hangup_by,
            final_status=status or self.final_status,
            caller_transport=self.caller_leg.flow.transport,
            callee_transport=self.callee_leg.flow.transport if self.callee_leg else None,
            media=media or {},
        )
