"""Compare the views processor of another commit with the working tree's, batch by batch.

    .venv/bin/python scripts/ab_views.py [--against REF] [--events N] [--passes P]
                                         [--block B] [--pipelined]

This machine's speed changes by up to 1.7x from one minute to the next, so two bench runs a minute
apart cannot show a 5% change. Here both processors run in one process over the same generated
events, alternating batch by batch (each into its own redis-server), so both see the same minutes:
the ratio of their CPU per event (Python: this process's thread time in ``process_records``;
Redis: each server's CPU) and of their time moves by about 2% between two runs of the same code
(docs/benchmarks.md).
It then compares the two Redis states, key by key and value by value (TTLs aside), and exits 1 if
they differ: a faster processor that writes something else is a bug, not a speed-up.

Only ``speed_layer`` is taken from REF (as ``speed_layer_base``); ``lambdalake`` and ``bench`` are
the working tree's for both.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def base_package(ref: str, into: Path) -> None:
    """``speed_layer`` of ``ref`` as the package ``speed_layer_base`` under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "speed_layer"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "speed_layer_base"
    (into / "speed_layer").rename(package)
    for source in package.glob("*.py"):
        text = re.sub(r"\bspeed_layer(?=[. ])", "speed_layer_base", source.read_text())
        source.write_text(text)


def redis_state(client: Any) -> dict[bytes, Any]:
    """Every key's value, read by type (a set's members sorted: their order is the server's)."""
    out: dict[bytes, Any] = {}
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        if kind == b"string":
            out[key] = client.get(key)
        elif kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = sorted(client.smembers(key))
        elif kind == b"stream":
            out[key] = [fields for _, fields in client.xrange(key)]
        else:
            out[key] = (kind, client.dump(key))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=2, help="runs over the events, from empty Redis")
    parser.add_argument(
        "--block", type=int, default=1, help="batches each side processes per turn (default 1)"
    )
    parser.add_argument(
        "--pipelined",
        action="store_true",
        help="a side with submit_records submits each batch of its turn while the one before is "
        "applied, and finishes the last (as the runtime does while a shard has a backlog); use "
        "--block of 5 or more, since every turn ends with a finish",
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="lambdalake-ab-"))
    engines: list[Any] = []
    try:
        base_package(args.against, scratch)
        sys.path[:0] = [str(ROOT), str(scratch)]
        import redis as redis_lib
        import speed_layer_base.metrics as metrics_a  # type: ignore[import-not-found]
        import speed_layer_base.views as views_a  # type: ignore[import-not-found]

        import speed_layer.metrics as metrics_b
        import speed_layer.views as views_b
        from bench._common import free_port
        from bench.speed import _cpu_s, _lines
        from lambdalake import heap
        from lambdalake.consumer.processor import BatchContext
        from lambdalake.local.services import RedisEngine, start_and_wait
        from lambdalake.settings import Settings
        from lambdalake.stream.bus import StreamRecord

        def server(name: str) -> tuple[Settings, Any, Any]:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                home=scratch / name,
                redis_port=free_port(),
                speed_key_prefix="ab",
            )
            engine = RedisEngine("redis", "redis_port", settings)
            engines.append(engine)
            start_and_wait(engine)
            return settings, engine, redis_lib.Redis.from_url(settings.redis_url)

        sides = {"A": server("a"), "B": server("b")}
        print(f"generating {args.events} events", flush=True)
        lines = _lines(args.events)
        records = [
            StreamRecord("shard-0", str(10**20 + i), key, line, ts) for i, (line, key, ts) in enumerate(lines)
        ]
        heap.settle()
        size = sides["A"][0].consumer_batch_size
        python = {"A": 0.0, "B": 0.0}
        wall = {"A": 0.0, "B": 0.0}
        redis_cpu = {"A": 0.0, "B": 0.0}
        for run in range(args.passes):
            print(f"pass {run + 1} of {args.passes}", flush=True)
            processors = {}
            for name, (settings, _engine, client) in sides.items():
                client.flushall()
                views, metrics = (views_a, metrics_a) if name == "A" else (views_b, metrics_b)
                processors[name] = views.ViewsProcessor(settings, client, metrics.SpeedMetrics())
            ctx = BatchContext("views", sides["A"][0].stream_name, "shard-0", "ab", 1, 0, 1)
            started = {name: _cpu_s(engine.pid()) for name, (_, engine, _) in sides.items()}
            starts = range(0, len(records), size)
            turns = [starts[i : i + args.block] for i in range(0, len(starts), args.block)]
            for index, turn in enumerate(turns):
                for name in ("A", "B") if index % 2 == 0 else ("B", "A"):
                    processor = processors[name]
                    pipelined = args.pipelined and hasattr(processor, "submit_records")
                    before, clock = time.thread_time(), time.perf_counter()
                    for start in turn:
                        if pipelined:
                            processor.submit_records(records[start : start + size], ctx)
                        else:
                            processor.process_records(records[start : start + size], ctx)
                    if pipelined:
                        processor.finish()
                    python[name] += time.thread_time() - before
                    wall[name] += time.perf_counter() - clock
            for name, (_, engine, _) in sides.items():
                redis_cpu[name] += _cpu_s(engine.pid()) - started[name]
        events = len(records) * args.passes
        for name in ("A", "B"):
            label = f"A ({args.against})" if name == "A" else "B (working tree)"
            print(
                f"{label}: Python {python[name] / events * 1e6:.2f} µs/event, "
                f"Redis {redis_cpu[name] / events * 1e6:.2f} µs/event, "
                f"{events / wall[name]:,.0f} events/s"
            )
        print(
            f"B/A: Python {python['B'] / python['A']:.3f}, Redis {redis_cpu['B'] / redis_cpu['A']:.3f}, "
            f"time {wall['B'] / wall['A']:.3f}"
        )
        state_a, state_b = (redis_state(client) for _, _, client in sides.values())
        differ = sorted(k for k in state_a.keys() | state_b.keys() if state_a.get(k) != state_b.get(k))
        print(f"Redis state: {len(state_a)} keys (A), {len(state_b)} (B), {len(differ)} differ {differ[:5]}")
        return 1 if differ else 0
    finally:
        for engine in engines:
            engine.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
