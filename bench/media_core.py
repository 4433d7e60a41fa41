"""The relay table alone: µs per packet through the sans-I/O ``Relay.forward``
(no sockets, no reactor), for the modes of ``bench/media.py``. The quick way
to check a change to ``appliance/media/relay.py`` or to the SRTP contexts.

    .venv/bin/python bench/media_core.py [--calls 400] [--seconds-of-media 5] [--profile]

Packets are built (and, on SRTP sides, protected) beforehand, one every 20 ms
per call and direction, interleaved as the load generator sends them; the
timed loop copies each into the relay's buffer (as ``recvfrom_into`` does in
``appliance/media/udp.py``) and calls ``forward`` on it. It checks that every
packet comes out addressed to the other side. Best of three runs, in CPU
time of this process (the machine is shared: wall time would count others).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import secrets
import struct
import time
from collections.abc import Sequence

from appliance.media.relay import PortPool, Relay
from appliance.media.srtp import Direction, SrtpContext

SUITE = "AES_CM_128_HMAC_SHA1_80"
MODES = {"plain": (False, False), "plain-srtp": (False, True), "srtp-srtp": (True, True)}
RTP = struct.Struct("!BBHII")
PAYLOAD = bytes(160)
RUNS = 3


def _context(key: bytes, direction: Direction) -> SrtpContext:
    return SrtpContext(SUITE, key[:16], key[16:], direction)


def build(
    mode: str, calls: int, packets_per_stream: int
) -> tuple[Relay, list[tuple[int, bytes, tuple[str, int]]]]:
    """A relay with ``calls`` configured calls, and the datagrams to feed it
    (our port, data, source), in sending order."""
    a_srtp, b_srtp = MODES[mode]
    relay = Relay(PortPool())
    streams = []
    for number in range(calls):
        session = relay.open(f"core-{number}", 0.0)
        assert session is not None
        for side, (leg, srtp) in enumerate(((session.a, a_srtp), (session.b, b_srtp))):
            peer = ("127.0.0.1", 40000 + 2 * number + side)
            sends, receives = (secrets.token_bytes(30), secrets.token_bytes(30))
            relay.configure(
                leg,
                expected=peer,
                rtcp_mux=False,
                inbound=_context(sends, Direction.INBOUND) if srtp else None,
                outbound=_context(receives, Direction.OUTBOUND) if srtp else None,
                suite=SUITE if srtp else None,
                now=0.0,
            )
            protect = _context(sends, Direction.OUTBOUND).protect if srtp else None
            streams.append((leg.rtp_port, peer, 0x5EED0000 + 2 * number + side, protect))
    datagrams = []
    for sequence in range(packets_per_stream):
        for port, peer, ssrc, protect in streams:
            packet = RTP.pack(0x80, 0, 1000 + sequence, sequence * 160, ssrc) + PAYLOAD
            datagrams.append((port, protect(packet) if protect else packet, peer))
    return relay, datagrams


def measure(mode: str, calls: int, seconds: float, profile: bool) -> float:
    """Best-of-runs µs per ``forward``; each run on a fresh relay."""
    best = float("inf")
    for _ in range(RUNS):
        relay, datagrams = build(mode, calls, int(seconds * 50))
        forward, view = relay.forward, relay.buffer.view
        profiler = cProfile.Profile() if profile else None
        missing = 0
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        for port, data, source in datagrams:
            length = len(data)
            view[:length] = data
            if forward(port, length, source, 1.0) is None:
                missing += 1
        if profiler is not None:
            profiler.disable()
        elapsed = time.process_time() - started
        if missing:
            raise SystemExit(f"{mode}: {missing} of {len(datagrams)} packets were not relayed")
        best = min(best, elapsed / len(datagrams) * 1e6)
        if profiler is not None:
            print(f"--- {mode}")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
            profile = False
    return best


def main(argv: Sequence[str] | None = None) -> None:
    """Print µs per packet per mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--seconds-of-media", type=float, default=5.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the first run")
    args = parser.parse_args(argv)
    print(f"Relay.forward alone, {args.calls} calls, best of {RUNS}")
    for mode in MODES:
        figure = measure(mode, args.calls, args.seconds_of_media, args.profile)
        print(f"  {mode:<12} {figure:6.2f} µs per packet")


if __name__ == "__main__":
    main()
