"""The servers under test: a temporary Telemancer dev instance and a Kamailio.

Both listen on 127.0.0.1 only, on ports the kernel reports free, and run as
child processes whose output goes to log files in the benchmark's work
directory.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.config import load
from appliance.sip.digest import MD5
from appliance.store import open_directory
from appliance.store.audit import Actor
from appliance.store.checkpoints import CheckpointKey

READY_SECONDS = 30.0
STOP_SECONDS = 30.0
BENCH_ACTOR = Actor("unix:bench", "console")
KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")


class BenchError(RuntimeError):
    """Something needed for a measurement did not work (not a slow figure)."""


def free_port() -> int:
    """A port on 127.0.0.1 that is free for both TCP and UDP right now."""
    for _ in range(100):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise BenchError("no port free for both TCP and UDP on 127.0.0.1")


def make_users(count: int) -> list[tuple[str, str]]:
    """``count`` extensions ``u0000``, ``u0001``... with random passwords."""
    width = max(4, len(str(count - 1)))
    return [(f"u{i:0{width}d}", secrets.token_hex(8)) for i in range(count)]


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@dataclass(frozen=True)
class TelemancerInstance:
    """A dev instance with plaintext UDP from 127.0.0.0/8, MD5 Digest only, one tenant."""

    config: Path
    udp_port: int
    tls_port: int
    ca: Path
    domain: str
    users: tuple[tuple[str, str], ...]


def create_instance(
    root: Path,
    domain: str,
    users: Sequence[tuple[str, str]],
    *,
    max_connections_per_ip: int,
    max_concurrent_calls: int = 10,
) -> TelemancerInstance:
    """``telemancer init --dev``, open the ports, add the tenant and its extensions.

    The instance challenges with MD5 alone (``sip.digest_algorithms``): Debian's
    sipp answers only the first challenge of a 401 and knows only MD5.

    Extensions go through the store API (as the CLI does, audited), which is
    much faster than one CLI process per extension.
    """
    var = root / "telemancer"
    init = subprocess.run(
        [sys.executable, "-m", "appliance", "init", "--dev", str(var)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        raise BenchError(f"telemancer init --dev failed: {init.stderr}")
    config = var / "telemancer.toml"
    udp_port, tls_port = free_port(), free_port()
    edits = (
        (r'(?m)^listen = "127\.0\.0\.1:8443"$', f'listen = "127.0.0.1:{free_port()}"'),
        (r'(?m)^tls_listen = ".*"$', f'tls_listen = "127.0.0.1:{tls_port}"'),
        (r"(?m)^\[sip\]$", f'[sip]\ndigest_algorithms = ["{MD5}"]'),
        (r"(?m)^plaintext_enabled = false$", "plaintext_enabled = true"),
        (r'(?m)^plaintext_listen = ".*"$', f'plaintext_listen = "127.0.0.1:{udp_port}"'),
        (
            r"(?m)^internal_subnets = .*$",
            'internal_subnets = ["127.0.0.0/8"]\n'
            f"max_connections_per_ip = {max_connections_per_ip}",
        ),
    )
    text = config.read_text()
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise BenchError(f"the dev config no longer has a line matching {pattern!r}")
    config.write_text(text)

    loaded = load(config, {})
    if loaded.sip.digest_algorithms != (MD5,):
        raise BenchError(f"the instance offers {loaded.sip.digest_algorithms}, not MD5 alone")
    key = CheckpointKey.from_pem(loaded.secrets.audit_signing_key.value)
    store = open_directory(loaded.database_path, key, loaded.audit.checkpoint_every, time.time)
    try:
        tenant = store.add_tenant(
            BENCH_ACTOR,
            "Bench",
            domain,
            max_extensions=len(users),
            max_concurrent_calls=max_concurrent_calls,
        )
        extensions = store.scope(tenant.id).extensions()
        for number, password in users:
            extensions.add(BENCH_ACTOR, number, password)
    finally:
        store.db.close()
    return TelemancerInstance(
        config, udp_port, tls_port, var / "tls" / "ca.crt", domain, tuple(users)
    )


class Telemancer:
    """``telemancer run`` as a child process, ready once it logs ``listening on``."""

    def __init__(self, instance: TelemancerInstance, log: Path) -> None:
        self.instance = instance
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appliance", "--config", str(instance.config), "run"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_SECONDS
        while "listening on" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"telemancer did not start listening: {_tail(self.log)}")
            time.sleep(0.1)
        time.sleep(0.5)  # every listener logs once the last one is open

    @property
    def pid(self) -> int:
        """The appliance's process id (it is one process)."""
        return self.process.pid

    def stop(self) -> int:
        """SIGTERM and the exit status."""
        return _stop(self.process)


def kamailio_version(binary: str) -> str:
    """``5.6.3`` style, or ``?``."""
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"kamailio (\S+)", result.stdout)
    return match.group(1) if match else "?"


def kamailio_config(
    port: int, domain: str, users: Sequence[tuple[str, str]], children: int
) -> str:
    """A registrar with MD5 Digest (qop=auth) against plaintext passwords in an htable.

    The passwords are loaded into shared memory at start, so a lookup costs a
    hash-table read, as the appliance's in-memory directory does; usrloc keeps
    bindings in memory only (``db_mode`` 0). Like the appliance, it refuses
    credentials for another user than the To URI's.
    """
    loads = "\n".join(f'    $sht(users=>{user}) = "{password}";' for user, password in users)
    return f"""\
#!KAMAILIO
debug=-1
log_stderror=yes
fork=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="{domain}"
mpath="{KAMAILIO_MODULES}/"

loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "htable.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("auth", "secret", "{secrets.token_hex(16)}")
modparam("htable", "htable", "users=>size=14;")

event_route[htable:mod-init] {{
{loads}
}}

request_route {{
    if (!is_method("REGISTER")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    if (!is_present_hf("Authorization")) {{
        www_challenge("$td", "1");
        exit;
    }}
    $var(password) = $sht(users=>$au);
    if (!pv_www_authenticate("$td", "$var(password)", "0")) {{
        www_challenge("$td", "1");
        exit;
    }}
    if ($au != $tU) {{
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    consume_credentials();
    if (!save("location")) {{
        sl_reply_error();
    }}
    exit;
}}
"""


def kamailio_proxy_config(
    port: int, domain: str, users: Sequence[tuple[str, str]], children: int
) -> str:
    """A stateful proxy (``tm``) with ``record_route``, the same registrar and
    MD5 Digest as :func:`kamailio_config`, ``lookup`` in usrloc, and 407
    challenges for initial INVITEs (``pv_proxy_authenticate``), refusing
    credentials for another user than the From user, as the appliance does.

    In-dialog requests follow the Route set (``loose_route``); retransmitted
    requests are absorbed by their transaction (``t_precheck_trans``, as in
    Kamailio's default configuration).
    """
    loads = "\n".join(f'    $sht(users=>{user}) = "{password}";' for user, password in users)
    return f"""\
#!KAMAILIO
debug=-1
log_stderror=yes
fork=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="{domain}"
mpath="{KAMAILIO_MODULES}/"

loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "htable.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("auth", "secret", "{secrets.token_hex(16)}")
modparam("htable", "htable", "users=>size=14;")

event_route[htable:mod-init] {{
{loads}
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            if (!t_relay()) {{
                sl_reply_error();
            }}
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        if (!is_method("ACK")) {{
            sl_send_reply("404", "Not Here");
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
        exit;
    }}
    if (t_precheck_trans()) {{
        t_check_trans();
        exit;
    }}
    t_check_trans();
    if (is_method("REGISTER")) {{
        if (!is_present_hf("Authorization")) {{
            www_challenge("$td", "1");
            exit;
        }}
        $var(password) = $sht(users=>$au);
        if (!pv_www_authenticate("$td", "$var(password)", "0")) {{
            www_challenge("$td", "1");
            exit;
        }}
        if ($au != $tU) {{
            sl_send_reply("403", "Forbidden");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    if (!is_present_hf("Proxy-Authorization")) {{
        proxy_challenge("$fd", "1");
        exit;
    }}
    $var(password) = $sht(users=>$au);
    if (!pv_proxy_authenticate("$fd", "$var(password)", "0")) {{
        proxy_challenge("$fd", "1");
        exit;
    }}
    if ($au != $fU) {{
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    consume_credentials();
    if (!lookup("location")) {{
        sl_send_reply("480", "Temporarily Unavailable");
        exit;
    }}
    record_route();
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""


class Kamailio:
    """Kamailio in the foreground (``-DD -E``) with its worker processes: the
    registrar of :func:`kamailio_config`, or with ``proxy`` the stateful proxy
    of :func:`kamailio_proxy_config`."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        domain: str,
        users: Sequence[tuple[str, str]],
        *,
        children: int,
        proxy: bool = False,
    ) -> None:
        self.port = free_port()
        self.config = workdir / "kamailio.cfg"
        make_config = kamailio_proxy_config if proxy else kamailio_config
        self.config.write_text(make_config(self.port, domain, users, children))
        self.log = workdir / "kamailio.log"
        check = subprocess.run(
            [binary, "-c", "-f", str(self.config)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise BenchError(f"kamailio refused its config: {check.stderr[-3000:]}")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [binary, "-f", str(self.config), "-DD", "-E", "-m", "128", "-M", "16"],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if not _answers_udp(("127.0.0.1", self.port), self.process):
            self.stop()
            raise BenchError(f"kamailio does not answer on UDP {self.port}: {_tail(self.log)}")

    @property
    def pid(self) -> int:
        """The main process; its children do the work."""
        return self.process.pid

    def stop(self) -> int:
        """SIGTERM to the main process (it stops its children) and the exit status."""
        return _stop(self.process)


def _answers_udp(address: tuple[str, int], process: subprocess.Popen[bytes]) -> bool:
    """Whether a SIP OPTIONS to ``address`` gets any answer before the deadline."""
    probe = (
        f"OPTIONS sip:{address[0]}:{address[1]} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-bench-probe;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
        "Call-ID: bench-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + READY_SECONDS
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        while time.monotonic() < deadline and process.poll() is None:
            sock.sendto(probe, address)
            try:
                sock.recv(65_535)
            except (TimeoutError, ConnectionRefusedError):
                continue
            return True
    return False


def stop_on_sigterm() -> None:
    """Make SIGTERM end a benchmark as Ctrl-C does: through its ``finally`` blocks,
    which stop the servers, and ``subprocess.run``, which kills a running sipp.
    Killed outright, a benchmark left its sipp processes spinning, and they
    skewed the CPU figures of the runs after it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
