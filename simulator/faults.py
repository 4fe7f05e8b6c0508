"""Runtime fault state of one emulator app (``POST /_emulator/faults``)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from typing import Any

from simulator.config import FaultConfig
from simulator.errors import bad_request


class Faults:
    """The current :class:`FaultConfig`, a seeded RNG and the death counter."""

    def __init__(
        self, config: FaultConfig, *, seed: int = 0, on_die: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self._on_die = on_die
        self.answered = 0
        self.dead = False

    def update(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Replace some fields (unknown keys or bad values are a 400); return the result."""
        names = {f.name for f in dataclasses.fields(FaultConfig)}
        unknown = sorted(set(changes) - names - {"seed"})
        if unknown:
            raise bad_request(f"unknown fault field(s): {', '.join(unknown)}")
        fields = {k: v for k, v in changes.items() if k in names}
        try:
            self.config = dataclasses.replace(self.config, **fields)
        except (TypeError, ValueError) as exc:
            raise bad_request(str(exc)) from exc
        if "seed" in changes:
            self._rng = random.Random(int(changes["seed"]))
        return self.config

    def should_fail(self) -> bool:
        """Draw whether this request is answered with an injected 500."""
        rate = self.config.error_rate
        return rate > 0 and self._rng.random() < rate

    def request_answered(self) -> None:
        """Count one answered model request; die when ``die_after`` is reached."""
        self.answered += 1
        limit = self.config.die_after
        if limit is not None and self.answered >= limit and not self.dead:
            self.dead = True
            if self._on_die is not None:
                self._on_die()

    def as_dict(self) -> dict[str, Any]:
        """The current knobs plus counters, for the fault endpoint's answer."""
        return {**dataclasses.asdict(self.config), "answered": self.answered, "dead": self.dead}
