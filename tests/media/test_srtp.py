"""SRTP/SRTCP contexts: the native AES-CM implementation proved against the RFC
test vectors and libsrtp's AES-256 reference packet, checked byte for byte
against pylibsrtp, and every suite round-tripped and attacked (tampering,
replay, wrong key, malformed packets) through :class:`SrtpContext`.

Test vector sources: RFC 3711 Appendix B.2/B.3 copied from the RFC text
(the copy in metta-systems/libsss ``doc/rfc3711.txt``). RFC 6188 §7.1/§7.2
as quoted, section cited, by several independent SRTP test suites that agree
byte for byte (libre's ``test/srtp.c``, jitsi-srtp's key derivation tests,
pion/srtp's cipher tests, among others); the RFC 6188 text itself was not
reachable from here. The AES-256 reference packet is libsrtp's
(``test/srtp_driver.c``, ``srtp_validate_aes_256``)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import pytest

from appliance.media import srtp_cm, srtp_lib
from appliance.media.srtp import (
    MAX_RTP_LENGTH,
    SUITES,
    Direction,
    SrtpContext,
    SrtpError,
)
from appliance.media.srtp_cm import (
    AesCmHmacSha1,
    AesCounterMode,
    derive_key,
    estimate_index,
    packet_iv,
)

ALL_SUITES = sorted(SUITES)
CM_128_SUITES = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]
SSRC = 0x11223344

# RFC 3711 Appendix B.2: AES-CM keystream, 65282 blocks from a zero index.
B2_SESSION_KEY = "2B7E151628AED2A6ABF7158809CF4F3C"
B2_SESSION_SALT = "F0F1F2F3F4F5F6F7F8F9FAFBFCFD"  # the RFC shows it shifted: ...FCFD0000
B2_FIRST = (  # counters F0F1...FCFD0000, 0001, 0002
    "E03EAD0935C95E80E166B16DD92B4EB4"
    "D23513162B02D0F72A43A2FE4A5F97AB"
    "41E95B3BB0A2E8DD477901E4FCA894C0"
)
B2_LAST = (  # counters F0F1...FCFDFEFF, FF00, FF01
    "EC8CDF7398607CB0F2D21675EA9EA1E4"
    "362B7C3C6773516318A077D7FC5073AE"
    "6A2CC3787889374FBEB4C81B17BA6C44"
)
KEYSTREAM_LENGTH = 1044512  # "Keystream segment length: 1044512 octets (65282 AES blocks)"

# RFC 3711 Appendix B.3: key derivation with the AES-128 PRF, kdr = 0.
B3_MASTER_KEY = "E1F97A0D3E018BE0D64FA32C06DE4139"
B3_MASTER_SALT = "0EC675AD498AFEEBB6960B3AABE6"
B3_CIPHER_KEY = "C61E7A93744F39EE10734AFE3FF7A087"
B3_CIPHER_SALT = "30CBBC08863D8C85D49DB34A9AE1"
B3_AUTH_KEY = (  # all 94 octets the appendix lists
    "CEBE321F6FF7716B6FD4AB49AF256A15"
    "6D38BAA48F0A0ACF3C34E2359E6CDBCE"
    "E049646C43D9327AD175578EF7227098"
    "6371C10C9A369AC2F94A8C5FBCDDDC25"
    "6D6E919A48B610EF17C2041E47403576"
    "6B68642C59BBFC2F34DB60DBDFB2"
)

# RFC 6188 §7.1: AES-256-CM keystream, same counters as B.2.
R7_1_SESSION_KEY = "57f82fe3613fd170a85ec93c40b1f0922ec4cb0dc025b58272147cc438944a98"
R7_1_FIRST = (
    "92bdd28a93c3f52511c677d08b5515a4"
    "9da71b2378a854f67050756ded165bac"
    "63c4868b7096d88421b563b8c94c9a31"
)
R7_1_LAST = (
    "cea518c90fd91ced9cbb18c078a54711"
    "3dbc4814f4da5f00a08772b63c6a046d"
    "6eb246913062a16891433e97dd01a57f"
)

# RFC 6188 §7.2: AES_256_CM_PRF key derivation.
R7_2_MASTER_KEY = "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6"
R7_2_MASTER_SALT = "3b04803de51ee7c96423ab5b78d2"
R7_2_CIPHER_KEY = "5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4"
R7_2_CIPHER_SALT = "fa31791685ca444a9e07c6c64e93"
R7_2_AUTH_KEY = "fd9c32d39ed5fbb5a9dc96b30818454d1313dc05"

# libsrtp test/srtp_driver.c srtp_validate_aes_256(): AES_256_CM_HMAC_SHA1_80
# with the RFC 6188 §7.2 master key, SSRC 0xcafebabe, sequence 0x1234.
LIBSRTP_256_PLAIN = "800f1234decafbadcafebabe" + "ab" * 16
LIBSRTP_256_SRTP = (
    "800f1234decafbadcafebabe"
    "f1d9de17ff251ff1aa007774b0b4b40d"  # encrypted payload
    "a08d9d9a5b3a55d8873b"  # 80-bit tag
)


def rtp(seq: int, ssrc: int = SSRC, payload: bytes = b"\x55" * 160, first: int = 0x80) -> bytes:
    """An RTP packet (PCMU, timestamp from the sequence number)."""
    return (
        bytes([first, 0])
        + seq.to_bytes(2, "big")
        + (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


def rtcp(ssrc: int = SSRC, fill: int = 0x33) -> bytes:
    """An RTCP sender report without report blocks (28 bytes)."""
    return bytes([0x80, 200, 0, 6]) + ssrc.to_bytes(4, "big") + bytes([fill]) * 20


def keys(suite: str, offset: int = 0) -> tuple[bytes, bytes]:
    """A deterministic master key and salt of the suite's lengths."""
    parameters = SUITES[suite]
    key = bytes((offset + i) & 0xFF for i in range(parameters.key_length))
    salt = bytes((offset + 0x80 + i) & 0xFF for i in range(parameters.salt_length))
    return key, salt


def pair(suite: str, offset: int = 0) -> tuple[SrtpContext, SrtpContext]:
    """An outbound context and the inbound context that reads it."""
    key, salt = keys(suite, offset)
    return (
        SrtpContext(suite, key, salt, Direction.OUTBOUND),
        SrtpContext(suite, key, salt, Direction.INBOUND),
    )


def h(text: str) -> bytes:
    """Bytes from hex."""
    return bytes.fromhex(text)


# --- the native implementation against the RFC vectors ----------------------


def test_rfc3711_b2_aes_cm_keystream() -> None:
    """RFC 3711 B.2: the packet IV for SSRC 0, index 0 is the shifted session
    salt, and AES-128-CM from it gives the listed first and last blocks of the
    65282-block segment."""
    iv = packet_iv(h(B2_SESSION_SALT), ssrc=0, index=0)
    assert iv == h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
    keystream = AesCounterMode(h(B2_SESSION_KEY)).xor(iv, bytes(KEYSTREAM_LENGTH))
    assert keystream[:48] == h(B2_FIRST)
    assert keystream[-48:] == h(B2_LAST)


def test_rfc3711_b2_keystream_is_the_same_however_it_is_cut() -> None:
    """The per-packet fast path (precomputed counters) and the long path give
    one keystream, a partial last block is the prefix of the full one, and an
    IV that could carry into the SSRC/index bits, or a keystream longer than
    RFC 3711 §4.1.1 allows, is refused."""
    cipher = AesCounterMode(h(B2_SESSION_KEY))
    iv = packet_iv(h(B2_SESSION_SALT), 0, 0)
    long = cipher.xor(iv, bytes(16 * 200))
    for length in (0, 1, 15, 16, 17, 160, 1357, 16 * 128):
        assert cipher.xor(iv, bytes(length)) == long[:length]
    with pytest.raises(ValueError, match="16 zero bits"):
        cipher.xor(iv[:15] + b"\1", bytes(16))
    with pytest.raises(ValueError, match="2\\^16 blocks"):
        cipher.xor(iv, bytes(16 * 0x10000 + 1))


def test_rfc3711_b3_key_derivation() -> None:
    """RFC 3711 B.3: the AES-128 PRF derives the listed cipher key, cipher salt
    and all 94 octets of the auth key (labels 0x00, 0x02, 0x01)."""
    master_key, master_salt = h(B3_MASTER_KEY), h(B3_MASTER_SALT)
    assert derive_key(master_key, master_salt, 0x00, 16) == h(B3_CIPHER_KEY)
    assert derive_key(master_key, master_salt, 0x02, 14) == h(B3_CIPHER_SALT)
    assert derive_key(master_key, master_salt, 0x01, 94) == h(B3_AUTH_KEY)


def test_rfc6188_7_1_aes256_cm_keystream() -> None:
    """RFC 6188 §7.1: AES-256-CM from the B.2 counter gives the listed first and
    last three blocks of the 65282-block segment."""
    iv = packet_iv(h(B2_SESSION_SALT), ssrc=0, index=0)
    keystream = AesCounterMode(h(R7_1_SESSION_KEY)).xor(iv, bytes(KEYSTREAM_LENGTH))
    assert keystream[:48] == h(R7_1_FIRST)
    assert keystream[-48:] == h(R7_1_LAST)


def test_rfc6188_7_2_aes256_key_derivation() -> None:
    """RFC 6188 §7.2: the AES_256_CM_PRF derives the listed 256-bit cipher key,
    112-bit cipher salt and 160-bit auth key."""
    master_key, master_salt = h(R7_2_MASTER_KEY), h(R7_2_MASTER_SALT)
    assert derive_key(master_key, master_salt, 0x00, 32) == h(R7_2_CIPHER_KEY)
    assert derive_key(master_key, master_salt, 0x02, 14) == h(R7_2_CIPHER_SALT)
    assert derive_key(master_key, master_salt, 0x01, 20) == h(R7_2_AUTH_KEY)


def test_libsrtp_aes256_reference_packet() -> None:
    """AES_256_CM_HMAC_SHA1_80 end to end (derivation, IV, keystream, HMAC over
    packet || ROC, 80-bit truncation) reproduces libsrtp's reference packet,
    and unprotecting it gives the plaintext back."""
    master_key, master_salt = h(R7_2_MASTER_KEY), h(R7_2_MASTER_SALT)
    sender = SrtpContext("AES_256_CM_HMAC_SHA1_80", master_key, master_salt, Direction.OUTBOUND)
    receiver = SrtpContext("AES_256_CM_HMAC_SHA1_80", master_key, master_salt, Direction.INBOUND)
    assert sender.protect(h(LIBSRTP_256_PLAIN)) == h(LIBSRTP_256_SRTP)
    assert receiver.unprotect(h(LIBSRTP_256_SRTP)) == h(LIBSRTP_256_PLAIN)


@pytest.mark.parametrize(
    ("highest", "seq", "expected"),
    [
        (0, 0, (0, 0)),
        (100, 90, (90, -10)),
        (0x8000, 0xFFFF, (0xFFFF, 0x7FFF)),  # start: never ROC - 1
        (0x1FFF0, 0x0005, (0x20005, 0x15)),  # s_l >= 2^15, SEQ wrapped: ROC + 1
        (0x20005, 0xFFF0, (0x1FFF0, -0x15)),  # s_l < 2^15, late SEQ: ROC - 1
        (0x28000, 0x0001, (0x20001, -0x7FFF)),
        (0x38001, 0x0000, (0x40000, 0x7FFF)),
    ],
)
def test_index_estimation_follows_appendix_a(
    highest: int, seq: int, expected: tuple[int, int]
) -> None:
    """RFC 3711 §3.3.1 / Appendix A: the index is 2^16 * v + SEQ with v the ROC
    (or ROC ± 1) that puts it closest to the highest index, as libsrtp guesses."""
    assert estimate_index(highest, seq) == expected


# --- native AES_CM_128 against pylibsrtp, byte for byte ---------------------

# Around the wrap, with loss, reordering across the wrap, CSRCs, a header
# extension, an empty payload and payloads that are not a block multiple.
CROSS_SEQUENCES = [65530, 65531, 65533, 65535, 0, 1, 65534, 2, 4, 3, 5, 6]


def _cross_packets() -> list[bytes]:
    packets = [rtp(seq, payload=bytes([seq & 0xFF]) * (seq % 40 + 150)) for seq in CROSS_SEQUENCES]
    csrc = bytes([0x82, 0x08, 0, 7, 0, 0, 0, 1]) + SSRC.to_bytes(4, "big") + b"\x01" * 8
    extension = (
        bytes([0x90, 0x08, 0, 8, 0, 0, 0, 1])
        + SSRC.to_bytes(4, "big")
        + bytes([0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0])
    )
    return [*packets, csrc + b"\x77" * 33, extension + b"\x66" * 17, rtp(9, payload=b"")]


@pytest.mark.parametrize("suite", CM_128_SUITES)
def test_native_srtp_is_byte_identical_to_pylibsrtp(suite: str) -> None:
    """Native AES-CM/HMAC-SHA1 with a 128-bit key protects every packet exactly
    as libsrtp does, across the 65535 -> 0 rollover (ROC 0 -> 1) and packets
    reordered across it; and each side unprotects the other's output."""
    key, salt = keys(suite)
    tag = SUITES[suite].rtp_tag_length
    library = SrtpContext(suite, key, salt, Direction.OUTBOUND)
    native = AesCmHmacSha1(key, salt, tag)
    library_in = SrtpContext(suite, key, salt, Direction.INBOUND)
    native_in = AesCmHmacSha1(key, salt, tag)
    for packet in _cross_packets():
        protected = library.protect(packet)
        assert native.protect(packet) == protected
        assert len(protected) == len(packet) + tag
        assert native_in.unprotect(protected) == packet
        assert library_in.unprotect(protected) == packet


@pytest.mark.parametrize("suite", CM_128_SUITES)
def test_native_srtcp_is_byte_identical_to_pylibsrtp(suite: str) -> None:
    """Native SRTCP (E flag, 31-bit index from 1 per SSRC, 80-bit tag even for
    the _32 suite) protects exactly as libsrtp does; each side unprotects the
    other's output."""
    key, salt = keys(suite)
    library = SrtpContext(suite, key, salt, Direction.OUTBOUND)
    native = AesCmHmacSha1(key, salt, SUITES[suite].rtp_tag_length)
    library_in = SrtpContext(suite, key, salt, Direction.INBOUND)
    native_in = AesCmHmacSha1(key, salt, SUITES[suite].rtp_tag_length)
    packets = [rtcp(fill=i) for i in range(3)] + [rtcp(ssrc=0xABCDEF01), rtcp() + b"\x81" * 11]
    indexes = [1, 2, 3, 1, 4]  # per SSRC, from 1 as libsrtp counts
    for packet, index in zip(packets, indexes, strict=True):
        protected = library.protect_rtcp(packet)
        assert native.protect_rtcp(packet) == protected
        assert len(protected) == len(packet) + 4 + 10
        assert protected[len(packet) : len(packet) + 4] == (0x80000000 | index).to_bytes(4, "big")
        assert native_in.unprotect_rtcp(protected) == packet
        assert library_in.unprotect_rtcp(protected) == packet


def _unencrypted_srtcp(suite: str, packet: bytes, index: int) -> bytes:
    """An SRTCP packet sent in the clear (E = 0), authenticated by hand."""
    key, salt = keys(suite)
    auth_key = derive_key(key, salt, srtp_cm.LABEL_RTCP_AUTH, 20)
    body = packet + index.to_bytes(4, "big")
    return body + hmac.digest(auth_key, body, hashlib.sha1)[:10]


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32"])
def test_unencrypted_srtcp_is_refused(suite: str) -> None:
    """An authentic SRTCP packet with E = 0 (sent in the clear, RFC 3711 §3.4)
    is refused by libsrtp and the native code alike, since the context
    encrypts, as is a protected packet whose E flag was cleared; the SRTCP
    index is authenticated: changing it fails authentication."""
    outbound, inbound = pair(suite)
    protected = outbound.protect_rtcp(rtcp())
    cleared, moved = bytearray(protected), bytearray(protected)
    cleared[len(rtcp())] &= 0x7F
    moved[len(rtcp()) + 3] ^= 0x02
    for packet in (_unencrypted_srtcp(suite, rtcp(), 7), bytes(cleared)):
        with pytest.raises(SrtpError) as caught:
            inbound.unprotect_rtcp(packet)
        assert caught.value.kind == "malformed"
    with pytest.raises(SrtpError) as caught:
        inbound.unprotect_rtcp(bytes(moved))
    assert caught.value.kind == "authentication"
    assert inbound.unprotect_rtcp(protected) == rtcp()


# --- every suite through SrtpContext ------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_round_trip_rtp_and_rtcp(suite: str) -> None:
    """Every suite: what the outbound context protects, the inbound one
    unprotects back to the same bytes, for RTP and RTCP, for two SSRCs, with
    the suite's expansion (SRTCP's tag is 80 bits for both HMAC-SHA1 tags)."""
    outbound, inbound = pair(suite)
    parameters = SUITES[suite]
    for seq in range(1000, 1010):
        for ssrc in (SSRC, 0xDEADBEEF):
            packet = rtp(seq, ssrc=ssrc, payload=bytes(range(seq % 50, seq % 50 + 160)))
            protected = outbound.protect(packet)
            assert len(protected) == len(packet) + parameters.rtp_tag_length
            assert protected[:12] == packet[:12]
            assert protected[12:172] != packet[12:]
            assert inbound.unprotect(protected) == packet
    for ssrc in (SSRC, 0xDEADBEEF):
        protected = outbound.protect_rtcp(rtcp(ssrc))
        assert len(protected) == len(rtcp()) + 4 + parameters.rtcp_tag_length
        assert protected[:8] == rtcp(ssrc)[:8]
        assert protected[8:28] != rtcp(ssrc)[8:]
        assert inbound.unprotect_rtcp(protected) == rtcp(ssrc)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_roc_rollover(suite: str) -> None:
    """Every suite: a stream running through 65535 -> 0 twice (ROC 0 -> 2), with
    a packet from before the wrap arriving after it, is all accepted; the
    encryption differs per ROC (same SEQ, different keystream)."""
    outbound, inbound = pair(suite)
    sequence = [*range(65500, 65536), *range(0, 65536, 97), *range(65500, 65536), *range(40)]
    sent = {}
    for number, seq in enumerate(sequence):
        sent[number] = outbound.protect(rtp(seq))
    late = sent.pop(len(sequence) - 41)  # seq 65535 at ROC 1, held back past the wrap
    for number, protected in sent.items():
        assert inbound.unprotect(protected) == rtp(sequence[number])
    assert inbound.unprotect(late) == rtp(65535)
    first_zero = sequence.index(0)
    second_zero = len(sequence) - 40
    assert sent[first_zero][12:172] != sent[second_zero][12:172]


@pytest.mark.parametrize("suite", ALL_SUITES)
@pytest.mark.parametrize("where", ["header", "payload", "tag"])
def test_tampered_packet_is_refused(suite: str, where: str) -> None:
    """Every suite: flipping one bit of the header, the payload or the tag of an
    SRTP or SRTCP packet fails authentication, and the untouched packet is
    still accepted afterwards (a forgery does not burn its index)."""
    outbound, inbound = pair(suite)
    for protect, unprotect, packet in (
        (outbound.protect, inbound.unprotect, rtp(5)),
        (outbound.protect_rtcp, inbound.unprotect_rtcp, rtcp()),
    ):
        protected = protect(packet)
        position = {"header": 1, "payload": 20, "tag": len(protected) - 1}[where]
        tampered = bytearray(protected)
        tampered[position] ^= 0x04
        with pytest.raises(SrtpError) as caught:
            unprotect(bytes(tampered))
        assert caught.value.kind == "authentication"
        assert unprotect(protected) == packet


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_replay_is_refused(suite: str) -> None:
    """Every suite: an SRTP or SRTCP packet accepted once is refused the second
    time; one behind the 64-packet window is refused even if never seen; one
    inside the window but not yet seen is accepted."""
    outbound, inbound = pair(suite)
    protected = {seq: outbound.protect(rtp(seq)) for seq in range(100, 200)}
    for seq in range(150, 200):
        inbound.unprotect(protected[seq])
    with pytest.raises(SrtpError) as caught:
        inbound.unprotect(protected[160])
    assert caught.value.kind == "replay"
    with pytest.raises(SrtpError) as caught:
        inbound.unprotect(protected[199 - 64])  # 64 behind the highest
    assert caught.value.kind == "replay"
    assert inbound.unprotect(protected[199 - 63]) == rtp(199 - 63)
    srtcp = outbound.protect_rtcp(rtcp())
    inbound.unprotect_rtcp(srtcp)
    with pytest.raises(SrtpError) as caught:
        inbound.unprotect_rtcp(srtcp)
    assert caught.value.kind == "replay"


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_sender_never_reuses_an_index(suite: str) -> None:
    """Every suite: protecting the same SSRC and sequence number twice (which
    would reuse the keystream) or one behind the window is refused, as libsrtp
    refuses it; a late packet inside the window is protected."""
    outbound, _ = pair(suite)
    for seq in range(100, 200):
        outbound.protect(rtp(seq))
    with pytest.raises(SrtpError) as caught:
        outbound.protect(rtp(150))
    assert caught.value.kind == "replay"
    with pytest.raises(SrtpError) as caught:
        outbound.protect(rtp(199 - 64))
    assert caught.value.kind == "replay"
    outbound.protect(rtp(200))
    outbound.protect(rtp(202))
    outbound.protect(rtp(201))


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_wrong_key_or_salt_is_refused(suite: str) -> None:
    """Every suite: packets protected under another master key, or the same key
    with another salt, fail authentication (RTP and RTCP)."""
    outbound, _ = pair(suite)
    key, salt = keys(suite)
    other_key = SrtpContext(suite, bytes(b ^ 1 for b in key), salt, Direction.INBOUND)
    other_salt = SrtpContext(suite, key, bytes(b ^ 1 for b in salt), Direction.INBOUND)
    protected, protected_rtcp = outbound.protect(rtp(1)), outbound.protect_rtcp(rtcp())
    for inbound in (other_key, other_salt):
        for unprotect, packet in (
            (inbound.unprotect, protected),
            (inbound.unprotect_rtcp, protected_rtcp),
        ):
            with pytest.raises(SrtpError) as caught:
                unprotect(packet)
            assert caught.value.kind == "authentication"


def _malformed_rtp(tag: int) -> list[bytes]:
    """RTP that is no RTP, or whose header runs past its end (``tag`` bytes of
    room for a tag appended where the header itself is sound)."""
    good = rtp(1, payload=b"")
    return [
        b"",
        good[:11],
        bytes([0x00]) + good[1:] + bytes(tag),  # version 0
        bytes([0x40]) + good[1:] + bytes(tag),  # version 1
        bytes([0xC0]) + good[1:] + bytes(tag),  # version 3
        bytes([0x8F]) + good[1:] + bytes(tag),  # 15 CSRCs announced, none there
        bytes([0x90]) + good[1:] + b"\xbe\xde",  # extension header cut short
        bytes([0x90]) + good[1:] + b"\xbe\xde\x00\x09" + bytes(tag),  # extension past the end
    ]


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_malformed_packets_are_refused(suite: str) -> None:
    """Every suite: empty, short, non-version-2, CSRC or extension running past
    the end, or too short for the tag: SrtpError("malformed") before any crypto,
    from unprotect and (where the packet is no RTP/RTCP) protect alike."""
    outbound, inbound = pair(suite)
    parameters = SUITES[suite]
    no_room_for_tag = rtp(1, payload=b"") + bytes(parameters.rtp_tag_length - 1)
    for packet in [*_malformed_rtp(parameters.rtp_tag_length), no_room_for_tag]:
        with pytest.raises(SrtpError) as caught:
            inbound.unprotect(packet)
        assert caught.value.kind == "malformed", packet.hex()
    for packet in _malformed_rtp(0):
        with pytest.raises(SrtpError) as caught:
            outbound.protect(packet)
        assert caught.value.kind == "malformed", packet.hex()
    trailer = 4 + parameters.rtcp_tag_length
    for packet in (b"", rtcp()[:7], rtcp()[:8] + bytes(trailer - 1), b"\x40" + rtcp()[1:]):
        with pytest.raises(SrtpError) as caught:
            inbound.unprotect_rtcp(packet)
        assert caught.value.kind == "malformed"
    for packet in (b"", rtcp()[:7], b"\x00" + rtcp()[1:]):
        with pytest.raises(SrtpError) as caught:
            outbound.protect_rtcp(packet)
        assert caught.value.kind == "malformed"


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_size_limits_are_the_same_for_every_suite(suite: str) -> None:
    """Every suite: RTP up to MAX_RTP_LENGTH bytes is protected and round-trips;
    one byte more is refused with kind "limit" (pylibsrtp's buffer bound, kept
    for the native suites too)."""
    outbound, inbound = pair(suite)
    largest = rtp(1, payload=bytes(MAX_RTP_LENGTH - 12))
    assert inbound.unprotect(outbound.protect(largest)) == largest
    with pytest.raises(SrtpError) as caught:
        outbound.protect(rtp(2, payload=bytes(MAX_RTP_LENGTH - 11)))
    assert caught.value.kind == "limit"
    with pytest.raises(SrtpError) as caught:
        inbound.unprotect(rtp(3, payload=bytes(1500)))
    assert caught.value.kind == "limit"


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_ssrc_limit_fails_closed(suite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every suite: beyond MAX_STREAMS SSRCs a new SSRC is refused (kind
    "limit") while known ones carry on; a forged packet never takes a slot."""
    monkeypatch.setattr(srtp_cm, "MAX_STREAMS", 2)
    monkeypatch.setattr(srtp_lib, "MAX_STREAMS", 2)
    outbound, inbound = pair(suite)
    first, second = outbound.protect(rtp(1, ssrc=1)), outbound.protect(rtp(1, ssrc=2))
    with pytest.raises(SrtpError) as caught:
        outbound.protect(rtp(1, ssrc=3))
    assert caught.value.kind == "limit"
    forged = bytearray(first)
    forged[8:12] = (9).to_bytes(4, "big")
    with pytest.raises(SrtpError):
        inbound.unprotect(bytes(forged))
    assert inbound.unprotect(first) == rtp(1, ssrc=1)
    assert inbound.unprotect(second) == rtp(1, ssrc=2)
    assert outbound.protect(rtp(2, ssrc=1))


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_wrong_direction_is_a_bug_not_a_bad_packet(suite: str) -> None:
    """Every suite: protecting with an inbound context or unprotecting with an
    outbound one raises RuntimeError, never SrtpError (which the relay counts
    and drops)."""
    outbound, inbound = pair(suite)
    calls: list[Callable[[bytes], bytes]] = [
        inbound.protect,
        inbound.protect_rtcp,
        outbound.unprotect,
        outbound.unprotect_rtcp,
    ]
    for call in calls:
        with pytest.raises(RuntimeError):
            call(rtp(1) + bytes(16))


def test_construction_checks_suite_and_lengths() -> None:
    """Unknown suites and wrong key or salt lengths raise ValueError; the
    message never quotes the offered suite name (it came from a peer)."""
    with pytest.raises(ValueError, match="unsupported SRTP suite") as caught:
        SrtpContext("F8_128_HMAC_SHA1_80 inline:c2VjcmV0", bytes(16), bytes(14), Direction.INBOUND)
    assert "c2VjcmV0" not in str(caught.value)
    with pytest.raises(ValueError, match="master key must be 32 bytes, got 16"):
        SrtpContext("AES_256_CM_HMAC_SHA1_80", bytes(16), bytes(14), Direction.INBOUND)
    with pytest.raises(ValueError, match="master salt must be 12 bytes, got 14"):
        SrtpContext("AEAD_AES_128_GCM", bytes(16), bytes(14), Direction.INBOUND)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_reprs_and_errors_never_show_keys(suite: str) -> None:
    """Every suite: the context's repr, and the messages of its errors, contain
    neither the master key nor the salt in any common encoding."""
    key, salt = keys(suite, offset=0x41)
    outbound = SrtpContext(suite, key, salt, Direction.OUTBOUND)
    inbound = SrtpContext(suite, key, salt, Direction.INBOUND)
    texts = [repr(outbound), repr(inbound)]
    protected = outbound.protect(rtp(1))
    attempts: list[Callable[[], bytes]] = [
        lambda: inbound.unprotect(protected[:-1] + bytes([protected[-1] ^ 1])),
        lambda: inbound.unprotect(b"\x80"),
        lambda: outbound.protect(rtp(1)),
    ]
    for attempt in attempts:
        with pytest.raises(SrtpError) as caught:
            attempt()
        texts += [str(caught.value), repr(caught.value)]
    for secret in (key, salt):
        for text in texts:
            assert secret.hex() not in text.lower()
            assert repr(secret) not in text
            assert secret.decode("latin-1") not in text
    assert "redacted" in repr(outbound)
