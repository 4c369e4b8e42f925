"""The runnable examples in docs/ run as written, against a real database."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_the_workflow_guide_example_runs(dsn: str) -> None:
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "export_workflow.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == (
        "{'pages': 3, 'location': 's3://exports/3-receipts.json'}"
    )
