"""The tenant's concurrent-call quota as the proxy enforces it (step 4).

A call over the quota is refused with 503 before anything rings. The error
carries what the audit log needs (:func:`quota_refusal`), and the refused call
still gets a call record (:func:`record_refused_call`), so the edge can answer,
audit and record without knowing how the proxy counts calls.
"""

from __future__ import annotations

from appliance.sip.actions import Action, CallEnded, QuotaRefused
from appliance.sip.calls import Call, Leg
from appliance.sip.cdr import Direction
from appliance.sip.errors import SipError
from appliance.sip.message import Message
from appliance.sip.registrar import Flow


class QuotaError(SipError):
    """503 for the concurrent-call quota, remembering what to audit."""

    def __init__(
        self,
        tenant_id: int,
        call_id: str,
        caller: str,
        callee: str,
        limit: int,
        direction: Direction,
    ) -> None:
        warning = f'399 telemancer "concurrent call quota of {limit} reached"'
        super().__init__(503, "Service Unavailable (call quota)", (("Warning", warning),))
        self.refused = QuotaRefused(tenant_id, call_id, caller, callee, limit, direction)


def quota_refusal(error: SipError) -> QuotaRefused | None:
    """The audit-worthy refusal carried by a quota 503, if it is one."""
    return error.refused if isinstance(error, QuotaError) else None


def record_refused_call(
    message: Message, flow: Flow, refused: QuotaRefused, now: float
) -> list[Action]:
    """The record of a call refused at admission (it never rang)."""
    call = Call(
        tenant_id=refused.tenant_id,
        call_id=refused.call_id,
        caller=refused.caller,
        callee=refused.callee,
        direction=refused.direction,
        setup_at=now,
        caller_leg=Leg(flow, message.from_.tag, "", message.cseq.number),
        deadline=now,
    )
    record = call.record(now, status=503, hangup_by=None, disposition="rejected-quota")
    return [CallEnded(record)]
