"""Reading ``/proc``: resident memory, CPU time and children of a process."""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_vmrss(status_text: str) -> int:
    """``VmRSS`` in KiB from the text of ``/proc/<pid>/status``."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) < 2 or not fields[1].isdigit():
                break
            unit = fields[2].lower() if len(fields) > 2 else "kb"
            if unit != "kb":
                raise ValueError(f"unexpected VmRSS unit {fields[2]!r}")
            return int(fields[1])
    raise ValueError("no VmRSS line (a kernel thread, or the process is a zombie)")


def read_rss_kib(pid: int) -> int:
    """Current resident set size of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        return parse_vmrss(status.read())


def parse_cpu_ticks(stat_text: str) -> int:
    """User plus system clock ticks (all threads) from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are
    counted from the last ``)``: utime and stime are fields 14 and 15.
    """
    rest = stat_text[stat_text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime field 15.
    return int(rest[11]) + int(rest[12])


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        return parse_cpu_ticks(stat.read()) / _CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cmdline(pid: int) -> str:
    """The command line of ``pid``, spaces between arguments."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pids_by_name(name: str) -> list[int]:
    """Pids whose command name (``/proc/<pid>/comm``) is ``name``: a service's processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == name:
            found.append(int(entry.name))
    return sorted(found)
