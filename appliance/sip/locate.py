"""Locating a SIP server (RFC 3263 §4) as pure functions over DNS answers.

:func:`procedure` is a generator: it yields batches of :class:`Lookup`
requests, receives a mapping of each lookup to its records, and finally
returns the ordered :class:`Target` list (empty when nothing was found: the
caller fails the request with 503). The adapter
(:mod:`appliance.sip.dns`) drives it with real lookups and a cache; tests
drive it with canned answers through :func:`drive`. Lookups in one batch are
independent, so the adapter runs them in parallel. At most three rounds:
NAPTR, SRV, then A/AAAA.

The procedure, with the choices RFC 3263 leaves open::

    IP literal host ─────────────────────────────► one target (port or default)
    explicit port ──► A/AAAA of host ─────────────► targets on that port
    explicit transport ──► SRV for it ──┐
    otherwise ──► NAPTR ──► usable? ────┴─ yes ──► SRV of the replacements
                               │ no                        │ none
                               ▼                           ▼
                 SRV for every allowed transport ──► A/AAAA of host,
                 (first one with records wins)       default port

- The transport set is what the caller allows (``supported``), narrowed to
  TLS for a SIPS URI or a TLS-only trunk (``secure``), and to the one given
  explicitly (URI ``transport=`` or trunk setting). A secure locate never
  issues a plaintext SRV query and never returns a TCP or UDP target.
- NAPTR (RFC 3403 §4.1): only ``S``-flag records whose service is
  ``SIPS+D2T``, ``SIP+D2T`` or ``SIP+D2U`` and whose transport is allowed are
  usable; only the lowest ``order`` among them is kept (a client "MUST NOT
  consider" higher orders once one matches), sorted by ``preference``. So a
  server listing TLS first is reached over TLS only: a failed TLS connection
  never turns into a plaintext one.
- Without usable NAPTR records the SRV queries for every allowed transport
  go out together; the first transport in our preference order (TLS, TCP,
  UDP) that has records is used, alone, for the same reason.
- SRV records are ordered by priority, then by RFC 2782 weighted random
  selection (zero weights first, a uniform draw in ``[0, sum]`` inclusive)
  with an injectable ``choose``. A lone ``.`` target means "decidedly not
  available" and rules the transport out, including for the A/AAAA fallback.
- With no SRV records, the host's A then AAAA records are used on the
  transport's default port (5061 for TLS, 5060 otherwise), with UDP for a SIP
  URI (RFC 3263 §4.1) if allowed, else TCP, else TLS.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from typing import NamedTuple, TypeVar, cast

TLS = "tls"
TCP = "tcp"
UDP = "udp"
#: Our preference when the server states none (and the order of fallbacks).
TRANSPORTS = (TLS, TCP, UDP)
DEFAULT_PORTS = {TLS: 5061, TCP: 5060, UDP: 5060}
#: NAPTR services we can use (RFC 3263 §4.1); SCTP and WebSocket are not offered.
NAPTR_SERVICES = {"SIPS+D2T": TLS, "SIP+D2T": TCP, "SIP+D2U": UDP}
#: SRV owner-name prefixes (RFC 3263 §4.2: TLS uses ``_sips._tcp`` even for a SIP URI).
SRV_PREFIXES = {TLS: "_sips._tcp.", TCP: "_sip._tcp.", UDP: "_sip._udp."}
#: Most SRV targets whose addresses are looked up; the rest are ignored.
MAX_SRV_TARGETS = 16

NAPTR = "NAPTR"
SRV = "SRV"
A = "A"
AAAA = "AAAA"


class Lookup(NamedTuple):
    """One DNS question: record type (``NAPTR``/``SRV``/``A``/``AAAA``) and name."""

    rtype: str
    name: str


class Naptr(NamedTuple):
    """A NAPTR record (RFC 3403), text fields decoded."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str


class Srv(NamedTuple):
    """An SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


#: What an answer holds: NAPTR or SRV records, or addresses as text for A/AAAA.
Record = Naptr | Srv | str
Answers = Mapping[Lookup, Sequence[Record]]


class Target(NamedTuple):
    """Where to send: transport, the name it came from, port and IP address."""

    transport: str
    host: str
    port: int
    address: str


#: Yields lookup batches, receives their answers, returns the targets.
Procedure = Generator[tuple[Lookup, ...], Answers, list[Target]]
#: ``choose(total)`` returns a uniform integer in ``[0, total]``.
Choose = Callable[[int], int]


def _choose(total: int) -> int:
    return secrets.randbelow(total + 1)


def normalize_name(host: str) -> str:
    """A host as looked up: lower-case, no trailing dot, IPv6 brackets removed."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


def ip_literal(host: str) -> str | None:
    """The canonical text of ``host`` if it is an IP address, else None."""
    try:
        return str(ipaddress.ip_address(normalize_name(host)))
    except ValueError:
        return None


def allowed_transports(
    transport: str | None, *, secure: bool, supported: Collection[str] = TRANSPORTS
) -> tuple[str, ...]:
    """The transports this locate may return, in our preference order.

    ``secure`` (a SIPS URI, a TLS-only trunk) leaves TLS alone; for it
    ``transport=tcp`` means TLS over TCP (RFC 3261 §26.2.2). An unknown or
    contradictory transport (``sctp``, SIPS over UDP) leaves nothing.
    """
    wanted = transport.lower() if transport is not None else None
    if secure and wanted == TCP:
        wanted = TLS
    usable = {t.lower() for t in supported}
    return tuple(
        t
        for t in TRANSPORTS
        if t in usable and (not secure or t == TLS) and (wanted is None or t == wanted)
    )


def default_transport(allowed: Sequence[str], *, secure: bool) -> str:
    """The transport without DNS guidance: TLS for SIPS, UDP for SIP (RFC 3263
    §4.1), falling back along UDP, TCP, TLS to what is allowed."""
    if secure:
        return TLS
    for transport in (UDP, TCP, TLS):
        if transport in allowed:
            return transport
    raise ValueError("no transport allowed")


def order_srv(records: Sequence[Srv], choose: Choose = _choose) -> list[Srv]:
    """Order SRV records as RFC 2782 says: by priority, then weighted random.

    Within a priority, zero-weight records go first; ``choose(sum)`` draws a
    number in ``[0, sum]``, and the first record whose running weight sum
    reaches it is taken next. ``.`` targets are dropped.
    """
    usable = [r for r in records if normalize_name(r.target)]
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in usable}):
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = min(max(choose(total), 0), total)
            running = 0
            index = len(group) - 1
            for position, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    index = position
                    break
            ordered.append(group.pop(index))
    return ordered


def select_naptr(records: Sequence[Naptr], allowed: Collection[str]) -> list[tuple[str, str]]:
    """``(transport, SRV name)`` of the usable NAPTR records of the lowest order,
    by preference (RFC 3403 §4.1, RFC 3263 §4.1)."""
    usable = [
        r
        for r in records
        if r.flags.lower() == "s"
        and NAPTR_SERVICES.get(r.service.upper()) in allowed
        and normalize_name(r.replacement)
    ]
    if not usable:
        return []
    first = min(r.order for r in usable)
    chosen = sorted((r for r in usable if r.order == first), key=lambda r: r.preference)
    return [(NAPTR_SERVICES[r.service.upper()], normalize_name(r.replacement)) for r in chosen]


def procedure(
    host: str,
    port: int | None = None,
    transport: str | None = None,
    *,
    secure: bool = False,
    supported: Collection[str] = TRANSPORTS,
    choose: Choose = _choose,
) -> Procedure:
    """The RFC 3263 §4 client procedure for a URI's host, port and transport.

    ``transport`` is the one given explicitly by the URI or the trunk (it
    skips NAPTR); ``secure`` is set for a SIPS URI or a trunk that requires
    TLS; ``supported`` is what the appliance is willing to use at all.
    """
    allowed = allowed_transports(transport, secure=secure, supported=supported)
    if not allowed:
        return []
    name = normalize_name(host)
    literal = ip_literal(name)
    if literal is not None or port is not None:
        # §4.2: an IP literal or an explicit port skips NAPTR and SRV.
        chosen = allowed[0] if transport is not None else default_transport(allowed, secure=secure)
        final_port = port if port is not None else DEFAULT_PORTS[chosen]
        if literal is not None:
            return [Target(chosen, literal, final_port, literal)]
        return (yield from _address_targets([(chosen, name, final_port)]))
    candidates: list[tuple[str, str]] = []
    if transport is None:
        naptr = yield (Lookup(NAPTR, name),)
        candidates = select_naptr(_records(naptr, Lookup(NAPTR, name), Naptr), allowed)
    if candidates:
        srv_answers = yield tuple(Lookup(SRV, srv_name) for _, srv_name in candidates)
        queries = [(chosen, Lookup(SRV, srv_name)) for chosen, srv_name in candidates]
    else:
        queries = [(t, Lookup(SRV, SRV_PREFIXES[t] + name)) for t in allowed]
        srv_answers = yield tuple(query for _, query in queries)
    hops: list[tuple[str, str, int]] = []
    unavailable: set[str] = set()
    for chosen, query in queries:
        records = _records(srv_answers, query, Srv)
        if records and not any(normalize_name(r.target) for r in records):
            unavailable.add(chosen)
        hops.extend((chosen, r.target, r.port) for r in order_srv(records, choose))
        if hops and not candidates:
            break  # without NAPTR, the first transport with records is used alone
    remaining = [t for t, _ in queries if t not in unavailable]
    if not remaining:
        return []
    # With NAPTR, the server's most preferred transport; without, SIP's default.
    fallback = remaining[0] if candidates else default_transport(remaining, secure=secure)
    if not hops:
        # §4.2: no SRV records: the host's addresses on the default port.
        hops = [(fallback, name, DEFAULT_PORTS[fallback])]
    return (yield from _address_targets(hops[:MAX_SRV_TARGETS]))


def _address_targets(
    hops: Sequence[tuple[str, str, int]],
) -> Generator[tuple[Lookup, ...], Answers, list[Target]]:
    """Look up A then AAAA for each hop's name; one target per address, in order."""
    names = list(dict.fromkeys(normalize_name(host) for _, host, _ in hops))
    queries = tuple(
        Lookup(rtype, name) for name in names if ip_literal(name) is None for rtype in (A, AAAA)
    )
    answers: Answers = (yield queries) if queries else {}
    targets: list[Target] = []
    for chosen, host, hop_port in hops:
        name = normalize_name(host)
        literal = ip_literal(name)
        if literal is not None:
            addresses = [literal]
        else:
            addresses = [
                address
                for rtype in (A, AAAA)
                for address in _records(answers, Lookup(rtype, name), str)
                if ip_literal(address) is not None
            ]
        for address in addresses:
            target = Target(chosen, name, hop_port, cast(str, ip_literal(address)))
            if target not in targets:
                targets.append(target)
    return targets


_R = TypeVar("_R", Naptr, Srv, str)


def _records(answers: Answers, lookup: Lookup, kind: type[_R]) -> list[_R]:
    return [r for r in answers.get(lookup, ()) if isinstance(r, kind)]


def drive(steps: Procedure, answer: Callable[[Lookup], Sequence[Record]]) -> list[Target]:
    """Run a procedure synchronously, answering each lookup with ``answer``."""
    try:
        batch = next(steps)
        while True:
            batch = steps.send({lookup: tuple(answer(lookup)) for lookup in batch})
    except StopIteration as stop:
        return cast(list[Target], stop.value)
