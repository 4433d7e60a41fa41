"""Microseconds per SRTP/SRTCP operation, per suite, through
:class:`appliance.media.srtp.SrtpContext`.

For each suite: protect and unprotect of RTP with a 160-byte payload (20 ms
of G.711) and of a 28-byte RTCP sender report, on bytes; "relay" is
unprotect on one leg plus protect on the other. "in place" times RTP through
``protect_in_place`` and ``unprotect_in_place`` on a buffer, as the relay
calls them (each packet first copied into the buffer, as ``recvfrom_into``
would put it there). The 128-bit AES-CM suites are also timed through the native
implementation (:class:`appliance.media.srtp_cm.AesCmHmacSha1`) to show what
the 256-bit suites pay for not being in libsrtp. Best of several runs; prints
figures and never fails on time.

    .venv/bin/python bench/srtp_crypto.py [--packets N] [--runs R]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from appliance.media.srtp import SUITES, Direction, PacketBuffer, SrtpContext
from appliance.media.srtp_cm import AesCmHmacSha1

SSRC = 0x5EED1234


def rtp(seq: int, payload_length: int = 160) -> bytes:
    """An RTP packet of PCMU."""
    return (
        bytes([0x80, 0])
        + (seq & 0xFFFF).to_bytes(2, "big")
        + (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big")
        + SSRC.to_bytes(4, "big")
        + bytes([seq & 0xFF]) * payload_length
    )


def rtcp() -> bytes:
    """A sender report without report blocks."""
    return bytes([0x80, 200, 0, 6]) + SSRC.to_bytes(4, "big") + bytes(20)


class _Pair:
    """Anything with the four operations (a context pair, or native objects)."""

    def __init__(
        self,
        protect: Callable[[bytes], bytes],
        unprotect: Callable[[bytes], bytes],
        protect_rtcp: Callable[[bytes], bytes],
        unprotect_rtcp: Callable[[bytes], bytes],
    ) -> None:
        self.protect = protect
        self.unprotect = unprotect
        self.protect_rtcp = protect_rtcp
        self.unprotect_rtcp = unprotect_rtcp


def contexts(suite: str) -> _Pair:
    """An outbound and an inbound SrtpContext sharing keys."""
    parameters = SUITES[suite]
    key, salt = bytes(range(parameters.key_length)), bytes(range(parameters.salt_length))
    out = SrtpContext(suite, key, salt, Direction.OUTBOUND)
    into = SrtpContext(suite, key, salt, Direction.INBOUND)
    return _Pair(out.protect, into.unprotect, out.protect_rtcp, into.unprotect_rtcp)


def native(suite: str) -> _Pair:
    """The native implementation for a 128-bit suite, bypassing SrtpContext."""
    parameters = SUITES[suite]
    key, salt = bytes(range(parameters.key_length)), bytes(range(parameters.salt_length))
    out = AesCmHmacSha1(key, salt, parameters.rtp_tag_length)
    into = AesCmHmacSha1(key, salt, parameters.rtp_tag_length)
    return _Pair(out.protect, into.unprotect, out.protect_rtcp, into.unprotect_rtcp)


def _per_call(
    operation: Callable[[bytes], bytes], packets: Sequence[bytes]
) -> tuple[float, list[bytes]]:
    started = time.perf_counter()
    results = [operation(packet) for packet in packets]
    return (time.perf_counter() - started) / len(packets) * 1e6, results


def measure(make: Callable[[str], _Pair], suite: str, count: int, runs: int) -> dict[str, float]:
    """Best-of-``runs`` µs per operation over ``count`` packets; each run uses
    fresh contexts and new sequence numbers (an index is protected once)."""
    best: dict[str, float] = {}
    for run in range(runs):
        pair = make(suite)
        plain = [rtp(run * count + seq) for seq in range(count)]
        reports = [rtcp()] * count
        figures = {}
        figures["protect"], protected = _per_call(pair.protect, plain)
        figures["unprotect"], _ = _per_call(pair.unprotect, protected)
        figures["protect_rtcp"], protected = _per_call(pair.protect_rtcp, reports)
        figures["unprotect_rtcp"], _ = _per_call(pair.unprotect_rtcp, protected)
        for name, value in figures.items():
            best[name] = min(value, best.get(name, value))
    best["relay"] = best["unprotect"] + best["protect"]
    return best


def measure_in_place(suite: str, count: int, runs: int) -> dict[str, float]:
    """Best-of-``runs`` µs per in-place RTP operation (the relay's path)."""
    parameters = SUITES[suite]
    key, salt = bytes(range(parameters.key_length)), bytes(range(parameters.salt_length))
    buffer = PacketBuffer(4096)
    view = buffer.view
    best: dict[str, float] = {}
    for run in range(runs):
        out = SrtpContext(suite, key, salt, Direction.OUTBOUND)
        into = SrtpContext(suite, key, salt, Direction.INBOUND)
        plain = [rtp(run * count + seq) for seq in range(count)]
        protected = [SrtpContext(suite, key, salt, Direction.OUTBOUND).protect(p) for p in plain]
        for name, operation, packets in (
            ("protect", out.protect_in_place, plain),
            ("unprotect", into.unprotect_in_place, protected),
        ):
            started = time.perf_counter()
            for packet in packets:
                length = len(packet)
                view[:length] = packet
                operation(buffer, length)
            figure = (time.perf_counter() - started) / count * 1e6
            best[name] = min(figure, best.get(name, figure))
    best["relay"] = best["unprotect"] + best["protect"]
    return best


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    columns = ("protect", "unprotect", "relay", "protect_rtcp", "unprotect_rtcp")
    print(f"µs per operation, RTP payload 160 bytes, best of {args.runs} x {args.packets}")
    print(f"{'suite':<34}{'backend':<10}" + "".join(f"{c:>15}" for c in columns))
    rows: list[tuple[str, str, Callable[[str], _Pair]]] = [
        (suite, "libsrtp" if SUITES[suite].profile is not None else "native", contexts)
        for suite in SUITES
    ]
    rows += [(suite, "native*", native) for suite in SUITES if suite.startswith("AES_CM_128")]
    for suite, backend, make in rows:
        figures = measure(make, suite, args.packets, args.runs)
        print(f"{suite:<34}{backend:<10}" + "".join(f"{figures[c]:>15.2f}" for c in columns))
    print("native*: AesCmHmacSha1 directly, without SrtpContext (the 128-bit CM suites only)")
    print()
    print("in place (RTP, as the relay calls it)")
    rtp_columns = ("protect", "unprotect", "relay")
    print(f"{'suite':<34}{'backend':<10}" + "".join(f"{c:>15}" for c in rtp_columns))
    for suite in SUITES:
        backend = "libsrtp" if SUITES[suite].profile is not None else "native"
        figures = measure_in_place(suite, args.packets, args.runs)
        print(f"{suite:<34}{backend:<10}" + "".join(f"{figures[c]:>15.2f}" for c in rtp_columns))


if __name__ == "__main__":
    main()
