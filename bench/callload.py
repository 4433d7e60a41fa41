"""Call load with sipp: the caller's and callee's scenarios, the callee as a
long-running sipp, and stunnel4 to carry sipp's TCP over TLS.

The caller (a sipp UAC, one call per extension from an injection file, as in
``sipload``) sends INVITE, gets 407, ACKs it, sends the INVITE again with
``Proxy-Authorization`` (sipp's ``[authentication]`` answers a 407 with that
header), takes 100/180/200, then sends ACK and, after ``-d`` milliseconds,
BYE along the Record-Route it learnt from the 200 (``rrs``, ``[routes]``,
``[next_url]``). sipp always sends to the address it was given, so every
message goes through the server under test; the keywords make the ACK and
BYE what a phone honouring Record-Route sends. sipp's built-in ``uac``
scenario does neither.

The callee is one sipp process: its main scenario registers once (REGISTER,
401, REGISTER with MD5 Digest, 200) and then pauses for the rest of the run;
each INVITE the server sends it has an unknown Call-ID and is served by the
out-of-call scenario (``-oocsf``): 180, 200 (with the Record-Route copied),
ACK, BYE, 200. Registering and answering from one process keeps one flow:
the same UDP socket, or over TLS the same connection, as a phone has.

sipp 3.6.1 speaks no TLS: for TLS each side talks TCP to its own stunnel4
service, which opens one TLS connection to the server and verifies its
certificate against the dev CA.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from peers import BenchError

READY_SECONDS = 15.0
#: How long the callee keeps a call after answering its BYE (see above).
ANSWER_BYE_MS = 8_000

#: A small audio offer and answer, so INVITE and 200 have bodies of usual size.
_SDP = """\
v=0
o=sipp-bench 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
"""

_HEADER = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
"""

#: The caller. Fields: 0 the caller's extension, 1 the domain, 2 its
#: ``[authentication]``; ``[service]`` (``-s``) is the callee. Message indices
#: matter: the ACK of the 407 reuses the first INVITE's branch (``[branch-3]``).
CALLER_SCENARIO = (
    _HEADER
    + """\
<scenario name="call through the proxy, Digest 407, Record-Route">
  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[field1]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
User-Agent: sipp-bench
Content-Type: application/sdp
Content-Length: [len]

SDP
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send>
    <![CDATA[
ACK sip:[service]@[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[field1]>
Call-ID: [call_id]
CSeq: 2 INVITE
Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
[field2]
User-Agent: sipp-bench
Content-Type: application/sdp
Content-Length: [len]

SDP
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
[routes]
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 2 ACK
Content-Length: 0

    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
[routes]
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 3 BYE
User-Agent: sipp-bench
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""
).replace("SDP\n", _SDP)

#: The callee's main scenario: register once, say so (``touch``), then wait.
#: ``REGISTERED`` is replaced by the path of the file to touch.
CALLEE_REGISTER_SCENARIO = (
    _HEADER
    + """\
<scenario name="callee registers, then waits">
  <send retrans="500">
    <![CDATA[
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
Expires: 3600
User-Agent: sipp-bench-callee
Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
[field2]
Expires: 3600
User-Agent: sipp-bench-callee
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <nop>
    <action>
      <exec command="touch REGISTERED"/>
    </action>
  </nop>
  <pause milliseconds="86400000"/>
</scenario>
"""
)

#: The callee's out-of-call scenario: every INVITE starts one of these. sipp
#: resends only the first answer it sent after a request (the 180), so an
#: INVITE retransmitted by a busy proxy after the 200 would abort the call;
#: the optional ``recv`` absorbs it instead. The final pause keeps the call
#: for a while, so that a BYE the proxy retransmits (its copy of our 200 was
#: lost) is answered again rather than reaching a dead call, which sipp ignores.
CALLEE_UAS_SCENARIO = (
    _HEADER
    + """\
<scenario name="callee answers">
  <recv request="INVITE"/>
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

SDP
    ]]>
  </send>
  <recv request="INVITE" optional="true"/>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="ANSWER_BYE_MS"/>
</scenario>
"""
).replace("SDP\n", _SDP)

#: Remove every binding of field 0 (``Contact: *``, ``Expires: 0``), with Digest.
UNREGISTER_SCENARIO = (
    _HEADER
    + """\
<scenario name="remove all bindings">
  <send retrans="500">
    <![CDATA[
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: *
Expires: 0
Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: *
[field2]
Expires: 0
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""
)


def write(path: Path, text: str) -> Path:
    """Write a scenario (ASCII) and return its path."""
    path.write_text(text, encoding="ascii")
    return path


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _stop(process: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Callee:
    """sipp registering as one extension, then answering every call it is sent."""

    def __init__(
        self,
        sipp: str,
        workdir: Path,
        name: str,
        target: tuple[str, int],
        users: Path,
        domain: str,
        *,
        local_port: int,
        transport: str = "u1",
        trace: bool = False,
    ) -> None:
        self.name = name
        self.workdir = workdir / name
        self.workdir.mkdir(exist_ok=True)
        marker = self.workdir / "registered"
        marker.unlink(missing_ok=True)
        main = write(
            self.workdir / "callee-register.xml",
            CALLEE_REGISTER_SCENARIO.replace("REGISTERED", str(marker)),
        )
        uas = write(
            self.workdir / "callee-uas.xml",
            CALLEE_UAS_SCENARIO.replace("ANSWER_BYE_MS", str(ANSWER_BYE_MS)),
        )
        self.errors = self.workdir / "errors.log"
        self.screen = self.workdir / "screen.log"
        self.messages = self.workdir / "messages.log"
        argv = [
            sipp,
            f"{target[0]}:{target[1]}",
            "-sf",
            str(main),
            "-oocsf",
            str(uas),
            "-inf",
            str(users),
            "-auth_uri",
            domain,
            "-s",
            "callee",
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            str(local_port),
            "-m",
            "1",
            # Room for the out-of-call scenarios: -l limits outgoing calls only,
            # but keep sipp from refusing to open sockets.
            "-max_socket",
            "1000",
            "-trace_err",
            "-error_file",
            str(self.errors),
            "-nostdin",
        ]
        if trace:
            argv += ["-trace_msg", "-message_file", str(self.messages)]
        with self.screen.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + READY_SECONDS
        while not marker.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(
                    f"{name}: the callee did not register: {_tail(self.errors)}"
                    f"{_tail(self.screen)}"
                )
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        """sipp's process id."""
        return self.process.pid

    def stop(self) -> None:
        """Stop sipp (it has nothing to finish)."""
        _stop(self.process)


def _listening(port: int) -> bool:
    """Whether some process listens on TCP 127.0.0.1:``port`` (from /proc, no connection)."""
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == wanted and line.split()[3] == "0A" for line in lines)


class Stunnel:
    """stunnel4 in client mode: one local TCP port per service, each relayed
    over TLS (certificate verified against ``ca`` for ``localhost``) to ``target``."""

    def __init__(
        self, binary: str, workdir: Path, target: tuple[str, int], ca: Path, services: list[str]
    ) -> None:
        self.ports = {service: _free_tcp_port() for service in services}
        self.config = workdir / "stunnel.conf"
        self.log = workdir / "stunnel.log"
        sections = "".join(
            f"""
[{service}]
client = yes
accept = 127.0.0.1:{port}
connect = {target[0]}:{target[1]}
CAfile = {ca}
verifyChain = yes
checkHost = localhost
sslVersionMin = TLSv1.2
"""
            for service, port in self.ports.items()
        )
        self.config.write_text(
            f"foreground = yes\npid =\ndebug = 4\noutput = {self.log}\nsocket = l:TCP_NODELAY=1\n"
            f"socket = r:TCP_NODELAY=1\n{sections}"
        )
        with (workdir / "stunnel.out").open("wb") as out:
            self.process = subprocess.Popen(
                [binary, str(self.config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + READY_SECONDS
        while not all(_listening(port) for port in self.ports.values()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(
                    f"stunnel did not start: {_tail(workdir / 'stunnel.out')}{_tail(self.log)}"
                )
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        """stunnel's process id."""
        return self.process.pid

    def stop(self) -> None:
        """Stop stunnel."""
        _stop(self.process)


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
