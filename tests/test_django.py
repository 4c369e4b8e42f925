"""The Django backend (`pgqueue.contrib.django`), tested the way a Django project uses it.

Django 6 needs Python 3.12, so the tests run a throwaway project (`tests/django_project`)
under interpreters of their own: `.venvs/django6-py312` (Django 6.1) and
`.venvs/django52-py311` (Django 5.2 LTS with the `django-tasks` backport, on the oldest
Python pgqueue supports), built by `.ci/run` (or `python tests/django_venvs.py`). For each,
on a fresh empty database: `manage.py migrate` creates the schema, then `check.py` runs the
scenarios through the public `django.tasks` API, starting real `manage.py pgqueue_worker
--burst` processes. One test per scenario reports that scenario's own assertion.

Without a venv the tests fail in CI (CI=true) and skip elsewhere, naming the command to
build it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgqueue.cli import app as cli
from psycopg import conninfo
from typer.testing import CliRunner

from pgqueue._db.migrate import MigrationSql, migrations
from tests.conftest import _fresh_db
from tests.django_venvs import VENVS, python_of

runner = CliRunner()
PROJECT = Path(__file__).resolve().parent / "django_project"
ROOT = PROJECT.parent.parent

SCENARIOS = [
    "results_and_fields",
    "errors_and_tracebacks",
    "retries_with_max_attempts",
    "takes_context",
    "async_tasks",
    "rolled_back_enqueues",
    "transaction_visibility",
    "run_after",
    "priority_order",
    "queue_routing",
    "worker_refuses_queues_outside_QUEUES",
    "concurrency",
    "several_workers_each_job_once",
    "signals",
    "validation",
    "backend_options_and_checks",
    "only_installed_app_tasks_run",
    "constructor_touches_no_database",
]


def _python(venv: str) -> Path:
    python = python_of(venv)
    if not python.exists():
        reason = (
            f"the Django test venv {venv} is missing: build it with"
            " `python tests/django_venvs.py` (.ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; in CI it must exist", pytrace=False)
        pytest.skip(reason)
    return python


def _env(dsn: str, record: Path) -> dict[str, str]:
    params = conninfo.conninfo_to_dict(dsn)
    return {
        **os.environ,
        "PGQUEUE_DJANGO_DB_NAME": str(params.get("dbname", "")),
        "PGQUEUE_DJANGO_DB_HOST": str(params.get("host", "")),
        "PGQUEUE_DJANGO_DB_PORT": str(params.get("port", "")),
        "PGQUEUE_DJANGO_DB_USER": str(params.get("user", "")),
        "PGQUEUE_DJANGO_DB_PASSWORD": str(params.get("password", "")),
        "PGQUEUE_DJANGO_RECORD": str(record),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
    }


def _manage(python: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(python), "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"manage.py {' '.join(args)} failed:\n{out.stdout}{out.stderr}"
    return out


def _schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgqueue%'")
        return {r[0] for r in rows}


@pytest.fixture(scope="module", params=list(VENVS), ids=list(VENVS))
def project(
    request: pytest.FixtureRequest, server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One venv's run: migrate a fresh empty database with `manage.py migrate`, then every
    scenario of check.py (side by side, each on queues of its own)."""
    venv = request.param
    python = _python(venv)
    record = tmp_path_factory.mktemp(f"django-{venv}") / "record.jsonl"
    for dsn in _fresh_db(server_dsn, None):
        env = _env(dsn, record)
        _manage(python, env, "migrate", "--verbosity", "0")
        out = subprocess.run(
            [str(python), "check.py", *SCENARIOS],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        reports = {}
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                report = json.loads(line)
                reports[report["scenario"]] = report
        with psycopg.connect(dsn, autocommit=True) as conn:
            tasks = {r[0] for r in conn.execute("SELECT DISTINCT task FROM pgqueue.job_status")}
        yield {
            "venv": venv,
            "python": python,
            "dsn": dsn,
            "env": env,
            "reports": reports,
            "output": out.stdout + out.stderr,
            "job_tasks": tasks,
        }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(project: dict[str, Any], scenario: str) -> None:
    """Each scenario's assertions ran in the project under this venv's Django."""
    report = project["reports"].get(scenario)
    assert report is not None, f"{scenario} did not report:\n{project['output'][-4000:]}"
    assert report["ok"], f"{scenario} under {project['venv']}:\n{report['error']}"


def test_django_jobs_show_their_task_paths_to_pgqueue_tools(project: dict[str, Any]) -> None:
    """pgqueue's views and CLI name Django jobs by their task path, and the worker wrote the
    Django tasks it found into the catalog with the backend's attempts (1, or MAX_ATTEMPTS)."""
    assert {"djapp.tasks.add", "djapp.tasks.fail", "djapp.other.double"} <= project["job_tasks"]
    dsn = project["dsn"]
    listed = runner.invoke(cli, ["jobs", "--dsn", dsn, "--task", "djapp.tasks.fail", "--json"])
    assert listed.exit_code == 0, listed.output
    jobs = json.loads(listed.output)
    assert jobs and {j["task"] for j in jobs} == {"djapp.tasks.fail"}
    assert {j["state"] for j in jobs} == {"failed"}
    catalog = runner.invoke(cli, ["tasks", "--dsn", dsn, "--json"])
    assert catalog.exit_code == 0, catalog.output
    attempts = {t["name"]: t["max_attempts"] for t in json.loads(catalog.output)["tasks"]}
    assert attempts["djapp.tasks.add"] == 1 and attempts["djapp.tasks.with_context"] == 1
    assert attempts["djapp.tasks.flaky"] == 2  # the "retrying" backend: MAX_ATTEMPTS 2


def test_migrate_is_reversible_and_catches_up(
    project: dict[str, Any], server_dsn: str, tmp_path: Path
) -> None:
    """`migrate pgqueue zero` drops the schema; `migrate` makes it again; a later `migrate`
    applies pgqueue migrations missing from an existing schema (a pgqueue upgrade)."""
    for dsn in _fresh_db(server_dsn, None):
        env = _env(dsn, tmp_path / "record.jsonl")
        python = project["python"]
        _manage(python, env, "migrate", "--verbosity", "0")
        assert _schemas(dsn) == {"pgqueue"}
        _manage(python, env, "migrate", "pgqueue", "zero", "--verbosity", "0")
        assert _schemas(dsn) == set()
        _manage(python, env, "migrate", "--verbosity", "0")
        assert _schemas(dsn) == {"pgqueue"}
        # An older pgqueue's schema: every migration but the last.
        statements = MigrationSql.for_schema("pgqueue")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(statements.drop)
            for migration in migrations()[:-1]:
                with conn.transaction():
                    conn.execute(statements.create_schema)
                    conn.execute(statements.create_table)
                    conn.execute(statements.record, [migration.version, migration.name])
                    conn.execute(statements.set_search_path)
                    conn.execute(migration.text.encode())
        _manage(python, env, "migrate", "--verbosity", "0")
        with psycopg.connect(dsn, autocommit=True) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM pgqueue.migrations")]
        assert sorted(versions) == [m.version for m in migrations()]


def test_worker_refuses_an_unmigrated_database(
    project: dict[str, Any], server_dsn: str, tmp_path: Path
) -> None:
    for dsn in _fresh_db(server_dsn, None):
        env = _env(dsn, tmp_path / "record.jsonl")
        out = subprocess.run(
            [str(project["python"]), "manage.py", "pgqueue_worker", "--burst"],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0
        assert "manage.py migrate" in out.stderr, out.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
