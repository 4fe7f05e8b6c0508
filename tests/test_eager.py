"""start_eagerly: the first step runs now; results, errors and cancellation as a task's."""

from __future__ import annotations

import asyncio

import pytest

from tollway.eager import start_eagerly


async def test_the_first_step_runs_before_start_eagerly_returns() -> None:
    steps: list[str] = []
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def work() -> int:
        steps.append("first")
        value = await gate
        steps.append("second")
        await asyncio.sleep(0)  # a bare yield too
        return value + 1

    future = start_eagerly(work())
    assert steps == ["first"]  # create_task would not have run anything yet
    gate.set_result(41)
    assert await future == 42
    assert steps == ["first", "second"]


async def test_a_coroutine_that_never_suspends_is_done_at_once() -> None:
    async def quick() -> str:
        return "done"

    future = start_eagerly(quick())
    assert future.done() and future.result() == "done"


async def test_errors_before_and_after_the_first_suspension_reach_the_awaiter() -> None:
    async def early() -> None:
        raise ValueError("early")

    future = start_eagerly(early())  # not raised here
    with pytest.raises(ValueError, match="early"):
        await future

    async def late() -> None:
        await asyncio.sleep(0.001)
        raise KeyError("late")

    with pytest.raises(KeyError, match="late"):
        await start_eagerly(late())


async def test_an_awaited_future_that_fails_raises_inside_the_coroutine() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[BaseException] = []

    async def work() -> str:
        try:
            await gate
        except RuntimeError as exc:
            seen.append(exc)
            return "handled"
        return "not reached"

    future = start_eagerly(work())
    gate.set_exception(RuntimeError("redis down"))
    assert await future == "handled" and isinstance(seen[0], RuntimeError)


async def test_cancelling_the_future_cancels_the_coroutine_where_it_waits() -> None:
    cleaned: list[str] = []
    started = asyncio.Event()

    async def work() -> None:
        try:
            started.set()
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally")

    future = start_eagerly(work())
    assert started.is_set()
    await asyncio.sleep(0)
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert cleaned == ["finally"]


async def test_a_coroutine_may_catch_its_cancellation_and_return() -> None:
    async def work() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "stopped cleanly"
        return "slept"

    future = start_eagerly(work())
    await asyncio.sleep(0)
    future.cancel()
    await asyncio.sleep(0.01)
    assert future.done() and future.result() == "stopped cleanly"


async def test_a_cancelled_awaited_future_is_a_cancellation_inside_the_coroutine() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def work() -> str:
        try:
            await gate
        except asyncio.CancelledError:
            return "saw it"
        return "no"

    future = start_eagerly(work())
    gate.cancel()
    assert await future == "saw it"


def test_on_uvloop_as_the_gateway_runs() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[str]:
        steps: list[str] = []

        async def work() -> None:
            steps.append("first")
            await asyncio.sleep(0.001)
            steps.append("second")

        future = start_eagerly(work())
        steps.append("returned")
        await future
        cancelled = start_eagerly(asyncio.sleep(10))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return steps

    assert uvloop.run(main()) == ["first", "returned", "second"]
