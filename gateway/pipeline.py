"""The request pipeline for OpenAI inference calls.

authenticate → parse and validate → resolve agent type, session and model →
forward → respond → observe. Each request gets a :class:`RequestRecord` that
is finished exactly once: when a JSON response is ready, when an error is
raised, or when a stream ends (completed, broken or cancelled by the client).
Later stages (idempotency, limits, compression, metering) plug in here.
Another API is a translation at the edge (:class:`Translation`): its body becomes
a chat completions body right after parsing, and the rest is this pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from backends.base import UpstreamRequest, UpstreamResponse
from billing.usage import UsageSource
from gateway.admitting import Admitter, Pending
from gateway.agents import AgentResolver, apply_max_tokens, prefix_affinity
from gateway.auth import Authenticator
from gateway.body import parse_json_object, read_body
from gateway.compressing import Compressor
from gateway.config import AgentTypeConfig, RequestTimeouts
from gateway.embeddings import (
    EMBEDDINGS_PATH,
    EmbeddingView,
    shape_response,
    upstream_body,
    validate_embedding,
    wrong_task,
)
from gateway.idempotency import (
    IdempotencyCoordinator,
    Replay,
    idempotency_key_of,
    replay_response,
    request_fingerprint,
    wait_preference,
)
from gateway.limits import Ticket, ticket_headers
from gateway.metering import Metering
from gateway.outcome import RequestRecord
from gateway.registry import ModelRegistry
from gateway.relay import DEFAULT_MAX_EVENT_BYTES, Opening, read_opening
from gateway.requestid import new_request_id, request_id_of
from gateway.responding import Responder
from gateway.tracing import NullTracer, Tracer, trace_id_of
from gateway.translation import Translation
from gateway.validation import validate_chat, validate_completion
from policies.tokens import EstimateCounter, TokenCounter
from tollway.errors import RateLimited, TollwayError, UpstreamError, UpstreamRejected

log = logging.getLogger("tollway.request")

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"

Finisher = Callable[[RequestRecord], None]
#: 429 codes that mean a route is saturated (fall back), not that a tenant is limited.
_SATURATED = frozenset({"pool_saturated", "upstream_saturated"})


@dataclass(slots=True, frozen=True)
class _Call:
    model: str
    stream: bool
    include_usage: bool
    embedding: EmbeddingView | None = None


def _timeouts(
    model: RequestTimeouts | None, profile: AgentTypeConfig | None
) -> tuple[float | None, float | None]:
    """First-byte and total timeouts: the agent type's, else the model's, else the pool's."""
    chosen = [t for t in (profile.timeouts if profile else None, model) if t is not None]
    first_byte = next((t.first_byte_s for t in chosen if t.first_byte_s is not None), None)
    total = next((t.total_s for t in chosen if t.total_s is not None), None)
    return first_byte, total


class _AfterSend(BackgroundTask):
    """Runs ``release(record)`` once the response is sent: a :class:`BackgroundTask`
    without its per-request inspection of the callable."""

    def __init__(self, release: Callable[[RequestRecord], None], record: RequestRecord) -> None:
        self.release = release
        self.record = record

    async def __call__(self) -> None:
        self.release(self.record)


class InferencePipeline:
    """Handles ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``, and
    the APIs served by translation to chat completions (:meth:`translated`:
    ``/v1/messages``)."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        registry: ModelRegistry,
        agents: AgentResolver,
        max_body_bytes: int,
        finish: Finisher,
        max_json_depth: int = 64,
        max_messages: int = 4096,
        metering: Metering | None = None,
        admitter: Admitter | None = None,
        idempotency: IdempotencyCoordinator | None = None,
        compressor: Compressor | None = None,
        tracer: Tracer | None = None,
        counter: TokenCounter | None = None,
        default_output_tokens: int = 256,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.auth = auth
        self.registry = registry
        self.agents = agents
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.max_messages = max_messages
        self.finish = finish
        self.metering = metering
        self.admitter = admitter
        self.idempotency = idempotency
        self.compressor = compressor
        self.tracer: Tracer = tracer or NullTracer()
        self.max_event_bytes = max_event_bytes
        self.responder = Responder(
            metering, counter or EstimateCounter(), self._close, max_event_bytes
        )
        self.default_output_tokens = default_output_tokens

    async def chat(self, request: Request) -> Response:
        """``POST /v1/chat/completions``."""
        return await self._handle(request, CHAT_PATH)

    async def completions(self, request: Request) -> Response:
        """``POST /v1/completions``."""
        return await self._handle(request, COMPLETIONS_PATH)

    async def embeddings(self, request: Request) -> Response:
        """``POST /v1/embeddings`` (:mod:`gateway.embeddings`): no output tokens, never
        streamed, served only by models whose route serves embeddings."""
        return await self._handle(request, EMBEDDINGS_PATH)

    async def translated(self, request: Request, translation: Translation) -> Response:
        """A request of another API, translated to a chat completion at the edge: the
        chat completion's response (the caller translates it back)."""
        return await self._handle(request, CHAT_PATH, translation)

    async def _handle(
        self, request: Request, path: str, translation: Translation | None = None
    ) -> Response:
        endpoint = translation.endpoint if translation is not None else path
        record = RequestRecord(
            request_id=request_id_of(request.scope) or new_request_id(), endpoint=endpoint
        )
        try:
            with self.tracer.span(
                "tollway.request", request_id=record.request_id, path=path
            ) as span:
                if span is not None:  # tracing on: the access line names the trace
                    record.trace_id = trace_id_of(span)
                response = await self._run(request, path, record, translation)
        except TollwayError as exc:
            record.status = "upstream_error" if isinstance(exc, UpstreamError) else "rejected"
            record.http_status = exc.status_code
            record.error_code = exc.code
            if record.ticket is not None:
                exc.headers.update({**ticket_headers(record.ticket), **exc.headers})
            self._abandon(record)
            self._close(record)
            raise
        except BaseException:
            record.status = "client_cancelled"
            record.http_status = 499
            self._abandon(record)
            self._close(record)
            raise
        if not record.stream:
            # The usage record is durable before the response leaves (metered in the
            # responder, or here); settling the limits, metrics and the access log wait
            # until the response is sent, off the request's critical path.
            self._meter(record)
            response.background = _AfterSend(self._release, record)
        return response

    @staticmethod
    def _abandon(record: RequestRecord) -> None:
        """Free the idempotency key of a request that did not complete."""
        if record.lease is not None:
            record.lease.abandon_soon()
            record.lease = None

    def _close(self, record: RequestRecord, gpu_seconds: float = 0.0) -> None:
        """Finish a record: meter it (if not yet), settle its limits, count it, log it."""
        self._meter(record, gpu_seconds)
        self._release(record)

    def _meter(self, record: RequestRecord, gpu_seconds: float = 0.0) -> None:
        """Meter a record that the responder did not (errors, bodies that are not JSON)."""
        if record.ended is None:
            record.ended = time.perf_counter()
        try:
            if self.metering is not None and not record.metered and record.tenant_id:
                upstream = record.usage is not None and not record.usage_estimated
                source = UsageSource.UPSTREAM if upstream else UsageSource.ESTIMATED
                if record.status == "client_cancelled":
                    source = UsageSource.COUNTED
                quote = self.metering.quote(record, gpu_seconds)
                self.metering.submit(self.metering.usage_record(record, gpu_seconds, quote, source))
                record.metered = True
        except Exception:  # noqa: BLE001 - observing must never fail a request
            log.exception("metering request %s failed", record.request_id)

    def _release(self, record: RequestRecord) -> None:
        """Settle a finished record's limits, count it, log it."""
        try:
            if self.admitter is not None:
                for ticket in (record.ticket, record.agent_ticket):
                    if ticket is not None:
                        self.admitter.settle(ticket, record)
                record.ticket = record.agent_ticket = None
            self.finish(record)
        except Exception:  # noqa: BLE001 - observing must never fail a request
            log.exception("finishing request %s failed", record.request_id)

    async def _run(
        self, request: Request, path: str, record: RequestRecord, translation: Translation | None
    ) -> Response:
        # One dict of the headers, instead of a scan of the raw list per lookup.
        headers_in = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
        span = self.tracer.span
        credentials = headers_in.get("authorization")
        if translation is not None:
            credentials = translation.authorization
        with span("tollway.authenticate"):
            principal = await self.auth.authenticate(credentials)
        record.tenant_id, record.key_id = principal.tenant_id, principal.key_id
        record.key_prefix = principal.key_prefix
        with span("tollway.parse"):
            raw = await read_body(request, self.max_body_bytes)
            body = parse_json_object(raw, self.max_json_depth)
            if translation is not None:
                body = translation.to_chat(body)
            call = self._validate(path, body, self.max_messages)
        idem_key = (
            idempotency_key_of(headers_in, body, max_length=self.idempotency.config.max_key_length)
            if self.idempotency is not None
            else None
        )
        with span("tollway.resolve"):
            agent = self.agents.resolve(headers_in, body, call.model, principal)
        record.agent_type, record.session_id = agent.agent_type, agent.session_id
        entry = self.registry.entry(agent.model)
        record.model = entry.name
        principal.check_model(entry.name)
        if entry.embedding != (call.embedding is not None):
            raise wrong_task(entry.name, entry.embedding)
        backend = self.registry.backend(entry)
        record.route = backend.route
        headers: dict[str, str] = {}
        if idem_key is not None and self.idempotency is not None:
            fingerprint = request_fingerprint(
                record.endpoint, body, {"agent_type": agent.agent_type or ""}
            )
            with span("tollway.idempotency"):
                outcome = await self.idempotency.begin(
                    principal.tenant_id, idem_key, fingerprint, wait_s=wait_preference(headers_in)
                )
            if isinstance(outcome, Replay):
                record.metered = True  # billed once, by the first request
                record.http_status = outcome.response.status
                return replay_response(outcome.response)
            record.lease = outcome.lease
        max_tokens = apply_max_tokens(body, agent.profile) if call.embedding is None else None
        policy = agent.profile.compression if agent.profile is not None else None
        if principal.compression is not None:  # the key's own choice wins
            policy = None if principal.compression == "none" else principal.compression
        if call.embedding is not None:  # no conversation to compress
            policy = None
        if self.compressor is not None and policy is not None:
            with span("tollway.compress"):
                report = await self.compressor.apply(policy, body, record)
            if report is not None:
                headers["x-tollway-compression"] = report
        n = body["n"] if isinstance(body.get("n"), int) else 1
        prompt_estimate = (
            record.tokens_after_compression
            if record.tokens_after_compression is not None
            else len(raw) // 4
        )
        output = (max_tokens or self.default_output_tokens) * n if call.embedding is None else 0
        chain = self.registry.routes_for(
            entry, tuple(agent.profile.fallbacks) if agent.profile else ()
        )
        pending: Pending | None = None
        opening: Opening | None = None
        if self.admitter is not None:
            # Only self-hosted pools: a hosted provider may bill a request we then drop.
            solo = agent.profile is None or agent.profile.limits is None
            if solo and all(b.route.startswith("pool:") for b in chain):
                pending = self.admitter.speculate(record, principal, prompt_estimate, output)
            if pending is None:
                with span("tollway.admit"):
                    record.ticket = await self.admitter.admit(
                        record, principal, prompt_estimate, output
                    )
                if record.ticket is not None:
                    headers.update(ticket_headers(record.ticket))
            if agent.profile is not None and agent.profile.limits is not None:
                record.agent_ticket = await self.admitter.admit_agent_type(
                    record, principal.tenant_id, agent.profile.limits, prompt_estimate + output
                )
        affinity = "s:" + agent.session_id if agent.session_id else prefix_affinity(body)
        first_byte_s, total_s = _timeouts(entry.timeouts, agent.profile)
        try:
            for attempt, backend in enumerate(chain):
                self._prepare_upstream_body(body, call, backend.upstream_model)
                try:
                    with span("tollway.upstream", route=backend.route, attempt=attempt):
                        upstream = await backend.send(
                            UpstreamRequest(
                                path=path,
                                body=orjson.dumps(body),
                                stream=call.stream,
                                request_id=record.request_id,
                                affinity=affinity,
                                tenant=principal.tenant_id,
                                priority=agent.profile.priority if agent.profile else 0,
                                kv_tokens=prompt_estimate + output,
                                payload=body,
                                first_byte_timeout_s=first_byte_s,
                                total_timeout_s=total_s,
                            )
                        )
                        if call.stream:
                            # An error the upstream reports as its stream's first event
                            # is an error answer: found before the response is committed.
                            opening = await read_opening(upstream, self.max_event_bytes)
                    break
                except (UpstreamError, RateLimited) as exc:
                    # Fall back only before any byte reached the client, and never for the
                    # client's own mistakes (the upstream's 4xx), nor for tenant limits.
                    client_fault = isinstance(exc, UpstreamRejected)
                    ours = isinstance(exc, RateLimited) and exc.code not in _SATURATED
                    if client_fault or ours or attempt == len(chain) - 1:
                        raise
                    log.warning("route %s failed (%s); falling back", backend.route, exc.code)
        except Exception:
            if pending is not None:  # a refusal of the admission wins over the upstream's error
                record.ticket = await self._answer(pending, record)
            raise
        except BaseException:
            if pending is not None and self.admitter is not None:
                self.admitter.abandon(pending, record)
            raise
        if pending is not None:
            await self._conclude(pending, upstream, record, headers)
        record.route, record.worker = upstream.route, upstream.worker
        headers["x-tollway-route"] = upstream.route
        if agent.agent_type is not None:
            headers["x-tollway-agent-type"] = agent.agent_type
        if call.embedding is not None:
            view = call.embedding
            return await self.responder.json(
                upstream,
                record,
                entry.name,
                body,
                headers,
                shape=lambda data: shape_response(data, view.encoding_format, view.inputs),
            )
        if not call.stream:
            return await self.responder.json(upstream, record, entry.name, body, headers)
        record.stream = True
        return self.responder.stream(
            upstream, record, call.include_usage, backend.upstream_model, body, headers, opening
        )

    async def _answer(self, pending: Pending, record: RequestRecord) -> Ticket | None:
        """A speculative admission's ticket (or its refusal). Shielded: a client that goes
        away must not cancel an admission Redis may already have applied; its ticket
        then goes to :meth:`Admitter.abandon`, which settles it when it arrives."""
        if pending.done():
            return pending.result()
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if self.admitter is not None:
                self.admitter.abandon(pending, record)
            raise

    async def _conclude(
        self,
        pending: Pending,
        upstream: UpstreamResponse,
        record: RequestRecord,
        headers: dict[str, str],
    ) -> None:
        """Wait for a speculative admission; on a refusal drop the upstream's answer."""
        try:
            record.ticket = await self._answer(pending, record)
        except BaseException:
            upstream.gpu_seconds()
            await upstream.aclose()
            raise
        if record.ticket is not None:
            headers.update(ticket_headers(record.ticket))

    @staticmethod
    def _validate(path: str, body: dict[str, Any], max_messages: int) -> _Call:
        if path == CHAT_PATH:
            chat = validate_chat(body, max_messages=max_messages)
            return _Call(chat.model, chat.stream, chat.include_usage)
        if path == EMBEDDINGS_PATH:
            view = validate_embedding(body)
            return _Call(view.model, False, False, view)
        comp = validate_completion(body)
        return _Call(comp.model, comp.stream, comp.include_usage)

    @staticmethod
    def _prepare_upstream_body(body: dict[str, Any], call: _Call, upstream_model: str) -> None:
        """Name the upstream's model and always ask it for usage."""
        body["model"] = upstream_model
        if call.embedding is not None:
            upstream_body(body)
        if call.stream:
            options = body.get("stream_options")
            merged = dict(options) if isinstance(options, dict) else {}
            merged["include_usage"] = True
            body["stream_options"] = merged
