"""`lambdalake capacity`: Kinesis shards, workers, delivery buffers and a monthly cost estimate."""

from __future__ import annotations

import json

import typer

from lambdalake.errors import LambdalakeError


def capacity(
    events_per_s: float = typer.Option(..., "--events-per-s", help="Average events per second."),
    avg_event_kb: float = typer.Option(..., "--avg-event-kb", help="Average event size in KiB (JSON)."),
    headroom: float = typer.Option(0.25, "--headroom", help="Extra capacity for peaks (0.25 = +25%)."),
    retention_hours: int = typer.Option(24, "--retention-hours", help="Stream retention (24-8760 h)."),
    idle_poll_s: float = typer.Option(
        0.2, "--idle-poll-s", help="Consumers' idle poll interval (LAMBDALAKE_CONSUMER_IDLE_POLL_S)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of the table."),
) -> None:
    """Size the aws profile for a traffic level: shards, workers, buffers and monthly cost."""
    from lambdalake.capacity import CapacityInput, plan

    try:
        spec = CapacityInput(events_per_s, avg_event_kb, headroom, retention_hours, idle_poll_s)
    except ValueError as exc:
        raise LambdalakeError(str(exc)) from None
    result = plan(spec)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    cost = result.monthly_cost_usd
    lines = [
        f"traffic        {events_per_s:g} events/s × {avg_event_kb:g} KiB = "
        f"{result.write_mib_s / (1 + headroom):.3f} MiB/s; sized for {result.peak_events_per_s:g} "
        f"events/s ({result.write_mib_s:.3f} MiB/s)",
        f"shards         {result.shards}  (write bytes {result.shards_for_write_bytes}, write records "
        f"{result.shards_for_write_records}, reads {result.shards_for_reads} for "
        f"{len(result.consumer_groups)} groups: {', '.join(result.consumer_groups)}; bound by "
        f"{result.binding_limit})",
        f"workers        speed {result.speed_workers} (lambdalake speed --workers), delivery "
        f"{result.delivery_workers}",
        f"delivery       LAMBDALAKE_DELIVERY_BUFFER_MIB={result.delivery_buffer_mib:g}  "
        f"LAMBDALAKE_DELIVERY_BUFFER_INTERVAL_S={result.delivery_buffer_interval_s:g}  "
        f"LAMBDALAKE_DELIVERY_BUFFER_RECORDS={result.delivery_buffer_records}",
        f"raw zone       {result.raw_gb_per_month:g} GB per month",
        f"redis          {result.redis_dedupe_gib:g} GiB for the dedupe sets (LAMBDALAKE_SPEED_DEDUPE_TTL_S "
        "shortens them); size the node for it plus the views",
        f"monthly cost   provisioned ${cost['provisioned']['total']:,.2f}   on-demand "
        f"${cost['on_demand']['total']:,.2f}   (USD)",
    ]
    for mode in ("provisioned", "on_demand", "shared"):
        items = ", ".join(f"{k} ${v:,.2f}" for k, v in cost[mode].items() if k != "total")
        lines.append(f"  {mode:<13}{items}")
    lines += [f"warning        {w}" for w in result.warnings]
    lines.append("assumptions")
    lines += [f"  - {a}" for a in result.assumptions]
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command()(capacity)
