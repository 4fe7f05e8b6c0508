"""Holding a response's head so that it leaves with the first part of its body."""

from __future__ import annotations

import asyncio
from typing import Any


class HeadHolder(asyncio.Transport):
    """The transport a request cycle writes through: its first write (a response's
    status line and headers) waits for the next one, or for the end of the event
    loop iteration, so that a response's head and body leave in one ``write`` (one
    syscall, one TCP segment, one wake-up of the client) instead of two.

    A request cycle only writes, closes and asks whether the transport is closing;
    flow control stays with the connection's own transport.
    """

    __slots__ = ("transport", "loop", "_held", "_first")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.transport = transport
        self.loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._first:
            self._first = False
            self._held = bytes(data)
            self.loop.call_soon(self.flush)
            return
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self.transport.write(data)

    def flush(self) -> None:
        """Write what is held (the end of the loop iteration, or a close)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)
