"""Debian's rtpengine as the media benchmark's peer: the daemon in userspace,
its ng control protocol (bencode over UDP) and the SDP it is driven with.

rtpengine runs as a foreground child process with no kernel forwarding
(``--table=-1``), no config file, RTP on 127.0.0.1 only. Each simulated call
gets an ``offer`` (the caller's SDP, which allocates the ports the callee
sends to) and an ``answer`` (the callee's SDP, which allocates the ports the
caller sends to). For SRTP legs the SDP carries SDES ``a=crypto`` lines: the
key in each SDP is the one its sender protects with, and rtpengine's
rewritten SDP carries its own keys for what it sends to each side.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: What a bencoded value decodes to here (strings stay bytes until asked).
BValue = int | bytes | list["BValue"] | dict[str, "BValue"]
#: What may be encoded.
BInput = int | str | bytes | list["BInput"] | dict[str, "BInput"]

SUITE = "AES_CM_128_HMAC_SHA1_80"
READY_SECONDS = 15.0
STOP_SECONDS = 10.0


class NgError(RuntimeError):
    """rtpengine refused a command, or did not answer."""


def bencode(value: BInput) -> bytes:
    """Encode ``value`` (dictionary keys sorted, as bencode requires)."""
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    items = sorted((key.encode(), item) for key, item in value.items())
    return b"d" + b"".join(bencode(key) + bencode(item) for key, item in items) + b"e"


def bdecode(data: bytes) -> BValue:
    """Decode one bencoded value that fills ``data``."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes after the bencoded value")
    return value


def _decode(data: bytes, at: int) -> tuple[BValue, int]:
    kind = data[at : at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if kind == b"l":
        items: list[BValue] = []
        at += 1
        while data[at : at + 1] != b"e":
            item, at = _decode(data, at)
            items.append(item)
        return items, at + 1
    if kind == b"d":
        mapping: dict[str, BValue] = {}
        at += 1
        while data[at : at + 1] != b"e":
            key, at = _decode(data, at)
            if not isinstance(key, bytes):
                raise ValueError("a bencoded dictionary key must be a string")
            mapping[key.decode()], at = _decode(data, at)
        return mapping, at + 1
    colon = data.index(b":", at)
    start = colon + 1
    end = start + int(data[at:colon])
    if end > len(data):
        raise ValueError("bencoded string runs past the end")
    return data[start:end], end


class NgClient:
    """The ng protocol over UDP: ``cookie bencoded-dict``, answered with the same cookie."""

    def __init__(self, address: tuple[str, int], timeout: float = 2.0) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.settimeout(timeout)
        self._socket.bind(("127.0.0.1", 0))

    def close(self) -> None:
        """Close the control socket."""
        self._socket.close()

    def command(self, message: dict[str, BInput], attempts: int = 3) -> dict[str, BValue]:
        """Send one command; its reply dictionary (``result`` is ``ok`` or ``pong``)."""
        cookie = secrets.token_hex(8).encode()
        request = cookie + b" " + bencode(message)
        for _ in range(attempts):
            self._socket.sendto(request, self.address)
            deadline = time.monotonic() + (self._socket.gettimeout() or 2.0)
            while time.monotonic() < deadline:
                try:
                    data = self._socket.recv(65536)
                except TimeoutError:
                    break
                got, _, body = data.partition(b" ")
                if got != cookie:
                    continue  # a late answer to an earlier attempt
                reply = bdecode(body)
                if not isinstance(reply, dict):
                    raise NgError(f"rtpengine answered {message['command']!r} with {reply!r}")
                if reply.get("result") not in (b"ok", b"pong"):
                    raise NgError(f"rtpengine refused {message['command']!r}: {reply!r}")
                return reply
        raise NgError(f"rtpengine did not answer {message['command']!r}")


def sdp(port: int, key: bytes | None, session: int, tag: int = 1) -> str:
    """A G.711 µ-law audio offer or answer from 127.0.0.1:``port``; with ``key``
    (master key + salt) it is SRTP with one AES_CM_128_HMAC_SHA1_80 line of that ``tag``."""
    profile = "RTP/SAVP" if key is not None else "RTP/AVP"
    lines = [
        "v=0",
        f"o=- {session} 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} {profile} 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]
    if key is not None:
        lines.append(f"a=crypto:{tag} {SUITE} inline:{base64.b64encode(key).decode()}")
    return "\r\n".join(lines) + "\r\n"


@dataclass(frozen=True)
class Media:
    """What rtpengine's rewritten SDP says: its port, and for SRTP its key
    (and the line's tag) for our suite."""

    port: int
    key: bytes | None
    tag: int | None


def parse_sdp(text: str) -> Media:
    """The audio port and the AES_CM_128_HMAC_SHA1_80 crypto line of an SDP."""
    port: int | None = None
    key: bytes | None = None
    tag: int | None = None
    for line in text.splitlines():
        if line.startswith("m=audio "):
            port = int(line.split()[1])
        elif line.startswith("a=crypto:"):
            fields = line[len("a=crypto:") :].split()
            if len(fields) >= 3 and fields[1] == SUITE and key is None:
                tag = int(fields[0])
                inline = fields[2].removeprefix("inline:").split("|")[0]
                key = base64.b64decode(inline + "=" * (-len(inline) % 4))
    if port is None:
        raise NgError(f"rtpengine's SDP has no audio port:\n{text}")
    return Media(port, key, tag)


@dataclass(frozen=True)
class Leg:
    """One side of a call as the load generator sees it: where it sends, and
    which key protects what it sends and what it receives (None: plain)."""

    target: int
    send_key: bytes | None
    receive_key: bytes | None


def open_call(
    client: NgClient,
    call_id: str,
    caller: int,
    callee: int,
    caller_key: bytes | None,
    callee_key: bytes | None,
) -> tuple[Leg, Leg]:
    """Offer and answer one call: the caller's (A) and the callee's (B) legs.
    ``caller`` and ``callee`` are the generator's ports; a key makes that side SRTP.

    SRTP on both sides: rtpengine copies the caller's ``a=crypto`` line, key
    included, into its offer to the callee, and answers the caller with the
    callee's key (RFC 4568 lets it). With the same keys on both legs it
    forwards SRTP untouched, without authenticating it, unless something
    makes it "recrypt" (10.5 has no ``recrypt`` flag; see :class:`Rtpengine`).
    """
    offer = client.command(
        {
            "command": "offer",
            "call-id": call_id,
            "from-tag": f"{call_id}-a",
            "sdp": sdp(caller, caller_key, 1),
            "transport-protocol": "RTP/SAVP" if callee_key is not None else "RTP/AVP",
            "ICE": "remove",
            "replace": ["origin", "session-connection"],
        }
    )
    towards_b = parse_sdp(_text(offer, "sdp"))
    if callee_key is not None and towards_b.key is None:
        raise NgError(f"rtpengine offered no {SUITE} line to the callee")
    answer = client.command(
        {
            "command": "answer",
            "call-id": call_id,
            "from-tag": f"{call_id}-a",
            "to-tag": f"{call_id}-b",
            "sdp": sdp(callee, callee_key, 2, towards_b.tag or 1),
            "ICE": "remove",
            "replace": ["origin", "session-connection"],
        }
    )
    towards_a = parse_sdp(_text(answer, "sdp"))
    if caller_key is not None and towards_a.key is None:
        raise NgError(f"rtpengine answered the caller without a {SUITE} line")
    return (
        Leg(towards_a.port, caller_key, towards_a.key),
        Leg(towards_b.port, callee_key, towards_b.key),
    )


def _text(reply: dict[str, BValue], key: str) -> str:
    value = reply.get(key)
    if not isinstance(value, bytes):
        raise NgError(f"rtpengine's reply has no {key!r}: {reply!r}")
    return value.decode()


def find_rtpengine() -> str | None:
    """The rtpengine daemon (Debian's ``rtpengine-daemon``), if installed."""
    return shutil.which("rtpengine") or (
        "/usr/bin/rtpengine" if Path("/usr/bin/rtpengine").exists() else None
    )


def rtpengine_version(binary: str) -> str:
    """``rtpengine --version`` (Debian's build prints its package version)."""
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).strip().splitlines()[-1].removeprefix("Version: ")


class Rtpengine:
    """The daemon in userspace on 127.0.0.1, until :meth:`stop`.

    ``dtmf_log`` (an address where nothing listens) turns on DTMF event
    logging, and with it rtpengine decrypts and re-encrypts SRTP even when
    both legs have the same keys (``determine_sink_handler``: DTMF logging is
    one of the conditions for "must recrypt"); otherwise it forwards SDES
    SRTP between same-keyed legs as it came, unauthenticated. No DTMF is sent,
    so nothing is logged.
    """

    def __init__(
        self,
        binary: str,
        ng_port: int,
        ports: tuple[int, int],
        log: Path,
        threads: int | None,
        dtmf_log: tuple[str, int] | None = None,
    ) -> None:
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    binary,
                    "--config-file=none",
                    "--foreground",
                    "--log-stderr",
                    "--log-level=5",
                    "--table=-1",
                    "--interface=127.0.0.1",
                    f"--listen-ng=127.0.0.1:{ng_port}",
                    f"--port-min={ports[0]}",
                    f"--port-max={ports[1]}",
                    "--media-num-threads=1",
                    "--timeout=60",
                    "--delete-delay=0",
                    *([f"--num-threads={threads}"] if threads else []),
                    *([f"--dtmf-log-dest={dtmf_log[0]}:{dtmf_log[1]}"] if dtmf_log else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.client = NgClient(("127.0.0.1", ng_port), timeout=0.5)
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if self.process.poll() is not None:
                raise NgError(f"rtpengine exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                self.client.command({"command": "ping"}, attempts=1)
                break
            except NgError:
                if time.monotonic() > deadline:
                    raise
        self.client.close()
        self.client = NgClient(("127.0.0.1", ng_port))

    @property
    def pid(self) -> int:
        """The daemon's process id (its worker threads are in its CPU time)."""
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
