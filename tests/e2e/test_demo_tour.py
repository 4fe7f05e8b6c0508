"""The demo as a tour: costs shown, a worker killed mid-demo comes back, a summary at the end."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.processes import free_port, metric_samples
from tests.e2e.test_demo import children_of
from tests.e2e.test_logs import Lines
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode().split("\0")


def worker_pids(demo: int, gpu: str) -> dict[int, int]:
    """Port → pid of the demo's emulated workers of one GPU kind."""
    found = {}
    for pid in children_of(demo):
        args = cmdline(pid)
        if "simulator" in args and gpu in args:
            found[int(args[args.index("--port") + 1])] = pid
    return found


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_worker_killed_mid_demo_comes_back_while_requests_succeed(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", str(port)]
        + ["--data-dir", str(tmp_path / "demo"), "--speed", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines = Lines(proc.stdout)
    try:
        banner: dict[str, str] = {}
        while "TOLLWAY_ADMIN_TOKEN" not in banner:
            line = lines.wait_for(lambda text: text.startswith("TOLLWAY_"), timeout_s=120)
            name, _, value = line.partition("=")
            banner[name] = value
        client = openai.OpenAI(
            base_url=banner["TOLLWAY_BASE_URL"], api_key=banner["TOLLWAY_API_KEY"], max_retries=0
        )

        def ask(n: int) -> openai.types.chat.ChatCompletion:
            raw = client.chat.completions.with_raw_response.create(
                model="agent-small",
                messages=[{"role": "user", "content": f"Hello number {n}!"}],
                max_tokens=8,
                extra_headers={"x-agent-type": "coordinator"},
            )
            assert float(raw.headers["x-tollway-cost-usd"]) > 0  # the demo's price book
            reply = raw.parse()
            assert reply.usage is not None and (reply.usage.model_extra or {})["cost"] > 0
            return reply

        ask(0)
        workers = worker_pids(proc.pid, "h100")
        assert len(workers) == 2
        victim_port, victim = sorted(workers.items())[0]
        subprocess.run(["kill", "-KILL", str(victim)], check=True)
        for n in range(1, 11):  # the gateway fails over to the other worker
            assert ask(n).choices[0].message.content
        # The supervisor starts it again on the same port; the gateway takes it back.
        until_sync(
            lambda: (
                worker_pids(proc.pid, "h100").get(victim_port) not in (None, victim)
                and healthy(victim_port)
            ),
            timeout_s=60,
            what="the killed worker restarted",
        )
        base = banner["TOLLWAY_BASE_URL"].removesuffix("/v1")
        until_sync(
            lambda: 2 not in metric_samples(base, "tollway_circuit_state"),
            timeout_s=30,
            what="every worker back in rotation",
        )
        for n in range(11, 15):
            ask(n)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            output = lines.rest()
            proc.stdout.close()
    assert code == 0, output[-30:]
    text = "\n".join(output)
    # The victim is the worker on the lower port, which may be either of the two.
    assert re.search(r"h100-small-[01] exited \(code -9\); restarted", text), output[-30:]
    assert "Metered by the demo (workers restarted: 1):" in text, output[-30:]
    summary = [line for line in output if "agent-small" in line and "│" in line]
    assert summary, output[-20:]
    cells = [cell.strip() for cell in summary[0].split("│") if cell.strip()]
    assert cells[0] == "agent-small" and int(cells[1]) == 15 and float(cells[4]) > 0
