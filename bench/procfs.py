"""Reading ``/proc``: CPU time, resident memory, children and names of processes.

Threads are included by construction: ``/proc/<pid>/stat`` and ``VmRSS`` cover every
thread of a process. A server may fork workers or helpers, so the ``tree_*``
functions read a process and all its descendants.

Two kinds of readers: ``cpu_seconds`` and ``read_rss_kib`` raise when the process
is gone (the caller decides what that means), while ``total_cpu_seconds``,
``tree_rss_kib`` and the listing functions skip processes that exited meanwhile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def _pids() -> Iterator[int]:
    """Every process visible now."""
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _read(pid: int, name: str) -> str:
    """The text of ``/proc/<pid>/<name>`` (raises ``OSError`` when the process is gone)."""
    with open(_PROC / str(pid) / name, encoding="utf-8", errors="replace") as file:
        return file.read()


# -- /proc/<pid>/stat -----------------------------------------------------------------


def split_stat(stat_text: str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name, from field 3 (state) on.

    The command name (field 2) may hold spaces and parentheses, so fields are
    counted from the last ``)``.
    """
    return stat_text[stat_text.rindex(")") + 1 :].split()


def _stat_fields(pid: int) -> list[str] | None:
    """:func:`split_stat` of ``pid``, or None when it is gone."""
    try:
        return split_stat(_read(pid, "stat"))
    except OSError:
        return None


def _ticks(fields: list[str]) -> int:
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def parse_cpu_ticks(stat_text: str) -> int:
    """User plus system clock ticks (all threads) from the text of ``/proc/<pid>/stat``."""
    return _ticks(split_stat(stat_text))


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) ``pid`` has used so far.

    Raises ``OSError`` when the process is gone.
    """
    return parse_cpu_ticks(_read(pid, "stat")) / CLK_TCK


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds (user + system, all threads) of the given processes together.

    Processes that are gone count nothing.
    """
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += _ticks(fields)
    return ticks / CLK_TCK


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
        before = total_cpu_seconds(pids)
        time.sleep(window)
        if total_cpu_seconds(pids) - before < share * window:
            break
    return time.monotonic() - started


# -- resident memory ------------------------------------------------------------------


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
    """Current resident set size of ``pid`` in KiB.

    Raises ``OSError`` when the process is gone and ``ValueError`` when it has no
    ``VmRSS`` (a kernel thread or a zombie).
    """
    return parse_vmrss(_read(pid, "status"))


def tree_rss_kib(pid: int) -> int:
    """Sum of ``VmRSS`` over ``pid``'s process tree, in KiB (shared pages counted per process).

    Processes without a resident set (gone, zombies, kernel threads) count nothing.
    """
    total = 0
    for member in process_tree(pid):
        try:
            total += read_rss_kib(member)
        except (OSError, ValueError):
            continue
    return total


# -- children and names ---------------------------------------------------------------


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible now."""
    tree: dict[int, list[int]] = {}
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is None:
            continue
        tree.setdefault(int(fields[1]), []).append(pid)
    return tree


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` that exist now."""
    return children_map().get(pid, [])


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that exist now."""
    tree = children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        if (_PROC / str(current)).exists():
            found.append(current)
        todo.extend(tree.get(current, []))
    return found


def cmdline(pid: int) -> str:
    """The command line of ``pid``, spaces between arguments ("" when it is gone)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pids_by_name(name: str) -> list[int]:
    """Pids whose command name (``/proc/<pid>/comm``) is ``name``: a service's processes."""
    found = []
    for pid in _pids():
        try:
            comm = _read(pid, "comm").strip()
        except OSError:
            continue
        if comm == name:
            found.append(pid)
    return sorted(found)
