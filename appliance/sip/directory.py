"""The SIP core's read-only view of tenants and extensions.

Built from the store (:func:`appliance.store.sipstate.load_directory`) and
swapped whole when the database changes, so lookups on the packet path are
dictionary reads with no I/O, and an unknown user costs exactly what a known
one does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from appliance.media.policy import SrtpPolicy
from appliance.sip.dialplan import DidEntry, NumberSettings, RouteRule, TrunkEntry


@dataclass(frozen=True)
class TenantEntry:
    """A tenant as SIP sees it: its domain is its Digest realm; ``srtp`` is the
    SRTP policy of the legs toward its phones."""

    id: int
    domain: str
    status: str
    max_extensions: int
    max_concurrent_calls: int
    srtp: SrtpPolicy = SrtpPolicy.OPTIONAL

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
    """Tenants by domain, extensions by (tenant, number), and each tenant's trunks,
    DIDs, outbound routes and numbering."""

    def __init__(
        self,
        tenants: Iterable[TenantEntry] = (),
        extensions: Iterable[ExtensionEntry] = (),
        *,
        trunks: Iterable[TrunkEntry] = (),
        dids: Mapping[str, DidEntry] | None = None,
        routes: Mapping[int, tuple[RouteRule, ...]] | None = None,
        numbering: Mapping[int, NumberSettings] | None = None,
    ) -> None:
        self._tenants = {t.domain: t for t in tenants}
        self._by_id = {t.id: t for t in self._tenants.values()}
        self._extensions = {(e.tenant_id, e.number): e for e in extensions}
        self._extension_ids = {e.id: e for e in self._extensions.values()}
        self._trunks = {(t.tenant_id, t.name): t for t in trunks}
        self._dids = dict(dids or {})
        self._routes = dict(routes or {})
        self._numbering = dict(numbering or {})

    def tenant(self, domain: str) -> TenantEntry | None:
        """The tenant serving ``domain`` (compared lower-case)."""
        return self._tenants.get(domain.lower())

    def extension(self, tenant_id: int, number: str) -> ExtensionEntry | None:
        """One extension of one tenant."""
        return self._extensions.get((tenant_id, number))

    def domains(self) -> list[str]:
        """Every domain served."""
        return sorted(self._tenants)

    def tenant_by_id(self, tenant_id: int) -> TenantEntry | None:
        """The tenant with ``tenant_id``."""
        return self._by_id.get(tenant_id)

    def extension_by_id(self, extension_id: int) -> ExtensionEntry | None:
        """The extension with ``extension_id``."""
        return self._extension_ids.get(extension_id)

    def trunk(self, tenant_id: int, name: str) -> TrunkEntry | None:
        """One of a tenant's enabled trunks."""
        return self._trunks.get((tenant_id, name))

    def trunks(self) -> list[TrunkEntry]:
        """Every enabled trunk."""
        return list(self._trunks.values())

    def carrier_for(self, source_ip: str, fingerprint: str | None) -> TrunkEntry | None:
        """The trunk whose carrier sent a request, by source address and TLS client
        certificate only (never by a header)."""
        for trunk in self._trunks.values():
            if trunk.admits(source_ip, fingerprint):
                return trunk
        return None

    def did(self, number: str) -> DidEntry | None:
        """The DID for an E.164 number."""
        return self._dids.get(number)

    def routes(self, tenant_id: int) -> tuple[RouteRule, ...]:
        """A tenant's outbound rules, in order."""
        return self._routes.get(tenant_id, ())

    def numbering(self, tenant_id: int) -> NumberSettings:
        """A tenant's E.164 settings."""
        return self._numbering.get(tenant_id, NumberSettings())
