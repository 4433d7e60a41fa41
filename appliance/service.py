"""Building the appliance: config → store → apps → listeners.

``make_service`` is the only place that wires the object graph. Everything
that can fail for a reason the operator must fix (production refusals,
certificates, keys, migrations) happens here, before any listener opens,
because ``MultiService`` ignores the Deferreds its children return.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorFromThreads,
    IReactorSSL,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.web.server import Site
from zope.interface import Interface

from appliance import __version__, preflight, tls
from appliance.admin.health import HealthApp
from appliance.config import Config, ConfigError, ListenAddress
from appliance.store import open_directory
from appliance.store.audit import Actor, verify_database
from appliance.store.checkpoints import CheckpointKey, CheckpointKeyError
from appliance.store.thread import StoreThread

SYSTEM_ACTOR = Actor("system", "appliance")
log = Logger()


class IApplianceReactor(IReactorCore, IReactorTime, IReactorSSL, IReactorFromThreads, Interface):
    """The reactor features the appliance uses, named so tests can supply fakes."""


@dataclass(frozen=True)
class Prepared:
    """What a config yields once every file it names has been loaded and checked."""

    tls_options: ssl.CertificateOptions
    checkpoint_key: CheckpointKey


def prepare(config: Config, sysfs: Path = Path("/sys")) -> Prepared:
    """Run every start-up check and load keys, reporting all problems at once."""
    problems: list[tuple[str, str]] = []
    try:
        preflight.check(config, sysfs)
    except ConfigError as e:
        problems += e.problems
    tls_options = None
    try:
        tls_options = tls.server_options(config.tls)
    except ConfigError as e:
        problems += e.problems
    key = None
    try:
        key = CheckpointKey.from_pem(config.secrets.audit_signing_key.value)
    except CheckpointKeyError as e:
        problems.append(("secrets.audit_signing_key", str(e)))
    if problems or tls_options is None or key is None:
        raise ConfigError(problems)
    return Prepared(tls_options, key)


class TLSListener(Service):
    """Listens on one TLS address; ``listening`` fires with the port or the error."""

    def __init__(
        self,
        reactor: IReactorSSL,
        address: ListenAddress,
        options: ssl.CertificateOptions,
        site: Site,
    ) -> None:
        self._endpoint = SSL4ServerEndpoint(reactor, address.port, options, interface=address.host)
        self._site = site
        self.address = address
        self._port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        """Start listening; the outcome arrives on ``listening``."""
        super().startService()
        self._endpoint.listen(self._site).addCallback(self._listened).chainDeferred(self.listening)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self._port = port
        return port

    def stopService(self) -> Deferred[None] | None:  # noqa: N802 (Twisted's name)
        """Stop listening."""
        super().stopService()
        if self._port is None:
            return None
        port, self._port = self._port, None
        return port.stopListening()


class Appliance(MultiService):
    """The running appliance: the store thread plus every listener and timer."""

    def __init__(self, store: StoreThread, admin: TLSListener) -> None:
        super().__init__()
        self.store = store
        self.admin = admin

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        """Start the store thread first: listeners need it from their first request."""
        self.store.start()
        super().startService()

    def stopService(self) -> Deferred[None]:  # noqa: N802 (Twisted's name)
        """Stop listeners and timers, then drain and close the store."""
        stopped: Deferred[None] = super().stopService()

        def close_store(result: object) -> object:
            self.store.stop()
            return result

        return stopped.addBoth(close_store)

    def when_listening(self) -> Deferred[list[str]]:
        """Fires with the URLs served once every listener is open, or with the first error."""
        return gatherResults([self.admin.listening], consumeErrors=True).addCallback(
            lambda _ports: [f"https://{self.admin.address}/"]
        )


def make_service(
    config: Config, reactor: IApplianceReactor, *, sysfs: Path = Path("/sys")
) -> Appliance:
    """Build the appliance for ``config``; raise :class:`ConfigError` if it must not start."""
    prepared = prepare(config, sysfs)
    directory = open_directory(
        config.database_path,
        prepared.checkpoint_key,
        config.audit.checkpoint_every,
        clock=reactor.seconds,
    )
    verdict = verify_database(directory.db, prepared.checkpoint_key.public_key)
    if verdict.ok:
        log.info("audit chain verified: {records} records", records=verdict.records)
    else:
        log.critical(
            "audit chain broken at record {seq}: {reason}",
            seq=verdict.broken_seq,
            reason=verdict.reason,
        )
    directory.record(
        SYSTEM_ACTOR,
        "service.start",
        "appliance",
        details={"version": __version__, "mode": config.mode},
    )
    if config.production and config.allow_unencrypted_storage:
        log.warn("data_dir {path} may be on unencrypted storage", path=str(config.data_dir))
        directory.record(
            SYSTEM_ACTOR,
            "storage.unencrypted_allowed",
            "data_dir",
            details={"data_dir": str(config.data_dir), "level": "warning"},
        )
    store = StoreThread(reactor, directory)
    health = HealthApp(store, prepared.checkpoint_key.public_key)
    admin = TLSListener(
        reactor, config.admin.listen, prepared.tls_options, Site(health.app.resource())
    )
    appliance = Appliance(store, admin)
    admin.setServiceParent(appliance)
    checkpoints = TimerService(
        config.audit.checkpoint_interval_seconds,
        lambda: store.run(lambda d: d.checkpoint_audit()).addErrback(
            lambda f: log.failure("audit checkpoint failed", f)
        ),
    )
    checkpoints.clock = reactor
    checkpoints.setServiceParent(appliance)
    return appliance
