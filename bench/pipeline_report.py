"""The results of ``bench.pipeline_costs``: measurements, their medians, the report.

Kept apart from the script that starts the gateways and drives the load, so the
report can be read (and tested) without them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import Sample

RESULTS = Path(__file__).with_name("pipeline_costs_RESULTS.md")
START_MARK = "<!-- pipeline-costs:start -->"
END_MARK = "<!-- pipeline-costs:end -->"

#: (label, variant, baseline, target in µs or None): one difference reported.
Comparison = tuple[str, str, str, float | None]


@dataclass(frozen=True)
class Measurement:
    """One load run against one gateway, with its CPU cost."""

    sample: Sample
    cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        """Gateway CPU time (all threads) per request served, in microseconds."""
        return self.cpu_s / self.sample.requests * 1e6 if self.sample.requests else float("nan")


@dataclass
class Results:
    """Measurements by (variant, connections), one per round."""

    runs: dict[tuple[str, int], list[Measurement]] = field(default_factory=dict)

    def add(self, variant: str, connections: int, m: Measurement) -> None:
        self.runs.setdefault((variant, connections), []).append(m)

    def series(
        self, variant: str, connections: int, what: Callable[[Measurement], float]
    ) -> list[float]:
        return [what(m) for m in self.runs[(variant, connections)]]

    def median(self, variant: str, connections: int, what: Callable[[Measurement], float]) -> float:
        return statistics.median(self.series(variant, connections, what))

    def paired(
        self, variant: str, base: str, connections: int, what: Callable[[Measurement], float]
    ) -> float:
        """Median over rounds of (variant − base), each pair measured in the same round."""
        a = self.series(variant, connections, what)
        b = self.series(base, connections, what)
        return statistics.median(x - y for x, y in zip(a, b, strict=True))

    def errors(self) -> int:
        return sum(m.sample.errors for ms in self.runs.values() for m in ms)


def p50_us(m: Measurement) -> float:
    return m.sample.p50_ms * 1000


def p99_us(m: Measurement) -> float:
    return m.sample.p99_ms * 1000


def cpu_us(m: Measurement) -> float:
    return m.cpu_us_per_request


def rps(m: Measurement) -> float:
    return m.sample.rps


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def render(
    results: Results,
    variants: Sequence[tuple[str, str]],
    comparisons: Sequence[Comparison],
    high: int,
    head: list[str],
    notes: list[str],
) -> str:
    """The markdown section: ``head`` (title, command, method, machine), then a row
    per variant (name, label), a row per comparison with its target, and ``notes``."""
    lines = [
        *head,
        "",
        f"Failed or non-2xx requests in all runs: {results.errors()}.",
        "",
        f"| variant | configuration | c=1 p50 µs | c=1 p99 µs | c={high} requests/s "
        f"| CPU µs/request, c={high} | CPU µs/request, c=1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label in variants:
        if (name, 1) not in results.runs:
            continue
        lines.append(
            f"| {name} | {label} | {_fmt(results.median(name, 1, p50_us))} "
            f"| {_fmt(results.median(name, 1, p99_us))} "
            f"| {_fmt(results.median(name, high, rps), 0)} "
            f"| {_fmt(results.median(name, high, cpu_us))} "
            f"| {_fmt(results.median(name, 1, cpu_us))} |"
        )
    lines += [
        "",
        "| what is added | difference | added p50 µs, c=1 | added p99 µs, c=1 "
        f"| added CPU µs/request, c={high} | target (p50) | per-round p50 differences µs |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    verdicts = []
    for label, name, base, target in comparisons:
        if (name, 1) not in results.runs or (base, 1) not in results.runs:
            continue
        added = results.paired(name, base, 1, p50_us)
        per_round = [
            x - y
            for x, y in zip(
                results.series(name, 1, p50_us), results.series(base, 1, p50_us), strict=True
            )
        ]
        verdict = "—"
        if target is not None:
            held = added <= target
            caveat = (
                f"; the rounds ({min(per_round):+.0f} to {max(per_round):+.0f} µs) fall on "
                "both sides of the target: not resolved by this run"
                if min(per_round) <= target < max(per_round)
                else ""
            )
            verdict = f"≤ {target:g}: {'**met**' if held else '**not met**'}"
            verdicts.append(
                f"- {label} ({name} − {base}): **{added:+.1f} µs** p50 at c=1 "
                f"(target ≤ {target:g} µs: {'met' if held else '**not met**'}{caveat})."
            )
        added_p99 = results.paired(name, base, 1, p99_us)
        added_cpu = results.paired(name, base, high, cpu_us)
        lines.append(
            f"| {label} | {name} − {base} | {added:+.1f} | {added_p99:+.1f} "
            f"| {added_cpu:+.1f} | {verdict} "
            f"| {', '.join(f'{d:+.0f}' for d in per_round)} |"
        )
    lines += ["", *verdicts]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write_results(section: str, path: Path = RESULTS) -> None:
    """Put ``section`` between the markers of ``path`` (the rest of the file stays)."""
    block = f"{START_MARK}\n{section}{END_MARK}"
    if not path.exists():
        path.write_text(f"# Pipeline costs: results\n\n{block}\n", encoding="utf-8")
        return
    text = path.read_text(encoding="utf-8")
    start, end = text.find(START_MARK), text.find(END_MARK)
    if start < 0 or end < start:
        raise RuntimeError(f"{path} has no {START_MARK} ... {END_MARK} markers")
    path.write_text(text[:start] + block + text[end + len(END_MARK) :], encoding="utf-8")
