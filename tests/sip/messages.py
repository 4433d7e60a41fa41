"""Sample SIP messages shared by the SIP tests."""

from __future__ import annotations


def register(
    *,
    user: str = "1001",
    domain: str = "acme.example",
    call_id: str = "reg-1@phone",
    cseq: int = 1,
    contact: str = "<sip:1001@192.0.2.10:5062;transport=tls>",
    expires: int | None = 600,
    via: str = "SIP/2.0/TLS 192.0.2.10:5062;branch=z9hG4bK-reg-1;rport",
    extra: tuple[str, ...] = (),
) -> bytes:
    """A REGISTER as a phone sends it."""
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag=from-{cseq}",
        f"To: <sip:{user}@{domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: {contact}",
        *([f"Expires: {expires}"] if expires is not None else []),
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


INVITE = (
    b"INVITE sip:1002@acme.example SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5062;branch=z9hG4bK-inv-1\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:1001@acme.example>;tag=a1\r\n'
    b"To: <sip:1002@acme.example>\r\n"
    b"Call-ID: call-1@phone\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:1001@192.0.2.10:5062;transport=tls>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 10\r\n"
    b"\r\n"
    b"v=0\r\ns=-\r\n"
)
