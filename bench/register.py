"""REGISTER and TLS benchmark of the appliance, with Kamailio as the peer.

Usage::

    .venv/bin/python bench/register.py [--calls N] [--rate R] [--users U]

What it does, in a temporary directory, all on 127.0.0.1:

1. creates a Telemancer dev instance with plaintext UDP enabled for
   127.0.0.0/8, MD5 as its only Digest algorithm (sipp knows no other) and a
   tenant ``bench.example`` with U extensions, and runs ``telemancer run``;
2. drives it with sipp (REGISTER, 401, REGISTER with MD5 Digest, 200; one
   extension after another from an injection file) after a warm-up that
   registers every user once, and reads the appliance's CPU time from
   ``/proc`` around the measured run;
3. opens idle TLS connections to its SIP TLS port and reads its RSS growth,
   then makes fresh TLS connections (full handshakes) in a loop;
4. runs the same sipp load against Kamailio (registrar + usrloc + auth) when
   it is installed, and prints the ratio.

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
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from peers import (
    BenchError,
    Kamailio,
    Telemancer,
    create_instance,
    free_port,
    kamailio_version,
    make_users,
    stop_on_sigterm,
)
from procstat import cpu_seconds, rss_kib, tree_cpu_seconds
from pyspy import PySpy, ThreadProfile, find_py_spy, summarise
from sipload import SippResult, SippRun, run_sipp, write_scenario, write_users
from tlsload import Handshakes, IdleMemory, handshake_rate, idle_memory

from appliance.sip.digest import MAX_TRACKED_NONCES

DOMAIN = "bench.example"
#: Targets from the product brief.
TARGET_REGISTERS_PER_CPU_SECOND = 6_000
TARGET_KIB_PER_IDLE_TLS_CONNECTION = 40.0
#: Kamailio on this kind of machine, from the field notes (registrar + MD5 auth).
FIELD_NOTES_KAMAILIO = "13,000-15,000"
PROFILE_LINES = 15


@dataclasses.dataclass(frozen=True)
class RegisterFigures:
    """One server's measured sipp run and the CPU time it took."""

    server: str
    sipp: SippResult
    cpu_seconds: float
    #: The server's RSS before the warm-up and after the measured run (single-process servers).
    rss_kib: tuple[int, int] | None = None

    @property
    def per_cpu_second(self) -> float:
        """Authenticated REGISTERs per CPU-second of the server."""
        return self.sipp.successful / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


@dataclasses.dataclass
class Report:
    """Everything measured, printed at the end."""

    telemancer: RegisterFigures | None = None
    kamailio: RegisterFigures | None = None
    kamailio_note: str = ""
    idle: IdleMemory | None = None
    handshakes: list[Handshakes] = dataclasses.field(default_factory=list)
    profile: dict[str, ThreadProfile] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def progress(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"... {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=15_000, help="measured REGISTERs (sipp -m)")
    parser.add_argument("--rate", type=float, default=5_000, help="sipp call rate per second (-r)")
    parser.add_argument("--limit", type=int, default=50, help="sipp concurrent calls (-l)")
    parser.add_argument("--users", type=int, default=1_000, help="extensions to register")
    parser.add_argument("--tls-connections", type=int, default=500, help="idle TLS connections")
    parser.add_argument(
        "--handshake-seconds", type=float, default=4.0, help="length of each handshake loop"
    )
    parser.add_argument(
        "--handshake-clients", type=int, default=2, help="client threads in the handshake loop"
    )
    parser.add_argument("--kamailio-children", type=int, default=2, help="Kamailio UDP workers")
    parser.add_argument("--no-kamailio", action="store_true", help="skip the Kamailio run")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="sample the appliance with py-spy during the measured REGISTER run"
        " (collapsed stacks to FILE; summary printed)",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in DIR and keep it (logs, configs)"
    )
    args = parser.parse_args(argv)
    for name in ("calls", "rate", "limit", "users", "tls_connections", "handshake_clients"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created, left in place) or a temporary directory removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="telemancer-bench-") as name:
        yield Path(name)


def raise_open_files_limit(needed: int) -> None:
    """Lift the soft descriptor limit (inherited by the appliance) to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise BenchError(f"need {needed} open files, the limit is {soft}")


def measure_registers(
    server: str,
    target: tuple[str, int],
    run: SippRun,
    warm_up: int,
    cpu: Callable[[], float],
    *,
    profile: Callable[[], Callable[[], None]] | None = None,
    rss: Callable[[], int] | None = None,
) -> RegisterFigures:
    """A warm-up run, then the measured run with the server's CPU time read around it."""
    rss_before = rss() if rss is not None else 0
    progress(f"{server}: warm-up, {warm_up} REGISTERs")
    warm = run_sipp(
        dataclasses.replace(run, calls=warm_up), target, f"{server}-warm-up", free_port()
    )
    if warm.successful == 0:
        raise BenchError(f"{server}: no REGISTER succeeded in the warm-up: {warm.failures}")
    progress(f"{server}: {run.calls} REGISTERs at -r {run.rate:g} -l {run.limit}")
    stop_profile = profile() if profile is not None else None
    try:
        before = cpu()
        result = run_sipp(run, target, server, free_port())
        used = cpu() - before
    finally:
        if stop_profile is not None:
            stop_profile()
    memory = (rss_before, rss()) if rss is not None else None
    return RegisterFigures(server, result, used, memory)


def bench_telemancer(
    args: argparse.Namespace, work: Path, run: SippRun | None, report: Report
) -> None:
    """Create and run the appliance; measure REGISTERs (when sipp is there) and TLS."""
    users = make_users(args.users)
    progress(f"creating a dev instance with {args.users} extensions")
    instance = create_instance(
        work, DOMAIN, users, max_connections_per_ip=args.tls_connections + 100
    )
    if run is not None:
        write_users(run.users, DOMAIN, users)
    progress("starting telemancer run")
    appliance = Telemancer(instance, work / "telemancer.log")
    try:
        # TLS first, on a quiet appliance: after the REGISTER run its server
        # transactions (kept 32 s on UDP) are still being freed, which would skew RSS.
        progress(f"opening {args.tls_connections} idle TLS connections")
        report.idle = idle_memory(
            appliance.pid, instance.tls_port, instance.ca, args.tls_connections
        )
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            progress(f"full {version.name} handshakes for {args.handshake_seconds:g} s")
            report.handshakes.append(
                handshake_rate(
                    appliance.pid,
                    instance.tls_port,
                    instance.ca,
                    version,
                    args.handshake_seconds,
                    args.handshake_clients,
                )
            )
        if run is not None:
            warm_up = min(args.users, args.calls)
            if warm_up + args.calls > MAX_TRACKED_NONCES:
                report.notes.append(
                    f"{warm_up + args.calls} authenticated REGISTERs exceed the appliance's"
                    f" nonce-count table ({MAX_TRACKED_NONCES} per nonce lifetime): REGISTERs"
                    " past it are answered 401 stale=true and count as failures."
                )
            profile = _profiler(args.py_spy, appliance.pid, report) if args.py_spy else None
            report.telemancer = measure_registers(
                "telemancer",
                ("127.0.0.1", instance.udp_port),
                run,
                warm_up,
                lambda: cpu_seconds(appliance.pid),
                profile=profile,
                rss=lambda: rss_kib(appliance.pid),
            )
    finally:
        status = appliance.stop()
    if status != 0:
        raise BenchError(f"telemancer exited with status {status}; see {appliance.log}")


def _profiler(output: Path, pid: int, report: Report) -> Callable[[], Callable[[], None]]:
    """A starter for py-spy on ``pid`` whose stopper stores the summary in ``report``."""
    binary = find_py_spy()
    if binary is None:
        raise BenchError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    report.notes.append(
        "py-spy sampled the appliance during the measured run, pausing it 250 times a"
        " second: its CPU figures are a few per cent worse than without --py-spy."
    )

    def start() -> Callable[[], None]:
        spy = PySpy(binary, pid, output.resolve())

        def stop() -> None:
            spy.stop()
            report.profile = summarise(spy.output)

        return stop

    return start


def bench_kamailio(args: argparse.Namespace, work: Path, run: SippRun, report: Report) -> None:
    """The same sipp load against Kamailio; CPU summed over all its processes."""
    binary = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin")
    if binary is None:
        report.kamailio_note = "not installed"
        return
    users = make_users(args.users)
    kamailio_run = dataclasses.replace(run, users=work / "kamailio-users.csv")
    write_users(kamailio_run.users, DOMAIN, users)
    kam_dir = work / "kamailio"
    kam_dir.mkdir(exist_ok=True)
    progress(f"starting kamailio with {args.kamailio_children} UDP workers")
    server = Kamailio(binary, kam_dir, DOMAIN, users, children=args.kamailio_children)
    try:
        report.kamailio = measure_registers(
            "kamailio",
            ("127.0.0.1", server.port),
            kamailio_run,
            min(args.users, args.calls),
            lambda: tree_cpu_seconds(server.pid),
        )
    finally:
        server.stop()
    report.kamailio_note = f"Kamailio {kamailio_version(binary)}, {args.kamailio_children} workers"


def _sipp_version(binary: str) -> str:
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"SIPp v(\S+?)[-,\s]", result.stdout + result.stderr)
    return match.group(1) if match else "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def print_report(args: argparse.Namespace, report: Report, sipp_version: str) -> None:
    """The figures, their targets and the ratio against Kamailio."""
    print()
    print("Telemancer benchmark: authenticated REGISTERs and TLS")
    print(f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.platform()}")
    print(
        f"load: sipp {sipp_version} over UDP, MD5 Digest, {args.users} users,"
        f" {args.calls} REGISTERs at -r {args.rate:g} -l {args.limit} (after a warm-up)"
    )
    print()
    rows = [r for r in (report.telemancer, report.kamailio) if r is not None]
    if rows:
        print(f"{'':34}" + "".join(f"{r.server:>16}" for r in rows) + f"{'target':>16}")

        def line(label: str, values: list[str], target: str = "") -> None:
            print(f"{label:34}" + "".join(f"{v:>16}" for v in values) + f"{target:>16}")

        line("authenticated REGISTERs", [f"{r.sipp.successful:,}" for r in rows])
        line("failed calls", [f"{r.sipp.failed:,}" for r in rows])
        line("sipp retransmissions", [f"{r.sipp.retransmissions:,}" for r in rows])
        line("wall-clock seconds", [f"{r.sipp.wall_seconds:.2f}" for r in rows])
        line("wall-clock REGISTERs/s", [f"{r.sipp.rate:,.0f}" for r in rows])
        line("server CPU seconds", [f"{r.cpu_seconds:.2f}" for r in rows])
        line(
            "server CPU busy (% of wall)",
            [f"{100 * r.cpu_seconds / max(r.sipp.wall_seconds, 1e-9):.0f}%" for r in rows],
        )
        line(
            "REGISTERs per CPU-second",
            [f"{r.per_cpu_second:,.0f}" for r in rows],
            f">= {TARGET_REGISTERS_PER_CPU_SECOND:,}",
        )
        line("CPU microseconds per REGISTER", [_micros(r) for r in rows])
        line(
            "RSS before -> after (MiB)",
            [
                f"{r.rss_kib[0] / 1024:.0f} -> {r.rss_kib[1] / 1024:.0f}" if r.rss_kib else "-"
                for r in rows
            ],
        )
        for figures in rows:
            if figures.sipp.failures:
                reasons = ", ".join(f"{k}: {v:,}" for k, v in figures.sipp.failures.most_common())
                print(f"  {figures.server} failures by cause: {reasons}")
    if report.telemancer is not None:
        verdict = _verdict(
            report.telemancer.per_cpu_second >= TARGET_REGISTERS_PER_CPU_SECOND, "target"
        )
        print(f"  telemancer vs target: {verdict}")
    if report.telemancer is not None and report.kamailio is not None:
        ratio = report.telemancer.per_cpu_second / max(report.kamailio.per_cpu_second, 1e-9)
        print(
            f"  ratio telemancer/kamailio (per CPU-second): {ratio:.2f} ({report.kamailio_note})"
        )
    elif report.kamailio_note:
        print(f"  kamailio: {report.kamailio_note}")
    print(f"  field notes: Kamailio registrar + MD5 auth measured at {FIELD_NOTES_KAMAILIO}/CPU-s")
    print()
    if report.idle is not None:
        idle = report.idle
        ok = idle.per_connection_kib <= TARGET_KIB_PER_IDLE_TLS_CONNECTION
        print(
            f"idle TLS connections: {idle.connections}, RSS {idle.rss_before_kib:,} ->"
            f" {idle.rss_after_kib:,} KiB: {idle.per_connection_kib:.1f} KiB per connection"
            f" (target <= {TARGET_KIB_PER_IDLE_TLS_CONNECTION:g} KiB: {_verdict(ok, 'target')})"
        )
    for hs in report.handshakes:
        print(
            f"full TLS handshakes ({hs.version}, {args.handshake_clients} client threads):"
            f" {hs.count:,} in {hs.wall_seconds:.1f} s = {hs.per_second:,.0f}/s,"
            f" {hs.per_cpu_second:,.0f} per appliance CPU-second"
            f" (appliance {100 * hs.server_cpu_seconds / hs.wall_seconds:.0f}% busy)"
        )
    if report.profile is not None:
        _print_profile(report.profile)
    for note in report.notes:
        print(f"note: {note}")


def _micros(figures: RegisterFigures) -> str:
    if figures.sipp.successful == 0:
        return "-"
    return f"{1e6 * figures.cpu_seconds / figures.sipp.successful:,.0f}"


def _verdict(ok: bool, what: str) -> str:
    return f"meets the {what}" if ok else f"below the {what}"


def _print_profile(threads: dict[str, ThreadProfile]) -> None:
    total = sum(p.samples for p in threads.values()) or 1
    ordered = sorted(threads.items(), key=lambda item: -item[1].samples)
    shares = ", ".join(f"{name} {100 * p.samples / total:.0f}%" for name, p in ordered)
    print()
    print(f"py-spy: {total:,} samples during the measured run ({shares})")
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
    try:
        raise_open_files_limit(2 * args.tls_connections + 200)
        with work_directory(args.keep) as work:
            run = None
            if sipp is None:
                report.notes.append("sipp is not installed: no REGISTER figures")
            else:
                run = SippRun(
                    sipp=sipp,
                    scenario=write_scenario(work / "register.xml"),
                    users=work / "telemancer-users.csv",
                    workdir=work,
                    domain=DOMAIN,
                    calls=args.calls,
                    rate=args.rate,
                    limit=args.limit,
                )
            bench_telemancer(args, work, run, report)
            if run is not None and not args.no_kamailio:
                bench_kamailio(args, work, run, report)
            print_report(args, report, _sipp_version(sipp) if sipp else "-")
    except (BenchError, OSError, RuntimeError, subprocess.SubprocessError) as error:
        print(f"benchmark error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
