"""Real SIP peers for the integration tests: baresip (registering, and placing
and answering calls through its ``ctrl_tcp`` interface), sipp and sipvicious
driven as separate processes, a UDP relay that lets a peer which cannot bind
a source address speak from another loopback address, and readers for what
the appliance stores and prints.

Everything here stays on 127.0.0.0/8: every socket is bound to a loopback
address and every peer is pointed at one (the appliance answers the packet's
source, so a peer's headers cannot redirect it elsewhere).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import select
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.integration.conftest import DEADLINE_SECONDS, telemancer

_T = TypeVar("_T")

#: How often a polled condition is re-checked.
POLL_INTERVAL = 0.1


def peer_program(name: str) -> str:
    """The absolute path of a peer program; fails (never skips) when it is missing:
    ``make test`` installs every peer (Makefile's DEBIAN_TEST_PACKAGES, the venv)."""
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed (make test installs it)"
    return path


def poll_until(check: Callable[[], _T | None], what: str) -> _T:
    """Re-run ``check`` until it returns something other than None, or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {DEADLINE_SECONDS}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port on ``host`` that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_sip_listen_port() -> int:
    """A port P on 127.0.0.1 with UDP P, TCP P and TCP P+1 free: baresip binds all
    three for ``sip_listen`` (TLS on P+1)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        sockets = [
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            socket.socket(),
            socket.socket(),
        ]
        try:
            for sock, candidate in zip(sockets, (port, port, port + 1), strict=True):
                sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return port
    raise AssertionError("no free port pair on 127.0.0.1")


def set_sip_option(config: Path, key: str, toml_value: str) -> None:
    """Set ``key = toml_value`` in the ``[sip]`` section of a dev instance's config."""
    lines = config.read_text().splitlines()
    start = lines.index("[sip]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=", 1)[0].strip() == key:
            lines[i] = f"{key} = {toml_value}"
            break
    else:
        lines.insert(start + 1, f"{key} = {toml_value}")
    config.write_text("\n".join(lines) + "\n")


# -- what the appliance keeps and prints ------------------------------------


def cli_table(output: str) -> list[dict[str, str]]:
    """Rows of a table the CLI printed, keyed by column header (cells may hold spaces)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    names = header.split()
    starts: list[int] = []
    for name in names:  # each after the previous: one header may contain another
        starts.append(header.index(name, starts[-1] + 1 if starts else 0))
    rows = []
    for line in lines[1:]:
        cells = [
            line[start : starts[i + 1] if i + 1 < len(starts) else None].strip()
            for i, start in enumerate(starts)
        ]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def cli_rows(config: Path, *argv: str) -> list[dict[str, str]]:
    """Run a listing command of the CLI and return its table."""
    result = telemancer("--config", str(config), *argv)
    assert result.returncode == 0, result.stderr
    return cli_table(result.stdout)


@dataclass(frozen=True)
class StoredRegistration:
    """One row of the registrations table, as the service wrote it."""

    contact: str
    cseq: int
    expires_at: float
    transport: str
    source: str
    flow: str
    user_agent: str


def stored_registrations(config: Path) -> list[StoredRegistration]:
    """The registrations table, read-only (the service writes it in batches)."""
    database = config.parent / "telemancer.sqlite3"
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT contact, cseq, expires_at, transport, source, flow, user_agent"
            " FROM registrations ORDER BY contact"
        ).fetchall()
    finally:
        conn.close()
    return [
        StoredRegistration(str(a), int(b), float(c), str(d), str(e), str(f), str(g))
        for a, b, c, d, e, f, g in rows
    ]


def _read_only(config: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query against a dev instance's database, opened read-only."""
    database = config.parent / "telemancer.sqlite3"
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return conn.execute(sql, tuple(params)).fetchall()
    finally:
        conn.close()


@dataclass(frozen=True)
class StoredCdr:
    """One row of the ``cdrs`` table (a call detail record), as the service wrote it."""

    call_id: str
    caller: str
    callee: str
    direction: str
    setup_at: float
    ringing_at: float | None
    answered_at: float | None
    ended_at: float
    disposition: str
    hangup_by: str | None
    final_status: int
    caller_transport: str
    callee_transport: str | None
    #: Each leg's relay counters (``caller``, ``callee``) and any ``end_reason``.
    media: dict[str, Any]


def stored_cdrs(config: Path, domain: str) -> list[StoredCdr]:
    """The call detail records of the tenant serving ``domain``, oldest first."""
    rows = _read_only(
        config,
        "SELECT c.call_id, c.caller, c.callee, c.direction, c.setup_at, c.ringing_at,"
        " c.answered_at, c.ended_at, c.disposition, c.hangup_by, c.final_status,"
        " c.caller_transport, c.callee_transport, c.media"
        " FROM cdrs AS c JOIN tenants AS t ON t.id = c.tenant_id"
        " WHERE t.domain = ? ORDER BY c.id",
        (domain,),
    )
    return [StoredCdr(*_with_json_last(row)) for row in rows]


def _with_json_last(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row whose last column is JSON text, that column decoded."""
    return (*row[:-1], json.loads(row[-1]))


@dataclass(frozen=True)
class StoredLiveCall:
    """One row of the ``live_calls`` table (a call in progress)."""

    domain: str
    call_id: str
    caller: str
    callee: str
    state: str
    answered_at: float | None


def stored_live_calls(config: Path) -> list[StoredLiveCall]:
    """The ``live_calls`` table, every tenant's, by setup time."""
    rows = _read_only(
        config,
        "SELECT t.domain, l.call_id, l.caller, l.callee, l.state, l.answered_at"
        " FROM live_calls AS l JOIN tenants AS t ON t.id = l.tenant_id"
        " ORDER BY l.setup_at",
    )
    return [StoredLiveCall(*row) for row in rows]


def audit_records(config: Path, action: str) -> list[dict[str, Any]]:
    """The audit records with ``action``, from ``telemancer audit export``."""
    result = telemancer("--config", str(config), "audit", "export")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [r for r in records if r["action"] == action]


# -- a process whose output is read as it comes ------------------------------


class PeerProcess:
    """A peer process with stdout and stderr merged and read line by line on a thread."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], cwd: Path) -> None:
        self.argv = list(argv)
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._closed = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(
        self,
        check: Callable[[list[str]], bool],
        what: str,
        *,
        fail: Callable[[str], bool] | None = None,
    ) -> None:
        """Wait until ``check(lines so far)`` holds; fail at once on a line ``fail``
        accepts, when the output ends, or at the deadline."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        with self._changed:
            while True:
                if fail is not None:
                    bad = [line for line in self.lines if fail(line)]
                    if bad:
                        raise AssertionError(f"{self.argv[0]} reported {bad[0]!r}\n{self.tail()}")
                if check(self.lines):
                    return
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    ended = "exited" if self._closed else f"timed out after {DEADLINE_SECONDS}s"
                    raise AssertionError(f"{self.argv[0]} {ended} before {what}\n{self.tail()}")
                self._changed.wait(left)

    def tail(self, count: int = 40) -> str:
        """The last lines of output, for failure messages."""
        return "\n".join(self.lines[-count:])

    def wait(self) -> int:
        """The exit status, once the process ends by itself (or fail at the deadline)."""
        status = self.process.wait(timeout=DEADLINE_SECONDS)
        self._reader.join(timeout=DEADLINE_SECONDS)
        return status

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers past the deadline."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=DEADLINE_SECONDS)
        self._reader.join(timeout=DEADLINE_SECONDS)


# -- baresip -----------------------------------------------------------------


def baresip(
    directory: Path,
    *,
    aor: str,
    password: str,
    proxy_port: int,
    ca: Path,
    regint: int,
    env: dict[str, str],
    calls: BaresipCalls | None = None,
) -> PeerProcess:
    """Start baresip 1.0 registering ``aor`` over TLS through 127.0.0.1:``proxy_port``.

    Without ``calls``: no UI, audio or media modules, only ``account.so`` (which
    reads the accounts file). With ``calls`` it can place and answer calls (see
    :class:`BaresipCalls`). ``-s`` traces every SIP message to stdout. DNS, were
    it ever needed, goes to a closed loopback port, so nothing leaves 127.0.0.0/8.
    """
    directory.mkdir(parents=True, exist_ok=True)
    listen = free_sip_listen_port()
    config = (
        "poll_method\t\tepoll\n"
        f"sip_listen\t\t127.0.0.1:{listen}\n"
        f"sip_cafile\t\t{ca}\n"
        "net_interface\t\t127.0.0.1\n"
        f"dns_server\t\t127.0.0.1:{free_udp_port()}\n"
        "module_path\t\t/usr/lib/baresip/modules\n"
        "module_tmp\t\taccount.so\n"
    )
    account = (
        f"<sip:{aor};transport=tls>;auth_pass={password}"
        f';outbound="sip:127.0.0.1:{proxy_port};transport=tls";regint={regint}'
    )
    if calls is not None:
        config += calls.config_lines()
        account += calls.account_params()
        if calls.record_dir is not None:
            calls.record_dir.mkdir(parents=True, exist_ok=True)  # sndfile makes no directory
    (directory / "config").write_text(config)
    (directory / "accounts").write_text(account + "\n")
    return PeerProcess(
        [peer_program("baresip"), "-f", str(directory), "-s"], env=env, cwd=directory
    )


@dataclass(frozen=True)
class BaresipCalls:
    """What baresip 1.0 needs to place and answer calls with no sound hardware.

    Audio is read from ``audio_file`` (a WAV, ``aufile``; 8 kHz mono 16-bit for
    G.711, see :func:`tests.integration.audio.write_tone`) and played into an
    ``aubridge`` device that nothing listens to; codecs are G.711 only. aufile
    ends the call when the file ends ("menu: audio error (0,end of file)",
    CALL_CLOSED "end of file"), on whichever phone's file ends first, so every
    phone's file must outlast the call. ``menu`` provides the ``dial`` and
    ``hangup`` commands, ``ctrl_tcp`` takes them as JSON on
    127.0.0.1:``control_port`` and reports call events
    (:class:`BaresipControl`). ``answermode`` is the account's: ``auto``
    answers every incoming call at once, ``manual`` lets it ring.

    ``mediaenc`` is the account's media encryption (``srtp.so``, SDES):
    ``"srtp-mand"`` offers RTP/SAVP with one ``a=crypto:1
    AES_CM_128_HMAC_SHA1_80`` line and answers 488 to any RTP/AVP offer (even
    one with ``a=crypto``); ``"srtp"`` offers RTP/AVP with that crypto line and
    silently falls back to plain RTP when the answer has none. As callee
    either takes the first offered line whose suite it knows
    (AES_CM_128_HMAC_SHA1_80/32, AEAD_AES_128_GCM, AEAD_AES_256_GCM; never
    AES_256_CM_HMAC_SHA1_80). None: plain RTP/AVP, no crypto.
    :func:`negotiated_suite` reads what it agreed on.

    ``record_dir`` loads ``sndfile.so`` with that ``snd_path``: one
    ``dump-<local time>-dec.wav`` holds what the phone received and decoded,
    ``...-enc.wav`` what it sent (:func:`tests.integration.audio.sndfile_recordings`).
    """

    control_port: int
    audio_file: Path
    answermode: str = "manual"
    mediaenc: str | None = None
    record_dir: Path | None = None

    def config_lines(self) -> str:
        """The config file lines for calls."""
        lines = (
            f"audio_source\t\taufile,{self.audio_file}\n"
            "audio_player\t\taubridge,sink\n"
            "audio_alert\t\taubridge,alert\n"
            "module\t\t\tg711.so\n"
            "module\t\t\taufile.so\n"
            "module\t\t\taubridge.so\n"
        )
        if self.mediaenc is not None:
            lines += "module\t\t\tsrtp.so\n"
        if self.record_dir is not None:
            lines += f"module\t\t\tsndfile.so\nsnd_path\t\t{self.record_dir}\n"
        return lines + (
            "module_app\t\tmenu.so\n"
            "module_app\t\tctrl_tcp.so\n"
            f"ctrl_tcp_listen\t\t127.0.0.1:{self.control_port}\n"
        )

    def account_params(self) -> str:
        """The parameters the account line gets for calls."""
        params = f";answermode={self.answermode}"
        if self.mediaenc is not None:
            params += f";mediaenc={self.mediaenc}"
        return params


def negotiated_suite(control: BaresipControl) -> str | None:
    """The SRTP suite baresip agreed on for the call's audio, from its
    ``CALL_MENC`` event (param ``"0,audio,AEAD_AES_256_GCM"``: 0 is "secure");
    None when there was none, as on plain RTP, including the silent fallbacks
    of ``mediaenc=srtp`` and of an offer whose suites baresip does not know.
    The event comes before ``CALL_ESTABLISHED`` on both sides, so once that is
    awaited this need not wait."""
    for event in control.events:
        if event.get("type") == "CALL_MENC":
            _, media, suite = str(event.get("param", "")).split(",", 2)
            if media == "audio":
                return suite
    return None


def write_wav(path: Path, seconds: float) -> Path:
    """A mono 8 kHz 16-bit WAV of ``seconds`` of a 500 Hz square wave, for baresip's aufile."""
    high, low = (
        (3000).to_bytes(2, "little", signed=True),
        (-3000).to_bytes(2, "little", signed=True),
    )
    period = high * 8 + low * 8  # 500 Hz at 8 kHz: 16 samples per period
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(period * int(seconds * 500))
    return path


class BaresipControl:
    """A client of baresip's ``ctrl_tcp`` module: commands and events, each a JSON
    object in a netstring. Events (``CALL_INCOMING``, ``CALL_ESTABLISHED``,
    ``CALL_CLOSED``, ...) are collected on a thread as they come."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = poll_until(lambda: _connect(port), f"baresip's ctrl_tcp on port {port}")
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._closed = False
        self._tokens = itertools.count(1)
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            while True:
                length, colon, rest = buffer.partition(b":")
                if not colon or len(rest) < int(length) + 1:
                    break
                payload, buffer = rest[: int(length)], rest[int(length) + 1 :]
                message: dict[str, Any] = json.loads(payload)
                with self._changed:
                    if message.get("event"):
                        self.events.append(message)
                    elif message.get("response"):
                        self._responses[str(message.get("token"))] = message
                    self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _wait(self, check: Callable[[], _T | None], what: str) -> _T:
        deadline = time.monotonic() + DEADLINE_SECONDS
        with self._changed:
            while True:
                result = check()
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    ended = "closed" if self._closed else f"timed out after {DEADLINE_SECONDS}s"
                    raise AssertionError(
                        f"baresip's ctrl_tcp {ended} before {what}; events: {self.event_types()}"
                    )
                self._changed.wait(left)

    def command(self, command: str, params: str = "") -> dict[str, Any]:
        """Run a command (``dial``, ``hangup``, ...); its answer, which must be ok."""
        token = f"test-{next(self._tokens)}"
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        answer = self._wait(lambda: self._responses.get(token), f"the answer to {command!r}")
        assert answer.get("ok") is True, answer
        return answer

    def wait_for_event(self, kind: str) -> dict[str, Any]:
        """The first event of type ``kind`` (waiting for it if need be)."""
        return self._wait(
            lambda: next((e for e in self.events if e.get("type") == kind), None),
            f"a {kind} event",
        )

    def event_types(self) -> list[str]:
        """The types of the events so far, in order (``CALL_RTCP`` left out: periodic)."""
        return [str(e.get("type")) for e in self.events if e.get("type") != "CALL_RTCP"]

    def close(self) -> None:
        """Close the connection and let the reader thread end."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(timeout=DEADLINE_SECONDS)


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(
            ("127.0.0.1", port), timeout=DEADLINE_SECONDS, source_address=("127.0.0.1", 0)
        )
    except ConnectionRefusedError:
        return None


# -- sipp ---------------------------------------------------------------------

_SIPP_REGISTER = """\
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
{authorization}Expires: 300
User-Agent: sipp
Content-Length: 0

"""


def _sipp_send(cseq: int, authorization: str = "") -> str:
    body = _SIPP_REGISTER.format(cseq=cseq, authorization=authorization)
    return f'  <send retrans="500">\n    <![CDATA[\n{body}    ]]>\n  </send>\n'


def sipp_scenario(*, authenticate: bool) -> str:
    """A REGISTER scenario: REGISTER, expect 401; with ``authenticate``, answer the
    challenge with sipp's ``[authentication]`` (MD5; user and password from the
    injection file) and expect 200."""
    steps = _sipp_send(1) + '  <recv response="401" auth="true"/>\n'
    if authenticate:
        steps += _sipp_send(2, "[field2]\n") + '  <recv response="200"/>\n'
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="register">\n{steps}</scenario>\n'
    )


@dataclass(frozen=True)
class SippRun:
    """What one sipp run did: exit status, screen output, message trace and errors."""

    status: int
    output: str
    messages: str
    errors: str

    def describe(self) -> str:
        """Everything, for failure messages."""
        return (
            f"sipp exited {self.status}\n--- errors\n{self.errors}\n"
            f"--- messages\n{self.messages}\n--- screen\n{self.output[-3000:]}"
        )


def run_sipp(
    directory: Path,
    *,
    source: str,
    target: tuple[str, int],
    extension: str,
    domain: str,
    password: str,
    authenticate: bool,
    env: dict[str, str],
) -> SippRun:
    """Run sipp once (``-m 1``) over UDP from ``source`` against ``target``; every
    receive gives up after 5 s without an answer."""
    directory.mkdir(parents=True, exist_ok=True)
    scenario = directory / "register.xml"
    scenario.write_text(sipp_scenario(authenticate=authenticate))
    injection = directory / "users.csv"
    injection.write_text(
        f"SEQUENTIAL\n{extension};{domain};"
        f"[authentication username={extension} password={password}];\n"
    )
    messages, errors = directory / "messages.log", directory / "errors.log"
    argv = [
        peer_program("sipp"),
        "-sf",
        str(scenario),
        "-inf",
        str(injection),
        "-m",
        "1",
        "-t",
        "u1",
        "-i",
        source,
        "-p",
        str(free_udp_port(source)),
        "-auth_uri",
        f"sip:{domain}",
        "-recv_timeout",
        "5000",
        "-timeout",
        f"{int(DEADLINE_SECONDS)}s",
        "-trace_msg",
        "-message_file",
        str(messages),
        "-trace_err",
        "-error_file",
        str(errors),
        "-nostdin",
        f"{target[0]}:{target[1]}",
    ]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=DEADLINE_SECONDS * 2,
        check=False,
        env=env,
        cwd=directory,
    )
    return SippRun(
        result.returncode,
        result.stdout + result.stderr,
        messages.read_text(errors="replace") if messages.exists() else "",
        errors.read_text(errors="replace") if errors.exists() else "",
    )


# -- a UDP relay that gives a peer another loopback source address ------------


@dataclass(frozen=True)
class Datagram:
    """One relayed SIP datagram, read with a parser independent of the appliance's."""

    data: bytes

    @property
    def start_line(self) -> str:
        """The request or status line."""
        return self.data.split(b"\r\n", 1)[0].decode(errors="replace")

    @property
    def status(self) -> int | None:
        """The status code of a response; None for a request."""
        match = re.match(r"SIP/2\.0 (\d{3}) ", self.start_line)
        return int(match.group(1)) if match else None

    def header(self, name: str) -> str | None:
        """The first header field ``name`` (case-insensitive), unfolded enough for tests."""
        head = self.data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
        for line in head.split("\r\n")[1:]:
            field, _, value = line.partition(":")
            if field.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def branch(self) -> str | None:
        """The top Via's branch parameter."""
        via = self.header("via")
        match = re.search(r";\s*branch=([^;,\s]+)", via or "")
        return match.group(1) if match else None


class UdpRelay:
    """Relays a UDP client on 127.0.0.1 to ``upstream``, sending from ``source``.

    The client talks to :attr:`port`; the upstream sees every datagram come from
    ``source`` and answers there; answers are relayed back to the client's
    address. Every datagram is recorded, in order, in each direction.
    """

    def __init__(self, upstream: tuple[str, int], source: str) -> None:
        self.upstream = upstream
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind((source, 0))
        self.port = int(self.front.getsockname()[1])
        self.sent_upstream: list[Datagram] = []
        self.relayed_back: list[Datagram] = []
        self._client: tuple[str, int] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            ready, _, _ = select.select([self.front, self.back], [], [], 0 if stopping else 0.1)
            if not ready and stopping:
                return
            for sock in ready:
                data, address = sock.recvfrom(65535)
                if sock is self.front:
                    self._client = (str(address[0]), int(address[1]))
                    self.sent_upstream.append(Datagram(data))
                    self.back.sendto(data, self.upstream)
                elif address[:2] == self.upstream and self._client is not None:
                    self.relayed_back.append(Datagram(data))
                    self.front.sendto(data, self._client)

    def stop(self) -> None:
        """Relay what is already queued, then close both sockets."""
        self._stopping.set()
        self._thread.join(timeout=DEADLINE_SECONDS)
        assert not self._thread.is_alive(), "the relay did not stop"
        self.front.close()
        self.back.close()
