"""Helpers for tests that run the real ``telemancer`` process."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load
from appliance.store import open_directory
from appliance.store.audit import Actor
from appliance.store.checkpoints import CheckpointKey

DEADLINE_SECONDS = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_tcp_and_udp_port() -> int:
    """A port that is free for both TCP and UDP on every address right now, for a
    plaintext SIP listener (which binds both)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            try:
                udp.bind(("0.0.0.0", port))  # noqa: S104 (a probe, closed at once)
                tcp.bind(("0.0.0.0", port))  # noqa: S104
            except OSError:
                continue
        return port


def telemancer(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a separate process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", *argv],
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        check=False,
        **kwargs,
    )


class Running:
    """A ``telemancer run`` process whose JSON log lines can be awaited."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--config", str(config), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: list[dict[str, Any]] = []
        self._pending = b""

    def wait_for(self, log_format_prefix: str) -> dict[str, Any]:
        """Read log events until one's format starts with the prefix (or fail at the deadline).

        Reads the pipe's file descriptor directly: a buffered reader would hold
        lines that ``select`` can no longer see.
        """
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            while b"\n" in self._pending:
                line, _, self._pending = self._pending.partition(b"\n")
                event: dict[str, Any] = json.loads(line)
                self.events.append(event)
                if str(event.get("log_format", "")).startswith(log_format_prefix):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._pending += chunk
            elif self.process.poll() is not None:
                break
        exited = self.process.poll() is not None and self.process.stderr is not None
        stderr = self.process.stderr.read() if exited and self.process.stderr else ""
        formats = [e.get("log_format") for e in self.events][-8:]
        raise AssertionError(
            f"no {log_format_prefix!r} event; last events: {formats}; stderr: {stderr}"
        )

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=DEADLINE_SECONDS)

    def drain(self) -> list[dict[str, Any]]:
        """Every event the stopped process logged (read to the end of its output)."""
        assert self.process.poll() is not None, "stop the process first"
        if self.process.stdout is not None:
            while chunk := os.read(self.process.stdout.fileno(), 65536):
                self._pending += chunk
        lines, self._pending = self._pending.splitlines(), b""
        self.events += [json.loads(line) for line in lines if line.strip()]
        return self.events


@pytest.fixture
def dev_instance(tmp_path: Path) -> tuple[Path, int]:
    """An initialised dev instance listening on a free port: (config path, port)."""
    var = tmp_path / "var"
    result = telemancer("init", "--dev", str(var))
    assert result.returncode == 0, result.stderr
    port = free_port()
    config = var / "telemancer.toml"
    # Quoted, so that a port just written (say 50612) is never taken for 5061.
    text = config.read_text().replace('"127.0.0.1:8443"', f'"127.0.0.1:{port}"')
    text = text.replace('"127.0.0.1:5061"', f'"127.0.0.1:{free_port()}"')
    text = text.replace('"127.0.0.1:5060"', f'"127.0.0.1:{free_port()}"')
    config.write_text(text)
    return config, port


@pytest.fixture
def child_env() -> Iterator[dict[str, str]]:
    """The environment for a child process, without a stray NOTIFY_SOCKET."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    yield env


@dataclass(frozen=True)
class SipInstance:
    """A dev instance with one tenant and extension, and the SIP ports it will use."""

    config: Path
    tls_port: int
    plain_port: int
    ca: Path
    domain: str = "acme.example"
    extension: str = "1001"
    password: str = "phone-secret-1001"


@pytest.fixture
def sip_instance(tmp_path: Path) -> SipInstance:
    """A dev instance with plaintext SIP enabled for 127.0.0.1/32 only, a tenant
    acme.example and extension 1001 (added through the store, as the CLI does)."""
    var = tmp_path / "var"
    assert telemancer("init", "--dev", str(var)).returncode == 0
    config = var / "telemancer.toml"
    tls_port, plain_port = free_port(), free_tcp_and_udp_port()
    text = config.read_text().replace('"127.0.0.1:8443"', f'"127.0.0.1:{free_port()}"')
    text = text.replace('"127.0.0.1:5061"', f'"127.0.0.1:{tls_port}"')
    text = text.replace(
        'plaintext_listen = "127.0.0.1:5060"', f'plaintext_listen = "0.0.0.0:{plain_port}"'
    )
    text = text.replace("plaintext_enabled = false", "plaintext_enabled = true")
    text = text.replace(
        'internal_subnets = ["127.0.0.0/24"]', 'internal_subnets = ["127.0.0.1/32"]'
    )
    config.write_text(text)
    instance = SipInstance(config, tls_port, plain_port, var / "tls" / "ca.crt")
    loaded = load(config, {})
    key = CheckpointKey.from_pem(loaded.secrets.audit_signing_key.value)
    store = open_directory(loaded.database_path, key, 100, time.time)
    actor = Actor("unix:test", "console")
    tenant = store.add_tenant(
        actor, "Acme", instance.domain, max_extensions=10, max_concurrent_calls=5
    )
    store.scope(tenant.id).extensions().add(actor, instance.extension, instance.password)
    store.db.close()
    return instance
