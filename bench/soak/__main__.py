"""``python -m bench.soak``: see :mod:`bench.soak`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.processes import exit_on_interrupt
from bench.soak.memory import mib
from bench.soak.report import (
    GROWTH_LIMIT,
    command_line,
    machine_description,
    markdown,
    revision,
    verdict,
    write_block,
    write_samples,
)
from bench.soak.run import SoakOptions, run_soak

RESULTS = Path(__file__).with_name("RESULTS.md")
MAX_REQUESTS = 5_000_000


def shown_arguments(argv: list[str]) -> list[str]:
    """The arguments worth repeating in the report: not ``--write``, not local paths."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--samples":
            skip = True
        elif arg != "--write" and not arg.startswith("--samples="):
            shown.append(arg)
    return shown


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description="Gateway memory soak under agent sessions"
    )
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections")
    parser.add_argument(
        "--cap-bytes", type=int, default=4096, help="history kept per session (bytes)"
    )
    parser.add_argument(
        "--warmup-fraction",
        type=float,
        default=0.1,
        help="warm-up share of the requests (at least one request per session)",
    )
    parser.add_argument(
        "--idempotency-every", type=int, default=20, help="every n-th request has a key; 0: none"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=1800, help="stop sending after this long"
    )
    parser.add_argument("--upstream", choices=("canned", "emulator"), default="canned")
    parser.add_argument("--upstreams", type=int, default=2, help="workers in the pool (>= 2)")
    parser.add_argument(
        "--debug-memory",
        action="store_true",
        help="run the gateway under tracemalloc and report what grew after warm-up (slow)",
    )
    parser.add_argument(
        "--trace-frames",
        type=int,
        default=0,
        help="with --debug-memory: tracemalloc frames per allocation (0: allocator figures "
        "and object counts only; tracing slows the gateway about 20 times)",
    )
    parser.add_argument(
        "--statement-cache",
        type=int,
        help="diagnostic: prepared statements SQLAlchemy's asyncpg driver caches per "
        "database connection in the gateway (DATABASE_URL query parameter; default: its own)",
    )
    parser.add_argument("--samples", type=Path, help="write the RSS samples to this CSV file")
    parser.add_argument("--log-level", default="warning", help="the gateway's log level")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be between 1 and {MAX_REQUESTS:,}")
    if not 1 <= args.sessions <= args.requests:
        parser.error("--sessions must be between 1 and --requests")
    if not 1 <= args.concurrency <= 1024:
        parser.error("--concurrency must be between 1 and 1024")
    if args.upstreams < 2:
        parser.error("--upstreams must be at least 2 (cache-aware routing needs a choice)")
    options = SoakOptions(
        requests=args.requests,
        sessions=args.sessions,
        concurrency=args.concurrency,
        cap_bytes=max(256, args.cap_bytes),
        warmup_fraction=min(max(args.warmup_fraction, 0.0), 0.9),
        idempotency_every=max(0, args.idempotency_every),
        max_seconds=min(max(args.max_seconds, 1.0), 4 * 3600),
        upstream_kind=args.upstream,
        upstreams=min(args.upstreams, 8),
        debug_memory=args.debug_memory,
        trace_frames=max(0, min(args.trace_frames, 64)),
        log_level=args.log_level,
        statement_cache=None if args.statement_cache is None else max(0, args.statement_cache),
    )
    machine, source = machine_description(), revision()
    with exit_on_interrupt():
        result = run_soak(options)
    shown = shown_arguments(argv)
    section = markdown(result, command_line(shown), machine, source)
    print(section)
    for note in result.notes:
        print(note, file=sys.stderr)
    if args.samples is not None:
        write_samples(args.samples, result.samples)
    if args.write:
        write_block(RESULTS, section, "soak")
        print(f"written to {RESULTS}", file=sys.stderr)
    mem = result.memory
    print(
        f"RSS warm-up {mib(mem.warmup_kib)}, final {mib(mem.final_kib)}, peak "
        f"{mib(mem.peak_kib)}, growth {mem.growth:+.2%} -> {verdict(mem.growth)} "
        f"(limit {GROWTH_LIMIT:.0%}); {result.load.rps:,.0f} req/s, "
        f"errors {result.load.errors:,}",
        file=sys.stderr,
    )
    if mem.growth > GROWTH_LIMIT or result.load.errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
