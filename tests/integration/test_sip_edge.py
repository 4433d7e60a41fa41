"""The SIP edge over real sockets against ``telemancer run``: TLS with SHA-256
Digest (our test phone; Debian's peers speak only MD5), keepalives,
registrations that survive a restart, and plaintext only from internal subnets."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

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
