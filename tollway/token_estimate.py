"""The one estimate of a request's tokens from its JSON bytes, for the hot path.

Where a size is needed before (or instead of) counting tokens with a
:class:`policies.tokens.TokenCounter` — admission's prompt estimate, a
worker's KV reservation, a provider's token-rate bucket, the prefix a
session's home worker holds — Tollway divides the length of the JSON by
:data:`JSON_BYTES_PER_TOKEN`: one ``len`` and one integer division, nothing
parsed, so it costs nothing next to the request it sizes.

Calibration: on the 200 tau-bench airline trajectories (``datasets/tau-bench``,
OpenAI chat messages with tool calls, each sent as a chat-completion body
``{"model", "messages"}``) a token of ``cl100k_base`` (counted as
:meth:`policies.tokens.TokenCounter.count_messages` counts a chat prompt) is
4.46 bytes of JSON in total, 4.59 per body at the median (3.73 to 5.22). Four
bytes per token therefore overestimates by 12% in total (per body: median 15%
over, 90th percentile 26% over; 9 of 200 bodies under, by 7% at most): a
margin on the safe side for what it sizes, reservations that are settled or
released with the real counts afterwards.
Where counts matter (compression budgets, usage an upstream did not report),
use the calibrated counters of :mod:`policies.tokens` instead.
"""

from __future__ import annotations

#: Bytes of a chat request's JSON per prompt token (see the module docstring).
JSON_BYTES_PER_TOKEN = 4


def estimate_json_tokens(data: bytes) -> int:
    """Estimated tokens of JSON ``data`` (a request body or its messages), rounded down."""
    return len(data) // JSON_BYTES_PER_TOKEN


#: Bytes of JSON per token for the *fewest* tokens a body may hold: twice the
#: estimate's 4. The calibration set's most was 5.22, but text of long words or
#: repeated phrases reaches 6 (``"hello world " * n`` is 6 bytes a token in
#: Llama 3's tokenizer), and whitespace-heavy code more; 8 leaves room for them.
MAX_JSON_BYTES_PER_TOKEN = 8


def least_tokens(estimate: int) -> int:
    """The fewest tokens a body estimated at ``estimate`` tokens plausibly holds.

    :func:`estimate_json_tokens` reads 4 bytes per token; this reads the same
    bytes at :data:`MAX_JSON_BYTES_PER_TOKEN`: half the estimate, rounded down.
    What is refused for its size is refused on this reading, so a prompt the
    estimate overstates is not turned away.
    """
    return estimate * JSON_BYTES_PER_TOKEN // MAX_JSON_BYTES_PER_TOKEN
