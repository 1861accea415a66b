"""The one settings object: every endpoint, port, name, key and credential comes from here.

Values come from the environment (prefix ``LAMBDALAKE_``), then a ``.env`` file in the working
directory, then the defaults below. Two profiles share one code path: ``local`` (default) points
at the engines ``lambdalake up`` starts on 127.0.0.1; ``aws`` points at managed services and
leaves credentials to boto3's default chain.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "LAMBDALAKE_"

CommaList = Annotated[list[str], NoDecode]


def env_name(field: str) -> str:
    """The environment variable that sets a settings field, for error messages."""
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    profile: Literal["local", "aws"] = "local"
    home: Path = Field(
        default=Path(".lambdalake"),
        description="Where local engines keep data, logs and pid files (git-ignored).",
    )

    # --- AWS / local credentials -------------------------------------------------------------
    aws_region: str = "us-east-1"
    aws_access_key_id: str | None = Field(
        default=None, description="Only for the local profile's fake endpoints; aws uses boto3's chain."
    )
    aws_secret_access_key: str | None = None

    # --- stream (Kinesis; kinesalite locally) --------------------------------------------------
    kinesis_port: int = 4579
    kinesis_endpoint_url: str | None = Field(
        default=None, description="Override the Kinesis endpoint; local default is kinesalite's."
    )
    stream_name: str = "lambdalake-events"
    dlq_stream_name: str = "lambdalake-dlq"
    stream_shards: int = Field(default=4, ge=1)

    # --- real-time store (Redis) ----------------------------------------------------------------
    redis_port: int = 6479
    redis_url_override: str | None = Field(default=None, alias="LAMBDALAKE_REDIS_URL")

    # --- warehouse (Redshift; PostgreSQL locally) -----------------------------------------------
    warehouse_host: str = "127.0.0.1"
    warehouse_port: int = 5479
    warehouse_db: str = "lambdalake"
    warehouse_user: str = "lambdalake"
    warehouse_password: str = "lambdalake-local"

    # --- lake (S3; a directory locally) ---------------------------------------------------------
    lake_uri_override: str | None = Field(default=None, alias="LAMBDALAKE_LAKE_URI")
    lake_bucket: str = "lambdalake-lake"
    s3_endpoint_url: str | None = None

    # --- HTTP services ---------------------------------------------------------------------------
    collector_port: int = 8700
    serving_port: int = 8800
    write_keys: CommaList = Field(
        default_factory=lambda: ["local-write-key"],
        description="Collector write keys (comma-separated). The local default is documented in README.",
    )
    read_keys: CommaList = Field(default_factory=lambda: ["local-read-key"])

    # --- event contract -------------------------------------------------------------------------
    strict_event_types: CommaList = Field(
        default_factory=list,
        description="If set, only these event types are accepted; otherwise custom types are allowed.",
    )

    # --- ingestion: collector (issue 3) -----------------------------------------------------------

    # --- SDKs: Python producer, browser tracker, `lambdalake send` -------------------------------

    # --- consumer runtime (leases, checkpoints, retries, DLQ) -----------------------------------

    # --- local engine binaries (found automatically when unset) ---------------------------------
    redis_server_bin: str | None = None
    pg_bin_dir: str | None = None
    node_bin: str = "node"
    java_min_version: int = 17
    engine_start_timeout_s: float = 30.0

    @field_validator("write_keys", "read_keys", "strict_event_types", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # --- derived values: code asks these, never rebuilds URLs itself -------------------------
    @property
    def is_local(self) -> bool:
        return self.profile == "local"

    @property
    def kinesis_endpoint(self) -> str | None:
        if self.kinesis_endpoint_url:
            return self.kinesis_endpoint_url
        return f"http://127.0.0.1:{self.kinesis_port}" if self.is_local else None

    @property
    def redis_url(self) -> str:
        if self.redis_url_override:
            return self.redis_url_override
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def warehouse_dsn(self) -> str:
        return (
            f"postgresql://{self.warehouse_user}:{self.warehouse_password}"
            f"@{self.warehouse_host}:{self.warehouse_port}/{self.warehouse_db}"
        )

    @property
    def lake_uri(self) -> str:
        if self.lake_uri_override:
            return self.lake_uri_override.rstrip("/")
        if self.is_local:
            return (self.home / "lake").as_uri()
        return f"s3://{self.lake_bucket}"

    def aws_client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for boto3 clients: region, and fake credentials on the local profile."""
        kwargs: dict[str, str] = {"region_name": self.aws_region}
        key, secret = self.aws_access_key_id, self.aws_secret_access_key
        if self.is_local:
            key, secret = key or "local", secret or "local"
        if key and secret:
            kwargs["aws_access_key_id"] = key
            kwargs["aws_secret_access_key"] = secret
        return kwargs

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
