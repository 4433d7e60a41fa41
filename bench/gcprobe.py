"""Time spent in the appliance's cyclic garbage collector, seen from inside it.

py-spy attributes a collection to whatever allocation triggered it, so GC
does not show up as such in its profile. With ``--gc-log`` the benchmark
starts the appliance with ``PYTHONPATH`` leading to a directory that holds
only a ``sitecustomize.py`` (:data:`PROBE`), which Python imports at start.
It adds a ``gc.callbacks`` hook that sums the time of every collection per
generation and notes the longest pause; a daemon thread appends the running
totals, and the longest pause since its previous line, to a file twice a
second. The appliance's code is not touched; the hook
costs two clock reads per collection.

Each line also carries the size of glibc's malloc heap (``mallinfo2``: what
it holds from the system, and what of that is in use). Python objects over
512 bytes (SIP messages) live there. The heap growing while its use does not
is fragmentation, which a short run cannot tell from the calls in flight
filling up: run long (``--calls 90000``) and read the second half.

:func:`read_totals` gives the totals as of a moment, so a phase's GC time
is the difference between its end and its start.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENT = "TELEMANCER_BENCH_GC_LOG"
INTERVAL_SECONDS = 0.5

PROBE = f'''\
"""Benchmark probe: garbage-collection totals (bench/gcprobe.py)."""
import ctypes, gc, json, os, threading, time

_path = os.environ.get("{ENVIRONMENT}")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]


def _heap():
    """glibc's malloc heap in KiB: held from the system, and in use."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return 0, 0
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.arena >> 10, info.uordblks >> 10


if _path:
    _totals = {{"count": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}}
    _started = [0.0]
    _longest = [0.0]

    def _hook(phase, info):
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        gen = info["generation"]
        took = time.perf_counter() - _started[0]
        _totals["count"][gen] += 1
        _totals["seconds"][gen] += took
        if took > _longest[0]:
            _longest[0] = took

    def _write():
        with open(_path, "a", buffering=1) as out:
            while True:
                longest, _longest[0] = _longest[0], 0.0
                heap, used = _heap()
                line = {{
                    "time": time.time(), "longest": longest, "heap": heap, "used": used,
                    **_totals,
                }}
                out.write(json.dumps(line) + "\\n")
                time.sleep({INTERVAL_SECONDS})

    gc.callbacks.append(_hook)
    threading.Thread(target=_write, name="bench-gc-probe", daemon=True).start()
'''


@dataclass(frozen=True)
class GcTotals:
    """Collections and seconds spent per generation (0, 1, 2), and the longest
    pause of any generation (since the previous line, or within a phase)."""

    time: float
    count: tuple[int, int, int]
    seconds: tuple[float, float, float]
    longest: float
    #: glibc's malloc heap in KiB, held and in use: as of the line, or, for a
    #: phase, how much each grew over its second half.
    heap_kib: int = 0
    heap_used_kib: int = 0

    @property
    def total_seconds(self) -> float:
        """Seconds in the collector, all generations."""
        return sum(self.seconds)


def phase(log: Path, start: GcTotals | None) -> GcTotals | None:
    """What the collector did since ``start`` (taken with :func:`read_totals`)."""
    lines = _lines(log)
    if start is None or not lines:
        return None
    end = lines[-1]
    c, c0 = end.count, start.count
    t, t0 = end.seconds, start.seconds
    longest = max((line.longest for line in lines if line.time > start.time), default=0.0)
    middle_time = (start.time + end.time) / 2
    middle = next((line for line in lines if line.time >= middle_time), end)
    return GcTotals(
        end.time,
        (c[0] - c0[0], c[1] - c0[1], c[2] - c0[2]),
        (t[0] - t0[0], t[1] - t0[1], t[2] - t0[2]),
        longest,
        end.heap_kib - middle.heap_kib,
        end.heap_used_kib - middle.heap_used_kib,
    )


@contextlib.contextmanager
def probed_environment(directory: Path, log: Path) -> Iterator[None]:
    """Within the block, child processes start with the probe (``os.environ`` is
    restored afterwards)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(PROBE)
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", ENVIRONMENT)}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(directory), saved["PYTHONPATH"]) if p
    )
    os.environ[ENVIRONMENT] = str(log)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def read_totals(log: Path) -> GcTotals | None:
    """The latest totals the probe wrote (None if it wrote nothing)."""
    lines = _lines(log)
    return lines[-1] if lines else None


def _lines(log: Path) -> list[GcTotals]:
    try:
        text = log.read_text()
    except OSError:
        return []
    totals = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue  # a line being written
        count, seconds = data["count"], data["seconds"]
        totals.append(
            GcTotals(
                float(data["time"]),
                (int(count[0]), int(count[1]), int(count[2])),
                (float(seconds[0]), float(seconds[1]), float(seconds[2])),
                float(data["longest"]),
                int(data.get("heap", 0)),
                int(data.get("used", 0)),
            )
        )
    return totals
