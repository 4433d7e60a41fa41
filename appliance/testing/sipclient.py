"""A minimal SIP phone for tests: builds REGISTERs and answers Digest
challenges with SHA-256 or MD5 (Debian's sipp and baresip speak only MD5).

Sans-I/O like the core: it makes bytes and reads :class:`Message` values; the
tests carry them over a fake or a real transport.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from appliance.media.sdes import answer_for, offer_lines
from appliance.media.sdp import parse_sdp
from appliance.sip import digest
from appliance.sip.message import Message


@dataclass
class SipTestClient:
    """One extension's phone."""

    user: str
    domain: str
    password: str
    transport: str = "UDP"
    local: tuple[str, int] = ("127.0.0.1", 5062)
    call_id: str = field(default_factory=lambda: secrets.token_hex(8) + "@test-phone")
    cseq: int = 0
    nc: int = 0
    from_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    #: Where our (imaginary) G.711 audio is received.
    media_port: int = 40000
    sdp_version: int = 0

    def sdp(
        self,
        *,
        profile: str = "RTP/AVP",
        crypto: Sequence[str] = (),
        attributes: Sequence[str] = (),
        port: int | None = None,
    ) -> bytes:
        """A G.711 audio description at our address: an offer, or an answer when
        given the answer's ``crypto`` line."""
        self.sdp_version += 1
        host = self.local[0]
        lines = [
            "v=0",
            f"o=- 4242 {self.sdp_version} IN IP4 {host}",
            "s=-",
            f"c=IN IP4 {host}",
            "t=0 0",
            f"m=audio {self.media_port if port is None else port} {profile} 0 8",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            *[f"a=crypto:{line}" for line in crypto],
            *[f"a={attribute}" for attribute in attributes],
        ]
        return ("\r\n".join(lines) + "\r\n").encode()

    @staticmethod
    def crypto_offer() -> list[str]:
        """Fresh ``a=crypto`` values for an SRTP offer, every suite we know."""
        return [line for _, line in offer_lines()]

    def sdp_answer(self, offer: Message) -> bytes:
        """Our answer to the SDP ``offer``: its profile and, if it offered keys we
        can use, one crypto line with a fresh key (RFC 4568)."""
        section = parse_sdp(offer.body).media[0]
        chosen = answer_for(section.crypto)
        crypto = () if chosen is None else (chosen[2],)
        return self.sdp(profile=section.proto, crypto=crypto)

    def register(
        self,
        *,
        expires: int = 600,
        contact: str | None = None,
        authorization: str | None = None,
        user: str | None = None,
    ) -> bytes:
        """A new REGISTER (fresh branch, next CSeq)."""
        self.cseq += 1
        host, port = self.local
        aor = f"sip:{user or self.user}@{self.domain}"
        contact = (
            contact
            or f"<sip:{user or self.user}@{host}:{port};transport={self.transport.lower()}>"
        )
        lines = [
            f"REGISTER sip:{self.domain} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {host}:{port}"
            f";branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <{aor}>;tag={self.from_tag}",
            f"To: <{aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: {contact}",
            f"Expires: {expires}",
            "User-Agent: telemancer-test-phone",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def invite(
        self,
        callee: str,
        *,
        authorization: str | None = None,
        call_id: str | None = None,
        domain: str | None = None,
        extra: tuple[str, ...] = (),
        body: bytes | None = None,
    ) -> bytes:
        """An initial INVITE to ``callee`` (a user of ``domain``, ours by default),
        offering plain G.711 unless given another ``body`` (``b""``: no offer)."""
        self.cseq += 1
        host, port = self.local
        aor = f"sip:{self.user}@{self.domain}"
        lines = [
            f"INVITE sip:{callee}@{domain or self.domain} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {host}:{port}"
            f";branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <{aor}>;tag={self.from_tag}",
            f"To: <sip:{callee}@{domain or self.domain}>",
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {self.cseq} INVITE",
            f"Contact: <sip:{self.user}@{host}:{port};transport={self.transport.lower()}>",
            *extra,
        ]
        if authorization:
            lines.append(f"Proxy-Authorization: {authorization}")
        return _with_body(lines, self.sdp() if body is None else body)

    def in_dialog(
        self, method: str, answer: Message, *, route: str | None = None, body: bytes | None = None
    ) -> bytes:
        """A request inside the dialog set up by ``answer`` (the 200 to our INVITE),
        following its Record-Route; a re-INVITE offers plain G.711 unless given
        another ``body``."""
        if method != "ACK":
            self.cseq += 1
        host, port = self.local
        target = answer.contacts[0].uri if answer.contacts else f"sip:{self.domain}"
        routes = [f.value for f in answer.all("record-route")][::-1]
        lines = [
            f"{method} {target} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {host}:{port}"
            f";branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: {answer.first('from')}",
            f"To: {answer.first('to')}",
            f"Call-ID: {answer.call_id}",
            f"CSeq: {answer.cseq.number if method == 'ACK' else self.cseq} {method}",
            *[f"Route: {r}" for r in ([route] if route else routes)],
        ]
        if body is None:
            body = self.sdp() if method == "INVITE" else b""
        return _with_body(lines, body)

    def answer(
        self,
        request: Message,
        status: int,
        reason: str,
        *,
        tag: str = "callee",
        body: bytes | None = None,
    ) -> bytes:
        """Our response to a request the proxy forwarded to us (we are the callee).
        A 2xx to an INVITE offering SDP carries our answer unless given another
        ``body`` (``b""``: none)."""
        host, port = self.local
        to_value = request.first("to") or ""
        if status > 100 and ";tag=" not in to_value:
            to_value = f"{to_value};tag={tag}"
        lines = [
            f"SIP/2.0 {status} {reason}",
            *[f"Via: {f.value}" for f in request.all("via")],
            *[f"Record-Route: {f.value}" for f in request.all("record-route")],
            f"From: {request.first('from')}",
            f"To: {to_value}",
            f"Call-ID: {request.call_id}",
            f"CSeq: {request.first('cseq')}",
            f"Contact: <sip:{self.user}@{host}:{port};transport={self.transport.lower()}>",
        ]
        if body is None:
            offered = request.method == "INVITE" and request.body and 200 <= status < 300
            body = self.sdp_answer(request) if offered else b""
        return _with_body(lines, body)

    def authorization(
        self,
        challenge: Message,
        *,
        algorithm: str = digest.SHA256,
        password: str | None = None,
        username: str | None = None,
        nc: int | None = None,
        method: str = "REGISTER",
        uri: str | None = None,
    ) -> str:
        """The Authorization value answering ``challenge``'s offer of ``algorithm``
        (WWW-Authenticate or Proxy-Authenticate)."""
        offers = challenge.all("www-authenticate") or challenge.all("proxy-authenticate")
        offer = next(
            parsed
            for value in (f.value for f in offers)
            if isinstance(parsed := digest.parse_credentials(value), digest.Credentials)
            and parsed.params.get("algorithm", digest.MD5).upper() == algorithm
        )
        realm, nonce = offer.params["realm"], offer.params["nonce"]
        username = username or self.user
        self.nc = self.nc + 1 if nc is None else nc
        nc_text = f"{self.nc:08x}"
        cnonce = secrets.token_hex(8)
        uri = uri or f"sip:{self.domain}"
        ha1 = digest.ha1(algorithm, username, realm, password or self.password)
        answer = digest.response(
            algorithm,
            ha1,
            nonce=nonce,
            nc=nc_text,
            cnonce=cnonce,
            qop="auth",
            method=method,
            uri=uri,
        )
        return (
            f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}",'
            f' response="{answer}", algorithm={algorithm}, qop=auth, nc={nc_text},'
            f' cnonce="{cnonce}"'
        )


def _with_body(lines: list[str], body: bytes) -> bytes:
    """The message of ``lines`` with an SDP ``body`` (or none)."""
    if body:
        lines = [*lines, "Content-Type: application/sdp"]
    head = "\r\n".join([*lines, f"Content-Length: {len(body)}"])
    return head.encode() + b"\r\n\r\n" + body
