"""``/v1/responses`` in front of a scripted worker: what reaches the upstream (a
chain's items, not its instructions nor the response's metadata), its errors
before and inside a stream, a stream cut short, and idempotent replays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from gateway.responsesapi.tables import stored_responses
from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway
from tests.gateway.responsesapi.schema import validate, validate_event
from tests.gateway.test_pipeline_stages import ADMIN, config, tenant_key

HEADERS = {"authorization": f"Bearer {API_KEY}"}
BODY: dict[str, Any] = {"model": "m", "input": "hi", "max_output_tokens": 9}


def events_of(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(block.split(b"\ndata: ", 1)[1]) for block in body.split(b"\n\n") if block]


async def test_the_upstream_gets_the_chain_as_chat_messages() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        body = {**BODY, "instructions": "Be brief.", "metadata": {"team": "a"}}
        first = await client.post("/v1/responses", headers=HEADERS, json=body)
        assert first.status_code == 200, first.text
        validate("Response", first.json())
        assert first.json()["output"][0]["content"][0]["text"] == "hello"
        sent = worker.requests[-1]
        assert sent["model"] == "upstream-model" and sent["max_tokens"] == 9
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]
        assert "metadata" not in sent
        again = {
            "model": "m",
            "input": [{"role": "user", "content": "more"}],
            "previous_response_id": first.json()["id"],
            "instructions": "New rules.",
        }
        second = await client.post("/v1/responses", headers=HEADERS, json=again)
        assert second.status_code == 200, second.text
        assert worker.requests[-1]["messages"] == [
            {"role": "system", "content": "New rules."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ]
        assert second.json()["previous_response_id"] == first.json()["id"]


async def test_an_upstream_refusal_before_the_stream_is_a_400() -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="stream_error")) as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        answer = await client.post("/v1/responses", headers=HEADERS, json={**BODY, "stream": True})
        assert answer.status_code == 400
        assert "prompt too long" in answer.json()["error"]["message"]


async def test_an_upstream_error_mid_stream_is_an_error_event_then_failed() -> None:
    for mode in ("stream_error_mid", "cut"):
        async with (
            serve_fake_worker(FakeWorker(mode=mode, error_status=500)) as worker,
            running_gateway(gateway_config([worker.url])) as (_, client),
        ):
            answer = await client.post(
                "/v1/responses", headers=HEADERS, json={**BODY, "stream": True}
            )
            assert answer.status_code == 200
            events = events_of(answer.content)
            for event in events:
                validate_event(event)
            kinds = [e["type"] for e in events]
            assert kinds[-4:] == [
                "response.content_part.done",
                "response.output_item.done",
                "error",
                "response.failed",
            ], mode
            failed = events[-1]["response"]
            assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
            # A failed response is not stored.
            got = await client.get(f"/v1/responses/{failed['id']}", headers=HEADERS)
            assert got.status_code == 404


async def test_an_idempotent_replay_is_translated_too() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        for stream in (False, True):
            headers = {**HEADERS, "idempotency-key": f"k-{stream}"}
            body = {**BODY, "stream": stream}
            first = await client.post("/v1/responses", headers=headers, json=body)
            again = await client.post("/v1/responses", headers=headers, json=body)
            assert again.headers.get("idempotent-replayed") == "true"
            if stream:
                kinds = [e["type"] for e in events_of(again.content)]
                assert kinds == [e["type"] for e in events_of(first.content)]
                assert kinds[-1] == "response.completed"
            else:
                validate("Response", again.json())
                assert (
                    again.json()["output"][0]["content"] == (first.json()["output"][0]["content"])
                )
        assert len(worker.requests) == 2


async def test_a_response_that_cannot_be_stored_is_an_error_not_a_silent_loss() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (app, client),
    ):

        async def broken(*args: object) -> None:
            raise OSError("disk gone")

        app.state.stored_responses.put = broken
        plain = await client.post("/v1/responses", headers=HEADERS, json=BODY)
        assert plain.status_code == 503 and plain.json()["error"]["type"]
        streamed = await client.post(
            "/v1/responses", headers=HEADERS, json={**BODY, "stream": True}
        )
        events = events_of(streamed.content)
        assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
        # Not stored: store: false asks for nothing to be stored, and is served.
        unstored = await client.post(
            "/v1/responses", headers=HEADERS, json={**BODY, "store": False}
        )
        assert unstored.status_code == 200 and unstored.json()["store"] is False


async def test_the_openapi_description_documents_the_routes() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert paths["/v1/responses"]["post"]["security"] == [{"bearer": []}]
        assert set(paths["/v1/responses/{response_id}"]) == {"get", "delete"}
        assert "get" in paths["/v1/responses/{response_id}/input_items"]


async def test_a_replay_adds_nothing_more_to_its_conversation() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        created = await client.post("/v1/conversations", headers=HEADERS, json={})
        conversation = created.json()["id"]
        body = {**BODY, "conversation": conversation}
        for stream in (False, True, True):  # the first, then replays of the second
            headers = {**HEADERS, "idempotency-key": f"k-{stream}"}
            answer = await client.post(
                "/v1/responses", headers=headers, json={**body, "stream": stream}
            )
            assert answer.status_code == 200
        items = await client.get(f"/v1/conversations/{conversation}/items", headers=HEADERS)
        texts = [i["content"][0]["text"] for i in items.json()["data"]]
        assert texts == ["hello", "hi", "hello", "hi"]
        assert len(worker.requests) == 2


async def test_retention_and_size_follow_the_keys_and_tenants_limits(tmp_path: Path) -> None:
    async with serve_fake_worker() as worker:
        async with running_gateway(config(worker.url, tmp_path)) as (app, client):
            small = {"stored_responses_retention_s": 120, "stored_responses_max_bytes": 1500}
            keyed = await tenant_key(client, limits=small)
            tenant = await client.post(
                "/admin/v1/tenants",
                headers=ADMIN,
                json={"name": "kept", "limits": {"stored_responses_retention_s": 600}},
            )
            made = await client.post(
                f"/admin/v1/tenants/{tenant.json()['id']}/keys", headers=ADMIN, json={}
            )
            tenants_key = made.json()["key"]

            async def create(key: str, text: str) -> dict[str, Any]:
                auth = {"authorization": f"Bearer {key}"}
                answer = await client.post(
                    "/v1/responses", headers=auth, json={**BODY, "input": text}
                )
                assert answer.status_code == 200, answer.text
                return dict(answer.json())

            async def kept_for(response_id: str) -> float:
                table = stored_responses
                query = select(table.c.created_at, table.c.expires_at).where(
                    table.c.id == response_id
                )
                async with app.state.store.engine.connect() as conn:
                    row = (await conn.execute(query)).one()
                return float((row.expires_at - row.created_at).total_seconds())

            assert await kept_for((await create(keyed, "hi"))["id"]) == 120
            assert await kept_for((await create(tenants_key, "hi"))["id"]) == 600
            assert await kept_for((await create(API_KEY, "hi"))["id"]) == 30 * 86400
            # Over the key's size: answered, not stored.
            large = await create(keyed, "x" * 2000)
            assert large["store"] is False
            missing = await client.get(
                f"/v1/responses/{large['id']}", headers={"authorization": f"Bearer {keyed}"}
            )
            assert missing.status_code == 404
