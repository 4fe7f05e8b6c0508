"""Fuzzing the gateway's documented API (its own ``/openapi.json``) with schemathesis: no 5xx.

The schema documents the admin and usage routes (the ``/v1`` inference routes
are plain routes on the hot path and are fuzzed by their own tests). Cases are
generated from the schema, valid and invalid, with a bounded number of
examples per operation, and sent to a real gateway process with the admin
token, so that they reach the handlers' validation and the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.e2e.processes import gateway
from tests.faults.support import LoadResult, record

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "tw-admin-fuzz-0123456789abcdef"
EXAMPLES = 15


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    pools = {
        "p": {
            "gpu": "h100",
            "model": {"name": "llama-3.1-8b-instruct"},
            "workers": ["http://127.0.0.1:9"],
        }
    }
    with gateway(tmp, pools, {"m": {"route": "pool:p"}}, admin_token=ADMIN_TOKEN) as url:
        yield url


def test_no_server_errors(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    sent: list[int] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails here

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            response = case.call(
                base_url=base_url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
            )
            sent.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )

        fuzz()
    record_fuzz(len(sent), sum(1 for s in sent if s >= 500))
    assert sent and not failures, failures[:5]


def record_fuzz(cases: int, server_errors: int) -> None:
    load = LoadResult(sent=cases)
    record(
        "schemathesis fuzz of /openapi.json (admin, usage)", load, 0, 0, server_errors=server_errors
    )


def test_the_schema_has_the_admin_and_usage_routes(base_url: str) -> None:
    paths = httpx.get(f"{base_url}/openapi.json").json()["paths"]
    assert "/admin/v1/tenants" in paths and "/v1/usage" in paths
