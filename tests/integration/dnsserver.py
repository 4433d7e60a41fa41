"""An authoritative DNS server for tests, in a process of its own, so that
the appliance's resolver (``[sip] dns_servers``) asks it over UDP on
loopback exactly as it would ask a real one::

    python -m tests.integration.dnsserver ZONE.json

``ZONE.json`` is a list of records, each a list::

    ["A", "sbc.carrier.test", "127.0.0.3"]
    ["SRV", "_sips._tcp.carrier.test", priority, weight, port, "sbc.carrier.test"]
    ["NAPTR", "carrier.test", order, preference, "s", "SIPS+D2T", "_sips._tcp.carrier.test"]

A name with records answers the types it has and nothing for the others
(NODATA); any other name is NXDOMAIN. The server binds an ephemeral UDP port
on 127.0.0.1, prints it on a line of its own, and serves until it is killed.
:class:`Zone` is also used in-process by ``tests/sip/test_dns.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase

Record = Sequence[Any]
RECORD_TYPES = {"A": dns.A, "AAAA": dns.AAAA, "SRV": dns.SRV, "NAPTR": dns.NAPTR}


def _payload(record: Record) -> Any:
    kind, _, *fields = record
    if kind == "A":
        return dns.Record_A(fields[0])
    if kind == "AAAA":
        return dns.Record_AAAA(fields[0])
    if kind == "SRV":
        priority, weight, port, target = fields
        return dns.Record_SRV(priority, weight, port, target.encode())
    if kind == "NAPTR":
        order, preference, flags, service, replacement = fields
        return dns.Record_NAPTR(
            order, preference, flags.encode(), service.encode(), b"", replacement.encode()
        )
    raise ValueError(f"unknown record type {kind!r}")


class Zone(ResolverBase):
    """Answers from a fixed list of records; counts the questions it was asked."""

    def __init__(self, records: Sequence[Record]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.answers: dict[tuple[int, str], list[dns.RRHeader]] = {}
        for record in records:
            name = str(record[1]).lower().rstrip(".")
            payload = _payload(record)
            header = dns.RRHeader(name.encode(), payload.TYPE, dns.IN, 300, payload, auth=True)
            self.answers.setdefault((RECORD_TYPES[record[0]], name), []).append(header)
        self.names = {name for _, name in self.answers}
        self.queries = 0

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Any:
        self.queries += 1
        text = name.decode().lower().rstrip(".")
        if text not in self.names:
            return defer.fail(error.DomainError(text))
        return defer.succeed((self.answers.get((type, text), []), [], []))


def serve(reactor: Any, zone: Zone) -> Any:
    """Listen on an ephemeral UDP port of 127.0.0.1 for ``zone``; the port."""
    factory = server.DNSServerFactory(authorities=[zone])
    return reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")


def main(reactor: Any, path: str) -> defer.Deferred[None]:
    with open(path, encoding="utf-8") as file:
        zone = Zone(json.load(file))
    port = serve(reactor, zone)
    print(port.getHost().port, flush=True)
    return defer.Deferred()  # serve until killed


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
