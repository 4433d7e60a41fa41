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
from pathlib import Path
from typing import Any

import pytest

DEADLINE_SECONDS = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

    def wait_for(self, log_format_prefix: str) -> dict[str, Any]:
        """Read log events until one's format starts with the prefix (or fail at the deadline)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if not ready:
                if self.process.poll() is not None:
                    break
                continue
            line = self.process.stdout.readline()
            if not line:
                break
            event: dict[str, Any] = json.loads(line)
            self.events.append(event)
            if str(event.get("log_format", "")).startswith(log_format_prefix):
                return event
        exited = self.process.poll() is not None and self.process.stderr is not None
        stderr = self.process.stderr.read() if exited and self.process.stderr else ""
        raise AssertionError(f"no {log_format_prefix!r} event; stderr: {stderr}")

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=DEADLINE_SECONDS)


@pytest.fixture
def dev_instance(tmp_path: Path) -> tuple[Path, int]:
    """An initialised dev instance listening on a free port: (config path, port)."""
    var = tmp_path / "var"
    result = telemancer("init", "--dev", str(var))
    assert result.returncode == 0, result.stderr
    port = free_port()
    config = var / "telemancer.toml"
    config.write_text(config.read_text().replace("127.0.0.1:8443", f"127.0.0.1:{port}"))
    return config, port


@pytest.fixture
def child_env() -> Iterator[dict[str, str]]:
    """The environment for a child process, without a stray NOTIFY_SOCKET."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    yield env
