"""`lambdalake send` against the real collector and kinesalite: its counts match the file, the stream
holds exactly the accepted events, and the DLQ holds the lines that were not even JSON."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from lambdalake.contract import EventValidator
from lambdalake.settings import Settings, env_name
from tests.integration.test_producer_collector import running_collector, settings_env, wait_for_stream

pytestmark = pytest.mark.integration

LAMBDALAKE = str(Path(sys.executable).with_name("lambdalake"))


@dataclass
class Expected:
    """What the collector should do with a file, by the shared contract's rules."""

    accepted: Counter[str] = field(default_factory=Counter)  # event_id -> times (resends count twice)
    accepted_without_id: list[dict[str, Any]] = field(default_factory=list)  # the collector fills the id
    not_json: list[str] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)

    @property
    def accepted_count(self) -> int:
        return sum(self.accepted.values()) + len(self.accepted_without_id)


def expected_outcome(lines: list[bytes]) -> Expected:
    """Mirrors the collector: an object, stamped with received_at (and an event_id where it has
    none), that validates against the contract is accepted; anything else is rejected."""
    validator = EventValidator()
    out = Expected()
    for line in lines:
        try:
            item: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            out.not_json.append(line.decode())
            continue
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("session_id"), str):
            out.sessions.add(item["session_id"])
        stamped = {**item, "received_at": "2026-01-01T00:00:00Z"}
        if item.get("event_id") is None:
            stamped["event_id"] = str(uuid.uuid4())
        if not validator.validate(stamped):
            if item.get("event_id") is None:
                out.accepted_without_id.append(item)
            else:
                out.accepted[item["event_id"]] += 1
    return out


def test_send_counts_match_the_file_and_the_stream(engines: Settings, tmp_path: Path) -> None:
    data = tmp_path / "events.ndjson"
    # A random seed for fresh event_ids (the session's stream is shared), until the file holds lines
    # that are not JSON and invalid events that are: 400 events at 8% malformed have no truncated
    # line once in ~70 seeds (one malformed kind in eight).
    for _ in range(10):
        seed = random.randrange(1, 2**31)
        subprocess.run(
            [LAMBDALAKE, "generate", "-n", "400", "--seed", str(seed), "--no-reference",
             "--malformed-rate", "0.08", "--duplicate-rate", "0.05", "--out", str(data)],
            check=True, env=settings_env(engines), cwd=engines.home, timeout=60,
        )  # fmt: skip
        lines = [line for line in data.read_bytes().splitlines() if line.strip()]
        expected = expected_outcome(lines)
        not_json = expected.not_json
        if not_json and expected.accepted_count < len(lines) - len(not_json):
            break
    else:
        pytest.fail("ten generated files lacked lines that are not JSON or invalid JSON events")

    with running_collector(engines) as collector:
        result = subprocess.run(
            [LAMBDALAKE, "send", str(data), "--batch-size", "37", "--concurrency", "3", "--json", "--no-progress"],
            capture_output=True, text=True, env=settings_env(collector), cwd=collector.home, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["lines"] == len(lines)
    assert summary["accepted"] == expected.accepted_count
    assert summary["rejected"] == len(lines) - expected.accepted_count
    assert summary["invalid_json"] == len(not_json)
    assert (summary["not_sent"], summary["rejected_locally"]) == (0, 0)
    assert summary["requests"] == -(-len(lines) // 37)

    on_stream = wait_for_stream(
        collector,
        collector.stream_name,
        lambda r: r.get("event_id") in expected.accepted or r.get("session_id") in expected.sessions,
        expected.accepted_count,
    )
    assert len(on_stream) == expected.accepted_count
    with_id = Counter(r["event_id"] for r in on_stream if r["event_id"] in expected.accepted)
    assert with_id == expected.accepted  # resent lines twice, nothing else
    filled = [r for r in on_stream if r["event_id"] not in expected.accepted]
    assert len(filled) == len(expected.accepted_without_id)
    assert all(uuid.UUID(r["event_id"]) for r in filled)

    texts = set(not_json)
    dead = wait_for_stream(
        collector,
        collector.dlq_stream_name,
        lambda r: isinstance(r.get("payload"), str) and r["payload"] in texts,
        len(not_json),
    )
    assert sorted(r["payload"] for r in dead) == sorted(not_json)
    assert all(r["reasons"] == ["event: must be a JSON object, got str"] for r in dead)


def test_send_reads_stdin_and_fails_clearly(engines: Settings, tmp_path: Path) -> None:
    body = b'{"event_type": "search"}\n'
    with running_collector(engines) as collector:
        env = settings_env(collector)
        ok = subprocess.run(
            [LAMBDALAKE, "send", "-"],  # with the progress bar (on stderr), total unknown
            input=body, capture_output=True, env=env, cwd=collector.home, timeout=60,
        )  # fmt: skip
        wrong_key = subprocess.run(
            [LAMBDALAKE, "send", "-", "--write-key", "nope"],
            input=body, capture_output=True, env=env, cwd=collector.home, timeout=60,
        )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert b"1 lines: 0 accepted, 1 rejected" in ok.stdout
    assert b"user_id or anonymous_id" in ok.stdout  # the collector's reason, shown
    assert b"send -" in ok.stderr  # the progress bar's label
    assert wrong_key.returncode == 1
    assert b"refused the write key" in wrong_key.stderr
    assert b"Traceback" not in wrong_key.stderr

    gone = subprocess.run(
        [LAMBDALAKE, "send", "-", "--no-progress"],
        input=body, capture_output=True, cwd=collector.home, timeout=60,
        env={**env, env_name("producer_max_retries"): "1", env_name("producer_backoff_cap_s"): "0.1"},
    )  # fmt: skip
    assert gone.returncode == 1
    assert b"1 not sent" in gone.stdout
    assert b"ConnectError" in gone.stderr

    missing = subprocess.run(
        [LAMBDALAKE, "send", str(tmp_path / "nope.ndjson")], capture_output=True, env=env, timeout=30
    )
    assert missing.returncode == 1
    assert b"no such file" in missing.stderr
