"""A request larger than every worker's whole KV pool, through the openai SDK.

One emulated worker with a 2000-token KV pool. A request that cannot fit it
even read conservatively gets 400 ``context_length_exceeded`` from the gateway
and is never admitted to the worker; a model with a fallback to a pool of
larger workers is served there instead; a normal request is served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.processes import API_KEY, emulator, gateway, metric_samples, pool

pytestmark = pytest.mark.e2e

SMALL_POOL = 2000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("kvfit")
    with (
        emulator("--instant", "--max-total-tokens", str(SMALL_POOL)) as (small, _),
        emulator("--instant") as (large, _),
        gateway(
            tmp,
            pools={"small": pool([small]), "large": pool([large])},
            models={
                "tiny": {"route": "pool:small"},
                "tiny-or-large": {"route": "pool:small", "fallbacks": ["pool:large"]},
            },
        ) as base,
    ):
        yield {"base": base, "small": small, "large": large}


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0)


def admitted(base: str, name: str) -> float:
    """The gateway's ``tollway_admission`` count for ``pool/outcome``."""
    pool_name, outcome = name.split("/")
    for line in httpx.get(base + "/metrics", timeout=2).text.splitlines():
        if (
            line.startswith("tollway_admission_total{")
            and f'pool="{pool_name}"' in line
            and f'outcome="{outcome}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


#: About 6000 tokens by the gateway's estimate, 3000 read conservatively (about 4000
#: in fact): over 2000 either way.
LONG_PROMPT = "hello world " * 2000


def test_a_prompt_no_worker_can_hold_is_refused_before_it_is_sent(
    stack: dict[str, Any],
) -> None:
    base = stack["base"]
    before = admitted(base, "small/admitted")
    with pytest.raises(openai.BadRequestError) as caught:
        client(base).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=10
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert caught.value.status_code == 400
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert str(SMALL_POOL) in error["message"]
    assert admitted(base, "small/admitted") == before  # never admitted to the worker
    assert admitted(base, "small/too_large") >= 1


def test_a_max_tokens_no_worker_can_hold_is_refused_naming_max_tokens(
    stack: dict[str, Any],
) -> None:
    base = stack["base"]
    before = admitted(base, "small/admitted")
    with pytest.raises(openai.BadRequestError) as caught:
        client(base).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5000
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "max_tokens"
    assert admitted(base, "small/admitted") == before


def test_a_normal_request_is_still_served(stack: dict[str, Any]) -> None:
    base, small = stack["base"], stack["small"]
    served = sum(metric_samples(small, "sglang:num_requests_total"))
    reply = client(base).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=16
    )
    assert reply.choices[0].message.content
    assert sum(metric_samples(small, "sglang:num_requests_total")) == served + 1


def test_a_fallback_with_larger_workers_serves_what_the_small_pool_cannot(
    stack: dict[str, Any],
) -> None:
    base = stack["base"]
    before = admitted(base, "small/admitted")
    response = client(base).chat.completions.with_raw_response.create(
        model="tiny-or-large",
        messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=10,
    )
    assert response.headers["x-tollway-route"].startswith("pool:large/")
    assert response.parse().choices[0].message.content
    assert admitted(base, "small/admitted") == before
