"""The SIP core's read-only view of tenants and extensions.

Built from the store (:func:`appliance.store.sipstate.load_directory`) and
swapped whole when the database changes, so lookups on the packet path are
dictionary reads with no I/O, and an unknown user costs exactly what a known
one does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TenantEntry:
    """A tenant as SIP sees it: its domain is its Digest realm."""

    id: int
    domain: str
    status: str
    max_extensions: int
    max_concurrent_calls: int

    @property
    def active(self) -> bool:
        """Suspended tenants get nothing but 403."""
        return self.status == "active"


@dataclass(frozen=True)
class ExtensionEntry:
    """An extension and its HA1 values by Digest algorithm."""

    id: int
    tenant_id: int
    number: str
    ha1: Mapping[str, str]


class SipDirectory:
    """Tenants by domain and extensions by (tenant, number)."""

    def __init__(
        self, tenants: Iterable[TenantEntry] = (), extensions: Iterable[ExtensionEntry] = ()
    ) -> None:
        self._tenants = {t.domain: t for t in tenants}
        self._extensions = {(e.tenant_id, e.number): e for e in extensions}

    def tenant(self, domain: str) -> TenantEntry | None:
        """The tenant serving ``domain`` (compared lower-case)."""
        return self._tenants.get(domain.lower())

    def extension(self, tenant_id: int, number: str) -> ExtensionEntry | None:
        """One extension of one tenant."""
        return self._extensions.get((tenant_id, number))

    def domains(self) -> list[str]:
        """Every domain served."""
        return sorted(self._tenants)
