"""Environment variables, read in this one module.

``TOLLWAY_*`` variables override the config file's values where they overlap;
``REDIS_URL`` and ``DATABASE_URL`` choose the shared stores (unset: in-process
state and a SQLite file under the data directory). The billing commands read the
same data directory and stores from here (:class:`StoreSettings`, passed in by
:mod:`tollway.cli`): :mod:`billing` does not read them itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    """Where state lives: the data directory and the shared stores. All that the
    billing commands read (:class:`billing.database.Stores`)."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_", extra="ignore", frozen=True)

    data_dir: Path = Path(".tollway")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")


class Settings(StoreSettings):
    """Process settings from the environment."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_", extra="ignore", frozen=True)

    config: Path | None = Field(default=None, description="Path of the YAML config file.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    admin_token: SecretStr | None = None
    log_level: str | None = Field(
        default=None, description="Overrides the config's `logging.level` (see gateway.logconfig)."
    )
    log_format: str | None = Field(
        default=None, description="`json` or `text`; overrides the config's `logging.format`."
    )
    max_body_bytes: int | None = Field(default=None, ge=1024)
    gc_tuning: bool = Field(
        default=False,
        description="Freeze start-up objects out of the garbage collector and raise its "
        "thresholds once serving (set by `tollway serve`).",
    )
