"""The request pipeline for OpenAI inference calls.

:meth:`InferencePipeline._run` calls the stages in order, each found by name:

=====================  ==============================================================
stage                  where
=====================  ==============================================================
authenticate           :meth:`~InferencePipeline._authenticate` (:mod:`gateway.auth`)
parse and validate     :meth:`~InferencePipeline._parse` (:mod:`gateway.body`,
                       :mod:`gateway.calls`)
agent and model        :meth:`~InferencePipeline._resolve_agent` (:mod:`gateway.agents`,
                       :mod:`gateway.registry`)
idempotency            :meth:`~InferencePipeline._claim_idempotency_key`
                       (:mod:`gateway.idempotency`)
compression            :meth:`~InferencePipeline._compress` (:mod:`gateway.compressing`)
admission              :meth:`gateway.admitting.Admitter.admit_request`
fallback chain         :meth:`~InferencePipeline._forward` (:mod:`gateway.fallback`)
respond                :class:`gateway.responding.Responder`
finish the record      :class:`gateway.finishing.RecordFinisher`
=====================  ==============================================================

Each request gets a :class:`RequestRecord` that is finished exactly once: when a
JSON response is ready, when an error is raised, or when a stream ends
(completed, broken or cancelled by the client). Another API is a translation at
the edge (:class:`Translation`): its body becomes a chat completions body right
after parsing, and the rest is this pipeline.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from backends.base import Backend, UpstreamRequest, UpstreamResponse
from gateway.admitting import Admitter, Pending
from gateway.agents import (
    AgentContext,
    AgentResolver,
    apply_max_tokens,
    prefix_affinity,
    request_timeouts,
)
from gateway.auth import Authenticator, Principal
from gateway.body import parse_json_object, read_body
from gateway.calls import CHAT_PATH, COMPLETIONS_PATH, Call, RequestSize, call_of
from gateway.compressing import Compressor
from gateway.embeddings import EMBEDDINGS_PATH, shape_response, upstream_body, wrong_task
from gateway.fallback import send_along
from gateway.finishing import Finisher, RecordFinisher
from gateway.idempotency import (
    IdempotencyCoordinator,
    Replay,
    idempotency_key_of,
    replay_response,
    request_fingerprint,
    wait_preference,
)
from gateway.limits import ticket_headers
from gateway.metering import Metering
from gateway.outcome import RequestRecord
from gateway.registry import ModelEntry, ModelRegistry
from gateway.relay import DEFAULT_MAX_EVENT_BYTES, Opening
from gateway.requestid import new_request_id, request_id_of
from gateway.responding import Responder
from gateway.tracing import NullTracer, Tracer, trace_id_of
from gateway.translation import Translation
from policies.tokens import EstimateCounter, TokenCounter
from tollway.errors import TollwayError, UpstreamError
from tollway.token_estimate import estimate_json_tokens, least_tokens

log = logging.getLogger("tollway.request")


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
        #: Each record's end: metered once, limits settled, counted, logged.
        self.finishing = RecordFinisher(finish, metering, admitter)
        self.responder = Responder(
            metering, counter or EstimateCounter(), self.finishing.close, max_event_bytes
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
            self.finishing.abandon(record)
            self.finishing.close(record)
            raise
        except BaseException:
            record.status = "client_cancelled"
            record.http_status = 499
            self.finishing.abandon(record)
            self.finishing.close(record)
            raise
        if not record.stream:
            # The usage record is durable before the response leaves (metered in the
            # responder, or here); settling the limits, metrics and the access log wait
            # until the response is sent, off the request's critical path.
            self.finishing.meter(record)
            response.background = self.finishing.after_send(record)
        return response

    async def _run(
        self, request: Request, path: str, record: RequestRecord, translation: Translation | None
    ) -> Response:
        """The stages in order; each is a method below, named for what it does."""
        # One dict of the headers, instead of a scan of the raw list per lookup.
        headers_in = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
        principal = await self._authenticate(headers_in, record, translation)
        raw, body, call = await self._parse(request, path, principal, translation)
        idem_key = self._idempotency_key(headers_in, body)
        agent, entry = self._resolve_agent(headers_in, body, call, principal, record)
        if idem_key is not None:
            asked = translation.asked() if translation and translation.asked else body
            replay = await self._claim_idempotency_key(
                idem_key, headers_in, asked, agent, principal, record
            )
            if replay is not None:
                return replay
        headers: dict[str, str] = {}
        max_tokens = None
        if call.embedding is None:  # embeddings: no output tokens, no conversation
            max_tokens = apply_max_tokens(body, agent.profile)
            await self._compress(body, agent, principal, record, headers)
        else:
            upstream_body(body)
        prompt = (
            record.tokens_after_compression
            if record.tokens_after_compression is not None
            else estimate_json_tokens(raw)
        )
        n = body["n"] if isinstance(body.get("n"), int) else 1
        output = (max_tokens or self.default_output_tokens) * n if call.embedding is None else 0
        chain = self.registry.routes_for(
            entry, tuple(agent.profile.fallbacks) if agent.profile else ()
        )
        pending: Pending | None = None
        if self.admitter is not None:  # admission (a speculative one answers after dispatch)
            pools_only = all(b.route.startswith("pool:") for b in chain)
            pending = await self.admitter.admit_request(
                record, principal, agent.profile, pools_only, prompt, output, self.tracer
            )
            if record.ticket is not None:
                headers.update(ticket_headers(record.ticket))
        size = RequestSize(prompt + output, least_tokens(prompt), (max_tokens or 0) * n)
        backend, upstream, opening = await self._forward(
            path, record, principal, agent, entry, chain, body, call, size, pending
        )
        if pending is not None and self.admitter is not None:
            await self.admitter.conclude(pending, upstream, record)
            if record.ticket is not None:
                headers.update(ticket_headers(record.ticket))
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

    async def _authenticate(
        self, headers_in: dict[str, str], record: RequestRecord, translation: Translation | None
    ) -> Principal:
        """Who is calling: the bearer key (or the translated API's own credentials)."""
        credentials = headers_in.get("authorization")
        if translation is not None:
            credentials = translation.authorization
        with self.tracer.span("tollway.authenticate"):
            principal = await self.auth.authenticate(credentials)
        record.tenant_id, record.key_id = principal.tenant_id, principal.key_id
        record.key_prefix = principal.key_prefix
        return principal

    async def _parse(
        self,
        request: Request,
        path: str,
        principal: Principal,
        translation: Translation | None,
    ) -> tuple[bytes, dict[str, Any], Call]:
        """The body read within the limit, parsed once, translated (with what the
        translation loads for the caller first, e.g. a stored chain), and validated."""
        with self.tracer.span("tollway.parse"):
            raw = await read_body(request, self.max_body_bytes)
            body = parse_json_object(raw, self.max_json_depth)
            if translation is not None:
                if translation.load is not None:
                    await translation.load(body, principal)
                body = translation.to_chat(body)
            return raw, body, call_of(path, body, self.max_messages)

    def _idempotency_key(self, headers_in: dict[str, str], body: dict[str, Any]) -> str | None:
        """The request's ``Idempotency-Key`` (read before agent resolution strips metadata)."""
        if self.idempotency is None:
            return None
        limit = self.idempotency.config.max_key_length
        return idempotency_key_of(headers_in, body, max_length=limit)

    def _resolve_agent(
        self,
        headers_in: dict[str, str],
        body: dict[str, Any],
        call: Call,
        principal: Principal,
        record: RequestRecord,
    ) -> tuple[AgentContext, ModelEntry]:
        """The agent type, its profile and session, and the public model (which the key
        must be allowed)."""
        with self.tracer.span("tollway.resolve"):
            agent = self.agents.resolve(headers_in, body, call.model, principal)
        record.agent_type, record.session_id = agent.agent_type, agent.session_id
        entry = self.registry.entry(agent.model)
        record.model = entry.name
        principal.check_model(entry.name)
        if entry.embedding != (call.embedding is not None):
            raise wrong_task(entry.name, entry.embedding)
        record.route = self.registry.backend(entry).route
        return agent, entry

    async def _claim_idempotency_key(
        self,
        key: str,
        headers_in: dict[str, str],
        asked: dict[str, Any],
        agent: AgentContext,
        principal: Principal,
        record: RequestRecord,
    ) -> Response | None:
        """The first response again for a repeat (billed once), else the key's lease.

        ``asked`` is the body the fingerprint covers: what the client sent (before a
        translation that may depend on stored state), else the parsed body."""
        assert self.idempotency is not None  # a key is read only with idempotency on
        fingerprint = request_fingerprint(
            record.endpoint, asked, {"agent_type": agent.agent_type or ""}
        )
        with self.tracer.span("tollway.idempotency"):
            outcome = await self.idempotency.begin(
                principal.tenant_id, key, fingerprint, wait_s=wait_preference(headers_in)
            )
        if isinstance(outcome, Replay):
            record.metered = True  # billed once, by the first request
            record.http_status = outcome.response.status
            return replay_response(outcome.response)
        record.lease = outcome.lease
        return None

    async def _compress(
        self,
        body: dict[str, Any],
        agent: AgentContext,
        principal: Principal,
        record: RequestRecord,
        headers: dict[str, str],
    ) -> None:
        """Shrink the conversation by the agent type's policy (or the key's own choice)."""
        policy = agent.profile.compression if agent.profile is not None else None
        if principal.compression is not None:  # the key's own choice wins
            policy = None if principal.compression == "none" else principal.compression
        if self.compressor is not None and policy is not None:
            with self.tracer.span("tollway.compress"):
                report = await self.compressor.apply(policy, body, record)
            if report is not None:
                headers["x-tollway-compression"] = report

    async def _forward(
        self,
        path: str,
        record: RequestRecord,
        principal: Principal,
        agent: AgentContext,
        entry: ModelEntry,
        chain: list[Backend],
        body: dict[str, Any],
        call: Call,
        size: RequestSize,
        pending: Pending | None,
    ) -> tuple[Backend, UpstreamResponse, Opening | None]:
        """The fallback chain (:mod:`gateway.fallback`) with the request's routing hints.

        When it fails, a speculative admission's refusal wins over its error.
        """
        affinity = "s:" + agent.session_id if agent.session_id else prefix_affinity(body)
        first_byte_s, total_s = request_timeouts(entry.timeouts, agent.profile)
        priority = agent.profile.priority if agent.profile else 0

        def request_for(data: bytes) -> UpstreamRequest:
            return UpstreamRequest(
                path=path,
                body=data,
                stream=call.stream,
                request_id=record.request_id,
                affinity=affinity,
                tenant=principal.tenant_id,
                priority=priority,
                kv_tokens=size.kv_tokens,
                least_prompt_tokens=size.least_prompt_tokens,
                max_output_tokens=size.max_output_tokens,
                payload=body,
                first_byte_timeout_s=first_byte_s,
                total_timeout_s=total_s,
            )

        try:
            return await send_along(
                chain, body, call.stream, request_for, self.tracer.span, self.max_event_bytes
            )
        except Exception:
            if pending is not None and self.admitter is not None:
                record.ticket = await self.admitter.answer(pending, record)
            raise
        except BaseException:
            if pending is not None and self.admitter is not None:
                self.admitter.abandon(pending, record)
            raise
