"""`lambdalake airflow`: a local Airflow 3 for the local profile, with the project's DAGs.

Everything lives under ``<home>/airflow`` (SQLite metadata, logs, one log file per component in
``components/``); the API server and UI listen on 127.0.0.1 only and nothing else listens; the
simple auth manager gets one admin whose password is a documented local setting, written to its
passwords file so the printed login works.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
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
    # `airflow standalone` starts its components as `airflow <component>` found on PATH: the venv
    # that runs lambdalake must come first, whether or not the user activated it.
    path = [str(Path(sys.executable).parent), *filter(None, [env.get("PATH")])]
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
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{settings.airflow_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{settings.airflow_port}/execution/",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "LAMBDALAKE_PROFILE": settings.profile,
            "LAMBDALAKE_HOME": str(settings.home),
            "PYTHONPATH": os.pathsep.join(python_path),
            "PATH": os.pathsep.join(path),
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


# Components of a local Airflow, started one by one instead of `airflow standalone`: standalone's
# scheduler and triggerer each start a log server on every interface (its host is hard-coded to
# ""), and we bind to 127.0.0.1 only. The API server reads task logs from the shared local folder,
# so the log servers are not needed on one machine.
def components(settings: Settings) -> dict[str, list[str]]:
    return {
        "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(settings.airflow_port)],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }


def jwt_secret(settings: Settings) -> str:
    """One secret shared by the components (tokens the API server issues must verify everywhere)."""
    path = airflow_home(settings) / "jwt_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


class _Supervisor:
    """The components as children of this process; when one exits or a signal comes, all stop."""

    def __init__(self, executable: Path, env: dict[str, str], log_dir: Path) -> None:
        self.executable, self.env, self.log_dir = executable, env, log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def run(self, settings: Settings) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            typer.echo("airflow: migrating the metadata database ...", err=True)
            migrate = subprocess.run(
                [str(self.executable), "db", "migrate"], env=self.env, capture_output=True, check=False
            )
            if migrate.returncode != 0:
                sys.stderr.write(migrate.stderr.decode(errors="replace")[-4000:])
                raise LambdalakeError("airflow db migrate failed (output above)")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for name, args in components(settings).items():
                if self.stopping:
                    break
                with open(self.log_dir / f"{name}.log", "ab") as log:
                    self.children[name] = subprocess.Popen(
                        [str(self.executable), *args],
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                typer.echo(f"airflow: started {name} (pid {self.children[name].pid})", err=True)
            while not self.stopping:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        typer.echo(
                            f"airflow: {name} exited with {child.returncode}; see {self.log_dir / name}.log",
                            err=True,
                        )
                        self.stopping = True
                time.sleep(0.5)
        finally:
            self.stop()
        return 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM every component, then SIGKILL what is left after ``grace_s`` — and their workers:
        the scheduler's LocalExecutor workers live in this process group and outlive their parent."""
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + grace_s
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if os.getpgrp() == os.getpid():  # our own group (as a service child): take the stragglers too
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(os.getpgrp(), signal.SIGTERM)
        self.children.clear()


def airflow() -> None:
    """Start local Airflow (API server and UI, scheduler, DAG processor, triggerer) on 127.0.0.1."""
    settings = get_settings()
    if not settings.is_local:
        raise LambdalakeError("`lambdalake airflow` runs the local profile; use MWAA or your Airflow on aws")
    executable = Path(sys.executable).parent / "airflow"
    if not executable.exists():
        raise LambdalakeError(f"airflow is not installed next to {sys.executable}")
    env = airflow_env(settings)
    env["AIRFLOW__API_AUTH__JWT_SECRET"] = jwt_secret(settings)
    write_passwords(settings)
    typer.echo(
        f"airflow: http://127.0.0.1:{settings.airflow_port}  login {settings.airflow_admin_user} / "
        f"{settings.airflow_admin_password}  (AIRFLOW_HOME={env['AIRFLOW_HOME']}, "
        f"DAGs {env['AIRFLOW__CORE__DAGS_FOLDER']}; new DAGs start paused)",
        err=True,
    )
    sys.exit(_Supervisor(executable, env, airflow_home(settings) / "components").run(settings))


def register(app: typer.Typer) -> None:
    app.command("airflow")(airflow)
