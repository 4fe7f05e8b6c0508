"""OpenAI's response schemas, for validating what the gateway returns."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

_FILE = Path(__file__).with_name("openai_schemas.json")


@cache
def _defs() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_FILE.read_text(encoding="utf-8"))["$defs"]
    return data


def validate_openai(schema: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` matches OpenAI's ``schema``."""
    root = {"$defs": _defs(), "$ref": f"#/$defs/{schema}"}
    Draft202012Validator(root).validate(instance)
