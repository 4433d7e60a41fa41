"""CPU time and memory of running processes, read from ``/proc`` (Linux only).

CPU time is ``utime + stime`` from ``/proc/<pid>/stat``: every thread of the
process, counted in clock ticks (10 ms here), so a measured phase should last
a few seconds at least. Multi-process servers (Kamailio) are measured as the
sum over the process and all its descendants.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards)."""
    text = (_PROC / str(pid) / "stat").read_text()
    # The command name is in parentheses and may itself contain spaces or ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by every thread of ``pid``."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """Every live process whose ancestry leads to ``pid`` (children, grandchildren...)."""
    parents: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and all its live descendants."""
    return _tree_sum(pid, cpu_seconds)


def _tree_sum(pid: int, read: Callable[[int], float]) -> float:
    total = 0.0
    for member in [pid, *descendants(pid)]:
        try:
            total += read(member)
        except OSError:
            continue  # exited while we looked
    return total


def voluntary_switches(pid: int) -> int:
    """How often the process's main thread has waited so far
    (``voluntary_ctxt_switches``): each wait ends in a wake-up, whose cost
    (the scheduler, and caches refilled) is charged to the process."""
    return _status_number(pid, "voluntary_ctxt_switches:")


def tree_voluntary_switches(pid: int) -> int:
    """The same, summed over ``pid`` and all its live descendants."""
    return int(_tree_sum(pid, voluntary_switches))


def _status_number(pid: int, field: str) -> int:
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise OSError(f"no {field} for process {pid}")


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    return _status_number(pid, "VmRSS:")


def udp_socket_drops() -> dict[int, int]:
    """Datagrams dropped so far on each local UDP port of 127.0.0.1 (the
    ``drops`` column of ``/proc/net/udp``: a full receive buffer)."""
    drops: dict[int, int] = {}
    for line in (_PROC / "net" / "udp").read_text().splitlines()[1:]:
        fields = line.split()
        address, _, port = fields[1].partition(":")
        if address == "0100007F":
            drops[int(port, 16)] = drops.get(int(port, 16), 0) + int(fields[-1])
    return drops
