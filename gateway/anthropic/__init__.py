"""Anthropic's Messages API (``/v1/messages``), served by translation to chat completions.

The API is a translation at the edge, never a second pipeline: a Messages body is
translated to a chat completions body (:mod:`gateway.anthropic.translate`), runs
through :class:`gateway.pipeline.InferencePipeline` like any chat completion (agent
types, limits, budgets, metering, idempotency, fallbacks), and its answer is
translated back: a JSON body by :mod:`gateway.anthropic.replies`, a stream event
by event by :mod:`gateway.anthropic.stream`. Errors on these routes are in
Anthropic's shape (:mod:`gateway.anthropic.errors`). The handlers are in
:mod:`gateway.anthropic.api`.
"""
