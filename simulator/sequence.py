"""One generation request as the scheduler sees it, and what one forward step did."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simulator.radix_cache import RadixNode


@dataclass(eq=False)
class SequenceState:
    """One generation request as the scheduler sees it.

    ``output_len`` is how many tokens it will produce; ``max_new_tokens`` is
    what the client allowed (``None``: up to the context length), which is all
    admission may assume (``cap``: the cap the scheduler resolved from it at
    submission). ``allocated`` counts the private KV slots it holds
    (uncached prompt chunks and output), ``prefilled`` the tokens of its
    current input that have KV.
    """

    rid: str
    prompt_ids: Sequence[int]
    output_len: int
    arrival_time: float
    max_new_tokens: int | None = None
    cap: int = 0
    cached_tokens: int = 0
    generated: int = 0
    allocated: int = 0
    prefilled: int = 0
    input_len: int = 0
    retractions: int = 0
    node: RadixNode | None = None
    output_ids: Sequence[int] = ()
    admitted_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    aborted: bool = False

    @property
    def finished(self) -> bool:
        """Whether every planned token has been produced (or the request was aborted)."""
        return self.aborted or self.generated >= self.output_len

    @property
    def seqlen(self) -> int:
        """Prompt plus output so far (SGLang's ``Req.seqlen``)."""
        return len(self.prompt_ids) + self.generated


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one forward step did and how long it took (model seconds).

    ``batch`` holds the sequences that received a token in this step (a
    prefill step also runs chunks that emit none); ``retracted`` those sent
    back to the queue before it.
    """

    kind: str
    duration: float
    batch: tuple[SequenceState, ...] = ()
    finished: tuple[SequenceState, ...] = ()
    prefill_tokens: int = 0
    cached_tokens: int = 0
    retracted: tuple[SequenceState, ...] = ()
