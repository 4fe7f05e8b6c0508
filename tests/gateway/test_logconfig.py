"""One logging setup: precedence, JSON and text lines, warnings and foreign loggers."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from gateway.logconfig import LoggingConfig, configure_logging, resolve
from tollway.errors import ConfigError


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("tollway", "uvicorn", "uvicorn.error", "LiteLLM")
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    propagate = {n: logging.getLogger(n).propagate for n in names}
    yield
    logging.captureWarnings(False)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (lvl, hs) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(lvl)
        logger.handlers[:] = hs
        logger.propagate = propagate[name]


def test_the_flag_beats_the_environment_which_beats_the_file() -> None:
    file = LoggingConfig(level="error", format="text")
    assert resolve(file) == file
    assert resolve(file, env_level="DEBUG", env_format="json") == LoggingConfig(
        level="debug", format="json"
    )
    assert resolve(file, env_level="debug", flag_level="warning").level == "warning"


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(LoggingConfig(), env_level="loud")
    assert info.value.path == "TOLLWAY_LOG_LEVEL" and "loud" in str(info.value)
    with pytest.raises(ConfigError) as info:
        resolve(LoggingConfig(), env_format="xml")
    assert info.value.path == "TOLLWAY_LOG_FORMAT"


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_for_messages_fields_warnings_and_libraries() -> None:
    out = io.StringIO()
    foreign = logging.StreamHandler(io.StringIO())
    logging.getLogger("LiteLLM").addHandler(foreign)  # as litellm does at import
    logging.getLogger("LiteLLM").propagate = False
    configure_logging(LoggingConfig(level="info", format="json"), stream=out)
    assert foreign not in logging.getLogger("LiteLLM").handlers
    logging.getLogger("tollway.pool").info("worker %s is down", "w1")
    logging.getLogger("tollway.access").info("x", extra={"fields": {"request_id": "r1"}})
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("LiteLLM").warning("litellm says")
    logging.getLogger("LiteLLM").info("litellm narrates")  # below litellm's floor
    logging.getLogger("tollway.pool").debug("hidden")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["logger"], e["level"]) for e in lines] == [
        ("tollway.pool", "info"),
        ("tollway.access", "info"),
        ("uvicorn.error", "info"),
        ("LiteLLM", "warning"),
        ("py.warnings", "warning"),
    ]
    assert lines[0]["message"] == "worker w1 is down"
    assert lines[1]["request_id"] == "r1" and "message" not in lines[1]
    assert "deprecated thing" in lines[4]["message"]


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_and_a_second_setup_replaces_the_first() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=first)
    configure_logging(LoggingConfig(level="debug", format="text"), stream=second)
    fields = {"ts": 1.0, "request_id": "r2", "error_code": None, "http_status": 401}
    logging.getLogger("tollway.access").info("x", extra={"fields": fields})
    logging.getLogger("tollway.pool").debug("probing %d", 3)
    assert first.getvalue() == ""
    access, debug = second.getvalue().splitlines()
    assert access.endswith(" INFO tollway.access: request_id=r2 http_status=401")
    assert debug.endswith(" DEBUG tollway.pool: probing 3")


@pytest.mark.usefixtures("restore_logging")
def test_litellm_writes_through_the_one_handler_once_loaded() -> None:
    from backends.catalog.library import load_litellm

    out = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=out)
    load_litellm()
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate
    logging.getLogger("LiteLLM Router").error("no deployment")
    assert json.loads(out.getvalue())["message"] == "no deployment"
