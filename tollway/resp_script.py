"""A Lua script on Redis, run by its SHA1 through :class:`~tollway.resp.RespClient`.

``EVALSHA`` sends the script's digest, not its source; when the server lacks the
script (a restart, a flush, a failover) it answers ``NOSCRIPT``, and the script
is loaded (``SCRIPT LOAD``) and run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from tollway.resp import Arg, RespClient, RespError


class Script:
    """A Lua script run by ``EVALSHA``; loaded (``SCRIPT LOAD``) when the server lacks
    it (a restart, a flush, a failover) and run again."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self,
        client: RespClient,
        keys: Sequence[Arg],
        args: Sequence[Arg] = (),
        *,
        defer_s: float = 0.0,
        urgent: bool = False,
    ) -> Any:
        """The script's reply (raises :class:`RespError` on an error reply)."""
        try:
            return await client.execute(
                "EVALSHA", self.sha, len(keys), *keys, *args, defer_s=defer_s, urgent=urgent
            )
        except RespError as exc:
            if exc.kind != "NOSCRIPT":
                raise
        await client.execute("SCRIPT", "LOAD", self.source)
        return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
