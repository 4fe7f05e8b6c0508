"""Route parity, property-based over raw HTTP/1.1 bytes against a real ``tollway serve``.

Every inference route and every other route give the same class of answer for
the same framing problem (Content-Length and Transfer-Encoding together, a bad
chunk, duplicate or oversized headers, a body over the limit, declared or
chunked), whatever the framing of the rest (Content-Length or chunked with any
chunk sizes, HTTP/1.0, ``Expect: 100-continue``); every error is JSON in the route's
API's shape (Anthropic's on the Messages API's routes, with the type its status
gives, else OpenAI's with the code); and well-formed requests pipelined on one
connection each get their own answer, in order. Example counts are bounded
(derandomized, no database).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.processes import API_KEY, emulator, gateway, pool
from tollway.anthropic_errors import anthropic_type

pytestmark = pytest.mark.e2e

ADMIN = "tw-admin-parity-0123456789abcdef"
LIMIT = 2048
LIMITS = {
    "max_body_bytes": LIMIT,
    "max_header_bytes": 4096,
    "max_headers": 30,
    "header_read_timeout_s": 5.0,
    "body_read_timeout_s": 5.0,
    "keep_alive_timeout_s": 5,
}
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: bytes
    ok: int
    api: str = "openai"

    @property
    def key(self) -> str:
        return ADMIN if self.path.startswith("/admin/") else API_KEY


ROUTES = [
    Route(
        "POST",
        "/v1/chat/completions",
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3}',
        200,
    ),
    Route("POST", "/v1/completions", b'{"model":"m","prompt":"hi","max_tokens":3}', 200),
    Route("POST", "/v1/responses", b'{"model":"m","input":"hi","max_output_tokens":3}', 200),
    Route(
        "POST",
        "/v1/messages",
        b'{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}',
        200,
        "anthropic",
    ),
    Route(
        "POST",
        "/v1/messages/count_tokens",
        b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
        200,
        "anthropic",
    ),
    Route("POST", "/v1/embeddings", b'{"model":"e","input":"hi"}', 200),
    Route("POST", "/admin/v1/tenants", b'{"name":"parity"}', 201),
    Route("GET", "/v1/models", b"", 200),
    Route("GET", "/v1/usage", b"", 200),
    Route("GET", "/healthz", b"", 200),
]
#: The answer every route gives to each framing problem: (status, error code).
PROBLEMS: dict[str, tuple[int, str]] = {
    "duplicate_header": (400, "duplicate_header"),
    "length_and_chunked": (400, "invalid_http_request"),
    "bad_chunk": (400, "invalid_http_request"),
    "header_too_large": (431, "request_header_fields_too_large"),
    "too_many_headers": (431, "request_header_fields_too_large"),
    "declared_too_large": (413, "request_too_large"),
    "chunked_too_large": (413, "request_too_large"),
}


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("parity")
    embedding = "qwen3-embedding-0.6b"
    with (
        emulator("--instant") as (worker, _),
        emulator("--instant", "--embedding", model=embedding) as (embedder, _),
        gateway(
            tmp,
            {
                "p": pool([worker]),
                "e": {
                    **pool([embedder], embedding),
                    "model": {"name": embedding, "embedding": True},
                },
            },
            {"m": {"route": "pool:p"}, "e": {"route": "pool:e"}},
            server=LIMITS,
            admin_token=ADMIN,
        ) as url,
    ):
        yield "127.0.0.1", int(url.rsplit(":", 1)[1])


@dataclass
class Framing:
    """How a request's body is framed."""

    chunked: bool
    chunks: list[int]  # chunk sizes (the last one takes the rest)
    http10: bool
    expect: bool


framings = st.builds(
    Framing,
    chunked=st.booleans(),
    chunks=st.lists(st.integers(1, 40), max_size=4),
    http10=st.booleans(),
    expect=st.booleans(),
)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, rest = b"", body
    for size in sizes:
        if not rest:
            break
        out += b"%x\r\n%b\r\n" % (len(rest[:size]), rest[:size])
        rest = rest[size:]
    if rest:
        out += b"%x\r\n%b\r\n" % (len(rest), rest)
    return out + b"0\r\n\r\n"


def request(
    route: Route,
    framing: Framing,
    rid: str,
    *,
    extra: list[bytes] | None = None,
    body: bytes | None = None,
    close: bool = False,
) -> bytes:
    """One request's bytes (``extra``: raw header lines; ``body``: instead of the route's)."""
    data = route.body if body is None else body
    chunked = framing.chunked and not framing.http10  # chunked framing is HTTP/1.1's
    version = b"HTTP/1.0" if framing.http10 else b"HTTP/1.1"
    lines = [
        b"%s %s %s" % (route.method.encode(), route.path.encode(), version),
        b"host: gateway",
        b"authorization: Bearer " + route.key.encode(),
        b"x-request-id: " + rid.encode(),
    ]
    framed = bool(data) or route.method == "POST"
    if framed:
        lines.append(b"content-type: application/json")
        lines.append(
            b"transfer-encoding: chunked" if chunked else b"content-length: %d" % len(data)
        )
        if framing.expect:
            lines.append(b"expect: 100-continue")
    if close:
        lines.append(b"connection: close")
    lines += extra or []
    payload = _chunked(data, framing.chunks) if chunked and framed else data
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        """The OpenAI error object."""
        assert self.headers.get("content-type") == "application/json", self.headers
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        return error

    def anthropic_error(self) -> dict[str, Any]:
        """The Anthropic error object."""
        assert self.headers.get("content-type") == "application/json", self.headers
        body = json.loads(self.body)
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        error: dict[str, Any] = body["error"]
        assert set(error) == {"type", "message"}, error
        return error


class Connection:
    """A blocking client connection that reads whole responses (1xx skipped)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> Answer | None:
        line = self.file.readline()
        if not line:
            return None
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            return self.answer()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self.file.readline().strip(), 16):
                body += self.file.read(size)
                self.file.readline()
            self.file.readline()
        elif "content-length" in headers:
            body = self.file.read(int(headers["content-length"]))
        else:
            body = self.file.read()
        return Answer(status, headers, body)

    def closed(self) -> bool:
        return self.file.read(1) == b""


def _check_ok(route: Route, answer: Answer | None, rid: str) -> None:
    assert answer is not None, f"{route.path}: no answer"
    assert answer.status == route.ok, (route.path, answer.status, answer.body[:300])
    assert answer.headers.get("x-request-id") == rid, (route.path, answer.headers)
    if route.path.endswith("completions"):
        assert json.loads(answer.body)["choices"], answer.body[:300]
    elif route.path == "/v1/messages":
        assert json.loads(answer.body)["type"] == "message", answer.body[:300]
    elif route.path == "/v1/messages/count_tokens":
        assert json.loads(answer.body)["input_tokens"] > 0, answer.body[:300]


def _problem(route: Route, framing: Framing, problem: str, rid: str) -> bytes:
    framing = Framing(framing.chunked, framing.chunks, False, framing.expect)
    if problem == "duplicate_header":
        return request(route, framing, rid, extra=[b"x-session-id: a", b"x-session-id: b"])
    if problem == "length_and_chunked":
        body = route.body or b"{}"
        head = request(route, Framing(True, [], False, False), rid, body=body)
        return head.replace(b"\r\n\r\n", b"\r\ncontent-length: %d\r\n\r\n" % len(body), 1)
    if problem == "bad_chunk":
        head = request(route, Framing(True, [], False, False), rid, body=b"{}")
        return head.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    if problem == "header_too_large":
        return request(route, framing, rid, extra=[b"x-big: " + b"a" * 5000])
    if problem == "too_many_headers":
        return request(route, framing, rid, extra=[b"x-h%d: v" % i for i in range(40)])
    if problem == "declared_too_large":
        head = request(route, Framing(False, [], False, False), rid, body=b"{}")
        return head.replace(b"content-length: 2", b"content-length: 100000")[:-2]
    assert problem == "chunked_too_large"
    big = b'{"pad":"' + b"x" * (LIMIT + 500) + b'"}'
    return request(route, Framing(True, framing.chunks or [700], False, False), rid, body=big)


@SETTINGS
@given(
    route=st.sampled_from(ROUTES),
    framing=framings,
    problem=st.sampled_from(sorted(PROBLEMS)),
)
def test_every_route_answers_a_framing_problem_alike(
    address: tuple[str, int], route: Route, framing: Framing, problem: str
) -> None:
    status, code = PROBLEMS[problem]
    with Connection(address) as conn:
        conn.send(_problem(route, framing, problem, "parity-1"))
        answer = conn.answer()
        assert answer is not None, (route.path, problem)
        assert answer.status == status, (route.path, problem, answer.status, answer.body[:300])
        if route.api == "anthropic":
            assert answer.anthropic_error()["type"] == anthropic_type(status)
        else:
            assert answer.error()["code"] == code
        if problem != "duplicate_header":  # the connection cannot be trusted any further
            assert answer.headers.get("connection") == "close" and conn.closed()


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("route", [r for r in ROUTES if r.api == "anthropic"], ids=lambda r: r.path)
def test_the_anthropic_routes_answer_every_problem_in_anthropics_shape(
    address: tuple[str, int], route: Route, problem: str
) -> None:
    """Every problem on every Anthropic route, whoever answers it: the HTTP protocol
    (framing, head limits), the dispatcher (a repeated header) or the handler (size)."""
    status, _ = PROBLEMS[problem]
    with Connection(address) as conn:
        conn.send(_problem(route, Framing(False, [], False, False), problem, "parity-a"))
        answer = conn.answer()
        assert answer is not None, (route.path, problem)
        assert answer.status == status, (route.path, problem, answer.status, answer.body[:300])
        assert answer.anthropic_error()["type"] == anthropic_type(status), answer.body


def test_a_body_too_slow_on_an_anthropic_route_is_anthropics_408(address: tuple[str, int]) -> None:
    """The protocol's own deadline answer, on the Messages API's route."""
    route = next(r for r in ROUTES if r.path == "/v1/messages")
    head = request(route, Framing(False, [], False, False), "parity-slow")
    with Connection(address) as conn:
        conn.send(head[: len(head) - len(route.body) // 2])  # half of the body, then nothing
        answer = conn.answer()  # once the gateway's body deadline passed
        assert answer is not None and answer.status == 408, answer
        assert answer.anthropic_error()["type"] == "invalid_request_error"
        assert conn.closed()


@SETTINGS
@given(
    batch=st.lists(st.tuples(st.sampled_from(ROUTES), framings), min_size=1, max_size=4),
    close=st.booleans(),
)
def test_well_formed_pipelined_requests_each_get_their_own_answer(
    address: tuple[str, int], batch: list[tuple[Route, Framing]], close: bool
) -> None:
    # HTTP/1.0 ends the connection after its answer: only the last request may use it.
    batch = [(r, Framing(f.chunked, f.chunks, False, f.expect)) for r, f in batch[:-1]] + [
        batch[-1]
    ]
    last = len(batch) - 1
    data = b"".join(
        request(route, framing, f"pipe-{i}", close=close and i == last)
        for i, (route, framing) in enumerate(batch)
    )
    with Connection(address) as conn:
        conn.send(data)
        for i, (route, _) in enumerate(batch):
            _check_ok(route, conn.answer(), f"pipe-{i}")
        if close or batch[-1][1].http10:
            assert conn.closed()
