"""Starting a coroutine now instead of on the event loop's next turn.

``asyncio.create_task`` only schedules a coroutine: its first step runs on a later
turn of the loop, after every callback already queued. On the request path that
costs a loop turn per background call (an admission started while the request is
dispatched, a settlement after the response), and the Redis command it sends leaves
one turn later. :func:`start_eagerly` runs the coroutine's first step in the
caller's step, up to its first real suspension (for a Redis command: once the command
is queued for the next write), and drives the rest from a task, as Python 3.12's
eager task factory does. Cancelling the returned task cancels the coroutine where it
waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` until it first suspends, now; the future completes with its result.

    Exceptions raised before the first suspension are set on the returned future (they
    are not raised here), as a task would report them.
    """
    loop = asyncio.get_running_loop()
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return loop.create_task(_drive(coro, awaited))


async def _drive(coro: Coroutine[Any, Any, T], awaited: Any) -> T:
    """Resume ``coro`` each time the future it is suspended on is done."""
    while True:
        try:
            if awaited is None:  # a bare yield (``asyncio.sleep(0)``): one loop turn
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                try:
                    await awaited
                except asyncio.CancelledError:
                    if not awaited.cancelled():
                        raise  # we were cancelled, not what coro awaits
                except BaseException:  # noqa: BLE001 - coro sees it when resumed
                    pass
        except asyncio.CancelledError as cancel:
            try:
                awaited = coro.throw(cancel)
            except StopIteration as stop:
                return cast(T, stop.value)
            continue
        try:
            awaited = coro.send(None)
        except StopIteration as stop:
            return cast(T, stop.value)
