"""RFC 3263 server location on the reactor: :mod:`appliance.sip.locate` driven
by ``twisted.names`` lookups, with a TTL-honouring cache. An adapter module:
it touches Twisted so the locate core does not.

Nothing here blocks: every lookup is a Deferred from the resolver, the
lookups of one round (the SRV queries, the A/AAAA queries of all SRV
targets) go out together, and each is bounded by ``timeout`` on the injected
clock. A lookup that times out or fails for a network reason counts as "no
records" for this locate and is not cached; an answer that arrives late is
still cached for the next one. Answers are cached for their smallest record
TTL (at most :data:`MAX_TTL`); empty answers and DNS errors (NXDOMAIN,
SERVFAIL, REFUSED) for :data:`NEGATIVE_TTL`; the cache keeps at most
``max_entries`` lookups, dropping the least recently used. Concurrent
locates asking the same question share one query.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IResolver
from twisted.logger import Logger
from twisted.names import client, dns, error
from twisted.python.failure import Failure

from appliance.reactor import IApplianceReactor
from appliance.sip import locate as rfc3263
from appliance.sip.locate import Lookup, Record, Target

#: Longest a positive answer is kept, whatever TTL it carries (seconds).
MAX_TTL = 3600.0
#: How long an empty answer or a DNS error is kept (seconds).
NEGATIVE_TTL = 30.0
#: Most lookups kept in the cache.
MAX_ENTRIES = 1024
#: Longest one lookup may take before it counts as unanswered (seconds).
LOOKUP_TIMEOUT = 5.0
#: The resolver's own retransmission schedule (seconds per try).
RESOLVER_RETRIES = (1, 3)

_RECORD_TYPES = {
    rfc3263.NAPTR: dns.NAPTR,
    rfc3263.SRV: dns.SRV,
    rfc3263.A: dns.A,
    rfc3263.AAAA: dns.AAAA,
}


class DnsLocator:
    """Locates SIP servers (RFC 3263) through an ``IResolver``, with a cache."""

    log = Logger()

    def __init__(
        self,
        resolver: IResolver,
        clock: IReactorTime,
        *,
        timeout: float = LOOKUP_TIMEOUT,
        max_entries: int = MAX_ENTRIES,
        negative_ttl: float = NEGATIVE_TTL,
        max_ttl: float = MAX_TTL,
        choose: rfc3263.Choose | None = None,
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._timeout = timeout
        self._max_entries = max_entries
        self._negative_ttl = negative_ttl
        self._max_ttl = max_ttl
        self._choose = choose
        self._cache: OrderedDict[Lookup, tuple[tuple[Record, ...], float]] = OrderedDict()
        self._inflight: dict[Lookup, list[Deferred[tuple[Record, ...]]]] = {}

    def locate(
        self,
        uri_host: str,
        port: int | None = None,
        transport: str | None = None,
        *,
        secure: bool = False,
        supported: Collection[str] = rfc3263.TRANSPORTS,
    ) -> Deferred[list[Target]]:
        """The ordered targets for a URI's host, port and transport.

        Fires with an empty list when nothing usable was found (answer 503);
        never fails for DNS reasons. See :func:`appliance.sip.locate.procedure`
        for the arguments.
        """
        options: dict[str, Any] = {"secure": secure, "supported": supported}
        if self._choose is not None:
            options["choose"] = self._choose
        steps = rfc3263.procedure(uri_host, port, transport, **options)
        result: Deferred[list[Target]] = Deferred()
        self._advance(steps, None, result)
        return result

    def _advance(
        self,
        steps: rfc3263.Procedure,
        answers: rfc3263.Answers | None,
        result: Deferred[list[Target]],
    ) -> None:
        try:
            batch = next(steps) if answers is None else steps.send(answers)
        except StopIteration as stop:
            result.callback(cast(list[Target], stop.value))
            return
        except Exception:
            result.errback(Failure())
            return

        def answered(records: list[tuple[Record, ...]]) -> None:
            self._advance(steps, dict(zip(batch, records, strict=True)), result)

        gathered = gatherResults([self.lookup(query) for query in batch], consumeErrors=True)
        gathered.addCallbacks(answered, result.errback)

    def lookup(self, query: Lookup) -> Deferred[tuple[Record, ...]]:
        """The records answering one question, from the cache or the resolver.

        Never fails: errors and timeouts give an empty tuple.
        """
        key = Lookup(query.rtype.upper(), rfc3263.normalize_name(query.name))
        entry = self._cache.get(key)
        if entry is not None:
            records, expires = entry
            if expires > self._clock.seconds():
                self._cache.move_to_end(key)
                return succeed(records)
            del self._cache[key]
        waiter: Deferred[tuple[Record, ...]] = Deferred()
        waiters = self._inflight.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._inflight[key] = [waiter]
        self._ask(key)
        return waiter

    def cached(self, query: Lookup) -> tuple[Record, ...] | None:
        """What the cache holds for ``query`` right now (None if nothing fresh)."""
        entry = self._cache.get(Lookup(query.rtype.upper(), rfc3263.normalize_name(query.name)))
        if entry is None or entry[1] <= self._clock.seconds():
            return None
        return entry[0]

    def _ask(self, key: Lookup) -> None:
        resolver = self._resolver
        method = {
            rfc3263.NAPTR: resolver.lookupNamingAuthorityPointer,
            rfc3263.SRV: resolver.lookupService,
            rfc3263.A: resolver.lookupAddress,
            rfc3263.AAAA: resolver.lookupIPV6Address,
        }[key.rtype]
        timer = self._clock.callLater(self._timeout, self._timed_out, key)
        query = maybeDeferred(method, key.name, RESOLVER_RETRIES)
        query.addCallback(_records_of, key.rtype)
        query.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(key, timer),
            errbackArgs=(key, timer),
        )

    def _answered(
        self, answer: tuple[tuple[Record, ...], float], key: Lookup, timer: IDelayedCall
    ) -> None:
        if timer.active():
            timer.cancel()
        records, ttl = answer
        self._store(key, records, min(ttl, self._max_ttl) if records else self._negative_ttl)
        self._release(key, records)

    def _failed(self, failure: Failure, key: Lookup, timer: IDelayedCall) -> None:
        if timer.active():
            timer.cancel()
        if failure.check(error.DomainError, error.AuthoritativeDomainError):
            self.log.debug(
                "DNS {rtype} {name}: {error}",
                rtype=key.rtype,
                name=key.name,
                error=type(failure.value).__name__,
            )
            self._store(key, (), self._negative_ttl)
        elif failure.check(error.DNSQueryTimeoutError, TimeoutError):
            self.log.warn("DNS {rtype} {name}: resolver timed out", rtype=key.rtype, name=key.name)
        else:
            self.log.failure("DNS {rtype} {name} failed", failure, rtype=key.rtype, name=key.name)
        self._release(key, ())

    def _timed_out(self, key: Lookup) -> None:
        self.log.warn(
            "DNS {rtype} {name}: no answer within {timeout}s",
            rtype=key.rtype,
            name=key.name,
            timeout=self._timeout,
        )
        self._release(key, ())

    def _release(self, key: Lookup, records: tuple[Record, ...]) -> None:
        for waiter in self._inflight.pop(key, ()):
            waiter.callback(records)

    def _store(self, key: Lookup, records: tuple[Record, ...], ttl: float) -> None:
        if ttl <= 0 or self._max_entries <= 0:
            return
        self._cache[key] = (records, self._clock.seconds() + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)


def _records_of(result: tuple[Any, Any, Any], rtype: str) -> tuple[tuple[Record, ...], float]:
    """The answer section's records of the asked type, and their smallest TTL."""
    wanted = _RECORD_TYPES[rtype]
    records: list[Record] = []
    ttl = float("inf")
    for header in result[0]:
        if header.type != wanted:
            continue
        records.append(_record(rtype, header.payload))
        ttl = min(ttl, float(header.ttl))
    return tuple(records), ttl


def _record(rtype: str, payload: Any) -> Record:
    if rtype == rfc3263.NAPTR:
        return rfc3263.Naptr(
            int(payload.order),
            int(payload.preference),
            _text(payload.flags.string),
            _text(payload.service.string),
            _text(payload.replacement.name),
        )
    if rtype == rfc3263.SRV:
        return rfc3263.Srv(
            int(payload.priority),
            int(payload.weight),
            int(payload.port),
            _text(payload.target.name),
        )
    if rtype == rfc3263.A:
        return str(ipaddress.IPv4Address(payload.address))
    return str(ipaddress.IPv6Address(payload.address))


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def make_resolver(
    servers: Sequence[tuple[str, int]],
    reactor: IApplianceReactor,
    timeout: Sequence[int] = RESOLVER_RETRIES,
) -> IResolver:
    """A non-blocking resolver asking exactly ``servers`` (host, port), over UDP
    with TCP for truncated answers, retrying on the ``timeout`` schedule."""
    return cast(
        IResolver, client.Resolver(servers=list(servers), reactor=reactor, timeout=tuple(timeout))
    )


def make_system_resolver(reactor: IApplianceReactor) -> IResolver:
    """A non-blocking resolver using the machine's /etc/resolv.conf (re-read when it
    changes), for carriers named by host name. IP-literal trunks never use it."""
    return cast(
        IResolver,
        client.Resolver(resolv="/etc/resolv.conf", reactor=reactor, timeout=RESOLVER_RETRIES),
    )
