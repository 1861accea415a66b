"""The hand-shaped curated tables: products, categories, the purchase funnel, user daily facts.

The catalogue's metrics (hourly page views, orders, revenue, top products, ...) come from
``compile_metrics``; these tables are analyst-facing shapes no catalogue entry describes
(a row per product with its conversion, a funnel by step).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_jobs.schemas import (
    CATEGORY_DAILY_COLUMNS,
    DAY_PARTITION,
    FUNNEL_DAILY_COLUMNS,
    FUNNEL_STEPS,
    HOUR_PARTITION,
    PRODUCT_DAILY_COLUMNS,
    PRODUCT_HOURLY_COLUMNS,
    PROPERTIES_SCHEMA,
    USER_DAILY_COLUMNS,
)


def with_properties(events: DataFrame) -> DataFrame:
    """Adds ``props``: the known properties, typed (a value of another JSON type reads as null)."""
    return events.withColumn("props", F.from_json("properties", PROPERTIES_SCHEMA))


def _partition(ts: Column, names: tuple[str, ...]) -> list[Column]:
    formats = {"year": "yyyy", "month": "MM", "day": "dd", "hour": "HH"}
    return [F.date_format(ts, formats[n]).alias(n) for n in names]


def product_activity(events: DataFrame) -> DataFrame:
    """One row per product touch: a view, an add to cart, or a purchased line (units, revenue)."""
    parsed = with_properties(events)
    single = parsed.where(F.col("event_type").isin("product_view", "add_to_cart")).select(
        "ts",
        "event_type",
        F.col("props.product_id").alias("product_id"),
        F.col("props.category").alias("category"),
        F.lit(None).cast("string").alias("order_id"),
        F.lit(0).cast("long").alias("units"),
        F.lit(0.0).alias("revenue"),
    )
    lines = (
        parsed.where(F.col("event_type") == "purchase")
        .select(
            "ts", "event_type", F.col("props.order_id").alias("order_id"), F.explode("props.items").alias("i")
        )
        .select(
            "ts",
            "event_type",
            F.col("i.product_id").alias("product_id"),
            F.col("i.category").alias("category"),
            "order_id",
            F.coalesce("i.quantity", F.lit(0)).alias("units"),
            F.coalesce(F.col("i.quantity") * F.col("i.price"), F.lit(0.0)).alias("revenue"),
        )
    )
    return single.unionByName(lines).where(F.col("product_id").isNotNull())


def _product_measures() -> list[Column]:
    purchases = F.count_distinct(F.when(F.col("event_type") == "purchase", F.col("order_id")))
    views = F.count(F.when(F.col("event_type") == "product_view", 1))
    return [
        F.max("category").alias("category"),  # a product's category; max makes a rare conflict stable
        views.alias("views"),
        F.count(F.when(F.col("event_type") == "add_to_cart", 1)).alias("carts"),
        purchases.alias("purchases"),
        F.sum("units").alias("units"),
        F.round(F.sum("revenue"), 2).alias("revenue"),
        F.when(views > 0, purchases / views).alias("conversion"),
    ]


def product_hourly(events: DataFrame) -> DataFrame:
    activity = product_activity(events).withColumn("hour_start", F.date_trunc("hour", "ts"))
    rows = activity.groupBy("hour_start", "product_id").agg(*_product_measures())
    return rows.select("*", *_partition(F.col("hour_start"), HOUR_PARTITION)).select(*PRODUCT_HOURLY_COLUMNS)


def product_daily(events: DataFrame) -> DataFrame:
    activity = product_activity(events).withColumn("date", F.to_date("ts"))
    rows = activity.groupBy("date", "product_id").agg(*_product_measures())
    return rows.select("*", *_partition(F.col("date").cast("timestamp"), DAY_PARTITION)).select(
        *PRODUCT_DAILY_COLUMNS
    )


def category_daily(events: DataFrame) -> DataFrame:
    activity = product_activity(events).withColumn("date", F.to_date("ts"))
    views = F.count(F.when(F.col("event_type") == "product_view", 1))
    purchases = F.count_distinct(F.when(F.col("event_type") == "purchase", F.col("order_id")))
    rows = activity.groupBy("date", "category").agg(
        F.count_distinct(F.when(F.col("event_type") == "product_view", F.col("product_id"))).alias(
            "products_viewed"
        ),
        views.alias("views"),
        F.count(F.when(F.col("event_type") == "add_to_cart", 1)).alias("carts"),
        purchases.alias("purchases"),
        F.sum("units").alias("units"),
        F.round(F.sum("revenue"), 2).alias("revenue"),
        F.when(views > 0, purchases / views).alias("conversion"),
    )
    return rows.select("*", *_partition(F.col("date").cast("timestamp"), DAY_PARTITION)).select(
        *CATEGORY_DAILY_COLUMNS
    )


def funnel_daily(events: DataFrame) -> DataFrame:
    """Sessions reaching each step having reached every earlier one (in any order) that day."""
    per_session = (
        events.where(F.col("session_id").isNotNull() & F.col("event_type").isin(*FUNNEL_STEPS))
        .withColumn("date", F.to_date("ts"))
        .groupBy("date", "session_id")
        .agg(*[F.max(F.col("event_type") == step).alias(step) for step in FUNNEL_STEPS])
    )
    reached = [F.lit(True)]
    for step in FUNNEL_STEPS:
        reached.append(reached[-1] & F.col(step))
    counts = per_session.groupBy("date").agg(
        *[F.count(F.when(reached[i + 1], 1)).alias(f"s{i}") for i in range(len(FUNNEL_STEPS))]
    )
    steps = F.array(
        *[
            F.struct(
                F.lit(step).alias("step"),
                F.lit(i + 1).alias("step_index"),
                F.col(f"s{i}").alias("sessions"),
                F.col(f"s{max(i - 1, 0)}").alias("previous"),
                F.col("s0").alias("first"),
            )
            for i, step in enumerate(FUNNEL_STEPS)
        ]
    )
    rows = counts.select("date", F.explode(steps).alias("s")).select("date", "s.*")
    return rows.select(
        "*",
        F.when(F.col("previous") > 0, F.col("sessions") / F.col("previous")).alias("rate_from_previous"),
        F.when(F.col("first") > 0, F.col("sessions") / F.col("first")).alias("rate_from_first"),
        *_partition(F.col("date").cast("timestamp"), DAY_PARTITION),
    ).select(*FUNNEL_DAILY_COLUMNS)


def user_daily(events: DataFrame) -> DataFrame:
    def count(event_type: str) -> Column:
        return F.count(F.when(F.col("event_type") == event_type, 1))

    amount = F.get_json_object("properties", "$.amount").try_cast("double")
    rows = (
        events.withColumn("date", F.to_date("ts"))
        .groupBy("date", "user_key")
        .agg(
            F.max("user_id").alias("user_id"),
            F.count("*").alias("events"),
            F.count_distinct("session_id").alias("sessions"),
            count("page_view").alias("page_views"),
            count("product_view").alias("product_views"),
            count("add_to_cart").alias("add_to_carts"),
            count("purchase").alias("orders"),
            F.round(
                F.coalesce(F.sum(F.when(F.col("event_type") == "purchase", amount)), F.lit(0.0)), 2
            ).alias("revenue"),
            F.min("ts").alias("first_ts"),
            F.max("ts").alias("last_ts"),
        )
    )
    return rows.select("*", *_partition(F.col("date").cast("timestamp"), DAY_PARTITION)).select(
        *USER_DAILY_COLUMNS
    )
