"""CPU time of groups of processes, and of the whole machine, over a measurement.

A :class:`CpuSnapshot` records, at one instant, the CPU seconds (user + system, all
threads) of every pid in each named group, and the machine's busy and total clock
ticks from ``/proc/stat``. The difference of two snapshots says how many CPU seconds
each group spent in between; pids that appeared in between count from zero. The
machine's busy time minus the groups' is what other work on the machine took.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.procfs import CLK_TCK, cpu_seconds


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all cores from the text of ``/proc/stat``.

    Busy is everything but ``idle`` and ``iowait``; ``guest`` time is already part
    of ``user``, so only the first eight fields count.
    """
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:9]]
            total = sum(values)
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return total - idle, total
    raise ValueError("no aggregate cpu line in /proc/stat")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        return parse_proc_stat(stat.read())


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds per pid per group, the machine's ticks, and the wall clock."""

    wall: float
    groups: Mapping[str, Mapping[int, float]]
    machine: tuple[int, int]


def snapshot(groups: Mapping[str, Callable[[], Sequence[int]]]) -> CpuSnapshot:
    """Read every group's pids (the callables list them now) and the machine's ticks."""
    taken: dict[str, dict[int, float]] = {}
    for name, pids in groups.items():
        seconds = {}
        for pid in pids():
            try:
                seconds[pid] = cpu_seconds(pid)
            except (OSError, ValueError):
                continue  # exited between listing and reading
        taken[name] = seconds
    return CpuSnapshot(time.monotonic(), taken, machine_ticks())


@dataclass(frozen=True)
class CpuUsage:
    """CPU seconds spent between two snapshots."""

    wall_s: float
    groups: Mapping[str, float]
    per_pid: Mapping[str, Mapping[int, float]]
    machine_busy_s: float
    machine_cores: int

    @property
    def others_s(self) -> float:
        """Busy time of processes in no group: other work on the machine."""
        return max(0.0, self.machine_busy_s - sum(self.groups.values()))

    def cores(self, name: str) -> float:
        """Group ``name``'s CPU seconds per wall second (1.0 = one core, fully busy)."""
        return self.groups.get(name, 0.0) / self.wall_s if self.wall_s else 0.0


def usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    """What each group (and the machine) spent from ``before`` to ``after``."""
    per_pid: dict[str, dict[int, float]] = {}
    for name, now in after.groups.items():
        then = before.groups.get(name, {})
        per_pid[name] = {pid: max(0.0, s - then.get(pid, 0.0)) for pid, s in now.items()}
    busy = (after.machine[0] - before.machine[0]) / CLK_TCK
    total = (after.machine[1] - before.machine[1]) / CLK_TCK
    wall = after.wall - before.wall
    cores = round(total / wall) if wall > 0 else os.cpu_count() or 1
    return CpuUsage(
        wall_s=wall,
        groups={name: sum(p.values()) for name, p in per_pid.items()},
        per_pid=per_pid,
        machine_busy_s=busy,
        machine_cores=max(1, cores),
    )
