"""The CLI: --help on every command, clear one-line errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from lambdalake.cli import app

runner = CliRunner()


def command_names() -> list[str]:
    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_foundation_commands_exist() -> None:
    assert {"up", "down", "status", "generate", "bench"} <= set(command_names())


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help(name: str) -> None:
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_unknown_option_is_a_usage_error_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lambdalake", "status", "--bogus"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "No such option: --bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_user_errors_are_one_line(tmp_path: object) -> None:
    env = {"LAMBDALAKE_PROFILE": "aws", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "lambdalake", "up"], capture_output=True, text=True, check=False, env=env
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: the aws profile uses managed services; `lambdalake up/down` manage local engines only "
        "(unset LAMBDALAKE_PROFILE or set it to local)"
    ]


def test_generate_writes_deterministic_ndjson(tmp_path: object) -> None:
    first = runner.invoke(app, ["generate", "-n", "50", "--seed", "9", "--no-reference"])
    second = runner.invoke(app, ["generate", "-n", "50", "--seed", "9", "--no-reference"])
    assert first.exit_code == 0
    assert first.stdout == second.stdout
    assert len(first.stdout.splitlines()) == 50


def test_bench_lists_benchmarks() -> None:
    result = runner.invoke(app, ["bench", "--list"])
    assert "contract" in result.stdout.split()
