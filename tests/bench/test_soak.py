"""The pure parts of ``bench.soak``: memory summary, session bodies,
the generated config, the heap diff and the report; and the load generator against
an in-process server. Nothing here starts the gateway."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import cast

import orjson
import pytest

from bench.gateway_overhead import merge
from bench.soak.__main__ import shown_arguments
from bench.soak.cpu import CpuUsage
from bench.soak.driver import Driver, LoadResult
from bench.soak.heapdiff import allocator_lines, container_lines, type_growth
from bench.soak.memory import RssSample, growth, slope_per, summarize
from bench.soak.report import markdown, verdict, write_block, write_samples
from bench.soak.run import SoakOptions, SoakResult
from bench.soak.stack import database_dsn, gateway_config, sqlalchemy_url
from bench.soak.workload import Conversation, Sessions, WorkloadSpec, _corpus, request_head
from gateway.config import parse_config
from gateway.validation import validate_chat


def test_growth_is_relative_to_the_warm_up_reading() -> None:
    assert growth(100.0, 105.0) == pytest.approx(0.05)
    assert growth(100.0, 90.0) == pytest.approx(-0.10)
    with pytest.raises(ValueError):
        growth(0.0, 1.0)


def test_verdict_is_inclusive_of_the_limit() -> None:
    assert verdict(0.05) == "pass"
    assert verdict(0.0501) == "FAIL"


def _samples(rss: list[int], step: int = 1000) -> list[RssSample]:
    return [RssSample(float(i), i * step, (value,)) for i, value in enumerate(rss)]


def test_summary_takes_the_first_reading_after_warm_up_and_the_last_one() -> None:
    samples = _samples([90_000, 100_000, 104_000, 130_000, 103_000])
    summary = summarize(samples, warmup_requests=1000)
    assert summary.start_kib == 90_000
    assert summary.warmup_kib == 100_000
    assert summary.warmup_at_requests == 1000
    assert summary.final_kib == 103_000
    assert summary.peak_kib == 130_000
    assert summary.growth == pytest.approx(0.03)
    assert summary.passed(0.05)


def test_summary_needs_a_sample_after_warm_up() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        summarize(_samples([1, 2]), warmup_requests=10_000)


def test_slope_is_per_hundred_thousand_requests() -> None:
    samples = _samples([100_000 + 5 * i for i in range(10)], step=1000)  # 5 KiB per 1,000
    slope = slope_per(samples)
    assert slope == pytest.approx(500.0)
    assert slope_per(samples[:2]) is None


def test_rss_of_several_processes_is_summed() -> None:
    assert RssSample(0.0, 0, (10, 20, 30)).total_kib == 60


def test_samples_are_written_as_csv(tmp_path: Path) -> None:
    path = tmp_path / "rss.csv"
    write_samples(path, _samples([10, 20]))
    assert path.read_text().splitlines() == [
        "elapsed_s,completed,rss_kib",
        "0.00,0,10",
        "1.00,1000,20",
    ]


# -- sessions ---------------------------------------------------------------------------


def _conversation(cap: int = 2048) -> Conversation:
    spec = WorkloadSpec(cap_bytes=cap, seed=7)
    return Conversation(3, spec, _corpus(7), "sess-3")


def test_every_turn_is_a_valid_chat_body_whose_context_grows_then_stays_capped() -> None:
    conversation = _conversation(cap=2048)
    sizes = []
    for turn in range(40):
        body = orjson.loads(conversation.next_body())
        validate_chat(body)
        messages = body["messages"]
        assert messages[0]["role"] == "system"
        assert messages[1]["role"] == "user" and "[sess-3 t0]" in messages[1]["content"]
        assert f"t{turn}]" in orjson.dumps(messages[-1]).decode()
        assert messages[-1]["role"] in ("user", "tool")
        # Every tool result answers the tool call just before it.
        for i, message in enumerate(messages):
            if message["role"] == "tool":
                calls = messages[i - 1]["tool_calls"]
                assert calls[0]["id"] == message["tool_call_id"]
        sizes.append(len(messages))
        assert conversation.context_bytes <= 2048
    assert sizes[5] > sizes[1]  # grows turn by turn
    assert max(sizes[-10:]) - min(sizes[-10:]) <= 4  # then stays about the cap


def test_sessions_are_deterministic() -> None:
    first, second = _conversation(), _conversation()
    assert [first.next_body() for _ in range(5)] == [second.next_body() for _ in range(5)]


def test_requests_carry_the_session_headers_and_a_correct_length() -> None:
    sessions = Sessions(4, WorkloadSpec(), "tw-secret", run_tag="run")
    raw = sessions.request(6, idempotency_key="idem-6")
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["X-Session-Id"] == "run-000002"
    assert headers["X-Agent-Type"] == "coordinator"  # even sessions; odd ones are workers
    assert headers["Authorization"] == "Bearer tw-secret"
    assert headers["Idempotency-Key"] == "idem-6"
    assert int(headers["Content-Length"]) == len(body)
    assert sessions.conversations[2].turn == 1
    odd = sessions.request(7).decode(errors="replace")
    assert "X-Agent-Type: worker\r\n" in odd and "Idempotency-Key" not in odd


def test_request_head_ends_with_a_header_line() -> None:
    assert request_head("k", "coordinator", "s").endswith(b"X-Session-Id: s\r\n")


# -- the stack's configuration ------------------------------------------------------------


def test_the_generated_config_is_valid_and_has_every_feature_on() -> None:
    raw = gateway_config(
        ["http://127.0.0.1:1", "http://127.0.0.1:2"], "tw-admin-x", "bench-1:", "prices.yaml"
    )
    config = parse_config(raw)
    pool = config.pools["h100"]
    assert pool.policy == "cache_aware" and len(pool.workers) == 2
    assert config.agent_types["worker"].compression == "agentic"
    assert config.limits.key_prefix == config.idempotency.key_prefix == "bench-1:"
    assert config.auth.keys == []  # keys come from the tenancy database
    assert config.metering.writer == "inline"
    merged = parse_config(merge(raw, {"limits": {"redis_timeout_s": 2.0}}))
    assert merged.limits.redis_timeout_s == 2.0 and merged.limits.key_prefix == "bench-1:"


def test_database_urls() -> None:
    assert database_dsn("postgresql://u@h:5432/test", "x") == "postgresql://u@h:5432/x"
    assert sqlalchemy_url("postgresql://u@h/x") == "postgresql+asyncpg://u@h/x"
    with pytest.raises(ValueError):
        sqlalchemy_url("sqlite:///x")


# -- heap diff --------------------------------------------------------------------------------


def test_heap_diff_lists_what_grew() -> None:
    before = {
        "types": {"list": 10, "PreparedStatement": 2},
        "type_bytes": {"list": 1000, "PreparedStatement": 200},
        "containers": [{"owner": "held by PreparedStatementState", "type": "list", "len": 1000}],
        "glibc": {"in_use_bytes": 2**20, "free_bytes": 0, "mmapped_bytes": 0, "rss_kib": 1024},
        "pymalloc": {"block_bytes": 2**20, "arenas": 1, "arena_bytes": 2**20},
    }
    after = {
        "types": {"list": 9, "PreparedStatement": 7},
        "type_bytes": {"list": 5000, "PreparedStatement": 900},
        "containers": [{"owner": "held by PreparedStatementState", "type": "list", "len": 3000}],
        "glibc": {
            "in_use_bytes": 3 * 2**20,
            "free_bytes": 0,
            "mmapped_bytes": 0,
            "rss_kib": 2048,
            "rss_after_trim_kib": 2000,
        },
        "pymalloc": {"block_bytes": 2 * 2**20, "arenas": 2, "arena_bytes": 2 * 2**20},
    }
    grew = type_growth(before, after)
    assert grew[0].startswith("list: 10 -> 9 objects (-1)")
    assert grew[1].startswith("PreparedStatement: 2 -> 7 objects (+5)")
    assert container_lines(before, after) == [
        "held by PreparedStatementState (list): 1,000 -> 3,000 items"
    ]
    text = "\n".join(allocator_lines(before, after))
    assert "bytes in use: 1.0 MiB -> 3.0 MiB" in text
    assert "after malloc_trim(0)" in text


# -- report -----------------------------------------------------------------------------------


def test_the_report_states_the_figures_and_the_verdict() -> None:
    load = LoadResult(sent=1000, completed=1000, statuses=Counter({200: 1000}), elapsed_s=2.0)
    load.latencies_us.extend(range(1000, 2000))
    memory = summarize(_samples([100_000, 100_000, 110_000]), warmup_requests=1000)
    result = SoakResult(
        options=SoakOptions(requests=1000, sessions=10),
        load=load,
        memory=memory,
        cpu=CpuUsage(
            2.0,
            {"gateway": 0.5, "load generator": 0.05, "upstreams": 0.04, "redis": 0.06},
            {},
            3.0,
            2,
        ),
        expected_ledger_rows=1001,
        ledger_rows=1001,
        ledger_wait_s=1.0,
        load_before="0 0 0",
        load_after="0 0 0",
    )
    text = markdown(result, "python -m bench.soak --requests 1000", "a machine.", "commit abc")
    assert "| requests/s | 500 |" in text
    assert "**+10.00%** (limit 5%: **FAIL**)" in text
    assert "| gateway CPU per request | 500 µs |" in text
    assert "load generator 50 µs, upstreams 40 µs, redis 60 µs, postgres 0 µs" in text
    assert "1.50 of 2 cores busy; gateway 0.25, other work on the machine 1.17" in text
    assert "1,001 of 1,001 expected (all;" in text
    assert "Machine: a machine. Load average at the end: 0 0 0. Code: commit abc." in text


def test_the_report_command_leaves_out_local_paths_and_write() -> None:
    argv = [
        "--requests",
        "10",
        "--samples",
        "x.csv",
        "--write",
        "--samples=y.csv",
        "--debug-memory",
    ]
    assert shown_arguments(argv) == ["--requests", "10", "--debug-memory"]


# -- the load generator -------------------------------------------------------------------------


class _Canned(asyncio.Protocol):
    """Answers every request with 200 except those whose body says ``"fail"`` (429)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            status = b"429 Too Many Requests" if b"fail" in body else b"200 OK"
            answer = b'{"error":"limited"}' if b"fail" in body else b"{}"
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: %d\r\n\r\n" % len(answer) + answer
            )


async def test_the_driver_sends_the_count_and_counts_statuses() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Canned, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def make(number: int) -> bytes:
        body = b"fail" if number % 10 == 0 else b"ok"
        return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    try:
        result = await Driver([port, port], make, total=200, concurrency=8, max_seconds=10).run()
    finally:
        server.close()
        await server.wait_closed()
    assert result.sent == result.completed == 200
    assert result.statuses == Counter({200: 180, 429: 20})
    assert result.errors == 20 and result.ok == 180
    assert result.error_samples[0].startswith("request 0: HTTP 429")
    assert len(result.latencies_us) == 200 and result.percentile_ms(50) > 0
    assert not result.timed_out


def test_writing_results_keeps_the_notes_around_the_block(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    write_block(path, "## run 1\n", "soak")
    assert path.read_text() == "<!-- soak:start -->\n## run 1\n<!-- soak:end -->\n"
    path.write_text(path.read_text() + "\n## Cause\n\nnotes\n")
    write_block(path, "## run 2\n", "soak")
    assert (
        path.read_text()
        == "<!-- soak:start -->\n## run 2\n<!-- soak:end -->\n\n## Cause\n\nnotes\n"
    )
