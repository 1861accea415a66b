"""Pure parts of the batch orchestration: the watermark's contiguity rule, the suites' failures on
bad rows (real Great Expectations on small frames), interval parsing and the Airflow environment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from batch import gates
from batch.watermark import contiguous_end, hour_start
from lambdalake.cli.airflow import airflow_env, write_passwords
from lambdalake.cli.batch import interval
from lambdalake.errors import LambdalakeError
from lambdalake.metrics.catalogue import load_catalogue
from tests.conftest import make_settings

H = timedelta(hours=1)
T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_contiguous_end_stops_at_a_hole_or_a_reprocessing_hour() -> None:
    assert contiguous_end([]) is None
    assert contiguous_end([(T0 + H, False), (T0, False), (T0 + 3 * H, False)]) == T0 + H
    assert contiguous_end([(T0, False), (T0 + H, True), (T0 + 2 * H, False)]) == T0
    assert contiguous_end([(T0, True), (T0 + H, False)]) is None
    assert hour_start(datetime(2026, 1, 1, 10, 59, 59)) == T0  # naive is UTC


def _suite(step: str, name: str, tmp_path: Path) -> tuple[gates.Suite, object]:
    settings = make_settings(tmp_path)
    suites = {s.name: s for s in gates.hourly_suites(settings)[step]}
    return suites[name], load_catalogue(settings.metric_catalogues)


def _ok(suite: gates.Suite, catalogue: object, df: pd.DataFrame) -> tuple[bool, list[str]]:
    result = gates.validate(f"unit_{suite.name}", suite.frame(df, T0), suite.expectations(catalogue))
    return bool(result["success"]), gates._summary(result)


def _clean_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"],
            "event_type": ["page_view", "purchase"],
            "user_key": ["u1", "u2"],
            "ts": [T0 + timedelta(minutes=1), T0 + timedelta(minutes=59)],
        }
    )


@pytest.mark.slow
def test_clean_suite_passes_good_rows_and_fails_each_defect(tmp_path: Path) -> None:
    suite, catalogue = _suite("clean", "clean_events", tmp_path)
    assert _ok(suite, catalogue, _clean_rows()) == (True, [])
    duplicate = _clean_rows().assign(event_id="00000000-0000-4000-8000-000000000001")
    assert _ok(suite, catalogue, duplicate)[1] == [
        "expect_column_values_to_be_unique[event_id] (2 unexpected)"
    ]
    null_key = _clean_rows().assign(user_key=["u1", None])
    assert (
        "expect_column_values_to_not_be_null[user_key] (1 unexpected)" in _ok(suite, catalogue, null_key)[1]
    )
    unknown = _clean_rows().assign(event_type=["page_view", "teleport"])
    assert _ok(suite, catalogue, unknown)[1] == [
        "expect_column_values_to_be_in_set[event_type] (1 unexpected)"
    ]
    late = _clean_rows().assign(ts=[T0, T0 + H])
    assert _ok(suite, catalogue, late)[1] == [
        "expect_column_values_to_be_between[ts_offset_s] (1 unexpected)"
    ]


@pytest.mark.slow
def test_orders_suite_fails_a_negative_amount(tmp_path: Path) -> None:
    suite, catalogue = _suite("curated", "orders", tmp_path)
    rows = pd.DataFrame(
        {
            "order_id": ["o1", "o2"],
            "event_id": ["e1", "e2"],
            "ts": [T0, T0 + timedelta(minutes=5)],
            "user_key": ["u1", "u2"],
            "amount": [10.0, 3.5],
            "items_count": [1, 2],
            "units": [1, 3],
            "promo_discount_pct": [None, 10.0],
        }
    )
    assert _ok(suite, catalogue, rows) == (True, [])
    ok, failed = _ok(suite, catalogue, rows.assign(amount=[10.0, -1.0]))
    assert not ok
    assert failed == ["expect_column_values_to_be_between[amount] (1 unexpected)"]


def test_batch_interval_parsing() -> None:
    assert interval("2026-01-01T10", None, None) == (T0, T0 + H)
    assert interval(None, "2026-01-01T10", "2026-01-02T00") == (T0, datetime(2026, 1, 2, tzinfo=UTC))
    with pytest.raises(LambdalakeError):
        interval("2026-01-01T10", "2026-01-01T10", None)
    with pytest.raises(LambdalakeError):
        interval(None, "2026-01-01T10", "2026-01-01T09")
    with pytest.raises(LambdalakeError):
        interval("tomorrow", None, None)


def test_airflow_environment_is_local_and_self_contained(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, airflow_port=18780, airflow_parallelism=3)
    env = airflow_env(settings, base={"PATH": "/usr/bin"})
    home = tmp_path / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18780"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).name == "dags"
    assert (Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "lambdalake_hourly.py").exists()
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["LAMBDALAKE_HOME"] == str(tmp_path)
    assert env["PATH"] == "/usr/bin"
    passwords = write_passwords(settings)
    assert str(passwords) == env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords.read_text() == '{"admin": "lambdalake-admin"}'
