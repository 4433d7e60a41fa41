"""Blocking socket helpers that carry :mod:`appliance.testing.sipclient`
messages to a real appliance in integration tests (TLS, TCP or UDP)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from appliance.sip.framing import KeepAlivePing, MessageReceived, StreamFramer
from appliance.sip.message import Message, parse_datagram

TIMEOUT_SECONDS = 10.0


class StreamPhone:
    """A TLS (or plain TCP) connection to the appliance, reading whole messages."""

    def __init__(self, host: str, port: int, *, ca: Path | None, source: str = "127.0.0.1"):
        raw = socket.create_connection(
            (host, port), timeout=TIMEOUT_SECONDS, source_address=(source, 0)
        )
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            self.sock: socket.socket = context.wrap_socket(raw, server_hostname="localhost")
        else:
            self.sock = raw
        self.local = self.sock.getsockname()[:2]
        self._framer = StreamFramer()
        self._events: list[MessageReceived | KeepAlivePing] = []

    def send(self, data: bytes) -> None:
        """Write bytes."""
        self.sock.sendall(data)

    def _next(self) -> MessageReceived | KeepAlivePing:
        while not self._events:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the appliance closed the connection")
            self._events += self._framer.receive_data(data)
        return self._events.pop(0)

    def receive(self) -> Message:
        """The next message (keepalive pongs are not events; pings are skipped)."""
        event = self._next()
        while not isinstance(event, MessageReceived):
            event = self._next()
        return event.message

    def receive_raw(self, size: int) -> bytes:
        """Exactly ``size`` raw bytes (for keepalive pongs)."""
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


class DatagramPhone:
    """A UDP socket bound to ``source``, talking to the appliance."""

    def __init__(self, host: str, port: int, *, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(TIMEOUT_SECONDS)
        self.remote = (host, port)
        self.local = self.sock.getsockname()[:2]

    def send(self, data: bytes) -> None:
        """Send one datagram."""
        self.sock.sendto(data, self.remote)

    def receive(self, timeout: float = TIMEOUT_SECONDS) -> Message:
        """The next datagram, parsed; socket.timeout if none comes."""
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65536)
        return parse_datagram(data)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
