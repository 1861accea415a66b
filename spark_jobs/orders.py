"""Purchases enriched with reference data: the batch twin of the speed layer's order records.

One row per order (``ORDER_COLUMNS``): order_id, event_id, ts, user_key, user_id, session_id,
currency, amount, payment_method, promo_code, promo_discount_pct (null when the code is unknown),
promo_valid (known, in its validity dates, and the category matches when the promo has one),
items_count (lines), units, items (array of product_id, quantity, price, line_total, category —
the event's, else the catalogue's — name, brand, list_price), categories (distinct, sorted),
country and device (from context), and the hour partition. The speed layer's enrichment writes
the same fields; the user's latest traits are not joined here yet.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.aggregates import with_properties
from spark_jobs.clean_events import hour_partition
from spark_jobs.schemas import CONTEXT_SCHEMA, ORDER_COLUMNS


def orders(events: DataFrame, products: DataFrame, promos: DataFrame) -> DataFrame:
    """Clean events → enriched orders; ``products``/``promos`` are the reference CSVs as frames."""
    purchases = with_properties(events).where(
        (F.col("event_type") == "purchase") & F.col("props.order_id").isNotNull()
    )
    lines = purchases.select("event_id", F.posexplode("props.items").alias("line", "i"))
    catalogue = products.select(
        F.col("product_id").alias("ref_id"),
        F.col("name"),
        F.col("brand"),
        F.col("category").alias("ref_category"),
        F.col("price").alias("list_price"),
    )
    enriched = lines.join(catalogue, lines["i.product_id"] == catalogue["ref_id"], how="left").select(
        "event_id",
        "line",
        F.struct(
            F.col("i.product_id").alias("product_id"),
            F.col("i.quantity").alias("quantity"),
            F.col("i.price").alias("price"),
            F.round(F.col("i.quantity") * F.col("i.price"), 2).alias("line_total"),
            F.coalesce("i.category", "ref_category").alias("category"),
            "name",
            "brand",
            "list_price",
        ).alias("item"),
    )
    items = enriched.groupBy("event_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("line", "item"))), lambda x: x["item"]).alias(
            "items"
        )
    )
    promo = promos.select(
        F.col("promo_code").alias("code"),
        F.col("discount_pct").alias("promo_discount_pct"),
        F.col("category").alias("promo_category"),
        F.to_date("valid_from").alias("valid_from"),
        F.to_date("valid_to").alias("valid_to"),
    )
    joined = purchases.join(items, on="event_id", how="left").join(
        promo, purchases["props.promo_code"] == promo["code"], how="left"
    )
    categories = F.array_sort(F.array_distinct(F.filter(F.col("items.category"), lambda c: c.isNotNull())))
    in_dates = F.to_date("ts").between(F.col("valid_from"), F.col("valid_to"))
    category_ok = F.col("promo_category").isNull() | F.array_contains(categories, F.col("promo_category"))
    context = F.from_json("context", CONTEXT_SCHEMA)
    return joined.select(
        F.col("props.order_id").alias("order_id"),
        "event_id",
        "ts",
        "user_key",
        "user_id",
        "session_id",
        F.col("props.currency").alias("currency"),
        F.col("props.amount").alias("amount"),
        F.col("props.payment_method").alias("payment_method"),
        F.col("props.promo_code").alias("promo_code"),
        "promo_discount_pct",
        F.when(
            F.col("props.promo_code").isNotNull(), F.col("code").isNotNull() & in_dates & category_ok
        ).alias("promo_valid"),
        F.size(F.coalesce("items", F.array())).alias("items_count"),
        F.aggregate(
            F.coalesce("items.quantity", F.array()),
            F.lit(0).cast("long"),
            lambda a, q: a + F.coalesce(q, F.lit(0)),
        ).alias("units"),
        "items",
        categories.alias("categories"),
        context["country"].alias("country"),
        context["device"].alias("device"),
        *hour_partition(F.col("ts")),
    ).select(*ORDER_COLUMNS)
