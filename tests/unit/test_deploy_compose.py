"""docker-compose.yml and docker/: checked offline (no Docker engine on these machines).

The file is valid against the Compose Specification's JSON Schema (vendored in tests/data, see its
README); every lambdalake service runs a real `lambdalake` command with options the CLI accepts;
every Airflow service a real `airflow` command; every environment variable is a real setting (or
a real Airflow option); the Dockerfiles pin their base images and copy only what exists; every
long-running service has a healthcheck and a restart policy; ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml
from typer.testing import CliRunner

from lambdalake.cli import app
from lambdalake.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
LAMBDALAKE_DOCKERFILE = "docker/lambdalake.Dockerfile"

REQUIRED_SERVICES = {
    "redis",
    "postgres",
    "kinesis",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "collector",
    "speed",
    "delivery",
    "serving",
}


@cache
def setting_env_names() -> frozenset[str]:
    """Every environment variable the settings object reads (aliases where a field has one)."""
    return frozenset(
        field.alias if field.alias else f"{ENV_PREFIX}{name.upper()}"
        for name, field in Settings.model_fields.items()
    )


def remaining(ctx: Any) -> list[str]:
    """Arguments a group left for its subcommand (click keeps the subcommand name apart)."""
    return [*getattr(ctx, "_protected_args", []), *ctx.args]


def assert_lambdalake_command(command: list[str]) -> None:
    """``command`` is ``lambdalake <subcommand…> [options]`` that the real CLI accepts."""
    assert command[0] == "lambdalake", command
    args = [str(a) for a in command[1:]]
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, (command, result.output)
    # --help alone proves the command exists; parsing without it proves the options are valid.
    group = typer.main.get_command(app)
    ctx = group.make_context("lambdalake", list(args), resilient_parsing=False)
    rest = remaining(ctx)
    sub = group
    while rest and hasattr(sub, "resolve_command"):
        name, sub, rest = sub.resolve_command(ctx, rest)
        assert sub is not None, command
        ctx = sub.make_context(name, list(rest), parent=ctx, resilient_parsing=False)
        rest = remaining(ctx)
    assert not rest, (command, rest)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())


@pytest.fixture(scope="module")
def airflow_parser() -> Any:
    from airflow.cli.cli_parser import get_parser

    return get_parser()


def uses_lambdalake_image(service: dict[str, Any]) -> bool:
    return service.get("build", {}).get("dockerfile") == LAMBDALAKE_DOCKERFILE


def test_vendored_schema_is_the_documented_file() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(compose)
    ]
    assert errors == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["redis"].update(restart=["always"]),
        lambda c: c["services"]["collector"].update(healthcheck={"test": "x", "intervall": "5s"}),
        lambda c: c["services"]["speed"]["depends_on"]["redis"].update(condition="service_ready"),
        lambda c: c.update(servicez={}),
    ],
)
def test_the_schema_rejects_a_broken_file(
    compose: dict[str, Any], schema: dict[str, Any], breakage: Any
) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))


def test_every_platform_service_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= REQUIRED_SERVICES


def test_lambdalake_services_run_real_lambdalake_commands(services: dict[str, dict[str, Any]]) -> None:
    commands = {
        name: s["command"] for name, s in services.items() if s.get("command", [None])[0] == "lambdalake"
    }
    assert set(commands) >= {"collector", "speed", "delivery", "serving", "warehouse-init"}
    for command in commands.values():
        assert_lambdalake_command(command)


def test_command_check_rejects_what_the_cli_does_not_know() -> None:
    with pytest.raises(AssertionError):
        assert_lambdalake_command(["lambdalake", "no-such-command"])
    with pytest.raises(AssertionError):
        assert_lambdalake_command(["lambdalake", "speed", "--no-such-option", "1"])
    with pytest.raises(AssertionError):
        assert_lambdalake_command(["lambdalake", "warehouse", "no-such-subcommand"])


def airflow_commands(service: dict[str, Any]) -> list[list[str]]:
    """The `airflow …` invocations of a service: its command (also inside ``sh -c``) and healthcheck."""
    found = []
    candidates = [service.get("command", []), service.get("healthcheck", {}).get("test", [])]
    for command in candidates:
        command = [str(c) for c in command if c not in ("CMD", "CMD-SHELL")]
        if command[:2] == ["sh", "-c"]:
            for part in command[2].split("&&"):
                words = shlex.split(part)
                if words and words[0] == "airflow":
                    found.append(words)
        elif command and command[0] == "airflow":
            found.append(command)
    return found


def test_airflow_services_run_real_airflow_commands(
    services: dict[str, dict[str, Any]], airflow_parser: Any
) -> None:
    expected = {
        "airflow-init": ["db", "migrate"],
        "airflow-api-server": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-triggerer": ["triggerer"],
    }
    for name, head in expected.items():
        commands = airflow_commands(services[name])
        assert commands[0][1 : 1 + len(head)] == head, (name, commands)
        for command in commands:
            airflow_parser.parse_args(command[1:])  # SystemExit on an unknown command or option
    with pytest.raises(SystemExit):
        airflow_parser.parse_args(["no-such-command"])


def test_airflow_init_writes_the_login_with_real_code(services: dict[str, dict[str, Any]]) -> None:
    script = services["airflow-init"]["command"][2]
    code = re.search(r'python -c "([^"]+)"', script)
    assert code is not None
    compile(code.group(1), "airflow-init", "exec")
    from lambdalake.cli import airflow as airflow_cli

    assert "write_passwords" in code.group(1)
    assert callable(airflow_cli.write_passwords)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict)
    return {k: str(v) for k, v in env.items()}


def test_every_lambdalake_variable_is_a_real_setting(services: dict[str, dict[str, Any]]) -> None:
    known = setting_env_names()
    text = COMPOSE.read_text()
    used = {k for s in services.values() for k in environment(s) if k.startswith(ENV_PREFIX)}
    used |= {m for m in re.findall(r"\$\{(\w+)", text) if m.startswith(ENV_PREFIX)}
    assert len(used) > 15
    assert used <= known, sorted(used - known)


def test_other_variables_belong_to_their_engine(services: dict[str, dict[str, Any]]) -> None:
    from airflow.configuration import conf

    options = conf.configuration_description
    for name, service in services.items():
        for key in environment(service):
            if key.startswith(ENV_PREFIX):
                continue
            if key.startswith("AIRFLOW__"):
                section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
                assert option in options.get(section, {}).get("options", {}), (name, key)
            elif key == "AIRFLOW_HOME":
                assert name.startswith("airflow-"), name
            else:
                assert name in {"postgres", "kinesis"}, (name, key)


def test_lambdalake_services_share_the_engines_and_the_lake(services: dict[str, dict[str, Any]]) -> None:
    for name in ("collector", "speed", "delivery", "serving", "airflow-scheduler"):
        env = environment(services[name])
        assert env["LAMBDALAKE_KINESIS_ENDPOINT_URL"] == "http://kinesis:4567"
        assert env["LAMBDALAKE_REDIS_URL"].startswith("redis://redis:6379/")
        assert env["LAMBDALAKE_WAREHOUSE_HOST"] == "postgres"
        assert env["LAMBDALAKE_LAKE_URI"] == "file:///data/lake"
    for name in ("speed", "delivery", "serving", "airflow-scheduler", "airflow-triggerer"):
        assert "lake:/data/lake" in services[name]["volumes"], name
    # The HTTP services must listen beyond the container's loopback for the published port to work.
    for name in ("collector", "serving"):
        assert environment(services[name])["LAMBDALAKE_BIND_HOST"] == "0.0.0.0"
    kinesis = environment(services["kinesis"])
    assert kinesis["LAMBDALAKE_STREAM_NAME"] == environment(services["speed"])["LAMBDALAKE_STREAM_NAME"]


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert len(published) >= 6
    assert all(str(p).startswith("127.0.0.1:") for p in published), published


def test_long_running_services_have_healthchecks_and_restart_policies(
    services: dict[str, dict[str, Any]],
) -> None:
    one_shot = {"warehouse-init", "airflow-init"}
    for name, service in services.items():
        if name in one_shot:
            assert service["restart"].startswith("on-failure"), name
            continue
        assert service.get("restart") == "unless-stopped", name
        test = service.get("healthcheck", {}).get("test")
        assert test, name
        assert test[0] == "CMD", name
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            wanted = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert rule["condition"] == wanted, (name, dependency)


def test_volumes_are_named_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in declared, (name, source)


def dockerfile_steps(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            steps.append((instruction.upper(), rest.strip()))
    return steps


def test_compose_builds_only_dockerfiles_that_exist(services: dict[str, dict[str, Any]]) -> None:
    built = {s["build"]["dockerfile"] for s in services.values() if "build" in s}
    assert built == {LAMBDALAKE_DOCKERFILE, "docker/kinesalite.Dockerfile"}
    for service in services.values():
        if "build" in service:
            assert service["build"]["context"] == "."
            assert (ROOT / service["build"]["dockerfile"]).is_file()
        else:
            _name, _, tag = service["image"].partition(":")
            assert re.match(r"^\d+\.\d+", tag), f"{service['image']}: pin a version"


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_pin_their_bases_and_copy_what_exists(dockerfile: Path) -> None:
    stages: list[str] = []
    copies = 0
    for instruction, args in dockerfile_steps(dockerfile):
        if instruction == "FROM":
            image, *alias = args.split()
            _name, _, tag = image.partition(":")
            assert re.match(r"^\d+\.\d+\.\d+-", tag), f"{image}: pin an exact version"
            if alias:
                assert alias[0].upper() == "AS"
                stages.append(alias[1])
        elif instruction == "COPY":
            words = args.split()
            flags = [w for w in words if w.startswith("--")]
            sources = [w for w in words if not w.startswith("--")][:-1]
            source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if source_stage is not None:
                assert source_stage in stages, f"COPY --from={source_stage}: no such earlier stage"
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                copies += 1
    assert stages or dockerfile.name == "kinesalite.Dockerfile"
    assert copies >= 2


def test_lambdalake_image_is_built_like_setup_does() -> None:
    steps = dockerfile_steps(ROOT / LAMBDALAKE_DOCKERFILE)
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    uv_version = re.search(r"^UV_VERSION=(\S+)", setup, re.M)
    assert uv_version is not None
    assert f"uv=={uv_version.group(1)}" in runs
    assert "uv sync --frozen --no-dev" in runs
    assert "openjdk-17-jre-headless" in runs  # Spark, in the Airflow tasks
    # Every package the wheel is built from is copied into the image (and the DDL it reads).
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"][
        "wheel"
    ]["packages"]
    copied = {args.split()[0].rstrip("/") for instruction, args in steps if instruction == "COPY"}
    assert {*packages, "sql"} <= copied, set(packages) - copied
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users
    assert users[-1] != "root"


def test_kinesalite_image_binds_all_interfaces_inside_the_container() -> None:
    steps = dockerfile_steps(ROOT / "docker" / "kinesalite.Dockerfile")
    env = " ".join(args for instruction, args in steps if instruction == "ENV")
    assert "KINESALITE_HOST=0.0.0.0" in env
    entrypoint = (ROOT / "docker" / "kinesalite" / "entrypoint.js").read_text()
    assert "'--host', host" in entrypoint
    assert "kinesalite.js" in entrypoint
    assert "CreateStream" in entrypoint
