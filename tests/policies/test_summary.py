"""Rolling summary: placement, reuse from the store, rolling folds, failures."""

from __future__ import annotations

from collections.abc import Sequence

from policies.conversation import Message
from policies.summary import RollingSummary, render_transcript, summary_request
from policies.summary_store import InMemorySummaryStore
from policies.validity import is_valid
from tests.policies.conftest import assistant, long_text, run_steps, system, tool_block, user
from tollway.errors import UpstreamTimeout


class FakeSummarizer:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Sequence[Message]] = []
        self.fail = fail

    async def summarize(self, messages: Sequence[Message]) -> str:
        self.calls.append(list(messages))
        if self.fail:
            raise UpstreamTimeout("summarizer timed out")
        return f"summary #{len(self.calls)} of {len(messages)} messages"


def conversation(turns: int) -> list[Message]:
    messages = [system(), user("the task")]
    for i in range(turns):
        if i:
            messages.append(user(f"turn {i}"))
        messages += tool_block([(f"c{i}", "search", long_text(150, f"t{i}-"))])
        messages.append(assistant(f"answer {i}"))
    return messages


def step(
    summarizer: FakeSummarizer, store: InMemorySummaryStore, **options: object
) -> RollingSummary:
    settings: dict[str, object] = {
        "trigger_tokens": 1000,
        "keep_recent_tokens": 400,
        "chunk_tokens": 500,
        "keep_first_user": False,
    }
    settings.update(options)
    return RollingSummary(summarizer=summarizer, store=store, namespace="agentic", **settings)  # type: ignore[arg-type]


async def test_summary_is_a_user_message_after_the_system_message_and_reused() -> None:
    summarizer, store = FakeSummarizer(), InMemorySummaryStore()
    rolling = step(summarizer, store)
    messages = conversation(8)
    first = await run_steps(messages, rolling, scope="t1:s1")
    out = first.messages
    assert is_valid(out)
    assert out[0] is messages[0]
    assert out[1]["role"] == "user"
    heading = "[tollway: summary of the earlier conversation]\n\n"
    assert out[1]["content"].startswith(heading + "summary #1")
    assert not any(m["role"] == "system" for m in out[1:])
    assert out[2]["role"] == "user" and out[2:] == messages[len(messages) - len(out) + 2 :]
    assert len(summarizer.calls) == 1
    assert first.tokens_after < first.tokens_before
    # The next turn: the same summary, no new call, the same prefix.
    later = messages + [user("one more"), assistant("sure")]
    second = await run_steps(later, rolling, scope="t1:s1")
    assert len(summarizer.calls) == 1
    assert second.messages[: len(out)] == out
    assert "reused" in second.steps[0].note
    # Idempotent: compressing the output again changes nothing.
    again = await run_steps(out, rolling, scope="t1:s1")
    assert again.messages is out


async def test_keep_first_user_and_rolling_fold() -> None:
    summarizer, store = FakeSummarizer(), InMemorySummaryStore()
    rolling = step(summarizer, store, keep_first_user=True)
    messages = conversation(8)
    out = (await run_steps(messages, rolling)).messages
    assert out[1] is messages[1] and out[2]["content"].startswith("[tollway: summary")
    longer = conversation(14)
    out2 = (await run_steps(longer, rolling)).messages
    assert len(summarizer.calls) == 2
    # The second call folds the first summary and only the newer messages.
    folded = summarizer.calls[1]
    assert folded[0]["content"].startswith("[tollway: summary of the earlier conversation]")
    assert "summary #1" in folded[0]["content"]
    assert out2[2]["content"].endswith(f"summary #2 of {len(folded)} messages")


async def test_below_trigger_and_failures_leave_it_as_is() -> None:
    summarizer, store = FakeSummarizer(fail=True), InMemorySummaryStore()
    messages = conversation(8)
    small = conversation(1)
    assert (await run_steps(small, step(summarizer, store))).messages is small
    failed = await run_steps(messages, step(summarizer, store))
    assert failed.messages is messages
    assert "UpstreamTimeout" in failed.steps[0].note


def test_prompt_rendering() -> None:
    messages = conversation(1)
    request = summary_request(messages, max_words=50)
    assert request[0]["role"] == "system" and "50 words" in request[0]["content"]
    transcript = render_transcript(messages)
    assert "[assistant calls search]" in transcript and "[tool result (search)]" in transcript


async def test_store_expiry() -> None:
    now = [0.0]
    store = InMemorySummaryStore(max_entries=2, clock=lambda: now[0])
    await store.set("a", "1", ttl_seconds=10)
    await store.set("b", "2", ttl_seconds=10)
    await store.set("c", "3", ttl_seconds=10)
    assert await store.get("a") is None and await store.get("b") == "2"
    now[0] = 11
    assert await store.get("b") is None
