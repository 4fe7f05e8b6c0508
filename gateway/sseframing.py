"""Cutting an upstream's SSE byte stream into whole events, in linear time and bounded memory.

An event ends at a blank line (``\\n\\n``). Blocks arrive split anywhere; the
framer keeps the incomplete tail and searches only the bytes it has not searched
yet, so a stream costs time linear in its size however it is split (appending to
a ``bytes`` and searching it from the start each time is quadratic: a 64 MB event
without a blank line took seconds of CPU). No event may exceed ``max_event_bytes``:
a longer one (or a tail that grows past it without a blank line) raises
:class:`~tollway.errors.UpstreamUnusableAnswer` as soon as it is seen, so the
incomplete tail never holds more than the limit plus one block.
"""

from __future__ import annotations

from tollway.errors import UpstreamUnusableAnswer

_END = b"\n\n"


def event_too_large(max_event_bytes: int) -> UpstreamUnusableAnswer:
    """The error for an upstream event over the limit (the message names no upstream)."""
    return UpstreamUnusableAnswer(
        f"The upstream sent a stream event larger than {max_event_bytes} bytes."
    )


class EventFramer:
    """Whole SSE events out of arbitrarily split blocks (one per stream)."""

    __slots__ = ("max_event_bytes", "_tail")

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._tail = bytearray()

    def feed(self, block: bytes) -> bytes:
        """The whole events that ``block`` completes, each ending in a blank line
        (``b""`` while none is complete)."""
        tail = self._tail
        if not tail:  # the usual case: nothing pending, no copy of the block
            cut = block.rfind(_END)
            if cut < 0:
                tail += block
                self._check_tail()
                return b""
            ready = block[: cut + 2]
            if cut + 2 < len(block):
                tail += block[cut + 2 :]
                self._check_tail()
        else:
            start = len(tail) - 1  # a blank line may straddle the two blocks
            tail += block
            cut = tail.rfind(_END, start)
            if cut < 0:
                self._check_tail()
                return b""
            ready = bytes(tail[: cut + 2])
            del tail[: cut + 2]
            self._check_tail()
        if len(ready) > self.max_event_bytes:
            self._check_events(ready)
        return ready

    def rest(self) -> bytes:
        """What is left after the last blank line (at the stream's end: a last event
        the upstream did not terminate, or nothing)."""
        rest = bytes(self._tail)
        self._tail.clear()
        return rest

    def _check_tail(self) -> None:
        if len(self._tail) > self.max_event_bytes:
            self._tail.clear()
            raise event_too_large(self.max_event_bytes)

    def _check_events(self, ready: bytes) -> None:
        """Raise when one of the events in ``ready`` is over the limit (linear scan)."""
        start = 0
        while start < len(ready):
            end = ready.find(_END, start)
            end = len(ready) if end < 0 else end
            if end - start > self.max_event_bytes:
                raise event_too_large(self.max_event_bytes)
            start = end + 2
