"""`lambdalake bench contract`: how fast the generator writes and the contract validates events."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.contract import EventValidator


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, float]:
    events = 50_000 if quick else 500_000
    progress(f"generating {events:,} events (seed 1)")
    started = time.perf_counter()
    lines = list(ClickstreamGenerator(GeneratorConfig(events=events, seed=1)).lines())
    generator_s = time.perf_counter() - started

    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            parsed.append(line)  # malformed lines are part of the mix a collector validates
    validator = EventValidator()
    validator.validate(parsed[0])  # compile the schemas outside the timed loop
    progress(f"validating {len(parsed):,} events")
    started = time.perf_counter()
    rejected = sum(1 for event in parsed if validator.validate(event))
    validation_s = time.perf_counter() - started
    progress(f"{rejected:,} rejected ({rejected / len(parsed):.2%})")
    return {
        "events": events,
        "generator_events_per_s": round(events / generator_s),
        "validation_events_per_s": round(len(parsed) / validation_s),
    }
