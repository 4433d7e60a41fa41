"""TLS figures of the appliance's SIP listener: memory per idle connection and
full handshakes per second.

A connection counts once the server has answered a CRLF keepalive ping over
it (RFC 5626 §4.4.1): by then the server has finished its side of the
handshake and built the connection's protocol, so nothing is left half-done
when memory is read or a handshake is counted.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from procstat import cpu_seconds, rss_kib

PING, PONG = b"\r\n\r\n", b"\r\n"
TIMEOUT_SECONDS = 10.0
#: Connections opened and closed before measuring, so one-time allocations are excluded.
WARM_UP_CONNECTIONS = 50
SETTLE_SECONDS = 1.0


def client_context(ca: Path, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A verifying client context for the dev CA, optionally pinned to one TLS version."""
    context = ssl.create_default_context(cafile=str(ca))
    if version is not None:
        context.minimum_version = version
        context.maximum_version = version
    return context


def connect(context: ssl.SSLContext, port: int) -> ssl.SSLSocket:
    """A fresh TLS connection (no session reuse) that has answered a keepalive ping."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS)
    try:
        sock = context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
    try:
        sock.sendall(PING)
        answer = b""
        while len(answer) < len(PONG):
            chunk = sock.recv(len(PONG) - len(answer))
            if not chunk:
                raise ConnectionError("the appliance closed a TLS connection")
            answer += chunk
        if answer != PONG:
            raise ConnectionError(f"unexpected keepalive answer {answer!r}")
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class IdleMemory:
    """RSS before and after opening ``connections`` idle TLS connections."""

    connections: int
    rss_before_kib: int
    rss_after_kib: int

    @property
    def per_connection_kib(self) -> float:
        """RSS growth divided by the number of connections."""
        return (self.rss_after_kib - self.rss_before_kib) / self.connections


def idle_memory(pid: int, port: int, ca: Path, connections: int) -> IdleMemory:
    """Open ``connections`` idle TLS connections and read the server's RSS growth."""
    context = client_context(ca)
    for _ in range(WARM_UP_CONNECTIONS):
        connect(context, port).close()
    time.sleep(SETTLE_SECONDS)
    before = rss_kib(pid)
    opened: list[ssl.SSLSocket] = []
    try:
        for _ in range(connections):
            opened.append(connect(context, port))
        time.sleep(SETTLE_SECONDS)
        after = rss_kib(pid)
    finally:
        for sock in opened:
            sock.close()
    return IdleMemory(connections, before, after)


@dataclass(frozen=True)
class Handshakes:
    """Full handshakes completed in a timed loop, and the server CPU they took."""

    version: str
    count: int
    wall_seconds: float
    server_cpu_seconds: float

    @property
    def per_second(self) -> float:
        """Handshakes per wall-clock second."""
        return self.count / self.wall_seconds

    @property
    def per_cpu_second(self) -> float:
        """Handshakes per CPU-second of the server."""
        return self.count / self.server_cpu_seconds if self.server_cpu_seconds > 0 else 0.0


def handshake_rate(
    pid: int, port: int, ca: Path, version: ssl.TLSVersion, seconds: float, clients: int
) -> Handshakes:
    """Fresh connections (full handshakes, no resumption) from ``clients`` threads for
    ``seconds``; each is closed once it has answered a ping."""
    context = client_context(ca, version)
    counts = [0] * clients
    failures: list[BaseException] = []
    stop_at = time.monotonic() + seconds

    def loop(index: int) -> None:
        try:
            while time.monotonic() < stop_at:
                connect(context, port).close()
                counts[index] += 1
        except (OSError, ConnectionError) as error:
            failures.append(error)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu_before
    if failures:
        raise ConnectionError(f"TLS handshake loop failed: {failures[0]!r}")
    return Handshakes(version.name, sum(counts), wall, cpu)
