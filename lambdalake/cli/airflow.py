"""`lambdalake airflow`: Airflow 3 standalone for the local profile, with the project's DAGs.

Everything lives under ``<home>/airflow`` (SQLite metadata, logs); the API server listens on
127.0.0.1 only; the simple auth manager gets one admin whose password is a documented local
setting, written to its passwords file so the printed login works.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings, get_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def airflow_home(settings: Settings) -> Path:
    return settings.home / "airflow"


def airflow_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `airflow standalone` runs with (the lambdalake settings pass through)."""
    home = airflow_home(settings)
    env = dict(os.environ if base is None else base)
    python_path = [str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(settings.airflow_parallelism),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "LAMBDALAKE_PROFILE": settings.profile,
            "LAMBDALAKE_HOME": str(settings.home),
            "PYTHONPATH": os.pathsep.join(python_path),
        }
    )
    return env


def write_passwords(settings: Settings) -> Path:
    """The simple auth manager reads users' passwords from this file (it generates missing ones)."""
    path = airflow_home(settings) / "passwords.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({settings.airflow_admin_user: settings.airflow_admin_password}))
    path.chmod(0o600)
    return path


def airflow() -> None:
    """Start Airflow standalone (scheduler, API server, DAG processor, triggerer) on 127.0.0.1."""
    settings = get_settings()
    if not settings.is_local:
        raise LambdalakeError("`lambdalake airflow` runs the local profile; use MWAA or your Airflow on aws")
    executable = Path(sys.executable).parent / "airflow"
    if not executable.exists():
        raise LambdalakeError(f"airflow is not installed next to {sys.executable}")
    env = airflow_env(settings)
    write_passwords(settings)
    typer.echo(
        f"airflow: http://127.0.0.1:{settings.airflow_port}  login {settings.airflow_admin_user} / "
        f"{settings.airflow_admin_password}  (AIRFLOW_HOME={env['AIRFLOW_HOME']}, "
        f"DAGs {env['AIRFLOW__CORE__DAGS_FOLDER']})",
        err=True,
    )
    os.execve(str(executable), [str(executable), "standalone"], env)


def register(app: typer.Typer) -> None:
    app.command("airflow")(airflow)
