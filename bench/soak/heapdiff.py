"""Where memory grew: ask the traced gateway for heap dumps and diff two of them.

Pairs with :mod:`bench.soak.traced`: :func:`request_dump` signals the gateway and
waits until the dump is on disk; :func:`report` compares dump ``a`` with dump ``b``
(live objects by type, and, when tracemalloc was on, the source lines and call
stacks whose allocations grew the most).
"""

from __future__ import annotations

import json
import os
import signal
import time
import tracemalloc
from pathlib import Path
from typing import Any

#: Frames of the interpreter's own machinery that say nothing about the cause.
_IGNORED = ("<frozen importlib._bootstrap", "<unknown>", "tracemalloc.py", "bench/soak/traced.py")


def request_dump(
    pid: int, out: Path, number: int, trim: bool = False, timeout_s: float = 300.0
) -> None:
    """Signal ``pid`` for dump ``number`` (``trim``: then ``malloc_trim``); wait for it."""
    os.kill(pid, signal.SIGUSR2 if trim else signal.SIGUSR1)
    marker = out / f"done-{number}"
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no heap dump {number} from {pid} after {timeout_s}s")
        time.sleep(0.2)


def type_growth(before: dict[str, Any], after: dict[str, Any], top: int = 20) -> list[str]:
    """Lines ``type: count before -> after, bytes before -> after`` for the types whose
    bytes (with the strings and numbers they point to) grew the most."""
    a, b = before["types"], after["types"]
    sa, sb = before.get("type_bytes", {}), after.get("type_bytes", {})
    names = set(a) | set(b)
    deltas = sorted((sb.get(t, 0) - sa.get(t, 0), b.get(t, 0) - a.get(t, 0), t) for t in names)
    deltas.reverse()
    return [
        f"{name}: {a.get(name, 0):,} -> {b.get(name, 0):,} objects ({count:+,}), "
        f"{_mib(sa.get(name, 0))} -> {_mib(sb.get(name, 0))} ({size / 1024:+,.0f} KiB)"
        for size, count, name in deltas[:top]
        if size > 0 or count > 0
    ]


def container_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The largest containers at the last dump, with their owner and size at the first."""
    earlier = {(c["owner"], c["type"]): c["len"] for c in before.get("containers", [])}
    return [
        f"{c['owner']} ({c['type']}): {earlier.get((c['owner'], c['type']), 0):,} -> "
        f"{c['len']:,} items"
        for c in after.get("containers", [])
    ]


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def allocator_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What glibc's malloc and CPython's small-object allocator held, before -> after."""
    lines = []
    g0, g1 = before.get("glibc") or {}, after.get("glibc") or {}
    if g0 and g1:
        lines.append(
            f"glibc malloc, bytes in use: {_mib(g0['in_use_bytes'])} -> "
            f"{_mib(g1['in_use_bytes'])}; free inside its heaps: {_mib(g0['free_bytes'])} -> "
            f"{_mib(g1['free_bytes'])}; mmapped blocks: {_mib(g0['mmapped_bytes'])} -> "
            f"{_mib(g1['mmapped_bytes'])}"
        )
        rss0, rss1 = g0["rss_kib"] * 1024, g1["rss_kib"] * 1024
        lines.append(f"RSS at the dumps: {_mib(rss0)} -> {_mib(rss1)}")
        if "rss_after_trim_kib" in g1:
            trimmed = g1["rss_after_trim_kib"] * 1024
            lines.append(f"RSS after malloc_trim(0) at the last dump: {_mib(trimmed)}")
    p0, p1 = before.get("pymalloc") or {}, after.get("pymalloc") or {}
    if p0.get("block_bytes") and p1.get("block_bytes"):
        lines.append(
            f"CPython small-object allocator, bytes in live blocks: {_mib(p0['block_bytes'])} -> "
            f"{_mib(p1['block_bytes'])}; arenas: {p0.get('arenas')} -> {p1.get('arenas')} "
            f"({_mib(p0.get('arena_bytes', 0))} -> {_mib(p1.get('arena_bytes', 0))})"
        )
    return lines


def _filtered(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces(
        [tracemalloc.Filter(False, pattern) for pattern in ("*tracemalloc.py", "*traced.py")]
    )


def report(out: Path, a: int, b: int, top: int = 20) -> str:
    """A text report of what grew between dump ``a`` and dump ``b``."""
    before = json.loads((out / f"heap-{a}.json").read_text())
    after = json.loads((out / f"heap-{b}.json").read_text())
    lines = [*allocator_lines(before, after)]
    lines += [
        f"live objects tracked by the collector: {before['objects']:,} -> {after['objects']:,} "
        f"({after['objects'] - before['objects']:+,}); uncollectable: {after['garbage']}",
        "types whose objects grew the most (bytes include the strings and numbers they point to):",
        *("  " + line for line in type_growth(before, after, top)),
        "largest containers (1,000 items or more) at the end:",
        *("  " + line for line in container_lines(before, after)),
    ]
    first, second = out / f"snapshot-{a}.pickle", out / f"snapshot-{b}.pickle"
    if first.exists() and second.exists():
        old = _filtered(tracemalloc.Snapshot.load(str(first)))
        new = _filtered(tracemalloc.Snapshot.load(str(second)))
        traced = (before.get("traced_bytes", 0), after.get("traced_bytes", 0))
        lines.append(
            f"traced Python allocations: {traced[0] / 2**20:,.1f} MiB -> "
            f"{traced[1] / 2**20:,.1f} MiB"
        )
        lines.append("source lines whose live allocations grew the most:")
        for stat in new.compare_to(old, "lineno")[:top]:
            if stat.size_diff <= 0:
                break
            lines.append(f"  {stat}")
        lines.append("call stacks whose live allocations grew the most:")
        for stat in new.compare_to(old, "traceback")[:5]:
            if stat.size_diff <= 0:
                break
            lines.append(
                f"  {stat.size_diff / 1024:+,.1f} KiB in {stat.count_diff:+,} blocks, from:"
            )
            for frame in stat.traceback.format(limit=12, most_recent_first=True):
                if not any(ignored in frame for ignored in _IGNORED):
                    lines.append(f"    {frame.strip()}")
    return "\n".join(lines)
