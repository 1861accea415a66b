"""Table names, zones and column contracts of the batch layer, in one place.

Every job ends with a ``select`` of one of these column lists, so a table's schema is declared
here and nowhere else. Partition columns are zero-padded strings (``hour=05``), the layout the
delivery writes to ``raw/`` and every other zone repeats.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    DataType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# --- zones and tables -------------------------------------------------------------------------
RAW_EVENTS = "raw/events"
CLEAN_EVENTS = "clean/events"
ERRORS_CLEAN = "errors/source=clean_events"  # beside the delivery's errors/source=<source>/
CURATED = "curated"

METRICS_HOURLY = "metrics_hourly_v1"
METRICS_DAILY = "metrics_daily_v1"
PRODUCT_HOURLY = "product_hourly_v1"
PRODUCT_DAILY = "product_daily_v1"
CATEGORY_DAILY = "category_daily_v1"
FUNNEL_DAILY = "funnel_daily_v1"
USER_DAILY = "user_daily_v1"
SESSIONS = "sessions_v1"
ORDERS = "orders_v1"

HOUR_PARTITION = ("year", "month", "day", "hour")
DAY_PARTITION = ("year", "month", "day")

# --- raw events (written by ingest/delivery) ----------------------------------------------------
# Stream metadata: which shard and sequence number a record came from and when it reached the
# stream. They order duplicate copies of one event_id deterministically.
SHARD_ID = "shard_id"
SEQUENCE_NUMBER = "sequence_number"
ARRIVAL_TS = "arrival_ts"

RAW_COLUMNS: dict[str, DataType] = {
    "event_id": StringType(),
    "event_type": StringType(),
    "user_id": StringType(),
    "anonymous_id": StringType(),
    "session_id": StringType(),
    "ts": TimestampType(),
    "received_at": TimestampType(),
    "schema_version": IntegerType(),
    "properties": StringType(),
    "context": StringType(),
    SHARD_ID: StringType(),
    SEQUENCE_NUMBER: StringType(),
    ARRIVAL_TS: TimestampType(),
}
RAW_REQUIRED = ("event_id", "event_type", "ts", "properties")

# --- clean events: raw conformed, validated, deduplicated -------------------------------------
CLEAN_COLUMNS = (
    "event_id",
    "event_type",
    "user_id",
    "anonymous_id",
    "user_key",  # user_id, else anonymous_id: the partition key of the whole platform
    "session_id",
    "ts",
    "received_at",
    "schema_version",
    "properties",
    "context",
    SHARD_ID,
    SEQUENCE_NUMBER,
    ARRIVAL_TS,
    *HOUR_PARTITION,
)
ERROR_COLUMNS = (*RAW_COLUMNS, "source_file", "reason", *HOUR_PARTITION)

# --- curated tables -------------------------------------------------------------------------
METRIC_COLUMNS = ("metric", "window", "bucket_start", "key", "item", "rank", "value")
METRIC_SCHEMA = StructType(
    [
        StructField("metric", StringType(), False),
        StructField("window", StringType(), False),
        StructField("bucket_start", TimestampType(), False),
        StructField("key", ArrayType(StringType(), False), False),
        StructField("item", StringType(), True),
        StructField("rank", IntegerType(), True),
        StructField("value", DoubleType(), True),
    ]
)
PRODUCT_COLUMNS = (
    "product_id",
    "category",
    "views",
    "carts",
    "purchases",
    "units",
    "revenue",
    "conversion",
)
PRODUCT_HOURLY_COLUMNS = ("hour_start", *PRODUCT_COLUMNS, *HOUR_PARTITION)
PRODUCT_DAILY_COLUMNS = ("date", *PRODUCT_COLUMNS, *DAY_PARTITION)
CATEGORY_DAILY_COLUMNS = (
    "date",
    "category",
    "products_viewed",
    "views",
    "carts",
    "purchases",
    "units",
    "revenue",
    "conversion",
    *DAY_PARTITION,
)
FUNNEL_STEPS = ("product_view", "add_to_cart", "checkout_started", "purchase")
FUNNEL_DAILY_COLUMNS = (
    "date",
    "step",
    "step_index",
    "sessions",
    "rate_from_previous",
    "rate_from_first",
    *DAY_PARTITION,
)
USER_DAILY_COLUMNS = (
    "date",
    "user_key",
    "user_id",
    "events",
    "sessions",
    "page_views",
    "product_views",
    "add_to_carts",
    "orders",
    "revenue",
    "first_ts",
    "last_ts",
    *DAY_PARTITION,
)
SESSION_COLUMNS = (
    "session_key",
    "user_key",
    "session_start",
    "session_end",
    "duration_s",
    "events",
    "page_views",
    "unique_pages",
    "converted",
    "orders",
    "revenue",
    *DAY_PARTITION,
)
ORDER_COLUMNS = (
    "order_id",
    "event_id",
    "ts",
    "user_key",
    "user_id",
    "session_id",
    "currency",
    "amount",
    "payment_method",
    "promo_code",
    "promo_discount_pct",
    "promo_valid",
    "items_count",
    "units",
    "items",
    "categories",
    "country",
    "device",
    *HOUR_PARTITION,
)

# --- JSON shapes parsed out of `properties` / `context` by the hand-written tables ------------
ITEM_SCHEMA = StructType(
    [
        StructField("product_id", StringType()),
        StructField("quantity", LongType()),
        StructField("price", DoubleType()),
        StructField("category", StringType()),
    ]
)
PROPERTIES_SCHEMA = StructType(
    [
        StructField("path", StringType()),
        StructField("product_id", StringType()),
        StructField("category", StringType()),
        StructField("price", DoubleType()),
        StructField("quantity", LongType()),
        StructField("order_id", StringType()),
        StructField("amount", DoubleType()),
        StructField("currency", StringType()),
        StructField("promo_code", StringType()),
        StructField("payment_method", StringType()),
        StructField("items", ArrayType(ITEM_SCHEMA)),
    ]
)
CONTEXT_SCHEMA = StructType(
    [
        StructField("country", StringType()),
        StructField("device", StringType()),
        StructField("locale", StringType()),
    ]
)
PRODUCTS_CSV_SCHEMA = StructType(
    [
        StructField("product_id", StringType(), False),
        StructField("name", StringType()),
        StructField("category", StringType()),
        StructField("price", DoubleType()),
        StructField("brand", StringType()),
    ]
)
PROMOS_CSV_SCHEMA = StructType(
    [
        StructField("promo_code", StringType(), False),
        StructField("discount_pct", IntegerType()),
        StructField("category", StringType()),
        StructField("valid_from", StringType()),
        StructField("valid_to", StringType()),
    ]
)
