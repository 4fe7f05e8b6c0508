"""The texts Tollway writes into a conversation, and how to recognize them.

Every marker starts with ``[tollway: `` so a later pass (or a second
compression of the same conversation) recognizes what Tollway already
replaced and leaves it alone; that is what makes the policies idempotent.
"""

from __future__ import annotations

PREFIX = "[tollway: "
_MAX_MARKER_CHARS = 600


def truncated(cut_chars: int, cut_tokens: int, tool: str) -> str:
    """The marker put in the middle of a truncated tool result."""
    return (
        f"\n\n{PREFIX}cut {cut_chars:,} characters (about {cut_tokens:,} tokens) "
        f"from the middle of this {tool or 'tool'} result]\n\n"
    )


def masked(tool: str, tokens: int) -> str:
    """The placeholder that replaces a masked tool result."""
    return f"{PREFIX}result of {tool or 'a tool'} masked; {tokens:,} tokens removed]"


def duplicate(tool: str, tokens: int, keep: str) -> str:
    """The placeholder that replaces a tool result identical to another one."""
    where = "an earlier" if keep == "first" else "a later"
    return f"{PREFIX}identical to {where} result of {tool or 'a tool'}; {tokens:,} tokens removed]"


SUMMARY_HEADING = f"{PREFIX}summary of the earlier conversation]"


def summary(text: str) -> str:
    """The content of the user message that carries a rolling summary."""
    return f"{SUMMARY_HEADING}\n\n{text.strip()}"


def is_placeholder(content: object) -> bool:
    """Whether ``content`` is a whole placeholder Tollway wrote (masked or duplicate)."""
    return (
        isinstance(content, str)
        and content.startswith(PREFIX)
        and content.endswith(" tokens removed]")
        and len(content) <= _MAX_MARKER_CHARS
    )


def is_summary(content: object) -> bool:
    """Whether ``content`` is a rolling summary Tollway inserted."""
    return isinstance(content, str) and content.startswith(SUMMARY_HEADING)
