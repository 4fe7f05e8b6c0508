"""Offline BPE encodings for exact token counts, read from files a package ships.

tiktoken fetches its BPE rank files from the network unless it finds them in
a cache directory. litellm ships the ``cl100k_base`` and ``o200k_base`` files
inside its package (``litellm/litellm_core_utils/tokenizers/``, named by the
SHA-1 of their download URL, as tiktoken's cache names them). This module
reads those files directly, checks their SHA-256 against tiktoken's published
digests, and builds a :class:`tiktoken.Encoding` from them: no network, no
environment variable, no cache directory written.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tiktoken

from tollway.errors import ConfigError

EncodingName = Literal["cl100k_base", "o200k_base"]

_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


@dataclass(frozen=True, slots=True)
class _Spec:
    sha256: str
    pattern: str
    special_tokens: dict[str, int]


_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",  # noqa: E501
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",  # noqa: E501
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_SPECS: dict[str, _Spec] = {
    "cl100k_base": _Spec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pattern=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
            r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": _Spec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pattern=_O200K_PATTERN,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
}


def shipped_bpe_file(name: EncodingName) -> Path:
    """Path of the BPE rank file for ``name`` inside the installed litellm package."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"tokenizer {name!r} needs the litellm package, which is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    cache_name = hashlib.sha1(_URL.format(name=name).encode()).hexdigest()
    return package / "litellm_core_utils" / "tokenizers" / cache_name


def load_encoding(name: EncodingName) -> tiktoken.Encoding:
    """Build the tiktoken encoding ``name`` from the file litellm ships (about 0.2 s).

    Raises :class:`ConfigError` when the file is missing or its digest is wrong.
    """
    if name not in _SPECS:
        raise ConfigError(f"unknown tokenizer {name!r}; known: {sorted(_SPECS)}")
    spec = _SPECS[name]
    path = shipped_bpe_file(name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tokenizer {name!r}: cannot read {path.name}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise ConfigError(f"tokenizer {name!r}: {path.name} does not match its published digest")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name, pat_str=spec.pattern, mergeable_ranks=ranks, special_tokens=spec.special_tokens
    )
