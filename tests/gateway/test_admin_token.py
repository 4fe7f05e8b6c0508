"""Where the admin token comes from: the environment over the config, never silently."""

from __future__ import annotations

import logging

import pytest

from tests.gateway.harness import gateway_config, running_gateway

FILE_TOKEN = "tw-admin-file-0123456789abcdef"
ENV_TOKEN = "tw-admin-env-0123456789abcdef"


async def test_a_differing_environment_token_wins_with_a_plain_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tollway")
    config = gateway_config(["http://127.0.0.1:9"], admin_token=FILE_TOKEN)
    async with running_gateway(config, {"admin_token": ENV_TOKEN}) as (_, client):
        for token, status in ((ENV_TOKEN, 200), (FILE_TOKEN, 401)):
            resp = await client.get(
                "/admin/v1/tenants", headers={"authorization": f"Bearer {token}"}
            )
            assert resp.status_code == status
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("TOLLWAY_ADMIN_TOKEN" in w and "differs" in w for w in warnings), warnings
    assert not any(FILE_TOKEN in w or ENV_TOKEN in w for w in warnings)


async def test_the_same_token_in_both_places_is_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tollway")
    config = gateway_config(["http://127.0.0.1:9"], admin_token=FILE_TOKEN)
    async with running_gateway(config, {"admin_token": FILE_TOKEN}):
        pass
    assert not any("TOLLWAY_ADMIN_TOKEN" in r.getMessage() for r in caplog.records)
