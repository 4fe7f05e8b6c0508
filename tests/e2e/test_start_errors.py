"""A gateway that cannot start says why in one line naming the key, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e


def serve(config: dict[str, object], tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp / "tollway.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TOLLWAY_DATA_DIR": str(tmp / "data"), **env},
    )


def test_a_catalog_entry_without_a_price_is_one_line(tmp_path: Path) -> None:
    config = {
        "catalog": {
            "mystery": {"litellm_model": "openai/no-such-model-xyz", "api_key_env": "OP_KEY"}
        },
        "models": {"m": {"route": "catalog:mystery"}},
    }
    done = serve(config, tmp_path, OP_KEY="sk-test")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: invalid configuration: catalog.mystery.price: ")
    assert "openai/no-such-model-xyz" in lines[0] and "Traceback" not in done.stderr


def test_a_bad_log_level_names_the_variable(tmp_path: Path) -> None:
    done = serve({}, tmp_path, TOLLWAY_LOG_LEVEL="chatty")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: invalid configuration: TOLLWAY_LOG_LEVEL: Value error, log level 'chatty' "
        "is not one of debug, info, warning, error, critical"
    ]


def test_a_bad_price_book_is_one_line(tmp_path: Path) -> None:
    book = tmp_path / "pricing.yaml"
    book.write_text(yaml.safe_dump({"books": [{"name": "b", "rates": []}]}))
    done = serve({"pricing": str(book)}, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    reason = "books.0.effective_from: Field required"
    assert lines[0] == f"error: invalid configuration: {book}:{reason}"
