"""Framing SIP on a byte stream (TLS, TCP): RFC 3261 §18.3 and RFC 5626 §3.5.1.

Messages are delimited by the blank line and Content-Length, which is
mandatory on streams. Reads may split a message anywhere and one read may
carry several (pipelining). A CRLFCRLF between messages is a keepalive ping,
answered with a CRLF pong; a lone CRLF is a pong and is ignored.

Framing errors (no or bad Content-Length, oversize sections) cannot be
recovered from, since the next message's start is unknown: they raise
:class:`FramingError`, and the transport answers if it can and closes.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.sip import limits
from appliance.sip.errors import SipError, bad_request, too_large
from appliance.sip.message import Message, content_length, parse_head

PING = b"\r\n\r\n"
PONG = b"\r\n"


@dataclass(frozen=True)
class MessageReceived:
    """A complete message (it may still carry a defect for the core to answer)."""

    message: Message


@dataclass(frozen=True)
class KeepAlivePing:
    """A CRLFCRLF ping: answer with :data:`PONG`."""


Event = MessageReceived | KeepAlivePing


class FramingError(Exception):
    """The stream cannot continue. ``message`` is the head, if one was read, to answer."""

    def __init__(self, error: SipError, message: Message | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.message = message


class StreamFramer:
    """Feed bytes with :meth:`receive_data`; get complete messages and pings back."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: Message | None = None
        self._total = 0

    def receive_data(self, data: bytes) -> list[Event]:
        """Consume ``data``; return the events it completes, in order."""
        self._buffer += data
        events: list[Event] = []
        while True:
            event = self._next_event()
            if event is None:
                return events
            events.append(event)

    def _next_event(self) -> Event | None:
        buffer = self._buffer
        if self._pending is None:
            while buffer[:2] == b"\r\n":
                if buffer[:4] == PING:
                    del buffer[:4]
                    return KeepAlivePing()
                if len(buffer) < 4 and PING.startswith(bytes(buffer)):
                    return None
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > limits.MAX_HEADER_SECTION_BYTES:
                    raise FramingError(too_large("header section"), None)
                return None
            self._pending = self._read_head(end)
        message = self._pending
        if len(buffer) < self._total:
            return None
        message.data = bytes(buffer[: self._total])
        message.body_end = self._total
        del buffer[: self._total]
        self._pending = None
        return MessageReceived(message)

    def _read_head(self, end: int) -> Message:
        data = bytes(self._buffer[: end + 4])
        try:
            message = parse_head(data, data[:end].decode("latin-1"), end + 4)
        except SipError as error:
            raise FramingError(error, None) from None
        length = content_length(message)
        if length is None:
            reason = message.defect or bad_request("Content-Length is required on streams")
            raise FramingError(reason, message)
        self._total = end + 4 + length
        return message
