"""Conversations (``/v1/conversations``): a tenant's items, continued by responses.

A conversation is one record in the same store as responses (its id ``conv_…``):
its object (``id``, ``created_at``, ``metadata``) and its items, each with an
``id``. ``POST /v1/responses`` with ``conversation`` prepends the items and,
once the response is finished, appends its input and output items to them.
Each change is a compare-and-swap of the record
(:meth:`~gateway.responsesapi.store.SqlBackend.update`), so concurrent responses on
one conversation never lose each other's items, and
conversations are read from SQL, never from a Redis copy that could be stale.
Every lookup is by the caller's tenant: another tenant's conversation is 404.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Authenticator
from gateway.body import parse_json_object
from gateway.responses import json_response
from gateway.responsesapi.items import input_items, invalid
from gateway.responsesapi.store import ResponseStore, Retained
from tollway.errors import NotFound

CONVERSATIONS_PATH = "/v1/conversations"
_ID = re.compile(r"^conv_[A-Za-z0-9_-]{1,90}$")
#: At most this many items in one create or add (OpenAI's limit).
MAX_ADDED_ITEMS = 20


def not_found(conversation_id: str, param: str | None = None) -> NotFound:
    """404 for a conversation that is not the caller's (or does not exist)."""
    return NotFound(
        f"No conversation found with id '{conversation_id}'.", param=param, code="not_found"
    )


class ConversationStore:
    """Conversations per tenant, in the responses' store and within its size limit."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def create(
        self,
        tenant: str,
        metadata: dict[str, str],
        items: list[dict[str, Any]],
        retained: Retained | None = None,
    ) -> dict[str, Any]:
        """A new conversation holding ``items``: its object."""
        conversation_id = "conv_" + secrets.token_hex(16)
        conversation: dict[str, Any] = {
            "id": conversation_id,
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": metadata,
        }
        data = self._encode(tenant, conversation, items, retained)
        retention = retained.retention_s if retained else None
        backend = self.store.backend
        await backend.put(
            tenant, conversation_id, data, time.time(), cached=False, retention_s=retention
        )
        return conversation

    async def get(self, tenant: str, conversation_id: str) -> tuple[dict[str, Any], list[Any]]:
        """The conversation and its items (404 when it is not the tenant's)."""
        data = None
        if _ID.match(conversation_id):
            data = await self.store.backend.get(tenant, conversation_id, cached=False)
        if data is None:
            raise not_found(conversation_id)
        record = orjson.loads(data)
        if record.get("tenant") != tenant:
            raise not_found(conversation_id)
        return record["conversation"], record["items"]

    async def change(
        self,
        tenant: str,
        conversation_id: str,
        retained: Retained | None = None,
        *,
        metadata: dict[str, str] | None = None,
        add: list[dict[str, Any]] | None = None,
        remove: str | None = None,
    ) -> tuple[dict[str, Any], list[Any]]:
        """Set the metadata, append items or remove one, in one transaction."""

        def apply(data: bytes) -> bytes:
            record = orjson.loads(data)
            conversation, items = record["conversation"], record["items"]
            if metadata is not None:
                conversation["metadata"] = metadata
            if add:
                items.extend(add)
            if remove is not None:
                kept = [i for i in items if i.get("id") != remove]
                if len(kept) == len(items):
                    raise NotFound(f"No item found with id '{remove}'.", code="not_found")
                items = kept
            return self._encode(tenant, conversation, items, retained)

        changed = None
        if _ID.match(conversation_id):
            changed = await self.store.backend.update(tenant, conversation_id, apply)
        if changed is None:
            raise not_found(conversation_id)
        record = orjson.loads(changed)
        return record["conversation"], record["items"]

    async def delete(self, tenant: str, conversation_id: str) -> bool:
        """Delete the conversation and its items; False when there was none."""
        if not _ID.match(conversation_id):
            return False
        return await self.store.backend.delete(tenant, conversation_id)

    def _encode(
        self,
        tenant: str,
        conversation: dict[str, Any],
        items: list[Any],
        retained: Retained | None,
    ) -> bytes:
        data = orjson.dumps({"tenant": tenant, "conversation": conversation, "items": items})
        limit = retained.max_bytes if retained else self.store.max_bytes
        if len(data) > limit:
            raise invalid(
                f"The conversation would hold {len(data)} bytes, over the limit of "
                f"{limit}; start a new conversation",
                "conversation",
            )
        return data


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid("metadata: an object of strings", "metadata")
    if len(value) > 16:
        raise invalid("metadata: at most 16 pairs", "metadata")
    return value


def _added(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ADDED_ITEMS:
        raise invalid(f"items: a list of at most {MAX_ADDED_ITEMS} items", "items")
    return input_items(value) if value else []


def _page(items: list[Any], limit: int, order: str, after: str | None) -> dict[str, Any]:
    ordered = list(reversed(items)) if order == "desc" else list(items)
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise invalid(f"after: no item '{after}' in this list", "after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "has_more": len(ordered) > limit,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


Limit = Annotated[int, Query(ge=1, le=100)]
Order = Annotated[str, Query(pattern="^(asc|desc)$")]


def router(conversations: ConversationStore, auth: Authenticator) -> APIRouter:
    """The ``/v1/conversations`` routes (the caller's tenant's conversations only)."""
    api = APIRouter(prefix=CONVERSATIONS_PATH, tags=["conversations"])

    async def caller(request: Request) -> tuple[str, Retained]:
        principal = await auth.authenticate(request.headers.get("authorization"))
        return principal.tenant_id, conversations.store.limits(principal)

    async def tenant_of(request: Request) -> str:
        return (await caller(request))[0]

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        return parse_json_object(raw or b"{}", 64)

    @api.post("", summary="Create a conversation")
    async def create(request: Request) -> Response:
        tenant, retained = await caller(request)
        body = await body_of(request)
        items = _added(body.get("items"))
        metadata = _metadata(body.get("metadata"))
        conversation = await conversations.create(tenant, metadata, items, retained)
        return json_response(conversation)

    @api.get("/{conversation_id}", summary="Retrieve a conversation")
    async def retrieve(request: Request, conversation_id: str) -> Response:
        conversation, _ = await conversations.get(await tenant_of(request), conversation_id)
        return json_response(conversation)

    @api.post("/{conversation_id}", summary="Update a conversation's metadata")
    async def update(request: Request, conversation_id: str) -> Response:
        tenant, retained = await caller(request)
        body = await body_of(request)
        if "metadata" not in body:
            raise invalid("metadata: Field required", "metadata")
        metadata = _metadata(body["metadata"])
        conversation, _ = await conversations.change(
            tenant, conversation_id, retained, metadata=metadata
        )
        return json_response(conversation)

    @api.delete("/{conversation_id}", summary="Delete a conversation and its items")
    async def delete(request: Request, conversation_id: str) -> Response:
        if not await conversations.delete(await tenant_of(request), conversation_id):
            raise not_found(conversation_id)
        deleted = {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
        return json_response(deleted)

    @api.get("/{conversation_id}/items", summary="List a conversation's items")
    async def list_items(
        request: Request,
        conversation_id: str,
        limit: Limit = 20,
        order: Order = "desc",
        after: str | None = None,
    ) -> Response:
        _, items = await conversations.get(await tenant_of(request), conversation_id)
        return json_response(_page(items, limit, order, after))

    @api.post("/{conversation_id}/items", summary="Add items to a conversation")
    async def add_items(request: Request, conversation_id: str) -> Response:
        tenant, retained = await caller(request)
        added = _added((await body_of(request)).get("items"))
        if not added:
            raise invalid("items: at least one item", "items")
        await conversations.change(tenant, conversation_id, retained, add=added)
        return json_response(_page(added, MAX_ADDED_ITEMS, "asc", None))

    @api.get("/{conversation_id}/items/{item_id}", summary="Retrieve a conversation item")
    async def get_item(request: Request, conversation_id: str, item_id: str) -> Response:
        _, items = await conversations.get(await tenant_of(request), conversation_id)
        for item in items:
            if item.get("id") == item_id:
                return json_response(item)
        raise NotFound(f"No item found with id '{item_id}'.", code="not_found")

    @api.delete("/{conversation_id}/items/{item_id}", summary="Delete a conversation item")
    async def delete_item(request: Request, conversation_id: str, item_id: str) -> Response:
        tenant, retained = await caller(request)
        conversation, _ = await conversations.change(
            tenant, conversation_id, retained, remove=item_id
        )
        return json_response(conversation)

    return api
