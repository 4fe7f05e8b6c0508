"""Profiling a gateway variant with py-spy: where its CPU time goes, per request.

Used by ``python -m bench.pipeline_costs --profile``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from bench.loadgen import Load, Target, run
from bench.processes import python

LOAD_CPU = 1


_OWN_CODE = ("gateway/", "billing/", "tollway/", "backends/", "policies/")


def profile(
    name: str,
    pid: int,
    target: Target,
    seconds: float,
    rate: int,
    out: Path,
    connections: int,
) -> tuple[Path, int]:
    """py-spy (raw, on-CPU samples) on the gateway under load; (file, requests)."""
    py_spy = Path(python()).with_name("py-spy")
    if not py_spy.exists() and shutil.which("py-spy") is None:
        raise RuntimeError("py-spy is not installed in the virtualenv")
    binary = str(py_spy) if py_spy.exists() else "py-spy"
    raw = out / f"profile-{name}-c{connections}.txt"
    run(target, Load(connections, 2.0, 0.0), cpu=LOAD_CPU)
    spy = subprocess.Popen(
        [binary, "record", "-p", str(pid), "-f", "raw", "-r", str(rate)]
        + ["-d", str(round(seconds + 2)), "-o", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)
        sample = run(target, Load(connections, seconds, 0.0), cpu=LOAD_CPU)
        _, err = spy.communicate(timeout=seconds + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if not raw.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
    return raw, sample.requests


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (path/to/file.py)``, paths shortened."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        for own in _OWN_CODE:
            if own in path:
                path = own + path.split(own, 1)[1]
                break
    return f"{name} ({path})"


def summarize_profile(raw: Path, rate: int, seconds: float, requests: int) -> dict[str, float]:
    """Inclusive µs per request by function (non-idle samples only)."""
    per_request = 1e6 / rate / requests if requests else 0.0
    inclusive: dict[str, float] = defaultdict(float)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        seen = set()
        for frame in frames[1:]:  # the first is the thread or process
            key = _frame_name(frame)
            if key not in seen:
                seen.add(key)
                inclusive[key] += int(count) * per_request
    return dict(inclusive)


# --- report ------------------------------------------------------------------------------


def profile_report(profiles: dict[str, dict[str, float]], baseline: str | None, top: int) -> str:
    """The functions that take the most time per request, per profiled variant."""
    lines = []
    for name, inclusive in profiles.items():
        rows = sorted(
            (
                (k, v)
                for k, v in inclusive.items()
                if any(o in k for o in _OWN_CODE)
                or "redis" in k
                or "sqlalchemy" in k
                or "aiosqlite" in k
            ),
            key=lambda kv: -kv[1],
        )[:top]
        head = f"### Profile of {name}: inclusive µs per request (py-spy, on-CPU samples)"
        lines += [head, "", "| function | µs/request |"]
        if baseline and baseline in profiles and baseline != name:
            lines[-1] = f"| function | µs/request | vs {baseline} |"
            lines.append("| --- | ---: | ---: |")
            for k, v in rows:
                lines.append(f"| `{k}` | {v:.1f} | {v - profiles[baseline].get(k, 0.0):+.1f} |")
        else:
            lines.append("| --- | ---: |")
            for k, v in rows:
                lines.append(f"| `{k}` | {v:.1f} |")
        lines.append("")
    return "\n".join(lines)
