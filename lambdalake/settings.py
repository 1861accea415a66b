"""The one settings object: every endpoint, port, name, key and credential comes from here.

Values come from the environment (prefix ``LAMBDALAKE_``), then a ``.env`` file in the working
directory, then the defaults below. Two profiles share one code path: ``local`` (default) points
at the engines ``lambdalake up`` starts on 127.0.0.1; ``aws`` points at managed services and
leaves credentials to boto3's default chain.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

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

    # --- warehouse and athena (issue 7) ---
    warehouse_schema: str = Field(
        default="lambdalake", description="Schema of the warehouse tables and BI views (search_path)."
    )
    warehouse_connect_timeout_s: float = Field(default=10.0, gt=0)
    redshift_iam_role_arn: str | None = Field(
        default=None, description="Role Redshift assumes to COPY from the lake (aws profile)."
    )
    redshift_manifest_prefix: str = Field(
        default="manifests/redshift", description="Lake prefix of the COPY manifests (exact file lists)."
    )
    glue_database: str = Field(default="lambdalake", description="Glue database; DuckDB schema locally.")
    glue_endpoint_url: str | None = Field(default=None, description="Override the Glue endpoint (tests).")
    athena_workgroup: str = "primary"
    athena_output_uri: str | None = Field(
        default=None, description="S3 prefix for Athena query results; default <lake>/athena-results/."
    )
    duckdb_threads: int = Field(default=4, ge=1, description="Threads of the local DuckDB (Athena stand-in).")

    # --- lake (S3; a directory locally) ---------------------------------------------------------
    lake_uri_override: str | None = Field(default=None, alias="LAMBDALAKE_LAKE_URI")
    lake_bucket: str = "lambdalake-lake"
    s3_endpoint_url: str | None = None

    # --- speed layer: views, alerts, enrichment (issue 4) ---
    speed_key_prefix: str = Field(
        default="ll", description="Prefix of every speed-layer Redis key (short: keys are hot)."
    )
    speed_dedupe_ttl_s: int = Field(
        default=86400, ge=60, description="How long after its event-time hour an event_id counts as seen."
    )
    speed_validate_events: bool = Field(
        default=False,
        description="Check every record against the full event contract (the collector already does; "
        "turn on for streams written by other producers). Costs ~30 µs per event.",
    )
    speed_max_future_skew_s: int = Field(
        default=300, ge=0, description="Event time counts for the watermark only up to arrival + this."
    )
    alert_high_value_amount: float = Field(
        default=1000.0, gt=0, description="A purchase at least this is alerted."
    )
    alert_fraud_amount_multiple: float = Field(
        default=5.0, gt=1, description="Fraud rule: amount over this multiple of the user's average order."
    )
    alert_fraud_max_purchases: int = Field(
        default=3, ge=1, description="Fraud rule: more than this many purchases within the velocity window."
    )
    alert_fraud_velocity_window_s: int = Field(default=600, ge=1)
    alert_fraud_weights: dict[str, float] = Field(
        default_factory=lambda: {"amount_over_average": 0.5, "purchase_velocity": 0.4, "country_change": 0.3},
        description="Score added by each fraud rule that fires (JSON in the environment).",
    )
    alert_fraud_min_score: float = Field(
        default=0.4, ge=0, description="A fraud alert needs at least this score."
    )
    alert_stream_maxlen: int = Field(
        default=100_000, ge=100, description="Approximate cap of the alert stream."
    )
    alert_webhook_url: str | None = Field(default=None, description="POST every alert here (JSON), if set.")
    alert_webhook_timeout_s: float = Field(default=5.0, gt=0)
    alert_webhook_max_retries: int = Field(
        default=5, ge=0, description="Retries of a failing POST, with backoff."
    )
    enrich_stream_maxlen: int = Field(
        default=1_000_000, ge=100, description="Approximate cap of the orders stream."
    )
    enrich_reference_check_s: float = Field(
        default=30.0, gt=0, description="How often the reference CSVs are checked for changes (and reloaded)."
    )
    enrich_traits_ttl_s: int = Field(
        default=400 * 86400, ge=60, description="Users' traits from identify events."
    )

    # --- metric catalogue and event-time windows ------------------------------------------------
    metric_catalogues: CommaList = Field(
        default_factory=list, description="Extra metric catalogue YAML files (comma-separated)."
    )
    allowed_lateness_s: int = Field(
        default=300,
        ge=0,
        description="How long after a window ends its late events still count in the speed layer; "
        "later ones are left to the batch layer, which corrects the hour.",
    )
    default_retention: dict[str, str] = Field(
        default_factory=lambda: {"1m": "2d", "1h": "15d", "1d": "400d", "lifetime": "400d"},
        description="Speed-layer TTL per window size when a metric gives none (JSON in the environment).",
    )

    # --- batch layer (issue 6) ---
    spark_master: str = Field(
        default="local[*]", description="Local profile only; spark-submit sets it on EMR."
    )
    spark_driver_memory: str = Field(
        default="4g", description="Driver heap (local mode runs everything in it)."
    )
    spark_shuffle_partitions: int = Field(
        default=8, ge=1, description="Small for one machine, larger on EMR."
    )
    batch_dedupe_lookback_hours: int = Field(
        default=7 * 24, ge=0, description="Earlier clean hours searched for an event_id already kept."
    )
    batch_hours_per_job: int = Field(
        default=24 * 31, ge=1, description="Hours one Spark job processes in a backfill (many hours per JVM)."
    )

    # --- orchestration and quality gates (issue 6) ---
    batch_meta_schema: str = Field(
        default="lambdalake_meta", description="Warehouse schema of the batch watermark (published hours)."
    )
    batch_empty_hour_horizon_hours: int = Field(
        default=24,
        ge=1,
        description="An hour without a manifest is closed and empty once a later hour "
        "within this horizon has one.",
    )
    batch_raw_retention_days: int = Field(
        default=400, ge=1, description="Raw and error zone hours older than this are deleted by maintenance."
    )
    airflow_port: int = Field(default=8780, description="Airflow API server / UI port (local profile).")
    airflow_admin_user: str = "admin"
    airflow_admin_password: str = Field(
        default="lambdalake-admin", description="Local Airflow login; documented, local profile only."
    )
    airflow_parallelism: int = Field(default=4, ge=1, description="Airflow task slots on one machine.")

    # --- HTTP services ---------------------------------------------------------------------------
    collector_port: int = 8700
    serving_port: int = 8800
    write_keys: CommaList = Field(
        default_factory=lambda: ["local-write-key"],
        description="Collector write keys (comma-separated). The local default is documented in README.",
    )
    read_keys: CommaList = Field(default_factory=lambda: ["local-read-key"])

    # --- serving layer (issue 8) ---
    serving_redis_timeout_s: float = Field(
        default=1.0, gt=0, description="Serving: Redis socket and connect timeout per call."
    )
    serving_warehouse_connect_timeout_s: float = Field(
        default=2.0, gt=0, description="Serving: warehouse connect timeout (below 2 s counts as 2 s)."
    )
    serving_warehouse_statement_timeout_s: float = Field(
        default=5.0, gt=0, description="Serving: server-side limit of a warehouse query (statement_timeout)."
    )
    serving_warehouse_pool_size: int = Field(
        default=8, ge=1, le=64, description="Serving: warehouse connections at most, kept open for reuse."
    )
    serving_watermark_cache_s: float = Field(
        default=1.0, ge=0, le=60, description="Serving: how long the batch watermark read is reused."
    )
    serving_engine_retry_s: float = Field(
        default=5.0,
        ge=0,
        description="Serving: after an engine failed, answer without it for this long before trying again "
        "(so a down engine costs one timeout, not one per request).",
    )
    serving_speed_retention_after_publish_s: int = Field(
        default=2 * 86400,
        ge=0,
        description="Speed views of an hour batch has published expire this long after it was published.",
    )
    serving_maintenance_interval_s: float = Field(
        default=60.0, gt=0, description="Serving: how often retention expiry and the drift report run."
    )
    serving_drift_threshold: float = Field(
        default=0.02, ge=0, description="Relative speed/batch difference above which drift is warned about."
    )
    serving_drift_lookback_hours: int = Field(
        default=24, ge=1, description="Published hours the periodic drift report (and /metrics) covers."
    )
    serving_max_points: int = Field(
        default=5000, ge=1, description="Most points one /v1/metrics answer may hold (more is a 422)."
    )
    serving_access_log: bool = False

    # --- batch maintenance (issue 6) ---
    batch_compaction_target_mib: float = Field(
        default=128.0,
        gt=0,
        description="Compaction merges a shard's small raw files of an hour into files of about this size.",
    )
    batch_compaction_lookback_days: int = Field(
        default=7, ge=1, description="The maintenance DAG compacts the closed raw hours of this many days."
    )
    batch_compaction_grace_hours: float = Field(
        default=24.0,
        ge=0,
        description="Raw files replaced by compaction are kept this long outside the partition "
        "(raw/_compacted/) before a later run deletes them; 0 deletes them at once.",
    )

    # --- deploy (issue 9) ---
    bind_host: str = Field(
        default="127.0.0.1",
        description="Address the HTTP services (collector, serving) listen on. 127.0.0.1 on a laptop; "
        "0.0.0.0 inside a container (docker-compose, ECS), where the container network is the boundary.",
    )

    # --- event contract -------------------------------------------------------------------------
    strict_event_types: CommaList = Field(
        default_factory=list,
        description="If set, only these event types are accepted; otherwise custom types are allowed.",
    )

    # --- ingestion: collector (issue 3) -----------------------------------------------------------
    collector_workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes.")
    collector_max_events: int = Field(default=500, ge=1, le=500, description="Events per request at most.")
    collector_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=4 * 1024 * 1024, description="Request body (decompressed) at most."
    )
    collector_allowed_origins: str = Field(
        default="*", description="CORS origins for the browser tracker, comma-separated; '*' allows any."
    )
    collector_bus: Literal["stream", "noop"] = Field(
        default="stream",
        description="'noop' discards accepted events: a benchmarking aid to measure the collector alone.",
    )
    collector_stream_timeout_s: float = Field(default=5.0, gt=0, description="Per call to the stream.")
    collector_unavailable_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After sent with a 503 when the stream is unreachable."
    )
    collector_max_reasons: int = Field(default=50, ge=1, description="Reasons listed per rejected event.")
    collector_pii_mask_ip: bool = Field(
        default=False, description="Truncate context.ip: IPv4 to /24, IPv6 to /48."
    )
    collector_pii_hash_fields: str = Field(
        default="", description="Property (and trait) names to replace by HMAC-SHA256, comma-separated."
    )
    collector_pii_hash_key: str | None = Field(
        default=None, description="HMAC key for collector_pii_hash_fields (required when those are set)."
    )
    collector_access_log: bool = False
    collector_shutdown_timeout_s: float = Field(default=10.0, gt=0, description="Graceful drain on stop.")

    # --- SDKs: Python producer, browser tracker, `lambdalake send` -------------------------------
    sdk_endpoint: str | None = Field(
        default=None,
        description="Collector base URL for SDKs and `send`; default http://127.0.0.1:<collector_port>.",
    )
    producer_max_queue: int = Field(default=10_000, ge=1, description="Events the producer buffers at most.")
    producer_batch_size: int = Field(
        default=100, ge=1, le=500, description="Events per request (≤ collector's)."
    )
    producer_flush_interval_s: float = Field(
        default=1.0, gt=0, description="Longest an event waits in the buffer."
    )
    producer_enqueue_timeout_s: float = Field(
        default=0.05,
        ge=0,
        description="Longest `send` waits for room in a full buffer before dropping the event.",
    )
    producer_max_retries: int = Field(
        default=6, ge=0, description="Retries of a request on 429/503/5xx/network."
    )
    producer_backoff_base_s: float = Field(default=0.2, gt=0)
    producer_backoff_cap_s: float = Field(default=10.0, gt=0, description="Also caps a server's Retry-After.")
    producer_request_timeout_s: float = Field(default=10.0, gt=0)
    producer_exit_timeout_s: float = Field(default=5.0, ge=0, description="Flush budget at interpreter exit.")
    send_batch_size: int = Field(
        default=100, ge=1, le=500, description="`lambdalake send`: events per request."
    )
    send_concurrency: int = Field(default=4, ge=1, le=64, description="`lambdalake send`: parallel requests.")

    # --- consumer runtime (leases, checkpoints, retries, DLQ) -----------------------------------
    # Defaults for every consumer group; `consumer_groups` overrides them per group, e.g.
    # LAMBDALAKE_CONSUMER_GROUPS='{"views": {"batch_size": 1000}, "alerts": {"starting_position": "LATEST"}}'.
    consumer_batch_size: int = Field(
        default=2000,
        ge=1,
        le=10000,
        description="Most records per batch (and per GetRecords); a consumer that keeps up gets fewer.",
    )
    consumer_max_batching_window_s: float = Field(default=0.0, ge=0.0, le=300.0)
    consumer_max_retry_attempts: int = Field(
        default=3, ge=-1, description="Retries before a failing record goes to the DLQ; -1 retries forever."
    )
    consumer_max_record_age_s: float = Field(
        default=-1.0, description="Records older than this go to the DLQ unprocessed; -1 disables."
    )
    consumer_bisect_on_error: bool = True
    consumer_on_failure_stream: str | None = Field(
        default=None, description="DLQ stream for records that failed; unset means dlq_stream_name."
    )
    consumer_starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "TRIM_HORIZON"
    consumer_starting_timestamp: datetime | None = None
    consumer_lease_duration_s: float = Field(default=10.0, gt=0.0)
    consumer_idle_poll_s: float = Field(default=0.2, ge=0.0)
    consumer_shard_sync_s: float = Field(default=30.0, gt=0.0)
    consumer_retry_backoff_s: float = Field(default=0.2, ge=0.0)
    consumer_retry_backoff_cap_s: float = Field(default=10.0, ge=0.0)
    consumer_shutdown_timeout_s: float = Field(default=20.0, gt=0.0)
    consumer_key_prefix: str = "lambdalake:consumer"
    consumer_metrics_port: int = 8790
    consumer_groups: dict[str, dict[str, Any]] = Field(default_factory=dict)

    # --- lake delivery (issue 5) ---
    delivery_group: str = Field(default="delivery", description="Consumer group writing the raw zone.")
    delivery_errors_group: str = Field(
        default="errors-archive", description="Consumer group archiving the DLQ stream into errors/."
    )
    delivery_buffer_mib: float = Field(
        default=1.0, gt=0, le=128, description="Firehose SizeInMBs: a file is cut at this many MiB of input."
    )
    delivery_buffer_interval_s: float = Field(
        default=5.0, ge=0, le=300, description="Firehose IntervalInSeconds: longest a record waits unwritten."
    )
    delivery_buffer_records: int = Field(
        default=5000, ge=1, le=10000, description="Records per flush at most (the runtime's batch size)."
    )
    delivery_compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    delivery_validate_events: bool = Field(
        default=False,
        description="Check every record against the full event contract, not only the raw zone's typed "
        "columns (the collector already does; turn on for streams other producers write).",
    )
    delivery_allowed_lateness_s: int = Field(
        default=600, ge=0, description="An hour closes once every shard's watermark is this far past its end."
    )
    delivery_idle_shard_s: float = Field(
        default=60.0, gt=0, description="A caught-up shard silent this long no longer holds hours open."
    )
    delivery_close_interval_s: float = Field(default=5.0, gt=0, description="How often hours are checked.")
    delivery_key_prefix: str = "lambdalake:delivery"

    # --- local engine binaries (found automatically when unset) ---------------------------------
    redis_server_bin: str | None = None
    pg_bin_dir: str | None = None
    node_bin: str = "node"
    java_min_version: int = 17
    engine_start_timeout_s: float = 30.0

    @field_validator("write_keys", "read_keys", "strict_event_types", "metric_catalogues", mode="before")
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
