"""``telemancer run`` as a real process: TLS health endpoint, sd_notify, signals,
and production refusals before any listener opens. curl is the real HTTPS peer."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from appliance.config import load
from appliance.store import open_directory
from appliance.store.audit import Actor
from appliance.store.checkpoints import CheckpointKey
from tests.integration.conftest import DEADLINE_SECONDS, Running, SipInstance, telemancer


def _curl(url: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", *options, url],
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        check=False,
    )


def test_run_serves_healthz_over_tls_and_stops_cleanly(
    dev_instance: tuple[Path, int], child_env: dict[str, str], tmp_path: Path
) -> None:
    """The appliance announces READY over sd_notify once listening, serves /healthz to
    curl over TLS verified against the dev CA, and on SIGTERM says STOPPING and exits 0."""
    config, port = dev_instance
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.bind(str(notify_path))
        notify_socket.settimeout(DEADLINE_SECONDS)
        running = Running(config, {**child_env, "NOTIFY_SOCKET": str(notify_path)})
        try:
            event = running.wait_for("listening on")
            assert event["url"].startswith(f"https://127.0.0.1:{port}/ (admin")
            assert notify_socket.recv(256) == b"READY=1"
            ca = str(config.parent / "tls" / "ca.crt")
            result = _curl(f"https://127.0.0.1:{port}/healthz", "--cacert", ca)
            assert result.returncode == 0, result.stderr
            body = json.loads(result.stdout)
            assert body["status"] == "ok" and body["audit"]["ok"] is True
            assert body["audit"]["records"] >= 3
        finally:
            status = running.stop()
        assert notify_socket.recv(256) == b"STOPPING=1"
    assert status == 0


def test_tls_refuses_old_versions_and_weak_ciphers(
    dev_instance: tuple[Path, int], child_env: dict[str, str]
) -> None:
    """TLS 1.2 with ECDHE-AEAD works; RSA key exchange and CBC-SHA1 suites and TLS 1.1
    are refused."""
    config, port = dev_instance
    running = Running(config, child_env)
    try:
        running.wait_for("listening on")
        url = f"https://127.0.0.1:{port}/healthz"
        assert _curl(url, "--insecure", "--tlsv1.2", "--tls-max", "1.2").returncode == 0
        for weak in ("AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "AES128-GCM-SHA256"):
            refused = _curl(url, "--insecure", "--tls-max", "1.2", "--ciphers", weak)
            assert refused.returncode != 0, weak
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
        # The server's alert, not a client-side refusal, is what we expect.
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"),
        ):
            context.wrap_socket(raw).close()
    finally:
        assert running.stop() == 0


def test_production_refusals_happen_before_listening(
    dev_instance: tuple[Path, int], child_env: dict[str, str]
) -> None:
    """A production config with the dev JWT key on unencrypted storage exits 1 with both
    reasons, and never opens its port."""
    config, port = dev_instance
    text = config.read_text().replace('mode = "development"', 'mode = "production"')
    text = text.replace(
        'jwt_signing_key = "file:secrets/jwt-signing.key"', 'jwt_signing_key = "env:JWT_KEY"'
    )
    config.write_text(text)
    env = {**child_env, "JWT_KEY": "telemancer-development-jwt-signing-key-not-secret"}
    result = telemancer("--config", str(config), "run", env=env)
    assert result.returncode == 1
    assert "secrets.jwt_signing_key: is the development default" in result.stderr
    assert "data_dir:" in result.stderr and "not on an encrypted" in result.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_port_in_use_exits_1(dev_instance: tuple[Path, int], child_env: dict[str, str]) -> None:
    """If the admin port is taken the appliance says so and exits 1, not 0."""
    config, port = dev_instance
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        running = Running(config, child_env)
        running.wait_for("could not start listening")
        assert running.process.wait(timeout=DEADLINE_SECONDS) == 1


def test_sip_udp_port_in_use_exits_1(sip_instance: SipInstance, child_env: dict[str, str]) -> None:
    """If the plaintext SIP UDP port is taken the appliance names it and exits 1,
    rather than running without it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", sip_instance.plain_port))
        running = Running(sip_instance.config, child_env)
        event = running.wait_for("could not start listening")
        assert str(sip_instance.plain_port) in event["error"]
        assert running.process.wait(timeout=DEADLINE_SECONDS) == 1


def test_export_into_a_closed_pipe_is_quiet(dev_instance: tuple[Path, int]) -> None:
    """`telemancer audit export | head -1` stops without a traceback when head exits."""
    config, _ = dev_instance
    loaded = load(config, {})
    store = open_directory(
        loaded.database_path,
        CheckpointKey.from_pem(loaded.secrets.audit_signing_key.value),
        1000,
        time.time,
    )
    for i in range(3000):
        store.record(Actor("unix:test", "console"), "test.event", f"thing:{i}")
    store.db.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--config", str(config), "audit", "export"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"{")
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=DEADLINE_SECONDS) == 1
    assert b"Traceback" not in stderr
