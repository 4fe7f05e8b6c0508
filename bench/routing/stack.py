"""The processes under test: emulated workers, Tollway gateways, SGLang's router.

Workers are ``python -m simulator emulate`` processes; frontends are
``python -m gateway serve`` (one pool of the workers, the policy under test)
or ``python -m sglang_router.launch_router``. Every process is started
through :class:`bench.processes.Children`, pinned to a core and stopped on exit.
Between runs the workers' prefix caches are flushed and their Prometheus
counters read, so each run reports deltas.
"""

from __future__ import annotations

import importlib.util
import secrets
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.processes import Children, free_port, http_get, python
from gateway.auth import hash_key

MODEL = "llama-3.1-8b-instruct"
PUBLIC_MODEL = "agent"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How each emulated worker is launched."""

    count: int
    max_total_tokens: int
    speed: float
    cpu: int | None


def start_workers(children: Children, spec: WorkerSpec, tag: str) -> list[str]:
    """Start ``spec.count`` emulated H100 workers; returns their base URLs once healthy."""
    urls = []
    procs = []
    for index in range(spec.count):
        port = free_port()
        name = f"worker-{tag}-{index}"
        argv = [
            python(),
            "-m",
            "simulator",
            "emulate",
            "--gpu",
            "h100",
            "--model",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--speed",
            str(spec.speed),
            "--max-total-tokens",
            str(spec.max_total_tokens),
            "--seed",
            str(index),
        ]
        procs.append((name, children.start(name, argv, cpu=spec.cpu)))
        urls.append(f"http://127.0.0.1:{port}")
    for (name, proc), url in zip(procs, urls, strict=True):
        children.wait_ready(name, url + "/health", proc=proc)
    return urls


def _post(url: str, timeout: float = 5.0) -> int:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def flush_caches(workers: list[str], timeout_s: float = 30.0) -> None:
    """``POST /flush_cache`` on every worker, retrying while one is still busy."""
    deadline = time.monotonic() + timeout_s
    for url in workers:
        while _post(url + "/flush_cache") != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} refused /flush_cache for {timeout_s}s (still busy?)")
            time.sleep(0.2)


def counters(workers: list[str]) -> dict[str, tuple[float, float]]:
    """Per worker: (``sglang:cached_tokens_total``, ``sglang:prompt_tokens_total``)."""
    out = {}
    for url in workers:
        status, body = http_get(url + "/metrics", timeout=5.0)
        if status != 200:
            raise RuntimeError(f"{url}/metrics answered {status}")
        cached = prompt = 0.0
        for line in body.decode().splitlines():
            if line.startswith("sglang:cached_tokens_total"):
                cached += float(line.rsplit(" ", 1)[1])
            elif line.startswith("sglang:prompt_tokens_total"):
                prompt += float(line.rsplit(" ", 1)[1])
        out[url] = (cached, prompt)
    return out


@dataclass(frozen=True, slots=True)
class Frontend:
    """A frontend stack: how to start it, and what the client needs to reach it."""

    label: str
    kind: str  # "tollway" or "sglang-router"
    policy: str
    replicas: int
    session_header: bool
    #: Extra keys of the gateway's pool entry (diagnostic variants only).
    pool_options: tuple[tuple[str, object], ...] = ()
    #: Extra command-line flags of SGLang's router (diagnostic variants only).
    router_args: tuple[str, ...] = ()


class Frontends:
    """Starts the frontends of one run and stops them after it."""

    def __init__(self, children: Children, workers: list[str], cpu: int | None) -> None:
        self.children = children
        self.workers = workers
        self.cpu = cpu
        self.api_key = "tw-bench-" + secrets.token_hex(16)
        self._dir = Path(tempfile.mkdtemp(prefix="tollway-bench-routing-"))
        self._count = 0
        self._procs: list[subprocess.Popen[bytes]] = []

    def _config(self, frontend: Frontend) -> Path:
        config = {
            "auth": {
                "keys": [{"tenant": "bench", "name": "bench", "key_sha256": hash_key(self.api_key)}]
            },
            "pools": {
                "h100": {
                    "gpu": "h100",
                    "model": {"name": MODEL},
                    "workers": self.workers,
                    "policy": frontend.policy,
                    **dict(frontend.pool_options),
                }
            },
            "models": {PUBLIC_MODEL: {"route": "pool:h100"}},
        }
        path = self._dir / f"tollway-{self._count}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, frontend: Frontend) -> list[str]:
        """Start the frontend's replicas; returns their base URLs once ready."""
        urls = []
        for _ in range(frontend.replicas):
            self._count += 1
            name = f"{frontend.kind}-{frontend.policy}-{self._count}"
            port = free_port()
            if frontend.kind == "tollway":
                data = self._dir / f"data-{self._count}"
                argv = [
                    python(),
                    "-m",
                    "gateway",
                    "serve",
                    "--config",
                    str(self._config(frontend)),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ]
                proc = self.children.start(
                    name, argv, cpu=self.cpu, env={"TOLLWAY_DATA_DIR": str(data)}
                )
                url = f"http://127.0.0.1:{port}"
                self._procs.append(proc)
                self.children.wait_ready(name, url + "/readyz", timeout=60, proc=proc)
            else:
                argv = [
                    python(),
                    "-m",
                    "sglang_router.launch_router",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--worker-urls",
                    *self.workers,
                    "--policy",
                    frontend.policy,
                    "--prometheus-host",
                    "127.0.0.1",
                    "--prometheus-port",
                    str(free_port()),
                    "--log-level",
                    "warn",
                    *frontend.router_args,
                ]
                # The router looks up a tokenizer for the workers' model on start; keep
                # that lookup on the loopback (it fails, and the router routes by text).
                env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}
                proc = self.children.start(name, argv, cpu=self.cpu, env=env)
                self._procs.append(proc)
                url = f"http://127.0.0.1:{port}"
                self.children.wait_ready(name, url + "/health", timeout=60, proc=proc)
            urls.append(url)
        return urls

    def stop(self) -> None:
        """Stop every frontend process (the workers stay)."""
        while self._procs:
            self.children.stop(self._procs.pop())


def sglang_router_version() -> str | None:
    """The installed ``sglang-router`` version, or None when it is not installed."""
    if importlib.util.find_spec("sglang_router") is None:
        return None
    from importlib import metadata

    try:
        return metadata.version("sglang-router")
    except metadata.PackageNotFoundError:
        return "unknown"
