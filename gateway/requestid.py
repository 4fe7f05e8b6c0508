"""Request ids: echo the client's ``x-request-id`` when valid, else mint one.

The dispatcher (:mod:`gateway.dispatch`) names every HTTP request once, puts the
id in the scope's state and adds the ``x-request-id`` header to the response.
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

from starlette.types import Scope

HEADER = b"x-request-id"
_ALLOWED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/+=")


def new_request_id() -> str:
    """A fresh request id (for code that runs outside the dispatcher)."""
    return "req_" + uuid.uuid4().hex


def request_id_of(scope: Scope) -> str | None:
    """The request id the dispatcher assigned, if any."""
    state: dict[str, Any] = scope.get("state") or {}
    rid = state.get("request_id")
    return rid if isinstance(rid, str) else None


class RequestIds:
    """Request ids: the client's when valid, else a process-unique fresh one.

    A random per-process prefix and a counter: unique across replicas without a
    syscall per request (``uuid4`` reads the OS's random source every time).
    """

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._prefix = "req_" + os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"

    def of(self, given: bytes | None) -> str:
        """The client's id (the header's value) when it is valid, else a fresh one."""
        if given is not None and 0 < len(given) <= self.max_length:
            if all(c in _ALLOWED for c in given):
                return given.decode("ascii")
        return self.new()
