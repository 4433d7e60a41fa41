"""libsrtp in place: the SRTP backend of :class:`appliance.media.srtp.SrtpContext`
for the suites libsrtp has, called without pylibsrtp's per-packet wrapper.

Why: ``pylibsrtp.Session.protect`` and ``unprotect`` cost about 2-3 µs of
Python per call (a fresh ``int *`` from ``ffi.new``, the packet copied into its
buffer and sliced out again) around about 1 µs of libsrtp, and the relay makes
two such calls per SRTP ↔ SRTP packet (docs/performance.md, "Media relay",
finding 3). Here the same compiled libsrtp is called through pylibsrtp's own
cffi module, ``pylibsrtp._binding`` (``ffi`` and ``lib``: ``srtp_create``,
``srtp_protect``, ``srtp_unprotect`` and their RTCP variants, as libsrtp 2
declares them), on a :class:`PacketBuffer` the caller owns: the relay receives
a datagram into it, unprotects it there, renumbers it there, protects it there
with the other leg's context and sends it from there. The length lives in one
``int *`` per session, allocated once.

``pylibsrtp._binding`` is not pylibsrtp's public API, so setup.cfg pins
pylibsrtp to the release this was written against, and
``tests/media/test_srtp_lib.py`` fails loudly if the binding lacks what is
used here. Importing it imports ``pylibsrtp`` first, which runs
``srtp_init()``.

A session is held to :mod:`appliance.media.srtp_cm`'s behaviour: the same
packet checks before any crypto, the same SSRC limit, the same size limits and
errors as :class:`~appliance.media.srtp_cm.SrtpError`. The master key is
copied into libsrtp when the session is made, and our copy is wiped.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]  # compiled, no stub

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
PROFILE_AES128_CM_SHA1_80: int = lib.srtp_profile_aes128_cm_sha1_80
PROFILE_AES128_CM_SHA1_32: int = lib.srtp_profile_aes128_cm_sha1_32
PROFILE_AEAD_AES_128_GCM: int = lib.srtp_profile_aead_aes_128_gcm
PROFILE_AEAD_AES_256_GCM: int = lib.srtp_profile_aead_aes_256_gcm

#: libsrtp's ``srtp_err_status_t`` values that are not "malformed", with its texts.
_ERRORS: dict[int, tuple[ErrorKind, str]] = {
    7: ("authentication", "authentication failure"),
    9: ("replay", "replay check failed (bad index)"),
    10: ("replay", "replay check failed (index too old)"),
    15: ("limit", "can't use key any more"),
    26: ("replay", "packet index is too old to consider"),
}
_SSRC = struct.Struct("!I").unpack_from
_FIRST_AND_SSRC = struct.Struct("!B7xI").unpack_from
_srtp_protect = lib.srtp_protect
_srtp_unprotect = lib.srtp_unprotect


class PacketBuffer:
    """Memory libsrtp works on in place: ``cdata`` for libsrtp, ``view`` (a
    writable memoryview of the same bytes) for Python, sockets included. Only
    one packet is in it at a time, so one per relay (or per context, for the
    bytes API) is enough."""

    __slots__ = ("cdata", "view")

    def __init__(self, size: int) -> None:
        if size < MAX_PACKET_LENGTH:  # protect writes up to MAX_PACKET_LENGTH bytes
            raise ValueError(f"a packet buffer needs at least {MAX_PACKET_LENGTH} bytes")
        self.cdata: Any = ffi.new("char[]", size)
        self.view = memoryview(ffi.buffer(self.cdata))


def _session(profile: int, key: bytes, outbound: bool) -> Any:
    """A pointer to a libsrtp session (``srtp_t *``) for any SSRC in one
    direction; the session is freed when the pointer is."""
    policy = ffi.new("srtp_policy_t *")
    for set_profile, crypto in (
        (lib.srtp_crypto_policy_set_from_profile_for_rtp, policy.rtp),
        (lib.srtp_crypto_policy_set_from_profile_for_rtcp, policy.rtcp),
    ):
        if set_profile(ffi.addressof(crypto), profile) != lib.srtp_err_status_ok:
            raise ValueError("libsrtp does not know this profile")
    policy.ssrc.type = lib.ssrc_any_outbound if outbound else lib.ssrc_any_inbound
    policy.window_size = REPLAY_WINDOW
    key_copy = ffi.new("unsigned char[]", key)
    policy.key = key_copy
    pointer = ffi.new("srtp_t *")
    try:
        status = lib.srtp_create(pointer, policy)
    finally:
        ffi.memmove(key_copy, bytes(len(key)), len(key))  # libsrtp keeps its own copy
    if status != lib.srtp_err_status_ok:
        raise ValueError(f"libsrtp could not make a session (error {status})")
    return ffi.gc(pointer, lambda done: lib.srtp_dealloc(done[0]))


def too_long(what: str, limit: int) -> SrtpError:
    """The error for a packet over a size limit (kind "limit")."""
    return SrtpError("limit", f"{what} packet longer than {limit} bytes".lstrip())


def _error(status: int) -> SrtpError:
    kind, text = _ERRORS.get(status, ("malformed", f"error {status}"))
    return SrtpError(kind, f"libsrtp: {text}")


class LibsrtpSession:
    """One direction of one leg, for a libsrtp profile. ``key`` is the master
    key followed by the master salt. Each method takes the packet as the first
    ``length`` bytes of a :class:`PacketBuffer`, replaces it there with its
    result and returns the result's length."""

    __slots__ = ("_length", "_owner", "_rtcp_trailer", "_rtp_tag", "_srtp", "_ssrcs")

    def __init__(
        self, profile: int, key: bytes, outbound: bool, rtp_tag: int, rtcp_tag: int
    ) -> None:
        self._owner = _session(profile, key, outbound)  # frees the session with us
        self._srtp = self._owner[0]
        self._length = ffi.new("int *")
        self._rtp_tag = rtp_tag
        self._rtcp_trailer = 4 + rtcp_tag
        self._ssrcs: set[int] = set()

    def __repr__(self) -> str:
        return "<libsrtp session key=<redacted>>"

    # protect and unprotect are the relay's per-packet path. The common packet
    # (a plain 12-byte header, a size within the limits, an SSRC the session
    # already has) passes one test and goes to libsrtp inline; anything else
    # is checked in full, in order, by the _checked methods.

    def protect(self, buffer: PacketBuffer, length: int) -> int:
        """RTP to SRTP (RFC 3711 §3.3)."""
        first, ssrc = _FIRST_AND_SSRC(buffer.view)
        if first != 0x80 or not 12 <= length <= MAX_RTP_LENGTH or ssrc not in self._ssrcs:
            return self._protect_checked(buffer, length, ssrc)
        cell = self._length
        cell[0] = length
        status = _srtp_protect(self._srtp, buffer.cdata, cell)
        if status:
            raise _error(status)
        return cell[0]  # type: ignore[no-any-return]

    def unprotect(self, buffer: PacketBuffer, length: int) -> int:
        """SRTP to RTP, authenticated and replay-checked (RFC 3711 §3.3)."""
        first, ssrc = _FIRST_AND_SSRC(buffer.view)
        if (
            first != 0x80
            or not 12 + self._rtp_tag <= length <= MAX_PACKET_LENGTH
            or ssrc not in self._ssrcs
        ):
            return self._unprotect_checked(buffer, length, ssrc)
        cell = self._length
        cell[0] = length
        status = _srtp_unprotect(self._srtp, buffer.cdata, cell)
        if status:
            raise _error(status)
        return cell[0]  # type: ignore[no-any-return]

    def _protect_checked(self, buffer: PacketBuffer, length: int, ssrc: int) -> int:
        if length > MAX_RTP_LENGTH:
            raise too_long("RTP", MAX_RTP_LENGTH)
        rtp_header_length(buffer.view[:length])
        return self._process(_srtp_protect, buffer, length, ssrc)

    def _unprotect_checked(self, buffer: PacketBuffer, length: int, ssrc: int) -> int:
        if length > MAX_PACKET_LENGTH:
            raise too_long("SRTP", MAX_PACKET_LENGTH)
        if length < rtp_header_length(buffer.view[:length]) + self._rtp_tag:
            raise SrtpError("malformed", "SRTP packet shorter than its header and tag")
        return self._process(_srtp_unprotect, buffer, length, ssrc)

    def protect_rtcp(self, buffer: PacketBuffer, length: int) -> int:
        """RTCP to SRTCP (RFC 3711 §3.4)."""
        if length > MAX_RTCP_LENGTH:
            raise too_long("RTCP", MAX_RTCP_LENGTH)
        check_rtcp(buffer.view[:length], 8)
        return self._process(lib.srtp_protect_rtcp, buffer, length, _SSRC(buffer.view, 4)[0])

    def unprotect_rtcp(self, buffer: PacketBuffer, length: int) -> int:
        """SRTCP to RTCP, authenticated and replay-checked (RFC 3711 §3.4)."""
        if length > MAX_PACKET_LENGTH:
            raise too_long("SRTCP", MAX_PACKET_LENGTH)
        check_rtcp(buffer.view[:length], 8 + self._rtcp_trailer)
        return self._process(lib.srtp_unprotect_rtcp, buffer, length, _SSRC(buffer.view, 4)[0])

    def _process(
        self, function: Callable[..., int], buffer: PacketBuffer, length: int, ssrc: int
    ) -> int:
        """``function`` on the packet, keeping count of the SSRCs seen: a new one
        beyond the limit is refused before libsrtp makes a stream for it, and
        is counted only once libsrtp accepted its packet."""
        known = ssrc in self._ssrcs
        if not known and len(self._ssrcs) >= MAX_STREAMS:
            raise SrtpError("limit", f"more than {MAX_STREAMS} SSRCs")
        cell = self._length
        cell[0] = length
        status = function(self._srtp, buffer.cdata, cell)
        if status:
            raise _error(status)
        if not known:
            self._ssrcs.add(ssrc)
        return cell[0]  # type: ignore[no-any-return]
