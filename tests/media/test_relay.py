"""The relay table: ports, latching and bleed protection, re-keying, renumbering,
loss counting and idle expiry, with a fake cipher and a fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from appliance.media.relay import Forward, MediaIdle, PortPool, Relay
from appliance.media.srtp import Direction, PacketBuffer, SrtpContext, SrtpError

NOW = 1_000.0
ALICE, BOB, MALLORY = ("127.0.0.10", 4000), ("127.0.0.11", 5000), ("127.0.0.66", 6666)


class XorCipher:
    """A stand-in for an SRTP context: 'protects' by XOR and appending a tag, on
    bytes and (as the relay calls it) in place."""

    def __init__(self, key: int) -> None:
        self.key = key

    def _seal(self, packet: bytes) -> bytes:
        return packet[:12] + bytes(b ^ self.key for b in packet[12:]) + bytes([self.key])

    def _open(self, packet: bytes) -> bytes:
        if not packet or packet[-1] != self.key:
            raise SrtpError("authentication", "bad tag")
        return packet[:12] + bytes(b ^ self.key for b in packet[12:-1])

    def protect(self, packet: bytes) -> bytes:
        return self._seal(packet)

    def unprotect(self, packet: bytes) -> bytes:
        return self._open(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._seal(packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return self._open(packet)

    @staticmethod
    def _in_place(operation: Callable[[bytes], bytes], buffer: PacketBuffer, length: int) -> int:
        result = operation(bytes(buffer.view[:length]))
        buffer.view[: len(result)] = result
        return len(result)

    def protect_in_place(self, buffer: PacketBuffer, length: int) -> int:
        return self._in_place(self._seal, buffer, length)

    def unprotect_in_place(self, buffer: PacketBuffer, length: int) -> int:
        return self._in_place(self._open, buffer, length)

    def protect_rtcp_in_place(self, buffer: PacketBuffer, length: int) -> int:
        return self._in_place(self._seal, buffer, length)

    def unprotect_rtcp_in_place(self, buffer: PacketBuffer, length: int) -> int:
        return self._in_place(self._open, buffer, length)


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\x55" * 20, pt: int = 0) -> bytes:
    """A minimal RTP packet."""
    return (
        bytes([0x80, pt])
        + seq.to_bytes(2, "big")
        + b"\0\0\0\0"
        + ssrc.to_bytes(4, "big")
        + payload
    )


def _relay(pairs: int = 100) -> Relay:
    counter = itertools.count()
    return Relay(PortPool(20000, 20000 + 2 * pairs, choose=lambda n: next(counter) % n))


def _plain_call(relay: Relay) -> tuple[int, int]:
    session = relay.open("call-1", NOW)
    assert session is not None
    for leg, peer in ((session.a, ALICE), (session.b, BOB)):
        relay.configure(
            leg, expected=peer, rtcp_mux=False, inbound=None, outbound=None, suite=None, now=NOW
        )
    return session.a.rtp_port, session.b.rtp_port


def test_ports_are_even_pairs_unique_and_released() -> None:
    """Pairs are even, never handed out twice, exhaustion refuses without holding
    anything, and closing a call gives its ports back."""
    relay = _relay(pairs=3)
    first = relay.open("one", NOW)
    assert first is not None and first.a.rtp_port % 2 == 0
    assert first.a.rtp_port != first.b.rtp_port
    assert relay.open("two", NOW) is None and relay.pool.in_use == 2
    relay.close("one")
    assert relay.pool.in_use == 0 and relay.open("two", NOW) is not None


def test_plain_packets_cross_to_the_other_leg() -> None:
    """Alice's packet leaves from Bob's leg port to Bob's address, unchanged."""
    relay = _relay()
    a_port, b_port = _plain_call(relay)
    out = relay.receive(a_port, rtp(1), ALICE, NOW + 0.02)
    assert out == Forward(b_port, BOB, rtp(1))
    back = relay.receive(b_port, rtp(7, ssrc=9), BOB, NOW + 0.02)
    assert back == Forward(a_port, ALICE, rtp(7, ssrc=9))


def test_bleed_from_another_address_is_dropped_and_counted() -> None:
    """Once latched, packets from another address are neither forwarded nor latched."""
    relay = _relay()
    a_port, _ = _plain_call(relay)
    relay.receive(a_port, rtp(1), ALICE, NOW + 0.02)
    assert relay.receive(a_port, rtp(2, ssrc=0xBAD), MALLORY, NOW + 0.04) is None
    session = relay.sessions["call-1"]
    assert session.a.dropped == 1 and session.a.peer == ALICE


def test_a_nat_rebinding_of_the_same_stream_moves_the_latch() -> None:
    """The same SSRC continuing with a small sequence step from a new port moves the
    latch; a big jump or a different SSRC from there does not."""
    relay = _relay()
    a_port, _ = _plain_call(relay)
    relay.receive(a_port, rtp(10), ALICE, NOW)
    moved = ("127.0.0.10", 4100)
    assert relay.receive(a_port, rtp(5000), moved, NOW + 1) is None
    assert relay.receive(a_port, rtp(11, ssrc=0x999), moved, NOW + 1) is None
    assert relay.receive(a_port, rtp(11), moved, NOW + 1) is not None
    assert relay.sessions["call-1"].a.peer == moved


def test_latching_window() -> None:
    """Before any packet, a stranger may latch only inside the window after signalling;
    the address the SDP named may latch at any time."""
    relay = _relay()
    a_port, _ = _plain_call(relay)
    assert relay.receive(a_port, rtp(1), MALLORY, NOW + 11) is None
    assert relay.receive(a_port, rtp(1), ALICE, NOW + 11) is not None


def test_the_sdp_address_takes_the_latch_back_from_a_stranger() -> None:
    """A stranger racing the phone inside the window latches first, but the phone's
    first packet from the address its SDP named takes the latch back for good."""
    relay = _relay()
    a_port, _ = _plain_call(relay)
    assert relay.receive(a_port, rtp(1, ssrc=0xBAD), MALLORY, NOW + 0.01) is not None
    assert relay.receive(a_port, rtp(1), ALICE, NOW + 0.02) is not None
    assert relay.receive(a_port, rtp(2, ssrc=0xBAD), MALLORY, NOW + 0.03) is None
    assert relay.sessions["call-1"].a.peer == ALICE


def test_srtp_legs_learn_only_from_packets_that_authenticate() -> None:
    """On an SRTP leg an unauthenticated packet is an auth failure and latches
    nothing; an authentic one is decrypted with this leg's keys and re-encrypted with
    the other leg's."""
    relay = _relay()
    session = relay.open("call-1", NOW)
    assert session is not None
    relay.configure(
        session.a,
        expected=ALICE,
        rtcp_mux=True,
        inbound=XorCipher(1),
        outbound=XorCipher(2),
        suite="AES_CM_128_HMAC_SHA1_80",
        now=NOW,
    )
    relay.configure(
        session.b,
        expected=BOB,
        rtcp_mux=True,
        inbound=XorCipher(3),
        outbound=XorCipher(4),
        suite="AEAD_AES_256_GCM",
        now=NOW,
    )
    forged = rtp(1)
    assert relay.receive(session.a.rtp_port, forged, MALLORY, NOW) is None
    assert session.a.auth_failures == 1 and session.a.peer is None
    sealed = XorCipher(1).protect(rtp(1))
    out = relay.receive(session.a.rtp_port, sealed, ALICE, NOW)
    assert out is not None and out.destination == BOB
    assert XorCipher(4).unprotect(out.data) == rtp(1)
    assert session.a.peer == ALICE


def test_outgoing_sequence_numbers_only_move_forward() -> None:
    """A phone's sequence rewind or restart never makes the outgoing numbers go back
    toward an SRTP leg (which would fail with 'index too old')."""
    relay = _relay()
    session = relay.open("call-1", NOW)
    assert session is not None
    relay.configure(
        session.a, expected=ALICE, rtcp_mux=False, inbound=None, outbound=None, suite=None, now=NOW
    )
    relay.configure(
        session.b,
        expected=BOB,
        rtcp_mux=False,
        inbound=XorCipher(3),
        outbound=XorCipher(4),
        suite="AES_CM_128_HMAC_SHA1_80",
        now=NOW,
    )
    sent = []
    for seq in (100, 101, 102, 7, 8, 60000, 60001):
        out = relay.receive(session.a.rtp_port, rtp(seq), ALICE, NOW)
        assert out is not None
        sent.append(int.from_bytes(XorCipher(4).unprotect(out.data)[2:4], "big"))
    assert sent == [100, 101, 102, 103, 104, 105, 106]


def test_losses_are_counted_from_sequence_gaps() -> None:
    """A gap of n sequence numbers counts n-1 lost packets on the leg they came in on."""
    relay = _relay()
    a_port, _ = _plain_call(relay)
    for seq in (1, 2, 5, 6, 10):
        relay.receive(a_port, rtp(seq), ALICE, NOW)
    assert relay.sessions["call-1"].a.lost == 5


def test_rtcp_with_and_without_mux() -> None:
    """Without rtcp-mux RTCP arrives on the odd port and leaves from the other leg's
    odd port to the peer's RTCP port; with rtcp-mux it shares the RTP port."""
    relay = _relay()
    a_port, b_port = _plain_call(relay)
    relay.receive(a_port, rtp(1), ALICE, NOW)
    relay.receive(b_port, rtp(1, ssrc=9), BOB, NOW)
    report = bytes([0x80, 200]) + b"\0\x06" + b"\0" * 20
    out = relay.receive(a_port + 1, report, (ALICE[0], ALICE[1] + 1), NOW)
    assert out == Forward(b_port + 1, (BOB[0], BOB[1] + 1), report)
    session = relay.sessions["call-1"]
    session.a.rtcp_mux = session.b.rtcp_mux = True
    muxed = relay.receive(a_port, report, ALICE, NOW)
    assert muxed == Forward(b_port, BOB, report)


def test_silent_calls_expire_and_active_ones_do_not() -> None:
    """No media in either direction for the idle time ends the call; any packet
    resets the clock."""
    relay = Relay(PortPool(20000, 20100), idle_seconds=60)
    a_port, _ = _plain_call(relay)
    assert relay.expire_idle(NOW + 59) == []
    relay.receive(a_port, rtp(1), ALICE, NOW + 50)
    assert relay.expire_idle(NOW + 100) == []
    assert relay.expire_idle(NOW + 110) == [MediaIdle("call-1")]


@pytest.mark.parametrize("size", [0, 5, 11])
def test_runts_are_ignored(size: int) -> None:
    """Datagrams shorter than an RTP header are dropped without touching state."""
    relay = _relay()
    a_port, _ = _plain_call(relay)
    assert relay.receive(a_port, b"\x80" * size, ALICE, NOW) is None
    assert relay.sessions["call-1"].a.peer is None


def test_srtp_to_srtp_in_the_buffer_with_real_contexts() -> None:
    """With libsrtp contexts on both legs, a packet received into the relay's
    buffer is unprotected, renumbered and protected there: what forward() says
    to send is the other leg's SRTP of the same media, with outgoing numbers
    that only move forward; a packet that fails authentication is counted and
    nothing is sent."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    key_a, key_b = bytes(range(30)), bytes(range(30, 60))

    def context(key: bytes, direction: Direction) -> SrtpContext:
        return SrtpContext(suite, key[:16], key[16:], direction)

    relay = _relay()
    session = relay.open("call-1", NOW)
    assert session is not None
    for leg, peer, key in ((session.a, ALICE, key_a), (session.b, BOB, key_b)):
        relay.configure(
            leg,
            expected=peer,
            rtcp_mux=False,
            inbound=context(key, Direction.INBOUND),
            outbound=context(key[::-1], Direction.OUTBOUND),
            suite=suite,
            now=NOW,
        )
    alice, bob = context(key_a, Direction.OUTBOUND), context(key_b[::-1], Direction.INBOUND)
    view = relay.buffer.view
    received = []
    for seq in (100, 101, 102, 9000, 9001):  # a jump: renumbered as a restart
        packet = alice.protect(rtp(seq, payload=bytes([seq & 0xFF]) * 160))
        view[: len(packet)] = packet
        outgoing = relay.forward(session.a.rtp_port, len(packet), ALICE, NOW)
        assert outgoing is not None
        port, destination, length = outgoing
        assert (port, destination, length) == (session.b.rtp_port, BOB, len(packet))
        plain = bob.unprotect(bytes(view[:length]))
        assert plain[12:] == bytes([seq & 0xFF]) * 160
        received.append(int.from_bytes(plain[2:4], "big"))
    assert received == [100, 101, 102, 103, 104]
    forged = alice.protect(rtp(9002))[:-1] + b"\0"
    view[: len(forged)] = forged
    assert relay.forward(session.a.rtp_port, len(forged), MALLORY, NOW) is None
    assert session.a.auth_failures == 1 and session.a.peer == ALICE
