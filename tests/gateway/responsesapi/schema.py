"""Validate bodies and stream events against OpenAI's published OpenAPI description
(the shared reference file): ``$ref``s resolved inside the YAML document."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

SPEC = Path(
    os.environ.get("OPENAI_OPENAPI_SPEC")
    or Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "openai-openapi.yaml"
)


@functools.cache
def _components() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip(f"the OpenAPI reference is not at {SPEC}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open() as file:
        document = yaml.load(file, Loader=loader)
    return {"components": document["components"]}


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", **_components()}
    return Draft202012Validator(schema)


def validate(name: str, value: Any) -> None:
    """Raise (with every error) unless ``value`` is a valid ``name`` of the spec."""
    errors = sorted(_validator(name).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        details = "\n".join(f"{list(e.path)}: {e.message[:300]}" for e in errors[:10])
        raise AssertionError(f"not a valid {name}:\n{details}")


@functools.cache
def _event_schemas() -> dict[str, str]:
    """``ResponseStreamEvent``'s members by the ``type`` they name."""
    schemas = _components()["components"]["schemas"]
    out = {}
    for member in schemas["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[1]
        kinds = schemas[name].get("properties", {}).get("type", {}).get("enum", [])
        for kind in kinds:
            out[kind] = name
    return out


def validate_event(event: dict[str, Any]) -> None:
    """Raise unless ``event`` is a valid member of ``ResponseStreamEvent`` for its type."""
    name = _event_schemas().get(event.get("type", ""))
    assert name is not None, f"no stream event of type {event.get('type')!r} in the spec"
    validate(name, event)
    validate("ResponseStreamEvent", event)
