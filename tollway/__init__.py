"""Tollway's shared base layer, which every package may import.

Owns: the error hierarchy (:mod:`tollway.errors`; Anthropic's error types by
status in :mod:`tollway.anthropic_errors`), the retry/backoff helper
(:mod:`tollway.backoff`), the RESP client (:mod:`tollway.resp`; its Lua scripts
in :mod:`tollway.resp_script`), SQL and schema helpers (:mod:`tollway.database`,
:mod:`tollway.schema`), CLI tables (:mod:`tollway.clitable`), eager task helpers
(:mod:`tollway.eager`), a request's effective output limit
(:mod:`tollway.output_tokens`) and the one token estimate from JSON bytes
(:mod:`tollway.token_estimate`).

May import: nothing of ours. The one exception is :mod:`tollway.cli`, the top
of the import graph, which composes the ``tollway`` command line from every
package's commands (and which no product module imports).
"""
