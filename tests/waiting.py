"""Waiting for an observable state, with a deadline, instead of sleeping a guess."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(check: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    """Return once ``check()`` is truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached in {timeout_s}s: {what or check}")
        await asyncio.sleep(0.005)


def until_sync(check: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    """:func:`until` for code without an event loop."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached in {timeout_s}s: {what or check}")
        time.sleep(0.005)
