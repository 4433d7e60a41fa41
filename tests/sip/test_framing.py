"""Stream framing: partial reads, pipelining, keepalives, oversize input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.sip import limits
from appliance.sip.framing import FramingError, KeepAlivePing, MessageReceived, StreamFramer
from tests.sip.messages import INVITE, register


def _messages(events: list[MessageReceived | KeepAlivePing]) -> list[bytes]:
    return [e.message.wire for e in events if isinstance(e, MessageReceived)]


def test_pipelined_messages_in_one_read() -> None:
    """Several messages in one read come out as several events, in order."""
    framer = StreamFramer()
    stream = INVITE + register() + INVITE
    assert _messages(framer.receive_data(stream)) == [INVITE, register(), INVITE]


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(INVITE) * 2 + 8), max_size=12))
def test_any_split_gives_the_same_messages(cuts: list[int]) -> None:
    """However the stream is cut into reads, the same messages and pings come out."""
    stream = INVITE + b"\r\n\r\n" + INVITE + b"\r\n\r\n"
    points = sorted({c for c in cuts if 0 < c < len(stream)})
    framer = StreamFramer()
    events = []
    for start, end in zip([0, *points], [*points, len(stream)], strict=True):
        events += framer.receive_data(stream[start:end])
    assert _messages(events) == [INVITE, INVITE]
    assert sum(isinstance(e, KeepAlivePing) for e in events) == 2
    assert [type(e).__name__ for e in events] == [
        "MessageReceived",
        "KeepAlivePing",
        "MessageReceived",
        "KeepAlivePing",
    ]


def test_keepalive_ping_between_messages_never_breaks_framing() -> None:
    """CRLFCRLF pings before, between and after messages are reported; a lone CRLF
    (a pong) is skipped."""
    framer = StreamFramer()
    events = framer.receive_data(b"\r\n\r\n" + INVITE + b"\r\n" + register() + b"\r\n\r\n")
    assert [type(e).__name__ for e in events] == [
        "KeepAlivePing",
        "MessageReceived",
        "MessageReceived",
        "KeepAlivePing",
    ]


def test_half_a_ping_waits_for_more() -> None:
    """A CRLF at the end of a read may be half a ping: nothing is decided yet."""
    framer = StreamFramer()
    assert framer.receive_data(b"\r\n") == []
    assert isinstance(framer.receive_data(b"\r\n")[0], KeepAlivePing)


def test_missing_content_length_closes_the_stream() -> None:
    """Content-Length is mandatory on streams; the error carries the head to answer."""
    framer = StreamFramer()
    with pytest.raises(FramingError) as failed:
        framer.receive_data(register().replace(b"Content-Length: 0\r\n", b""))
    assert failed.value.error.status == 400 and failed.value.message is not None
    assert failed.value.message.method == "REGISTER"


def test_oversize_header_section_closes_the_stream() -> None:
    """Headers that never end within the limit fail with 513, without buffering forever."""
    framer = StreamFramer()
    with pytest.raises(FramingError) as failed:
        framer.receive_data(
            b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * limits.MAX_HEADER_SECTION_BYTES
        )
    assert failed.value.error.status == 513


def test_oversize_body_closes_the_stream() -> None:
    """A Content-Length beyond the body limit fails with 513 before the body is read."""
    framer = StreamFramer()
    big = b"Content-Length: %d" % (limits.MAX_BODY_BYTES + 1)
    with pytest.raises(FramingError) as failed:
        framer.receive_data(INVITE.replace(b"Content-Length: 10", big))
    assert failed.value.error.status == 513


def test_defective_message_is_delivered_for_the_core_to_answer() -> None:
    """A bad Request-Line with a good Content-Length keeps framing; the defect travels."""
    framer = StreamFramer()
    bad = INVITE.replace(b"INVITE sip:1002@acme.example SIP/2.0", b"INVITE  sip:x SIP/2.0")
    (event,) = framer.receive_data(bad)
    assert isinstance(event, MessageReceived) and event.message.defect is not None
    assert _messages(framer.receive_data(INVITE)) == [INVITE]
