"""A real HTTP server for the dashboard tests: uvicorn on a free port in a thread, and
Debian's Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

#: The browser .ci/run installs (`apt-get install chromium`); Playwright's own download is
#: never used.
CHROMIUM = os.environ.get("PGQUEUE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def require_chromium() -> str:
    """The browser's path; in CI a missing one fails the test (.ci/run installs it), on a
    developer's machine it skips with the command that installs it."""
    found = find_chromium()
    if found is None:
        reason = (
            f"chromium is not installed ({CHROMIUM} not found); install it with"
            " `apt-get install -y --no-install-recommends chromium`"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (.ci/run should have installed it)", pytrace=False)
        pytest.skip(reason)
    return found


@contextmanager
def serve(asgi: Any) -> Iterator[str]:
    """Serve `asgi` on 127.0.0.1 at a free port for a block; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(asgi, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="dashboard"
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the dashboard server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
