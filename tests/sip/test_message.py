"""The lazy parser and byte-splicing rewrites."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.sip import limits
from appliance.sip.errors import SipError
from appliance.sip.grammar import parse_name_addr, parse_sip_uri, parse_via, split_commas
from appliance.sip.message import Rewrite, parse_datagram
from appliance.sip.validate import check_response
from tests.sip.messages import INVITE


def test_fields_are_found_by_canonical_name() -> None:
    """Compact forms, odd case and LWS before the colon all map to the long lower-case name."""
    data = (
        b"OPTIONS sip:acme.example SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"i: abc\r\nCALL-id : def\r\nf: <sip:a@b.example>;tag=1\r\nt: sip:b@b.example\r\n"
        b"cSeQ: 1 OPTIONS\r\nl: 0\r\n\r\n"
    )
    message = parse_datagram(data)
    assert [f.value for f in message.all("call-id")] == ["abc", "def"]
    assert message.first("via") == "SIP/2.0/UDP h;branch=z9hG4bK1"
    assert message.to.uri == "sip:b@b.example" and message.from_.tag == "1"
    assert message.body == b"" and message.wire == data


def test_folded_lines_are_unfolded_but_kept_byte_exact() -> None:
    """A folded value reads as one line, and the field's span covers every fold."""
    data = b"OPTIONS sip:x.example SIP/2.0\r\nSubject: one\r\n  two\r\n\tthree\r\nl: 0\r\n\r\n"
    message = parse_datagram(data)
    (subject,) = message.all("subject")
    assert subject.value == "one two three"
    assert message.raw(subject) == b"Subject: one\r\n  two\r\n\tthree\r\n"


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP a;branch=z9hG4bKa, SIP/2.0/TCP b:5070 ;branch=z9hG4bKb",
        "a,,b",
        ",a",
        "a,",
        " a , \tb ",
        "a>, b",
    ],
)
def test_a_list_without_quotes_or_brackets_splits_at_every_comma(value: str) -> None:
    """The quick split (no quote, no '<') agrees with the general one, which
    the same list followed by an angle-bracketed item takes."""
    general = split_commas(f"{value}, <sip:x@y>")
    assert general[-1] == "<sip:x@y>"
    assert split_commas(value) == general[:-1]


def test_comma_joined_values_split_outside_quotes_and_brackets() -> None:
    """Commas inside quotes or <> do not split a list header."""
    assert split_commas('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == [
        '"a, b" <sip:x@y;p=1,2>',
        "<sip:z@w>",
    ]
    message = parse_datagram(
        INVITE.replace(
            b"CSeq",
            b"Via: SIP/2.0/UDP a;branch=z9hG4bKa, SIP/2.0/TCP b:5070;branch=z9hG4bKb\r\nCSeq",
        )
    )
    assert [(v.transport, v.host, v.port) for v in message.vias] == [
        ("TLS", "192.0.2.10", 5062),
        ("UDP", "a", None),
        ("TCP", "b", 5070),
    ]


def test_request_fields() -> None:
    """Start line, CSeq, Call-ID, tags and body of a typical INVITE."""
    message = parse_datagram(INVITE)
    assert (message.method, message.uri, message.is_request) == (
        "INVITE",
        "sip:1002@acme.example",
        True,
    )
    assert (message.cseq.number, message.cseq.method) == (1, "INVITE")
    assert message.call_id == "call-1@phone"
    assert message.from_.display == '"Alice"' and message.to.tag is None
    assert message.body == b"v=0\r\ns=-\r\n"


def test_response_fields() -> None:
    """A status line gives status and reason; the message is not a request."""
    message = parse_datagram(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 0\r\n\r\n"
    )
    assert (message.status, message.reason, message.is_request) == (180, "Ringing", False)


def _ringing(vias: bytes) -> bytes:
    return (
        b"SIP/2.0 180 Ringing\r\n" + vias + b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )


def test_a_response_is_checked_on_its_top_via_only() -> None:
    """The top Via (ours, which the response is matched on) must parse; those
    below it are passed on as they came, whether comma-joined or not."""
    joined = parse_datagram(
        _ringing(b"Via: SIP/2.0/UDP us;branch=z9hG4bKus, SIP/2.0/UDP [bad\r\n")
    )
    check_response(joined)
    assert joined.top_via.branch == "z9hG4bKus"
    apart = parse_datagram(
        _ringing(b"Via: SIP/2.0/UDP us:5062;branch=z9hG4bKus\r\nVia: SIP/2.0/UDP [bad\r\n")
    )
    check_response(apart)
    assert (apart.top_via.host, apart.top_via.port) == ("us", 5062)
    for vias in (b"", b"Via: SIP/2.0/UDP [bad, SIP/2.0/UDP ok;branch=z9hG4bKok\r\n"):
        with pytest.raises(SipError):
            check_response(parse_datagram(_ringing(vias)))


@pytest.mark.parametrize(
    "uri",
    ["sip:alice@[2001:db8::1]:5061;transport=tls", "sips:acme.example", "sip:1001@10.0.0.1:5060"],
)
def test_sip_uris_parse(uri: str) -> None:
    """sip and sips URIs with IPv6, ports and params parse."""
    parsed = parse_sip_uri(uri)
    assert parsed.host in ("[2001:db8::1]", "acme.example", "10.0.0.1")


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host;;branch=1",
        "SIP/3.0/UDP host",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host name",
    ],
)
def test_malformed_vias_are_400(value: str) -> None:
    """Missing sent-by, empty params, wrong version, bad port and spaces are refused."""
    with pytest.raises(SipError) as refused:
        parse_via(value)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "value",
    ['"unterminated <sip:a@b>', "Two, Words <sip:a@b>", "< sip:a@b>", "sip:a@b?x=y", "<sip:a@b"],
)
def test_malformed_name_addrs_are_400(value: str) -> None:
    """Broken quotes, non-token names, spaces in <>, bare headers and open brackets fail."""
    with pytest.raises(SipError):
        parse_name_addr(value)


def test_oversize_header_line_is_513() -> None:
    """A header value longer than the line limit is a 513 defect."""
    long_value = b"x" * (limits.MAX_LINE_BYTES + 1)
    message = parse_datagram(INVITE.replace(b"Max-Forwards: 70", b"Subject: " + long_value))
    assert message.defect is not None and message.defect.status == 513


def test_too_many_headers_is_400() -> None:
    """More header fields than the limit is a 400 defect."""
    extra = b"".join(b"X-Pad-%d: 1\r\n" % i for i in range(limits.MAX_HEADERS))
    message = parse_datagram(
        INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + extra)
    )
    assert message.defect is not None and message.defect.status == 400


def test_oversize_body_is_513() -> None:
    """A Content-Length above the body limit is a 513 defect."""
    big = b"Content-Length: %d" % (limits.MAX_BODY_BYTES + 1)
    message = parse_datagram(INVITE.replace(b"Content-Length: 10", big))
    assert message.defect is not None and message.defect.status == 513


def test_rewrite_without_edits_is_identity() -> None:
    """An unedited rewrite gives back the received bytes exactly."""
    message = parse_datagram(INVITE)
    assert Rewrite(message).to_bytes() == INVITE


def test_rewrite_edits_only_what_it_touches() -> None:
    """Adding a Via, removing Max-Forwards' field and replacing the start line and body
    change those spans and nothing else."""
    message = parse_datagram(INVITE)
    (max_forwards,) = message.all("max-forwards")
    out = (
        Rewrite(message)
        .insert_first("Via", "SIP/2.0/TLS proxy.example;branch=z9hG4bKp")
        .replace(max_forwards, "69")
        .replace_start_line("INVITE sip:1002@192.0.2.20:5062 SIP/2.0")
        .set_body(b"v=0\r\n")
        .to_bytes()
    )
    again = parse_datagram(out)
    assert again.uri == "sip:1002@192.0.2.20:5062"
    assert [v.host for v in again.vias] == ["proxy.example", "192.0.2.10"]
    assert again.max_forwards == 69 and again.body == b"v=0\r\n"
    assert again.first("content-length") == "5"
    kept = [
        (f.name, f.value)
        for f in message.fields
        if f.name not in ("max-forwards", "content-length")
    ]
    assert [
        (f.name, f.value)
        for f in again.fields
        if f.name not in ("via", "max-forwards", "content-length")
    ] == [kv for kv in kept if kv[0] != "via"]


_HEADER_NAMES = st.sampled_from(["Subject", "X-Thing", "User-Agent", "s", "Accept", "Allow"])
_VALUES = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=","),
    min_size=1,
    max_size=30,
)


@given(
    extra=st.lists(st.tuples(_HEADER_NAMES, _VALUES, st.booleans()), max_size=8),
    body=st.binary(max_size=200),
    compact=st.booleans(),
)
def test_round_trip_never_changes_what_is_forwarded(
    extra: list[tuple[str, str, bool]], body: bytes, compact: bool
) -> None:
    """For any mix of extra headers (some folded), compact or long names, and any body:
    parsing and re-serializing gives the same bytes, and a proxy's edit (a new Via)
    leaves every other field and the body exactly as received."""
    lines = [
        b"MESSAGE sip:1002@acme.example SIP/2.0",
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx",
        (b"f" if compact else b"From") + b": <sip:1001@acme.example>;tag=t",
        (b"t" if compact else b"To") + b": <sip:1002@acme.example>",
        b"Call-ID: c@x",
        b"CSeq: 7 MESSAGE",
    ]
    for name, value, folded in extra:
        head, tail = value[: len(value) // 2], value[len(value) // 2 :]
        text = f"{name}: {head}\r\n {tail}" if folded and head and tail else f"{name}: {value}"
        lines.append(text.encode())
    lines.append(b"Content-Length: %d" % len(body))
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    message = parse_datagram(data)
    assert message.defect is None
    assert Rewrite(message).to_bytes() == data
    forwarded = Rewrite(message).insert_first("Via", "SIP/2.0/TLS p.example;branch=z9hG4bKp")
    again = parse_datagram(forwarded.to_bytes())
    assert again.body == body
    assert [(f.name, f.value) for f in again.fields][1:] == [
        (f.name, f.value) for f in message.fields
    ]
    assert [again.raw(f) for f in again.fields][1:] == [message.raw(f) for f in message.fields]
