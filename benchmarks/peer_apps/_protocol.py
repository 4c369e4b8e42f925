"""The command line every peer app speaks (see __init__.py); standard library only, so it
imports inside any peer's virtualenv.

A worker keeps its own record of what it ran in a `Ledger`: a bitmap of job numbers (one
bit per job, so the bookkeeping does not inflate the worker's memory, which the memory
workload measures), counters, and, for the latency workload only, the start time of each job.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import inspect
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[argparse.Namespace], "dict[str, Any] | Awaitable[dict[str, Any]]"]


class Ledger:
    """What one worker process ran. Thread-safe (Celery runs tasks in threads)."""

    def __init__(self, total: int, record_starts: bool = False) -> None:
        self.total = total
        self.bits = bytearray((total + 7) // 8)
        self.executions = 0
        self.duplicates = 0
        self.unexpected = 0
        self.first_start: float | None = None
        self.last_done: float | None = None
        self.starts: dict[int, float] | None = {} if record_starts else None
        #: Named moments (epoch seconds) a feature workload's tasks note, e.g. a join's end.
        self.marks: dict[str, float] = {}
        self._lock = threading.Lock()

    def ran(self, n: int, started: float) -> int:
        """Record one execution of job `n` that started at `started`; returns executions."""
        with self._lock:
            if self.first_start is None:
                self.first_start = started
            if self.starts is not None:
                self.starts[n] = started
            self.executions += 1
            if 0 <= n < self.total:
                byte, bit = divmod(n, 8)
                if self.bits[byte] & (1 << bit):
                    self.duplicates += 1
                else:
                    self.bits[byte] |= 1 << bit
            else:
                self.unexpected += 1
            self.last_done = time.time()
            return self.executions

    def mark(self, name: str, when: float, keep: str = "last") -> None:
        """Note a moment: the first (`keep="first"`) or the last one under that name."""
        with self._lock:
            seen = self.marks.get(name)
            if seen is None or (when < seen if keep == "first" else when > seen):
                self.marks[name] = when

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {
                "executions": self.executions,
                "duplicates": self.duplicates,
                "unexpected": self.unexpected,
                "distinct": sum(bin(b).count("1") for b in self.bits),
                "seen_b64": base64.b64encode(bytes(self.bits)).decode(),
                "first_start": self.first_start,
                "last_done": self.last_done,
                "starts": self.starts,
                "marks": self.marks,
            }


def ready() -> None:
    """Tell the harness the worker is about to start consuming."""
    sys.__stdout__.write("READY\n")
    sys.__stdout__.flush()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("setup", "teardown"):
        cmd = sub.add_parser(name)
        cmd.add_argument("target")
        cmd.add_argument("--plan", type=json.loads, help="a feature workload's plan (JSON)")
    feature = sub.add_parser("enqueue-feature", help="a feature workload's jobs (or publishes)")
    feature.add_argument("target")
    feature.add_argument("--plan", type=json.loads, required=True)
    for name in ("enqueue-bulk", "enqueue-single"):
        cmd = sub.add_parser(name)
        cmd.add_argument("target")
        cmd.add_argument("jobs", type=int)
    lat = sub.add_parser("latency-enqueue")
    lat.add_argument("target")
    lat.add_argument("--warmup", type=int, required=True)
    lat.add_argument("--jobs", type=int, required=True)
    lat.add_argument("--rate", type=float, required=True)
    work = sub.add_parser("work")
    work.add_argument("target")
    work.add_argument("--total", type=int, required=True, help="jobs numbered 0..total-1")
    work.add_argument("--concurrency", type=int, required=True)
    work.add_argument(
        "--mode",
        choices=("drain", "count", "until"),
        default="drain",
        help="drain: stop when the queue is empty; count: after --total executions;"
        " until: at wall-clock time --until",
    )
    work.add_argument("--until", type=float, help="epoch seconds (mode until)")
    work.add_argument("--no-listen", action="store_true", help="poll only")
    work.add_argument("--poll-interval", type=float, help="seconds between polls")
    work.add_argument("--record-starts", action="store_true")
    work.add_argument(
        "--stop-after",
        type=int,
        help="mode count: stop after this many executions (default: --total)",
    )
    work.add_argument("--plan", type=json.loads, help="a feature workload's plan (JSON)")
    verify = sub.add_parser("verify")
    verify.add_argument("target")
    verify.add_argument("--histogram", action="store_true", help="completions per 100 ms")
    verify.add_argument("--plan", type=json.loads, help="a feature workload's plan (JSON)")
    return p


def paced(index: int, start: float, rate: float) -> None:
    """Sleep until job `index` is due under an open-loop schedule of `rate` per second."""
    delay = start + index / rate - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


async def paced_async(index: int, start: float, rate: float) -> None:
    delay = start + index / rate - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def serve(handlers: dict[str, Handler]) -> None:
    """Run the command named on the command line; print its result as the last JSON line."""
    args = parser().parse_args(sys.argv[1:])
    handler = handlers.get(args.command)
    if handler is None:
        raise SystemExit(f"{args.command} is not supported by this peer")
    result = handler(args)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    sys.__stdout__.write(json.dumps(result) + "\n")
    sys.__stdout__.flush()


async def _await(result: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return await result
