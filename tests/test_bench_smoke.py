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

import pytest

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


def test_harness_runs_every_feature_workload_for_pgqueue(server_dsn: str, tmp_path: Path) -> None:
    """Issue 17's workloads (drain-4p, fairness, rate, concurrency, topics, workflow) for
    pgqueue at tiny sizes: each passes its exactly-once check and reports its metrics."""
    results = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "peers.py"),
        *("--dsn", server_dsn, "--only", "pgqueue", "--repeats", "1", "--no-warmup"),
        *("--workloads", "features", "--jobs", "200", "--drain-4p-jobs", "200"),
        *("--fair-hot", "60", "--fair-tenants", "3", "--fair-small", "20"),
        *("--rate", "40", "--rate-seconds", "2", "--publishes", "10", "--subscribers", "3"),
        *("--children", "20", "--timeout", "60", "--results", str(results)),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    by_case = {(r["workload"], r["params"].get("mode")): r for r in lines}
    expected = {
        ("drain-4p", None): "jobs_per_s",
        ("fairness", "round-robin"): "fairness_index",
        ("fairness", "tenant-limit"): "fairness_index",
        ("rate", None): "accuracy",
        ("concurrency", None): "ratio",
        ("topics", None): "deliveries_per_s",
        ("workflow", None): "workflow_s",
    }
    assert sorted(by_case, key=str) == sorted(expected, key=str)
    for case, metric in expected.items():
        record = by_case[case]
        assert record["system"] == "pgqueue"
        assert record["status"] == "ok", (case, record["reason"])
        assert record["runs"][0]["error"] is None, case
        assert record["metrics"][metric]["samples"], (case, record["metrics"])
    assert by_case[("drain-4p", None)]["params"]["worker_processes"] == 4
    # Round robin hands the small tenants their share of the first half exactly.
    assert by_case[("fairness", "round-robin")]["metrics"]["fairness_index"]["median"] > 0.9
    # The rate limit holds in every 1 s window, as pgqueue's own clock sees it.
    assert by_case[("rate", None)]["runs"][0]["details"]["claims_max_1s"] <= 40
    # Each case records how every library that has the feature is configured.
    assert "pg-boss" in by_case[("topics", None)]["params"]["configured"]


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


def test_fanout_runs_its_workflow(server_dsn: str) -> None:
    """`bench_pgqueue.py --only fanout`: the parent spawns and joins its children (the run
    checks the parent's result and every child itself, and fails otherwise)."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_pgqueue.py"),
        *("--dsn", server_dsn, "--only", "fanout", "--fanout-children", "30"),
        *("--repeats", "1", "--no-save"),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAILED" not in done.stdout
    assert "fanout last child -> join done" in done.stdout, done.stdout


def test_where_reads_the_counters_of_a_pgqueue_drain(tmp_path: Path) -> None:
    """benchmarks/where.py's pgqueue half on a throwaway cluster of its own: the drain passes
    its exactly-once check and every per-job row is filled in (the Node peers need npm, so
    they are left to the benchmark itself)."""
    if not Path("/usr/lib/postgresql/15/bin/initdb").exists():
        pytest.skip("where.py needs PostgreSQL 15's server binaries")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "where.py"),
        *("--only", "pgqueue", "--jobs", "300", "--top", "3", "--timeout", "60"),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {}
    for line in done.stdout.splitlines():
        label, _, value = line.rpartition("  ")
        if label.strip() and value.strip():
            rows[label.strip()] = value.strip()
    # Every job is completed once: one UPDATE of its row at least, and commits and WAL to match.
    assert float(rows["row versions written"]) >= 1.0, done.stdout
    assert float(rows["commits"]) > 0 and float(rows["statements"]) > 0, done.stdout
    assert float(rows["WAL bytes"].replace(",", "")) > 0, done.stdout
    assert float(rows["index entries written (WAL)"]) > 0, done.stdout
    assert float(rows["worker CPU, µs"].replace(",", "")) > 0, done.stdout
    assert float(rows["server CPU, µs"].replace(",", "")) > 0, done.stdout
    assert "pgqueue: top statements by total execution time" in done.stdout
