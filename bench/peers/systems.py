"""The systems compared: the canned upstream itself, LiteLLM's proxy, Portkey's gateway.

Each is started through ``Children`` (so always stopped), the system under test pinned
to core 0, and described by a ``System``: where it listens, what a client must send
(authorization, extra headers, whether the body asks for the stream's usage chunk) and
how it was configured, in words for the report. Tollway, with its Redis and ledger
writer, is started by ``bench.peers.tollway``.

``check_answers`` sends one JSON and one streamed request through a system and fails
unless both carry the canned upstream's answer, so no figure is ever measured on error
pages.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.gateway_overhead import MODEL, request_body
from bench.loadgen import Target
from bench.peers import install
from bench.processes import Children, free_port, python

SUT_CPU = 0  # the system under test
SIDE_CPU = 1  # upstream, Redis, load generator
ROOT = Path(__file__).resolve().parents[2]
EXPECTED_CONTENT = "Hello from the canned upstream."
#: Variables a peer must not see: they would switch on a database or Redis of its own.
PEER_UNSET_ENV = ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "REDIS_CONNECTION_STRING")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class System:
    """A running system and how to call it."""

    name: str
    label: str
    port: int
    pid: int
    authorization: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: Whether client bodies ask for ``stream_options.include_usage``. Tollway asks the
    #: upstream itself; every other system gets it from the client, so the upstream
    #: sends the same bytes whichever system is in front of it.
    include_usage: bool = True
    settings: str = ""
    #: Helper processes of the system (Tollway's ledger writer), whose CPU is reported apart.
    helper_pids: tuple[int, ...] = field(default=())

    def body(self, stream: bool) -> bytes:
        """The request body this system gets."""
        return request_body(stream, include_usage=self.include_usage and stream)

    def target(self, stream: bool) -> Target:
        """The load generator's target for this system."""
        return Target(
            self.port, self.body(stream), authorization=self.authorization, headers=self.headers
        )


def _unset(argv: list[str], names: tuple[str, ...] = PEER_UNSET_ENV) -> list[str]:
    """``argv`` run under ``env -u NAME ...`` so that the child does not inherit ``names``."""
    prefix = ["env"]
    for name in names:
        prefix += ["-u", name]
    return [*prefix, *argv]


def start_upstream(children: Children) -> System:
    """``bench.upstream`` on the side core."""
    port = free_port()
    proc = children.start(
        "upstream", [python(), "-m", "bench.upstream", "--port", str(port)], cpu=SIDE_CPU, cwd=ROOT
    )
    children.wait_ready("upstream", f"http://127.0.0.1:{port}/health", proc=proc)
    return System(
        "direct",
        "upstream, direct",
        port,
        proc.pid,
        settings=f"`bench.upstream` (raw asyncio, uvloop), core {SIDE_CPU}",
    )


def litellm_config(upstream_port: int, master_key: str) -> dict[str, object]:
    """LiteLLM's proxy config: the bench model mapped to the upstream, a master key, no database."""
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "dummy",
                },
            }
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": master_key},
    }


def start_litellm(children: Children, upstream_port: int) -> System:
    """LiteLLM's proxy: one uvicorn worker on the system-under-test core, no database."""
    if install.installed_litellm() is None:
        raise RuntimeError("LiteLLM is not installed: run `python -m bench.peers setup`")
    master_key = "sk-bench-" + secrets.token_hex(16)
    config = children.log_dir / "litellm.yaml"
    config.write_text(yaml.safe_dump(litellm_config(upstream_port, master_key)))
    port = free_port()
    argv = [str(install.litellm_executable()), "--config", str(config), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--num_workers", "1"]
    proc = children.start(
        "litellm",
        _unset(argv),
        cpu=SUT_CPU,
        env={
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the model cost map
            "LITELLM_LOG": "ERROR",  # no per-request access log
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
        },
        cwd=children.log_dir,
    )
    children.wait_ready(
        "litellm", f"http://127.0.0.1:{port}/health/liveliness", timeout=120, proc=proc
    )
    return System(
        "litellm",
        "LiteLLM proxy",
        port,
        proc.pid,
        authorization=f"Bearer {master_key}",
        settings=(
            "`litellm --config litellm.yaml --host 127.0.0.1 --port P --num_workers 1` (uvicorn "
            "with uvloop and h11: the proxy extra does not install httptools), master key, no "
            "database, `LITELLM_LOCAL_MODEL_COST_MAP=True`, "
            f"`LITELLM_LOG=ERROR`, telemetry off; model `{MODEL}` -> `openai/{MODEL}` at the "
            "upstream's `/v1`"
        ),
    )


def start_portkey(children: Children, upstream_port: int) -> System:
    """Portkey's gateway (node) on the system-under-test core, headless."""
    if install.installed_portkey() is None:
        raise RuntimeError("Portkey's gateway is not installed: run `python -m bench.peers setup`")
    port = free_port()
    argv = ["node", str(install.PORTKEY_ENTRY), f"--port={port}", "--headless"]
    proc = children.start(
        "portkey",
        _unset(argv),
        cpu=SUT_CPU,
        env={"NODE_ENV": "production"},
        cwd=install.PORTKEY_DIR,
    )
    children.wait_ready("portkey", f"http://127.0.0.1:{port}/", timeout=60, proc=proc)
    custom_host = f"http://127.0.0.1:{upstream_port}/v1"
    return System(
        "portkey",
        "Portkey gateway",
        port,
        proc.pid,
        authorization="Bearer dummy",
        headers=(("x-portkey-provider", "openai"), ("x-portkey-custom-host", custom_host)),
        settings=(
            "`NODE_ENV=production node build/start-server.js --port=P --headless`; headers "
            "`x-portkey-provider: openai`, "
            "`x-portkey-custom-host: http://127.0.0.1:<upstream>/v1`, "
            "`Authorization: Bearer dummy` (Portkey has no key of its own to check)"
        ),
    )


def _post(system: System, stream: bool) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **dict(system.headers)}
    if system.authorization:
        headers["Authorization"] = system.authorization
    url = f"http://127.0.0.1:{system.port}/v1/chat/completions"
    request = urllib.request.Request(url, data=system.body(stream), headers=headers)
    try:
        with _OPENER.open(request, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stream_events(body: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, ``[DONE]`` included."""
    return [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]


def check_answers(system: System) -> int:
    """One JSON and one streamed answer must be the upstream's; returns SSE events per stream."""
    status, body = _post(system, stream=False)
    if status != 200:
        raise RuntimeError(f"{system.label}: JSON request answered {status}: {body[:400]!r}")
    answer = json.loads(body)
    content = answer.get("choices", [{}])[0].get("message", {}).get("content")
    if content != EXPECTED_CONTENT or not answer.get("usage"):
        raise RuntimeError(f"{system.label}: unexpected JSON answer: {body[:400]!r}")
    status, body = _post(system, stream=True)
    events = stream_events(body)
    if status != 200 or not events or events[-1] != b"[DONE]":
        raise RuntimeError(f"{system.label}: stream answered {status}: {body[-400:]!r}")
    pieces = []
    for event in events[:-1]:
        for choice in json.loads(event).get("choices", []):
            pieces.append(choice.get("delta", {}).get("content") or "")
    if "".join(pieces) != EXPECTED_CONTENT:
        raise RuntimeError(f"{system.label}: stream content {''.join(pieces)!r}: {body[:400]!r}")
    return len(events)
