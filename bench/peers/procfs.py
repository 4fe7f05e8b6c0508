"""CPU time and resident memory of a process and its descendants, from ``/proc``.

A server may fork workers or helpers (LiteLLM's proxy can, node starts none but has
threads); reading the whole tree counts them all. Threads are included by
construction: ``/proc/<pid>/stat`` and ``VmRSS`` cover every thread of a process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return text.rsplit(")", 1)[1].split()


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible now."""
    tree: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that exist now."""
    tree = children_map()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if (_PROC / str(current)).exists():
            found.append(current)
        todo.extend(tree.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # After the command name: utime is field 14 and stime field 15 of the line.
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``'s whole process tree."""
    return cpu_seconds(process_tree(pid))


def rss_kib(pid: int) -> int:
    """``VmRSS`` of one process in KiB (0 when it is gone or a kernel thread)."""
    try:
        with open(_PROC / str(pid) / "status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_rss_kib(pid: int) -> int:
    """Sum of ``VmRSS`` over ``pid``'s process tree, in KiB (shared pages counted per process)."""
    return sum(rss_kib(p) for p in process_tree(pid))


def is_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def wait_idle(
    pids: list[int], share: float = 0.05, window: float = 0.25, timeout: float = 60.0
) -> float:
    """Wait until ``pids`` together use under ``share`` of a core over ``window`` seconds.

    A load generator that stops leaves requests in flight; a slow server keeps working
    on them after the run, and would steal the next measurement's core. Returns the
    seconds waited (at most ``timeout``).
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pids)
        time.sleep(window)
        if cpu_seconds(pids) - before < share * window:
            break
    return time.monotonic() - started
