"""``telemancer run``: the process around the service.

Owns the global reactor (nothing below the CLI imports it), logging, signals
and systemd notification. SIGTERM and SIGINT stop the reactor, which stops
the service cleanly: listeners close, the store thread drains and closes.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import TextIO, cast

from twisted.internet.defer import FirstError
from twisted.logger import Logger
from twisted.python.failure import Failure

from appliance.config import Config
from appliance.logs import start_logging
from appliance.reactor import IApplianceReactor
from appliance.sdnotify import notify
from appliance.service import make_service

log = Logger()


def run(config: Config, stdout: TextIO, environ: Mapping[str, str]) -> int:
    """Run until stopped; return the process exit status."""
    from twisted.internet import reactor as global_reactor

    reactor = cast(IApplianceReactor, global_reactor)
    service = make_service(config, reactor)
    start_logging(config.log, stdout)
    status = 0

    def listening(urls: list[str]) -> None:
        for url in urls:
            log.info("listening on {url}", url=url)
        notify("READY=1", environ)

    def failed(failure: Failure) -> None:
        nonlocal status
        status = 1
        first = failure.value
        if isinstance(first, FirstError):
            failure = first.subFailure
        log.critical(
            "could not start listening: {error}; stopping", error=failure.getErrorMessage()
        )
        reactor.stop()

    def stopping() -> object:
        notify("STOPPING=1", environ)
        log.info("stopping")
        return service.stopService()

    def start() -> None:
        service.startService()
        service.when_listening().addCallbacks(listening, failed)

    settle_garbage_collector()
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    reactor.run()
    return status


#: Allocations between young-generation collections, and how rarely the older
#: generations are visited (CPython's defaults are 700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 100)


def settle_garbage_collector() -> None:
    """Move what start-up built out of the collector's way, and collect less often.

    Every call keeps its transactions for 32 s (RFC 3261 Timer J/L), so a busy
    appliance holds a million or more live objects; bench/calls.py measured
    full collections of 0.7-0.9 s with CPython's defaults, long enough to drop
    UDP datagrams. Objects that exist at start are frozen (never scanned), and
    the older generations are collected far less often: what calls allocate is
    freed by reference counting, not by the collector.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
