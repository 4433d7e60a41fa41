"""SDP parsing, hold detection and the per-leg rewrite: real-world descriptions
(baresip, a WebRTC browser, a video phone), every refusal with its status, and a
property that the rewrite writes what was asked and never leaks a key."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from appliance.media.sdp import (
    MAX_MEDIA_SECTIONS,
    MAX_SDP_BYTES,
    MAX_SDP_LINES,
    Connection,
    Direction,
    Fingerprint,
    MediaRewrite,
    Origin,
    Rtcp,
    SdpError,
    SessionDescription,
    advertised_proto,
    parse_sdp,
    rewrite_for_leg,
)
from appliance.sip.errors import SipError


def sdp(*lines: str, newline: str = "\r\n") -> bytes:
    """A description from its lines."""
    return (newline.join(lines) + newline).encode("utf-8")


BARESIP_KEY_1 = "vXMep/SIW4iMD21StWgrmy024dJZfOAM7qFFJfsJ"
BARESIP_KEY_2 = "G9uIeNpx0mZrVb1kS3yQ8w5cL2aT7dHfJ4oP6sUe"
#: baresip 1.0 with mediaenc=srtp-mand and rtcp_mux=yes (captured shape, keys replaced).
BARESIP_OFFER = sdp(
    "v=0",
    "o=- 1975181172 1106161735 IN IP4 192.168.1.1",
    "s=-",
    "c=IN IP4 192.168.1.1",
    "t=0 0",
    "a=tool:baresip 1.0.0",
    "m=audio 16796 RTP/SAVP 0 8 101",
    "b=AS:128",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=rtcp-rsize",
    "a=ssrc:2736692082 cname:sip:b@example.com",
    "a=rtcp-mux",
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{BARESIP_KEY_1}",
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{BARESIP_KEY_2}",
    "a=minptime:20",
    "a=ptime:20",
)

DTLS_FINGERPRINT = (
    "D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:"
    "2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F"
)
#: A browser (Chromium) audio offer after gathering: ICE, DTLS-SRTP, rtcp-mux, BUNDLE.
WEBRTC_OFFER = sdp(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS",
    "m=audio 54400 UDP/TLS/RTP/SAVPF 111 63 0 8 126",
    "c=IN IP4 203.0.113.7",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:3348148302 1 udp 2113937151 192.168.1.20 54400 typ host generation 0",
    "a=candidate:842163049 1 udp 1677729535 203.0.113.7 54400 typ srflx raddr "
    "192.168.1.20 rport 54400 generation 0",
    "a=end-of-candidates",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
    "a=ice-options:trickle renomination",
    f"a=fingerprint:sha-256 {DTLS_FINGERPRINT}",
    "a=setup:actpass",
    "a=tls-id:89J2LRATQ3ULA24G9AHWVR31VJWSLB68",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=sendrecv",
    "a=msid:- 7b4e6a1f-1c1a-4a5e-9f55-8bb0bd5b1d8e",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:1001 cname:4TOk42mSjXCkVIa6",
)

#: A video phone (Linphone-like): audio and video, a media-level c= and a=rtcp forms.
AUDIO_VIDEO_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 198.51.100.10",
    "s=Talk",
    "c=IN IP4 198.51.100.10",
    "t=0 0",
    "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics",
    "m=audio 7078 RTP/AVP 96 97 0 8 101",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:97 speex/16000",
    "a=fmtp:97 vbr=on",
    "a=rtpmap:101 telephone-event/8000",
    "a=rtcp:7079",
    "m=video 9078 RTP/AVPF 96 97",
    "c=IN IP4 198.51.100.11",
    "b=AS:512",
    "a=rtpmap:96 VP8/90000",
    "a=rtpmap:97 H264/90000",
    "a=fmtp:97 profile-level-id=42801F",
    "a=rtcp-fb:* nack",
    "a=rtcp-fb:* ccm fir",
    "a=rtcp:9079 IN IP4 198.51.100.11",
)

#: baresip over IPv6 (from a published dump).
IPV6_OFFER = sdp(
    "v=0",
    "o=- 953559690 1743778263 IN IP6 fde1:c0fe::7",
    "s=-",
    "c=IN IP6 fde1:c0fe::7",
    "t=0 0",
    "m=audio 17882 RTP/AVP 0 8 102",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:102 telephone-event/8000",
    "a=rtcp:17883 IN IP6 fde1:c0fe::7",
    "a=sendrecv",
)

OUR_KEY = base64.b64encode(b"telemancer key for the b leg!!").decode()
OUR_CRYPTO = (f"1 AES_CM_128_HMAC_SHA1_80 inline:{OUR_KEY}",)
#: The RFC 2543 hold address (and WebRTC's placeholder in a=rtcp).
HOLD = "0.0.0.0"  # noqa: S104 (an SDP value, not a bind address)
ORIGIN = Origin.for_address("192.0.2.53", session_id=7000, version=1, username="telemancer")


def _text(description: SessionDescription) -> str:
    return description.encode().decode("latin-1")


def _attribute_names(description: SessionDescription) -> list[str]:
    names = [line.value.partition(":")[0] for line in description.lines if line.kind == "a"]
    for section in description.media:
        names += [line.value.partition(":")[0] for line in section.lines if line.kind == "a"]
    return names


# Parsing ------------------------------------------------------------------------------


def test_baresip_srtp_offer() -> None:
    """A baresip SRTP offer gives its origin, address, m= line, crypto values in order,
    rtcp-mux and direction."""
    offer = parse_sdp(BARESIP_OFFER)
    assert offer.origin == Origin("-", 1975181172, 1106161735, "IP4", "192.168.1.1")
    assert offer.connection == Connection("IP4", "192.168.1.1")
    (audio,) = offer.media
    assert (audio.media, audio.port, audio.port_count, audio.proto, audio.formats) == (
        "audio",
        16796,
        None,
        "RTP/SAVP",
        ("0", "8", "101"),
    )
    assert audio.connection is None
    assert offer.connection_of(audio) == Connection("IP4", "192.168.1.1")
    assert audio.crypto == (
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{BARESIP_KEY_1}",
        f"2 AES_CM_128_HMAC_SHA1_32 inline:{BARESIP_KEY_2}",
    )
    assert audio.rtcp_mux and audio.rtcp is None
    assert offer.direction_of(audio) is Direction.SENDRECV
    assert audio.attributes("rtpmap") == ("0 PCMU/8000", "8 PCMA/8000", "101 telephone-event/8000")
    assert offer.attributes("tool") == ("baresip 1.0.0",)
    assert not offer.is_on_hold(audio)


def test_webrtc_offer_ice_and_dtls() -> None:
    """ICE candidates and credentials, the DTLS fingerprint, setup and tls-id, and an
    a=rtcp with an address are all read."""
    offer = parse_sdp(WEBRTC_OFFER)
    (audio,) = offer.media
    assert offer.connection is None and audio.connection == Connection("IP4", "203.0.113.7")
    ice = offer.ice_of(audio)
    assert (ice.ufrag, ice.pwd) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert ice.options == ("trickle", "renomination")
    assert len(ice.candidates) == 2 and ice.candidates[1].endswith("rport 54400 generation 0")
    assert ice.end_of_candidates and not ice.lite and ice.remote_candidates == ()
    dtls = offer.dtls_of(audio)
    assert dtls.fingerprints == (Fingerprint("sha-256", DTLS_FINGERPRINT),)
    assert (dtls.setup, dtls.tls_id) == ("actpass", "89J2LRATQ3ULA24G9AHWVR31VJWSLB68")
    assert audio.rtcp == Rtcp(9, Connection("IP4", HOLD))
    assert audio.rtcp_mux and audio.crypto == ()


def test_session_level_ice_and_dtls_apply_to_media() -> None:
    """ice-lite, credentials and a fingerprint at session level apply to each section;
    a media-level value wins over the session's."""
    offer = parse_sdp(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 198.51.100.1",
            "s=-",
            "c=IN IP4 198.51.100.1",
            "t=0 0",
            "a=ice-lite",
            "a=ice-ufrag:sess",
            "a=ice-pwd:sessionpasswordsessionpass",
            "a=fingerprint:SHA-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB",
            "a=setup:passive",
            "m=audio 4000 UDP/TLS/RTP/SAVP 0",
            "a=ice-ufrag:own",
            "a=candidate:1 1 UDP 2130706431 198.51.100.1 4000 typ host",
        )
    )
    (audio,) = offer.media
    ice, dtls = offer.ice_of(audio), offer.dtls_of(audio)
    assert ice.lite and ice.ufrag == "own" and ice.pwd == "sessionpasswordsessionpass"
    assert dtls.fingerprints[0].hash_function == "sha-1" and dtls.setup == "passive"


def test_audio_and_video_streams() -> None:
    """Two sections keep their own formats, c= and a=rtcp; b= and rtcp-fb stay lines."""
    offer = parse_sdp(AUDIO_VIDEO_OFFER)
    audio, video = offer.media
    assert audio.formats == ("96", "97", "0", "8", "101") and audio.rtcp == Rtcp(7079, None)
    assert (video.media, video.port, video.proto) == ("video", 9078, "RTP/AVPF")
    assert offer.connection_of(video) == Connection("IP4", "198.51.100.11")
    assert video.rtcp == Rtcp(9079, Connection("IP4", "198.51.100.11"))
    assert video.attributes("rtcp-fb") == ("* nack", "* ccm fir")
    assert [line.kind for line in video.lines][:2] == ["c", "b"]
    assert not audio.rtcp_mux and offer.origin.username == "alice"


@pytest.mark.parametrize(
    ("session_lines", "media_lines", "held"),
    [
        ((), ("a=sendonly",), True),
        ((), ("a=inactive",), True),
        ((), ("a=recvonly",), False),
        ((), ("a=sendrecv",), False),
        (("a=sendonly",), (), True),
        (("a=sendonly",), ("a=sendrecv",), False),
        ((), ("c=IN IP4 0.0.0.0",), True),
        (("c=IN IP4 0.0.0.0",), (), True),
        (("c=IN IP4 0.0.0.0",), ("c=IN IP4 198.51.100.7",), False),
    ],
)
def test_hold_detection(
    session_lines: tuple[str, ...], media_lines: tuple[str, ...], held: bool
) -> None:
    """sendonly, inactive and c=0.0.0.0 are hold, at media level or inherited from the
    session; a media-level value overrides the session's."""
    connection = (
        () if any(line.startswith("c=") for line in session_lines) else ("c=IN IP4 198.51.100.7",)
    )
    offer = parse_sdp(
        sdp(
            "v=0",
            "o=- 1 2 IN IP4 198.51.100.7",
            "s=-",
            *connection,
            "t=0 0",
            *session_lines,
            "m=audio 4000 RTP/AVP 0",
            *media_lines,
        )
    )
    assert offer.is_on_hold(offer.media[0]) is held


def test_disabled_stream_is_not_on_hold() -> None:
    """A port-0 section is off, not held, even when marked inactive."""
    offer = parse_sdp(
        sdp(
            "v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "m=video 0 RTP/AVP 96", "a=inactive"
        )
    )
    assert offer.media[0].is_disabled and not offer.is_on_hold(offer.media[0])


def test_lf_only_input_parses_like_crlf() -> None:
    """Bare-LF line ends (and stray blank lines) parse to the same description, which
    encodes with CRLF."""
    lf = AUDIO_VIDEO_OFFER.replace(b"\r\n", b"\n") + b"\n"
    assert parse_sdp(lf) == parse_sdp(AUDIO_VIDEO_OFFER)
    assert parse_sdp(lf).encode() == AUDIO_VIDEO_OFFER
    assert parse_sdp(AUDIO_VIDEO_OFFER.decode()).encode() == AUDIO_VIDEO_OFFER


def test_ipv6_description() -> None:
    """IP6 origins, connections and a=rtcp addresses are read."""
    offer = parse_sdp(IPV6_OFFER)
    assert offer.origin.address_type == "IP6" and offer.connection == Connection(
        "IP6", "fde1:c0fe::7"
    )
    assert offer.media[0].rtcp == Rtcp(17883, Connection("IP6", "fde1:c0fe::7"))


def test_unknown_lines_survive_byte_for_byte() -> None:
    """Lines we do not interpret (including UTF-8 text and unusual spacing) encode
    exactly as received."""
    text = sdp(
        "v=0",
        "o=jörg 1 1 IN IP4 192.0.2.1",
        "s=Grüße aus Köln",
        "i=a  session  with  spaces ",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "a=x-vendor:{odd: value}",
        "m=audio 4000 RTP/AVP 0",
        "a=x-other",
    )
    assert parse_sdp(text).encode() == text


# Errors -------------------------------------------------------------------------------

_OK_HEAD = ("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(b"", 400, id="empty"),
        pytest.param(sdp(*_OK_HEAD[1:]), 400, id="missing v="),
        pytest.param(sdp("s=-", *_OK_HEAD[:2]), 400, id="v= not first"),
        pytest.param(sdp("v=1", *_OK_HEAD[1:]), 400, id="version 1"),
        pytest.param(sdp("v=0", *_OK_HEAD[2:]), 400, id="missing o="),
        pytest.param(sdp(*_OK_HEAD[:2], *_OK_HEAD[3:]), 400, id="missing s="),
        pytest.param(sdp(*_OK_HEAD, "o=- 2 2 IN IP4 192.0.2.1"), 400, id="two o="),
        pytest.param(sdp(*_OK_HEAD, "v=0"), 400, id="second v="),
        pytest.param(sdp("v=0", "o=- 1 x IN IP4 192.0.2.1", "s=-"), 400, id="o= version"),
        pytest.param(sdp("v=0", "o=- 1 1 IN IP4", "s=-"), 400, id="o= short"),
        pytest.param(sdp("v=0", f"o=- {'9' * 4400} 1 IN IP4 a", "s=-"), 400, id="o= huge id"),
        pytest.param(sdp(*_OK_HEAD, "m=audio 4000"), 400, id="m= short"),
        pytest.param(sdp(*_OK_HEAD, "m=audio 70000 RTP/AVP 0"), 400, id="m= port range"),
        pytest.param(sdp(*_OK_HEAD, "m=audio -1 RTP/AVP 0"), 400, id="m= port sign"),
        pytest.param(sdp(*_OK_HEAD, "m=audio 4000/0 RTP/AVP 0"), 400, id="m= port count"),
        pytest.param(sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP"), 400, id="m= no formats"),
        pytest.param(sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP 0", "t=0 0"), 400, id="t= in media"),
        pytest.param(sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP 0", "c=IN IP4"), 400, id="c= short"),
        pytest.param(
            sdp(*_OK_HEAD[:3], "t=0 0", "m=audio 4000 RTP/AVP 0"), 400, id="no c= at all"
        ),
        pytest.param(sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP 0", "a=rtcp:x"), 400, id="a=rtcp"),
        pytest.param(
            sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP 0", "a=rtcp:4001 IN IP4"), 400, id="a=rtcp addr"
        ),
        pytest.param(sdp(*_OK_HEAD, "a line"), 400, id="not type=value"),
        pytest.param(sdp(*_OK_HEAD, "a=x\0y"), 400, id="NUL"),
        pytest.param(sdp(*_OK_HEAD, "a=x\ry"), 400, id="lone CR"),
        pytest.param(sdp(*_OK_HEAD, "é=x"), 400, id="type not a letter"),
        pytest.param(sdp(*_OK_HEAD, "1=x"), 400, id="type a digit"),
        pytest.param(sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP 0", "c=IN IP5 ::1"), 488, id="IP5"),
        pytest.param(sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP 0", "c=ATM NSAP x"), 488, id="ATM"),
        pytest.param(sdp(*_OK_HEAD, "x=unknown"), 488, id="unknown type letter"),
        pytest.param(sdp(*_OK_HEAD, "a=" + "x" * MAX_SDP_BYTES), 488, id="too large"),
        pytest.param(sdp(*_OK_HEAD, *["a=x"] * MAX_SDP_LINES), 488, id="too many lines"),
        pytest.param(
            sdp(*_OK_HEAD, *["m=audio 0 RTP/AVP 0"] * (MAX_MEDIA_SECTIONS + 1)),
            488,
            id="too many media",
        ),
    ],
)
def test_malformed_or_unacceptable(data: bytes, status: int) -> None:
    """Each malformed description fails with 400, each one we will not relay with 488;
    the error is a SipError, so the proxy answers with it directly."""
    with pytest.raises(SdpError) as failed:
        parse_sdp(data)
    assert failed.value.status == status
    assert isinstance(failed.value, SipError)
    expected = "Bad Request (SDP: " if status == 400 else "Not Acceptable Here ("
    assert failed.value.reason.startswith(expected)


def test_limits_are_inclusive() -> None:
    """Exactly the limits parse: MAX_SDP_LINES lines and MAX_MEDIA_SECTIONS sections."""
    sections = ["m=audio 0 RTP/AVP 0"] * MAX_MEDIA_SECTIONS
    filler = ["a=x"] * (MAX_SDP_LINES - len(_OK_HEAD) - len(sections))
    offer = parse_sdp(sdp(*_OK_HEAD, *filler, *sections))
    assert len(offer.media) == MAX_MEDIA_SECTIONS


def test_error_reason_never_echoes_a_key() -> None:
    """A refused description's reason names the problem, not the offending line."""
    for line in (f"a=rtcp:{BARESIP_KEY_1}", f"c=IN IP4 {BARESIP_KEY_1} x", f"y={BARESIP_KEY_1}"):
        with pytest.raises(SdpError) as failed:
            parse_sdp(sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP 0", line))
        assert BARESIP_KEY_1 not in failed.value.reason


# Rewriting ----------------------------------------------------------------------------


def test_rewrite_srtp_offer_for_a_plain_leg() -> None:
    """baresip's SRTP offer towards a plain-RTP phone: our address in o= and c=, our
    port, RTP/AVP, no crypto at all, codecs and other attributes in order."""
    offer = parse_sdp(BARESIP_OFFER)
    out = rewrite_for_leg(offer, ORIGIN, [MediaRewrite("192.0.2.53", 20000)])
    again = parse_sdp(out.encode())
    assert again == out
    assert again.origin == Origin("telemancer", 7000, 1, "IP4", "192.0.2.53")
    (audio,) = again.media
    assert (audio.port, audio.proto, audio.formats) == (20000, "RTP/AVP", ("0", "8", "101"))
    assert again.connection_of(audio) == Connection("IP4", "192.0.2.53")
    assert audio.crypto == () and not audio.rtcp_mux and audio.rtcp is None
    assert BARESIP_KEY_1 not in _text(out) and BARESIP_KEY_2 not in _text(out)
    assert [f"{line.kind}={line.value}" for line in audio.lines] == [
        "b=AS:128",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=sendrecv",
        "a=label:1",
        "a=rtcp-rsize",
        "a=ssrc:2736692082 cname:sip:b@example.com",
        "a=minptime:20",
        "a=ptime:20",
    ]
    assert "192.168.1.1" not in _text(out)


def test_rewrite_srtp_offer_with_our_keys() -> None:
    """Towards an SRTP leg: RTP/SAVP, our crypto line where the input's were, rtcp-mux
    kept, and none of the input keys."""
    offer = parse_sdp(BARESIP_OFFER)
    rewrite = MediaRewrite("192.0.2.53", 20002, rtcp_mux=True, srtp=True, crypto=OUR_CRYPTO)
    (audio,) = rewrite_for_leg(offer, ORIGIN, [rewrite]).media
    assert audio.proto == "RTP/SAVP" and audio.crypto == OUR_CRYPTO
    assert audio.rtcp_mux and audio.rtcp is None
    values = [line.value for line in audio.lines]
    assert values.index(f"crypto:{OUR_CRYPTO[0]}") == values.index("rtcp-mux") + 1
    assert values.index("minptime:20") == values.index(f"crypto:{OUR_CRYPTO[0]}") + 1


def test_rewrite_strips_ice_and_dtls() -> None:
    """A WebRTC offer loses candidates, ICE credentials and options, fingerprint, setup
    and tls-id; UDP/TLS/RTP/SAVPF becomes RTP/SAVPF (feedback kept) with our keys."""
    offer = parse_sdp(WEBRTC_OFFER)
    rewrite = MediaRewrite("192.0.2.53", 20004, srtp=True, crypto=OUR_CRYPTO)
    out = parse_sdp(rewrite_for_leg(offer, ORIGIN, [rewrite]).encode())
    (audio,) = out.media
    assert audio.proto == "RTP/SAVPF"
    names = set(_attribute_names(out))
    stripped = {"candidate", "end-of-candidates", "ice-ufrag", "ice-pwd", "ice-options"}
    assert not names & (stripped | {"fingerprint", "setup", "tls-id", "rtcp-mux"})
    ice = out.ice_of(audio)
    assert (ice.ufrag, ice.pwd, ice.options, ice.candidates) == (None, None, (), ())
    assert out.dtls_of(audio) == ((), None, None)
    assert audio.rtcp == Rtcp(20005, None)  # was rtcp:9 IN IP4 0.0.0.0
    assert {"group", "mid", "msid", "extmap", "rtcp-fb", "ssrc"} <= names
    assert "203.0.113.7" not in _text(out) and "192.168.1.20" not in _text(out)


def test_crypto_never_copied() -> None:
    """Every key-carrying line (a=crypto in any case, a=key-mgmt, k=) is dropped at
    both levels, whatever the rewrite asks."""
    offer = parse_sdp(
        sdp(
            *_OK_HEAD[:4],
            "k=base64:c2Vzc2lvbiBsZXZlbCBrZXk=",
            "t=0 0",
            "a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:SESSIONKEYSESSIONKEYSESSIONKEYSESSIONK",
            "m=audio 4000 RTP/SAVP 0",
            "k=prompt",
            "a=Crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UPPERCASEKEYUPPERCASEKEYUPPERCASEKEY",
            "a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAsAyONQ6gAAAAAJAAAQAAA",
        )
    )
    for rewrite in (
        MediaRewrite("192.0.2.53", 20000),
        MediaRewrite("192.0.2.53", 20000, srtp=True, crypto=OUR_CRYPTO),
        None,
    ):
        text = _text(rewrite_for_leg(offer, ORIGIN, [rewrite]))
        for secret in ("c2Vzc2lvbiBsZXZlbCBrZXk", "SESSIONKEY", "UPPERCASEKEY", "AQAFgM0X", "k="):
            assert secret not in text
        assert "key-mgmt" not in text


def test_origin_version_is_what_the_caller_passes() -> None:
    """The o= line carries our username, session id and the version given: the leg's
    state (bumped on each change) lives with the caller."""
    offer = parse_sdp(BARESIP_OFFER)
    rewrite = [MediaRewrite("192.0.2.53", 20000)]
    first = rewrite_for_leg(offer, ORIGIN, rewrite)
    second = rewrite_for_leg(offer, ORIGIN._replace(version=ORIGIN.version + 1), rewrite)
    assert first.lines[1].value == "telemancer 7000 1 IN IP4 192.0.2.53"
    assert second.lines[1].value == "telemancer 7000 2 IN IP4 192.0.2.53"
    v6 = Origin.for_address("2001:db8::53", 42, 9)
    assert rewrite_for_leg(offer, v6, rewrite).lines[1].value == "- 42 9 IN IP6 2001:db8::53"


def test_rtcp_mux_versus_a_rtcp() -> None:
    """Without mux, an input a=rtcp is rewritten to our RTCP port (no address) and
    rtcp-mux removed; a non-adjacent RTCP port is written even if the input had none;
    with mux, a=rtcp is dropped and rtcp-mux added."""
    offer = parse_sdp(AUDIO_VIDEO_OFFER)
    plain = rewrite_for_leg(
        offer,
        ORIGIN,
        [MediaRewrite("192.0.2.53", 20000), MediaRewrite("192.0.2.53", 20002, rtcp_port=30001)],
    )
    audio, video = plain.media
    assert audio.rtcp == Rtcp(20001, None) and not audio.rtcp_mux
    assert video.rtcp == Rtcp(30001, None)
    muxed = rewrite_for_leg(
        offer, ORIGIN, [MediaRewrite("192.0.2.53", 20000, rtcp_mux=True), None]
    )
    assert muxed.media[0].rtcp is None and muxed.media[0].rtcp_mux
    unmuxed = rewrite_for_leg(
        parse_sdp(BARESIP_OFFER), ORIGIN, [MediaRewrite("192.0.2.53", 20000, rtcp_port=20011)]
    )
    assert not unmuxed.media[0].rtcp_mux and unmuxed.media[0].rtcp == Rtcp(20011, None)
    adjacent = rewrite_for_leg(
        parse_sdp(BARESIP_OFFER), ORIGIN, [MediaRewrite("192.0.2.53", 20000)]
    )
    assert adjacent.media[0].rtcp is None


def test_port_zero_stream_stays_off() -> None:
    """A disabled section keeps port 0, its profile and formats, gets no crypto even when
    the entry has some, and loses keys, ICE, DTLS, a=rtcp and the peer's address;
    ``None`` for an active section disables it."""
    offer = parse_sdp(
        sdp(
            *_OK_HEAD,
            "m=audio 4000 RTP/AVP 0",
            "m=video 0 RTP/SAVP 96",
            "c=IN IP4 198.51.100.99",
            "a=rtpmap:96 VP8/90000",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:VIDEOKEYVIDEOKEYVIDEOKEYVIDEOKEYVIDEOK",
            "a=rtcp:4003 IN IP4 198.51.100.99",
            "a=candidate:1 1 UDP 1 198.51.100.99 4002 typ host",
        )
    )
    secure = MediaRewrite("192.0.2.53", 20002, srtp=True, crypto=OUR_CRYPTO)
    out = rewrite_for_leg(offer, ORIGIN, [None, secure])
    audio, video = out.media
    assert audio.m_value == "audio 0 RTP/AVP 0" and audio.lines == ()
    assert video.m_value == "video 0 RTP/SAVP 96"
    assert [f"{line.kind}={line.value}" for line in video.lines] == [
        "c=IN IP4 192.0.2.53",
        "a=rtpmap:96 VP8/90000",
    ]
    untouched = rewrite_for_leg(offer, ORIGIN, [MediaRewrite("192.0.2.53", 20000), None])
    assert untouched.media[1].m_value == "video 0 RTP/SAVP 96"


def test_unknown_attributes_keep_their_order() -> None:
    """Attributes we do not know stay, in order, around the lines we rewrite."""
    offer = parse_sdp(
        sdp(
            *_OK_HEAD,
            "a=x-session-first",
            "m=audio 4000 RTP/AVP 0 101",
            "a=x-one:1",
            "a=rtcp:4001",
            "a=x-two",
            "a=ice-ufrag:gone",
            "a=x-three:3 with spaces",
            "a=rtpmap:101 telephone-event/8000",
            "a=x-four",
        )
    )
    out = rewrite_for_leg(offer, ORIGIN, [MediaRewrite("192.0.2.53", 20000, rtcp_port=20005)])
    assert [line.value for line in out.lines if line.kind == "a"] == ["x-session-first"]
    assert [line.value for line in out.media[0].lines] == [
        "x-one:1",
        "rtcp:20005",
        "x-two",
        "x-three:3 with spaces",
        "rtpmap:101 telephone-event/8000",
        "x-four",
    ]


def test_media_address_other_than_the_session_gets_its_own_c() -> None:
    """A section relayed on another address than the origin's gets a media-level c=
    (after any i=); a section that had its own c= keeps one, with our address."""
    offer = parse_sdp(
        sdp(
            *_OK_HEAD, "m=audio 4000 RTP/AVP 0", "i=voice", "a=sendrecv", "m=video 4002 RTP/AVP 96"
        )
    )
    out = rewrite_for_leg(
        offer,
        ORIGIN,
        [MediaRewrite("2001:db8::53", 20000), MediaRewrite(ORIGIN.address, 20002)],
    )
    audio, video = out.media
    assert [line.kind for line in audio.lines] == ["i", "c", "a"]
    assert out.connection_of(audio) == Connection("IP6", "2001:db8::53")
    assert video.connection is None and out.connection_of(video) == Connection("IP4", "192.0.2.53")
    video_c = parse_sdp(AUDIO_VIDEO_OFFER)
    rewritten = rewrite_for_leg(
        video_c, ORIGIN, [MediaRewrite(ORIGIN.address, 20000), MediaRewrite(ORIGIN.address, 20002)]
    )
    assert rewritten.media[1].connection == Connection("IP4", "192.0.2.53")


@pytest.mark.parametrize(
    ("direction", "written"),
    [("sendrecv", "sendonly"), ("recvonly", "inactive"), ("sendonly", "sendonly")],
)
def test_rfc2543_hold_becomes_a_direction(direction: str, written: str) -> None:
    """c=0.0.0.0 cannot survive our address replacing it, so the hold is written as the
    direction it means; the other leg still sees a held stream."""
    offer = parse_sdp(
        sdp(*_OK_HEAD[:3], "c=IN IP4 0.0.0.0", "t=0 0", "m=audio 4000 RTP/AVP 0", f"a={direction}")
    )
    out = rewrite_for_leg(offer, ORIGIN, [MediaRewrite("192.0.2.53", 20000)])
    assert out.media[0].direction == Direction(written)
    assert out.is_on_hold(out.media[0]) is (written != "sendrecv")
    assert HOLD not in _text(out)


def test_rfc2543_hold_with_inherited_direction_adds_one() -> None:
    """A 0.0.0.0 hold with no direction attribute gains a=sendonly; a plain
    sendonly/inactive hold is copied unchanged."""
    offer = parse_sdp(sdp(*_OK_HEAD[:3], "c=IN IP4 0.0.0.0", "t=0 0", "m=audio 4000 RTP/AVP 0"))
    out = rewrite_for_leg(offer, ORIGIN, [MediaRewrite("192.0.2.53", 20000)])
    assert out.media[0].attributes("sendonly") == ("",)
    inactive = parse_sdp(sdp(*_OK_HEAD, "m=audio 4000 RTP/AVP 0", "a=inactive"))
    out = rewrite_for_leg(inactive, ORIGIN, [MediaRewrite("192.0.2.53", 20000)])
    assert out.media[0].direction is Direction.INACTIVE


@pytest.mark.parametrize(
    ("proto", "plain", "secure"),
    [
        ("RTP/AVP", "RTP/AVP", "RTP/SAVP"),
        ("RTP/SAVP", "RTP/AVP", "RTP/SAVP"),
        ("RTP/AVPF", "RTP/AVPF", "RTP/SAVPF"),
        ("RTP/SAVPF", "RTP/AVPF", "RTP/SAVPF"),
        ("UDP/TLS/RTP/SAVP", "RTP/AVP", "RTP/SAVP"),
        ("UDP/TLS/RTP/SAVPF", "RTP/AVPF", "RTP/SAVPF"),
    ],
)
def test_advertised_proto_keeps_feedback(proto: str, plain: str, secure: str) -> None:
    """The profile follows srtp and keeps the AVPF feedback variant; DTLS maps to SDES."""
    assert advertised_proto(proto, srtp=False) == plain
    assert advertised_proto(proto, srtp=True) == secure


def test_non_rtp_proto_passes_unchanged() -> None:
    """T.38's udptl is relayed as is and cannot be made SRTP."""
    assert advertised_proto("udptl", srtp=False) == "udptl"
    with pytest.raises(ValueError, match="SRTP"):
        advertised_proto("udptl", srtp=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MediaRewrite("192.0.2.53", 20000, srtp=True),
        lambda: MediaRewrite("192.0.2.53", 20000, srtp=True, crypto=("1 X inline:a\r\na=x",)),
        lambda: MediaRewrite("relay.example", 20000),
        lambda: MediaRewrite("192.0.2.53", 0),
        lambda: MediaRewrite("192.0.2.53", 65535),
        lambda: Origin.for_address("192.0.2.53", 1, -1),
        lambda: Origin.for_address("192.0.2.53", 1, 1, username="two words"),
    ],
)
def test_caller_mistakes_raise_value_error(make: Callable[[], object]) -> None:
    """Keys without SRTP (or SRTP without keys), CR/LF in a crypto line, a host name, a
    port without room for RTCP and a bad origin are programming errors."""
    with pytest.raises(ValueError):
        make()


def test_rewrite_needs_one_entry_per_section() -> None:
    """Too few or too many entries is a caller mistake, not a silent truncation."""
    offer = parse_sdp(AUDIO_VIDEO_OFFER)
    with pytest.raises(ValueError, match="per media section"):
        rewrite_for_leg(offer, ORIGIN, [MediaRewrite("192.0.2.53", 20000)])


# Property -----------------------------------------------------------------------------

_PROTOS = ["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "udptl"]
_ADDRESSES = st.one_of(
    st.sampled_from([HOLD, "198.51.100.7"]),
    st.ip_addresses().map(str),
)


@st.composite
def _offers(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A valid offer with random sections, key lines, ICE, DTLS and unknown attributes;
    returns it with the keys it carries."""
    keys: list[str] = []

    def key() -> str:
        keys.append(base64.b64encode(draw(st.binary(min_size=30, max_size=30))).decode())
        return keys[-1]

    def address_line() -> str:
        address = draw(_ADDRESSES)
        return f"c=IN IP{ipaddress.ip_address(address).version} {address}"

    session_c = draw(st.booleans())
    lines = ["v=0", "o=- 1 1 IN IP4 198.51.100.7", "s=-"]
    lines += [address_line()] if session_c else []
    lines += ["t=0 0"]
    if draw(st.booleans()):
        lines += ["a=ice-lite", "a=fingerprint:sha-256 AB:CD", f"a=crypto:1 X inline:{key()}"]
    optional = st.sampled_from(
        ["crypto", "key-mgmt", "k", "rtcp", "rtcp-mux", "ice", "dtls", "direction", "unknown"]
    )
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        port = draw(st.sampled_from([0, 1, 65535]) | st.integers(min_value=0, max_value=65535))
        lines.append(f"m=audio {port} {draw(st.sampled_from(_PROTOS))} 0 8 101")
        if not session_c or draw(st.booleans()):
            lines.append(address_line())
        for kind in draw(st.lists(optional, max_size=8)):
            lines += {
                "crypto": [f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key()}|2^31"],
                "key-mgmt": [f"a=key-mgmt:mikey {key()}"],
                "k": [f"k=base64:{key()}"],
                "rtcp": [f"a=rtcp:{draw(st.integers(0, 65535))} {address_line()[2:]}"],
                "rtcp-mux": ["a=rtcp-mux"],
                "ice": ["a=ice-ufrag:u", "a=candidate:1 1 UDP 1 198.51.100.7 4000 typ host"],
                "dtls": ["a=fingerprint:sha-256 AB:CD", "a=setup:actpass", "a=tls-id:abc"],
                "direction": [f"a={draw(st.sampled_from(sorted(Direction)))}"],
                "unknown": [f"a=x-{draw(st.text('abcxyz019', max_size=10))}"],
            }[kind]
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    return newline.join(lines).encode() + newline.encode(), keys


@st.composite
def _rewrites(draw: st.DrawFn, proto: str) -> MediaRewrite | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    srtp = proto != "udptl" and draw(st.booleans())
    port = draw(st.integers(min_value=1, max_value=65534))
    return MediaRewrite(
        draw(st.ip_addresses().map(str)),
        port,
        rtcp_port=draw(st.none() | st.integers(min_value=1, max_value=65535)),
        rtcp_mux=draw(st.booleans()),
        srtp=srtp,
        crypto=OUR_CRYPTO if srtp else (),
    )


@given(offer=_offers(), data=st.data())
def test_rewrite_writes_what_was_asked_and_never_leaks_a_key(
    offer: tuple[bytes, list[str]], data: st.DataObject
) -> None:
    """For any valid offer and any per-section entries, the re-parsed rewrite has our
    origin, each active section's address, ports, rtcp-mux and profile as asked, each
    disabled one at port 0 without crypto, no ICE/DTLS attribute and no input key."""
    text, keys = offer
    assume(OUR_KEY not in keys)
    description = parse_sdp(text)
    entries = [data.draw(_rewrites(section.proto)) for section in description.media]
    origin = Origin.for_address(data.draw(st.ip_addresses().map(str)), 99, 5)
    out = rewrite_for_leg(description, origin, entries)
    wire = out.encode()
    again = parse_sdp(wire)
    assert again == out and again.origin == origin
    for before, entry, after in zip(description.media, entries, again.media, strict=True):
        assert after.formats == before.formats
        if before.is_disabled or entry is None:
            assert after.port == 0 and after.crypto == () and after.rtcp is None
            continue
        assert after.port == entry.port
        assert again.connection_of(after) == Connection(
            f"IP{ipaddress.ip_address(entry.address).version}", entry.address
        )
        assert after.proto == advertised_proto(before.proto, entry.srtp)
        assert after.crypto == entry.crypto
        assert after.rtcp_mux == entry.rtcp_mux
        rtcp = None if entry.rtcp_mux else (after.rtcp.port if after.rtcp else after.port + 1)
        assert rtcp == (None if entry.rtcp_mux else entry.rtcp)
    names = set(_attribute_names(again))
    assert not names & {"candidate", "ice-ufrag", "ice-lite", "fingerprint", "setup", "tls-id"}
    assert not names & {"key-mgmt"} and b"\nk=" not in wire
    for secret in keys:
        assert secret.encode() not in wire


@given(
    base=st.sampled_from([BARESIP_OFFER, WEBRTC_OFFER, AUDIO_VIDEO_OFFER, IPV6_OFFER]),
    edits=st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=4)), max_size=6),
)
def test_damaged_input_fails_only_with_sdp_error(
    base: bytes, edits: list[tuple[int, bytes]]
) -> None:
    """Whatever bytes are overwritten, parsing either succeeds (and every accessor then
    works) or raises SdpError: never another exception the proxy would not expect."""
    data = bytearray(base)
    for position, replacement in edits:
        start = position % (len(data) + 1)
        data[start : start + len(replacement)] = replacement
    try:
        description = parse_sdp(bytes(data))
    except SdpError:
        return
    for section in description.media:
        description.is_on_hold(section)
        assert section.rtcp is None or 0 <= section.rtcp.port <= 65535
        description.ice_of(section)
        description.dtls_of(section)
    assert parse_sdp(description.encode()) == description


def test_best_effort_offer_keeps_rtp_avp_with_crypto() -> None:
    """Crypto lines on RTP/AVP (a best-effort SRTP offer, RFC 4568 §3.1.4 practice)
    are written as asked: the profile stays RTP/AVP and our keys are added."""
    description = parse_sdp(BARESIP_OFFER)
    rewritten = rewrite_for_leg(
        description,
        Origin.for_address("192.0.2.53", 1, 1),
        [MediaRewrite("192.0.2.53", 20000, crypto=OUR_CRYPTO)],
    )
    assert rewritten.media[0].proto == "RTP/AVP"
    assert list(rewritten.media[0].crypto) == list(OUR_CRYPTO)
