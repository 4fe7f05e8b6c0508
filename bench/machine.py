"""What a benchmark ran on: cores, CPU model, load, Python and package versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

PACKAGES = (
    "uvloop",
    "httptools",
    "uvicorn",
    "granian",
    "starlette",
    "fastapi",
    "orjson",
    "aiohttp",
    "httpx",
    "httpcore",
)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def wrk_version() -> str | None:
    """``wrk -v``'s first line, or None when wrk is not installed."""
    if shutil.which("wrk") is None:
        return None
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else "wrk"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that matter to the hot path."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def load_average() -> str:
    """The 1/5/15-minute load average: other work on the machine skews results."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def describe() -> str:
    """One markdown paragraph describing the machine and the software."""
    packages = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    wrk = wrk_version() or "not installed"
    return (
        f"`nproc` {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; load generator: {wrk}; "
        f"packages: {packages}; load average at start: {load_average()}."
    )
