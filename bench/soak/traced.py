"""Run the gateway's command line with memory introspection on a signal.

    python -m bench.soak.traced --out DIR [--frames 0] serve --config ...

Everything after the wrapper's own options is the ``tollway`` command line. With
``--frames N > 0`` tracemalloc records N frames per allocation from the start
(about 20 times slower: short runs only). Each ``SIGUSR1`` runs a full
collection and writes ``DIR/heap-<n>.json`` (live objects by type, the
collector's statistics, and what the allocators hold: glibc's ``mallinfo2``,
bytes in use and free inside malloc's heaps; CPython's small-object allocator,
bytes in live blocks and in arenas; the RSS), ``DIR/snapshot-<n>.pickle`` when
tracing, then ``DIR/done-<n>`` so the caller knows the dump is complete.
``SIGUSR2`` does the same and then calls ``malloc_trim(0)`` and records the RSS
again: memory that drops then was freed, only kept by malloc. The soak's
``--debug-memory`` diffs the dump at the end of warm-up against the one at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import re
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallinfo2.restype = _Mallinfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None  # not glibc, or glibc older than 2.33
    return libc


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def glibc_malloc(trim: bool) -> dict[str, int]:
    """glibc's view (all arenas): mmapped, in use and free bytes; RSS around a trim."""
    libc = _libc()
    if libc is None:
        return {}
    info = libc.mallinfo2()
    stats = {
        "arena_bytes": int(info.arena),
        "mmapped_bytes": int(info.hblkhd),
        "in_use_bytes": int(info.uordblks),
        "free_bytes": int(info.fordblks),
        "rss_kib": _rss_kib(),
    }
    if trim:
        libc.malloc_trim(0)
        stats["rss_after_trim_kib"] = _rss_kib()
    return stats


_OBMALLOC = {
    "arenas": r"# arenas allocated current\s*=\s*([\d,]+)",
    "arena_bytes": r"arenas \* \d+ bytes/arena\s*=\s*([\d,]+)",
    "block_bytes": r"# bytes in allocated blocks\s*=\s*([\d,]+)",
    "free_block_bytes": r"# bytes in available blocks\s*=\s*([\d,]+)",
}


def python_allocator() -> dict[str, int]:
    """CPython's small-object allocator (``sys._debugmallocstats``, written to fd 2)."""
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    found = {}
    for name, pattern in _OBMALLOC.items():
        match = re.search(pattern, text)
        if match:
            found[name] = int(match.group(1).replace(",", ""))
    return found


_LEAVES = (str, bytes, bytearray, int, float, memoryview)
_CONTAINERS = (dict, list, set, frozenset, tuple)


def _owner(container: object, ignore: set[int]) -> str:
    """Who holds ``container``: ``Type.attribute`` when an instance's ``__dict__`` or slot
    does, else the types of the objects that refer to it."""
    referrers = [
        r
        for r in gc.get_referrers(container)
        if not isinstance(r, FrameType) and id(r) not in ignore
    ]
    for referrer in referrers:
        if isinstance(referrer, dict):
            namespace: dict[str, Any] = referrer
            for holder in gc.get_referrers(namespace):
                if getattr(holder, "__dict__", None) is namespace:
                    for name, value in namespace.items():
                        if value is container:
                            return f"{type(holder).__qualname__}.{name}"
        for name in getattr(type(referrer), "__slots__", ()):
            if getattr(referrer, name, None) is container:
                return f"{type(referrer).__qualname__}.{name}"
    held_by = sorted({type(r).__qualname__ for r in referrers})
    return "held by " + (", ".join(held_by[:3]) or "?")


def heap_census(trim: bool = False) -> dict[str, object]:
    """Live objects by type, the largest containers, the collector's and allocators' figures.

    Per type: how many objects the collector tracks and their bytes, counting also
    the untracked leaves they point to directly (strings, bytes, numbers: a str key
    of a dict, an SQL text held by a prepared statement), which the collector never
    lists on their own.
    """
    gc.collect()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    largest: list[tuple[int, int, str]] = []
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] += 1
        size = sys.getsizeof(obj)
        for ref in gc.get_referents(obj):
            if isinstance(ref, _LEAVES) and not gc.is_tracked(ref):
                size += sys.getsizeof(ref)
        sizes[name] += size
        if isinstance(obj, _CONTAINERS) and len(obj) >= 1000:
            largest.append((len(obj), id(obj), name))
    largest.sort(reverse=True)
    wanted = {i for _, i, _ in largest[:15]}
    found = [o for o in gc.get_objects() if id(o) in wanted]
    owners = {id(o): _owner(o, ignore={id(found)}) for o in found}
    del found
    containers = [
        {"type": name, "len": n, "owner": owners.get(i, "?")} for n, i, name in largest[:15]
    ]
    return {
        "glibc": glibc_malloc(trim),
        "pymalloc": python_allocator(),
        "objects": sum(counts.values()),
        "frozen": gc.get_freeze_count(),
        "garbage": len(gc.garbage),
        "stats": gc.get_stats(),
        "types": dict(counts.most_common(400)),
        "type_bytes": dict(sizes.most_common(400)),
        "containers": containers,
    }


class Dumper:
    """The ``SIGUSR1`` handler: census, snapshot, done marker."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        n = self.count
        started = time.monotonic()
        census = heap_census(trim=signum == signal.SIGUSR2)
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(self.out / f"snapshot-{n}.pickle"))
            census["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        census["seconds"] = time.monotonic() - started
        (self.out / f"heap-{n}.json").write_text(json.dumps(census))
        (self.out / f"done-{n}").write_text("")


def main(argv: list[str] | None = None) -> None:
    """Parse the wrapper's options, arm the handler, run the gateway's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=0)
    args, rest = parser.parse_known_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.frames > 0:
        tracemalloc.start(args.frames)
    dumper = Dumper(args.out)
    signal.signal(signal.SIGUSR1, dumper)
    signal.signal(signal.SIGUSR2, dumper)
    from tollway.cli import main as tollway

    sys.argv = ["tollway", *rest]
    tollway()


if __name__ == "__main__":
    main()
