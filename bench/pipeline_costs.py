"""What authentication, Redis-backed limits and metering add to one request.

Gateways (``python -m gateway serve``, one uvicorn worker each, all pinned to core 0,
``REDIS_URL`` set), one per variant of :mod:`bench.pipeline_variants` (the variants
and the differences reported are described there), run side by side in front of
one canned upstream (``bench.upstream``, core 1); the load generator (wrk when
installed) runs on core 1.

Every variant has ``metering.writer: external`` (no ledger writer inside the gateway),
so the usage records stay in a Redis stream, which is trimmed after every
measurement. Redis is, by default, a private ``redis-server`` (no persistence) pinned
to core 1 like the upstream, so that it neither competes with the gateway for core 0
nor carries other people's traffic; ``--redis-url`` uses a given one instead (pick a
logical database no gateway uses: the usage stream's key does not follow
``limits.key_prefix``); this script's keys are then deleted on exit.

Each round measures every variant (order rotated and reversed from round to round):
concurrency 1 for latency p50/p99, concurrency 64 for requests/s and CPU per request,
the gateway process's ``utime + stime`` (``/proc/<pid>/stat``, all threads) over the
measured phase divided by the requests served, which other work on the machine does
not inflate. Added latency is the median over rounds of the paired, same-round
difference between two variants.

``--profile C,D`` then samples the named gateways with py-spy (``-f raw``) under load
at concurrency 1 and prints where their time goes, in microseconds per request.

    python -m bench.pipeline_costs [--repeat 5] [--duration 5] [--warmup 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.gateway_admin import (
    REDIS_CPU,
    RedisScratch,
    create_key,
    http_call,
    redis_errors,
    start_redis,
)
from bench.gateway_overhead import (
    gateway_argv,
    gateway_config,
    merge,
    request_body,
)
from bench.loadgen import Generator, Load, Target, available_generator, run
from bench.machine import describe, load_average
from bench.pipeline_profile import profile, profile_report, summarize_profile
from bench.pipeline_report import (
    RESULTS,
    Measurement,
    Results,
    render,
    write_results,
)
from bench.pipeline_variants import COMPARISONS, PRICE_BOOK, VARIANTS, Variant
from bench.processes import Children, free_port, python
from bench.procfs import cpu_seconds

GATEWAY_CPU = 0
UPSTREAM_CPU = 1
LOAD_CPU = 1
ROOT = Path(__file__).resolve().parent.parent
HIGH_CONCURRENCY = 64


@dataclass
class Gateway:
    """A running gateway variant."""

    variant: Variant
    port: int
    pid: int
    authorization: str | None


# --- processes and HTTP ------------------------------------------------------------------


def check_answer(gateway: Gateway) -> None:
    """One JSON request through the gateway must answer 200 with choices."""
    url = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
    token = gateway.authorization.removeprefix("Bearer ") if gateway.authorization else None
    status, body = http_call("POST", url, request_body(False), token)
    if status != 200 or not json.loads(body).get("choices"):
        raise RuntimeError(f"variant {gateway.variant.name}: {status} {body[:300]!r}")


def variant_config(
    variant: Variant, upstream_port: int, admin_token: str, prefix: str, pricing: Path
) -> dict[str, Any]:
    """The generated gateway config for one variant."""
    overlay: dict[str, Any] = {
        "admin_token": admin_token,
        "auth": {"mode": "keys", "keys": []} if variant.key_auth else {"mode": "none"},
        "limits": {
            "key_prefix": f"{prefix}{variant.name}:",
            "speculate": variant.speculate,
        },
        "metering": {
            "durable_before_response": variant.durable,
            "journal": variant.journal,
            "writer": "external",
        },
    }
    if variant.pricing:
        overlay["pricing"] = str(pricing)
    # gateway_config's static key is replaced: B..E authenticate with admin-API keys.
    return merge(gateway_config(upstream_port, "unused-" + secrets.token_hex(8)), overlay)


def start_gateways(
    children: Children,
    variants: Iterable[Variant],
    upstream_port: int,
    redis_url: str,
    prefix: str,
    log_level: str,
    root: Path = ROOT,
) -> list[Gateway]:
    """Start every variant's gateway (its code from the source tree ``root``), make its
    key, check one answer."""
    pricing = children.log_dir / "pricing.yaml"
    pricing.write_text(yaml.safe_dump(PRICE_BOOK))
    admin_token = "bench-admin-" + secrets.token_hex(16)
    gateways = []
    for variant in variants:
        config_path = children.log_dir / f"tollway-{variant.name}.yaml"
        config = variant_config(variant, upstream_port, admin_token, prefix, pricing)
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        name = f"gateway-{variant.name}"
        proc = children.start(
            name,
            gateway_argv("cli", config_path, port, log_level),
            cpu=GATEWAY_CPU,
            env={
                "TOLLWAY_CONFIG": str(config_path),
                "TOLLWAY_DATA_DIR": str(children.log_dir / f"data-{variant.name}"),
                "REDIS_URL": redis_url,
            },
            cwd=root,
        )
        children.wait_ready(name, f"http://127.0.0.1:{port}/readyz", timeout=60, proc=proc)
        authorization = None
        if variant.key_auth:
            secret = create_key(port, admin_token, f"bench-{variant.name}", variant.key_body)
            authorization = f"Bearer {secret}"
        gateway = Gateway(variant, port, proc.pid, authorization)
        try:
            check_answer(gateway)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{children.log_tail(name, 30)}") from None
        print(f"gateway {variant.name} ready on port {port} (pid {proc.pid})", file=sys.stderr)
        gateways.append(gateway)
    return gateways


# --- measuring ---------------------------------------------------------------------------


def measure_once(
    gateway: Gateway, connections: int, duration: float, warmup: float, generator: Generator
) -> Measurement:
    """Warm up, then one measured run with the gateway's CPU time around it."""
    target = Target(gateway.port, request_body(False), authorization=gateway.authorization)
    if warmup > 0:
        run(target, Load(connections, warmup, 0.0), generator, cpu=LOAD_CPU)
    before = cpu_seconds(gateway.pid)
    sample = run(target, Load(connections, duration, 0.0), generator, cpu=LOAD_CPU)
    after = cpu_seconds(gateway.pid)
    return Measurement(sample, after - before)


def round_order(gateways: list[Gateway], round_: int) -> list[Gateway]:
    """Rotate by the round number and reverse every other round."""
    shift = round_ % len(gateways)
    order = gateways[shift:] + gateways[:shift]
    return order[::-1] if round_ % 2 else order


def measure(
    gateways: list[Gateway],
    scratch: RedisScratch,
    repeat: int,
    duration: float,
    warmup: float,
    generator: Generator,
) -> Results:
    """Every variant at concurrency 1 and 64, ``repeat`` rounds, alternating."""
    results = Results()
    for round_ in range(repeat):
        for gateway in round_order(gateways, round_):
            for connections in (1, HIGH_CONCURRENCY):
                m = measure_once(gateway, connections, duration, warmup, generator)
                scratch.trim_usage()
                results.add(gateway.variant.name, connections, m)
                s = m.sample
                print(
                    f"round {round_ + 1}/{repeat} {gateway.variant.name} c={connections:<2} "
                    f"[{s.generator}] {s.rps:8,.0f}/s p50 {s.p50_ms * 1000:7.1f} µs "
                    f"p99 {s.p99_ms * 1000:8.1f} µs cpu {m.cpu_us_per_request:6.1f} µs/req "
                    f"errors {s.errors} (load {load_average()})",
                    file=sys.stderr,
                    flush=True,
                )
    return results


# --- profiling ---------------------------------------------------------------------------


def report(
    results: Results,
    repeat: int,
    duration: float,
    warmup: float,
    machine: str,
    command: str,
    redis_where: str,
    notes: list[str],
) -> str:
    """The markdown section: method, machine, tables, targets."""
    generator = next(iter(results.runs.values()))[0].sample.generator
    head = [
        "## Cost of authentication, limits and metering on the request path",
        "",
        f"Command: `{command}` (from the repository root, in the project's virtualenv).",
        "",
        f"Method: one gateway per variant (`python -m gateway serve`, one uvicorn worker each, "
        f"`REDIS_URL` set, SQLite under a fresh data directory) pinned to core {GATEWAY_CPU}, "
        f"in front of `bench.upstream` on core {UPSTREAM_CPU}; load generator `{generator}` "
        f"on core {LOAD_CPU}. JSON request `{request_body(False).decode()}`. Each of "
        f"{repeat} rounds measures every variant (order rotated and reversed from round to "
        f"round) at concurrency 1 (latency) and {HIGH_CONCURRENCY} (requests/s, CPU), "
        f"{duration:g} s after {warmup:g} s of warm-up. CPU per request = the gateway "
        "process's utime + stime (`/proc/<pid>/stat`, all threads) over the measured "
        "phase / requests served. Figures are medians over rounds; added = median of the "
        "same-round differences. Every variant uses `metering.writer: external`; the "
        "usage stream is trimmed after each measurement.",
        "",
        f"Machine: {machine.rstrip('.')}; Redis: {redis_where}, on loopback; "
        f"load average at the end: {load_average()}.",
    ]
    variants = [(v.name, v.label) for v in VARIANTS]
    return render(results, variants, COMPARISONS, HIGH_CONCURRENCY, head, notes)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Cost of auth, limits and metering")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each one")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--variants", default="ABCDEFG", help="which variants to run (letters, default ABCDEFG)"
    )
    parser.add_argument(
        "--redis-url",
        help="use this Redis (a database no other gateway uses, e.g. redis://127.0.0.1:6379/11) "
        f"instead of a private redis-server pinned to core {REDIS_CPU}",
    )
    parser.add_argument(
        "--redis-max-connections",
        type=int,
        default=1024,
        help="the gateways' Redis pool size (in REDIS_URL); 0: the client's default (100), "
        "which runs out at concurrency 64 and makes limits fall back to in-process ones",
    )
    parser.add_argument("--profile", default="", help="variants to profile with py-spy, e.g. CD")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-rate", type=int, default=1000, help="py-spy samples/s")
    parser.add_argument("--profile-connections", type=int, default=1)
    parser.add_argument("--profile-dir", type=Path, help="keep py-spy's raw output here")
    parser.add_argument("--skip-measure", action="store_true", help="only profile")
    parser.add_argument("--log-level", default="warning", help="the gateways' log level")
    parser.add_argument("--log-dir", type=Path, help="keep the children's logs here")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)
    repeat = max(1, min(args.repeat, 20))
    duration = min(max(args.duration, 1.0), 60.0)
    warmup = min(max(args.warmup, 0.0), 30.0)
    wanted = {c.upper() for c in args.variants}
    variants = [v for v in VARIANTS if v.name in wanted]
    to_profile = [v for v in variants if v.name in {c.upper() for c in args.profile}]
    if not variants:
        parser.error("no variant selected")
    machine = describe()
    generator = available_generator(args.generator)
    prefix = f"bench-pipeline:{uuid.uuid4().hex[:8]}:"
    notes: list[str] = []
    profiles: dict[str, dict[str, float]] = {}
    scratch: RedisScratch | None = None
    try:
        if args.log_dir is not None:
            args.log_dir.mkdir(parents=True, exist_ok=True)
        with Children(args.log_dir) as children:
            redis_url = args.redis_url or start_redis(children)
            client_url = redis_url
            if args.redis_max_connections:
                joiner = "&" if "?" in redis_url else "?"
                client_url += f"{joiner}max_connections={args.redis_max_connections}"
            scratch = RedisScratch(redis_url, prefix)
            info = scratch.client.info("server")
            redis_where = (
                f"private redis-server {info.get('redis_version', '?')} pinned to core "
                f"{REDIS_CPU}, no persistence"
                if args.redis_url is None
                else f"shared Redis server {info.get('redis_version', '?')} (not pinned)"
            )
            if args.redis_max_connections:
                redis_where += (
                    f"; gateways' REDIS_URL with `?max_connections={args.redis_max_connections}`"
                )
            upstream_port = free_port()
            upstream = children.start(
                "upstream",
                [python(), "-m", "bench.upstream", "--port", str(upstream_port)],
                cpu=UPSTREAM_CPU,
                cwd=ROOT,
            )
            children.wait_ready(
                "upstream", f"http://127.0.0.1:{upstream_port}/health", proc=upstream
            )
            gateways = start_gateways(
                children, variants, upstream_port, client_url, prefix, args.log_level
            )
            results = Results()
            if not args.skip_measure:
                results = measure(gateways, scratch, repeat, duration, warmup, generator)
            for gateway in gateways:
                errors = redis_errors(gateway.port)
                if errors:
                    notes.append(
                        f"Variant {gateway.variant.name} counted {errors:g} Redis errors "
                        "(its limits may have fallen back to in-process ones)."
                    )
                tail = children.log_tail(f"gateway-{gateway.variant.name}", 200)
                if "Traceback" in tail or "ERROR" in tail:
                    print(
                        f"gateway {gateway.variant.name} log tail:\n{tail[-3000:]}", file=sys.stderr
                    )
            out = args.profile_dir or children.log_dir
            out.mkdir(parents=True, exist_ok=True)
            for gateway in gateways:
                if gateway.variant not in to_profile:
                    continue
                target = Target(
                    gateway.port, request_body(False), authorization=gateway.authorization
                )
                raw, requests = profile(
                    gateway.variant.name,
                    gateway.pid,
                    target,
                    args.profile_seconds,
                    args.profile_rate,
                    out,
                    args.profile_connections,
                )
                scratch.trim_usage()
                profiles[gateway.variant.name] = summarize_profile(
                    raw, args.profile_rate, args.profile_seconds, requests
                )
                print(
                    f"profile of {gateway.variant.name}: {raw} ({requests} requests)",
                    file=sys.stderr,
                )
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if scratch is not None and args.redis_url is not None:
            removed = scratch.cleanup()
            print(f"removed {removed} Redis keys", file=sys.stderr)
    command = (
        f"python -m bench.pipeline_costs --repeat {repeat} --duration {duration:g} "
        f"--warmup {warmup:g}"
    )
    if args.redis_max_connections != 1024:
        command += f" --redis-max-connections {args.redis_max_connections}"
    if args.variants.upper() != "ABCDEF":
        command += f" --variants {args.variants.upper()}"
    section = ""
    if results.runs:
        section = report(results, repeat, duration, warmup, machine, command, redis_where, notes)
        print(section)
    if profiles:
        baseline = "C" if "C" in profiles else None
        print(profile_report(profiles, baseline, 25))
    if args.write and section:
        write_results(section)
        print(f"written to {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
