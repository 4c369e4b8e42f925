"""One LISTEN connection per App for every `job.wait()`, however many waiters.

A daemon thread holds the connection and counts notifications on the done channel; waiters
(threads, or tasks on any event loop) note the count before they read their job's row and
then wait until it moves, so a completion that lands between the read and the wait is never
missed. If the connection breaks, the thread reconnects; meanwhile waiters fall back on their
periodic re-check.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import psycopg

from .._core.plan import AwaitNotify, Listen, Query, Step
from .pools import Database
from .queries import Queries
from .targets import AsyncPsycopgTarget, PsycopgTarget

log = logging.getLogger("pgqueue")


class DoneListener:
    def __init__(self, database: Database, channel: str) -> None:
        self.database = database
        self.channel = channel
        self.seq = 0
        self._cond = threading.Condition()
        self._listening = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def start(self, timeout: float = 10.0) -> bool:
        """Start the thread if need be; True once the LISTEN is active."""
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._serve, name="pgqueue-done-listener", daemon=True
                )
                self._thread.start()
        return self._listening.wait(timeout)

    def _serve(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                with self.database.connect(listen=True) as conn:
                    conn.execute(Queries.listen(self.channel))
                    self._listening.set()
                    backoff = 0.1
                    while not self._closed:
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake()
            except psycopg.Error as exc:
                self._listening.clear()
                if self._closed:
                    return
                log.debug("done listener lost its connection, reconnecting: %s", exc)
                self._wake()  # waiters re-check the row now rather than at their timeout
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _wake(self) -> None:
        with self._cond:
            self.seq += 1
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its waiter is gone
                self._async_waiters.discard((loop, event))

    def wait(self, after: int, timeout: float) -> None:
        """Block until a notification newer than `after` arrives, or `timeout` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq > after or self._closed, timeout)

    async def wait_async(self, after: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        key = (loop, event)
        with self._cond:
            if self.seq > after:
                return
            self._async_waiters.add(key)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._cond:
                self._async_waiters.discard(key)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self._thread = None


class WaitTarget:
    """Runs a wait plan: its queries on pooled connections, its waits on the shared
    listener (or, where none can listen, on a timer)."""

    def __init__(self, database: Database, queries: Queries, listener: DoneListener | None):
        self.database = database
        self.queries = queries
        self.listener = listener
        self.listening = False
        self.mark = 0

    def run(self, step: Step) -> Any:
        if isinstance(step, Query):
            if self.listener is not None:
                self.mark = self.listener.seq  # before the read: nothing after it is missed
            with self.database.connection() as conn:
                return PsycopgTarget(conn, self.queries).run(step)
        if isinstance(step, Listen):
            self.listening = self.listener is not None and self.listener.start()
            return self.listening
        if isinstance(step, AwaitNotify):
            if self.listening and self.listener is not None:
                self.listener.wait(self.mark, step.timeout)
            else:
                time.sleep(step.timeout)
            return None
        raise TypeError(f"unknown plan step {step!r}")


class AsyncWaitTarget:
    def __init__(self, database: Database, queries: Queries, listener: DoneListener | None):
        self.database = database
        self.queries = queries
        self.listener = listener
        self.listening = False
        self.mark = 0

    async def run(self, step: Step) -> Any:
        if isinstance(step, Query):
            if self.listener is not None:
                self.mark = self.listener.seq
            async with self.database.aconnection() as conn:
                return await AsyncPsycopgTarget(conn, self.queries).run(step)
        if isinstance(step, Listen):
            if self.listener is not None:
                self.listening = await asyncio.to_thread(self.listener.start)
            return self.listening
        if isinstance(step, AwaitNotify):
            if self.listening and self.listener is not None:
                await self.listener.wait_async(self.mark, step.timeout)
            else:
                await asyncio.sleep(step.timeout)
            return None
        raise TypeError(f"unknown plan step {step!r}")
