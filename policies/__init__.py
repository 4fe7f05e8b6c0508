"""Context compression for agent conversations: policies, token counting, validity.

Owns: the compression policies and their configuration, the token counters
(:mod:`policies.tokens`), conversation validity, rolling summaries and their
store interface.

May import: :mod:`tollway` only (pure: no Redis client; the Redis summary store
is a listed exception of ``tests/test_import_rules.py``). Nothing here imports
``gateway``. The
gateway builds the configured policies once (:func:`build_policies`) and
calls :meth:`CompressionPolicy.compress` per request; the result
(:class:`CompressionResult`) says what was sent upstream and what each step
saved. See :mod:`policies.config` for the configuration schema.
"""

from policies.chain import CompressionPolicy
from policies.config import CompressionPolicyConfig
from policies.conversation import Message
from policies.registry import build_policies, build_policy
from policies.result import CompressionResult, StepReport
from policies.summary import Summarizer, render_transcript, summary_request
from policies.summary_store import InMemorySummaryStore, SummaryStore
from policies.tokens import EstimateCounter, TiktokenCounter, TokenCounter, load_counter
from policies.validity import is_valid, problems_of

__all__ = [
    "CompressionPolicy",
    "CompressionPolicyConfig",
    "CompressionResult",
    "EstimateCounter",
    "InMemorySummaryStore",
    "Message",
    "StepReport",
    "Summarizer",
    "SummaryStore",
    "TiktokenCounter",
    "TokenCounter",
    "build_policies",
    "build_policy",
    "is_valid",
    "load_counter",
    "problems_of",
    "render_transcript",
    "summary_request",
]
