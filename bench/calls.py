"""Proxied-call benchmark of the appliance over UDP and TLS, with Kamailio as the peer.

Usage::

    .venv/bin/python bench/calls.py [--calls N] [--rate R] [--limit L]
                                    [--no-kamailio] [--no-tls] [--no-memory]
                                    [--gc-log] [--py-spy FILE] [--trace] [--keep DIR]

What it does, in a temporary directory, all on 127.0.0.1:

1. creates a Telemancer dev instance with plaintext UDP and TCP enabled for
   127.0.0.0/8, MD5 as its only Digest algorithm (sipp knows no other), and a
   tenant ``bench.example`` with caller extensions ``u0000``..., an extension
   ``callee`` and room for every concurrent call; runs ``telemancer run``;
2. starts the callee (``callload.Callee``: one sipp that registers as
   ``callee`` over UDP, then answers every INVITE with 180 and 200);
3. memory: registers 1,000 phones (sipp over one TCP connection, so no UDP
   transaction lingers in the figure) and reads the appliance's RSS growth;
   then holds 200 calls up at once and reads it again;
4. calls over UDP: a sipp caller (INVITE, 407, ACK, INVITE with
   Proxy-Authorization, 100/180/200, ACK and BYE along the Record-Route, 200)
   after a warm-up, with the appliance's CPU time read from ``/proc`` around
   the measured run;
5. the same over TLS, once the UDP calls' transactions have ended: both sipp
   sides speak TCP to stunnel4, which opens one TLS connection each to the
   appliance's TLS port; the callee registers over its connection;
6. the UDP load against Kamailio (a stateful proxy with ``record_route``,
   registrar, ``lookup`` and 407 Digest auth), once the appliance has stopped,
   when it is installed; and the ratio.

Each load starts with 3 calls traced in full (``*-smoke-messages.log``) and a
warm-up. When calls fail, the report shows the first failure sipp logged,
with the traced messages of that call when there are any (``--trace`` traces
every run). ``--gc-log`` times the appliance's garbage collections and
follows its malloc heap (``gcprobe.py``; for the heap, run long, e.g.
``--calls 90000``); ``--py-spy FILE`` samples it during the measured UDP run.

It prints figures and targets; it never fails because of a figure. The exit
status is non-zero only when something could not be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from callload import (
    CALLER_SCENARIO,
    UNREGISTER_SCENARIO,
    Callee,
    Stunnel,
    write,
)
from gcprobe import GcTotals, phase, probed_environment, read_totals
from peers import (
    BenchError,
    Kamailio,
    Telemancer,
    TelemancerInstance,
    create_instance,
    free_port,
    kamailio_version,
    make_users,
    stop_on_sigterm,
)
from procstat import (
    cpu_seconds,
    rss_kib,
    tree_cpu_seconds,
    tree_voluntary_switches,
    udp_socket_drops,
    voluntary_switches,
)
from pyspy import PySpy, ThreadProfile, find_py_spy, summarise
from sipload import (
    SippResult,
    SippRun,
    run_sipp,
    sipp_deadline,
    sipp_result,
    start_sipp,
    write_scenario,
    write_users,
)

DOMAIN = "bench.example"
CALLEE = "callee"
#: Targets from the product brief.
TARGET_UDP_CALLS_PER_CPU_SECOND = 2_000
TARGET_TLS_CALLS_PER_CPU_SECOND = 1_000
#: Kamailio on this kind of machine, from the field notes (minimal stateful relay).
FIELD_NOTES_KAMAILIO = "about 4,000"
#: Calls run with full message traces before each warm-up, to check the scenario.
SMOKE_CALLS = 3
#: Warm-up calls before the memory figures are read.
MEMORY_WARM_UP_CALLS = 50
#: UDP transactions (Timers H, J, L, M) and the proxy's call records live 32 s
#: after their last message: a held call is read again once they are gone.
TRANSACTION_SECONDS = 32.0
SETTLE_SECONDS = 2.0
#: How long a server's CPU use is read with no load.
IDLE_SECONDS = 3.0
#: A call waiting longer than this for an answer fails (sipp would wait forever).
RECV_TIMEOUT_MS = 15_000
PROFILE_LINES = 18


@dataclasses.dataclass(frozen=True)
class CallFigures:
    """One server's measured sipp run and the CPU time it took."""

    server: str
    sipp: SippResult
    cpu_seconds: float
    #: Other processes' CPU in the same run (stunnel), for context.
    other_cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Datagrams the kernel dropped on the server's full UDP receive buffer during
    #: the run (None over TLS).
    udp_drops: int | None = None
    #: The server's CPU use with no load, in CPU-seconds per second.
    idle_cpu: float = 0.0
    #: The appliance's garbage collection during the run (``--gc-log``).
    gc: GcTotals | None = None
    #: How often the server waited for work during the run (voluntary context
    #: switches: each ends in a wake-up), None when not read.
    wake_ups: int | None = None

    @property
    def per_cpu_second(self) -> float:
        """Completed calls per CPU-second of the server."""
        return self.sipp.successful / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class PhoneMemory:
    """The appliance's RSS before and after registering ``phones`` extensions."""

    phones: int
    registered: int
    before_kib: int
    after_kib: int

    @property
    def per_phone_kib(self) -> float:
        """RSS growth per registered phone."""
        return (self.after_kib - self.before_kib) / max(self.registered, 1)


@dataclasses.dataclass(frozen=True)
class CallMemory:
    """The appliance's RSS before and while ``calls`` calls are held up."""

    calls: int
    answered: int
    before_kib: int
    up_kib: int
    #: Read again once the calls' setup transactions have ended (None if held too short).
    late_kib: int | None
    result: SippResult | None

    def per_call_kib(self, rss: int) -> float:
        """RSS growth per held call at ``rss``."""
        return (rss - self.before_kib) / max(self.answered, 1)


@dataclasses.dataclass
class Report:
    """Everything measured, printed at the end."""

    udp: CallFigures | None = None
    tls: CallFigures | None = None
    kamailio: CallFigures | None = None
    kamailio_note: str = ""
    tls_note: str = ""
    phones: PhoneMemory | None = None
    held: CallMemory | None = None
    profile: dict[str, ThreadProfile] | None = None
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def progress(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"... {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=12_000, help="measured calls (sipp -m)")
    parser.add_argument("--rate", type=float, default=300, help="sipp calls per second (-r)")
    parser.add_argument("--limit", type=int, default=200, help="sipp concurrent calls (-l)")
    parser.add_argument("--warm-up", type=int, default=500, help="calls before each measured run")
    parser.add_argument(
        "--hold-ms", type=int, default=100, help="pause between ACK and BYE in measured runs"
    )
    parser.add_argument("--users", type=int, default=1_000, help="caller extensions")
    parser.add_argument("--phones", type=int, default=1_000, help="phones registered for memory")
    parser.add_argument("--held-calls", type=int, default=200, help="calls held for memory")
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=40.0,
        help="how long the held calls last (RSS is read again after"
        f" {TRANSACTION_SECONDS + SETTLE_SECONDS:g} s if this is longer)",
    )
    parser.add_argument("--kamailio-children", type=int, default=2, help="Kamailio UDP workers")
    parser.add_argument("--no-kamailio", action="store_true", help="skip the Kamailio run")
    parser.add_argument("--no-tls", action="store_true", help="skip the TLS run")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory figures")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="sipp -trace_msg in every run (slows sipp; for diagnosing failures)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="sample the appliance with py-spy during the measured UDP run"
        " (collapsed stacks to FILE; summary printed)",
    )
    parser.add_argument(
        "--gc-log",
        action="store_true",
        help="time the appliance's garbage collections and follow its malloc heap"
        " (a sitecustomize probe, gcprobe.py)",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in DIR and keep it (logs, configs)"
    )
    args = parser.parse_args(argv)
    for name in ("calls", "rate", "limit", "users", "phones", "held_calls", "kamailio_children"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("warm_up", "hold_ms"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    return args


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created, left in place) or a temporary directory removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="telemancer-calls-") as name:
        yield Path(name)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every phase needs: tools, files and the load."""

    args: argparse.Namespace
    sipp: str
    work: Path
    users: list[tuple[str, str]]
    callee_password: str
    callers: Path
    callee_users: Path
    scenario: Path

    def caller_run(
        self,
        calls: int,
        *,
        rate: float | None = None,
        limit: int | None = None,
        hold_ms: int | None = None,
        transport: str = "u1",
        trace: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> SippRun:
        """A sipp caller run: ``calls`` calls to ``callee``, ``hold_ms`` between ACK and BYE."""
        hold = self.args.hold_ms if hold_ms is None else hold_ms
        args = ("-s", CALLEE, "-d", str(hold), "-recv_timeout", str(RECV_TIMEOUT_MS), *extra)
        if trace is not None:
            args += ("-trace_msg", "-message_file", str(trace))
        return SippRun(
            sipp=self.sipp,
            scenario=self.scenario,
            users=self.callers,
            workdir=self.work,
            domain=DOMAIN,
            calls=calls,
            rate=self.args.rate if rate is None else rate,
            limit=self.args.limit if limit is None else limit,
            transport=transport,
            auth_uri=f"{CALLEE}@{DOMAIN}",
            extra_args=args,
            call_seconds=hold / 1000,
        )

    def callee(self, name: str, target: tuple[str, int], transport: str = "u1") -> Callee:
        """Start a callee registered with ``target``."""
        progress(f"{name}: registering the callee")
        return Callee(
            self.sipp,
            self.work,
            name,
            target,
            self.callee_users,
            DOMAIN,
            local_port=free_port(),
            transport=transport,
            trace=self.args.trace,
        )


def measure_calls(
    setup: Setup,
    server: str,
    target: tuple[str, int],
    cpu: Callable[[], float],
    report: Report,
    *,
    transport: str = "u1",
    profile: Callable[[], Callable[[], None]] | None = None,
    others: dict[str, Callable[[], float]] | None = None,
    udp_port: int | None = None,
    gc_log: Path | None = None,
    callee: Callee | None = None,
    waits: Callable[[], int] | None = None,
) -> CallFigures:
    """A traced smoke run, a warm-up, then the measured run with the server's CPU
    time read around it."""
    args = setup.args
    slug = server.replace(" ", "-")
    progress(f"{server}: {SMOKE_CALLS} traced calls")
    trace = setup.work / f"{slug}-smoke-messages.log"
    smoke = run_sipp(
        setup.caller_run(SMOKE_CALLS, rate=10, transport=transport, trace=trace),
        target,
        f"{slug}-smoke",
        free_port(),
    )
    if smoke.successful < SMOKE_CALLS:
        errors = setup.work / f"{slug}-smoke-errors.log"
        report.failures.append(first_failure(f"{server} (smoke run)", errors, trace))
        if callee is not None:
            report.failures.append(first_failure(f"{server} callee", callee.errors, None))
    if smoke.successful == 0:
        raise BenchError(f"{server}: no call completed in the smoke run: {smoke.failures}")
    idle_before = cpu()
    time.sleep(IDLE_SECONDS)
    idle = (cpu() - idle_before) / IDLE_SECONDS
    if args.warm_up:
        progress(f"{server}: warm-up, {args.warm_up} calls")
        run_sipp(
            setup.caller_run(args.warm_up, transport=transport),
            target,
            f"{slug}-warm-up",
            free_port(),
        )
    messages = setup.work / f"{slug}-messages.log" if args.trace else None
    run = setup.caller_run(args.calls, transport=transport, trace=messages)
    progress(f"{server}: {args.calls} calls at -r {args.rate:g} -l {args.limit}")
    others = others or {}
    stop_profile = profile() if profile is not None else None
    try:
        other_before = {name: read() for name, read in others.items()}
        drops = udp_socket_drops()
        gc_before = read_totals(gc_log) if gc_log is not None else None
        waits_before = waits() if waits is not None else 0
        before = cpu()
        result = run_sipp(run, target, slug, free_port())
        used = cpu() - before
        wake_ups = waits() - waits_before if waits is not None else None
        dropped = _dropped(drops, udp_port)
        collected = phase(gc_log, gc_before) if gc_log is not None else None
        other_used = {name: read() - other_before[name] for name, read in others.items()}
    finally:
        if stop_profile is not None:
            stop_profile()
    if result.failed:
        errors = setup.work / f"{slug}-errors.log"
        report.failures.append(first_failure(server, errors, messages))
        if callee is not None:
            report.failures.append(first_failure(f"{server} callee", callee.errors, None))
    return CallFigures(server, result, used, other_used, dropped, idle, collected, wake_ups)


def _dropped(before: dict[int, int], port: int | None) -> int | None:
    """Datagrams dropped on ``port`` since ``before`` was read."""
    if port is None:
        return None
    return udp_socket_drops().get(port, 0) - before.get(port, 0)


#: sipp's error log: each event starts with a date, a time and a Unix time, after
#: the quote that ends the previous event's message (no newline in between).
_EVENT = re.compile(r"'?(?=\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t\d+\.\d+: )")
_FAILURE = re.compile(r"Aborting|timeout|unexpected|retransmission")
_CALL_ID = re.compile(r"Call-I[Dd]:?\s*'?([^'\s,]+)")
_MESSAGE_SEPARATOR = re.compile(r"^-{10,} .*$", re.MULTILINE)
FAILURE_LINES = 120


def first_failure(what: str, errors: Path, messages: Path | None) -> str:
    """The first failure sipp logged, and every traced message of that call."""
    text = errors.read_text(errors="replace") if errors.exists() else ""
    events = [e.strip() for e in _EVENT.split(text)[1:] if "out-of-call" not in e]
    failures = [e for e in events if _FAILURE.search(e)]
    if not failures:
        return f"{what}: failed calls, but sipp logged no failure"
    event = failures[0]
    lines = [f"{what}: first failure sipp logged:", *("    " + ln for ln in event.splitlines())]
    match = _CALL_ID.search(event)
    if match and messages is not None and messages.exists():
        call_id = match.group(1)
        chunks = _MESSAGE_SEPARATOR.split(messages.read_text(errors="replace"))
        exchange = [c.strip("\n") for c in chunks if f"Call-ID: {call_id}\n" in c]
        lines.append(f"  the caller's messages of Call-ID {call_id}:")
        for chunk in exchange:
            lines += ["    " + ln for ln in chunk.splitlines()] + ["    ----"]
    return "\n".join(lines[:FAILURE_LINES])


def phone_memory(setup: Setup, instance: TelemancerInstance, pid: int) -> PhoneMemory:
    """Register ``--phones`` extensions over one TCP connection (the plaintext port);
    the RSS growth."""
    count = min(setup.args.phones, len(setup.users))
    users = write_users(setup.work / "phones.csv", DOMAIN, setup.users[:count])
    run = SippRun(
        sipp=setup.sipp,
        scenario=write_scenario(setup.work / "register.xml"),
        users=users,
        workdir=setup.work,
        domain=DOMAIN,
        calls=count,
        rate=1_000,
        limit=50,
        transport="t1",
    )
    time.sleep(SETTLE_SECONDS)
    before = rss_kib(pid)
    progress(f"memory: registering {count} phones over TCP")
    result = run_sipp(run, ("127.0.0.1", instance.udp_port), "phones", free_port())
    time.sleep(SETTLE_SECONDS)  # the store thread writes the bindings within a second
    return PhoneMemory(count, result.successful, before, rss_kib(pid))


def call_memory(setup: Setup, target: tuple[str, int], pid: int) -> CallMemory:
    """Hold ``--held-calls`` calls up at once; the RSS growth while they are up."""
    args = setup.args
    count = args.held_calls
    progress(f"memory: {MEMORY_WARM_UP_CALLS} warm-up calls")
    run_sipp(
        setup.caller_run(MEMORY_WARM_UP_CALLS, rate=100, limit=50),
        target,
        "held-warm-up",
        free_port(),
    )
    time.sleep(SETTLE_SECONDS)
    before = rss_kib(pid)
    hold_ms = int(args.hold_seconds * 1000)
    rate = 100.0
    run = setup.caller_run(
        count, rate=rate, limit=count, hold_ms=hold_ms, extra=("-trace_counts",)
    )
    progress(f"memory: holding {count} calls up for {args.hold_seconds:g} s")
    started = time.monotonic()
    process = start_sipp(run, target, "held", free_port())
    try:
        counts = setup.work / f"{setup.scenario.stem}_{process.pid}_counts.csv"
        answered = _wait_for_paused(process, counts, count, count / rate + 20)
        up_at = time.monotonic()
        time.sleep(SETTLE_SECONDS)  # live calls reach the store within a second
        up = rss_kib(pid)
        late = None
        wait = TRANSACTION_SECONDS + SETTLE_SECONDS
        if answered and up_at - started + wait < args.hold_seconds:
            time.sleep(max(0.0, up_at + wait - time.monotonic()))
            late = rss_kib(pid)
        code = process.wait(timeout=sipp_deadline(run))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = sipp_result(run, "held", code, time.monotonic() - started)
    return CallMemory(count, answered, before, up, late, result)


def _wait_for_paused(
    process: subprocess.Popen[bytes], counts: Path, wanted: int, seconds: float
) -> int:
    """Calls in the pause between ACK and BYE, from sipp's ``-trace_counts`` file
    (written every second), once ``wanted`` are there or the time is up."""
    deadline = time.monotonic() + seconds
    paused = 0
    while time.monotonic() < deadline and process.poll() is None:
        paused = _paused_sessions(counts)
        if paused >= wanted:
            break
        time.sleep(0.25)
    return paused


def _paused_sessions(counts: Path) -> int:
    try:
        lines = [ln for ln in counts.read_text().splitlines() if ln.strip()]
    except OSError:
        return 0
    if len(lines) < 2:
        return 0
    names, values = lines[0].split(";"), lines[-1].split(";")
    for name, value in zip(names, values, strict=False):
        if name.endswith("_Pause_Sessions") and value.strip().isdigit():
            return int(value)
    return 0


def _profiler(output: Path, pid: int, report: Report) -> Callable[[], Callable[[], None]]:
    """A starter for py-spy on ``pid`` whose stopper stores the summary in ``report``."""
    binary = find_py_spy()
    if binary is None:
        raise BenchError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    report.notes.append(
        "py-spy sampled the appliance during the measured UDP run, pausing it 250 times a"
        " second: its CPU figures are a few per cent worse than without --py-spy."
    )

    def start() -> Callable[[], None]:
        spy = PySpy(binary, pid, output.resolve())

        def stop() -> None:
            spy.stop()
            report.profile = summarise(spy.output)

        return stop

    return start


def bench_telemancer(setup: Setup, report: Report) -> None:
    """Create and run the appliance; memory, then calls over UDP and TLS."""
    args = setup.args
    progress(f"creating a dev instance with {len(setup.users)} extensions")
    instance = create_instance(
        setup.work,
        DOMAIN,
        [*setup.users, (CALLEE, setup.callee_password)],
        max_connections_per_ip=100,
        max_concurrent_calls=1_000_000,
    )
    progress("starting telemancer run")
    gc_log = setup.work / "gc-probe.jsonl" if args.gc_log else None
    probe = (
        probed_environment(setup.work / "gc-probe", gc_log)
        if gc_log is not None
        else contextlib.nullcontext()
    )
    with probe:
        appliance = Telemancer(instance, setup.work / "telemancer.log")
    udp = ("127.0.0.1", instance.udp_port)
    try:
        callee = setup.callee("callee-udp", udp)
        try:
            if not args.no_memory:
                report.phones = phone_memory(setup, instance, appliance.pid)
                report.held = call_memory(setup, udp, appliance.pid)
            profile = _profiler(args.py_spy, appliance.pid, report) if args.py_spy else None
            report.udp = measure_calls(
                setup,
                "telemancer UDP",
                udp,
                lambda: cpu_seconds(appliance.pid),
                report,
                profile=profile,
                udp_port=instance.udp_port,
                gc_log=gc_log,
                callee=callee,
                waits=lambda: voluntary_switches(appliance.pid),
            )
        finally:
            callee.stop()
        if not args.no_tls:
            try:
                bench_tls(setup, instance, appliance.pid, report, gc_log)
            except (BenchError, OSError, RuntimeError, subprocess.SubprocessError) as error:
                report.tls_note = f"TLS run failed: {error}"
    finally:
        status = appliance.stop()
    if status != 0:
        raise BenchError(f"telemancer exited with status {status}; see {appliance.log}")


def bench_tls(
    setup: Setup,
    instance: TelemancerInstance,
    pid: int,
    report: Report,
    gc_log: Path | None = None,
) -> None:
    """Both sipp sides over TCP to stunnel4, which speaks TLS to the appliance."""
    binary = shutil.which("stunnel4") or shutil.which("stunnel")
    if binary is None:
        report.tls_note = "stunnel4 is not installed (apt-get install stunnel4): no TLS figures"
        return
    progress("TLS: removing the callee's UDP binding")
    unregister = run_sipp(
        SippRun(
            sipp=setup.sipp,
            scenario=write(setup.work / "unregister.xml", UNREGISTER_SCENARIO),
            users=setup.callee_users,
            workdir=setup.work,
            domain=DOMAIN,
            calls=1,
            rate=1,
            limit=1,
        ),
        ("127.0.0.1", instance.udp_port),
        "unregister",
        free_port(),
    )
    if unregister.successful != 1:
        raise BenchError(f"could not remove the callee's UDP binding: {unregister.failures}")
    quiet = TRANSACTION_SECONDS + SETTLE_SECONDS
    progress(f"TLS: waiting {quiet:g} s for the UDP calls' transactions to end")
    time.sleep(quiet)
    tunnel_dir = setup.work / "stunnel"
    tunnel_dir.mkdir(exist_ok=True)
    tunnel = Stunnel(
        binary, tunnel_dir, ("127.0.0.1", instance.tls_port), instance.ca, ["caller", "callee"]
    )
    try:
        callee = setup.callee("callee-tls", ("127.0.0.1", tunnel.ports["callee"]), "t1")
        try:
            report.tls = measure_calls(
                setup,
                "telemancer TLS",
                ("127.0.0.1", tunnel.ports["caller"]),
                lambda: cpu_seconds(pid),
                report,
                transport="t1",
                others={"stunnel": lambda: cpu_seconds(tunnel.pid)},
                gc_log=gc_log,
                callee=callee,
                waits=lambda: voluntary_switches(pid),
            )
        finally:
            callee.stop()
    finally:
        tunnel.stop()
    report.tls_note = (
        "sipp -t t1 through stunnel4: the caller's calls share one TLS connection,"
        " the callee has its own"
    )


def bench_kamailio(setup: Setup, report: Report) -> None:
    """The same UDP load against Kamailio; CPU summed over all its processes."""
    binary = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin")
    if binary is None:
        report.kamailio_note = "not installed"
        return
    kam_dir = setup.work / "kamailio"
    kam_dir.mkdir(exist_ok=True)
    children = setup.args.kamailio_children
    progress(f"starting kamailio (stateful proxy) with {children} UDP workers")
    users = [*setup.users, (CALLEE, setup.callee_password)]
    server = Kamailio(binary, kam_dir, DOMAIN, users, children=children, proxy=True)
    try:
        target = ("127.0.0.1", server.port)
        callee = setup.callee("callee-kamailio", target)
        try:
            report.kamailio = measure_calls(
                setup,
                "kamailio UDP",
                target,
                lambda: tree_cpu_seconds(server.pid),
                report,
                udp_port=server.port,
                callee=callee,
                waits=lambda: tree_voluntary_switches(server.pid),
            )
        finally:
            callee.stop()
    finally:
        server.stop()
    report.kamailio_note = (
        f"Kamailio {kamailio_version(binary)}, {children} workers: tm stateful proxy,"
        " record_route, registrar lookup, 407 MD5 auth (the same scenario)"
    )


def _sipp_version(binary: str) -> str:
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"SIPp v(\S+?)[-,\s]", result.stdout + result.stderr)
    return match.group(1) if match else "?"


def _appliance_version() -> str:
    """The commit the appliance's code is at, and whether it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "appliance"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "? (not a git checkout)"
    return f"git {commit}" + (" with uncommitted changes in appliance/" if changed else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def print_report(args: argparse.Namespace, report: Report, sipp_version: str) -> None:
    """The figures, their targets and the ratio against Kamailio."""
    print()
    print("Telemancer benchmark: proxied calls")
    print(f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.platform()}")
    print(f"appliance: {_appliance_version()}")
    print(
        f"load: sipp {sipp_version}, MD5 Digest (407), {args.users} callers -> 1 callee,"
        f" {args.calls} calls at -r {args.rate:g} -l {args.limit}, {args.hold_ms} ms between"
        f" ACK and BYE (after {SMOKE_CALLS} traced calls and {args.warm_up} warm-up calls)"
    )
    print()
    rows = [r for r in (report.udp, report.tls, report.kamailio) if r is not None]
    if rows:
        targets = {
            "telemancer UDP": TARGET_UDP_CALLS_PER_CPU_SECOND,
            "telemancer TLS": TARGET_TLS_CALLS_PER_CPU_SECOND,
        }

        def line(label: str, values: list[str]) -> None:
            print(f"{label:34}" + "".join(f"{v:>17}" for v in values))

        line("", [r.server for r in rows])
        line("completed calls", [f"{r.sipp.successful:,}" for r in rows])
        line("failed calls", [f"{r.sipp.failed:,}" for r in rows])
        line("sipp retransmissions", [f"{r.sipp.retransmissions:,}" for r in rows])
        line(
            "server UDP receive-buffer drops",
            ["-" if r.udp_drops is None else f"{r.udp_drops:,}" for r in rows],
        )
        line("wall-clock seconds", [f"{r.sipp.wall_seconds:.2f}" for r in rows])
        line("wall-clock calls/s", [f"{r.sipp.rate:,.0f}" for r in rows])
        line("server CPU seconds", [f"{r.cpu_seconds:.2f}" for r in rows])
        line(
            "server CPU busy (% of wall)",
            [f"{100 * r.cpu_seconds / max(r.sipp.wall_seconds, 1e-9):.0f}%" for r in rows],
        )
        line("server idle CPU (% of a core)", [f"{100 * r.idle_cpu:.1f}%" for r in rows])
        line("calls per CPU-second", [f"{r.per_cpu_second:,.0f}" for r in rows])
        line(
            "target",
            [f">= {targets[r.server]:,}" if r.server in targets else "" for r in rows],
        )
        line(
            "CPU microseconds per call",
            [
                f"{1e6 * r.cpu_seconds / r.sipp.successful:,.0f}" if r.sipp.successful else "-"
                for r in rows
            ],
        )
        line(
            "server wake-ups per call",
            [
                f"{r.wake_ups / r.sipp.successful:.1f}"
                if r.wake_ups is not None and r.sipp.successful
                else "-"
                for r in rows
            ],
        )
        if any(r.gc is not None for r in rows):
            line(
                "GC seconds (% of server CPU)",
                [
                    f"{r.gc.total_seconds:.2f} ({100 * r.gc.total_seconds / r.cpu_seconds:.0f}%)"
                    if r.gc is not None and r.cpu_seconds > 0
                    else "-"
                    for r in rows
                ],
            )
            line(
                "GC collections (gen 0/1/2)",
                ["/".join(map(str, r.gc.count)) if r.gc else "-" for r in rows],
            )
            line(
                "longest GC pause (ms)",
                [f"{1000 * r.gc.longest:,.0f}" if r.gc else "-" for r in rows],
            )
            line(
                "malloc heap growth, 2nd half, KiB",
                [f"{r.gc.heap_kib:,}" if r.gc else "-" for r in rows],
            )
            line(
                "  of which in use, KiB",
                [f"{r.gc.heap_used_kib:,}" if r.gc else "-" for r in rows],
            )
        for figures in rows:
            for name, used in figures.other_cpu.items():
                print(f"  {figures.server}: {name} used {used:.2f} CPU seconds")
            if figures.sipp.failures:
                reasons = ", ".join(f"{k}: {v:,}" for k, v in figures.sipp.failures.most_common())
                print(f"  {figures.server} failures by cause: {reasons}")
        for ours in (report.udp, report.tls):
            if ours is not None:
                target = targets[ours.server]
                verdict = _verdict(ours.per_cpu_second >= target)
                print(f"  {ours.server} vs target ({target:,}/CPU-s): {verdict}")
    if report.udp is not None and report.kamailio is not None:
        ratio = report.udp.per_cpu_second / max(report.kamailio.per_cpu_second, 1e-9)
        print(f"  ratio telemancer/kamailio over UDP (per CPU-second): {ratio:.2f}")
    if report.kamailio_note:
        print(f"  kamailio: {report.kamailio_note}")
    print(f"  field notes: Kamailio as a minimal stateful relay, {FIELD_NOTES_KAMAILIO}/CPU-s")
    if report.tls_note:
        print(f"  TLS: {report.tls_note}")
    print()
    _print_memory(report)
    if report.profile is not None:
        _print_profile(report.profile)
    for failure in report.failures:
        print()
        print(failure)
    for note in report.notes:
        print(f"note: {note}")


def _print_memory(report: Report) -> None:
    if report.phones is not None:
        phones = report.phones
        print(
            f"registered phones: {phones.registered:,} of {phones.phones:,} over TCP, RSS"
            f" {phones.before_kib:,} -> {phones.after_kib:,} KiB:"
            f" {phones.per_phone_kib:.1f} KiB per phone"
        )
    if report.held is not None:
        held = report.held
        print(
            f"held calls: {held.answered:,} of {held.calls:,} up at once over UDP, RSS"
            f" {held.before_kib:,} -> {held.up_kib:,} KiB:"
            f" {held.per_call_kib(held.up_kib):.1f} KiB per active call (setup transactions"
            " still kept)"
        )
        if held.late_kib is not None:
            print(
                f"  {TRANSACTION_SECONDS:g} s later (their setup transactions ended): RSS"
                f" {held.late_kib:,} KiB, {held.per_call_kib(held.late_kib):.1f} KiB per call"
                " (Python keeps freed memory for reuse; RSS does not shrink)"
            )
        if held.result is not None and (held.result.failed or held.result.successful < held.calls):
            print(
                f"  held calls completed {held.result.successful}, failed {held.result.failed}:"
                f" {dict(held.result.failures)}"
            )
    if report.phones or report.held:
        print()


def _verdict(ok: bool) -> str:
    return "meets the target" if ok else "below the target"


def _print_profile(threads: dict[str, ThreadProfile]) -> None:
    total = sum(p.samples for p in threads.values()) or 1
    ordered = sorted(threads.items(), key=lambda item: -item[1].samples)
    shares = ", ".join(f"{name} {100 * p.samples / total:.0f}%" for name, p in ordered)
    print(f"py-spy: {total:,} samples during the measured UDP run ({shares})")
    for rank, (name, profile) in enumerate(ordered):
        lines = PROFILE_LINES if rank == 0 else PROFILE_LINES // 3
        print(f"  {name}: functions by own time (% of this thread's samples)")
        _print_top(profile.own, profile.samples, lines)
        if rank == 0:
            appliance = Counter(
                {f: n for f, n in profile.inclusive.items() if _is_appliance_work(f)}
            )
            print(f"  {name}: appliance functions by inclusive time")
            _print_top(appliance, profile.samples, lines)
    print()


def _is_appliance_work(frame: str) -> bool:
    """Appliance code other than the entry points every stack passes through."""
    entry = ("appliance/__main__.py", "appliance/cli.py", "appliance/runner.py")
    return "(appliance/" in frame and not any(name in frame for name in entry)


def _print_top(counter: Counter[str], samples: int, lines: int) -> None:
    for frame, count in counter.most_common(lines):
        print(f"    {100 * count / max(samples, 1):5.1f}%  {frame}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement that the installed tools allow and print the report."""
    args = parse_args(argv)
    stop_on_sigterm()
    report = Report()
    sipp = shutil.which("sipp")
    if sipp is None:
        print("benchmark error: sipp is not installed (apt-get install sip-tester)")
        return 1
    try:
        with work_directory(args.keep) as work:
            users = make_users(max(args.users, args.phones))
            callee_password = make_users(1)[0][1]
            setup = Setup(
                args=args,
                sipp=sipp,
                work=work,
                users=users,
                callee_password=callee_password,
                callers=write_users(work / "callers.csv", DOMAIN, users[: args.users]),
                callee_users=write_users(work / "callee.csv", DOMAIN, [(CALLEE, callee_password)]),
                scenario=write(work / "caller.xml", CALLER_SCENARIO),
            )
            bench_telemancer(setup, report)
            if not args.no_kamailio:
                bench_kamailio(setup, report)
            print_report(args, report, _sipp_version(sipp))
    except (BenchError, OSError, RuntimeError, subprocess.SubprocessError) as error:
        print(f"benchmark error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
