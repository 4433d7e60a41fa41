"""libsrtp on a caller's buffer: the SRTP backend of
:class:`appliance.media.srtp.SrtpContext` for the suites libsrtp has.

libsrtp is reached through pylibsrtp's public API only (``Policy``,
``Session``): issue 5 forbids reaching into a library's private symbols, and
pylibsrtp's cffi module (``pylibsrtp._binding``) is one. A session works on a
:class:`PacketBuffer` the relay owns (it receives each datagram into it,
renumbers and sends from it): the packet is handed to pylibsrtp as bytes and
its result written back. That costs two copies and pylibsrtp's own wrapper
(about 2-3 µs of Python around about 1 µs of libsrtp per operation,
docs/performance.md, "Media relay"), which is the price of staying on the
public API.

A session is held to :mod:`appliance.media.srtp_cm`'s behaviour: the same
packet checks before any crypto, the same SSRC limit, the same size limits and
errors as :class:`~appliance.media.srtp_cm.SrtpError`. libsrtp copies the
master key when the session is made.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pylibsrtp

from appliance.media.srtp_cm import (
    MAX_STREAMS,
    REPLAY_WINDOW,
    ErrorKind,
    SrtpError,
    check_rtcp,
    rtp_header_length,
)

#: Largest SRTP/SRTCP packet we unprotect (pylibsrtp's buffer was 1500 bytes;
#: every suite keeps that bound so that packet sizes never depend on the suite).
MAX_PACKET_LENGTH = 1500
#: libsrtp's largest SRTP trailer: a 16-byte tag and a 128-byte MKI.
MAX_TRAILER_LENGTH = 16 + 128
#: Largest RTP packet we protect: what fits in MAX_PACKET_LENGTH with the trailer.
MAX_RTP_LENGTH = MAX_PACKET_LENGTH - MAX_TRAILER_LENGTH
#: Largest RTCP packet we protect: the same, less the 4-byte SRTCP index.
MAX_RTCP_LENGTH = MAX_RTP_LENGTH - 4

#: Profiles, by the names pylibsrtp gives them.
PROFILE_AES128_CM_SHA1_80: int = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
PROFILE_AES128_CM_SHA1_32: int = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32
PROFILE_AEAD_AES_128_GCM: int = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
PROFILE_AEAD_AES_256_GCM: int = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
_PROFILES = frozenset(
    {
        PROFILE_AES128_CM_SHA1_80,
        PROFILE_AES128_CM_SHA1_32,
        PROFILE_AEAD_AES_128_GCM,
        PROFILE_AEAD_AES_256_GCM,
    }
)

#: libsrtp's error texts (pylibsrtp.Error's message) that are not "malformed".
_ERRORS: dict[str, ErrorKind] = {
    "authentication failure": "authentication",
    "replay check failed (bad index)": "replay",
    "replay check failed (index too old)": "replay",
    "packet index is too old to consider": "replay",
    "can't use key any more": "limit",
}
_SSRC = struct.Struct("!I").unpack_from
_FIRST_AND_SSRC = struct.Struct("!B7xI").unpack_from


class PacketBuffer:
    """Memory a packet is worked on in: ``view``, a writable memoryview that
    sockets receive into and send from. Only one packet is in it at a time, so
    one per relay (or per context, for the bytes API) is enough."""

    __slots__ = ("view",)

    def __init__(self, size: int) -> None:
        if size < MAX_PACKET_LENGTH:  # protect writes up to MAX_PACKET_LENGTH bytes
            raise ValueError(f"a packet buffer needs at least {MAX_PACKET_LENGTH} bytes")
        self.view = memoryview(bytearray(size))


def too_long(what: str, limit: int) -> SrtpError:
    """The error for a packet over a size limit (kind "limit")."""
    return SrtpError("limit", f"{what} packet longer than {limit} bytes".lstrip())


def _error(error: pylibsrtp.Error) -> SrtpError:
    text = str(error)
    return SrtpError(_ERRORS.get(text, "malformed"), f"libsrtp: {text}")


class LibsrtpSession:
    """One direction of one leg, for a libsrtp profile. ``key`` is the master
    key followed by the master salt. Each method takes the packet as the first
    ``length`` bytes of a :class:`PacketBuffer`, replaces it there with its
    result and returns the result's length."""

    __slots__ = (
        "_protect",
        "_protect_rtcp",
        "_rtcp_trailer",
        "_rtp_tag",
        "_ssrcs",
        "_unprotect",
        "_unprotect_rtcp",
    )

    def __init__(
        self, profile: int, key: bytes, outbound: bool, rtp_tag: int, rtcp_tag: int
    ) -> None:
        if profile not in _PROFILES:
            raise ValueError("libsrtp does not know this profile")
        any_ssrc = (
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
        )
        policy = pylibsrtp.Policy(key=key, ssrc_type=any_ssrc, srtp_profile=profile)
        policy.window_size = REPLAY_WINDOW
        session = pylibsrtp.Session(policy)  # libsrtp copies the key; the policy goes
        self._protect = session.protect
        self._unprotect = session.unprotect
        self._protect_rtcp = session.protect_rtcp
        self._unprotect_rtcp = session.unprotect_rtcp
        self._rtp_tag = rtp_tag
        self._rtcp_trailer = 4 + rtcp_tag
        self._ssrcs: set[int] = set()

    def __repr__(self) -> str:
        return "<libsrtp session key=<redacted>>"

    # protect and unprotect are the relay's per-packet path. The common packet
    # (a plain 12-byte header, a size within the limits, an SSRC the session
    # already has) passes one test and goes to libsrtp at once; anything else
    # is checked in full, in order, by the _checked methods.

    def protect(self, buffer: PacketBuffer, length: int) -> int:
        """RTP to SRTP (RFC 3711 §3.3)."""
        view = buffer.view
        first, ssrc = _FIRST_AND_SSRC(view)
        if first != 0x80 or not 12 <= length <= MAX_RTP_LENGTH or ssrc not in self._ssrcs:
            return self._protect_checked(buffer, length, ssrc)
        try:
            result = self._protect(bytes(view[:length]))
        except pylibsrtp.Error as error:
            raise _error(error) from None
        view[: len(result)] = result
        return len(result)

    def unprotect(self, buffer: PacketBuffer, length: int) -> int:
        """SRTP to RTP, authenticated and replay-checked (RFC 3711 §3.3)."""
        view = buffer.view
        first, ssrc = _FIRST_AND_SSRC(view)
        if (
            first != 0x80
            or not 12 + self._rtp_tag <= length <= MAX_PACKET_LENGTH
            or ssrc not in self._ssrcs
        ):
            return self._unprotect_checked(buffer, length, ssrc)
        try:
            result = self._unprotect(bytes(view[:length]))
        except pylibsrtp.Error as error:
            raise _error(error) from None
        view[: len(result)] = result
        return len(result)

    def _protect_checked(self, buffer: PacketBuffer, length: int, ssrc: int) -> int:
        if length > MAX_RTP_LENGTH:
            raise too_long("RTP", MAX_RTP_LENGTH)
        rtp_header_length(buffer.view[:length])
        return self._process(self._protect, buffer, length, ssrc)

    def _unprotect_checked(self, buffer: PacketBuffer, length: int, ssrc: int) -> int:
        if length > MAX_PACKET_LENGTH:
            raise too_long("SRTP", MAX_PACKET_LENGTH)
        if length < rtp_header_length(buffer.view[:length]) + self._rtp_tag:
            raise SrtpError("malformed", "SRTP packet shorter than its header and tag")
        return self._process(self._unprotect, buffer, length, ssrc)

    def protect_rtcp(self, buffer: PacketBuffer, length: int) -> int:
        """RTCP to SRTCP (RFC 3711 §3.4)."""
        if length > MAX_RTCP_LENGTH:
            raise too_long("RTCP", MAX_RTCP_LENGTH)
        check_rtcp(buffer.view[:length], 8)
        return self._process(self._protect_rtcp, buffer, length, _SSRC(buffer.view, 4)[0])

    def unprotect_rtcp(self, buffer: PacketBuffer, length: int) -> int:
        """SRTCP to RTCP, authenticated and replay-checked (RFC 3711 §3.4)."""
        if length > MAX_PACKET_LENGTH:
            raise too_long("SRTCP", MAX_PACKET_LENGTH)
        check_rtcp(buffer.view[:length], 8 + self._rtcp_trailer)
        return self._process(self._unprotect_rtcp, buffer, length, _SSRC(buffer.view, 4)[0])

    def _process(
        self, function: Callable[[bytes], bytes], buffer: PacketBuffer, length: int, ssrc: int
    ) -> int:
        """``function`` on the packet, keeping count of the SSRCs seen: a new one
        beyond the limit is refused before libsrtp makes a stream for it, and
        is counted only once libsrtp accepted its packet."""
        known = ssrc in self._ssrcs
        if not known and len(self._ssrcs) >= MAX_STREAMS:
            raise SrtpError("limit", f"more than {MAX_STREAMS} SSRCs")
        view = buffer.view
        try:
            result = function(bytes(view[:length]))
        except pylibsrtp.Error as error:
            raise _error(error) from None
        view[: len(result)] = result
        if not known:
            self._ssrcs.add(ssrc)
        return len(result)
