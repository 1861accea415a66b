"""`lambdalake demo` (what `make demo` runs): the platform end to end on the local profile.

Starts the engines, generates a sample of recent traffic (a few closed hours plus the current
one) with reference data, starts the collector, the speed layer and lake delivery, sends the
sample through the collector, shows the real-time views and the lake files it produced, then
keeps a live stream of events flowing until Ctrl-C, which stops every service it started (the
engines and their data stay). Each layer adds its step here as it lands.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from lambdalake.settings import Settings, get_settings

SPEED_GROUPS = "views,alerts,enrich"
LIVE_USERS = 2_000
SHOWN_HOURS = 12  # the speed layer's table covers the sample's hours, at most this many
CATCH_UP_HOURS = 7 * 24  # how far back the demo's batch takes hours earlier demos left unbatched


def demo(
    events: int = typer.Option(20_000, "--events", "-n", min=1, help="Size of the generated sample."),
    hours: int = typer.Option(3, "--hours", min=1, help="How many past hours the sample covers."),
    seed: int = typer.Option(
        42, "--seed", help="Mixed with the hour, so a rerun within the hour resends the same events."
    ),
    follow: bool = typer.Option(
        True,
        "--follow/--no-follow",
        help="Keep a live stream flowing until Ctrl-C (else stop after the sample).",
    ),
    rate: float = typer.Option(5.0, "--rate", min=0.1, help="Live events per second with --follow."),
    sample_file: Path | None = typer.Option(
        None,
        "--sample",
        exists=True,
        dir_okay=False,
        help="Send these NDJSON events instead of generating a sample.",
    ),
    with_airflow: bool = typer.Option(
        True, "--airflow/--no-airflow", help="Also start the local Airflow (UI and scheduler, DAGs paused)."
    ),
) -> None:
    """Start everything, send a sample through the collector, run the batch for the closed hours,
    serve the reconciled views and the dashboard, then stream live events until Ctrl-C."""
    from batch.watermark import hour_start
    from ingest.collector.process import CollectorProcess
    from lambdalake.local.process import ServiceProcess
    from lambdalake.local.services import LocalEngines

    # Ctrl-C and SIGTERM both stop every service this demo started (and only those). A shell that
    # starts the demo in the background leaves SIGINT ignored: take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings = get_settings()
    step = _Steps(6)
    step("local engines")
    LocalEngines(settings).up(progress=lambda msg: typer.echo(f"    {msg}"))

    now = datetime.now(UTC)
    first_hour = hour_start(now) - timedelta(hours=hours)
    if sample_file is None:
        step(f"sample: {events:,} events over the last {hours} hours")
        sample = _write_sample(settings, events, hours, seed)
        typer.echo(f"    wrote {sample}")
    else:
        step(f"sample: {sample_file}")
        sample = sample_file
        first_hour = _first_hour(sample) or first_hour
        if not _has_reference(settings):
            _write_reference(settings, seed)

    step("services: collector, speed layer, lake delivery, serving" + (", airflow" if with_airflow else ""))
    services: list[ServiceProcess] = []
    airflow: ServiceProcess | None = None
    try:
        if with_airflow:  # slow to start: it comes up while the rest runs
            airflow = ServiceProcess(settings, ["airflow"], name="airflow").start()
            services.append(airflow)
        services.append(CollectorProcess(settings).start(timeout_s=60))
        typer.echo(f"    collector  http://127.0.0.1:{settings.collector_port}   log {services[-1].log_path}")
        services.append(
            ServiceProcess(settings, ["speed", "--groups", SPEED_GROUPS], name="speed").start(timeout_s=60)
        )
        typer.echo(f"    speed      groups {SPEED_GROUPS}   log {services[-1].log_path}")
        services.append(ServiceProcess(settings, ["deliver"], name="deliver").start(timeout_s=60))
        typer.echo(f"    delivery   stream -> {settings.lake_uri}/raw   log {services[-1].log_path}")
        services.append(
            ServiceProcess(settings, ["serve"], name="serve", ready=lambda: _serving_up(settings)).start(
                timeout_s=60
            )
        )
        typer.echo(f"    serving    {_dashboard_url(settings)}   log {services[-1].log_path}")

        step("sending the sample through the collector")
        stats = _views_stats(settings)
        before, late_before = _processed(stats), _late_for_their_hour(stats)
        accepted = _send(sample)
        typer.echo("    waiting for the speed layer to catch up ...")
        stats = _wait_for_views(settings, target=before + accepted)
        _explain_late(settings, _late_for_their_hour(stats) - late_before, accepted)
        _show_views(settings, first_hour)
        _show_lake(settings)

        step("batch: the hours delivery has closed (Spark, quality gates, warehouse, watermark)")
        _batch(settings, first_hour)
        _show_agreement(settings, first_hour)
        _where(settings, sample, airflow)
        if follow:
            _live(settings, rate, services)
    finally:
        for service in reversed(services):
            service.stop(timeout_s=30)
        if services:
            typer.echo("stopped the services; the engines and all data keep (`make down` stops the engines).")


def _first_hour(sample: Path) -> datetime | None:
    """The earliest event hour of an NDJSON file (lines that are not events are skipped)."""
    import orjson

    from batch.intervals import parse_moment
    from batch.watermark import hour_start

    first: datetime | None = None
    with sample.open("rb") as lines:
        for line in lines:
            try:
                moment = hour_start(parse_moment(str(orjson.loads(line)["ts"])))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            first = moment if first is None else min(first, moment)
    return first


def _serving_up(settings: Settings) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{settings.serving_port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _dashboard_url(settings: Settings) -> str:
    key = settings.read_keys[0] if settings.read_keys else ""
    return f"http://127.0.0.1:{settings.serving_port}/?key={key}"


def batch_start(first_hour: datetime, watermark: datetime | None, now: datetime) -> datetime:
    """The first hour the demo's batch plans: the sample's first hour or, if earlier, the hour
    after the batch watermark, so that hours delivery closed after an earlier demo (and the paused
    hourly DAG never processed) are batched too and the watermark reaches the sample's hours;
    at most ``CATCH_UP_HOURS`` back."""
    from batch.watermark import HOUR, hour_start

    if watermark is None:
        return first_hour
    floor = hour_start(now) - CATCH_UP_HOURS * HOUR
    return min(first_hour, max(watermark + HOUR, floor))


def _batch(settings: Settings, first_hour: datetime) -> None:
    """The hourly pipeline over every closed hour of the sample and those since the watermark
    (what the hourly DAG does per hour)."""
    from batch.pipeline import process_hours, spark_for
    from batch.watermark import HOUR, Watermark, hour_start

    now = datetime.now(UTC)
    end = hour_start(now) + HOUR
    start = batch_start(first_hour, Watermark(settings).watermark(), now)
    if start < first_hour:
        typer.echo(
            f"    and the hours since the batch watermark, from {start:%Y-%m-%dT%H}: earlier runs left "
            "them unbatched (the hourly DAG is paused until you switch it on)"
        )
    typer.echo("    starting Spark (local mode) ...")
    spark = spark_for(settings)
    try:
        report = process_hours(settings, start, end, progress=lambda m: typer.echo(f"    {m}"), spark=spark)
    finally:
        spark.stop()
    if report.waiting:
        typer.echo(
            f"    {len(report.waiting)} hour(s) not closed yet by delivery (served by the speed layer "
            "until batch publishes them; `lambdalake batch --hour H` or the hourly DAG does it later)"
        )


def _indented(message: str) -> None:
    typer.echo(f"    {message}")


def _show_agreement(settings: Settings, first_hour: datetime) -> None:
    """Speed and batch side by side for the published hours: the serving layer's drift report."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    key = settings.read_keys[0] if settings.read_keys else ""
    params = {"start": first_hour.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": _iso(datetime.now(UTC))}
    try:
        response = httpx.get(
            f"http://127.0.0.1:{settings.serving_port}/v1/drift",
            params=params,
            headers={"X-Read-Key": key},
            timeout=30,
        )
        response.raise_for_status()
        rows = response.json()["rows"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        typer.secho(f"    drift report unavailable: {exc}", fg=typer.colors.YELLOW)
        return
    shown = ("page_views", "orders", "revenue", "active_users")
    table = Table(
        "hour (UTC)", "metric", "speed", "batch", "speed - batch", title="speed vs batch, published hours"
    )
    for row in rows:
        if row["metric"] not in shown:
            continue
        table.add_row(
            row["hour"][5:16].replace("T", " "),
            row["metric"],
            _number(row.get("speed")),
            _number(row.get("batch")),
            _signed(row.get("rel_diff"), row.get("speed"), row.get("batch")),
        )
    Console().print(table)
    typer.echo(
        "    batch is exact (all late events, exact distinct counts); speed counts HyperLogLog "
        "estimates and drops events later than the allowed lateness, as a rerun's sample is for "
        "hours an earlier demo's live stream moved past"
    )


def _signed(rel_diff: float | None, speed: float | None, batch: float | None) -> str:
    """The drift report's relative difference (a magnitude, |speed - batch| / |batch|) with the sign
    of speed - batch: speed below batch (late events it dropped) shows as negative."""
    if rel_diff is None:
        return "-"
    return f"{-rel_diff if speed is not None and batch is not None and speed < batch else rel_diff:+.2%}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}" if value % 1 else f"{value:,.0f}"


class _Steps:
    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def __call__(self, title: str) -> None:
        self.done += 1
        typer.secho(f"{self.done}/{self.total} {title}", bold=True)


def _write_sample(settings: Settings, events: int, hours: int, seed: int) -> Path:
    from batch.watermark import hour_start
    from ingest.generator import ClickstreamGenerator, GeneratorConfig

    now = datetime.now(UTC)
    start = hour_start(now) - timedelta(hours=hours)
    span_s = max((now - start).total_seconds(), 1.0)
    # The same hour gives the same events (same event_ids: a rerun is deduped, not double-counted);
    # a later hour gives new ones.
    hour_seed = seed * 1_000_003 + int(start.timestamp()) // 3600
    config = GeneratorConfig(events=events, seed=hour_seed, start=start, events_per_s=events / span_s)
    generator = ClickstreamGenerator(config)
    sample = settings.home / "demo" / "events.ndjson"
    sample.parent.mkdir(parents=True, exist_ok=True)
    with sample.open("wb") as out:
        for line in generator.lines():
            out.write(line + b"\n")
    _write_reference(settings, seed, generator)
    return sample


def _has_reference(settings: Settings) -> bool:
    from lambdalake import lake

    return lake.exists(lake.join(settings.lake_uri, lake.REFERENCE_PRODUCTS), settings)


def _write_reference(settings: Settings, seed: int, generator: Any = None) -> None:
    """Products and promos in the lake's reference zone (the generator's catalogue)."""
    from ingest.generator import ClickstreamGenerator, GeneratorConfig

    (generator or ClickstreamGenerator(GeneratorConfig(events=0, seed=seed))).write_reference(settings)


def _send(sample: Path) -> int:
    """Send the sample through the collector; the number of events it accepted onto the stream."""
    from lambdalake.cli.send import send

    report = send(
        file=str(sample),
        endpoint=None,
        write_key=None,
        batch_size=None,
        concurrency=None,
        progress=True,
        as_json=False,
    )
    return int(report.accepted)


def _redis(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=5)


def _views_stats(settings: Settings) -> dict[bytes, bytes]:
    """The views group's counters (records applied, duplicate, invalid, late per window)."""
    from speed_layer.keys import SpeedKeys

    return _redis(settings).hgetall(SpeedKeys(settings.speed_key_prefix).stats("views"))


def _processed(stats: dict[bytes, bytes]) -> int:
    return sum(int(stats.get(field, 0)) for field in (b"applied", b"skipped", b"duplicates", b"invalid"))


def _late_for_their_hour(stats: dict[bytes, bytes]) -> int:
    """Events the views group found later than their hour's window (left to the batch layer)."""
    return int(stats.get(b"late_events:1h", 0))


def _explain_late(settings: Settings, late: int, accepted: int) -> None:
    typer.echo(
        f"    {late:,} of the sample's events came after the speed layer had closed their hour "
        f"(allowed lateness {settings.allowed_lateness_s} s): batch counts them"
    )
    if accepted and late > accepted // 20:
        typer.echo(
            "    (the sample reaches back into hours an earlier demo's live stream already moved past; "
            "the serving layer answers for those hours from batch once it publishes them)"
        )


def _wait_for_views(settings: Settings, target: int, timeout_s: float = 300.0) -> dict[bytes, bytes]:
    """Until the views group has processed ``target`` records (every record the sample put on the
    stream: applied, duplicate or invalid); returns its counters as last read. Not "until the count
    stands still": a busy machine can stall a consumer for seconds."""
    deadline = time.monotonic() + timeout_s
    stats = _views_stats(settings)
    count = _processed(stats)
    while count < target:
        if time.monotonic() > deadline:
            typer.echo(
                f"    views still busy after {timeout_s:.0f}s ({count:,} of {target:,} records so far); "
                "showing them"
            )
            return stats
        time.sleep(0.5)
        stats = _views_stats(settings)
        count = _processed(stats)
    typer.echo(f"    views caught up: {count:,} records processed")
    return stats


def _show_views(settings: Settings, first_hour: datetime) -> None:
    """The speed layer's hourly figures for the sample's hours (the last ``SHOWN_HOURS`` at most)."""
    from rich.console import Console
    from rich.table import Table

    from speed_layer.query import SpeedQuery

    query = SpeedQuery(settings, _redis(settings))
    console = Console()
    now = time.time()
    since = max(first_hour.timestamp(), (now // 3600 - SHOWN_HOURS + 1) * 3600)
    hourly = Table("hour (UTC)", "page views", "orders", "revenue", "users", "abandoned carts",
                   title="speed layer, per hour")  # fmt: skip
    for start, _ in query.series("page_views", "1h", since, now + 1):

        def value(name: str, bucket: int = start) -> float | None:
            return query.value(name, window="1h", buckets=[bucket])

        revenue, abandonment = value("revenue"), value("cart_abandonment_rate")
        hourly.add_row(
            datetime.fromtimestamp(start, UTC).strftime("%m-%d %H:00"),
            f"{value('page_views') or 0:,.0f}",
            f"{value('orders') or 0:,.0f}",
            f"{revenue or 0:,.2f}",
            f"{value('active_users') or 0:,.0f}",
            "-" if abandonment is None else f"{abandonment:.0%}",
        )
    console.print(hourly)
    trending = Table("product", "views, last hour", title="trending products")
    for product, views in query.top("trending_products_views", span="1h", k=5):
        trending.add_row(product, f"{views:,.0f}")
    console.print(trending)
    active = query.sliding("active_users", "5m")
    typer.echo(f"    active users in the last 5 minutes: {active or 0:,.0f}")


def _raw_files(settings: Settings) -> list[tuple[str, int]]:
    from lambdalake import lake

    return lake.list_files(lake.join(settings.lake_uri, "raw", "events"), settings)


def _show_lake(settings: Settings, quiet_s: float = 8.0, timeout_s: float = 120.0) -> None:
    """What delivery has written once it has gone quiet: Parquet files and closed hours (manifests)."""
    from ingest.delivery.layout import MANIFEST_NAME

    typer.echo("    waiting for delivery to flush its buffers ...")
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    files = _raw_files(settings)
    # Quiet for longer than the buffer interval: every shard's last partial buffer has been flushed.
    quiet_s = max(quiet_s, 1.5 * settings.delivery_buffer_interval_s)
    while time.monotonic() < deadline:
        files = _raw_files(settings)
        if files != last:
            last, since = files, time.monotonic()
        elif files and time.monotonic() - since >= quiet_s:
            break
        time.sleep(1.0)
    parquet = [uri for uri, _ in files if uri.endswith(".parquet")]
    closed = sorted(uri.rsplit("/", 1)[0] for uri, _ in files if uri.endswith(MANIFEST_NAME))
    size_mb = sum(size for _, size in files) / 1e6
    typer.echo(
        f"    lake raw zone: {len(parquet)} Parquet files, {size_mb:.1f} MB, {len(closed)} closed hours "
        "(an hour closes once every shard has passed its end plus the allowed lateness)"
    )
    for partition in closed[-3:]:
        typer.echo(f"      {partition}/{MANIFEST_NAME}")


def _where(settings: Settings, sample: Path, airflow: Any = None) -> None:
    from lambdalake import lake

    typer.secho("where to look", bold=True)
    serving = f"http://127.0.0.1:{settings.serving_port}"
    read_key = settings.read_keys[0] if settings.read_keys else "-"
    rows = [
        ("dashboard", _dashboard_url(settings)),
        ("serving API", f"{serving}/docs  (header X-Read-Key: {read_key})"),
        ("sample events (NDJSON)", str(sample)),
        ("collector", f"http://127.0.0.1:{settings.collector_port}  (/metrics, /healthz, /tracker.js)"),
        ("speed metrics", f"http://127.0.0.1:{settings.consumer_metrics_port}/metrics"),
        ("Redis views", f"{settings.redis_url}  (keys {settings.speed_key_prefix}:v:*)"),
        ("stream", f"{settings.stream_name} ({settings.stream_shards} shards), {settings.kinesis_endpoint}"),
        ("dead letters", f"{settings.dlq_stream_name} at {settings.kinesis_endpoint}"),
        ("lake (raw zone)", lake.join(settings.lake_uri, "raw", "events")),
        ("reference data", lake.join(settings.lake_uri, "reference")),
        ("warehouse", f"postgresql://{settings.warehouse_user}@127.0.0.1:{settings.warehouse_port}/{settings.warehouse_db}"),
        ("logs", str(settings.log_dir)),
    ]  # fmt: skip
    if airflow is not None:
        state = "" if airflow.alive() else "  (it stopped: see its log)"
        rows.insert(
            2,
            (
                "airflow UI",
                f"http://127.0.0.1:{settings.airflow_port}  login {settings.airflow_admin_user} / "
                f"{settings.airflow_admin_password}, DAGs paused until you switch them on{state}",
            ),
        )
    for name, where in rows:
        typer.echo(f"    {name:<24} {where}")
    typer.secho("try", bold=True)
    for example in (
        'lambdalake sql "SELECT * FROM v_revenue_hourly ORDER BY 1 DESC LIMIT 5"',
        'lambdalake sql --engine athena "SELECT event_type, count(*) FROM clean_events GROUP BY 1"',
        f"curl -H 'X-Read-Key: {settings.read_keys[0] if settings.read_keys else ''}' "
        f"'{serving}/v1/metrics/page_views?granularity=hour'",
    ):
        typer.echo(f"    {example}")


def _live(settings: Settings, rate: float, services: list[Any]) -> None:
    """Stream generated events in real time through the Python producer until Ctrl-C."""
    import orjson

    from ingest.generator import ClickstreamGenerator, GeneratorConfig
    from lambdalake.client import Producer
    from speed_layer.query import SpeedQuery

    typer.secho(f"live: {rate:g} events/s through the Python producer; Ctrl-C stops", bold=True)
    query = SpeedQuery(settings, _redis(settings))
    producer = Producer(settings=settings)
    start = datetime.now(UTC)
    # A week of events at most; the user count is set, else it would scale with that count.
    config = GeneratorConfig(
        events=int(rate * 7 * 86400),
        seed=int(start.timestamp()),
        start=start,
        events_per_s=rate,
        users=LIVE_USERS,
    )
    generator = ClickstreamGenerator(config)
    wall0, start_ms, sent, next_report = time.monotonic(), start.timestamp() * 1000, 0, time.monotonic() + 10
    try:
        for item in generator.emitted():
            wait = (item.arrival_ms - start_ms) / 1000 - (time.monotonic() - wall0)
            if wait > 0:
                time.sleep(wait)
            try:
                producer.send(orjson.loads(item.line))
                sent += 1
            except (orjson.JSONDecodeError, ValueError, TypeError):
                pass  # the generator's malformed events: the producer refuses them client-side
            if time.monotonic() >= next_report:
                next_report += 10
                if not all(service.alive() for service in services):
                    typer.secho("a service stopped: see the logs above", fg=typer.colors.RED)
                    return
                minute = int(time.time() // 60) * 60
                page_views = query.value("page_views", window="1m", buckets=[minute]) or 0
                active = query.sliding("active_users", "5m") or 0
                typer.echo(
                    f"    {datetime.now(UTC):%H:%M:%S}  sent {sent:,}  "
                    f"page views this minute {page_views:,.0f}  active users (5 min) {active:,.0f}"
                )
    except KeyboardInterrupt:
        typer.echo("\nstopping ...")
    finally:
        producer.close()


def register(app: typer.Typer) -> None:
    app.command()(demo)
