"""Media relay benchmark: CPU per relayed RTP packet for simulated G.711 calls,
plain and SRTP, with Debian's rtpengine (userspace) as the peer.

Usage::

    .venv/bin/python bench/media.py [--calls 400] [--seconds 20] [--warm-up 3]
                                    [--modes plain,plain-srtp,srtp-srtp]
                                    [--generators 2] [--no-rtpengine]
                                    [--py-spy FILE] [--keep DIR]

For each mode, all on 127.0.0.1:

1. the relay under test runs alone in its own process (``media_relay.py``):
   the appliance's ``Relay`` and ``MediaSockets`` on Twisted's default
   reactor, with ``--calls`` calls opened (four bound ports each) and each
   leg configured as SDES would have left it;
2. load generators (``media_load.py``, ``--generators`` processes) play both
   phones of every call: one 172-byte RTP packet (160 bytes of G.711) every
   20 ms each way, spread over the 20 ms, protected on the fly on SRTP sides;
   they count what comes back, check its call and SSRC, and check a sample
   of it (one packet a second per stream) for authentication with the key
   the relay announced and for the sender's payload;
3. after ``--warm-up`` seconds the relay's CPU time (``utime + stime`` from
   ``/proc``) is read, and again ``--seconds`` later; the figure is that CPU
   time divided by the packets relayed (received by the generators) in the
   same window;
4. the same load then goes through rtpengine, when ``rtpengine-daemon`` is
   installed, set up with ng ``offer``/``answer`` per call.

Modes: ``plain`` (RTP both legs), ``plain-srtp`` (the callee's leg is SRTP,
AES_CM_128_HMAC_SHA1_80), ``srtp-srtp`` (both legs SRTP, every direction of
every leg with its own key in our relay). rtpengine 10.5 gives SDES legs of
the same suite the same keys and then forwards SRTP without touching it; it
is measured that way ("pass-through") and made to decrypt and re-encrypt
("recrypt", by turning on DTMF logging, the only switch 10.5 has for it),
and the ratio is taken against the recrypt figure.

rtpengine comes from ``make debian-bench`` (Debian's rtpengine-daemon).

It prints figures, targets and ratios and never fails because of a figure;
it exits non-zero only when something could not be measured (a relay that
relays nothing, a peer that does not start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from media_ng import NgError, Rtpengine, find_rtpengine, open_call, rtpengine_version
from media_report import MODES, PAYLOAD_BYTES, PTIME_MS, Figures, print_report
from peers import BenchError, free_port, stop_on_sigterm
from procstat import CLOCK_TICKS, cpu_seconds, udp_socket_drops
from pyspy import PySpy, find_py_spy

BENCH = Path(__file__).resolve().parent
PORT_RANGE = (20000, 29999)
KEY_AND_SALT_BYTES = 30
SLOTS = 20
#: One sampled packet per stream per second is authenticated and compared.
SAMPLE_EVERY = 1000 // PTIME_MS
#: Between the go and the first packet: the generators build their SRTP contexts.
LEAD_SECONDS = 1.0
#: Sending goes on this long after the window, then replies are drained.
TAIL_SECONDS = 0.5
DRAIN_SECONDS = 1.0


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far (``utime``, ``stime``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def progress(message: str) -> None:
    """A line on stderr, so stdout keeps the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="concurrent calls (400)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (20)")
    parser.add_argument("--warm-up", type=float, default=3.0, help="before the window (3)")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, of {', '.join(MODES)} (all)",
    )
    parser.add_argument("--generators", type=int, default=2, help="load processes (2)")
    parser.add_argument(
        "--sockets", type=int, default=4, help="sockets per side per generator (4)"
    )
    parser.add_argument("--no-rtpengine", action="store_true", help="skip the peer")
    parser.add_argument(
        "--rtpengine-threads", type=int, default=None, help="rtpengine --num-threads (its default)"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="FILE",
        help="sample our relay during each window (FILE-MODE.txt); adds CPU to the figures",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in DIR")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    args.modes = modes
    if args.calls < 1 or args.seconds <= 0 or args.generators < 1:
        parser.error("--calls, --seconds and --generators must be positive")
    return args


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created) or a temporary directory removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="telemancer-media-") as name:
        yield Path(name)


class _LineProcess:
    """A child speaking one JSON object per line on stdin/stdout."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as errors:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def send(self, message: object) -> None:
        """One line to the child."""
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()

    def receive(self, what: str) -> Any:
        """One line from the child (it blocks; the children answer promptly or exit)."""
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            self.process.wait()
            raise BenchError(
                f"{what}: the process exited ({self.process.returncode}):"
                f" {self.log.read_text(errors='replace')[-2000:]}"
            )
        return json.loads(line)

    def stop(self) -> None:
        """Kill it if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class Generators:
    """The load processes, each with a contiguous share of the calls."""

    def __init__(self, root: Path, label: str, calls: int, count: int, sockets: int) -> None:
        count = min(count, calls)
        shares = [calls // count + (1 if i < calls % count else 0) for i in range(count)]
        self.processes: list[_LineProcess] = []
        self.shares = shares
        self.a_ports: list[int] = []
        self.b_ports: list[int] = []
        first = 0
        try:
            for index, share in enumerate(shares):
                process = _LineProcess(
                    [sys.executable, str(BENCH / "media_load.py")],
                    root / f"{label}-generator-{index}.log",
                )
                self.processes.append(process)
                process.send(
                    {"index": index, "first_call": first, "calls": share, "sockets": sockets}
                )
                first += share
            for process in self.processes:
                ports = process.receive("load generator set-up")
                self.a_ports += ports["a"]
                self.b_ports += ports["b"]
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        """The generators' process ids."""
        return [p.pid for p in self.processes]

    @property
    def ports(self) -> set[int]:
        """Every local port the generators bound."""
        return set(self.a_ports) | set(self.b_ports)

    def start(self, calls: list[dict[str, Any]], timing: dict[str, float]) -> None:
        """Hand each its calls' plan; they start at ``timing["start"]``."""
        first = 0
        for process, share in zip(self.processes, self.shares, strict=True):
            process.send(
                {
                    "calls": calls[first : first + share],
                    "ptime_ms": PTIME_MS,
                    "payload_bytes": PAYLOAD_BYTES,
                    "slots": SLOTS,
                    "sample_every": SAMPLE_EVERY,
                    **timing,
                }
            )
            first += share

    def results(self) -> list[dict[str, Any]]:
        """Each generator's figures (they print them once drained)."""
        return [p.receive("load generator run") for p in self.processes]

    def stop(self) -> None:
        """Make sure none is left."""
        for process in self.processes:
            process.stop()


def new_key() -> bytes:
    """A fresh AES_CM_128_HMAC_SHA1_80 master key and salt."""
    return secrets.token_bytes(KEY_AND_SALT_BYTES)


def _hex(key: bytes | None) -> str | None:
    return None if key is None else key.hex()


def measure(
    server: str,
    mode: str,
    pid: int,
    generators: Generators,
    calls: list[dict[str, Any]],
    target_ports: set[int],
    args: argparse.Namespace,
    profile: Path | None = None,
) -> Figures:
    """Run the load through a started relay and read its CPU around the window."""
    drops_before = udp_socket_drops()
    start = time.monotonic() + LEAD_SECONDS
    timing = {"start": start, "warm_up_end": start + args.warm_up}
    timing["measure_end"] = timing["warm_up_end"] + args.seconds
    timing["send_end"] = timing["measure_end"] + TAIL_SECONDS
    timing["drain_end"] = timing["send_end"] + DRAIN_SECONDS
    generators.start(calls, timing)
    _sleep_until(timing["warm_up_end"])
    spy = None
    if profile is not None:
        binary = find_py_spy()
        if binary is None:
            raise BenchError("--py-spy: py-spy is not installed (.venv/bin/pip install py-spy)")
        spy = PySpy(binary, pid, profile)
    user_before, system_before = cpu_split(pid)
    generator_before = sum(cpu_seconds(p) for p in generators.pids)
    _sleep_until(timing["measure_end"])
    user_after, system_after = cpu_split(pid)
    generator_after = sum(cpu_seconds(p) for p in generators.pids)
    if spy is not None:
        spy.stop()
    results = generators.results()
    drops_after = udp_socket_drops()

    def dropped(ports: set[int]) -> int:
        return sum(drops_after.get(p, 0) - drops_before.get(p, 0) for p in ports)

    checks: dict[str, int] = {}
    for result in results:
        for name in (
            "send_errors",
            "silent_streams",
            "stray",
            "wrong_ssrc",
            "verified",
            "auth_failed",
            "wrong_payload",
        ):
            checks[name] = checks.get(name, 0) + int(result[name])
    window_sent = window_received = 0
    for result in results:
        marks = result["snapshots"]
        if len(marks) != 2:
            raise BenchError(f"{server} {mode}: a generator missed its marks: {marks}")
        window_sent += marks[1]["sent"] - marks[0]["sent"]
        window_received += marks[1]["received"] - marks[0]["received"]
    figures = Figures(
        server=server,
        mode=mode,
        window=args.seconds,
        cpu=user_after + system_after - user_before - system_before,
        system_cpu=system_after - system_before,
        generator_cpu=generator_after - generator_before,
        sent=sum(int(r["sent"]) for r in results),
        received=sum(int(r["received"]) for r in results),
        sent_window=window_sent,
        received_window=window_received,
        checks=checks,
        relay_drops=dropped(target_ports),
        generator_drops=dropped(generators.ports),
    )
    if window_received == 0:
        raise BenchError(f"{server} {mode}: nothing was relayed ({checks})")
    return figures


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def run_telemancer(root: Path, mode: str, args: argparse.Namespace) -> Figures:
    """Our relay, in its own process, on one mode's load."""
    a_srtp, b_srtp = MODES[mode]
    label = f"relay-{mode}"
    server = "telemancer"
    relay = _LineProcess([sys.executable, str(BENCH / "media_relay.py")], root / f"{label}.log")
    generators: Generators | None = None
    try:
        relay.send({"calls": args.calls, "port_range": list(PORT_RANGE)})
        ports = relay.receive("relay set-up")["ports"]
        generators = Generators(root, label, args.calls, args.generators, args.sockets)
        legs, calls = [], []
        for (a_port, b_port), a_peer, b_peer in zip(
            ports, generators.a_ports, generators.b_ports, strict=True
        ):
            # SDES: each side's key protects what that side sends; ours are fresh per leg.
            a_sends, to_a = (new_key(), new_key()) if a_srtp else (None, None)
            b_sends, to_b = (new_key(), new_key()) if b_srtp else (None, None)
            legs.append(
                {
                    "a_expected": a_peer,
                    "b_expected": b_peer,
                    "a_inbound": _hex(a_sends),
                    "a_outbound": _hex(to_a),
                    "b_inbound": _hex(b_sends),
                    "b_outbound": _hex(to_b),
                }
            )
            calls.append(
                {
                    "a_target": a_port,
                    "b_target": b_port,
                    "a_send": _hex(a_sends),
                    "a_receive": _hex(to_a),
                    "b_send": _hex(b_sends),
                    "b_receive": _hex(to_b),
                }
            )
        relay.send({"legs": legs})
        ready = relay.receive("relay configuration")
        progress(f"{server} {mode}: {args.calls} calls on {ready['reactor']}; running")
        targets = {p for pair in ports for p in pair}
        profile = None
        if args.py_spy is not None:
            profile = _profile_path(args.py_spy, mode)
        figures = measure(server, mode, relay.pid, generators, calls, targets, args, profile)
        relay.process.send_signal(signal.SIGTERM)
        figures.counters = relay.receive("relay counters")
        relay.process.wait(timeout=30)
        if profile is not None:
            figures.profile = str(profile)
        return figures
    finally:
        if generators is not None:
            generators.stop()
        relay.stop()


def _profile_path(base: Path, mode: str) -> Path:
    base.parent.mkdir(parents=True, exist_ok=True)
    return base.with_name(f"{base.stem}-{mode}{base.suffix or '.txt'}")


def run_rtpengine(
    root: Path, binary: str, mode: str, args: argparse.Namespace, *, recrypt: bool
) -> Figures:
    """rtpengine (userspace) on one mode's load; ``recrypt`` forces it to
    decrypt and re-encrypt same-keyed SRTP legs (see :class:`media_ng.Rtpengine`)."""
    a_srtp, b_srtp = MODES[mode]
    label = f"rtpengine-{mode}" + ("-recrypt" if recrypt else "")
    server = "rtpengine" + (" (recrypt)" if recrypt else "")
    with contextlib.ExitStack() as stack:
        dtmf_log = None
        if recrypt:
            # Bound and never read: rtpengine's DTMF events (there are none) would go here.
            sink = stack.enter_context(_udp_sink())
            dtmf_log = ("127.0.0.1", sink)
        engine = Rtpengine(
            binary,
            free_port(),
            PORT_RANGE,
            root / f"{label}.log",
            args.rtpengine_threads,
            dtmf_log,
        )
        stack.callback(engine.stop)
        generators = Generators(root, label, args.calls, args.generators, args.sockets)
        stack.callback(generators.stop)
        calls = []
        targets: set[int] = set()
        for number, (a_peer, b_peer) in enumerate(
            zip(generators.a_ports, generators.b_ports, strict=True)
        ):
            a, b = open_call(
                engine.client,
                f"bench-{number}",
                a_peer,
                b_peer,
                new_key() if a_srtp else None,
                new_key() if b_srtp else None,
            )
            targets |= {a.target, b.target}
            calls.append(
                {
                    "a_target": a.target,
                    "b_target": b.target,
                    "a_send": _hex(a.send_key),
                    "a_receive": _hex(a.receive_key),
                    "b_send": _hex(b.send_key),
                    "b_receive": _hex(b.receive_key),
                }
            )
        progress(f"{server} {mode}: {args.calls} calls offered and answered; running")
        return measure(server, mode, engine.pid, generators, calls, targets, args)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _udp_sink() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        yield int(sink.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Run every mode on our relay, then on rtpengine; print the report."""
    args = parse_args(argv)
    stop_on_sigterm()
    notes: list[str] = []
    binary = None if args.no_rtpengine else find_rtpengine()
    engine = None
    if binary is not None:
        engine = f"rtpengine {rtpengine_version(binary)} (userspace, --table=-1)"
    elif not args.no_rtpengine:
        notes.append(
            "rtpengine is not installed (`make debian-bench` installs rtpengine-daemon): no ratios"
        )
    rows: list[Figures] = []
    try:
        with work_directory(args.keep) as root:
            for mode in args.modes:
                rows.append(run_telemancer(root, mode, args))
                if binary is None:
                    continue
                try:
                    rows.append(run_rtpengine(root, binary, mode, args, recrypt=False))
                    if mode == "srtp-srtp":
                        rows.append(run_rtpengine(root, binary, mode, args, recrypt=True))
                except NgError as error:
                    notes.append(f"rtpengine {mode}: {error}")
    except BenchError as error:
        print_report(args, rows, engine, notes)
        print(f"error: {error}", file=sys.stderr)
        return 1
    print_report(args, rows, engine, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
