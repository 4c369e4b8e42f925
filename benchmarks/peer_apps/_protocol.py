"""The command line every asyncio peer app speaks (see __init__.py); standard library only,
so it imports inside any peer's virtualenv."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

Enqueue = Callable[[str, int], Awaitable[dict[str, Any]]]
Work = Callable[[str, int, int], Awaitable[dict[str, Any]]]


def serve(enqueue: Enqueue, work: Work) -> None:
    """`enqueue <target> <jobs>` or `work <target> <jobs> <concurrency>`; prints one JSON line."""
    argv = sys.argv[1:]
    command, target, jobs = argv[0], argv[1], int(argv[2])
    if command == "enqueue":
        result = asyncio.run(enqueue(target, jobs))
    elif command == "work":
        result = asyncio.run(work(target, jobs, int(argv[3])))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result), flush=True)
