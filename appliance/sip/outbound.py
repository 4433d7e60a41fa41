"""Connections the appliance opens to carriers (trunks), on the reactor.

TLS toward a carrier is verified twice: OpenSSL checks the chain against the
trunk's CA bundle or the system roots, then :mod:`appliance.sip.tlsidentity`
checks the leaf the RFC 5922 way against the configured domain (SIP URI
before DNS name, no wildcards) and the optional pin. Nothing is written to
the connection until both have passed: the service queues what it has to
send and flushes it on :meth:`SipHandler.carrier_ready`.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple, cast

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IAddress, IOpenSSLClientConnectionCreator, IReactorTCP
from zope.interface import implementer

from appliance.sip.tlsidentity import check_identity, check_pin
from appliance.sip.transport import SipHandler, SipStreamFactory, SipStreamProtocol
from appliance.tls import CIPHERS

CONNECT_TIMEOUT_SECONDS = 10


class CarrierTarget(NamedTuple):
    """Where and how to reach one trunk's carrier."""

    connection: str
    address: str
    port: int
    transport: str
    tls_domain: str
    ca_bundle: str | None
    fingerprint: str | None


@implementer(IOpenSSLClientConnectionCreator)
class CarrierConnectionCreator:
    """TLS 1.2+ client connections that verify the chain and send SNI, leaving the
    name check to RFC 5922 (Twisted's own check would accept wildcards)."""

    def __init__(self, target: CarrierTarget) -> None:
        self._server_name = target.tls_domain
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_cipher_list(CIPHERS.encode())
        context.set_options(SSL.OP_NO_COMPRESSION)
        context.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _e, _d, ok: bool(ok))
        if target.ca_bundle:
            store = context.get_cert_store()
            assert store is not None
            for block in target.ca_bundle.split("-----END CERTIFICATE-----"):
                if "-----BEGIN CERTIFICATE-----" in block:
                    pem = (block + "-----END CERTIFICATE-----").strip().encode()
                    store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, pem))
        else:
            context.set_default_verify_paths()
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N802, N803
        """A connection in client mode, with SNI unless the name is an address."""
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        try:
            ipaddress.ip_address(self._server_name)
        except ValueError:
            connection.set_tlsext_host_name(self._server_name.encode("idna"))
        connection.set_connect_state()
        return connection


class CarrierProtocol(SipStreamProtocol):
    """A connection we opened to a carrier: ready only once it is verified."""

    factory: CarrierFactory

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        """Register; a plain TCP carrier (internal subnets only) is ready at once."""
        super().connectionMade()
        if self.factory.target.transport != "tls":
            self.factory.handler.carrier_ready(self)

    def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted's name)
        """Check the carrier's identity and pin before anything is sent."""
        target = self.factory.target
        handle = cast(Any, self.transport).getHandle()
        chain = handle.get_peer_cert_chain(as_cryptography=True) or []
        der = [certificate.public_bytes(Encoding.DER) for certificate in chain]
        result = check_identity(der, target.tls_domain)
        pinned = target.fingerprint is None or check_pin(der, target.fingerprint)
        if not result.ok or not pinned:
            reason = result.reason if not result.ok else "certificate does not match the pin"
            self.log.error(
                "carrier {domain} at {flow} failed verification: {reason}",
                domain=target.tls_domain,
                flow=self.flow.describe(),
                reason=reason,
            )
            self.factory.handler.count("carrier_identity_failed")
            self.abort()
            return
        self.factory.handler.carrier_ready(self)


class CarrierFactory(SipStreamFactory):
    """Builds the one protocol for one outbound connection attempt."""

    def __init__(self, handler: SipHandler, target: CarrierTarget, idle_timeout: int) -> None:
        super().__init__(
            handler, transport_name=target.transport, max_per_ip=1, idle_timeout=idle_timeout
        )
        self.target = target

    def buildProtocol(self, addr: IAddress | None) -> CarrierProtocol:  # type: ignore[override]  # noqa: N802
        """No source checks: we chose to connect."""
        return CarrierProtocol(
            self, (self.target.address, self.target.port), self.target.connection
        )

    def connection_closed(self, protocol: SipStreamProtocol) -> None:
        """Nothing to release: outbound connections are not counted per IP."""


def connect_carrier(
    reactor: IReactorTCP, handler: SipHandler, target: CarrierTarget, idle_timeout: int
) -> Deferred[CarrierProtocol]:
    """Open the connection; it becomes usable when the handler hears carrier_ready."""
    endpoint: Any = TCP4ClientEndpoint(
        reactor, target.address, target.port, timeout=CONNECT_TIMEOUT_SECONDS
    )
    if target.transport == "tls":
        endpoint = wrapClientTLS(CarrierConnectionCreator(target), endpoint)
    deferred: Deferred[CarrierProtocol] = endpoint.connect(
        CarrierFactory(handler, target, idle_timeout)
    )
    return deferred
