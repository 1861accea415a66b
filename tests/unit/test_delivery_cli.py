"""`lambdalake deliver` and `lambdalake replay`: present, and wrong option sets fail with one clear line."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from lambdalake.cli import app
from lambdalake.errors import LambdalakeError

runner = CliRunner()


def test_delivery_commands_are_registered() -> None:
    assert {"deliver", "replay"} <= set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert "delivery" in runner.invoke(app, ["bench", "--list"]).output.split()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "choose one"),
        (["--errors", "--lake", "raw"], "choose one"),
        (["--lake", "clean", "--from", "2026-01-01", "--to", "2026-01-02"], "only the raw zone"),
        (["--lake", "raw", "--from", "2026-01-01"], "needs --from and --to"),
        (["--lake", "raw", "--from", "yesterday", "--to", "2026-01-02"], "ISO 8601"),
        (["--errors", "--since", "last week"], "ISO 8601"),
    ],
)
def test_replay_rejects_bad_option_sets(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["replay", *args])
    assert isinstance(result.exception, LambdalakeError)
    assert message in str(result.exception)
