"""Every file-format example in docs/configuration.md parses as what it documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from billing.meters import StripeSettings
from billing.pricing import parse_price_book
from gateway.config import parse_config

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def examples() -> dict[str, str]:
    found = re.findall(r"<!-- example: (\w+) -->\n```yaml\n(.*?)```", PAGE.read_text(), re.S)
    return dict(found)


def test_the_page_has_an_example_of_each_file() -> None:
    assert set(examples()) == {"config", "pricing", "stripe", "customers"}


@pytest.mark.parametrize("kind", ["config", "pricing", "stripe", "customers"])
def test_each_example_is_valid(kind: str) -> None:
    data = yaml.safe_load(examples()[kind])
    if kind == "config":
        config = parse_config(data)
        assert config.models["agent-large"].fallbacks == ["catalog:gpt-4o-mini"]
        assert config.catalog["gpt-4o-mini"].price is not None
    elif kind == "pricing":
        book = parse_price_book(data)
        assert len(book.document.books) == 2
    elif kind == "stripe":
        assert len(StripeSettings.model_validate(data["stripe"]).meters) == 3
    else:
        assert all(str(v).startswith("cus_") for v in data.values())
