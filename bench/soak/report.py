"""The soak's markdown report."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.machine import describe
from bench.soak.memory import RssSample, mib
from bench.soak.run import GATEWAY_CPU, LOAD_CPU, SoakResult

GROWTH_LIMIT = 0.05
WORKER_KINDS = {
    "canned": "canned SGLang-shaped workers (`bench.upstream`)",
    "emulator": "emulated SGLang workers (`simulator emulate --instant`)",
}
ROOT = Path(__file__).resolve().parents[2]


def machine_description() -> str:
    """:func:`bench.machine.describe` without the wrk line: these runs use the Python
    generator (the request bodies change every request)."""
    return re.sub(r"load generator: [^;]*; ", "", describe())


def revision(root: Path = ROOT) -> str:
    """The commit measured, and whether the working tree had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD").strip()
    if not commit:
        return "unknown revision"
    changed = [
        line[3:]
        for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if not line[3:].startswith(("bench/", "tests/", "docs/"))
    ]
    if changed:
        return f"commit {commit} with uncommitted changes to {', '.join(sorted(changed))}"
    return f"commit {commit}"


def command_line(argv: Sequence[str]) -> str:
    """How the run was started, for the report."""
    return " ".join(["python -m bench.soak", *argv])


def verdict(growth: float, limit: float = GROWTH_LIMIT) -> str:
    """``pass`` or ``FAIL`` for a growth fraction against ``limit``."""
    return "pass" if growth <= limit else "FAIL"


def markdown(result: SoakResult, command: str, machine: str, source: str = "") -> str:
    """The results block."""
    o, load, mem = result.options, result.load, result.memory
    slope = (
        f"{mem.slope_kib_per_100k:+,.0f} KiB per 100,000 requests"
        if mem.slope_kib_per_100k is not None
        else "n/a"
    )
    statuses = ", ".join(f"{status}: {n:,}" for status, n in sorted(load.statuses.items()))
    if result.ledger_rows is None:
        ledger = "not counted (the query failed)"
    else:
        ledger = (
            f"{result.ledger_rows:,} of {result.expected_ledger_rows:,} expected "
            f"({'all' if result.ledger_rows == result.expected_ledger_rows else 'MISMATCH'}; "
            f"counted {result.ledger_wait_s:.0f} s after the last response)"
        )
    per = 1e6 / load.completed if load.completed else float("nan")
    spent = result.cpu.groups
    cpu_us = spent.get("gateway", 0.0) * per
    others = ", ".join(
        f"{name} {spent.get(name, 0.0) * per:,.0f} µs"
        for name in ("load generator", "upstreams", "redis", "postgres")
    )
    wall = result.cpu.wall_s or float("nan")
    cpu_use = (
        f"{result.cpu.machine_busy_s / wall:.2f} of {result.cpu.machine_cores} cores busy; "
        f"gateway {result.cpu.cores('gateway'):.2f}, other work on the machine "
        f"{result.cpu.others_s / wall:.2f}"
    )
    rows = [
        ("requests sent / answered", f"{load.sent:,} / {load.completed:,}"),
        ("sessions", f"{o.sessions:,} ({load.sent / o.sessions:,.0f} turns each)"),
        ("duration", f"{load.elapsed_s:,.1f} s"),
        ("requests/s", f"{load.rps:,.0f}"),
        ("latency p50 / p99", f"{load.percentile_ms(50):.2f} ms / {load.percentile_ms(99):.2f} ms"),
        ("HTTP statuses", statuses or "none"),
        ("errors (non-2xx or no answer)", f"{load.errors:,}"),
        ("gateway CPU per request", f"{cpu_us:,.0f} µs"),
        ("CPU per request elsewhere", others),
        ("CPU use during the run", cpu_use),
        ("gateway RSS at start", mib(mem.start_kib)),
        (
            "gateway RSS at end of warm-up",
            f"{mib(mem.warmup_kib)} (after {mem.warmup_at_requests:,} requests)",
        ),
        ("gateway RSS final", mib(mem.final_kib)),
        ("gateway RSS peak", mib(mem.peak_kib)),
        (
            "growth (final − warm-up) / warm-up",
            f"**{mem.growth:+.2%}** (limit {GROWTH_LIMIT:.0%}: **{verdict(mem.growth)}**)",
        ),
        ("RSS trend after warm-up (least squares)", slope),
        ("usage ledger rows", ledger),
    ]
    lines = [
        "## Memory soak",
        "",
        f"Command: `{command}` (from the repository root, in the project's virtualenv).",
        "",
        f"Stack: gateway (`python -m gateway serve`, one process) on core {GATEWAY_CPU}; "
        f"{o.upstreams} {WORKER_KINDS[o.upstream_kind]} behind one cache-aware pool, "
        f"and the load generator, on core {LOAD_CPU}; Redis and PostgreSQL on the same "
        "machine (unpinned). Every feature on: API key hashed in the tenancy database "
        "(PostgreSQL), rate limits and budgets checked in Redis (generous, nothing refused), "
        "metering through the Redis usage stream into the ledger (inline writer), a price "
        "book, compression on the `worker` agent type, `Idempotency-Key` on every "
        f"{o.idempotency_every}th request."
        + (
            f" Diagnostic variant: the gateway's asyncpg prepared-statement cache set to "
            f"{o.statement_cache} per connection (`prepared_statement_cache_size` in "
            "`DATABASE_URL`)."
            if o.statement_cache is not None
            else ""
        ),
        "",
        f"Workload: {o.sessions:,} sessions (`X-Session-Id`, agent types `coordinator` and "
        "`worker` alternating), each turn appending the assistant's answer (text or a tool "
        "call) and the next user message (or the tool result); oldest turns dropped past "
        f"{o.cap_bytes:,} bytes of history, so bodies stay at about {o.cap_bytes // 1024 + 1} "
        f"KB. Closed loop, {o.concurrency} keep-alive connections. Warm-up: the first "
        f"{o.warmup_requests:,} requests (every session seen, contexts at their cap). RSS is "
        "`VmRSS` of the gateway process, sampled every second.",
        "",
        f"Machine: {machine} Load average at the end: {result.load_after}."
        + (f" Code: {source}." if source else ""),
        "",
        "| figure | value |",
        "| --- | ---: |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    if load.error_samples:
        lines += ["", "First errors:", "", *(f"- `{e}`" for e in load.error_samples)]
    if load.timed_out:
        lines += ["", f"**Stopped at the time bound ({o.max_seconds:,.0f} s) before the count.**"]
    if result.heap:
        lines += ["", "What grew after warm-up (`--debug-memory`):", "", "```", result.heap, "```"]
    return "\n".join(lines) + "\n"


def write_block(path: Path, section: str, name: str) -> None:
    """Put ``section`` between the ``<!-- name:start -->`` and ``<!-- name:end -->`` markers
    of ``path``, keeping the text around them (notes written by hand); a file without
    the markers is replaced by the block."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section}{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1].removeprefix("\n")
        block = head + block + tail
    path.write_text(block, encoding="utf-8")


def write_samples(path: Path, samples: Sequence[RssSample]) -> None:
    """The RSS samples as CSV (seconds, requests completed, RSS KiB)."""
    lines = ["elapsed_s,completed,rss_kib"]
    lines += [f"{s.elapsed_s:.2f},{s.completed},{s.total_kib}" for s in samples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
