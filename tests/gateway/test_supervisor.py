"""The demo's supervisor: restarts what may die, reports what may not, stops everything."""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.supervisor import Child, Supervisor

EXIT_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_restartable_child_is_started_again_until_the_limit(tmp_path: Path) -> None:
    events: list[str] = []
    supervisor = Supervisor(max_restarts=2, on_event=events.append)
    child = supervisor.start(Child("w0", EXIT_3, tmp_path / "w0.log", restart=True))
    try:
        first = child.proc
        assert first is not None and first.wait(timeout=30) == 3
        assert supervisor.check() is None  # restarted
        assert child.restarts == 1 and child.proc is not first
        assert events == [f"w0 exited (code 3); restarted (pid {child.proc.pid})"]
        assert child.proc.wait(timeout=30) == 3
        assert supervisor.check() is None and child.restarts == 2
        assert child.proc.wait(timeout=30) == 3
        assert supervisor.check() is child  # a third exit within the window: give up
        assert events[-1] == "w0 keeps exiting (last code 3); stopping"
    finally:
        supervisor.stop_all()


def test_a_child_that_may_not_die_ends_the_run_and_stop_all_stops_the_rest(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(on_event=lambda line: None)
    sleeper = supervisor.start(Child("w0", SLEEP, tmp_path / "w0.log", restart=True))
    gateway = supervisor.start(Child("gateway", EXIT_3, tmp_path / "gw.log"))
    try:
        assert gateway.proc is not None and gateway.proc.wait(timeout=30) == 3
        assert supervisor.check() is gateway
        assert sleeper.proc is not None and sleeper.proc.poll() is None
    finally:
        supervisor.stop_all(timeout_s=10)
    assert sleeper.proc.returncode is not None and sleeper.restarts == 0
