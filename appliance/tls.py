"""Server TLS settings shared by every TLS listener.

TLS 1.2 minimum; ECDHE with AEAD ciphers only (no RSA key exchange, no CBC,
no SHA-1 MACs); compression off (Twisted's default). Loading happens before
any listener opens, and a bad file is a config problem with its key path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import ssl

from appliance.config import ConfigError, TLSConfig

#: TLS 1.2 suites; TLS 1.3 suites are all AEAD and OpenSSL picks them itself.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
)

_T = TypeVar("_T")


def server_options(
    tls: TLSConfig, *, session_tickets: bool = False, ask_client_certificate: bool = False
) -> ssl.CertificateOptions:
    """Build the server's :class:`CertificateOptions`, or raise :class:`ConfigError`.

    ``session_tickets`` enables resumption (the SIP listener, where phones
    reconnect often). ``ask_client_certificate`` requests a certificate without
    requiring or verifying one, so a peer's can be recorded.
    """
    problems: list[tuple[str, str]] = []
    certificate = _load(
        problems,
        "tls.certificate",
        lambda: x509.load_pem_x509_certificate(tls.certificate.read_bytes()),
    )
    key = _load(
        problems,
        "tls.private_key",
        lambda: serialization.load_pem_private_key(tls.private_key.value, password=None),
    )
    chain: list[x509.Certificate] = []
    if tls.chain is not None:
        chain_path = tls.chain
        chain = (
            _load(
                problems,
                "tls.chain",
                lambda: x509.load_pem_x509_certificates(chain_path.read_bytes()),
            )
            or []
        )
    if problems or certificate is None or key is None:
        raise ConfigError(problems)
    # Twisted annotates pyOpenSSL's X509/PKey, which pyOpenSSL has deprecated; it
    # passes these straight to pyOpenSSL, which takes cryptography objects.
    factory = _AskClientCertificate if ask_client_certificate else ssl.CertificateOptions
    options = factory(
        privateKey=cast(Any, key),
        certificate=cast(Any, certificate),
        extraCertChain=cast(Any, chain),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
        enableSessionTickets=session_tickets,
    )
    try:
        # Builds the context now, so a key that does not match fails before listening.
        options.getContext()
    except SSL.Error as e:
        raise ConfigError([("tls.private_key", f"does not match tls.certificate: {e}")]) from None
    return options


def _load(problems: list[tuple[str, str]], key: str, load: Callable[[], _T]) -> _T | None:
    try:
        return load()
    except OSError as e:
        problems.append((key, f"cannot read: {e.strerror}"))
    except (ValueError, TypeError) as e:
        problems.append((key, f"not a valid PEM file: {e}"))
    return None


class _AskClientCertificate(ssl.CertificateOptions):
    """Asks for a client certificate and accepts any (or none): phones
    authenticate with Digest; the certificate is only recorded."""

    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:  # noqa: N802, N803
        context = super()._makeContext(skipCiphers)
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, lambda *_: True)
        return context
