"""What one compression did: the result object the gateway reports from.

The gateway turns :class:`CompressionResult` into the response header
``x-tollway-compression`` (:meth:`CompressionResult.header_value`), the
usage record's savings fields and metrics (one sample per
:class:`StepReport`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.conversation import Message


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one step of a policy chain did.

    ``kind`` is the step's ``type`` in the configuration
    (``mask_observations``...); ``messages_changed`` counts messages replaced,
    ``messages_removed`` those dropped (a summary message inserted counts as
    changed); ``note`` is a short human-readable account, or why the step did
    nothing (``below trigger``...).
    """

    kind: str
    tokens_before: int
    tokens_after: int
    messages_changed: int = 0
    messages_removed: int = 0
    note: str = ""

    @property
    def changed(self) -> bool:
        """Whether the step changed the conversation."""
        return bool(self.messages_changed or self.messages_removed)

    @property
    def tokens_saved(self) -> int:
        """Tokens this step removed (negative if it added some)."""
        return self.tokens_before - self.tokens_after


@dataclass(frozen=True, slots=True)
class CompressionResult:
    """The outcome of compressing one conversation with one policy.

    ``messages`` is the conversation to send upstream. When nothing changed
    it *is* the list the caller passed (same object, messages untouched), so
    the gateway can forward the original request bytes. ``skipped`` says why
    the whole policy did nothing: ``"below_trigger"``, ``"invalid_input"``
    (the request is not a valid conversation: forwarded as it is, the
    upstream will say why), or ``None``. ``tokens_before``/``tokens_after``
    count the whole prompt with the policy's counter (``tokenizer``).
    """

    policy: str
    messages: list[Message]
    tokens_before: int
    tokens_after: int
    tokenizer: str
    steps: tuple[StepReport, ...] = field(default=())
    skipped: str | None = None

    @property
    def changed(self) -> bool:
        """Whether the conversation sent upstream differs from the one received."""
        return any(step.changed for step in self.steps)

    @property
    def tokens_saved(self) -> int:
        """``tokens_before - tokens_after``."""
        return self.tokens_before - self.tokens_after

    def header_value(self) -> str:
        """The value of the ``x-tollway-compression`` response header.

        ``policy=agentic; tokens_before=41234; tokens_after=12011`` (plus
        ``; skipped=below_trigger`` when the policy did nothing for a reason).
        """
        value = (
            f"policy={self.policy}; tokens_before={self.tokens_before}; "
            f"tokens_after={self.tokens_after}"
        )
        if self.skipped:
            value += f"; skipped={self.skipped}"
        return value
