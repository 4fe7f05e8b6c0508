"""What the pipeline benchmarks need around a gateway: its admin API and a private Redis.

Used by ``bench.pipeline_costs`` and ``bench.peers``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from typing import Any

import redis

from bench.processes import Children, free_port

REDIS_CPU = 1
USAGE_STREAM_PREFIX = "tollway:{usage}:"  # metering's stream keys under the default prefix
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_call(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One JSON HTTP call on loopback; its status and body (errors included, not raised)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body else None)
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def create_key(port: int, admin_token: str, tenant: str, key_body: dict[str, Any]) -> str:
    """A tenant and one key through the admin API; returns the key's secret."""
    base = f"http://127.0.0.1:{port}/admin/v1"
    status, body = http_call("POST", f"{base}/tenants", {"name": tenant}, admin_token)
    if status != 201:
        raise RuntimeError(f"creating the tenant: {status} {body[:300]!r}")
    tenant_id = json.loads(body)["id"]
    key_request = {"name": f"{tenant}-key", **key_body}
    status, body = http_call("POST", f"{base}/tenants/{tenant_id}/keys", key_request, admin_token)
    if status != 201:
        raise RuntimeError(f"creating the key: {status} {body[:300]!r}")
    return str(json.loads(body)["key"])


def redis_errors(port: int) -> float:
    """``tollway_redis_errors_total`` from the gateway's /metrics (0 when absent)."""
    status, body = http_call("GET", f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return float("nan")
    for line in body.decode().splitlines():
        if line.startswith("tollway_redis_errors_total"):
            return float(line.split()[-1])
    return 0.0


class RedisScratch:
    """The logical Redis database the gateways use: checked, trimmed, cleaned."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(url)
        existing = [*self.client.scan_iter(match=f"{USAGE_STREAM_PREFIX}*", count=1000)]
        if existing:
            raise RuntimeError(
                f"{url} already holds usage-stream keys ({existing[0]!r}); another gateway may "
                "use this database: pick another one with --redis-url"
            )

    def trim_usage(self) -> None:
        """Empty the usage streams (no writer reads them), keeping any consumer group."""
        for key in self.client.scan_iter(match=f"{USAGE_STREAM_PREFIX}*", count=1000):
            if self.client.type(key) == b"stream":
                self.client.xtrim(key, maxlen=0, approximate=False)

    def cleanup(self) -> int:
        """Delete every key this run made; return how many."""
        keys = [
            *self.client.scan_iter(match=f"{self.prefix}*", count=1000),
            *self.client.scan_iter(match=f"{USAGE_STREAM_PREFIX}*", count=1000),
        ]
        if keys:
            self.client.delete(*keys)
        self.client.close()
        return len(keys)


def start_redis(children: Children) -> str:
    """A private redis-server (no persistence) pinned to its own core; returns its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; pass --redis-url")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(children.log_dir)]
    proc = children.start("redis", argv, cpu=REDIS_CPU)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = children.log_tail("redis")
                raise RuntimeError(f"redis-server did not start:\n{tail}") from exc
            time.sleep(0.05)
    client.close()
    return f"redis://127.0.0.1:{port}/0"
