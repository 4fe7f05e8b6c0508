"""The client write deadline (``server.client_write_timeout_s``), against real processes.

A client that sends a request and then never reads its answer fills its receive
window; the gateway's writes back up. Once the gateway has been unable to drain its
write buffer for longer than the deadline, it closes the connection and the request
is released as for a client that left: nothing stays in flight, the worker runs
nothing of ours, and the request is metered exactly once.
"""

from __future__ import annotations

import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import emulator, gateway, pool
from tests.e2e.test_disconnect_matrix import (
    Stack,
    body,
    finished,
    ledger_rows,
    metrics,
    request_bytes,
    wait_for,
    worker_requests,
)

pytestmark = pytest.mark.e2e

#: Tokens asked for: their stream (about 12 MB) is far more than the socket buffers
#: between the two ends hold. (A JSON answer would fit in the kernel's send buffer,
#: up to 4 MB: the large-answer case is ``tests/gateway/test_write_deadline.py``.)
HUGE = 60_000
#: The emulator's generation is CPU-bound: generous on a loaded machine.
WAIT_S = 40.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("write-deadline")
    data = tmp / "data"
    with (
        emulator("--speed", "200") as (worker, _),
        gateway(
            tmp,
            pools={"main": pool([worker])},
            models={"m": {"route": "pool:main"}},
            env={"TOLLWAY_DATA_DIR": str(data)},
            server={"client_write_timeout_s": 0.5},
        ) as base,
    ):
        yield Stack(base, worker, Path(data / "tollway.db"), int(base.rsplit(":", 1)[1]))


def _silent_client(stack: Stack) -> socket.socket:
    """A connection with a small receive buffer whose owner never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", stack.port))
    return sock


def _closed_by_the_gateway(sock: socket.socket) -> bool:
    """Whether the gateway ended the connection (a FIN or a reset came), read off the
    kernel's state of the socket: nothing is read from it."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return state != _TCP_ESTABLISHED


_TCP_ESTABLISHED = 1  # tcp_states.h; TCP_INFO's first byte


def _completion_tokens(stack: Stack, rid: str) -> int:
    with sqlite3.connect(stack.ledger) as db:
        (tokens,) = db.execute(
            "SELECT completion_tokens FROM usage_ledger WHERE request_id = ?", (rid,)
        ).fetchone()
    return int(tokens)


def _read_to_the_end(sock: socket.socket) -> bytes:
    """Everything left on the connection, up to the gateway's close (EOF or reset)."""
    got = b""
    try:
        while block := sock.recv(65536):
            got += block
    except ConnectionResetError:
        pass
    return got


def test_a_stream_whose_client_never_reads_is_cut_and_released(stack: Stack) -> None:
    rid = f"deadline-{uuid.uuid4().hex[:12]}"
    before = finished(stack)
    head, content = request_bytes(body(True, HUGE), rid)
    with _silent_client(stack) as sock:
        sock.sendall(head + content)
        # Nothing is read: the gateway has to let go by itself.
        wait_for("nothing in flight", lambda: not any(metrics(stack).values()), WAIT_S)
        wait_for("the worker runs nothing", lambda: worker_requests(stack) == 0, WAIT_S)
        wait_for(
            f"a settled usage record for {rid}",
            lambda: any(status != "provisional" for status, _ in ledger_rows(stack, rid)),
            WAIT_S,
        )
        wait_for("the gateway closed the connection", lambda: _closed_by_the_gateway(sock), WAIT_S)
        rest = _read_to_the_end(sock)
    assert b"data: [DONE]" not in rest  # the stream was cut
    found = ledger_rows(stack, rid)
    assert len(found) == 1, found
    assert found[0][0] == "client_cancelled", found
    # What was generated before the cut is counted: some, not all that was asked for.
    assert 0 < _completion_tokens(stack, rid) < HUGE
    wait_for("the request finished", lambda: finished(stack) >= before + 1)
    assert finished(stack) == before + 1
