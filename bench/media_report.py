"""The media benchmark's figures and its report (``bench/media.py``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import subprocess
from pathlib import Path

from pyspy import summarise

BENCH = Path(__file__).resolve().parent
#: Which legs are SRTP (caller A, callee B) in each mode.
MODES: dict[str, tuple[bool, bool]] = {
    "plain": (False, False),
    "plain-srtp": (False, True),
    "srtp-srtp": (True, True),
}
PTIME_MS = 20
PAYLOAD_BYTES = 160
#: Targets from issue 5.
TARGET_PLAIN_RATIO = 1.3
TARGET_SRTP_SRTP_US = 15.0
#: rtpengine userspace at 400 calls here, from the field notes.
FIELD_NOTES_RTPENGINE_US = 7.0
PROFILE_LINES = 22


@dataclasses.dataclass
class Figures:
    """One server's run of one mode."""

    server: str
    mode: str
    window: float
    cpu: float
    system_cpu: float
    generator_cpu: float
    sent: int
    received: int
    sent_window: int
    received_window: int
    checks: dict[str, int]
    relay_drops: int
    generator_drops: int
    counters: dict[str, int] | None = None
    profile: str | None = None

    @property
    def per_packet_us(self) -> float:
        """Relay CPU µs per packet relayed in the window."""
        return 1e6 * self.cpu / self.received_window if self.received_window else float("nan")

    @property
    def lost(self) -> int:
        """Packets sent that never came back (whole run, after draining)."""
        return self.sent - self.received


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _appliance_version() -> str:
    root = BENCH.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "appliance/media"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "? (not a git checkout)"
    return f"git {commit}" + (" with uncommitted changes in appliance/media/" if changed else "")


def print_report(
    args: argparse.Namespace, rows: list[Figures], engine: str | None, notes: list[str]
) -> None:
    """The figures per mode, their targets and the ratios against rtpengine."""
    print()
    print("Telemancer benchmark: media relay")
    print(f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.platform()}")
    print(f"appliance: {_appliance_version()}; peer: {engine or 'none'}")
    rate = 2 * args.calls * 1000 // PTIME_MS
    print(
        f"load: {args.calls} calls, G.711 {PAYLOAD_BYTES}-byte payload every {PTIME_MS} ms each"
        f" way ({rate:,} packets/s into the relay), {args.generators} generator processes;"
        f" {args.warm_up:g} s warm-up, {args.seconds:g} s measured"
    )

    def line(label: str, values: list[str]) -> None:
        print(f"{label:38}" + "".join(f"{v:>20}" for v in values))

    for mode in args.modes:
        group = [r for r in rows if r.mode == mode]
        if not group:
            continue
        print()
        print(f"mode {mode} ({_describe(mode)})")
        line("", [r.server for r in group])
        line(
            "relayed packets/s (window)",
            [f"{r.received_window / r.window:,.0f}" for r in group],
        )
        line("relay CPU µs per relayed packet", [f"{r.per_packet_us:.2f}" for r in group])
        line(
            "  of which user / system",
            [
                f"{r.per_packet_us * (1 - r.system_cpu / r.cpu):.2f} /"
                f" {r.per_packet_us * r.system_cpu / r.cpu:.2f}"
                if r.cpu
                else "-"
                for r in group
            ],
        )
        line("relay CPU busy (% of a core)", [f"{100 * r.cpu / r.window:.0f}%" for r in group])
        line("packets sent / received", [f"{r.sent:,} / {r.received:,}" for r in group])
        line(
            "lost (whole run)",
            [f"{r.lost:,} ({100 * r.lost / max(r.sent, 1):.3f}%)" for r in group],
        )
        line(
            "kernel drops: relay / generators",
            [f"{r.relay_drops:,} / {r.generator_drops:,}" for r in group],
        )
        line(
            "sampled checks ok / failed",
            [f"{r.checks['verified']:,} / {_failed(r):,}" for r in group],
        )
        line(
            "wrong SSRC / stray / silent streams",
            [
                f"{r.checks['wrong_ssrc']} / {r.checks['stray']} / {r.checks['silent_streams']}"
                for r in group
            ],
        )
        line(
            "generators' CPU (% of a core)",
            [f"{100 * r.generator_cpu / r.window:.0f}%" for r in group],
        )
        ours = next((r for r in group if r.server == "telemancer"), None)
        peer = _peer(group)
        if ours is not None and ours.counters is not None:
            print("  relay counters: " + ", ".join(f"{k} {v:,}" for k, v in ours.counters.items()))
        for mine in (r for r in group if not r.server.startswith("rtpengine")):
            if peer is not None:
                ratio = mine.per_packet_us / peer.per_packet_us
                verdict = ""
                if mode == "plain":
                    met = _verdict(ratio <= TARGET_PLAIN_RATIO)
                    verdict = f" (target <= {TARGET_PLAIN_RATIO}: {met})"
                print(f"  ratio {mine.server} / {peer.server}: {ratio:.2f}{verdict}")
            if mode == "srtp-srtp":
                ok = mine.per_packet_us <= TARGET_SRTP_SRTP_US
                print(
                    f"  {mine.server}: target <= {TARGET_SRTP_SRTP_US:g} µs per packet:"
                    f" {_verdict(ok)}"
                )
        for figures in group:
            problems = _problems(figures)
            if problems:
                print(f"  WARNING {figures.server}: {problems}: its figure is suspect")
        if ours is not None and ours.profile is not None:
            _print_profile(Path(ours.profile))
    print()
    print(f"field notes: rtpengine userspace ≈ {FIELD_NOTES_RTPENGINE_US:g} µs/packet, 400 calls")
    for note in notes:
        print(f"note: {note}")


def _failed(figures: Figures) -> int:
    return figures.checks["auth_failed"] + figures.checks["wrong_payload"]


def _describe(mode: str) -> str:
    a_srtp, b_srtp = MODES[mode]
    return f"caller leg {'SRTP' if a_srtp else 'RTP'}, callee leg {'SRTP' if b_srtp else 'RTP'}"


def _peer(group: list[Figures]) -> Figures | None:
    """The rtpengine figure to compare with: the recrypt run when there is one."""
    peers = [r for r in group if r.server.startswith("rtpengine")]
    recrypt = [r for r in peers if "recrypt" in r.server]
    chosen = recrypt or peers
    return chosen[0] if chosen else None


def _problems(figures: Figures) -> str:
    """Why a run's figure may not be trusted, or ''."""
    problems = []
    if figures.lost > 0.001 * figures.sent:
        problems.append(f"{figures.lost:,} packets lost")
    if figures.checks["auth_failed"] or figures.checks["wrong_payload"]:
        problems.append("sampled packets failed their check")
    if figures.checks["wrong_ssrc"] or figures.checks["stray"]:
        problems.append("packets crossed between calls")
    if figures.checks["silent_streams"]:
        problems.append(f"{figures.checks['silent_streams']} streams got nothing")
    if figures.checks["verified"] == 0:
        problems.append("no packet was checked")
    return "; ".join(problems)


def _verdict(ok: bool) -> str:
    return "meets the target" if ok else "misses the target"


def _print_profile(raw: Path) -> None:
    threads = summarise(raw)
    if not threads:
        return
    name, profile = max(threads.items(), key=lambda item: item[1].samples)
    print(f"  py-spy ({raw}): {profile.samples:,} samples of thread {name}")
    print("  by own time:")
    for frame, count in profile.own.most_common(PROFILE_LINES):
        print(f"    {100 * count / profile.samples:5.1f}%  {frame}")
    print("  by inclusive time:")
    for frame, count in profile.inclusive.most_common(PROFILE_LINES):
        print(f"    {100 * count / profile.samples:5.1f}%  {frame}")
