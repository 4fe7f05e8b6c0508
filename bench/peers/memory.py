"""``python -m bench.peers memory``: peak resident memory under the same bounded traffic.

Tollway (every feature on, as in ``run``) and LiteLLM's proxy (optionally Portkey's
gateway too) each get the same traffic, one after the other: ``--requests`` chat
completions over ``--sessions`` distinct session ids, every session a conversation
whose message list grows by a user and an assistant message each turn, turns of all
sessions interleaved so that every session is live at once. Each request carries
``X-Session-Id`` and ``user`` (the session id) and a few hundred characters of text
unique to its session and turn.

While the traffic runs, a sampler reads ``VmRSS`` of the system's whole process tree
every ``--interval`` seconds. Reported per system: RSS after start (idle), after a
warm-up of ``--warmup-requests`` requests (idle again), its peak during the run, and
at the end (after ``--settle`` idle seconds); for Tollway also its ledger writer's
peak and Redis's ``used_memory`` growth, since Tollway keeps session state in Redis.

Bounds: at most ``--requests`` requests and ``--max-seconds`` per system; all traffic
to 127.0.0.1. The client runs in this process, pinned to core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
import redis

from bench.gateway_overhead import MODEL
from bench.machine import describe, load_average
from bench.peers import install
from bench.peers.report import write_section
from bench.peers.systems import SIDE_CPU, System, start_litellm, start_portkey, start_upstream
from bench.peers.tollway import redis_for_tollway, start_tollway
from bench.processes import Children
from bench.procfs import tree_rss_kib

CONCURRENCY = 32
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


@dataclass
class Sampler:
    """Samples the RSS of process trees in a background thread."""

    pids: dict[str, int]
    interval: float
    peaks: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peaks[name] = max(self.peaks.get(name, 0), tree_rss_kib(pid))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass(frozen=True)
class MemoryResult:
    """One system's memory figures, in KiB, and how its traffic went."""

    label: str
    settings: str
    start_kib: int
    warm_kib: int
    peak_kib: int
    final_kib: int
    requests: int
    errors: int
    seconds: float
    samples: int
    notes: tuple[str, ...] = ()


def conversation(session: int, turn: int) -> list[dict[str, str]]:
    """The messages of ``session`` at ``turn``: grows by two messages a turn."""
    messages = [{"role": "system", "content": f"You are agent {session}. " + FILLER * 2}]
    for t in range(turn + 1):
        text = f"session {session} turn {t}: " + FILLER * 4
        messages.append({"role": "user", "content": text})
        if t < turn:
            messages.append({"role": "assistant", "content": "Hello from the canned upstream."})
    return messages


def schedule(requests: int, sessions: int, first: int = 0) -> list[tuple[int, int]]:
    """(session, turn) pairs, turns of all sessions interleaved, ``requests`` long."""
    turns = -(-requests // sessions)
    pairs = [(first + s, t) for t in range(turns) for s in range(sessions)]
    return pairs[:requests]


async def drive(
    system: System, pairs: list[tuple[int, int]], concurrency: int, deadline: float
) -> tuple[int, int]:
    """Send the scheduled requests; returns (completed, errors)."""
    url = f"http://127.0.0.1:{system.port}/v1/chat/completions"
    base = {"Content-Type": "application/json", **dict(system.headers)}
    if system.authorization:
        base["Authorization"] = system.authorization
    queue = iter(pairs)
    counts = {"ok": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            for session, turn in queue:
                if time.monotonic() > deadline:
                    return
                sid = f"bench-session-{session}"
                body = {
                    "model": MODEL,
                    "messages": conversation(session, turn),
                    "max_tokens": 16,
                    "user": sid,
                }
                headers = {**base, "X-Session-Id": sid}
                try:
                    async with client.post(url, data=orjson.dumps(body), headers=headers) as r:
                        await r.read()
                        counts["ok" if r.status == 200 else "errors"] += 1
                except (TimeoutError, aiohttp.ClientError):
                    counts["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts["ok"], counts["errors"]


def measure_system(
    system: System, args: argparse.Namespace, helpers: dict[str, int], redis_url: str | None
) -> MemoryResult:
    """Warm up, then the bounded traffic with RSS sampling, then settle."""
    start = tree_rss_kib(system.pid)
    warm_pairs = schedule(args.warmup_requests, max(1, args.warmup_requests // 4), first=10**6)
    asyncio.run(drive(system, warm_pairs, args.concurrency, time.monotonic() + 120))
    time.sleep(1.0)
    warm = tree_rss_kib(system.pid)
    used_before = _redis_used(redis_url)
    pairs = schedule(args.requests, args.sessions)
    began = time.monotonic()
    with Sampler({"system": system.pid, **helpers}, args.interval) as sampler:
        ok, errors = asyncio.run(drive(system, pairs, args.concurrency, began + args.max_seconds))
        seconds = time.monotonic() - began
        time.sleep(args.settle)
    final = tree_rss_kib(system.pid)
    notes = []
    for name in helpers:
        notes.append(f"{name} peak RSS {sampler.peaks.get(name, 0) / 1024:,.1f} MiB")
    used_after = _redis_used(redis_url)
    if used_before is not None and used_after is not None:
        notes.append(f"Redis used_memory +{(used_after - used_before) / 2**20:,.1f} MiB")
    if ok + errors < len(pairs):
        notes.append(f"stopped at --max-seconds after {ok + errors:,} of {len(pairs):,} requests")
    peak = max(sampler.peaks.get("system", 0), final, warm)
    return MemoryResult(
        system.label,
        system.settings,
        start,
        warm,
        peak,
        final,
        ok,
        errors,
        seconds,
        sampler.samples,
        tuple(notes),
    )


def _redis_used(url: str | None) -> int | None:
    if url is None:
        return None
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def render(results: list[MemoryResult], args: argparse.Namespace, machine: str) -> str:
    """The markdown section."""
    command = (
        f"python -m bench.peers memory --requests {args.requests} --sessions {args.sessions} "
        f"--concurrency {args.concurrency}"
    )
    if args.systems != ["tollway", "litellm"]:
        command += f" --systems {','.join(args.systems)}"
    rows = [
        "| system | after start MiB | after warm-up MiB | peak MiB | final MiB "
        "| peak − warm-up MiB | requests | errors | seconds | requests/s | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        rows.append(
            f"| {r.label} | {r.start_kib / 1024:,.1f} | {r.warm_kib / 1024:,.1f} "
            f"| {r.peak_kib / 1024:,.1f} | {r.final_kib / 1024:,.1f} "
            f"| {(r.peak_kib - r.warm_kib) / 1024:+,.1f} | {r.requests:,} | {r.errors:,} "
            f"| {r.seconds:,.1f} | {r.requests / r.seconds if r.seconds else 0:,.0f} "
            f"| {'; '.join(r.notes)} |"
        )
    return "\n".join(
        [
            "## Peak memory under session traffic",
            "",
            f"Command: `{command}` (after `python -m bench.peers setup`).",
            "",
            f"Method: each system alone on core 0, configured as `python -m bench.peers run` "
            f"configures it; client (aiohttp, {args.concurrency} connections) and upstream on "
            f"core {SIDE_CPU}. {args.requests:,} chat completions over {args.sessions:,} "
            "session ids, turns of all sessions interleaved; each request carries the whole "
            "conversation so far (system prompt, then a user and an assistant message per "
            "earlier turn, ~300 characters of session-unique text per user message), "
            "`X-Session-Id` and `user`. RSS = sum of `VmRSS` over the server's process tree, "
            f"sampled every {args.interval:g} s; warm-up: {args.warmup_requests} requests on "
            f"other session ids, then 1 s idle; final: after {args.settle:g} s idle.",
            "",
            f"Machine: {machine} Versions: {install.describe_versions()} Load average at the "
            f"end: {load_average()}.",
            "",
            *rows,
            "",
            "Configurations:",
            "",
            *[f"- **{r.label}**: {r.settings}" for r in results],
            "",
        ]
    )


def run_memory(args: argparse.Namespace) -> int:
    """The ``memory`` subcommand."""
    args.requests = max(1, min(args.requests, 200_000))
    args.sessions = max(1, min(args.sessions, args.requests))
    machine = describe()
    os.sched_setaffinity(0, {SIDE_CPU})  # the client shares the side core with the upstream
    results: list[MemoryResult] = []
    with Children() as children:
        upstream = start_upstream(children)
        for name in args.systems:
            try:
                helpers: dict[str, int] = {}
                redis_url = None
                if name == "tollway":
                    redis_url, note = redis_for_tollway(children, args.redis_url)
                    stack = start_tollway(
                        children, upstream.port, redis_url, args.writer_cpu, redis_note=note
                    )
                    system = stack.system
                    if stack.writer_pid is not None:
                        helpers["ledger writer"] = stack.writer_pid
                elif name == "litellm":
                    system = start_litellm(children, upstream.port)
                else:
                    system = start_portkey(children, upstream.port)
            except RuntimeError as exc:
                print(f"{name}: not measured: {exc}", file=sys.stderr)
                continue
            print(f"{system.label}: sending {args.requests:,} requests", file=sys.stderr)
            result = measure_system(system, args, helpers, redis_url)
            print(result, file=sys.stderr, flush=True)
            results.append(result)
    section = render(results, args, machine)
    print(section)
    if args.write:
        write_section("memory", section)
        print("written to bench/peers/RESULTS.md", file=sys.stderr)
    return 0 if results else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``memory`` subcommand's options."""
    parser.add_argument("--requests", type=int, default=20_000, help="requests per system")
    parser.add_argument("--sessions", type=int, default=2_000, help="distinct session ids")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--warmup-requests", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.1, help="RSS sampling period (s)")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before final")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="bound per system")
    parser.add_argument(
        "--systems",
        type=lambda text: [s for s in text.split(",") if s],
        default=["tollway", "litellm"],
        help="comma-separated subset of tollway,litellm,portkey",
    )
    parser.add_argument("--writer-cpu", type=int, default=1, help="core of the ledger writer")
    parser.add_argument("--redis-url")
    parser.add_argument("--write", action="store_true", help="write bench/peers/RESULTS.md")
