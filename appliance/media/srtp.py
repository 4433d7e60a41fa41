"""SRTP and SRTCP contexts for the relay: one interface for every SDES suite.

An :class:`SrtpContext` is one direction of one leg: an inbound context
unprotects what the peer sends, an outbound context protects what we send it.
It is built from the SDES suite name, the master key and the master salt.
Behind it:

- AES_CM_128_HMAC_SHA1_80/32 and AEAD_AES_128_GCM / AEAD_AES_256_GCM:
  libsrtp through pylibsrtp's public API (``Policy``, ``Session``);
- AES_256_CM_HMAC_SHA1_80/32 (RFC 6188), which pylibsrtp 1.0 lacks: the
  native implementation in :mod:`appliance.media.srtp_cm`, proved against the
  RFC test vectors and byte-identical to pylibsrtp on the 128-bit suites.

Both behave alike to the caller: the same :class:`SrtpError` (with a
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

import pylibsrtp

from appliance.media.srtp_cm import (
    MAX_STREAMS,
    REPLAY_WINDOW,
    AesCmHmacSha1,
    ErrorKind,
    SrtpError,
    check_rtcp,
    rtp_header_length,
)

__all__ = [
    "MAX_PACKET_LENGTH",
    "MAX_RTCP_LENGTH",
    "MAX_RTP_LENGTH",
    "SUITES",
    "Direction",
    "SrtpContext",
    "SrtpError",
    "SuiteParameters",
]

#: Largest SRTP/SRTCP packet we unprotect. pylibsrtp copies every packet into
#: a 1500-byte buffer; the native suites keep the same limits so the relay's
#: packet sizes never depend on the suite.
MAX_PACKET_LENGTH = 1500
#: Largest RTP packet we protect: 1500 less libsrtp's largest SRTP trailer
#: (a 16-byte tag and a 128-byte MKI), which pylibsrtp keeps free.
MAX_RTP_LENGTH = 1500 - 16 - 128
#: Largest RTCP packet we protect: the same, less the 4-byte SRTCP index.
MAX_RTCP_LENGTH = MAX_RTP_LENGTH - 4


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
    #: The pylibsrtp profile, or None for the native AES-CM implementation.
    profile: int | None


_P = pylibsrtp.Policy
#: Every suite we can key, by SDES name (RFC 4568 §6.2, RFC 6188, RFC 7714 §14.1).
SUITES: Mapping[str, SuiteParameters] = MappingProxyType(
    {
        "AES_CM_128_HMAC_SHA1_80": SuiteParameters(
            16, 14, 10, 10, _P.SRTP_PROFILE_AES128_CM_SHA1_80
        ),
        "AES_CM_128_HMAC_SHA1_32": SuiteParameters(
            16, 14, 4, 10, _P.SRTP_PROFILE_AES128_CM_SHA1_32
        ),
        "AES_256_CM_HMAC_SHA1_80": SuiteParameters(32, 14, 10, 10, None),
        "AES_256_CM_HMAC_SHA1_32": SuiteParameters(32, 14, 4, 10, None),
        "AEAD_AES_128_GCM": SuiteParameters(16, 12, 16, 16, _P.SRTP_PROFILE_AEAD_AES_128_GCM),
        "AEAD_AES_256_GCM": SuiteParameters(32, 12, 16, 16, _P.SRTP_PROFILE_AEAD_AES_256_GCM),
    }
)

#: libsrtp's error texts (pylibsrtp.Error's message) and what they mean here.
_LIBSRTP_KINDS: dict[str, ErrorKind] = {
    "authentication failure": "authentication",
    "replay check failed (bad index)": "replay",
    "replay check failed (index too old)": "replay",
    "packet index is too old to consider": "replay",
    "can't use key any more": "limit",
}


class _Libsrtp:
    """A pylibsrtp session held to :mod:`appliance.media.srtp_cm`'s behaviour:
    the same packet checks before any crypto, the same SSRC limit, errors as
    :class:`SrtpError`."""

    __slots__ = ("_rtcp_trailer", "_rtp_tag", "_session", "_ssrcs")

    def __init__(
        self, profile: int, parameters: SuiteParameters, key: bytes, outbound: bool
    ) -> None:
        policy = pylibsrtp.Policy(
            key=key,
            ssrc_type=_P.SSRC_ANY_OUTBOUND if outbound else _P.SSRC_ANY_INBOUND,
            srtp_profile=profile,
        )
        policy.window_size = REPLAY_WINDOW
        self._session = pylibsrtp.Session(policy)  # libsrtp copies the key; policy goes
        self._rtp_tag = parameters.rtp_tag_length
        self._rtcp_trailer = 4 + parameters.rtcp_tag_length
        self._ssrcs: set[bytes] = set()

    def __repr__(self) -> str:
        return "<libsrtp session key=<redacted>>"

    def _run(self, method: Callable[[bytes], bytes], packet: bytes, ssrc: bytes) -> bytes:
        known = ssrc in self._ssrcs
        if not known and len(self._ssrcs) >= MAX_STREAMS:
            raise SrtpError("limit", f"more than {MAX_STREAMS} SSRCs")
        try:
            result = method(packet)
        except pylibsrtp.Error as error:
            reason = str(error)
            kind = _LIBSRTP_KINDS.get(reason, "malformed")
            raise SrtpError(kind, f"libsrtp: {reason}") from error
        if not known:
            self._ssrcs.add(ssrc)
        return result

    def protect(self, rtp: bytes) -> bytes:
        if len(rtp) < 12 or rtp[0] != 0x80:  # not the plain 12-byte header: check it all
            rtp_header_length(rtp)
        return self._run(self._session.protect, rtp, rtp[8:12])

    def unprotect(self, srtp: bytes) -> bytes:
        header = 12 if len(srtp) >= 12 and srtp[0] == 0x80 else rtp_header_length(srtp)
        if len(srtp) < header + self._rtp_tag:
            raise SrtpError("malformed", "SRTP packet shorter than its header and tag")
        return self._run(self._session.unprotect, srtp, srtp[8:12])

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        check_rtcp(rtcp, 8)
        return self._run(self._session.protect_rtcp, rtcp, rtcp[4:8])

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        check_rtcp(srtcp, 8 + self._rtcp_trailer)
        return self._run(self._session.unprotect_rtcp, srtcp, srtcp[4:8])


def _wrong_direction(operation: str, direction: Direction) -> Callable[[bytes], bytes]:
    def refuse(packet: bytes) -> bytes:
        raise RuntimeError(f"an {direction.value} SRTP context cannot {operation}")

    return refuse


class SrtpContext:
    """One direction of one SRTP leg: ``suite`` (an SDES name in
    :data:`SUITES`), its master key and master salt, and the
    :class:`Direction`. Keeps per-SSRC state (rollover counters, replay
    windows, SRTCP indexes). Wrong key or salt lengths and unknown suites
    raise ``ValueError``; bad packets :class:`SrtpError`."""

    __slots__ = (
        "_protect",
        "_protect_rtcp",
        "_unprotect",
        "_unprotect_rtcp",
        "direction",
        "suite",
    )
    _protect: Callable[[bytes], bytes]
    _protect_rtcp: Callable[[bytes], bytes]
    _unprotect: Callable[[bytes], bytes]
    _unprotect_rtcp: Callable[[bytes], bytes]

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
        impl: AesCmHmacSha1 | _Libsrtp
        if parameters.profile is None:
            impl = AesCmHmacSha1(master_key, master_salt, parameters.rtp_tag_length)
        else:
            impl = _Libsrtp(parameters.profile, parameters, master_key + master_salt, outbound)
        self.suite = suite
        self.direction = direction
        if outbound:
            self._protect, self._protect_rtcp = impl.protect, impl.protect_rtcp
            self._unprotect = _wrong_direction("unprotect", direction)
            self._unprotect_rtcp = _wrong_direction("unprotect RTCP", direction)
        else:
            self._unprotect, self._unprotect_rtcp = impl.unprotect, impl.unprotect_rtcp
            self._protect = _wrong_direction("protect", direction)
            self._protect_rtcp = _wrong_direction("protect RTCP", direction)

    def __repr__(self) -> str:
        return f"<SrtpContext {self.suite} {self.direction.value} key=<redacted>>"

    def protect(self, rtp: bytes) -> bytes:
        """The SRTP packet for ``rtp`` (outbound contexts)."""
        if len(rtp) > MAX_RTP_LENGTH:
            raise SrtpError("limit", f"RTP packet longer than {MAX_RTP_LENGTH} bytes")
        return self._protect(rtp)

    def unprotect(self, srtp: bytes) -> bytes:
        """The RTP packet inside ``srtp``, authenticated and replay-checked
        (inbound contexts)."""
        if len(srtp) > MAX_PACKET_LENGTH:
            raise SrtpError("limit", f"SRTP packet longer than {MAX_PACKET_LENGTH} bytes")
        return self._unprotect(srtp)

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """The SRTCP packet for the RTCP (compound) packet ``rtcp`` (outbound)."""
        if len(rtcp) > MAX_RTCP_LENGTH:
            raise SrtpError("limit", f"RTCP packet longer than {MAX_RTCP_LENGTH} bytes")
        return self._protect_rtcp(rtcp)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """The RTCP packet inside ``srtcp``, authenticated and replay-checked
        (inbound)."""
        if len(srtcp) > MAX_PACKET_LENGTH:
            raise SrtpError("limit", f"SRTCP packet longer than {MAX_PACKET_LENGTH} bytes")
        return self._unprotect_rtcp(srtcp)
