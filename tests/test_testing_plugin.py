"""The README's testing example, run as written: its files are taken from the README, put in
a project of their own, and run by a real pytest with pgqueue's plugin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pgqueue
from pgqueue.testing import isolated

ROOT = Path(__file__).resolve().parent.parent


def readme_files() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Test your code that uses pgqueue") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", section, re.S)
    return dict(blocks)


def test_the_readme_example_runs_as_written(tmp_path: Path, dsn: str, db: Any) -> None:
    files = readme_files()
    assert set(files) == {"myproject/tasks.py", "conftest.py", "test_signup.py"}
    for name, body in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    (tmp_path / "myproject" / "__init__.py").write_text("")
    (tmp_path / "pytest.ini").write_text("[pytest]\npgqueue_app = myproject.tasks:app\n")
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(tmp_path)}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
    leftover = db.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgqueue_test_%'"
    ).fetchall()
    assert leftover == []  # every test's schema was dropped


def test_isolated_gives_an_empty_schema_and_restores_the_app(app: pgqueue.App, db: Any) -> None:
    app.enqueue("outside.job", {})
    with isolated(app) as inner:
        assert inner.schema.startswith("pgqueue_test_")
        assert inner.list_jobs() == []
        inner.enqueue("inside.job", {})
        assert [j["task"] for j in inner.list_jobs()] == ["inside.job"]
    assert app.schema == "pgqueue"
    assert [j["task"] for j in app.list_jobs()] == ["outside.job"]
