"""OpenAI's Responses API (``/v1/responses``), served by translation to chat completions.

The API is a translation at the edge, never a second pipeline: a ``CreateResponse``
body (with the items of its ``previous_response_id`` chain) is translated to a chat
completions body (:mod:`gateway.responsesapi.translate`), runs through
:class:`gateway.pipeline.InferencePipeline` like any chat completion, and its answer
is translated back (:mod:`gateway.responsesapi.replies`,
:mod:`gateway.responsesapi.stream`) and stored per tenant
(:mod:`gateway.responsesapi.store`). Handlers: :mod:`gateway.responsesapi.api`.
"""
