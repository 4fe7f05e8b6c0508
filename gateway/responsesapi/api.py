"""The handlers of the Responses API.

``POST /v1/responses`` (in the route table) runs the chat pipeline on the
translated body (:meth:`gateway.pipeline.InferencePipeline.translated`): the
translation's ``load`` step reads the tenant's ``previous_response_id`` (404 when
it is not the tenant's) before the body is translated, so a chain is continued
with the tenant's own items only. The answer is translated back
(:mod:`gateway.responsesapi.replies`, :mod:`gateway.responsesapi.stream`) and,
with ``store`` (the default), stored (:mod:`gateway.responsesapi.store`) before
the client hears it is complete. ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` (:func:`router`) read the caller's tenant's
store only. Errors are in OpenAI's shape.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.auth import Authenticator, Principal
from gateway.idempotency.record import REPLAYED
from gateway.pipeline import InferencePipeline
from gateway.requestid import request_id_of
from gateway.responses import JSON, error_response, json_response
from gateway.responsesapi.conversations import ConversationStore, not_found
from gateway.responsesapi.items import invalid
from gateway.responsesapi.replies import skeleton, to_response
from gateway.responsesapi.store import ResponseStore, Retained, Stored
from gateway.responsesapi.stream import ResponseStream
from gateway.responsesapi.translate import Request as Asked
from gateway.responsesapi.translate import parse, to_chat
from gateway.translation import Translation
from tollway.errors import NotFound, ServiceUnavailable, TollwayError

log = logging.getLogger("tollway")

RESPONSES_PATH = "/v1/responses"
#: Response headers that describe the chat body, not the translated one.
_BODY_HEADERS = frozenset({"content-type", "content-length"})


def _not_found(rid: str, param: str | None = None) -> NotFound:
    return NotFound(f"No response found with id '{rid}'.", param=param, code="not_found")


@dataclass(slots=True)
class _Turn:
    """One create request, as the translation saw it."""

    response_id: str
    tenant: str = ""
    asked: Asked | None = None
    retained: Retained | None = None


class ResponsesApi:
    """The Responses API over an :class:`InferencePipeline` and a :class:`ResponseStore`."""

    def __init__(
        self, pipeline: InferencePipeline, store: ResponseStore, conversations: ConversationStore
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.conversations = conversations

    async def create(self, request: Request) -> Response:
        """``POST /v1/responses``."""
        turn = _Turn(response_id="resp_" + secrets.token_hex(16))

        async def load(body: dict[str, Any], principal: Principal) -> None:
            asked = parse(body)
            tenant = principal.tenant_id
            turn.tenant, turn.asked = tenant, asked
            turn.retained = self.store.limits(principal)
            if asked.conversation is not None:
                try:
                    _, items = await self.conversations.get(tenant, asked.conversation)
                except NotFound:
                    raise not_found(asked.conversation, "conversation") from None
                asked.history, asked.session = items, asked.conversation
                self._check_size(turn, asked, "conversation")
                return
            if asked.previous_response_id is None:
                # The chain's session: the client's prompt_cache_key, else its first response.
                asked.session = asked.prompt_cache_key or turn.response_id
                return
            previous = await self.store.get(tenant, asked.previous_response_id)
            if previous is None:
                raise _not_found(asked.previous_response_id, "previous_response_id")
            asked.history, asked.session = previous.history, previous.session
            if asked.store:
                self._check_size(turn, asked, "previous_response_id")

        def translate(_body: dict[str, Any]) -> dict[str, Any]:
            assert turn.asked is not None
            return to_chat(turn.asked)

        def asked() -> dict[str, Any]:  # a retry is the same request, however state moved on
            assert turn.asked is not None
            return turn.asked.body

        translation = Translation(
            RESPONSES_PATH, request.headers.get("authorization"), translate, load, asked
        )
        response = await self.pipeline.translated(request, translation)
        assert turn.asked is not None
        try:
            translated = await self._translate_back(response, turn, turn.asked)
        except Exception as exc:  # noqa: BLE001 - answered in OpenAI's shape, released below
            if not isinstance(exc, TollwayError):
                log.exception("response %s: translating the answer failed", turn.response_id)
                exc = TollwayError("The server had an error while processing your request.")
            translated = error_response(exc, request_id_of(request.scope))
        # The pipeline's work after the response is sent (settling limits, the access
        # log) goes with whatever answers the client.
        translated.background = response.background
        return translated

    @staticmethod
    def _check_size(turn: _Turn, asked: Asked, param: str) -> None:
        """400 before anything is sent when the stored context is already over the limit."""
        assert turn.retained is not None
        limit = turn.retained.max_bytes
        size = len(orjson.dumps(asked.history)) + len(orjson.dumps(asked.items))
        if size > limit:
            raise invalid(
                f"{param}: the stored items ({size} bytes) are over the limit of "
                f"{limit} bytes; start a new one or send the input alone",
                param,
            )

    async def _translate_back(self, response: Response, turn: _Turn, asked: Asked) -> Response:
        headers = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
        body = asked.body
        model = str(body.get("model", ""))
        started = skeleton(turn.response_id, body, model)

        if asked.conversation is not None:
            started["conversation"] = {"id": asked.conversation}

        # A replay of an idempotent request: its first answer already added its items
        # to the conversation (the response is stored again, under this new id).
        replayed = response.headers.get(REPLAYED) == "true"

        async def keep(finished: dict[str, Any]) -> None:
            if asked.conversation is not None and not replayed:
                added = asked.items + finished["output"]
                await self.conversations.change(
                    turn.tenant, asked.conversation, turn.retained, add=added
                )
            if asked.store:
                await self._keep(turn, asked, finished)

        if isinstance(response, StreamingResponse):
            stream = ResponseStream(response.body_iterator, started, keep)
            return StreamingResponse(
                stream,
                status_code=response.status_code,
                headers=headers,
                media_type="text/event-stream",
            )
        if response.status_code != 200:  # a stored error answer, replayed
            return Response(
                bytes(response.body),
                status_code=response.status_code,
                headers=headers,
                media_type=JSON,
            )
        finished = to_response(orjson.loads(bytes(response.body)), started)
        await keep(finished)
        return Response(orjson.dumps(finished), headers=headers, media_type=JSON)

    async def _keep(self, turn: _Turn, asked: Asked, finished: dict[str, Any]) -> None:
        """Store a finished response (not stored when over the size limit: ``store`` false)."""
        history = asked.history + asked.items + finished["output"]
        stored = Stored(finished, asked.items, history, asked.session or turn.response_id)
        assert turn.retained is not None
        data = self.store.encode(turn.tenant, stored, turn.retained.max_bytes)
        if data is None:
            finished["store"] = False
            log.warning("response %s not stored: over max_stored_bytes", turn.response_id)
            return
        try:
            retention = turn.retained.retention_s
            await self.store.put(turn.tenant, turn.response_id, data, time.time(), retention)
        except TollwayError:
            raise
        except Exception as exc:
            log.exception("storing response %s failed", turn.response_id)
            raise ServiceUnavailable("The response could not be stored.") from exc


def router(store: ResponseStore, auth: Authenticator) -> APIRouter:
    """``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``."""
    api = APIRouter(prefix=RESPONSES_PATH, tags=["responses"])

    async def stored(request: Request, response_id: str) -> tuple[str, Stored]:
        principal = await auth.authenticate(request.headers.get("authorization"))
        found = await store.get(principal.tenant_id, response_id)
        if found is None:
            raise _not_found(response_id)
        return principal.tenant_id, found

    @api.get("/{response_id}", summary="Retrieve a stored response (your tenant's only)")
    async def get_response(request: Request, response_id: str) -> Response:
        _, found = await stored(request, response_id)
        return json_response(found.response)

    @api.delete("/{response_id}", summary="Delete a stored response, from every store")
    async def delete_response(request: Request, response_id: str) -> Response:
        principal = await auth.authenticate(request.headers.get("authorization"))
        if not await store.delete(principal.tenant_id, response_id):
            raise _not_found(response_id)
        return json_response({"id": response_id, "object": "response.deleted", "deleted": True})

    @api.get("/{response_id}/input_items", summary="The input items of a stored response")
    async def input_items(
        request: Request,
        response_id: str,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
        after: str | None = None,
    ) -> Response:
        _, found = await stored(request, response_id)
        items = list(found.input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise invalid(f"after: no item '{after}' in this response's input", "after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return json_response(
            {
                "object": "list",
                "data": page,
                "has_more": len(items) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    return api
