"""Real worker processes: exactly-once across four of them, and a clean SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pgqueue
from tests.helpers import spawn_worker, wait_until

LEDGER = "CREATE TABLE ledger (job_id bigint NOT NULL, n int NOT NULL, pid int NOT NULL)"


def _finish(procs: list[subprocess.Popen[bytes]], timeout: float) -> list[str]:
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"worker did not exit: {out.decode()[-3000:]}") from None
        outputs.append(out.decode())
        assert proc.returncode == 0, out.decode()[-3000:]
    return outputs


def test_four_processes_run_each_of_5000_jobs_exactly_once(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    jobs = app.enqueue_many("ledger.record", ({"n": i} for i in range(5000)))
    procs = [spawn_worker("tests.apps.ledger:app", dsn, "-c", "8", "--burst") for _ in range(4)]
    _finish(procs, timeout=240)

    runs = db.execute(
        "SELECT count(*), count(DISTINCT job_id), count(DISTINCT pid) FROM ledger"
    ).fetchone()
    assert runs is not None
    total, distinct, pids = runs
    assert (total, distinct) == (5000, 5000)  # nothing lost, nothing ran twice
    assert pids >= 2  # the work really was shared
    done = db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE state = 'completed' AND attempt = 1"
    ).fetchone()
    assert done == (5000,)
    assert {j.id for j in jobs} == {
        r[0] for r in db.execute("SELECT job_id FROM ledger").fetchall()
    }


def test_sigterm_finishes_running_jobs_and_exits_cleanly(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    job = app.enqueue("ledger.sleep", {"seconds": 1.5})
    proc = spawn_worker("tests.apps.ledger:app", dsn, "-c", "2", "--poll-interval", "0.1")
    wait_until(lambda: app.get_job(job.id).state is pgqueue.JobState.RUNNING, 20, "job start")
    # A job enqueued after the signal must not be claimed by the stopping worker.
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    late = app.enqueue("ledger.sleep", {"seconds": 0})
    out = _finish([proc], timeout=30)[0]
    assert app.get_job(job.id).state is pgqueue.JobState.COMPLETED, out
    assert app.get_job(late.id).state is pgqueue.JobState.AVAILABLE
    row = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'").fetchone()
    assert row == (0,)
    stopped = db.execute("SELECT stopped_at IS NOT NULL FROM pgqueue.workers").fetchone()
    assert stopped == (True,)


def test_worker_cli_rejects_an_app_that_does_not_import(dsn: str) -> None:
    proc = spawn_worker("no_such_module.anywhere:app", dsn)
    out, _ = proc.communicate(timeout=60)
    text = out.decode().strip()
    assert proc.returncode == 2
    assert "cannot import 'no_such_module.anywhere'" in text
    assert "Traceback" not in text and len(text.splitlines()) == 1
