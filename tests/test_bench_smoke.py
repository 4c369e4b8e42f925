"""The side-by-side benchmark harness runs: every workload, pgqueue only, tiny sizes.

Speed is never asserted here (benchmarks/README.md holds the numbers); this only checks that
`benchmarks/peers.py` completes every workload against a real server, exactly-once checks
included, and writes one parsable result line per workload. It needs neither the peers'
virtualenvs nor the network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_harness_runs_every_workload_for_pgqueue(server_dsn: str, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "peers.py"),
        *("--dsn", server_dsn, "--only", "pgqueue", "--repeats", "1", "--no-warmup"),
        *("--jobs", "200", "--single-jobs", "100", "--bulk-jobs", "500"),
        *("--latency-jobs", "20", "--latency-rate", "200", "--poll-interval", "0.1"),
        *("--held-seconds", "0.4", "--held-jobs", "10000"),
        *("--memory-jobs", "300", "--memory-small-jobs", "100"),
        *("--timeout", "60", "--results", str(results)),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    by_case = {(r["workload"], r["system"], r["params"].get("mode")): r for r in lines}
    expected = [
        ("drain", "pgqueue", None),
        ("drain-2p", "pgqueue", None),
        ("enqueue-single", "pgqueue", None),
        ("enqueue-single", "raw INSERT", None),
        ("enqueue-bulk", "pgqueue", None),
        ("latency", "pgqueue", "notify"),
        ("latency", "pgqueue", "poll-only"),
        ("held-xmin", "pgqueue", None),
        ("memory", "pgqueue", None),
    ]
    assert sorted(by_case, key=str) == sorted(expected, key=str)
    for case in expected:
        record = by_case[case]
        assert record["status"] == "ok", (case, record["reason"])
        assert len(record["runs"]) == 1 and record["runs"][0]["error"] is None, case
        assert record["postgresql_settings"]["synchronous_commit"]
        assert record["versions"] and record["machine"]["nproc"] >= 1
    # Each workload ran at the size asked for.
    sizes = {"drain": 200, "drain-2p": 200, "enqueue-single": 100, "enqueue-bulk": 500}
    for (workload, system, _), record in by_case.items():
        if workload in sizes:
            assert record["jobs"] == sizes[workload], (workload, system)
    for workload, size in (("enqueue-single", 100), ("enqueue-bulk", 500)):
        assert by_case[(workload, "pgqueue", None)]["runs"][0]["details"]["timed_jobs"] == size
    # The runs that drain report a worker's peak RSS, measured through the wrapper.
    assert by_case[("memory", "pgqueue", None)]["metrics"]["rss_large_mib"]["samples"]


def test_enqueue_breakdown_runs_every_layer(server_dsn: str) -> None:
    """`bench_pgqueue.py --only enqueue-breakdown`: every variant enqueues its jobs (the run
    checks the row counts itself and fails otherwise) and reports a rate."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_pgqueue.py"),
        *("--dsn", server_dsn, "--only", "enqueue-breakdown", "--single-jobs", "30"),
        *("--repeats", "1", "--no-save"),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAILED" not in done.stdout
    for label in ("autocommit INSERT (floor)", "task.enqueue()", "await task.enqueue_async()"):
        assert f"breakdown {label}" in done.stdout, done.stdout
