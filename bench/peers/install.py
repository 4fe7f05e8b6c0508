"""Installing the peers next to the repository, apart from the project's virtualenv.

Everything goes under ``.bench-peers/`` at the repository root (git-ignored):

- ``litellm-venv/``: a virtualenv of its own with LiteLLM's proxy. ``litellm[proxy]``
  is tried first; when its extra cannot be resolved (it pins companion packages,
  ``litellm-proxy``, ``litellm-proxy-extras`` and ``litellm-enterprise``, at versions the
  index may not carry), LiteLLM itself is installed and then every other requirement of
  its ``proxy`` extra, read from the installed metadata. The companions only serve the
  database, the admin UI and enterprise hooks, none of which the benchmark uses.
- ``portkey/``: ``npm install`` of Portkey's gateway. ``@hono/node-server`` is pinned to
  1.14.1 with an npm override: from 1.14.2 on, its lightweight ``Response`` hands back
  a fetched response's immutable headers, and the gateway's attempt to add its own
  headers then fails every streamed chat completion with ``TypeError: immutable``
  (Portkey-AI/gateway#1389).

Versions known to be compromised are refused whatever is asked for.

``setup()`` is idempotent: a peer already installed at the asked-for version is left
alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.machine import wrk_version

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = ROOT / ".bench-peers"
LITELLM_VENV = PEERS_DIR / "litellm-venv"
PORTKEY_DIR = PEERS_DIR / "portkey"
PORTKEY_PACKAGE = "@portkey-ai/gateway"
PORTKEY_ENTRY = (
    PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
)

LITELLM_VERSION = "1.110.2"
PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER_VERSION = "1.14.1"
#: Releases of litellm published with malicious code; never installed.
COMPROMISED_LITELLM = frozenset({"1.82.7", "1.82.8", "1.107.0"})
#: Companions of the ``proxy`` extra the proxy runs without (database, UI, enterprise).
LITELLM_OPTIONAL_COMPANIONS = frozenset(
    {"litellm-proxy", "litellm-proxy-extras", "litellm-enterprise"}
)


@dataclass(frozen=True)
class SetupResult:
    """What ``setup`` did for one peer."""

    peer: str
    ok: bool
    detail: str


def litellm_executable() -> Path:
    """The ``litellm`` command of the peers' virtualenv."""
    return LITELLM_VENV / "bin" / "litellm"


def litellm_python() -> Path:
    """The interpreter of the peers' virtualenv."""
    return LITELLM_VENV / "bin" / "python"


def _site_packages() -> list[str]:
    return [str(p) for p in (LITELLM_VENV / "lib").glob("python*/site-packages")]


def installed_litellm() -> str | None:
    """LiteLLM's version in the peers' virtualenv, or None."""
    if not litellm_executable().exists():
        return None
    for dist in metadata.distributions(name="litellm", path=_site_packages()):
        return dist.version
    return None


def installed_portkey() -> str | None:
    """Portkey's gateway version under ``.bench-peers/portkey``, or None."""
    manifest = PORTKEY_ENTRY.parent.parent / "package.json"
    if not manifest.exists() or not PORTKEY_ENTRY.exists():
        return None
    return str(json.loads(manifest.read_text())["version"])


def installed_node_package(name: str) -> str | None:
    """Version of an npm package under ``.bench-peers/portkey/node_modules``, or None."""
    manifest = PORTKEY_DIR / "node_modules" / name / "package.json"
    return str(json.loads(manifest.read_text())["version"]) if manifest.exists() else None


def node_version() -> str | None:
    """``node --version`` without the ``v``, or None when node is missing."""
    if shutil.which("node") is None:
        return None
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip().lstrip("v") or None


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 1200) -> None:
    print("+ " + " ".join(argv), file=sys.stderr, flush=True)
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{tail}")


def proxy_requirements() -> list[str]:
    """The ``proxy`` extra of the installed LiteLLM, minus the optional companions."""
    from packaging.requirements import Requirement

    dist = next(iter(metadata.distributions(name="litellm", path=_site_packages())), None)
    if dist is None:
        raise RuntimeError("litellm is not installed in the peers' virtualenv")
    requirements = []
    for line in dist.requires or []:
        requirement = Requirement(line)
        marker = requirement.marker
        # Only what the extra adds: the marker holds with extra "proxy" and not without it.
        if marker is None or not marker.evaluate({"extra": "proxy"}):
            continue
        if marker.evaluate({"extra": ""}):
            continue
        if requirement.name in LITELLM_OPTIONAL_COMPANIONS:
            continue
        requirement.marker = None
        requirements.append(str(requirement))
    return requirements


def setup_litellm(version: str = LITELLM_VERSION) -> SetupResult:
    """LiteLLM's proxy in ``.bench-peers/litellm-venv``."""
    if version in COMPROMISED_LITELLM:
        return SetupResult("litellm", False, f"refusing litellm {version}: a compromised release")
    if installed_litellm() == version and (LITELLM_VENV / ".proxy-ready").exists():
        return SetupResult("litellm", True, f"litellm {version} already installed")
    if not litellm_python().exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(LITELLM_VENV)
    pip = [str(litellm_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    note = "litellm[proxy]"
    try:
        _run([*pip, f"litellm[proxy]=={version}"])
    except RuntimeError as exc:
        reason = str(exc).splitlines()[-1]
        print(
            f"litellm[proxy]=={version} did not resolve ({reason}); installing litellm, then "
            "the requirements its proxy extra adds",
            file=sys.stderr,
        )
        _run([*pip, f"litellm=={version}"])
        _run([*pip, *proxy_requirements()])
        note = "litellm + its proxy extra without " + ", ".join(sorted(LITELLM_OPTIONAL_COMPANIONS))
    if installed_litellm() != version:
        return SetupResult(
            "litellm", False, f"litellm {installed_litellm()} installed, not {version}"
        )
    (LITELLM_VENV / ".proxy-ready").write_text(note + "\n")
    return SetupResult("litellm", True, f"litellm {version} installed ({note})")


def setup_portkey(version: str = PORTKEY_VERSION) -> SetupResult:
    """Portkey's gateway in ``.bench-peers/portkey`` (npm)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        return SetupResult(
            "portkey", False, "node and npm are required (Debian: apt-get install -y nodejs npm)"
        )
    if (
        installed_portkey() == version
        and installed_node_package("@hono/node-server") == HONO_NODE_SERVER_VERSION
    ):
        return SetupResult("portkey", True, f"{PORTKEY_PACKAGE} {version} already installed")
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "bench-peers-portkey",
        "private": True,
        "dependencies": {PORTKEY_PACKAGE: version},
        "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION},
    }
    (PORTKEY_DIR / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    _run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PORTKEY_DIR)
    if installed_portkey() != version:
        return SetupResult(
            "portkey", False, f"{PORTKEY_PACKAGE} {installed_portkey()} installed, not {version}"
        )
    return SetupResult(
        "portkey",
        True,
        f"{PORTKEY_PACKAGE} {version} installed "
        f"(@hono/node-server pinned to {HONO_NODE_SERVER_VERSION})",
    )


def setup() -> list[SetupResult]:
    """Install both peers; a failure of one does not stop the other."""
    PEERS_DIR.mkdir(exist_ok=True)
    results = []
    for step in (setup_litellm, setup_portkey):
        try:
            results.append(step())
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            results.append(SetupResult(step.__name__.removeprefix("setup_"), False, str(exc)))
    return results


def _first_line(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else None


def describe_versions() -> str:
    """One line naming every piece of software the comparison depends on."""
    try:
        tollway = metadata.version("tollway")
    except metadata.PackageNotFoundError:
        tollway = "?"
    commit = _first_line(["git", "rev-parse", "--short", "HEAD"]) or "?"
    dirty = _first_line(["git", "status", "--porcelain", "--untracked-files=no"])
    tree = f"commit {commit}{' with uncommitted changes' if dirty else ''}"
    wrk = wrk_version()
    redis = _first_line(["redis-server", "--version"])
    parts = [
        f"Tollway {tollway} ({tree})",
        f"LiteLLM {installed_litellm() or 'not installed'}",
        f"{PORTKEY_PACKAGE} {installed_portkey() or 'not installed'} "
        f"(@hono/node-server {installed_node_package('@hono/node-server') or '-'}, "
        f"hono {installed_node_package('hono') or '-'})",
        f"node {node_version() or 'not installed'}",
        f"Python {sys.version.split()[0]}",
        f"wrk {wrk.removeprefix('wrk ') if wrk else 'not installed'}",
        f"redis-server {redis.split()[2].removeprefix('v=') if redis else 'not installed'}",
    ]
    return "; ".join(parts) + "."
