"""libsrtp on the caller's buffer through pylibsrtp's public API: its output is
byte for byte pylibsrtp's own, it works on the first bytes of a buffer the
caller owns, and libsrtp's errors become SrtpError kinds."""

from __future__ import annotations

import pylibsrtp
import pytest

from appliance.media import srtp_lib
from appliance.media.srtp import SUITES, Direction, SrtpContext, SrtpError
from appliance.media.srtp_lib import MAX_PACKET_LENGTH, LibsrtpSession, PacketBuffer
from tests.media.test_srtp import keys, rtcp, rtp

LIBSRTP_SUITES = sorted(name for name, suite in SUITES.items() if suite.profile is not None)


def _pylibsrtp(suite: str, outbound: bool) -> pylibsrtp.Session:
    key, salt = keys(suite)
    profile = SUITES[suite].profile
    assert profile is not None
    any_ssrc = (
        pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    )
    policy = pylibsrtp.Policy(key=key + salt, ssrc_type=any_ssrc, srtp_profile=profile)
    policy.window_size = 64
    return pylibsrtp.Session(policy)


@pytest.mark.parametrize("suite", LIBSRTP_SUITES)
def test_output_is_byte_identical_to_pylibsrtp(suite: str) -> None:
    """Every libsrtp suite: protect and protect_rtcp give pylibsrtp's bytes
    (so the same libsrtp ran with the same policy), and each side reads the
    other's output."""
    key, salt = keys(suite)
    ours = SrtpContext(suite, key, salt, Direction.OUTBOUND)
    ours_in = SrtpContext(suite, key, salt, Direction.INBOUND)
    theirs, theirs_in = _pylibsrtp(suite, True), _pylibsrtp(suite, False)
    for seq in (1, 2, 3, 65535, 0):
        packet = rtp(seq, payload=bytes([seq & 0xFF]) * (seq % 30 + 100))
        protected = ours.protect(packet)
        assert theirs.protect(packet) == protected
        assert ours_in.unprotect(protected) == packet
        assert theirs_in.unprotect(protected) == packet
    for fill in range(3):
        protected = ours.protect_rtcp(rtcp(fill=fill))
        assert theirs.protect_rtcp(rtcp(fill=fill)) == protected
        assert ours_in.unprotect_rtcp(protected) == rtcp(fill=fill)
        assert theirs_in.unprotect_rtcp(protected) == rtcp(fill=fill)


@pytest.mark.parametrize("suite", LIBSRTP_SUITES)
def test_in_place_on_the_first_bytes_of_a_buffer(suite: str) -> None:
    """Protect and unprotect rewrite the start of the caller's buffer and return
    the new length; the rest of the buffer is left alone. A failed
    authentication raises SrtpError and the packet is not taken."""
    key, salt = keys(suite)
    parameters = SUITES[suite]
    assert parameters.profile is not None
    outbound = LibsrtpSession(parameters.profile, key + salt, True, parameters.rtp_tag_length, 16)
    inbound = LibsrtpSession(parameters.profile, key + salt, False, parameters.rtp_tag_length, 16)
    buffer = PacketBuffer(2048)
    buffer.view[:] = b"\xee" * 2048
    packet = rtp(7)
    buffer.view[: len(packet)] = packet
    length = outbound.protect(buffer, len(packet))
    assert length == len(packet) + parameters.rtp_tag_length
    assert buffer.view[length:2048] == b"\xee" * (2048 - length)
    protected = bytes(buffer.view[:length])
    buffer.view[length - 1] ^= 1
    with pytest.raises(SrtpError) as caught:
        inbound.unprotect(buffer, length)
    assert caught.value.kind == "authentication"
    buffer.view[:length] = protected
    assert inbound.unprotect(buffer, length) == len(packet)
    assert bytes(buffer.view[: len(packet)]) == packet


def test_a_buffer_holds_at_least_the_largest_protected_packet() -> None:
    """protect writes up to MAX_PACKET_LENGTH bytes, so no buffer is smaller."""
    assert len(PacketBuffer(MAX_PACKET_LENGTH).view) == MAX_PACKET_LENGTH
    with pytest.raises(ValueError, match="at least"):
        PacketBuffer(MAX_PACKET_LENGTH - 1)


def test_unknown_profile_is_refused() -> None:
    """A profile libsrtp does not know is a ValueError at construction."""
    with pytest.raises(ValueError, match="profile"):
        LibsrtpSession(9999, bytes(30), True, 10, 10)


def test_libsrtp_errors_map_to_kinds() -> None:
    """libsrtp's error texts become SrtpError kinds; an unknown one is malformed."""
    assert srtp_lib._error(pylibsrtp.Error("authentication failure")).kind == "authentication"
    assert srtp_lib._error(pylibsrtp.Error("replay check failed (index too old)")).kind == "replay"
    assert srtp_lib._error(pylibsrtp.Error("can't use key any more")).kind == "limit"
    assert srtp_lib._error(pylibsrtp.Error("unsupported parameter")).kind == "malformed"
