"""The wheel carries the SQL, the CLI and the Django app, so an installed pgqueue can migrate
and run."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_sql_and_cli(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("pgqueue-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = sorted(p.name for p in (ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql"))
    queries = sorted(p.name for p in (ROOT / "sql" / "queries").glob("*.sql"))
    assert migrations and queries
    for name in migrations:
        assert f"pgqueue/sql/{name}" in names
    for name in queries:
        assert f"pgqueue/sql/queries/{name}" in names
    for name in (
        "pgqueue/cli/__init__.py",
        "pgqueue/cli/main.py",
        "pgqueue/cli/demo.py",
        "pgqueue/py.typed",
        # The Django app: its migration and its command are found by path, not imported.
        "pgqueue/contrib/django/__init__.py",
        "pgqueue/contrib/django/apps.py",
        "pgqueue/contrib/django/models.py",
        "pgqueue/contrib/django/migrations/0001_initial.py",
        "pgqueue/contrib/django/management/commands/pgqueue_worker.py",
        "pgqueue/web/__init__.py",
        "pgqueue/web/templates/base.html",
        "pgqueue/web/static/pgqueue.js",
        "pgqueue/web/static/pgqueue.css",
    ):
        assert name in names
    assert not any(n.startswith(("cli/", "sql/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pgqueue = pgqueue.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
