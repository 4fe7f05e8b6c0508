"""Reading, naming and fingerprinting idempotency keys."""

from __future__ import annotations

import pytest

from gateway.idempotency import (
    idempotency_key_of,
    request_fingerprint,
    storage_key,
    wait_preference,
)
from tollway.errors import InvalidRequest


def test_key_from_header_or_metadata() -> None:
    assert idempotency_key_of({"idempotency-key": "abc"}, {}) == "abc"
    assert idempotency_key_of({}, {"metadata": {"idempotency_key": "m-1"}}) == "m-1"
    both = {"metadata": {"idempotency_key": "same"}}
    assert idempotency_key_of({"idempotency-key": "same"}, both) == "same"
    assert idempotency_key_of({}, {"metadata": {"session_id": "s"}}) is None
    assert idempotency_key_of({}, {"metadata": "not a dict"}) is None


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"idempotency-key": "a"}, {"metadata": {"idempotency_key": "b"}}),
        ({}, {"metadata": {"idempotency_key": 5}}),
        ({"idempotency-key": ""}, {}),
        ({"idempotency-key": "x" * 256}, {}),
        ({"idempotency-key": "tab\there"}, {}),
        ({}, {"metadata": {"idempotency_key": "clé"}}),
    ],
)
def test_bad_keys_are_400(headers: dict[str, str], body: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        idempotency_key_of(headers, body)


def test_key_length_is_configurable() -> None:
    assert idempotency_key_of({"idempotency-key": "x" * 300}, {}, max_length=300)


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        (None, None),
        ("wait=0", 0.0),
        ("wait=10", 10.0),
        ("respond-async, wait=2.5", 2.5),
        ('WAIT="3"', 3.0),
        ("return=minimal", None),
        ("wait=soon", None),
        ("wait=-1", None),
        ("wait=inf", None),
        ("wait=5; x=y", 5.0),
    ],
)
def test_prefer_wait(prefer: str | None, expected: float | None) -> None:
    headers = {} if prefer is None else {"prefer": prefer}
    assert wait_preference(headers) == expected


def test_storage_key_has_prefix_tenant_tag_and_hashed_key() -> None:
    key = storage_key("tw:", "t1", "my key {with} braces")
    assert key.startswith("tw:{t:t1}:i:")
    digest = key.rsplit(":", 1)[1]
    assert len(digest) == 64 and "{" not in digest
    assert storage_key("tw:", "t2", "my key {with} braces") != key


def test_fingerprint_is_canonical_and_sees_everything() -> None:
    path = "/v1/chat/completions"
    a = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    reordered = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    fp = request_fingerprint(path, a)
    assert len(fp) == 64
    assert request_fingerprint(path, reordered) == fp
    assert request_fingerprint("/v1/completions", a) != fp
    assert request_fingerprint(path, {**a, "temperature": 1}) != fp
    assert request_fingerprint(path, {**a, "stream": True}) != fp
    assert request_fingerprint(path, a, {"agent_type": "coder"}) != fp
    assert request_fingerprint(path, a, {}) == fp
