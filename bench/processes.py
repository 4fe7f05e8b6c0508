"""Child processes for benchmarks: started pinned to a core, always stopped.

``Children`` is a context manager. Every process it starts runs in its own session
(so a terminal's Ctrl-C reaches only the benchmark script), with its output in a log
file; on exit, including on an exception, Ctrl-C or SIGTERM, each process group gets
SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cpu_count() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` prefixed with ``taskset -c cpu`` when a core is given."""
    if cpu is None:
        return list(argv)
    if shutil.which("taskset") is None:
        raise RuntimeError("taskset (util-linux) is required to pin processes")
    return ["taskset", "-c", str(cpu), *argv]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url`` without any proxy; return (status, body)."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def python() -> str:
    """The interpreter running this script (the project's virtualenv)."""
    return sys.executable


class Children:
    """Starts and always stops the benchmark's child processes."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self._own_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tollway-bench-"))
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._previous_sigterm: signal._HANDLER = None

    def __enter__(self) -> Children:
        self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)
        if self._own_dir and exc_type is None:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` pinned to ``cpu``; its output goes to ``<log_dir>/<name>.log``."""
        log = open(self.log_dir / f"{name}.log", "wb")
        with log:
            proc = subprocess.Popen(
                pinned(argv, cpu),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self._procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a child's log."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(
        self,
        name: str,
        url: str,
        timeout: float = 30.0,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        """Poll ``url`` until it answers 200; fail early if the child has exited."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                # An emulated worker's /health answers after SGLang's 1 s wait.
                status, body = http_get(url, timeout=5.0)
                if status == 200:
                    return
                last = f"status {status}: {body[:200]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"{name} not ready at {url} after {timeout}s ({last}):\n{self.log_tail(name)}"
        )

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the child's process group, then SIGKILL after ``grace`` seconds."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        # Reap anything left in the group (workers of a server, for example).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self) -> None:
        """Stop every child still tracked, newest first."""
        for _, proc in reversed(list(self._procs)):
            self.stop(proc)

    def names(self) -> Iterator[str]:
        """Names of the children still tracked."""
        return (name for name, _ in self._procs)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def exit_on_interrupt() -> Iterator[None]:
    """Turn Ctrl-C (or SIGTERM inside :class:`Children`) into exit status 130.

    Wrap a benchmark's run in it: ``Children`` has stopped the child processes by the
    time the interrupt gets here, so one line says so instead of a traceback.
    """
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        raise SystemExit(130) from None
