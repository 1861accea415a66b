"""Settings: one object, env prefix LAMBDALAKE_, two profiles; code reads derived values from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdalake.settings import Settings, env_name


def test_defaults_avoid_well_known_ports(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, home=tmp_path)  # type: ignore[call-arg]
    assert settings.profile == "local"
    assert {settings.redis_port, settings.warehouse_port} & {6379, 5432} == set()
    assert settings.kinesis_endpoint == f"http://127.0.0.1:{settings.kinesis_port}"
    assert settings.redis_url == f"redis://127.0.0.1:{settings.redis_port}/0"
    assert settings.lake_uri == (tmp_path / "lake").as_uri()
    assert settings.stream_shards == 4


def test_environment_overrides_with_prefix_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDALAKE_REDIS_PORT", "7000")
    monkeypatch.setenv("LAMBDALAKE_WRITE_KEYS", "k1, k2,,k3")
    monkeypatch.setenv("LAMBDALAKE_STRICT_EVENT_TYPES", "page_view,purchase")
    monkeypatch.setenv("LAMBDALAKE_LAKE_URI", "s3://my-bucket/lake/")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_port == 7000
    assert settings.write_keys == ["k1", "k2", "k3"]
    assert settings.strict_event_types == ["page_view", "purchase"]
    assert settings.lake_uri == "s3://my-bucket/lake"


def test_aws_profile_uses_managed_endpoints_and_boto_credentials() -> None:
    settings = Settings(_env_file=None, profile="aws", lake_bucket="acme-lake")  # type: ignore[call-arg]
    assert settings.kinesis_endpoint is None
    assert settings.lake_uri == "s3://acme-lake"
    assert "aws_access_key_id" not in settings.aws_client_kwargs()


def test_local_profile_gets_placeholder_credentials_for_local_engines() -> None:
    kwargs = Settings(_env_file=None).aws_client_kwargs()  # type: ignore[call-arg]
    assert kwargs["aws_access_key_id"]
    assert kwargs["aws_secret_access_key"]


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDALAKE_PROFILE", "staging")
    with pytest.raises(ValueError, match="profile"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_env_name_names_the_variable() -> None:
    assert env_name("redis_port") == "LAMBDALAKE_REDIS_PORT"
