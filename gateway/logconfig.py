"""One logging setup for every logger in a gateway process.

The gateway's own loggers (``tollway.*``, the access log ``tollway.access``
among them), uvicorn's (``uvicorn``, ``uvicorn.error``) and litellm's
(``LiteLLM``, ``LiteLLM Router``, ``LiteLLM Proxy``) all end at one handler on
the root logger, writing to stderr. Python warnings go there too
(``py.warnings``), so a JSON log stays JSON.

``json`` (the default) writes one JSON object per line::

    {"ts": 1765139400.123, "level": "info", "logger": "tollway.access", "event": "request", ...}

A record that carries structured ``fields`` (the access log's) has them merged
into the object; any other record has its ``message`` (and ``exc_info`` as
``exception``). ``text`` writes ``time level logger: message`` lines for a
terminal.

Precedence, highest first: the ``--log-level`` flag of ``tollway serve``, the
environment (``TOLLWAY_LOG_LEVEL``, ``TOLLWAY_LOG_FORMAT``), the config file's
``logging`` section, the defaults (``info``, ``json``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.settings import Settings
from tollway.errors import ConfigError

LogFormat = Literal["json", "text"]

LEVELS = ("debug", "info", "warning", "error", "critical")

#: Loggers that other libraries give their own handlers; ours replace them.
FOREIGN_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "LiteLLM",
    "LiteLLM Router",
    "LiteLLM Proxy",
)

#: Libraries that narrate at ``info``: kept at ``warning`` unless the level is ``debug``.
CHATTY_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "alembic", "httpx")

#: Marks the handler this module installs, so a second setup replaces it.
_HANDLER_NAME = "tollway"


class LoggingConfig(BaseModel):
    """The ``logging`` section of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: str = Field(default="info", description="debug, info, warning, error or critical.")
    format: LogFormat = Field(
        default="json", description="`json`: one object per line; `text`: for a terminal."
    )

    @field_validator("level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        return check_level(value)


def check_level(value: str) -> str:
    """A log level name, lower-cased; ``ValueError`` naming the choices otherwise."""
    level = value.strip().lower()
    if level not in LEVELS:
        raise ValueError(f"log level {value!r} is not one of {', '.join(LEVELS)}")
    return level


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-12-07T20:30:00Z info tollway.pool: message`` lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime(datefmt or "%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if not isinstance(fields, Mapping):
            return super().format(record)
        # Structured records read as key=value pairs, absent values left out.
        pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k != "ts")
        when = self.formatTime(record)
        return f"{when} {record.levelname} {record.name}: {pairs}"


def formatter_for(fmt: LogFormat) -> logging.Formatter:
    """The formatter of a log format."""
    return JsonFormatter() if fmt == "json" else TextFormatter()


def resolve(
    config: LoggingConfig,
    *,
    env_level: str | None = None,
    env_format: str | None = None,
    flag_level: str | None = None,
) -> LoggingConfig:
    """The effective setup: the flag over the environment over the config file."""
    level = flag_level or env_level or config.level
    fmt = env_format or config.format
    try:
        return LoggingConfig.model_validate({"level": level, "format": fmt.strip().lower()})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = {"level": "TOLLWAY_LOG_LEVEL", "format": "TOLLWAY_LOG_FORMAT"}
        key = str(first["loc"][0]) if first["loc"] else "level"
        raise ConfigError(first["msg"], path=where.get(key, key)) from None


def configure_logging(config: LoggingConfig, stream: Any = None) -> None:
    """Route every logger of this process to one handler in the configured format.

    Safe to call more than once (a second call replaces the first's handler);
    a library that adds its own handler after this call must remove it (or call
    :func:`adopt_foreign_loggers`).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter_for(config.format))
    root.addHandler(handler)
    level = config.level.upper()
    root.setLevel(level)
    logging.getLogger("tollway").setLevel(level)
    logging.captureWarnings(True)
    adopt_foreign_loggers(level)


def adopt_foreign_loggers(level: str | None = None) -> None:
    """Drop the handlers libraries put on their own loggers; records reach the root's.

    litellm's, alembic's and httpx's loggers stay at ``warning`` unless the level
    is ``debug``: at ``info`` they narrate every call or migration step.
    """
    for name in FOREIGN_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        if level is not None and name not in CHATTY_LOGGERS:
            logger.setLevel(level)
    if level is not None:
        for name in CHATTY_LOGGERS:
            floor = logging.getLevelName(level) if level == "DEBUG" else logging.WARNING
            logging.getLogger(name).setLevel(max(floor, logging.getLevelName(level)))


def setup_gateway_logging(
    config: LoggingConfig, settings: Settings, *, flag_level: str | None
) -> LoggingConfig:
    """Configure this process's logging for a gateway; returns the effective setup.

    litellm, imported later (by the first catalog entry that needs it), drops the
    handler it adds at import (:func:`backends.catalog.library.load_litellm`), so
    its records reach this setup's handler too.
    """
    effective = resolve(
        config,
        env_level=settings.log_level,
        env_format=settings.log_format,
        flag_level=flag_level,
    )
    configure_logging(effective)
    return effective
