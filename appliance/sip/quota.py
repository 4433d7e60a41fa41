"""Calls refused once their caller is known, and the concurrent-call quota.

Every call gets a record, also one refused before anything rang: a number
that does not exist (404), a callee not registered (480), an offer the policy
refuses (488), a carrier out of reach or no media ports (503), or the tenant's
concurrent-call quota (503 with a Warning, step 4 of the proxy). The refusal
is raised as a :class:`CallRefusedError` that carries its record, so the edge
answers and records it without knowing how the proxy routes or counts calls.
A request refused before its caller is identified (407, a forged carrier) is
not a call and gets no record.
"""

from __future__ import annotations

from appliance.sip.actions import QuotaRefused
from appliance.sip.call_parties import Caller, Parties, dialled
from appliance.sip.calls import Call, Leg
from appliance.sip.cdr import CallDetailRecord, Direction, Disposition
from appliance.sip.errors import SipError
from appliance.sip.message import Message
from appliance.sip.registrar import Flow


class CallRefusedError(SipError):
    """A call refused once its caller was known: answered as the error it wraps,
    and recorded with :attr:`record`."""

    def __init__(self, error: SipError, record: CallDetailRecord) -> None:
        super().__init__(error.status, error.reason, error.headers)
        self.record = record


class QuotaError(CallRefusedError):
    """503 for the concurrent-call quota: recorded (``rejected-quota``), and
    remembering what to audit."""

    def __init__(self, record: CallDetailRecord, limit: int) -> None:
        warning = f'399 telemancer "concurrent call quota of {limit} reached"'
        error = SipError(503, "Service Unavailable (call quota)", (("Warning", warning),))
        super().__init__(error, record)
        self.refused = QuotaRefused(
            record.tenant_id, record.call_id, record.caller, record.callee, limit, record.direction
        )


def quota_refusal(error: SipError) -> QuotaRefused | None:
    """The audit-worthy refusal carried by a quota 503, if it is one."""
    return error.refused if isinstance(error, QuotaError) else None


def refused_record(
    message: Message,
    flow: Flow,
    now: float,
    who: Parties | Caller,
    *,
    status: int,
    disposition: Disposition | None = None,
) -> CallDetailRecord:
    """The record of a call refused with ``status`` before anything rang (its
    disposition follows from the status unless given): between routed
    ``Parties``, or from an identified ``Caller`` to what was dialled."""
    direction: Direction
    if isinstance(who, Parties):
        tenant, caller, callee = who.tenant, who.caller, who.callee
        direction, trunk = who.direction, who.trunk_name
    else:
        tenant, caller, callee = who.tenant, who.aor, dialled(message)
        direction = "inbound" if who.carrier is not None else "internal"
        trunk = who.carrier.name if who.carrier is not None else None
    call = Call(
        tenant_id=tenant.id,
        call_id=message.call_id,
        caller=caller,
        callee=callee,
        direction=direction,
        setup_at=now,
        caller_leg=Leg(flow, message.from_.tag, "", message.cseq.number),
        deadline=now,
        trunk=trunk,
    )
    return call.record(now, status=status, hangup_by=None, disposition=disposition)


def refused_call(
    error: SipError, message: Message, flow: Flow, now: float, who: Parties | Caller
) -> CallRefusedError:
    """``error`` as the refusal of a call, recorded (see :func:`refused_record`)."""
    return CallRefusedError(error, refused_record(message, flow, now, who, status=error.status))
