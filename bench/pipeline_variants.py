"""The gateway configurations :mod:`bench.pipeline_costs` compares, and the differences
it reports.

Each variant is one gateway configuration:

- **A** ``auth: {mode: none}``, no price book, ``metering.durable_before_response:
  false``: the baseline, authentication and limits switched off (metering cannot be
  switched off; its cost is measured separately by D and E);
- **B** key authentication: a tenant and a key made through the admin API, the key
  without limits or budgets;
- **C** B, the key with rpm, tpm and max_concurrent limits and a daily budget, all
  too high ever to refuse (one ``EVALSHA`` admission, settlement in the background);
- **D** C plus a price book and ``metering.durable_before_response: true`` (the
  response waits for the usage record's ``XADD``);
- **E** C plus a price book, ``durable_before_response: false``.
- **F** C plus a price book, ``metering.journal: true`` (the record is written to the
  local journal before the response finishes and appended to the stream after).
- **G** C with ``limits.speculate: false``: the admission's answer is awaited before the
  request is dispatched (C dispatches to the pool while the admission is in flight,
  see ``gateway/speculation.py``).
- **H** F with ``limits.speculate: false``.
- **P** A plus the price book (metering prices every request; no auth, no limits), and
  **Q** P with the journal: the full pipeline with authentication and limits switched
  off, the baselines of "authentication + limits, full pipeline" (E − P, F − Q).
- **X**, **Y**, **Z**: C, E and F for a key without a budget. Y − X and Z − X are what
  metering itself adds; E − Y is what pricing the budget's reservation adds to the
  limits (with a price book the reservation is no longer zero, so the admission and
  settlement scripts update budget counters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.gateway_overhead import MODEL
from bench.pipeline_report import Comparison

TARGET_AUTH_LIMITS_US = 150.0
TARGET_METERING_US = 50.0

NO_LIMITS: dict[str, Any] = {}
HIGH_LIMITS: dict[str, Any] = {
    "limits": {"rpm": 10_000_000, "tpm": 10_000_000_000, "max_concurrent": 100_000},
    "budgets": {"daily_usd": "10000000"},
}
NO_BUDGET_LIMITS: dict[str, Any] = {"limits": HIGH_LIMITS["limits"]}
PRICE_BOOK: dict[str, Any] = {
    "books": [
        {
            "name": "bench",
            "effective_from": "2020-01-01T00:00:00Z",
            "rates": [
                {"id": "default", "input_per_million": "0.50", "output_per_million": "1.50"},
                {
                    "id": "bench-model",
                    "model": MODEL,
                    "input_per_million": "0.20",
                    "cached_input_per_million": "0.05",
                    "output_per_million": "0.60",
                    "per_request": "0.0001",
                },
            ],
        }
    ]
}


@dataclass(frozen=True)
class Variant:
    """One gateway configuration under test."""

    name: str
    label: str
    key_auth: bool
    key_body: dict[str, Any]
    pricing: bool
    durable: bool
    journal: bool = False
    #: ``limits.speculate``: dispatch while the admission is in flight (the default).
    speculate: bool = True


VARIANTS: tuple[Variant, ...] = (
    Variant("A", "auth off, no limits, metering non-durable (baseline)", False, {}, False, False),
    Variant("B", "key auth (admin-API key, no limits)", True, NO_LIMITS, False, False),
    Variant("C", "key auth + Redis limits and daily budget", True, HIGH_LIMITS, False, False),
    Variant("D", "C + price book, metering durable (awaited XADD)", True, HIGH_LIMITS, True, True),
    Variant("E", "C + price book, metering non-durable", True, HIGH_LIMITS, True, False),
    Variant(
        "F",
        "C + price book, metering journal (local write before the response)",
        True,
        HIGH_LIMITS,
        True,
        False,
        journal=True,
    ),
    Variant(
        "G",
        "C with limits.speculate off (the admission answers before dispatch)",
        True,
        HIGH_LIMITS,
        False,
        False,
        speculate=False,
    ),
    Variant(
        "P",
        "A + price book (auth and limits off, full metering, non-durable)",
        False,
        {},
        True,
        False,
    ),
    Variant("Q", "P with the journal", False, {}, True, False, journal=True),
    Variant("X", "C without the budget", True, NO_BUDGET_LIMITS, False, False),
    Variant("Y", "E without the budget", True, NO_BUDGET_LIMITS, True, False),
    Variant("Z", "F without the budget", True, NO_BUDGET_LIMITS, True, False, journal=True),
    Variant(
        "H",
        "F with limits.speculate off",
        True,
        HIGH_LIMITS,
        True,
        False,
        journal=True,
        speculate=False,
    ),
)

#: (label, variant, baseline, target in µs or None): the differences reported.
COMPARISONS: tuple[Comparison, ...] = (
    ("authentication", "B", "A", None),
    ("authentication + limits", "C", "A", TARGET_AUTH_LIMITS_US),
    ("limits alone", "C", "B", None),
    ("authentication + limits, admission awaited before dispatch", "G", "A", None),
    ("what speculation saves", "G", "C", None),
    ("what speculation saves, with metering (journal + pricing)", "H", "F", None),
    (
        "authentication + limits, full pipeline (priced budget), non-durable",
        "E",
        "P",
        TARGET_AUTH_LIMITS_US,
    ),
    (
        "authentication + limits, full pipeline (priced budget), journal",
        "F",
        "Q",
        TARGET_AUTH_LIMITS_US,
    ),
    ("metering, non-durable + pricing, key without a budget", "Y", "X", TARGET_METERING_US),
    ("metering, journal + pricing, key without a budget", "Z", "X", TARGET_METERING_US),
    ("a priced budget's reservation (limits), non-durable", "E", "Y", None),
    ("metering, durable (awaited XADD) + pricing", "D", "C", TARGET_METERING_US),
    ("metering, non-durable + pricing", "E", "C", TARGET_METERING_US),
    ("metering, journal + pricing", "F", "C", TARGET_METERING_US),
)
