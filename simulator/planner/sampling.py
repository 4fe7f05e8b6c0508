"""Draws from the workload file's distributions with one seeded generator."""

from __future__ import annotations

import math
import random

from simulator.planner.schema import Constant, Exponential, LogNormal, Quantity, Uniform


def draw(rng: random.Random, quantity: Quantity) -> float:
    """One draw of ``quantity`` (a constant number or a distribution), clamped."""
    if isinstance(quantity, int | float):
        return float(quantity)
    if isinstance(quantity, Constant):
        value = quantity.value
    elif isinstance(quantity, Exponential):
        value = rng.expovariate(1.0 / quantity.mean)
    elif isinstance(quantity, Uniform):
        value = rng.uniform(quantity.low, quantity.high)
    elif isinstance(quantity, LogNormal):
        if quantity.cv == 0:
            value = quantity.mean
        else:
            sigma2 = math.log1p(quantity.cv**2)
            value = rng.lognormvariate(math.log(quantity.mean) - sigma2 / 2, math.sqrt(sigma2))
    else:  # pragma: no cover - the schema admits nothing else
        raise TypeError(f"not a distribution: {quantity!r}")
    if quantity.min is not None:
        value = max(quantity.min, value)
    if quantity.max is not None:
        value = min(quantity.max, value)
    return value


def draw_int(rng: random.Random, quantity: Quantity, minimum: int = 0) -> int:
    """A draw rounded to an integer, at least ``minimum``."""
    return max(minimum, round(draw(rng, quantity)))


def mean_of(quantity: Quantity) -> float:
    """The (unclamped) mean of ``quantity``, for estimates."""
    if isinstance(quantity, int | float):
        return float(quantity)
    if isinstance(quantity, Constant):
        return quantity.value
    if isinstance(quantity, Uniform):
        return (quantity.low + quantity.high) / 2
    return quantity.mean
