"""``python -m bench.routing``: replay agent sessions through each routing policy.

See the package docstring for what is measured; ``--help`` for the knobs.
``--write`` replaces the generated part of ``bench/routing/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Coroutine, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from bench.machine import cpu_model, load_average
from bench.processes import Children, cpu_count, http_get
from bench.routing.measure import RunFigures, figures, median_figures
from bench.routing.replay import ReplayConfig, TurnResult, replay
from bench.routing.stack import (
    PUBLIC_MODEL,
    Frontend,
    Frontends,
    WorkerSpec,
    counters,
    flush_caches,
    sglang_router_version,
    start_workers,
)
from bench.routing.workload import Session, synthetic_sessions, tau_sessions

T = TypeVar("T")
RESULTS = Path(__file__).with_name("RESULTS.md")
RAW_DIR = Path(__file__).resolve().parents[1] / "results"
PACKAGES = ("aiohttp", "uvloop", "uvicorn", "orjson", "sglang-router")

RR = "round_robin"
CA = "cache_aware"
ROUTER = "sglang-router"

FRONTENDS = (
    Frontend(RR, "tollway", "round_robin", 1, True),
    Frontend("least_load", "tollway", "least_load", 1, True),
    Frontend(CA, "tollway", "cache_aware", 1, True),
    Frontend("cache_aware/prefix", "tollway", "cache_aware", 1, False),
    Frontend(ROUTER, "sglang-router", "cache_aware", 1, True),
    Frontend(f"{RR} x2", "tollway", "round_robin", 2, True),
    Frontend(f"{CA} x2", "tollway", "cache_aware", 2, True),
    Frontend("cache_aware/prefix x2", "tollway", "cache_aware", 2, False),
    Frontend(f"{ROUTER} x2", "sglang-router", "cache_aware", 2, True),
)

#: Health checks (and with them the ``/get_load`` scrape) only at start.
_NO_SCRAPE = {"interval_s": 300.0}

#: Diagnostic variants (``--diagnostics``): which of cache_aware's overflow rules moves
#: sessions off their worker, and the admission options for keeping them there (waiting
#: for the home worker, or discounting its likely-cached prefix).
DIAGNOSTICS = (
    Frontend(
        "cache_aware/no-bounded-load",
        "tollway",
        "cache_aware",
        1,
        True,
        (("overflow_factor", 100.0),),
    ),
    Frontend(
        "cache_aware/headroom-1.0",
        "tollway",
        "cache_aware",
        1,
        True,
        (("kv_headroom", 1.0),),
    ),
    Frontend(
        "cache_aware/neither",
        "tollway",
        "cache_aware",
        1,
        True,
        (("overflow_factor", 100.0), ("kv_headroom", 1.0)),
    ),
    Frontend(
        "cache_aware/no-load-scrape", "tollway", "cache_aware", 1, True, (("health", _NO_SCRAPE),)
    ),
    Frontend(
        "cache_aware/no-load-scrape x2",
        "tollway",
        "cache_aware",
        2,
        True,
        (("health", _NO_SCRAPE),),
    ),
    Frontend(
        "cache_aware/no-home-wait",
        "tollway",
        "cache_aware",
        1,
        True,
        (("admission", {"home_wait_s": 0.0}),),
    ),
    Frontend(
        "cache_aware/no-home-wait x2",
        "tollway",
        "cache_aware",
        2,
        True,
        (("admission", {"home_wait_s": 0.0}),),
    ),
    Frontend(
        "cache_aware/home-wait-0.25",
        "tollway",
        "cache_aware",
        1,
        True,
        (("admission", {"home_wait_s": 0.25}),),
    ),
    Frontend(
        "cache_aware/prefix-discount",
        "tollway",
        "cache_aware",
        1,
        True,
        (("admission", {"home_wait_s": 0.0, "home_prefix_discount": True}),),
    ),
    Frontend(
        "sglang-router/balance-4",
        "sglang-router",
        "cache_aware",
        1,
        True,
        router_args=("--balance-abs-threshold", "4"),
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One workload: its sessions, how many run at once, the workers' KV pool."""

    name: str
    sessions: list[Session]
    concurrency: int
    kv_tokens: int


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__)
    parser.add_argument("--workloads", default="tau,synthetic", help="tau, synthetic or both")
    parser.add_argument("--tau-sessions", type=int, default=64)
    parser.add_argument("--tau-concurrency", type=int, default=32)
    parser.add_argument("--tau-kv-tokens", type=int, default=40000)
    parser.add_argument("--synthetic-sessions", type=int, default=48)
    parser.add_argument("--synthetic-concurrency", type=int, default=16)
    parser.add_argument("--synthetic-kv-tokens", type=int, default=64000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--speed", type=float, default=4.0, help="emulator --speed")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=180.0, help="seconds per run, at most")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds to start all slots")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--only", default="", help="frontend labels to run, separated by semicolons (default: all)"
    )
    parser.add_argument("--frontend-cpu", type=int, default=0)
    parser.add_argument("--worker-cpu", type=int, default=1)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes")
    parser.add_argument(
        "--diagnostics", action="store_true", help="also run cache_aware's diagnostic variants"
    )
    parser.add_argument("--write", action="store_true", help="update RESULTS.md")
    parser.add_argument("--section", default="main", help="which marked section --write fills")
    parser.add_argument(
        "--code", default="", help="what code is measured (default: git describe of the tree)"
    )
    return parser.parse_args(argv)


def workloads(args: argparse.Namespace) -> list[WorkloadSpec]:
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    out = []
    for name in chosen:
        if name == "tau":
            sessions = tau_sessions(args.tau_sessions, args.seed)
            out.append(WorkloadSpec(name, sessions, args.tau_concurrency, args.tau_kv_tokens))
        elif name == "synthetic":
            sessions = synthetic_sessions(args.synthetic_sessions, args.seed)
            out.append(
                WorkloadSpec(name, sessions, args.synthetic_concurrency, args.synthetic_kv_tokens)
            )
        else:
            raise SystemExit(f"unknown workload {name!r}")
    return out


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def wait_idle(workers: list[str], timeout_s: float = 30.0) -> None:
    """Wait until no worker reports running or queued requests."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = 0
        for url in workers:
            _, body = http_get(url + "/get_load")
            for rank in json.loads(body) if body.startswith(b"[") else [json.loads(body)]:
                busy += int(rank.get("num_reqs") or 0) + int(rank.get("num_waiting_reqs") or 0)
        if not busy:
            return
        time.sleep(0.2)


def one_run(
    frontend: Frontend,
    spec: WorkloadSpec,
    fronts: Frontends,
    workers: list[str],
    args: argparse.Namespace,
) -> tuple[RunFigures, list[TurnResult]]:
    urls = fronts.start(frontend)
    try:
        # One tiny request through every replica: the connection pools are warm and
        # the router has registered its workers before the clock starts.
        warm = ReplayConfig(
            tuple(urls), PUBLIC_MODEL, fronts.api_key, 1, 4, False, 30.0, request_timeout_s=30
        )
        ping = Session("warm-up", "warm-up", (({"role": "user", "content": "ping"},),) * len(urls))
        for _ in range(20):
            warm_results, _ = run(replay([ping], warm))
            if warm_results and all(r.ok for r in warm_results):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{frontend.label}: warm-up failed: {warm_results[-1:]}")
        wait_idle(workers)
        flush_caches(workers)
        before = counters(workers)
        config = ReplayConfig(
            targets=tuple(urls),
            model=PUBLIC_MODEL,
            api_key=fronts.api_key if frontend.kind == "tollway" else None,
            concurrency=spec.concurrency,
            max_tokens=args.max_tokens,
            session_header=frontend.session_header,
            deadline_s=args.deadline,
            ramp_s=args.ramp,
        )
        results, makespan = run(replay(spec.sessions, config))
        wait_idle(workers)
        after = counters(workers)
    finally:
        fronts.stop()
    return figures(results, makespan, before, after), results


def measure(args: argparse.Namespace) -> dict[str, dict[str, RunFigures]]:
    only = {label.strip() for label in args.only.split(";") if label.strip()}
    pool = FRONTENDS + (DIAGNOSTICS if args.diagnostics else ())
    selected = [f for f in pool if not only or f.label in only]
    if sglang_router_version() is None:
        print("sglang-router is not installed: its rows are skipped", file=sys.stderr)
        selected = [f for f in selected if f.kind != "sglang-router"]
    pin = not args.no_pin and cpu_count() > 1
    if pin:
        os.sched_setaffinity(0, {args.client_cpu})
    medians: dict[str, dict[str, RunFigures]] = {}
    RAW_DIR.mkdir(exist_ok=True)
    for spec in workloads(args):
        turns = sum(len(s.turns) for s in spec.sessions)
        print(
            f"== {spec.name}: {len(spec.sessions)} sessions, {turns} requests, "
            f"concurrency {spec.concurrency}, KV pool {spec.kv_tokens} tokens/worker",
            flush=True,
        )
        per_label: dict[str, list[RunFigures]] = {f.label: [] for f in selected}
        raw: list[dict[str, object]] = []
        with Children() as children:
            worker_spec = WorkerSpec(
                args.workers, spec.kv_tokens, args.speed, args.worker_cpu if pin else None
            )
            workers = start_workers(children, worker_spec, spec.name)
            fronts = Frontends(children, workers, args.frontend_cpu if pin else None)
            for round_ in range(args.repeat):
                order = selected if round_ % 2 == 0 else list(reversed(selected))
                for frontend in order:
                    result, turns_out = one_run(frontend, spec, fronts, workers, args)
                    per_label[frontend.label].append(result)
                    raw.append(
                        {
                            "workload": spec.name,
                            "round": round_,
                            "frontend": frontend.label,
                            "figures": dataclasses.asdict(result),
                            "turns": [dataclasses.asdict(t) for t in turns_out],
                        }
                    )
                    print(f"  [{round_}] {frontend.label:32} {_brief(result)}", flush=True)
        (RAW_DIR / f"routing-{args.section}-{spec.name}.json").write_text(json.dumps(raw))
        medians[spec.name] = {label: median_figures(runs) for label, runs in per_label.items()}
    return medians


def _brief(f: RunFigures) -> str:
    sticky = "-" if f.sticky is None else f"{f.sticky:.2f}"
    return (
        f"hit {f.hit_rate:.3f}  ttft p50 {f.ttft_p50_ms:7.1f} p99 {f.ttft_p99_ms:7.1f} ms  "
        f"{f.requests_per_s:6.1f} req/s {f.tokens_per_s:8.0f} tok/s  {f.makespan_s:5.1f}s  "
        f"err {f.errors}  imbalance {f.imbalance:.2f}  sticky {sticky}"
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def _baselines(label: str, rows: dict[str, RunFigures]) -> tuple[RunFigures | None, ...]:
    """round_robin and the router with as many replicas as ``label``."""
    suffix = " x2" if label.endswith(" x2") else ""
    return rows.get(RR + suffix), rows.get(ROUTER + suffix)


def table(rows: dict[str, RunFigures]) -> list[str]:
    lines = [
        "| frontend | hit rate | vs round_robin | vs router | TTFT p50 (ms) | TTFT p99 (ms) "
        "| p99 vs router | requests/s | tokens/s | worker imbalance | same worker as "
        "previous turn | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, f in rows.items():
        rr, router = _baselines(label, rows)
        lines.append(
            f"| {label} | {f.hit_rate:.3f} | {_ratio(f.hit_rate, rr.hit_rate) if rr else '-'} "
            f"| {_ratio(f.hit_rate, router.hit_rate) if router else '-'} "
            f"| {f.ttft_p50_ms:.1f} | {f.ttft_p99_ms:.1f} "
            f"| {_ratio(f.ttft_p99_ms, router.ttft_p99_ms) if router else '-'} "
            f"| {f.requests_per_s:.1f} | {f.tokens_per_s:,.0f} | {f.imbalance:.2f} "
            f"| {'-' if f.sticky is None else f'{f.sticky:.2f}'} | {f.errors} |"
        )
    return lines


def _held(ok: bool) -> str:
    return "**held**" if ok else "**not met**"


def verdicts(rows: dict[str, RunFigures]) -> list[str]:
    """The issue's targets, for one replica and for two (each against its own baselines)."""
    out = []
    for suffix, words in (("", "one replica"), (" x2", "two replicas")):
        ca = rows.get(CA + suffix)
        rr, router = _baselines(CA + suffix, rows)
        if ca is None:
            continue
        if router is not None:
            r = ca.hit_rate / router.hit_rate if router.hit_rate else float("inf")
            p = ca.ttft_p99_ms / router.ttft_p99_ms
            out.append(
                f"- {words}: cache_aware hit rate / router's {r:.2f} (target ≥ 1.2: "
                f"{_held(r >= 1.2)}); p99 TTFT / router's {p:.2f} (target ≤ 0.8: "
                f"{_held(p <= 0.8)})"
            )
        if rr is not None:
            r = ca.hit_rate / rr.hit_rate if rr.hit_rate else float("inf")
            out.append(
                f"- {words}: cache_aware hit rate / round_robin's {r:.2f} (target ≥ 3: "
                f"{_held(r >= 3)})"
            )
    ca, ca2 = rows.get(CA), rows.get(CA + " x2")
    if ca and ca2:
        out.append(
            f"- cache_aware hit rate with two replicas {ca2.hit_rate:.3f} vs one "
            f"{ca.hit_rate:.3f} (target no drop, allowing 0.5 points of noise: "
            f"{_held(ca2.hit_rate >= ca.hit_rate - 0.005)})"
        )
    return out


def code_version() -> str:
    """The commit measured, and whether the tree had changes outside bench/."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def machine() -> str:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    return (
        f"`nproc` {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; packages: {', '.join(versions)}"
    )


def report(
    args: argparse.Namespace,
    argv: Sequence[str],
    medians: dict[str, dict[str, RunFigures]],
    load_start: str,
    elapsed_s: float,
) -> str:
    shown = [a for i, a in enumerate(argv) if a != "--code" and (i == 0 or argv[i - 1] != "--code")]
    command = shlex.join(["python", "-m", "bench.routing", *shown])
    lines = [
        f"Code: {args.code or code_version()}.",
        "",
        f"Command: `{command}` (from the repository root, in the project's virtualenv; "
        f"{elapsed_s / 60:.1f} minutes).",
        "",
        f"Machine: {machine()}; load average at start: {load_start}, at the end: {load_average()}.",
        "",
        f"Workers: {args.workers} emulated H100s (llama-3.1-8b-instruct, `--speed "
        f"{args.speed}`), each answer {args.max_tokens} tokens at most, streamed. "
        f"Figures are medians of {args.repeat} round(s)"
        + (", the order of the frontends alternating between rounds." if args.repeat > 1 else ".")
        + (
            f" Pinning: frontends on core {args.frontend_cpu}, workers and the client on core "
            f"{args.worker_cpu}."
            if not args.no_pin
            else " Nothing pinned."
        ),
    ]
    specs = {w.name: w for w in workloads(args)}
    for name, rows in medians.items():
        spec = specs[name]
        turns = sum(len(s.turns) for s in spec.sessions)
        lines += [
            "",
            f"### Workload: {name}",
            "",
            f"{len(spec.sessions)} sessions ({turns} requests), {spec.concurrency} at once; "
            f"KV pool {spec.kv_tokens:,} tokens per worker.",
            "",
            *table(rows),
            "",
            *([] if args.diagnostics else verdicts(rows)),
        ]
    return "\n".join(lines)


def write(text: str, section: str) -> None:
    """Replace the text between the section's markers in RESULTS.md (append them if new)."""
    start, end = f"<!-- routing:{section}:start -->", f"<!-- routing:{section}:end -->"
    current = RESULTS.read_text() if RESULTS.exists() else ""
    if start not in current:
        current = f"{current.rstrip()}\n\n{start}\n{end}\n"
    head, _, rest = current.partition(start)
    _, _, tail = rest.partition(end)
    RESULTS.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    load_start = load_average()
    started = time.monotonic()
    medians = measure(args)
    text = report(args, argv, medians, load_start, time.monotonic() - started)
    print(text)
    if args.write:
        write(text, args.section)


if __name__ == "__main__":
    main()
