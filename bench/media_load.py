"""The media benchmark's load generator: both phones of many simulated G.711
calls, in one process (``bench/media.py`` starts one or more of these).

Each call has a caller (A) and a callee (B). Every 20 ms each side sends one
RTP packet of 160 bytes of payload to the relay port it was given, and
counts what comes back. The calls are spread evenly over the 20 ms (in
1 ms slots), as unsynchronised phones would be. The phones of many calls
share a few sockets per side: the relay only sees source addresses, and
fewer, busier sockets keep this process cheap; each packet that comes back
is told apart by the relay port it came from.

On an SRTP side, packets are protected on the fly with that side's sending
key (pylibsrtp). Whatever comes back is checked:

- every packet: it comes from a known relay port and carries the SSRC of the
  other side of the same call (so nothing crosses between calls);
- one packet in ``sample_every`` per stream: on an SRTP side it must
  authenticate with the key the relay announced for that side, and the
  payload (plain or decrypted) must be the other side's.

Protocol on stdin/stdout, one JSON object per line:

1. in ``{"index", "first_call", "calls", "sockets"}``; out the local port of
   each call's A and B socket (``{"a": [...], "b": [...]}``);
2. in the plan (relay ports, keys, timing on the ``time.monotonic`` clock,
   which all processes share); the generator runs it and prints its figures.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp

#: Each generator socket's buffers (the kernel caps them at rmem_max/wmem_max).
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
#: First RTP sequence number of every stream.
FIRST_SEQUENCE = 1000
#: Packets read from one socket before the loop goes back to sending.
MAX_READS = 512
RTP_HEADER = struct.Struct("!BBHII")
_POLICY = pylibsrtp.Policy
SIDES = ("a", "b")


def ssrc_of(call: int, side: int) -> int:
    """The SSRC of one side (0 = A, 1 = B) of a call (global call number)."""
    return 0x5EED0000 + call * 2 + side


def payload_of(call: int, side: int, length: int) -> bytes:
    """The payload one side of a call sends: marked with the call and the side."""
    return (bytes([call & 0xFF, (call >> 8) & 0xFF, 0xA0 + side]) * (length // 3 + 1))[:length]


def session(key_hex: str, outbound: bool) -> pylibsrtp.Session:
    """An AES_CM_128_HMAC_SHA1_80 context for any SSRC (key is master key + salt)."""
    policy = pylibsrtp.Policy(
        key=bytes.fromhex(key_hex),
        ssrc_type=_POLICY.SSRC_ANY_OUTBOUND if outbound else _POLICY.SSRC_ANY_INBOUND,
        srtp_profile=_POLICY.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy)


def bind_sockets(count: int) -> list[socket.socket]:
    """``count`` non-blocking UDP sockets on 127.0.0.1 with large buffers."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


class Generator:
    """The calls of one generator process, from its setup and plan messages."""

    def __init__(
        self, setup: dict[str, Any], plan: dict[str, Any], sides: list[list[socket.socket]]
    ) -> None:
        self.first_call = int(setup["first_call"])
        self.sockets = [sock for side in sides for sock in side]
        self.ptime = float(plan["ptime_ms"]) / 1000
        self.slots = int(plan["slots"])
        self.sample_every = int(plan["sample_every"])
        length = int(plan["payload_bytes"])
        #: Per slot: (sendto, relay address, ssrc, payload, protect or None).
        self.schedule: list[list[tuple[Callable[..., int], tuple[str, int], int, bytes, Any]]] = [
            [] for _ in range(self.slots)
        ]
        #: Per relay port: the stream it feeds (index into the lists below).
        self.by_port: dict[int, int] = {}
        self.expected_ssrc: list[bytes] = []
        self.expected_payload: list[bytes] = []
        self.verify: list[Callable[[bytes], bytes] | None] = []
        self.counts: list[int] = []
        number = 0
        for offset, call in enumerate(plan["calls"]):
            global_call = self.first_call + offset
            for side, name in enumerate(SIDES):
                sock = sides[side][offset % len(sides[side])]
                target = ("127.0.0.1", int(call[f"{name}_target"]))
                send_key = call[f"{name}_send"]
                protect = session(send_key, True).protect if send_key else None
                slot = (number * self.slots) // (2 * len(plan["calls"]))
                number += 1
                self.schedule[slot].append(
                    (
                        sock.sendto,
                        target,
                        ssrc_of(global_call, side),
                        payload_of(global_call, side, length),
                        protect,
                    )
                )
                # What this side receives comes from its target port, sent by the other side.
                self.by_port[target[1]] = len(self.counts)
                other = 1 - side
                self.expected_ssrc.append(ssrc_of(global_call, other).to_bytes(4, "big"))
                self.expected_payload.append(payload_of(global_call, other, length))
                receive_key = call[f"{name}_receive"]
                self.verify.append(session(receive_key, False).unprotect if receive_key else None)
                self.counts.append(0)
        self.sent = 0
        self.send_errors = 0
        self.received = 0
        self.stray = 0
        self.wrong_ssrc = 0
        self.verified = 0
        self.auth_failed = 0
        self.wrong_payload = 0

    def run(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Send and receive until the plan's end; the figures."""
        start = float(plan["start"])
        marks = [float(plan["warm_up_end"]), float(plan["measure_end"])]
        send_end = float(plan["send_end"])
        drain_end = float(plan["drain_end"])
        snapshots: list[dict[str, float]] = []
        poller = select.epoll()
        readers = {}
        for sock in self.sockets:
            poller.register(sock.fileno(), select.EPOLLIN)
            readers[sock.fileno()] = sock.recvfrom
        slot_seconds = self.ptime / self.slots
        tick = 0
        next_send = start
        time.sleep(max(0.0, start - time.monotonic()))
        while True:
            now = time.monotonic()
            if marks and now >= marks[0]:
                marks.pop(0)
                snapshots.append({"at": now, "sent": self.sent, "received": self.received})
            if now >= drain_end:
                break
            due = now >= next_send and now < send_end
            if due:
                self._send_slot(tick)
                tick += 1
                next_send = start + tick * slot_seconds
                timeout = 0.0
            else:
                wake = next_send if now < send_end else drain_end
                timeout = max(0.0, min(wake, marks[0] if marks else wake) - now)
            for fd, _ in poller.poll(timeout):
                self._drain(readers[fd])
        poller.close()
        silent = sum(1 for count in self.counts if count == 0)
        return {
            "sent": self.sent,
            "send_errors": self.send_errors,
            "received": self.received,
            "snapshots": snapshots,
            "streams": len(self.counts),
            "silent_streams": silent,
            "stray": self.stray,
            "wrong_ssrc": self.wrong_ssrc,
            "verified": self.verified,
            "auth_failed": self.auth_failed,
            "wrong_payload": self.wrong_payload,
        }

    def _send_slot(self, tick: int) -> None:
        cycle, slot = divmod(tick, self.slots)
        sequence = (FIRST_SEQUENCE + cycle) & 0xFFFF
        timestamp = (cycle * 160) & 0xFFFFFFFF
        pack = RTP_HEADER.pack
        for sendto, target, ssrc, payload, protect in self.schedule[slot]:
            packet = pack(0x80, 0, sequence, timestamp, ssrc) + payload
            if protect is not None:
                packet = protect(packet)
            try:
                sendto(packet, target)
            except OSError:
                self.send_errors += 1
                continue
            self.sent += 1

    def _drain(self, recvfrom: Callable[[int], tuple[bytes, Any]]) -> None:
        by_port = self.by_port
        counts = self.counts
        expected_ssrc = self.expected_ssrc
        sample_every = self.sample_every
        for _ in range(MAX_READS):
            try:
                data, source = recvfrom(4096)
            except BlockingIOError:
                return
            stream = by_port.get(source[1])
            if stream is None:
                self.stray += 1
                continue
            self.received += 1
            count = counts[stream] = counts[stream] + 1
            if data[8:12] != expected_ssrc[stream]:
                self.wrong_ssrc += 1
            if count % sample_every == 1:
                self._check(stream, data)

    def _check(self, stream: int, data: bytes) -> None:
        unprotect = self.verify[stream]
        if unprotect is not None:
            try:
                data = unprotect(data)
            except pylibsrtp.Error:
                self.auth_failed += 1
                return
        if data[12:] == self.expected_payload[stream]:
            self.verified += 1
        else:
            self.wrong_payload += 1


def main() -> None:
    """Bind, report the ports, wait for the plan, run it, report the figures."""
    setup = json.loads(sys.stdin.readline())
    per_side = max(1, min(int(setup["sockets"]), int(setup["calls"])))
    sides = [bind_sockets(per_side), bind_sockets(per_side)]
    ports = {
        name: [sides[side][i % per_side].getsockname()[1] for i in range(int(setup["calls"]))]
        for side, name in enumerate(SIDES)
    }
    print(json.dumps(ports), flush=True)
    plan = json.loads(sys.stdin.readline())
    generator = Generator(setup, plan, sides)
    print(json.dumps(generator.run(plan)), flush=True)


if __name__ == "__main__":
    main()
