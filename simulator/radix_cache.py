"""A radix tree over token ids: SGLang's prefix cache, minus the GPU tensors.

Each node holds a run of token ids (its edge label); a path from the root spells
a cached token sequence. Sequences in use hold a lock on their last node (and
so on every ancestor); unlocked leaves are evicted least-recently-used first
when the KV pool needs room. Sizes are in tokens (one KV slot per token).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class RadixNode:
    """One edge of the tree: ``key`` is the token run leading to this node."""

    key: tuple[int, ...]
    parent: RadixNode | None
    children: dict[int, RadixNode] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: int = 0


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """Result of :meth:`RadixCache.match_prefix`: how many tokens hit, and where."""

    length: int
    node: RadixNode


class RadixCache:
    """Prefix cache over token-id sequences with lock counts and LRU eviction."""

    def __init__(self) -> None:
        self.root = RadixNode(key=(), parent=None, lock_ref=1)
        self._tick = itertools.count(1)
        self.total_size = 0
        self.evictable_size = 0
        self.hit_tokens = 0
        self.miss_tokens = 0

    @property
    def protected_size(self) -> int:
        """Cached tokens in use by at least one sequence (not evictable)."""
        return self.total_size - self.evictable_size

    def reset(self) -> None:
        """Drop everything (``/flush_cache``); only valid when nothing is locked."""
        self.root = RadixNode(key=(), parent=None, lock_ref=1)
        self.total_size = 0
        self.evictable_size = 0

    def match_prefix(self, tokens: Sequence[int], *, record: bool = False) -> PrefixMatch:
        """Longest cached prefix of ``tokens``; splits a node where the match ends inside it.

        With ``record`` the hit and miss token counters are updated.
        """
        node = self.root
        matched = 0
        tick = next(self._tick)
        node.last_access = tick
        while matched < len(tokens):
            child = node.children.get(tokens[matched])
            if child is None:
                break
            common = _common_length(child.key, tokens, matched)
            if common < len(child.key):
                child = self._split(child, common)
            child.last_access = tick
            matched += common
            node = child
            if common == 0:
                break
        if record:
            self.hit_tokens += matched
            self.miss_tokens += len(tokens) - matched
        return PrefixMatch(matched, node)

    def insert(self, tokens: Sequence[int]) -> tuple[int, RadixNode]:
        """Insert ``tokens``; returns (tokens newly added to the tree, the final node)."""
        match = self.match_prefix(tokens)
        node = match.node
        rest = tuple(tokens[match.length :])
        if not rest:
            return 0, node
        new = RadixNode(key=rest, parent=node, last_access=next(self._tick))
        node.children[rest[0]] = new
        self.total_size += len(rest)
        self.evictable_size += len(rest)
        return len(rest), new

    def lock(self, node: RadixNode) -> None:
        """Mark the path root..``node`` as in use (not evictable)."""
        cur: RadixNode | None = node
        while cur is not None and cur is not self.root:
            if cur.lock_ref == 0:
                self.evictable_size -= len(cur.key)
            cur.lock_ref += 1
            cur = cur.parent

    def unlock(self, node: RadixNode) -> None:
        """Release one :meth:`lock` of the path root..``node``."""
        cur: RadixNode | None = node
        while cur is not None and cur is not self.root:
            cur.lock_ref -= 1
            if cur.lock_ref == 0:
                self.evictable_size += len(cur.key)
            cur = cur.parent

    def evict(self, num_tokens: int) -> int:
        """Evict unlocked leaves, least recently used first, until ``num_tokens`` are freed.

        Returns the number of tokens freed (may be less when not enough is evictable).
        """
        heap = [(n.last_access, id(n), n) for n in self._leaves() if n.lock_ref == 0]
        heapq.heapify(heap)
        freed = 0
        while freed < num_tokens and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            if parent is None:
                continue
            del parent.children[leaf.key[0]]
            freed += len(leaf.key)
            self.total_size -= len(leaf.key)
            self.evictable_size -= len(leaf.key)
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        return freed

    def _leaves(self) -> list[RadixNode]:
        out: list[RadixNode] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            elif node is not self.root:
                out.append(node)
        return out

    def _split(self, child: RadixNode, at: int) -> RadixNode:
        """Split ``child`` so that a new node holds its first ``at`` tokens; return it."""
        parent = child.parent
        assert parent is not None
        head = RadixNode(
            key=child.key[:at],
            parent=parent,
            lock_ref=child.lock_ref,
            last_access=child.last_access,
        )
        parent.children[head.key[0]] = head
        child.key = child.key[at:]
        child.parent = head
        head.children[child.key[0]] = child
        return head


def _common_length(key: tuple[int, ...], tokens: Sequence[int], start: int) -> int:
    """Length of the common prefix of ``key`` and ``tokens[start:]``.

    Agent contexts are tens of thousands of tokens: whole edge labels are
    compared as slices (in C), and only the edge where a match ends is bisected.
    """
    n = min(len(key), len(tokens) - start)
    if n <= 0:
        return 0
    if tuple(tokens[start : start + n]) == key[:n]:
        return n
    lo, hi = 0, n  # invariant: key[:lo] matches, key[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tuple(tokens[start : start + mid]) == key[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
