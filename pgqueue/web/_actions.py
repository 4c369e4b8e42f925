"""The dashboard's actions: POST only, each checked for its CSRF token (and, when the
browser says where a request comes from, that it comes from this page) before it runs."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..errors import ValidationError
from . import _csrf, _views

if TYPE_CHECKING:
    from .._app import App

#: A POST body larger than this is refused unread (the forms carry a token and a name).
MAX_FORM_BYTES = 16 * 1024


class SharedReads:
    """Reads every viewer shares for `ttl` seconds (queue statistics, throughput, workers).

    Each open tab polls its live fragments; without sharing, the database would run the
    statistics once per tab per refresh, and `queue_stats` counts the last hour's finished
    jobs, which costs with the throughput. Shared, the load stays one read per `ttl` however
    many people watch. Actions clear it, so the page an action redirects to is fresh."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.values: dict[str, tuple[float, Any]] = {}

    async def get(self, key: str, read: Callable[[], Awaitable[Any]]) -> Any:
        hit = self.values.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        value = await read()
        self.values[key] = (time.monotonic(), value)
        return value

    def clear(self) -> None:
        self.values.clear()


class Actions:
    """Mixed into the Dashboard: the handlers that change something."""

    app: App
    secret: bytes
    shared: SharedReads

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        raise NotImplementedError  # the Dashboard's

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The form's fields, or None unless its CSRF token is valid (and, when the browser
        says where the request comes from, it comes from here)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin != expected:
                return None
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            return None
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return None
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if not _csrf.valid(self.secret, request.cookies.get(_csrf.COOKIE), fields.get(_csrf.FIELD)):
            return None
        return fields

    def _refused(self, request: Request) -> Response:
        return self.error(
            request,
            403,
            "Refused: this form's security token is missing or stale. Reload the page and try"
            " again.",
        )

    def _back(self, request: Request, path: str, notice: str, query: str = "") -> Response:
        """After an action: the page to show, read afresh (not from the shared reads)."""
        self.shared.clear()
        prefix = request.scope.get("root_path", "")
        sep = "&" if query else ""
        return RedirectResponse(f"{prefix}{path}?{query}{sep}notice={notice}", status_code=303)

    async def retry(self, request: Request) -> Response:
        if await self._form(request) is None:
            return self._refused(request)
        job_id = request.path_params["job_id"]
        try:
            done = await self.app.retry_async(job_id)
        except ValidationError as exc:
            return self.error(request, 409, str(exc))
        return self._back(request, f"/job/{job_id}", "retried" if done else "not-retried")

    async def cancel(self, request: Request) -> Response:
        if await self._form(request) is None:
            return self._refused(request)
        job_id = request.path_params["job_id"]
        done = await self.app.cancel_async(job_id)
        return self._back(request, f"/job/{job_id}", "cancelled" if done else "not-cancelled")

    async def pause(self, request: Request) -> Response:
        fields = await self._form(request)
        if fields is None:
            return self._refused(request)
        queue = request.path_params["queue"]
        paused = request.url.path.endswith("/pause")
        try:
            if paused:
                await self.app.pause_async(queue)
            else:
                await self.app.resume_async(queue)
        except ValidationError as exc:
            return self.error(request, 400, str(exc))
        return self._back(request, "/", "paused" if paused else "resumed")

    async def pause_schedule(self, request: Request) -> Response:
        if await self._form(request) is None:
            return self._refused(request)
        name = request.path_params["name"]
        paused = request.url.path.endswith("/pause")
        try:
            if paused:
                await self.app.pause_schedule_async(name)
            else:
                await self.app.resume_schedule_async(name)
        except ValidationError as exc:
            return self.error(request, 400, str(exc))
        return self._back(request, "/schedules", f"schedule-{'paused' if paused else 'resumed'}")

    async def bulk_retry(self, request: Request) -> Response:
        fields = await self._form(request)
        if fields is None:
            return self._refused(request)
        queue = fields.get("queue") or None
        task = fields.get("task") or None
        try:
            await self.app.retry_failed_async(queue, task=task)
        except ValidationError as exc:
            return self.error(request, 400, str(exc))
        query = _views.query_string({"queue": queue, "task": task})
        return self._back(request, "/jobs", "bulk-retried", query)
