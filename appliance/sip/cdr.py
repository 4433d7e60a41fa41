"""Call detail records, as the SIP core produces them when a call ends.

One record per call. The store keeps them immutable
(:mod:`appliance.store.cdrs`), under the tenant, with hourly aggregates.
Media and identity results are filled in by the media and STIR/SHAKEN
layers; until then they are empty mappings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["internal", "inbound", "outbound"]
Disposition = Literal["answered", "busy", "no-answer", "failed", "cancelled", "rejected-quota"]
HangupBy = Literal["caller", "callee", "system"]

DIRECTIONS: tuple[Direction, ...] = ("internal", "inbound", "outbound")
DISPOSITIONS: tuple[Disposition, ...] = (
    "answered",
    "busy",
    "no-answer",
    "failed",
    "cancelled",
    "rejected-quota",
)


@dataclass(frozen=True)
class CallDetailRecord:
    """What happened on one call. Times are epoch seconds (``now`` values)."""

    tenant_id: int
    call_id: str
    caller: str
    callee: str
    direction: Direction
    trunk: str | None
    setup_at: float
    ringing_at: float | None
    answered_at: float | None
    ended_at: float
    disposition: Disposition
    hangup_by: HangupBy | None
    final_status: int
    caller_transport: str
    callee_transport: str | None
    media: Mapping[str, object] = field(default_factory=dict)
    identity: Mapping[str, object] = field(default_factory=dict)

    @property
    def billable_seconds(self) -> float:
        """Answered time, 0 for calls that were never answered."""
        return 0.0 if self.answered_at is None else max(0.0, self.ended_at - self.answered_at)


def disposition_for(status: int) -> Disposition:
    """The disposition of a call that ended with final ``status`` before answer."""
    if status == 486 or status == 600:
        return "busy"
    if status in (408, 480):
        return "no-answer"
    if status == 487:
        return "cancelled"
    return "failed"
