"""``python -m bench.compression [--quick]``: measure the policies, write RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.compression.data import (
    bfcl_trajectories,
    long_conversation,
    tau_trajectories,
    turn_requests,
)
from bench.machine import cpu_model, load_average
from policies import CompressionPolicyConfig, build_policy, is_valid, load_counter
from policies.chain import CompressionPolicy
from policies.conversation import Message
from policies.summary_store import InMemorySummaryStore

RESULTS = Path(__file__).with_name("RESULTS.md")
KEEP = 3


class TruncatingSummarizer:
    """Stands in for the summarizer model: the first 400 characters of the transcript."""

    async def summarize(self, messages: Sequence[Message]) -> str:
        from policies.summary import render_transcript

        return render_transcript(messages)[:400]


def policy(name: str, raw: dict[str, Any], tokenizer: str = "estimate") -> CompressionPolicy:
    config = CompressionPolicyConfig.model_validate({"tokenizer": tokenizer, **raw})
    return build_policy(
        name, config, summarizer=TruncatingSummarizer(), store=InMemorySummaryStore()
    )


def reduction_policies(budgets: Sequence[int]) -> dict[str, dict[str, Any]]:
    chain = [
        {"type": "truncate_tool_outputs", "max_tokens": 500},
        {"type": "dedup_tool_outputs"},
        {"type": "mask_observations", "keep": KEEP, "step": 2},
    ]
    out: dict[str, dict[str, Any]] = {
        "truncate 500": {"steps": chain[:1]},
        f"mask keep {KEEP}": {"steps": [{"type": "mask_observations", "keep": KEEP}]},
        f"truncate+dedup+mask keep {KEEP} step 2": {"steps": chain},
    }
    for budget in budgets:
        out[f"budget {budget}"] = {"budget_tokens": budget}
        out[f"chain + budget {budget}"] = {
            "steps": [*chain, {"type": "token_budget", "budget_tokens": budget, "cut_at": "turn"}]
        }
    out["rolling summary"] = {
        "steps": [
            {
                "type": "rolling_summary",
                "trigger_tokens": budgets[0],
                "keep_recent_tokens": budgets[0] // 2,
                "chunk_tokens": budgets[0] // 4,
            }
        ]
    }
    return out


def serialized(messages: list[Message]) -> bytes:
    return b"".join(orjson.dumps(message) for message in messages)


def lcp_share(earlier: bytes, later: bytes) -> float:
    """Longest common prefix of two encodings over the length of the first."""
    low, high = 0, min(len(earlier), len(later))
    while low < high:  # binary search on equal prefixes (memcmp speed)
        middle = (low + high + 1) // 2
        if earlier[:middle] == later[:middle]:
            low = middle
        else:
            high = middle - 1
    return low / len(earlier) if earlier else 1.0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def recent_results_kept(before: list[Message], after: list[Message]) -> tuple[int, int]:
    """(kept byte-identical, total) over the last KEEP tool results of a request."""
    recent = [m for m in before if m["role"] == "tool"][-KEEP:]
    kept = {serialized([m]) for m in after if m["role"] == "tool"}
    return sum(serialized([m]) in kept for m in recent), len(recent)


async def reduction_table(
    label: str, trajectories: list[list[Message]], budgets: Sequence[int]
) -> list[str]:
    rows = [
        f"#### {label}: token reduction, validity, retention",
        "",
        "| policy | requests | tokens before | tokens after | reduction | valid | "
        f"last {KEEP} tool results kept |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    requests = [r for t in trajectories for r in turn_requests(t)]
    for name, raw in reduction_policies(budgets).items():
        compressor = policy(name, raw)
        before = after = valid = kept = recent = 0
        for index, request in enumerate(requests):
            result = await compressor.compress(request, scope=f"c{index}")
            before += result.tokens_before
            after += result.tokens_after
            valid += is_valid(result.messages) and result.skipped != "invalid_output"
            k, n = recent_results_kept(request, result.messages)
            kept, recent = kept + k, recent + n
        rows.append(
            f"| {name} | {len(requests)} | {before:,} | {after:,} | "
            f"{1 - after / before:.1%} | {valid / len(requests):.1%} | "
            f"{kept / max(1, recent):.1%} |"
        )
    return rows


async def stability_table(label: str, trajectories: list[list[Message]]) -> list[str]:
    variants = {
        "no compression": {"steps": []},
        f"mask keep {KEEP}, sliding (step 1)": {
            "steps": [{"type": "mask_observations", "keep": KEEP}]
        },
        f"mask keep {KEEP}, stepped (step 4)": {
            "steps": [{"type": "mask_observations", "keep": KEEP, "step": 4}]
        },
        f"mask keep {KEEP}, stepped (step 8)": {
            "steps": [{"type": "mask_observations", "keep": KEEP, "step": 8}]
        },
        "budget 2000, sliding": {"budget_tokens": 2000},
        "budget 2000, stepped (step_tokens 1000)": {
            "steps": [{"type": "token_budget", "budget_tokens": 2000, "step_tokens": 1000}]
        },
    }
    rows = [
        f"#### {label}: prefix stability between consecutive turns",
        "",
        "Longest common prefix of the serialized request at turn t and t+1, over the length "
        "of turn t (characters of the concatenated JSON messages).",
        "",
        "| policy | pairs | mean | p10 | share of pairs = 1.0 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, raw in variants.items():
        compressor = policy(name, raw)
        shares: list[float] = []
        for trajectory in trajectories:
            previous: bytes | None = None
            for request in turn_requests(trajectory):
                encoded = serialized((await compressor.compress(request)).messages)
                if previous is not None:
                    shares.append(lcp_share(previous, encoded))
                previous = encoded
        mean = sum(shares) / len(shares)
        whole = sum(share == 1.0 for share in shares) / len(shares)
        rows.append(
            f"| {name} | {len(shares)} | {mean:.3f} | {percentile(shares, 0.10):.3f} | "
            f"{whole:.1%} |"
        )
    return rows


async def latency_table(trajectories: list[list[Message]], runs: int) -> list[str]:
    estimate = load_counter("estimate")
    exact = load_counter("cl100k_base")
    rows = [
        "#### Latency of `compress()` (one event loop, conversation parsed afresh each run)",
        "",
        "Wall time, and CPU time of the process (all threads), which other work on a "
        "shared machine does not inflate.",
        "",
        "| conversation | messages | policy | tokenizer | wall p50 ms | wall p99 ms "
        "| CPU p50 ms | CPU p99 ms | tokens after |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    variants = {
        "trigger not reached": {"trigger_tokens": 10**7, "budget_tokens": 24000},
        "truncate+dedup+mask stepped+budget 24K": {
            "steps": [
                {"type": "truncate_tool_outputs", "max_tokens": 2000},
                {"type": "dedup_tool_outputs"},
                {"type": "mask_observations", "keep": KEEP, "step": 4},
                {"type": "token_budget", "budget_tokens": 24000, "cut_at": "turn"},
            ]
        },
        "budget 24K only": {"budget_tokens": 24000},
    }
    for target in (32_000, 128_000):
        conversation = long_conversation(trajectories, target, exact.count_messages)
        assert is_valid(conversation)
        encoded = orjson.dumps(conversation)
        for tokenizer in ("estimate", "cl100k_base"):
            for name, raw in variants.items():
                if tokenizer != "estimate" and name == "budget 24K only":
                    continue
                compressor = policy(name, raw, tokenizer)
                compressor.counter = estimate if tokenizer == "estimate" else exact
                timings: list[float] = []
                cpu: list[float] = []
                result = None
                for _ in range(runs):
                    messages = orjson.loads(encoded)
                    started, started_cpu = time.perf_counter(), time.process_time()
                    result = await compressor.compress(messages)
                    cpu.append((time.process_time() - started_cpu) * 1000)
                    timings.append((time.perf_counter() - started) * 1000)
                assert result is not None and is_valid(result.messages)
                total = exact.count_messages(conversation)
                rows.append(
                    f"| {total // 1000}K tokens | {len(conversation)} | {name} | {tokenizer} | "
                    f"{percentile(timings, 0.5):.2f} | {percentile(timings, 0.99):.2f} | "
                    f"{percentile(cpu, 0.5):.2f} | {percentile(cpu, 0.99):.2f} | "
                    f"{result.tokens_after:,} |"
                )
    rows += [
        "",
        "`cl100k_base` rows run with a warm per-text count cache (an append-only session "
        "pays for each message once); its first, cold count of 128K tokens is reported below.",
    ]
    conversation = long_conversation(trajectories, 128_000, exact.count_messages)
    cold = load_counter("cl100k_base")
    started = time.perf_counter()
    cold.count_messages(conversation)
    rows.append(
        f"Cold exact count of the 128K conversation: "
        f"{(time.perf_counter() - started) * 1000:.1f} ms (moved to a thread)."
    )
    return rows


async def emulator_table(trajectories: list[list[Message]]) -> list[str]:
    try:
        import httpx

        from simulator.app import running_emulator
        from simulator.config import EmulatorConfig
    except ImportError as exc:
        return [f"Emulator not available ({exc}); cached-token share not measured."]
    variants = {
        "no compression": {"steps": []},
        f"mask keep {KEEP}, sliding": {"steps": [{"type": "mask_observations", "keep": KEEP}]},
        f"mask keep {KEEP}, stepped (step 4)": {
            "steps": [{"type": "mask_observations", "keep": KEEP, "step": 4}]
        },
    }
    rows = [
        "#### Cached-token share on an emulated SGLang worker (`simulator.app`, instant mode)",
        "",
        "Each trajectory's requests sent in order to a fresh emulated worker per policy; share = "
        "sum of `usage.prompt_tokens_details.cached_tokens` over sum of `prompt_tokens`.",
        "",
        "| policy | requests | prompt tokens | cached tokens | cached share |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, raw in variants.items():
        compressor = policy(name, raw)
        prompt = cached = sent = 0
        async with running_emulator(EmulatorConfig(instant=True)) as app:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://emu") as client:
                for trajectory in trajectories:
                    for request in turn_requests(trajectory):
                        messages = (await compressor.compress(request)).messages
                        body = {"model": "m", "messages": messages, "max_tokens": 8}
                        usage = (await client.post("/v1/chat/completions", json=body)).json()[
                            "usage"
                        ]
                        prompt += usage["prompt_tokens"]
                        cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                        sent += 1
        rows.append(f"| {name} | {sent} | {prompt:,} | {cached:,} | {cached / prompt:.1%} |")
    return rows


async def main(quick: bool) -> None:
    import os

    tau = tau_trajectories()
    bfcl, bfcl_note = bfcl_trajectories(40 if quick else 100)
    runs = 50 if quick else 500
    sections: list[list[str]] = []
    sections.append(await reduction_table("tau-bench airline", tau, (1000, 2000, 4000)))
    if bfcl:
        sections.append(
            await reduction_table(f"BFCL multi-turn ({len(bfcl)} entries)", bfcl, (2000, 4000))
        )
    sections.append(await stability_table("tau-bench airline", tau))
    if bfcl:
        sections.append(await stability_table(f"BFCL multi-turn ({len(bfcl)} entries)", bfcl))
    sections.append(await latency_table(tau, runs))
    sections.append(await emulator_table(tau[: 40 if quick else 200]))
    header = [
        "### Context compression (`policies/`)",
        "",
        f"Command: `python -m bench.compression{' --quick' if quick else ''}`. "
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
        f"load average {load_average()}. Token counts: the policy's tokenizer (`estimate`, "
        "calibrated on cl100k_base) unless a row says otherwise. BFCL: "
        + (bfcl_note if bfcl else f"not measured ({bfcl_note})")
        + ".",
        "",
    ]
    text = "\n".join(header + [line for section in sections for line in [*section, ""]])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs, fewer BFCL entries")
    asyncio.run(main(parser.parse_args().quick))
