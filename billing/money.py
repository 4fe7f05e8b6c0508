"""Money: integer micro-USD and its decimal USD renderings.

Every amount Tollway stores is an integer number of micro-USD (one millionth of a US
dollar). Prices are decimal strings, computed with :class:`~decimal.Decimal`, and
rounded half-even to micro-USD exactly once per usage record.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

MICROS_PER_USD = 1_000_000
_MICRO = Decimal(MICROS_PER_USD)


def usd_to_micros(amount: Decimal) -> int:
    """Round a USD amount half-even to whole micro-USD (the one rounding of a record)."""
    return int((amount * _MICRO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def micros_to_decimal(micros: int) -> Decimal:
    """A micro-USD amount as an exact USD :class:`Decimal` (six decimal places)."""
    return Decimal(micros).scaleb(-6)


def micros_to_usd_str(micros: int) -> str:
    """Render micro-USD as a fixed-point USD string: ``1234`` -> ``"0.001234"``.

    This is the value of the ``x-tollway-cost-usd`` header and of ``cost_usd`` in the
    usage API; it is exact (no float rounding).
    """
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{frac:06d}"


def micros_to_usd_text(micros: int) -> str:
    """Micro-USD for people: at least cents, no trailing zeros (``12_500`` -> ``"0.0125"``)."""
    exact = micros_to_usd_str(micros).rstrip("0")
    whole, _, frac = exact.partition(".")
    return f"{whole}.{frac:0<2}"


def micros_to_usd_float(micros: int) -> float:
    """Render micro-USD as a JSON number in USD (``usage.cost``, as OpenRouter does).

    A float has 15-16 significant digits, so any amount under a billion USD renders
    exactly to the micro-dollar.
    """
    return micros / MICROS_PER_USD
