"""A request's hang-up signal: the server tells the app, without a task, that its client left.

An ASGI app learns that a client left by calling ``receive`` until it answers
``http.disconnect``; an app that must act on it while it is busy elsewhere (waiting
on an upstream, relaying a stream) needs a second task blocked in ``receive``. The
gateway's protocol (:class:`gateway.protocol.GatewayHttpProtocol`) offers a cheaper
way: each request's scope carries a :class:`HangUp` under
``scope["extensions"][EXTENSION]``, which the protocol fires when the request's
connection is lost or the protocol closes it under the request (the moments it marks
uvicorn's request cycle ``disconnected``). :mod:`gateway.sending` registers one
callback on it; a server that does not offer it (an in-process test transport) gets
the task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The key of ``scope["extensions"]`` that holds a request's :class:`HangUp`.
EXTENSION = "tollway.hang_up"


class HangUp:
    """One request's hang-up signal: at most one callback, called once when the client
    has left (with no response, or in the middle of one)."""

    __slots__ = ("gone", "_callback")

    def __init__(self) -> None:
        #: The client left (the request's cycle is disconnected).
        self.gone = False
        self._callback: Callable[[], None] | None = None

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the client hangs up; it replaces an earlier one. The
        caller checks :attr:`gone` first: a client gone already calls nothing."""
        self._callback = callback

    def clear(self) -> None:
        """Stop watching: the callback is not called."""
        self._callback = None

    def hang_up(self) -> None:
        """The client left (called by the protocol): call the callback, once."""
        if self.gone:
            return
        self.gone = True
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def install(scope: Any) -> HangUp:
    """Give a request's ``scope`` a fresh :class:`HangUp` (the server's side)."""
    hang_up = HangUp()
    extensions = scope.get("extensions")
    if extensions is None:
        extensions = scope["extensions"] = {}
    extensions[EXTENSION] = hang_up
    return hang_up


def hang_up_of(scope: Any) -> HangUp | None:
    """The request's :class:`HangUp`, or None where the server offers none."""
    extensions = scope.get("extensions")
    if not extensions:
        return None
    hang_up = extensions.get(EXTENSION)
    return hang_up if isinstance(hang_up, HangUp) else None
