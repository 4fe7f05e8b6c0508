"""A small process supervisor for ``tollway demo``: restart what may die, stop on what may not.

Each child is started with its output appended to a log file and (on Linux)
asked to receive SIGTERM when the supervising process dies. A child marked
``restart`` (an emulated worker) that exits is started again with the same
command, so its URL in the gateway's configuration serves again, while the
gateway fails over to the pool's other workers meanwhile; a child that exits
more than ``max_restarts`` times in a row within ``restart_window_s``, or one not
marked ``restart`` (the gateway), ends the run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM this child when the supervising process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def spawn(
    args: list[str], log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child process whose output goes to ``log_file``."""
    with log_file.open("ab") as out:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
            env={**os.environ, **(env or {})},
        )


@dataclass
class Child:
    """One supervised process."""

    name: str
    args: list[str]
    log_file: Path
    env: dict[str, str] | None = None
    restart: bool = False
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: Monotonic times of recent exits, for the restart limit.
    exits: list[float] = field(default_factory=list)


class Supervisor:
    """Starts children, restarts the restartable ones, stops them all."""

    def __init__(
        self,
        *,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
        on_event: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children: list[Child] = []
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self._on_event = on_event or (lambda line: print(line, file=sys.stderr, flush=True))
        self._clock = clock

    def start(self, child: Child) -> Child:
        """Start ``child`` and supervise it from now on."""
        child.proc = spawn(child.args, child.log_file, child.env)
        self.children.append(child)
        return child

    def running(self) -> list[subprocess.Popen[bytes]]:
        """The children's current processes."""
        return [c.proc for c in self.children if c.proc is not None]

    def check(self) -> Child | None:
        """Restart children that exited and may be; return one that ended the run, if any."""
        for child in self.children:
            proc = child.proc
            if proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            if not child.restart:
                return child
            now = self._clock()
            child.exits = [t for t in child.exits if now - t < self.restart_window_s] + [now]
            if len(child.exits) > self.max_restarts:
                self._on_event(f"{child.name} keeps exiting (last code {code}); stopping")
                return child
            child.proc = spawn(child.args, child.log_file, child.env)
            child.restarts += 1
            self._on_event(f"{child.name} exited (code {code}); restarted (pid {child.proc.pid})")
        return None

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every child, then SIGKILL what is left after ``timeout_s``."""
        procs = self.running()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = self._clock() + timeout_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
