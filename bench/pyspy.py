"""Sampling the appliance with py-spy during a measured phase, and a summary of
where the samples fell.

py-spy is not a dependency of the project: install it into the venv to use
``--py-spy`` (``.venv/bin/pip install py-spy``). It samples from outside the
process, pausing it briefly for each sample (250 a second), which costs the
appliance a few per cent; ``--nonblocking`` avoids the pause but misattributes
frames. Its own CPU is on the same two cores. It judges a thread idle from
its system call, which is unreliable for the store thread (an fsync or a
``Condition.wait`` may count as busy): read that thread's share with care.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES_PER_SECOND = 250
_LINE_NUMBER = re.compile(r":\d+\)$")


def find_py_spy() -> str | None:
    """The py-spy executable next to this Python, or on ``PATH``."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class PySpy:
    """``py-spy record`` on one process until :meth:`stop`."""

    def __init__(self, binary: str, pid: int, output: Path) -> None:
        self.output = output
        self._log = output.with_suffix(".log")
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(SAMPLES_PER_SECOND),
                    "--format",
                    "raw",
                    "--threads",
                    "--output",
                    str(output),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """Interrupt the recording; py-spy writes its file and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {self._log.read_text()[-2000:]}")


@dataclass
class ThreadProfile:
    """One thread's samples by function: ``own`` where the sample was taken,
    ``inclusive`` anywhere on the stack. Functions are ``name (file)``."""

    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)


def summarise(raw: Path) -> dict[str, ThreadProfile]:
    """Read py-spy's ``raw`` output (collapsed stacks, recorded with ``--threads``)
    into a profile per thread name."""
    threads: dict[str, ThreadProfile] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # With --threads a stack starts "thread (TID): NAME;" and NAME is the first frame.
        _, has_thread, frames_text = stack.partition(": ")
        frames = [_LINE_NUMBER.sub(")", f) for f in (frames_text or stack).split(";")]
        name = frames.pop(0) if has_thread else "?"
        frames = frames or ["(no Python frame)"]
        profile = threads.setdefault(name, ThreadProfile())
        profile.samples += count
        profile.own[frames[-1]] += count
        for frame in set(frames):
            profile.inclusive[frame] += count
    return threads
