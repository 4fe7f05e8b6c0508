"""Regenerate ``openai_schemas.json`` from OpenAI's OpenAPI description (MIT).

Copies the response schemas the tests validate against, with every schema they
reference, rewriting ``#/components/schemas/X`` to ``#/$defs/X`` and OpenAPI 3.0's
``nullable: true`` to an explicit ``anyOf`` with null::

    python tests/schemas/extract.py ../shared/reference/openai-openapi.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "CreateEmbeddingResponse",
]
PREFIX = "#/components/schemas/"


def _refs(node: Any, found: set[str]) -> Any:
    if isinstance(node, dict) and node.get("nullable") is True:
        # OpenAPI 3.0's `nullable`, which JSON Schema ignores: allow null explicitly.
        rest = {k: v for k, v in node.items() if k != "nullable"}
        return {"anyOf": [_refs(rest, found), {"type": "null"}]}
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(PREFIX):
                found.add(value[len(PREFIX) :])
                out[key] = "#/$defs/" + value[len(PREFIX) :]
            else:
                out[key] = _refs(value, found)
        return out
    if isinstance(node, list):
        return [_refs(v, found) for v in node]
    return node


def main(spec_path: str) -> None:
    spec = yaml.safe_load(Path(spec_path).read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    todo, done = list(ROOTS), {}
    while todo:
        name = todo.pop()
        if name in done:
            continue
        found: set[str] = set()
        done[name] = _refs(schemas[name], found)
        todo.extend(sorted(found - set(done)))
    out = Path(__file__).with_name("openai_schemas.json")
    payload = {"source": "OpenAI OpenAPI description (MIT)", "roots": ROOTS, "$defs": done}
    out.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(done)} schemas to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
