"""``python -m bench.scaleout``: see :mod:`bench.scaleout`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.processes import exit_on_interrupt
from bench.scaleout.report import markdown
from bench.scaleout.run import ScaleOptions, run_scaleout
from bench.soak.report import machine_description, revision, write_block

RESULTS = Path(__file__).with_name("RESULTS.md")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaleout",
        description="Gateway requests/s with one and two processes; limits across processes",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each one")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--sessions", type=int, default=2000, help="agent sessions")
    parser.add_argument("--limit-rpm", type=int, default=50, help="rpm of the hammered key")
    parser.add_argument(
        "--limit-demand", type=int, default=400, help="requests sent at once to that key"
    )
    parser.add_argument("--limit-repeat", type=int, default=3, help="hammering phases per config")
    parser.add_argument("--log-level", default="warning", help="the gateways' log level")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.limit_demand <= args.limit_rpm:
        parser.error("--limit-demand must exceed --limit-rpm (the demand must hit the limit)")
    options = ScaleOptions(
        duration_s=min(max(args.duration, 1.0), 120.0),
        warmup_s=min(max(args.warmup, 0.0), 60.0),
        repeat=max(1, min(args.repeat, 20)),
        concurrency=max(2, min(args.concurrency, 512)),
        sessions=max(1, min(args.sessions, 100_000)),
        limit_rpm=max(1, min(args.limit_rpm, 10_000)),
        limit_demand=min(args.limit_demand, 20_000),
        limit_repeat=max(1, min(args.limit_repeat, 10)),
        log_level=args.log_level,
    )
    machine, source = machine_description(), revision()
    with exit_on_interrupt():
        result = run_scaleout(options)
    shown = " ".join(["python -m bench.scaleout", *(a for a in argv if a != "--write")])
    section = markdown(result, shown, machine, source)
    print(section)
    if args.write:
        write_block(RESULTS, section, "scaleout")
        print(f"written to {RESULTS}", file=sys.stderr)
    wrong = [e for found in result.exact.values() for e in found if not e.exact]
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
