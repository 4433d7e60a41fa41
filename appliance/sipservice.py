"""The SIP service: runs the sans-I/O edge on the reactor.

It owns the listeners, one timer re-armed to the core's next deadline, and
the link to the store: registrations are written in batches (phones refresh
often), blocks and lifts are written and audited at once, and the directory
(tenants, extensions) and blocks are re-read when another process (the CLI,
the recovery console) changes the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import ssl
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from appliance.config import ListenAddress, SipConfig
from appliance.media.udp import MediaSockets
from appliance.reactor import IApplianceReactor
from appliance.sip.actions import (
    Action,
    BindingsChanged,
    BlockChanged,
    CallEnded,
    CloseConnections,
    LiveCall,
    QuotaRefused,
    Send,
    TrunkHealth,
)
from appliance.sip.blocklist import BlockLifted, BlockStarted
from appliance.sip.cdr import CallDetailRecord
from appliance.sip.dialplan import TrunkEntry
from appliance.sip.directory import SipDirectory
from appliance.sip.dns import DnsLocator, make_resolver, make_system_resolver
from appliance.sip.edge import SipEdge
from appliance.sip.locate import Target
from appliance.sip.message import Message
from appliance.sip.outbound import CarrierTarget, connect_carrier
from appliance.sip.proxy import CARRIER_PREFIX
from appliance.sip.registrar import Binding, Flow
from appliance.sip.transport import (
    SipDatagramPort,
    SipStreamFactory,
    SipStreamProtocol,
    in_networks,
)
from appliance.store.audit import Actor
from appliance.store.cdrs import (
    aggregate_closed_hours,
    write_cdrs,
    write_live_calls,
)
from appliance.store.sipstate import (
    StoredBlock,
    data_version,
    delete_block,
    load_blocks,
    load_directory,
    save_bindings,
    save_block,
)
from appliance.store.tenants import Directory
from appliance.store.thread import StoreRunner
from appliance.store.trunk_health import record_health

SYSTEM_ACTOR = Actor("system", "appliance")
#: How often registration changes are written, and the database polled.
FLUSH_SECONDS = 1.0
POLL_SECONDS = 2.0
#: How often the SIP core's timers are checked. A timer fires up to this late,
#: which SIP's (T1 = 500 ms and up) absorb; in exchange no datagram pays for
#: rescheduling a reactor timer, and timers due together fire in one batch.
TIMER_TICK_SECONDS = 0.02
#: How often call counters are reconciled and closed hours aggregated.
HOUSEKEEPING_SECONDS = 60.0
#: How often carriers are located again (answers are cached for their DNS TTL).
LOCATE_SECONDS = 30.0
#: How often each trunk's carrier is pinged with OPTIONS.
PING_SECONDS = 30.0
#: How often calls are checked for silent media (the idle time itself is config).
MEDIA_IDLE_CHECK_SECONDS = 5.0
#: At most one quota-refusal audit record per tenant in this many seconds.
REFUSAL_AUDIT_SECONDS = 60.0


class SipService(Service):
    """Listeners + edge + timers + persistence."""

    log = Logger()

    def __init__(
        self,
        reactor: IApplianceReactor,
        config: SipConfig,
        sealing_key: bytes,
        edge: SipEdge,
        store: StoreRunner,
        tls_options: ssl.CertificateOptions,
        known_data_version: int,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self._sealing_key = sealing_key
        self.edge = edge
        self.store = store
        self.tls_options = tls_options
        self.connections: dict[str, SipStreamProtocol] = {}
        self.counters: dict[str, int] = {}
        self._pending_saved: dict[tuple[int, str], Binding] = {}
        self._pending_removed: dict[tuple[int, str], Binding] = {}
        self._pending_cdrs: list[CallDetailRecord] = []
        self._pending_live: dict[tuple[int, str], LiveCall] = {}
        self._refusal_audit: dict[int, tuple[float, int]] = {}
        self._carrier_queue: dict[str, list[bytes]] = {}
        self._carrier_targets: dict[str, CarrierTarget] = {}
        self._pending_health: list[TrunkHealth] = []
        resolver = (
            make_resolver([(a.host, a.port) for a in config.dns_servers], reactor)
            if config.dns_servers
            else make_system_resolver(reactor)
        )
        self._locator = DnsLocator(resolver, reactor)
        self._data_version = known_data_version
        self._udp: SipDatagramPort | None = None
        self._ports: list[IListeningPort] = []
        self._loops: list[LoopingCall] = []
        self.listening: Deferred[list[str]] = Deferred()

    # -- SipHandler, called by the transports ------------------------------

    def is_blocked(self, ip: str) -> bool:
        """Whether to drop everything from ``ip``."""
        return self.edge.is_blocked(ip, self.reactor.seconds())

    def message_received(self, message: Message, flow: Flow) -> None:
        """Run a stream message through the edge."""
        self._perform(self.edge.message_received(message, flow, self.reactor.seconds()))

    def datagram_received(self, data: bytes, flow: Flow) -> None:
        """Run a datagram through the edge."""
        self._perform(self.edge.datagram_received(data, flow, self.reactor.seconds()))

    def connection_made(self, connection: SipStreamProtocol) -> None:
        """Track a stream so responses and later requests can use it."""
        self.connections[connection.flow.connection] = connection
        self.edge.connection_opened(connection.flow)

    def connection_certified(self, connection: SipStreamProtocol, fingerprint: str) -> None:
        """A TLS client presented a certificate: carriers are identified by it."""
        self.edge.connection_certified(connection.flow, fingerprint)

    def carrier_ready(self, connection: SipStreamProtocol) -> None:
        """An outbound carrier connection passed verification: send what waited."""
        self.connections[connection.flow.connection] = connection
        for data in self._carrier_queue.pop(connection.flow.connection, []):
            connection.send(data)

    def connection_lost(self, connection: SipStreamProtocol) -> None:
        """Forget a stream; calls with a leg on it end."""
        self.connections.pop(connection.flow.connection, None)
        # A carrier connection lost before carrier_ready (failed verification or
        # handshake): what it held is never sent, and the next send must reconnect.
        self._carrier_queue.pop(connection.flow.connection, None)
        self._perform(self.edge.connection_closed(connection.flow, self.reactor.seconds()))

    def count(self, name: str) -> None:
        """Bump a transport counter."""
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- carrying out the core's actions ----------------------------------

    def _perform(self, actions: Sequence[Action]) -> None:
        now = self.reactor.seconds()
        for action in actions:
            if isinstance(action, Send):
                self._send(action.flow, action.data)
            elif isinstance(action, CloseConnections):
                for connection in list(self.connections.values()):
                    if connection.flow.remote[0] == action.ip:
                        connection.abort()
            elif isinstance(action, BindingsChanged):
                self._queue_bindings(action, now)
            elif isinstance(action, BlockChanged):
                self._persist_block(action.event)
            elif isinstance(action, CallEnded):
                self._pending_cdrs.append(action.record)
            elif isinstance(action, LiveCall):
                self._pending_live[(action.tenant_id, action.call_id)] = action
            elif isinstance(action, QuotaRefused):
                self._audit_refusal(action, now)
            elif isinstance(action, TrunkHealth):
                self._pending_health.append(action)

    def _audit_refusal(self, refused: QuotaRefused, now: float) -> None:
        """Audit quota refusals, at most one record per tenant a minute (with the
        number of refusals it stands for), so a phone redialling at its quota
        cannot flood the audit log."""
        self.log.warn(
            "call {call_id} from {caller} refused: concurrent call quota of {limit} reached",
            call_id=refused.call_id,
            caller=refused.caller,
            limit=refused.limit,
        )
        last, suppressed = self._refusal_audit.get(refused.tenant_id, (float("-inf"), 0))
        if now - last < REFUSAL_AUDIT_SECONDS:
            self._refusal_audit[refused.tenant_id] = (last, suppressed + 1)
            return
        self._refusal_audit[refused.tenant_id] = (now, 0)
        details = {
            "caller": refused.caller,
            "callee": refused.callee,
            "limit": refused.limit,
            "refused_since_last_record": suppressed + 1,
        }
        self.store.run(
            lambda d: d.record(
                SYSTEM_ACTOR,
                "call.rejected_quota",
                f"call:{refused.call_id}",
                tenant_id=refused.tenant_id,
                details=details,
            )
        ).addErrback(lambda f: self.log.failure("could not audit a quota refusal", f))

    def _send(self, flow: Flow, data: bytes) -> None:
        if flow.transport == "udp":
            if self._udp is not None:
                self._udp.send(data, flow.remote)
            return
        connection = self.connections.get(flow.connection)
        if connection is not None:
            connection.send(data)
        elif flow.connection.startswith(CARRIER_PREFIX):
            self._send_to_carrier(flow, data)
        else:
            self.count("send_on_closed_flow")

    def _send_to_carrier(self, flow: Flow, data: bytes) -> None:
        """Queue for a carrier connection, opening it if need be; the queue is
        written once the carrier has been verified (:meth:`carrier_ready`)."""
        queue = self._carrier_queue.setdefault(flow.connection, [])
        queue.append(data)
        if len(queue) > 1:
            return  # already connecting
        target = self._carrier_targets.get(flow.connection)
        if target is None:
            self._carrier_failed(flow, "no longer located")
            return

        def failed(failure: Failure) -> None:
            self._carrier_failed(flow, failure.getErrorMessage())

        connect_carrier(self.reactor, self, target, self.config.idle_timeout_seconds).addErrback(
            failed
        )

    def _carrier_failed(self, flow: Flow, reason: str) -> None:
        self.log.error(
            "could not reach carrier at {flow}: {reason}", flow=flow.describe(), reason=reason
        )
        self._carrier_queue.pop(flow.connection, None)
        self._perform(self.edge.connection_closed(flow, self.reactor.seconds()))

    def locate_carriers(self) -> Deferred[None]:
        """Find where each trunk's carrier is (RFC 3263), for the proxy's next calls.
        UDP and TCP carriers must be inside the internal subnets."""
        waits = []
        for trunk in self.edge.directory.trunks():
            located = self._locator.locate(
                trunk.host, trunk.port, trunk.transport, secure=trunk.transport == "tls"
            )
            waits.append(located.addCallback(self._located, trunk))
        return gatherResults(waits, consumeErrors=True).addCallbacks(
            lambda _: None, lambda f: self.log.failure("could not locate carriers", f)
        )

    def ping_carriers(self) -> None:
        """OPTIONS to each trunk's first located carrier address."""
        now = self.reactor.seconds()
        for trunk in self.edge.directory.trunks():
            flows = self.edge.proxy.trunk_flows.get(trunk.id)
            if flows:
                self._perform(self.edge.proxy.ping(trunk, flows[0], now))

    def expire_media(self) -> None:
        """End answered calls whose media has been silent both ways for the idle time."""
        now = self.reactor.seconds()
        idle = self.edge.proxy.media.expire_idle(now)
        if idle:
            self._perform(self.edge.proxy.media_idle([i.call_id for i in idle], now))

    def _located(self, targets: list[Target], trunk: TrunkEntry) -> None:
        flows: list[Flow] = []
        for target in targets:
            if target.transport != "tls" and not in_networks(
                target.address, self.config.internal_subnets
            ):
                self.log.error(
                    "trunk {trunk}: refusing plaintext {transport} to {address} outside the"
                    " internal subnets",
                    trunk=trunk.name,
                    transport=target.transport,
                    address=target.address,
                )
                continue
            if target.transport == "udp":
                flows.append(Flow("udp", (target.address, target.port)))
                continue
            connection = f"{CARRIER_PREFIX}{trunk.id}-{target.address}-{target.port}"
            flows.append(Flow(target.transport, (target.address, target.port), connection))
            self._carrier_targets[connection] = CarrierTarget(
                connection,
                target.address,
                target.port,
                target.transport,
                trunk.tls_domain,
                trunk.ca_bundle,
                trunk.fingerprint,
            )
        if flows != self.edge.proxy.trunk_flows.get(trunk.id):
            self.log.info(
                "trunk {trunk} located: {servers}",
                trunk=trunk.name,
                servers=", ".join(flow.describe() for flow in flows) or "no usable server",
            )
        self.edge.proxy.trunk_flows[trunk.id] = flows

    def _queue_bindings(self, change: BindingsChanged, now: float) -> None:
        for binding in change.saved:
            key = (binding.extension_id, binding.contact)
            self._pending_removed.pop(key, None)
            self._pending_saved[key] = binding
            connection = self.connections.get(binding.flow.connection)
            if connection is not None:
                connection.keep_open_until(binding.expires_at, now)
        for binding in change.removed:
            key = (binding.extension_id, binding.contact)
            self._pending_saved.pop(key, None)
            self._pending_removed[key] = binding

    def _persist_block(self, event: BlockStarted | BlockLifted) -> None:
        now = self.reactor.seconds()
        if isinstance(event, BlockStarted):
            self.log.warn(
                "blocked {ip} after {failures} failed REGISTERs until {until}",
                ip=event.ip,
                failures=event.failures,
                until=event.until,
            )
            block = StoredBlock(event.ip, event.reason, event.since, event.until)

            def write(d: Directory) -> object:
                save_block(d.db, d.audit, SYSTEM_ACTOR, block, now)
                return None

        else:
            self.log.info("block on {ip} ended ({reason})", ip=event.ip, reason=str(event.reason))

            def write(d: Directory) -> object:
                return delete_block(d.db, d.audit, SYSTEM_ACTOR, event.ip, str(event.reason), now)

        self.store.run(write).addErrback(
            lambda f: self.log.failure("could not persist a block", f)
        )

    def tick(self) -> None:
        """Fire the SIP core's timers that are due (every TIMER_TICK_SECONDS)."""
        now = self.reactor.seconds()
        deadline = self.edge.next_timer()
        if deadline is not None and deadline <= now:
            self._perform(self.edge.handle_timer(now))

    # -- the store ----------------------------------------------------------

    def flush(self) -> Deferred[None]:
        """Write queued registration changes, call records and live calls."""
        saved = list(self._pending_saved.values())
        removed = list(self._pending_removed.values())
        records, live = self._pending_cdrs, list(self._pending_live.values())
        health, self._pending_health = self._pending_health, []
        self._pending_saved.clear()
        self._pending_removed.clear()
        self._pending_cdrs, self._pending_live = [], {}
        if not (saved or removed or records or live or health):
            return succeed(None)

        def write(d: Directory) -> None:
            if saved or removed:
                save_bindings(d.db, saved, removed)
            if records:
                write_cdrs(d.db, records)
            for sample in health:
                record_health(
                    d.db, sample.trunk_id, sample.at, sample.up, sample.status, sample.rtt
                )
            if live:
                write_live_calls(d.db, live)

        return self.store.run(write).addErrback(
            lambda f: self.log.failure("could not save registrations or call records", f)
        )

    def housekeeping(self) -> Deferred[None]:
        """Correct call-counter drift and aggregate the hours that have closed."""
        drift = self.edge.proxy.admission.reconcile(self.edge.proxy.calls.values())
        for tenant_id, (counted, actual) in drift.items():
            self.log.warn(
                "call counter drift for tenant {tenant_id}: counted {counted}, live {actual}",
                tenant_id=tenant_id,
                counted=counted,
                actual=actual,
            )
        now = self.reactor.seconds()
        return self.store.run(lambda d: aggregate_closed_hours(d.db, now)).addCallbacks(
            lambda _: None, lambda f: self.log.failure("could not aggregate call records", f)
        )

    def poll(self) -> Deferred[None]:
        """Reload the directory and blocks if another process changed the database."""

        started = self.reactor.seconds()

        def read(d: Directory) -> tuple[int, SipDirectory, list[StoredBlock]] | None:
            version = data_version(d.db)
            if version == self._data_version:
                return None
            return version, load_directory(d.db, self._sealing_key), load_blocks(d.db, started)

        def apply(result: tuple[int, SipDirectory, list[StoredBlock]] | None) -> None:
            if result is None:
                return
            version, directory, blocks = result
            self._data_version = version
            self.edge.directory = directory
            self._sync_blocks(blocks, started)

        return (
            self.store.run(read)
            .addCallback(apply)
            .addErrback(lambda f: self.log.failure("could not reload the SIP directory", f))
        )

    def _sync_blocks(self, stored: list[StoredBlock], read_at: float) -> None:
        """Lift blocks an operator deleted; blocks that began after the read are
        not in it yet and are left alone."""
        now = self.reactor.seconds()
        wanted = {entry.ip for entry in stored}
        for active in self.edge.blocklist.blocks(now):
            if active.ip not in wanted and active.since < read_at:
                self.edge.blocklist.lift(active.ip, now)
                self.log.info("block on {ip} lifted from the console", ip=active.ip)
        for entry in stored:
            self.edge.blocklist.restore(entry.ip, entry.since, entry.until, entry.reason, now=now)

    # -- lifecycle ----------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        """Open the listeners; ``listening`` fires with their URLs."""
        super().startService()
        config = self.config
        tls = SipStreamFactory(
            self,
            transport_name="tls",
            max_per_ip=config.max_connections_per_ip,
            idle_timeout=config.idle_timeout_seconds,
        )
        waits: list[Deferred[str]] = [
            self._listen(
                SSL4ServerEndpoint(
                    self.reactor,
                    config.tls_listen.port,
                    self.tls_options,
                    interface=config.tls_listen.host,
                ),
                tls,
                f"sips:{config.tls_listen} (TLS)",
            )
        ]
        if config.plaintext_enabled:
            tcp = SipStreamFactory(
                self,
                transport_name="tcp",
                max_per_ip=config.max_connections_per_ip,
                idle_timeout=config.idle_timeout_seconds,
                allowed=config.internal_subnets,
            )
            address = config.plaintext_listen
            waits.append(
                self._listen(
                    TCP4ServerEndpoint(self.reactor, address.port, interface=address.host),
                    tcp,
                    f"sip:{address} (TCP, internal subnets only)",
                )
            )
            waits.append(self._listen_udp(address))
        loops = (
            (TIMER_TICK_SECONDS, self.tick),
            (FLUSH_SECONDS, self.flush),
            (POLL_SECONDS, self.poll),
            (HOUSEKEEPING_SECONDS, self.housekeeping),
            (LOCATE_SECONDS, self.locate_carriers),
            (PING_SECONDS, self.ping_carriers),
            (MEDIA_IDLE_CHECK_SECONDS, self.expire_media),
        )
        for interval, call in loops:
            loop = LoopingCall(call)
            loop.clock = self.reactor
            loop.start(interval, now=call == self.locate_carriers)
            self._loops.append(loop)
        gatherResults(waits, consumeErrors=True).chainDeferred(self.listening)

    def _listen_udp(self, address: ListenAddress) -> Deferred[str]:
        """Bind the plaintext UDP port. A port that cannot be bound fails
        ``listening`` as a stream listener would, so the service stops and says
        why rather than running without it."""
        name = f"sip:{address} (UDP, internal subnets only)"
        try:
            self._udp = SipDatagramPort(
                self.reactor,
                self,
                self.config.internal_subnets,
                address.host,
                address.port,
                UDP_RECEIVE_BUFFER_BYTES,
            )
        except CannotListenError as error:
            return fail(error)
        self.log.info("SIP listening on {name}", name=name)
        return succeed(name)

    def _listen(self, endpoint: object, factory: SipStreamFactory, name: str) -> Deferred[str]:
        def listened(port: IListeningPort) -> str:
            self._ports.append(port)
            self.log.info("SIP listening on {name}", name=name)
            return name

        return endpoint.listen(factory).addCallback(listened)  # type: ignore[attr-defined, no-any-return]

    def stopService(self) -> Deferred[None]:  # noqa: N802 (Twisted's name)
        """Close listeners and connections, then write what is queued."""
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        for connection in list(self.connections.values()):
            connection.abort()
        media = self.edge.proxy.media
        if isinstance(media, MediaSockets):
            media.stop()  # every relay port closed, calls or not
        if self._udp is not None:
            self._udp.stopListening()
        stops: list[Deferred[Any]] = []
        for port in self._ports:
            result = port.stopListening()
            if isinstance(result, Deferred):
                stops.append(result)
        return gatherResults([*stops, self.flush()]).addCallback(lambda _: None)


#: The UDP receive buffer asked for: room for a burst of several thousand SIP
#: datagrams while the reactor is busy. The kernel caps it at net.core.rmem_max.
UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
