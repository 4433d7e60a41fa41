"""The SIP edge over real sockets against ``telemancer run``: TLS with SHA-256
Digest (our test phone; Debian's peers speak only MD5), keepalives,
registrations that survive a restart, and plaintext only from internal subnets."""

from __future__ import annotations

import datetime
import socket
import sqlite3
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.sip import digest
from appliance.testing.sipclient import SipTestClient
from appliance.testing.sipsocket import DatagramPhone, StreamPhone
from tests.integration.conftest import Running, SipInstance


def _register(phone: StreamPhone | DatagramPhone, client: SipTestClient, algorithm: str) -> int:
    phone.send(client.register())
    challenge = phone.receive()
    assert challenge.status == 401
    phone.send(client.register(authorization=client.authorization(challenge, algorithm=algorithm)))
    return phone.receive().status


def _registrations(config: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(config.parent / "telemancer.sqlite3")
    try:
        return conn.execute("SELECT contact, transport FROM registrations").fetchall()
    finally:
        conn.close()


def test_tls_register_with_sha256_survives_restart(
    sip_instance: SipInstance, child_env: dict[str, str]
) -> None:
    """A phone registers over TLS (verified against the dev CA) with SHA-256 Digest,
    answers a keepalive ping, re-registers, and its binding is stored and still there
    after the appliance restarts."""
    running = Running(sip_instance.config, child_env)
    try:
        running.wait_for("listening on")
        phone = StreamPhone("127.0.0.1", sip_instance.tls_port, ca=sip_instance.ca)
        client = SipTestClient(
            sip_instance.extension,
            sip_instance.domain,
            sip_instance.password,
            transport="TLS",
            local=phone.local,
        )
        assert _register(phone, client, digest.SHA256) == 200
        phone.send(b"\r\n\r\n")
        assert phone.receive_raw(2) == b"\r\n"
        assert _register(phone, client, digest.SHA256) == 200
        phone.close()
    finally:
        assert running.stop() == 0
    (stored,) = _registrations(sip_instance.config)
    assert stored[1] == "tls"
    again = Running(sip_instance.config, child_env)
    try:
        again.wait_for("listening on")
    finally:
        assert again.stop() == 0
    assert _registrations(sip_instance.config) == [stored]


def test_plaintext_udp_only_from_internal_subnets(
    sip_instance: SipInstance, child_env: dict[str, str]
) -> None:
    """UDP from 127.0.0.1 (internal) registers with MD5; the same request from
    127.0.0.5 (outside internal_subnets) gets no answer at all."""
    running = Running(sip_instance.config, child_env)
    try:
        running.wait_for("listening on")
        inside = DatagramPhone("127.0.0.1", sip_instance.plain_port, source="127.0.0.1")
        client = SipTestClient(
            sip_instance.extension, sip_instance.domain, sip_instance.password, local=inside.local
        )
        assert _register(inside, client, digest.MD5) == 200
        outside = DatagramPhone("127.0.0.1", sip_instance.plain_port, source="127.0.0.5")
        outsider = SipTestClient(
            sip_instance.extension, sip_instance.domain, sip_instance.password, local=outside.local
        )
        outside.send(outsider.register())
        with pytest.raises(socket.timeout):
            outside.receive(timeout=1.0)
        inside.close()
        outside.close()
    finally:
        assert running.stop() == 0


def _client_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA client certificate and key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trunk.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "client.crt", tmp_path / "client.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_resumes_sessions_and_records_client_certificates(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """The SIP TLS listener serves an ECDSA certificate, resumes a TLS 1.2 session
    on reconnect, and logs the fingerprint of a client certificate when one is shown
    (without requiring one)."""
    running = Running(sip_instance.config, child_env)
    try:
        running.wait_for("listening on")
        context = ssl.create_default_context(cafile=str(sip_instance.ca))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        address = ("127.0.0.1", sip_instance.tls_port)
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as first,
        ):
            session = first.session
            cipher = first.cipher()
            assert cipher is not None and "ECDSA" in cipher[0]
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost", session=session) as second,
        ):
            assert second.session_reused
        cert, key = _client_certificate(tmp_path)
        context.load_cert_chain(str(cert), str(key))
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as third,
        ):
            third.sendall(b"\r\n\r\n")
            assert third.recv(2) == b"\r\n"
        event = running.wait_for("client certificate on")
        assert event["subject"] == "trunk.example" and len(event["fingerprint"]) == 64
    finally:
        assert running.stop() == 0
