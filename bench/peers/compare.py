"""``python -m bench.peers run``: start everything, check answers, measure, report.

A peer that is not installed, fails to start or gives a wrong answer is reported and
left out; the others are still measured. Every child process is stopped on exit, also
on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from bench.gateway_admin import redis_errors
from bench.loadgen import Generator, available_generator
from bench.machine import describe, load_average
from bench.peers import install
from bench.peers.measure import Results, measure
from bench.peers.report import RunInfo, report, write_section
from bench.peers.systems import (
    System,
    check_answers,
    start_litellm,
    start_portkey,
    start_upstream,
)
from bench.peers.tollway import TollwayStack, ledger_rows, redis_for_tollway, start_tollway
from bench.processes import Children
from bench.procfs import is_running

SYSTEMS = ("tollway", "litellm", "portkey")


def _settled_ledger_rows(stack: TollwayStack, timeout: float = 30.0) -> int:
    """Ledger rows once the writer has stopped adding any for two seconds."""
    deadline = time.monotonic() + timeout
    rows = ledger_rows(stack.data_dir)
    while time.monotonic() < deadline:
        time.sleep(2.0)
        now = ledger_rows(stack.data_dir)
        if now == rows:
            break
        rows = now
    return rows


def _alive(system: System) -> str | None:
    dead = [pid for pid in (system.pid, *system.helper_pids) if not is_running(pid)]
    return f"process {dead[0]} exited" if dead else None


def start_systems(
    children: Children, args: argparse.Namespace, failures: dict[str, str]
) -> tuple[list[System], dict[str, int], TollwayStack | None]:
    """The upstream, then each asked-for system; failures are recorded, not raised."""
    upstream = start_upstream(children)
    systems, events = [upstream], {"direct": check_answers(upstream)}
    stack = None
    starters: dict[str, Callable[[], System]] = {
        "litellm": lambda: start_litellm(children, upstream.port),
        "portkey": lambda: start_portkey(children, upstream.port),
    }
    for name in args.systems:
        try:
            if name == "tollway":
                redis_url, note = redis_for_tollway(children, args.redis_url)
                stack = start_tollway(
                    children,
                    upstream.port,
                    redis_url,
                    args.writer_cpu,
                    args.tollway_metering,
                    redis_note=note,
                )
                system = stack.system
            else:
                system = starters[name]()
            events[name] = check_answers(system)
        except RuntimeError as exc:
            failures[name] = f"not measured: {exc}"
            print(f"{name}: {failures[name]}", file=sys.stderr, flush=True)
            continue
        print(f"{system.label} ready on port {system.port}", file=sys.stderr, flush=True)
        systems.append(system)
    return systems, events, stack


def command_line(args: argparse.Namespace, repeat: int, duration: float, warmup: float) -> str:
    """The command that reproduces this run."""
    command = (
        f"python -m bench.peers run --repeat {repeat} --duration {duration:g} --warmup {warmup:g}"
    )
    if tuple(args.systems) != SYSTEMS:
        command += f" --systems {','.join(args.systems)}"
    if args.tollway_metering != "production":
        command += f" --tollway-metering {args.tollway_metering}"
    if args.writer_cpu != 1:
        command += f" --writer-cpu {args.writer_cpu}"
    if args.generator != "auto":
        command += f" --generator {args.generator}"
    if args.no_stream:
        command += " --no-stream"
    return command


def run_comparison(args: argparse.Namespace) -> int:
    """The ``run`` subcommand."""
    repeat = max(1, min(args.repeat, 20))
    duration = min(max(args.duration, 1.0), 60.0)
    warmup = min(max(args.warmup, 0.0), 30.0)
    generator: Generator = args.generator
    available_generator(generator)
    machine = describe()
    modes = (False,) if args.no_stream else (False, True)
    failures: dict[str, str] = {}
    notes: list[str] = []
    with Children() as children:
        systems, events, stack = start_systems(children, args, failures)
        results: Results = measure(systems, repeat, duration, warmup, generator, modes, _alive)
        if stack is not None and "tollway" not in results.failures:
            measured = sum(
                m.sample.requests for k, ms in results.runs.items() if k[0] == "tollway" for m in ms
            )
            rows = _settled_ledger_rows(stack)
            verdict = (
                "every measured request reached the ledger"
                if rows >= measured
                else "**fewer rows than measured requests: the ledger writer fell behind or lost "
                "records**"
            )
            notes.append(
                f"Tollway's usage ledger held {rows:,} rows after the run, for {measured:,} "
                f"requests in the measured phases (warm-ups and checks come on top): {verdict}."
            )
            errors = redis_errors(stack.system.port)
            notes.append(
                f"Redis errors counted by Tollway (`tollway_redis_errors_total`): {errors:g} "
                "(0: every limit check went to Redis, none fell back to local limits)."
            )
            tail = children.log_tail("tollway", 20)
            if "Traceback" in tail or "ERROR" in tail:
                print(f"tollway log tail:\n{tail}", file=sys.stderr)
        for name, why in failures.items():
            results.failures.setdefault(name, why)
    info = RunInfo(
        command=command_line(args, repeat, duration, warmup),
        repeat=repeat,
        duration=duration,
        warmup=warmup,
        machine=machine,
        versions=install.describe_versions(),
        load_end=load_average(),
        generator=available_generator(generator),
        notes=tuple(notes),
    )
    section = report(results, systems, events, info)
    print(section)
    if args.write:
        write_section("run", section)
        print("written to bench/peers/RESULTS.md", file=sys.stderr)
    return 0 if len(systems) > 1 else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``run`` subcommand's options."""
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each one")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-stream", action="store_true", help="skip streaming requests")
    parser.add_argument(
        "--systems",
        type=lambda text: [s for s in text.split(",") if s],
        default=list(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)} (the upstream is always measured)",
    )
    parser.add_argument(
        "--tollway-metering",
        choices=("production", "default"),
        default="production",
        help="production: the usage journal, external ledger writer (default); "
        "default: the configuration defaults (true, inline writer)",
    )
    parser.add_argument(
        "--writer-cpu",
        type=int,
        default=1,
        help="core of Tollway's ledger writer (default 1: off the serving core, as the "
        "production topology runs it out of the serving process; its CPU is reported apart)",
    )
    parser.add_argument(
        "--redis-url",
        help="Redis for Tollway (pick a logical database no gateway uses); default: a private "
        "redis-server on core 1, no persistence",
    )
    parser.add_argument("--write", action="store_true", help="write bench/peers/RESULTS.md")


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject unknown system names."""
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
