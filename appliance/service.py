"""Building the appliance: config → store → apps → listeners.

``make_service`` is the only place that wires the object graph. Everything
that can fail for a reason the operator must fix (production refusals,
certificates, keys, migrations) happens here, before any listener opens,
because ``MultiService`` ignores the Deferreds its children return.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorSSL,
)
from twisted.logger import Logger
from twisted.web.server import Site

from appliance import __version__, preflight, tls
from appliance.admin.health import HealthApp
from appliance.config import Config, ConfigError, ListenAddress
from appliance.media.relay import PortPool, Relay
from appliance.media.udp import MediaSockets
from appliance.reactor import IApplianceReactor
from appliance.secrets import derive_key
from appliance.sip.blocklist import Blocklist
from appliance.sip.digest import DigestVerifier, NonceFactory
from appliance.sip.edge import SipEdge
from appliance.sip.proxy_address import ProxyAddress
from appliance.sip.registrar import Registrar
from appliance.sipservice import SipService
from appliance.store import open_directory
from appliance.store.audit import Actor, verify_database
from appliance.store.cdrs import list_live_calls, replace_live_calls
from appliance.store.checkpoints import CheckpointKey, CheckpointKeyError
from appliance.store.sipstate import data_version, load_bindings, load_blocks, load_directory
from appliance.store.tenants import Directory
from appliance.store.thread import StoreThread
from appliance.store.trunks import sealing_key

SYSTEM_ACTOR = Actor("system", "appliance")
log = Logger()


@dataclass(frozen=True)
class Prepared:
    """What a config yields once every file it names has been loaded and checked."""

    tls_options: ssl.CertificateOptions
    sip_tls_options: ssl.CertificateOptions
    checkpoint_key: CheckpointKey


def prepare(config: Config, sysfs: Path = Path("/sys")) -> Prepared:
    """Run every start-up check and load keys, reporting all problems at once."""
    problems: list[tuple[str, str]] = []
    try:
        preflight.check(config, sysfs)
    except ConfigError as e:
        problems += e.problems
    tls_options = sip_tls_options = None
    try:
        tls_options = tls.server_options(config.tls)
        sip_tls_options = tls.server_options(
            config.tls, session_tickets=True, ask_client_certificate=True
        )
    except ConfigError as e:
        problems += e.problems
    key = None
    try:
        key = CheckpointKey.from_pem(config.secrets.audit_signing_key.value)
    except CheckpointKeyError as e:
        problems.append(("secrets.audit_signing_key", str(e)))
    if problems or tls_options is None or sip_tls_options is None or key is None:
        raise ConfigError(problems)
    return Prepared(tls_options, sip_tls_options, key)


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

    def __init__(self, store: StoreThread, admin: TLSListener, sip: SipService) -> None:
        super().__init__()
        self.store = store
        self.admin = admin
        self.sip = sip

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
        admin = self.admin.listening.addCallback(
            lambda _: [f"https://{self.admin.address}/ (admin console and API; GET /healthz)"]
        )
        return gatherResults([admin, self.sip.listening], consumeErrors=True).addCallback(
            lambda lists: [url for urls in lists for url in urls]
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
    stale = list_live_calls(directory.db)
    if stale:
        # Calls that were up when the last process died: their legs are gone.
        log.warn("{count} calls were in progress when the service last stopped", count=len(stale))
    replace_live_calls(directory.db, [])
    store = StoreThread(reactor, directory)
    health = HealthApp(store, prepared.checkpoint_key.public_key)
    admin = TLSListener(
        reactor, config.admin.listen, prepared.tls_options, Site(health.app.resource())
    )
    sip = SipService(
        reactor,
        config.sip,
        sealing_key(config),
        _sip_edge(config, directory, reactor),
        store,
        prepared.sip_tls_options,
        data_version(directory.db),
    )
    appliance = Appliance(store, admin, sip)
    admin.setServiceParent(appliance)
    sip.setServiceParent(appliance)
    checkpoints = TimerService(
        config.audit.checkpoint_interval_seconds,
        lambda: store.run(lambda d: d.checkpoint_audit()).addErrback(
            lambda f: log.failure("audit checkpoint failed", f)
        ),
    )
    checkpoints.clock = reactor
    checkpoints.setServiceParent(appliance)
    return appliance


def _sip_edge(config: Config, directory: Directory, reactor: IApplianceReactor) -> SipEdge:
    """The SIP core, loaded with the stored directory, registrations and blocks,
    and the media relay its calls go through."""
    sip, now = config.sip, reactor.seconds()
    nonces = NonceFactory(
        derive_key(config.secrets.jwt_signing_key, "telemancer sip digest nonce"),
        sip.nonce_lifetime_seconds,
    )
    registrar = Registrar(
        min_expires=sip.min_expires,
        max_expires=sip.max_expires,
        default_expires=sip.max_expires,
        max_contacts=sip.max_contacts,
    )
    registrar.restore(load_bindings(directory.db, now))
    blocklist = Blocklist(
        limit=sip.failed_register_limit,
        block_seconds=sip.failed_register_block_seconds,
        allowlist=[str(network) for network in sip.block_allowlist],
    )
    for block in load_blocks(directory.db, now):
        blocklist.restore(block.ip, block.since, block.until, block.reason, now=now)
    verifier = DigestVerifier(nonces, algorithms=sip.digest_algorithms)
    media = config.media
    relay = Relay(PortPool(media.port_min, media.port_max), idle_seconds=media.idle_timeout)
    host = socket.gethostname()
    addresses = [ProxyAddress("tls", sip.advertised(sip.tls_listen, host), sip.tls_listen.port)]
    if sip.plaintext_enabled:
        plain = sip.advertised(sip.plaintext_listen, host)
        addresses += [ProxyAddress(t, plain, sip.plaintext_listen.port) for t in ("udp", "tcp")]
    return SipEdge(
        load_directory(directory.db, sealing_key(config)),
        verifier,
        registrar,
        blocklist,
        addresses,
        media=MediaSockets(reactor, relay, config.media.listen),
        media_address=config.media.advertised_address,
        max_call_seconds=sip.max_call_seconds,
    )
