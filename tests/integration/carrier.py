"""A carrier for the trunk tests: Kamailio 5.6 as the carrier's SIP/TLS edge,
with a certificate issued by a test CA, and sipp as the telephone network
behind it (a UAS that answers the calls the appliance places, a UAC that
places calls to a tenant's DID).

Addresses, all on 127.0.0.0/8:

- 127.0.0.1: the appliance and its phones;
- 127.0.0.3: Kamailio, TLS toward the appliance and UDP toward sipp; its
  outbound TLS connections to the appliance come from this address too
  (``tcp_source_ipv4``: by default Kamailio lets the kernel pick 127.0.0.1,
  and the appliance knows its carriers by source address);
- 127.0.0.4: sipp, the network behind the carrier.

Kamailio's configuration is generated here: requests from the appliance
must carry Digest credentials of one fixed user (challenged with 407,
checked against a plaintext password with ``pv_proxy_authenticate``) and are
relayed to the sipp UAS; requests from the sipp side are relayed to the
appliance over TLS. Every request Kamailio receives, and every successful
authentication, is logged with a ``CARRIER`` line the tests read.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.conftest import DEADLINE_SECONDS, telemancer
from tests.integration.peers import POLL_INTERVAL, PeerProcess, free_udp_port, peer_program

#: Where Kamailio listens (TLS and UDP) and connects from.
CARRIER_IP = "127.0.0.3"
#: Where sipp, the network behind the carrier, runs.
NETWORK_IP = "127.0.0.4"
#: The carrier's name: its certificate's identity and its Digest realm.
CARRIER_DOMAIN = "carrier.test"
#: Kamailio's modules on Debian 12 (x86_64).
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


# -- the carrier's certificate -------------------------------------------------


@dataclass(frozen=True)
class CarrierPki:
    """A test CA and the carrier's certificate and key it issued (PEM files)."""

    ca: Path
    certificate: Path
    key: Path


def issue_carrier_pki(directory: Path, domain: str = CARRIER_DOMAIN) -> CarrierPki:
    """A fresh ECDSA P-256 CA and a leaf for ``domain`` with subjectAltName
    ``DNS:domain`` and ``URI:sip:domain`` (RFC 5922 §7.1), valid for a day,
    usable as a TLS server and client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Telemancer test carrier CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(domain), x509.UniformResourceIdentifier(f"sip:{domain}")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = CarrierPki(directory / "ca.pem", directory / "carrier.pem", directory / "carrier.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.certificate.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pki.key.chmod(0o600)
    return pki


# -- Kamailio --------------------------------------------------------------------


def free_tcp_port(host: str) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class CarrierPlan:
    """Everything Kamailio's configuration depends on."""

    tls_port: int
    udp_port: int
    appliance_tls_port: int
    uas_port: int
    username: str
    password: str


_KAMAILIO_CFG = """\
#!KAMAILIO
# Generated by tests/integration/carrier.py: a carrier's edge for one test.
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
dns_try_ipv6=no
enable_tls=yes
listen=udp:{ip}:{udp_port}
listen=tls:{ip}:{tls_port}
alias="{domain}"
tcp_connect_timeout=5
# Outbound TCP/TLS from our own address: the appliance knows carriers by source.
tcp_source_ipv4={ip}
mpath="{modules}"

loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"

modparam("tls", "config", "{tls_cfg}")
modparam("rr", "enable_double_rr", 1)
modparam("auth", "secret", "{auth_secret}")

request_route {{
    xlog("L_NOTICE", "CARRIER received $rm $ru from $si:$sp over $pr cseq $cs\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && $rU == $null) {{
        sl_send_reply("200", "Carrier here");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            xlog("L_NOTICE", "CARRIER in-dialog $rm to $ru via $du\\n");
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    if ($si == "{network_ip}") {{
        # A call from the network to one of our customers' DIDs.
        record_route();
        $ru = "sip:" + $rU + "@127.0.0.1:{appliance_tls_port};transport=tls";
        xlog("L_NOTICE", "CARRIER inbound to $ru\\n");
        if (!t_relay()) {{
            sl_reply_error();
        }}
        exit;
    }}
    # A call from a customer: Digest first.
    if (!pv_proxy_authenticate("{domain}", "{password}", "0")) {{
        xlog("L_NOTICE", "CARRIER challenging $rm from $si\\n");
        proxy_challenge("{domain}", "1");
        exit;
    }}
    if ($au != "{username}") {{
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    xlog("L_NOTICE", "CARRIER authenticated $au for $rm $ru cseq $cs\\n");
    consume_credentials();
    record_route();
    $du = "sip:{network_ip}:{uas_port}";
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""

_TLS_CFG = """\
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {certificate}
private_key = {key}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {certificate}
private_key = {key}
"""


def kamailio_config(directory: Path, plan: CarrierPlan, pki: CarrierPki) -> Path:
    """Write Kamailio's configuration (and its TLS configuration) for ``plan``.

    Toward the appliance Kamailio does not verify the appliance's development
    certificate: these tests are about the appliance verifying the carrier.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tls_cfg = directory / "tls.cfg"
    tls_cfg.write_text(_TLS_CFG.format(certificate=pki.certificate, key=pki.key))
    for value in (plan.username, plan.password):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", value), "keep the cfg's strings simple"
    cfg = directory / "kamailio.cfg"
    cfg.write_text(
        _KAMAILIO_CFG.format(
            ip=CARRIER_IP,
            network_ip=NETWORK_IP,
            domain=CARRIER_DOMAIN,
            modules=KAMAILIO_MODULES,
            tls_cfg=tls_cfg,
            auth_secret=secrets.token_hex(16),
            tls_port=plan.tls_port,
            udp_port=plan.udp_port,
            appliance_tls_port=plan.appliance_tls_port,
            uas_port=plan.uas_port,
            username=plan.username,
            password=plan.password,
        )
    )
    return cfg


class Kamailio:
    """Kamailio running in the foreground (``-DD -E``) on a generated configuration."""

    def __init__(
        self, directory: Path, plan: CarrierPlan, pki: CarrierPki, *, env: dict[str, str]
    ) -> None:
        self.plan = plan
        cfg = kamailio_config(directory, plan, pki)
        checked = PeerProcess(
            [peer_program("kamailio"), "-c", "-f", str(cfg)], env=env, cwd=directory
        )
        assert checked.wait() == 0, f"kamailio -c refused the configuration\n{checked.tail()}"
        self.process = PeerProcess(
            [
                peer_program("kamailio"),
                "-f",
                str(cfg),
                "-DD",
                "-E",
                "-m",
                "64",
                "-M",
                "8",
                "-w",
                str(directory),
            ],
            env=env,
            cwd=directory,
        )

    def wait_ready(self) -> None:
        """Wait until Kamailio answers an OPTIONS on its UDP port (its sockets,
        TLS included, are all open before it forks its workers)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((NETWORK_IP, 0))
            host, port = sock.getsockname()[:2]
            while True:
                assert self.process.process.poll() is None, (
                    f"kamailio exited\n{self.process.tail()}"
                )
                branch = f"z9hG4bK{secrets.token_hex(8)}"
                probe = (
                    f"OPTIONS sip:{CARRIER_DOMAIN} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {host}:{port};branch={branch}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:probe@{NETWORK_IP}>;tag={secrets.token_hex(4)}\r\n"
                    f"To: <sip:{CARRIER_DOMAIN}>\r\n"
                    f"Call-ID: {secrets.token_hex(8)}@probe\r\n"
                    "CSeq: 1 OPTIONS\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode()
                sock.sendto(probe, (CARRIER_IP, self.plan.udp_port))
                sock.settimeout(POLL_INTERVAL * 5)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    data = b""
                if data.startswith(b"SIP/2.0 200 ") and branch.encode() in data:
                    return
                if time.monotonic() >= deadline:
                    raise AssertionError(f"kamailio never answered\n{self.process.tail()}")

    def requests(self) -> list[str]:
        """Kamailio's ``CARRIER received`` log lines: every request it took in."""
        return [line for line in self.process.lines if "CARRIER received " in line]

    def received(self, method: str) -> list[str]:
        """The ``CARRIER received`` log lines for ``method`` requests."""
        return [line for line in self.requests() if f"CARRIER received {method} " in line]

    def authenticated(self) -> list[str]:
        """Kamailio's log lines for requests whose Digest credentials it accepted."""
        return [line for line in self.process.lines if "CARRIER authenticated " in line]

    def tail(self, count: int = 60) -> str:
        """The last lines of Kamailio's log, for failure messages."""
        return self.process.tail(count)

    def stop(self) -> None:
        """SIGTERM (Kamailio's main process stops its workers), SIGKILL if it lingers."""
        self.process.stop()


# -- sipp, the network behind the carrier ----------------------------------------

#: The plain G.711 description sipp sends (an answer from the called party, or
#: the caller's answer in its ACK): what a carrier's far end would say.
_SIPP_SDP = """\
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 4242 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

_UAS_HEAD = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="the called party behind the carrier">
"""
_UAS_INVITE = """\
  <recv request="INVITE" crlf="true"/>
"""


def _send(message: str, *, retrans: bool = False) -> str:
    """A sipp ``<send>`` of ``message``; ``retrans``: repeated until answered."""
    tag = '<send retrans="500">' if retrans else "<send>"
    return f"  {tag}\n    <![CDATA[\n\n{message}\n    ]]>\n  </send>\n"


#: The INVITE's headers a response copies, and the tag of the dialog.
_AS_RECEIVED = """\
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]"""
#: The same kept in variables (:data:`_UAS_KEEP_INVITE`), for answering the
#: INVITE after another request (the PRACK) has come.
_AS_KEPT = """\
Via:[$via1]
Via:[$via2]
Via:[$via3]
Record-Route:[$rr1]
Record-Route:[$rr2]
Record-Route:[$rr3]
From:[$from]
To:[$to];tag=[pid]SIPpTag01[call_number]
Call-ID:[$call_id]
CSeq:[$cseq]"""
_CONTACT = "Contact: <sip:called@[local_ip]:[local_port];transport=[transport]>"
#: 200 to the last request, which is in the dialog already (a PRACK, a BYE).
_UAS_OK = _send(
    "SIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\n"
    "Content-Length: 0\n"
)
_UAS_RINGING = _send(f"SIP/2.0 180 Ringing\n{_AS_RECEIVED}\n{_CONTACT}\nContent-Length: 0\n")
_UAS_ANSWER = _send(f"SIP/2.0 200 OK\n{_AS_RECEIVED}\n{_CONTACT}\n{_SIPP_SDP}", retrans=True)
#: The 180 sent reliably (RFC 3262), repeated until the PRACK comes; the PRACK
#: is answered, then the INVITE. sipp's ``[last_...]`` then name the PRACK, so
#: the INVITE's headers are kept in variables when it arrives: its three Vias
#: and three Record-Routes (Kamailio's two, double record-routing TLS to UDP,
#: and the appliance's), one field each, as the two write them.
_UAS_RELIABLE_RINGING = (
    _send(
        f"SIP/2.0 180 Ringing\n{_AS_RECEIVED}\nRequire: 100rel\nRSeq: 1\n{_CONTACT}\n"
        "Content-Length: 0\n",
        retrans=True,
    )
    + '  <recv request="PRACK" crlf="true"/>\n'
    + _UAS_OK
    + _send(f"SIP/2.0 200 OK\n{_AS_KEPT}\n{_CONTACT}\n{_SIPP_SDP}", retrans=True)
)
_UAS_KEEP_INVITE = """\
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" occurrence="1" assign_to="via1"/>
      <ereg regexp=".*" search_in="hdr" header="Via:" occurrence="2" assign_to="via2"/>
      <ereg regexp=".*" search_in="hdr" header="Via:" occurrence="3" assign_to="via3"/>
      <ereg regexp=".*" search_in="hdr" header="Record-Route:" occurrence="1" assign_to="rr1"/>
      <ereg regexp=".*" search_in="hdr" header="Record-Route:" occurrence="2" assign_to="rr2"/>
      <ereg regexp=".*" search_in="hdr" header="Record-Route:" occurrence="3" assign_to="rr3"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="to"/>
      <ereg regexp=".*" search_in="hdr" header="Call-ID:" assign_to="call_id"/>
      <ereg regexp=".*" search_in="hdr" header="CSeq:" assign_to="cseq"/>
    </action>
  </recv>
"""
_UAS_HANG_UP = (
    '  <recv request="ACK" crlf="true"/>\n  <recv request="BYE"/>\n' + _UAS_OK + "</scenario>\n"
)

_UAC = (
    """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="a caller on the network dialling a DID (late offer: the answer is in the ACK)">
  <send retrans="500">
    <![CDATA[

INVITE sip:{did}@{domain} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:{caller}@{network_domain}>;tag=[pid]SIPpTag00[call_number]
To: <sip:{did}@{domain}>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{caller}@[local_ip]:[local_port]>
Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
Max-Forwards: 70
From: <sip:{caller}@{network_domain}>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
"""
    + _SIPP_SDP
    + """
    ]]>
  </send>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500">
    <![CDATA[

BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
Max-Forwards: 70
From: <sip:{caller}@{network_domain}>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 2 BYE
Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""
)


@dataclass(frozen=True)
class TracedMessage:
    """One message from sipp's ``-trace_msg`` file."""

    direction: str  # "received" or "sent"
    text: str

    @property
    def start_line(self) -> str:
        """The request or status line."""
        return self.text.split("\n", 1)[0].strip()

    def headers(self, name: str) -> list[str]:
        """The values of every header field ``name`` (case-insensitive, no folding)."""
        head = self.text.split("\n\n", 1)[0]
        found = []
        for line in head.split("\n")[1:]:
            field, colon, value = line.partition(":")
            if colon and field.strip().lower() == name.lower():
                found.append(value.strip())
        return found


class Sipp:
    """One sipp run (``-m 1``, UDP on :data:`NETWORK_IP`) in the background."""

    def __init__(
        self,
        directory: Path,
        scenario: str,
        *,
        port: int,
        remote: tuple[str, int] | None,
        env: dict[str, str],
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        scenario_file = directory / "scenario.xml"
        scenario_file.write_text(scenario)
        self.messages = directory / "messages.log"
        self.errors = directory / "errors.log"
        argv = [
            peer_program("sipp"),
            "-sf",
            str(scenario_file),
            "-m",
            "1",
            "-t",
            "u1",
            "-i",
            NETWORK_IP,
            "-p",
            str(port),
            "-recv_timeout",
            f"{int(DEADLINE_SECONDS * 1000)}",
            "-timeout",
            f"{int(DEADLINE_SECONDS)}s",
            "-trace_msg",
            "-message_file",
            str(self.messages),
            "-trace_err",
            "-error_file",
            str(self.errors),
            "-nostdin",
        ]
        if remote is not None:
            argv.append(f"{remote[0]}:{remote[1]}")
        self.process = PeerProcess(argv, env=env, cwd=directory)

    def traced(self) -> list[TracedMessage]:
        """Every message sipp sent or received so far, in order."""
        if not self.messages.exists():
            return []
        text = self.messages.read_text(errors="replace").replace("\r\n", "\n")
        found = []
        for block in re.split(r"\n-{20,}[^\n]*\n", "\n" + text):
            match = re.match(
                r"\s*\w+ message (received|sent)[^\n]*:\n\n(.*)", block, flags=re.DOTALL
            )
            if match:
                found.append(TracedMessage(match.group(1), match.group(2).strip("\n") + "\n"))
        return found

    def received_requests(self, method: str) -> list[TracedMessage]:
        """The ``method`` requests sipp received."""
        return [
            m
            for m in self.traced()
            if m.direction == "received" and m.start_line.startswith(f"{method} ")
        ]

    def describe(self) -> str:
        """Screen output, errors and the message trace, for failure messages."""
        errors = self.errors.read_text(errors="replace") if self.errors.exists() else ""
        messages = self.messages.read_text(errors="replace") if self.messages.exists() else ""
        return (
            f"--- sipp output\n{self.process.tail()}\n--- errors\n{errors}\n"
            f"--- messages\n{messages[-6000:]}"
        )

    def wait(self) -> int:
        """The exit status once sipp ends by itself (or fail at the deadline)."""
        return self.process.wait()

    def stop(self) -> None:
        """Stop it if it is still running."""
        self.process.stop()


def sipp_uas(directory: Path, *, port: int, env: dict[str, str], reliable: bool = False) -> Sipp:
    """A sipp UAS on :data:`NETWORK_IP`:``port`` that answers one INVITE with 180
    and 200, then takes the ACK and answers the BYE. ``reliable``: the 180 is
    sent reliably (RFC 3262) and the call answered once its PRACK has come."""
    if reliable:
        middle = _UAS_KEEP_INVITE + _UAS_RELIABLE_RINGING
    else:
        middle = _UAS_INVITE + _UAS_RINGING + _UAS_ANSWER
    scenario = _UAS_HEAD + middle + _UAS_HANG_UP
    return Sipp(directory, scenario, port=port, remote=None, env=env)


def sipp_uac(
    directory: Path,
    *,
    carrier: tuple[str, int],
    did: str,
    caller: str,
    hold_seconds: float,
    env: dict[str, str],
) -> Sipp:
    """A sipp UAC on :data:`NETWORK_IP` calling ``did`` through the carrier's UDP
    port: INVITE, ACK with the route set from the 200's Record-Route, holds
    the call, BYE."""
    scenario = _UAC.format(
        did=did,
        domain=CARRIER_DOMAIN,
        caller=caller,
        network_domain="network.test",
        hold_ms=int(hold_seconds * 1000),
    )
    return Sipp(directory, scenario, port=free_udp_port(NETWORK_IP), remote=carrier, env=env)


# -- what the appliance recorded -------------------------------------------------


def cdr_export(config: Path, domain: str) -> list[dict[str, str]]:
    """The tenant's call detail records as the operator exports them (CSV)."""
    result = telemancer("--config", str(config), "cdr", "export", domain, "--format", "csv")
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


def split_route_set(values: Sequence[str]) -> list[str]:
    """Record-Route header values split into single entries, in order (sipp writes
    a route set it copies as one comma-separated header; no URI here has a comma)."""
    return [entry.strip() for value in values for entry in value.split(",") if entry.strip()]
