"""SRTP and SRTCP contexts for the relay: one interface for every SDES suite.

An :class:`SrtpContext` is one direction of one leg: an inbound context
unprotects what the peer sends, an outbound context protects what we send it.
It is built from the SDES suite name, the master key and the master salt.
Behind it:

- AES_CM_128_HMAC_SHA1_80/32 and AEAD_AES_128_GCM / AEAD_AES_256_GCM:
  libsrtp through pylibsrtp's public API (:mod:`appliance.media.srtp_lib`);
- AES_256_CM_HMAC_SHA1_80/32 (RFC 6188), which pylibsrtp 1.0 lacks: the
  native implementation in :mod:`appliance.media.srtp_cm`, proved against the
  RFC test vectors and byte-identical to libsrtp on the 128-bit suites.

Each operation comes in two forms: in place on a
:class:`~appliance.media.srtp_lib.PacketBuffer` (``protect_in_place(buffer,
length)`` returns the new length: the relay's per-packet path) and on bytes
(``protect(packet)``: tests and tools; the packet is copied through a buffer
of the context's own).

Both backends behave alike to the caller: the same :class:`SrtpError` (with a
``kind``) for malformed packets, failed authentication, replays and limits;
the same 64-packet replay window; packets checked to be RTP/RTCP version 2
before any crypto; the same size limits; and, on the sending side, a refusal
to protect an index twice (libsrtp's "replay check failed" on protect; see
FIELD-NOTES: the relay renumbers outgoing sequence numbers per SSRC so that
never happens to good traffic).

Calling ``protect`` on an inbound context (or ``unprotect`` on an outbound
one) is a bug in the caller, not a bad packet: it raises ``RuntimeError``,
which the relay does not swallow as it does :class:`SrtpError`.

Nothing here logs, no error message includes key material, and reprs
redact the keys.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from appliance.media import srtp_lib
from appliance.media.srtp_cm import AesCmHmacSha1, SrtpError
from appliance.media.srtp_lib import (
    MAX_PACKET_LENGTH,
    MAX_RTCP_LENGTH,
    MAX_RTP_LENGTH,
    LibsrtpSession,
    PacketBuffer,
    too_long,
)

__all__ = [
    "MAX_PACKET_LENGTH",
    "MAX_RTCP_LENGTH",
    "MAX_RTP_LENGTH",
    "SUITES",
    "Direction",
    "InPlace",
    "PacketBuffer",
    "SrtpContext",
    "SrtpError",
    "SuiteParameters",
]

#: An operation on the first ``length`` bytes of a buffer; returns the result's length.
InPlace = Callable[[PacketBuffer, int], int]


class Direction(enum.Enum):
    """Which way a context works."""

    #: Unprotects what the peer sends.
    INBOUND = "inbound"
    #: Protects what we send to the peer.
    OUTBOUND = "outbound"


@dataclass(frozen=True)
class SuiteParameters:
    """What a suite needs and adds. Lengths in bytes."""

    key_length: int
    salt_length: int
    #: Tag appended to each SRTP packet.
    rtp_tag_length: int
    #: Tag appended to each SRTCP packet (after the 4-byte E flag and index).
    rtcp_tag_length: int
    #: The libsrtp profile, or None for the native AES-CM implementation.
    profile: int | None


#: Every suite we can key, by SDES name (RFC 4568 §6.2, RFC 6188, RFC 7714 §14.1).
SUITES: Mapping[str, SuiteParameters] = MappingProxyType(
    {
        "AES_CM_128_HMAC_SHA1_80": SuiteParameters(
            16, 14, 10, 10, srtp_lib.PROFILE_AES128_CM_SHA1_80
        ),
        "AES_CM_128_HMAC_SHA1_32": SuiteParameters(
            16, 14, 4, 10, srtp_lib.PROFILE_AES128_CM_SHA1_32
        ),
        "AES_256_CM_HMAC_SHA1_80": SuiteParameters(32, 14, 10, 10, None),
        "AES_256_CM_HMAC_SHA1_32": SuiteParameters(32, 14, 4, 10, None),
        "AEAD_AES_128_GCM": SuiteParameters(16, 12, 16, 16, srtp_lib.PROFILE_AEAD_AES_128_GCM),
        "AEAD_AES_256_GCM": SuiteParameters(32, 12, 16, 16, srtp_lib.PROFILE_AEAD_AES_256_GCM),
    }
)


def _native_in_place(operation: Callable[[bytes], bytes], limit: int, what: str) -> InPlace:
    """A native (bytes in, bytes out) operation run on a buffer, with the
    size limit libsrtp's sessions apply."""

    def run(buffer: PacketBuffer, length: int) -> int:
        if length > limit:
            raise too_long(what, limit)
        view = buffer.view
        result = operation(bytes(view[:length]))
        view[: len(result)] = result
        return len(result)

    return run


def _wrong_direction(operation: str, direction: Direction) -> InPlace:
    def refuse(buffer: PacketBuffer, length: int) -> int:
        raise RuntimeError(f"an {direction.value} SRTP context cannot {operation}")

    return refuse


class SrtpContext:
    """One direction of one SRTP leg: ``suite`` (an SDES name in
    :data:`SUITES`), its master key and master salt, and the
    :class:`Direction`. Keeps per-SSRC state (rollover counters, replay
    windows, SRTCP indexes). Wrong key or salt lengths and unknown suites
    raise ``ValueError``; bad packets :class:`SrtpError`.

    The ``*_in_place`` operations are attributes bound to the backend when the
    context is made, so the relay's call goes straight to it."""

    __slots__ = (
        "_scratch",
        "direction",
        "protect_in_place",
        "protect_rtcp_in_place",
        "suite",
        "unprotect_in_place",
        "unprotect_rtcp_in_place",
    )
    #: RTP to SRTP (outbound contexts).
    protect_in_place: InPlace
    #: SRTP to RTP, authenticated and replay-checked (inbound contexts).
    unprotect_in_place: InPlace
    #: RTCP (compound) to SRTCP (outbound).
    protect_rtcp_in_place: InPlace
    #: SRTCP to RTCP, authenticated and replay-checked (inbound).
    unprotect_rtcp_in_place: InPlace

    def __init__(
        self, suite: str, master_key: bytes, master_salt: bytes, direction: Direction
    ) -> None:
        parameters = SUITES.get(suite)
        if parameters is None:  # the name is not quoted: it came from a peer's SDP
            raise ValueError(f"unsupported SRTP suite; supported: {', '.join(SUITES)}")
        if len(master_key) != parameters.key_length:
            raise ValueError(
                f"{suite} master key must be {parameters.key_length} bytes, got {len(master_key)}"
            )
        if len(master_salt) != parameters.salt_length:
            raise ValueError(
                f"{suite} master salt must be {parameters.salt_length} bytes,"
                f" got {len(master_salt)}"
            )
        outbound = direction is Direction.OUTBOUND
        operations: tuple[InPlace, InPlace, InPlace, InPlace]
        if parameters.profile is None:
            native = AesCmHmacSha1(master_key, master_salt, parameters.rtp_tag_length)
            operations = (
                _native_in_place(native.protect, MAX_RTP_LENGTH, "RTP"),
                _native_in_place(native.unprotect, MAX_PACKET_LENGTH, "SRTP"),
                _native_in_place(native.protect_rtcp, MAX_RTCP_LENGTH, "RTCP"),
                _native_in_place(native.unprotect_rtcp, MAX_PACKET_LENGTH, "SRTCP"),
            )
        else:
            session = LibsrtpSession(
                parameters.profile,
                master_key + master_salt,
                outbound,
                parameters.rtp_tag_length,
                parameters.rtcp_tag_length,
            )
            operations = (
                session.protect,
                session.unprotect,
                session.protect_rtcp,
                session.unprotect_rtcp,
            )
        protect, unprotect, protect_rtcp, unprotect_rtcp = operations
        self.suite = suite
        self.direction = direction
        self._scratch: PacketBuffer | None = None
        if outbound:
            self.protect_in_place, self.protect_rtcp_in_place = protect, protect_rtcp
            self.unprotect_in_place = _wrong_direction("unprotect", direction)
            self.unprotect_rtcp_in_place = _wrong_direction("unprotect RTCP", direction)
        else:
            self.unprotect_in_place, self.unprotect_rtcp_in_place = unprotect, unprotect_rtcp
            self.protect_in_place = _wrong_direction("protect", direction)
            self.protect_rtcp_in_place = _wrong_direction("protect RTCP", direction)

    def __repr__(self) -> str:
        return f"<SrtpContext {self.suite} {self.direction.value} key=<redacted>>"

    def _on_bytes(self, operation: InPlace, packet: bytes) -> bytes:
        """``operation`` on a copy of ``packet`` in this context's own buffer."""
        if len(packet) > MAX_PACKET_LENGTH:  # longer than any operation takes
            raise too_long("", MAX_PACKET_LENGTH)
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = PacketBuffer(MAX_PACKET_LENGTH)
        scratch.view[: len(packet)] = packet
        return bytes(scratch.view[: operation(scratch, len(packet))])

    def protect(self, rtp: bytes) -> bytes:
        """The SRTP packet for ``rtp`` (outbound contexts)."""
        return self._on_bytes(self.protect_in_place, rtp)

    def unprotect(self, srtp: bytes) -> bytes:
        """The RTP packet inside ``srtp``, authenticated and replay-checked
        (inbound contexts)."""
        return self._on_bytes(self.unprotect_in_place, srtp)

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """The SRTCP packet for the RTCP (compound) packet ``rtcp`` (outbound)."""
        return self._on_bytes(self.protect_rtcp_in_place, rtcp)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """The RTCP packet inside ``srtcp``, authenticated and replay-checked
        (inbound)."""
        return self._on_bytes(self.unprotect_rtcp_in_place, srtcp)
