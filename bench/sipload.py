"""REGISTER load with sipp: the scenario, its injection file, a run, its figures.

Each sipp "call" is one registration with MD5 Digest: REGISTER, 401 with a
challenge, REGISTER with credentials, 200. Users come from an injection file
read in sequence, so successive calls register different extensions.

Debian's sipp 3.6.1 answers only the *first* challenge of a 401 and knows only
MD5, so the appliance under test offers MD5 alone (``sip.digest_algorithms``,
set by ``peers.create_instance``), as an instance serving MD5-only phones
would. sipp talks to each server directly.

:class:`SippRun` and :func:`run_sipp` run any scenario (``calls.py`` drives
calls with them); :func:`start_sipp` runs one in the background.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: One registration with Digest auth. sipp sends from the port in its Via, so
#: ``;rport`` changes nothing; phones behind NAT send it.
SCENARIO = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="REGISTER with MD5 Digest">
  <send retrans="500">
    <![CDATA[
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port]>
Expires: 3600
User-Agent: sipp-bench
Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port]>
[field2]
Expires: 3600
User-Agent: sipp-bench
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

_ABORTED = re.compile(r"Aborting call on (.*?) for Call-Id.*?received '(.*?)'", re.DOTALL)
_STATUS_LINE = re.compile(r"SIP/2\.0 (\d{3})")


def write_scenario(path: Path) -> Path:
    """Write the REGISTER scenario to ``path``."""
    path.write_text(SCENARIO, encoding="ascii")
    return path


def write_users(path: Path, domain: str, users: Sequence[tuple[str, str]]) -> Path:
    """Write a sipp injection file: ``user;domain;[authentication ...]`` per line.

    sipp expands keywords inside injected fields, which is the only way to give
    ``[authentication]`` a different user and password on every call.
    """
    lines = ["SEQUENTIAL"]
    for user, password in users:
        if any(c in user + password for c in "; []"):
            raise ValueError("users and passwords for sipp must not contain ';', ' ', '[' or ']'")
        lines.append(f"{user};{domain};[authentication username={user} password={password}]")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


@dataclass(frozen=True)
class SippResult:
    """What one sipp run achieved."""

    successful: int
    failed: int
    retransmissions: int
    wall_seconds: float
    #: Why calls failed: ``"401 stale=true"``, ``"timeout"``... and how often.
    failures: Counter[str]
    exit_code: int

    @property
    def rate(self) -> float:
        """Successful registrations per wall-clock second."""
        return self.successful / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass(frozen=True)
class SippRun:
    """How to drive sipp: the load and where its files go."""

    sipp: str
    scenario: Path
    users: Path
    workdir: Path
    domain: str
    calls: int
    rate: float
    limit: int
    #: sipp's ``-t``: ``u1`` (UDP, one socket) or ``t1`` (one TCP connection).
    transport: str = "u1"
    #: The digest ``uri`` sipp answers with (``sip:`` is prepended); the domain if None.
    auth_uri: str | None = None
    #: More sipp arguments (``-s``, ``-trace_msg``...).
    extra_args: tuple[str, ...] = ()
    #: How long each call lasts beyond its messages (pauses), for the deadline.
    call_seconds: float = 0.0


def sipp_argv(run: SippRun, target: tuple[str, int], name: str, local_port: int) -> list[str]:
    """sipp's command line for ``run``; statistics and errors go to ``name``-prefixed files."""
    return [
        run.sipp,
        f"{target[0]}:{target[1]}",
        "-sf",
        str(run.scenario),
        "-inf",
        str(run.users),
        "-auth_uri",
        run.auth_uri or run.domain,
        "-t",
        run.transport,
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-m",
        str(run.calls),
        "-r",
        f"{run.rate:g}",
        "-l",
        str(run.limit),
        "-trace_stat",
        "-stf",
        str(run.workdir / f"{name}-stats.csv"),
        "-fd",
        "1",
        "-trace_err",
        "-error_file",
        str(run.workdir / f"{name}-errors.log"),
        "-nostdin",
        *run.extra_args,
    ]


def sipp_deadline(run: SippRun) -> float:
    """Seconds after which a sipp run counts as hung."""
    return 60.0 + 4 * run.calls / max(run.rate, 1.0) + run.call_seconds


def start_sipp(
    run: SippRun, target: tuple[str, int], name: str, local_port: int
) -> subprocess.Popen[bytes]:
    """Start sipp in the background (screen output to ``name-screen.log``); see
    :func:`sipp_result` for its figures once it has exited."""
    for suffix in ("stats.csv", "errors.log"):
        (run.workdir / f"{name}-{suffix}").unlink(missing_ok=True)
    with (run.workdir / f"{name}-screen.log").open("wb") as out:
        return subprocess.Popen(
            sipp_argv(run, target, name, local_port),
            cwd=run.workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


def run_sipp(run: SippRun, target: tuple[str, int], name: str, local_port: int) -> SippResult:
    """Run sipp to completion against ``target`` and read its statistics.

    A timeout means sipp hung, which is an error; failed calls are not.
    """
    started = time.monotonic()
    process = start_sipp(run, target, name, local_port)
    try:
        exit_code = process.wait(timeout=sipp_deadline(run))
    except BaseException:  # hung (a timeout), or the benchmark interrupted: never leave it running
        process.kill()
        process.wait()
        raise
    return sipp_result(run, name, exit_code, time.monotonic() - started)


def sipp_result(run: SippRun, name: str, exit_code: int, wall: float) -> SippResult:
    """The figures of a finished sipp run started under ``name``."""
    stats = run.workdir / f"{name}-stats.csv"
    if not stats.exists():
        screen = run.workdir / f"{name}-screen.log"
        tail = screen.read_text(errors="replace")[-2000:] if screen.exists() else ""
        raise RuntimeError(f"sipp wrote no statistics (exit {exit_code}): {tail}")
    counters = _last_stats(stats)
    return SippResult(
        successful=counters.get("SuccessfulCall(C)", 0),
        failed=counters.get("FailedCall(C)", 0),
        retransmissions=counters.get("Retransmissions(C)", 0),
        wall_seconds=wall,
        failures=_failure_reasons(run.workdir / f"{name}-errors.log"),
        exit_code=exit_code,
    )


def _last_stats(path: Path) -> dict[str, int]:
    """The cumulative integer counters of the last line of a ``-trace_stat`` file."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        raise RuntimeError(f"sipp statistics file {path} has no data line")
    names, values = lines[0].split(";"), lines[-1].split(";")
    counters: dict[str, int] = {}
    for field, value in zip(names, values, strict=False):
        if value.strip().isdigit():
            counters[field.strip()] = int(value)
    return counters


def _failure_reasons(path: Path) -> Counter[str]:
    """Failed calls by what ended them, from sipp's error log."""
    reasons: Counter[str] = Counter()
    if not path.exists():
        return reasons
    text = path.read_text(errors="replace")
    for event, received in _ABORTED.findall(text):
        status = _STATUS_LINE.search(received)
        label = status.group(1) if status else event
        if "stale=true" in received:
            label += " stale=true"
        reasons[label] += 1
    for phrase in ("Max UDP retransmission", "timeout"):
        count = text.count(phrase)
        if count:
            reasons[phrase] += count
    return reasons
