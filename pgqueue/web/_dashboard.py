"""The dashboard as a Starlette application over an App's async admin API.

Every read and every action goes through `pgqueue.App`'s `*_async` methods (plans in
`pgqueue._core.admin`, SQL in `sql/queries/`); this module holds no SQL. Pages are rendered
on the server by Jinja2 with autoescaping on, so job arguments, errors and tracebacks (user
data) always render as text; the only script is `static/pgqueue.js`, which refreshes marked
fragments by fetching their server-rendered HTML.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._app import App
from ..errors import JobNotFound, ValidationError
from ..types import JobState, QueueStats
from . import _csrf, _views
from ._actions import Actions, SharedReads

#: `auth(request)` -> allow (truthy) or deny; may be async. For mounting behind the host
#: application's login: check its session, a header set by a proxy, a client certificate.
AuthHook = Callable[[Request], "bool | Awaitable[bool]"]

#: Rows on a page of the jobs listing.
PAGE_SIZE = 50
#: Seconds between the live fragments' refreshes.
REFRESH_SECONDS = 2.0
#: Notices an action may leave on the page it redirects to: fixed texts, so no part of a
#: URL is ever reflected into the page as markup or as words.
NOTICES = {
    "retried": "Job put back in line.",
    "not-retried": "That job cannot run again now (it is not failed, cancelled or waiting).",
    "cancelled": "Job cancelled (a running one stops at its worker's next heartbeat).",
    "not-cancelled": "That job has already finished.",
    "paused": "Queue paused: workers claim none of its jobs from their next claim on.",
    "resumed": "Queue resumed.",
    "bulk-retried": "Failed jobs put back in line.",
    "schedule-paused": "Schedule paused: it fires no job until resumed.",
    "schedule-resumed": "Schedule resumed: it fires again from its next slot.",
}
#: Browsers may run nothing but our own script, load nothing from elsewhere, and never frame
#: the dashboard (clickjacking an action button).
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pgqueue.web", "templates"),
        autoescape=True,  # every page, every fragment: user data is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = _views.ago
    env.filters["when"] = _views.when
    return env


def _static(name: str) -> bytes:
    return resources.files("pgqueue.web").joinpath("static").joinpath(name).read_bytes()


STATIC_TYPES = {"pgqueue.js": "text/javascript", "pgqueue.css": "text/css"}


class Dashboard(Actions):
    """The handlers, bound to one App and one configuration."""

    def __init__(
        self,
        app: App,
        *,
        read_only: bool,
        secret: bytes,
        refresh: float,
    ) -> None:
        self.app = app
        self.read_only = read_only
        self.secret = secret
        self.refresh = refresh
        self.shared = SharedReads(min(1.0, refresh / 2))
        self.env = _environment()
        self.static = {name: _static(name) for name in STATIC_TYPES}

    # --- rendering ------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        prefix = request.scope.get("root_path", "")
        nonce = request.cookies.get(_csrf.COOKIE) or _csrf.new_nonce()
        notice = NOTICES.get(request.query_params.get("notice", ""))
        context.setdefault("page", "")
        html = self.env.get_template(template).render(
            prefix=prefix,
            actions=not self.read_only,
            csrf_field=_csrf.FIELD,
            csrf_token=_csrf.token_for(self.secret, nonce),
            refresh_ms=int(self.refresh * 1000),
            schema=self.app.schema,
            notice=notice,
            states=_views.STATES,
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        if request.cookies.get(_csrf.COOKIE) != nonce and not self.read_only:
            response.set_cookie(
                _csrf.COOKIE,
                nonce,
                path=prefix or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status=status, message=message)

    # --- pages ----------------------------------------------------------------------------

    async def _stats(self) -> list[QueueStats]:
        stats: list[QueueStats] = await self.shared.get("stats", self.app.queue_stats_async)
        return stats

    async def _workers(self) -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = await self.shared.get("workers", self.app.workers_async)
        return workers

    async def _overview_context(self) -> dict[str, Any]:
        stats = await self._stats()
        series = await self.shared.get("throughput", lambda: self.app.throughput_async(60.0, 60))
        workers = await self._workers()
        limit_rows = await self.shared.get("limits", self.app.queue_limits_async)
        return {
            "queues": stats,
            "fill": {q.queue: _views.fill(q) for q in stats},
            "warnings": _views.warnings(stats),
            "limits": _views.limits(limit_rows),
            "totals": _views.totals(stats),
            "chart": _views.chart(series),
            "workers": workers,
            "leader": next((w for w in workers if w["leader"]), None),
            "stuck": await self.shared.get("stuck", self.app.count_stuck_async),
        }

    async def overview(self, request: Request) -> Response:
        context = await self._overview_context()
        failures = await self.app.recent_failures_async(10)
        return self.render(request, "overview.html", page="overview", failures=failures, **context)

    async def overview_fragment(self, request: Request) -> Response:
        return self.render(request, "_overview_live.html", **(await self._overview_context()))

    def _filters(self, request: Request) -> dict[str, str | None]:
        params = request.query_params
        filters = {name: (params.get(name) or "").strip() or None for name in _views.JOB_FILTERS}
        state = filters["state"]
        if state is not None and state not in _views.STATES:
            raise ValidationError(f"state must be one of {', '.join(_views.STATES)}")
        return filters

    @staticmethod
    def _bound(request: Request, name: str) -> int | None:
        raw = request.query_params.get(name)
        if not raw:
            return None
        if not raw.isdigit() or len(raw) > 19:
            raise ValidationError(f"{name} must be a job id")
        return int(raw)

    async def jobs(self, request: Request) -> Response:
        wanted = (request.query_params.get("id") or "").strip().lstrip("#")
        if wanted:
            if not wanted.isdigit() or len(wanted) > 19:
                return self.error(request, 400, "A job id is a whole number.")
            prefix = request.scope.get("root_path", "")
            return RedirectResponse(f"{prefix}/job/{int(wanted)}", status_code=303)
        try:
            filters = self._filters(request)
            before, after = self._bound(request, "before"), self._bound(request, "after")
            rows = await self.app.list_jobs_async(
                state=filters["state"],
                queue=filters["queue"],
                task=filters["task"],
                group_key=filters["group"],
                topic=filters["topic"],
                schedule=filters["schedule"],
                before=before,
                after=after,
                limit=PAGE_SIZE + 1,
            )
        except (ValidationError, ValueError) as exc:
            return self.error(request, 400, str(exc))
        # One row more than a page says whether there is a page beyond, without a count.
        more = len(rows) > PAGE_SIZE
        if after is not None and before is None:
            # Newer page: the extra row is at the newest end.
            rows = rows[-PAGE_SIZE:] if more else rows
            has_newer, has_older = more, True
        else:
            rows = rows[:PAGE_SIZE]
            has_newer, has_older = before is not None, more
        stats = await self._stats()  # once: the counts and the queue names
        failed = None
        # Bulk retry takes a queue and a task only: under a narrower filter (group, topic,
        # schedule) its button would retry more than the page lists, so it is not offered.
        narrower = any(filters[name] for name in _views.NOT_BULK_FILTERS)
        if filters["state"] == "failed" and not self.read_only and not narrower:
            failed = await self.app.count_failed_async(filters["queue"], filters["task"])
        return self.render(
            request,
            "jobs.html",
            page="jobs",
            rows=rows,
            filters=filters,
            qs=_views.query_string,
            newer=_views.query_string(filters, after=rows[0]["id"]) if rows and has_newer else None,
            older=_views.query_string(filters, before=rows[-1]["id"])
            if rows and has_older
            else None,
            failed_count=failed,
            counts=self._counts(filters, stats),
            queue_names=[q.queue for q in stats],
        )

    @staticmethod
    def _counts(filters: Mapping[str, str | None], stats: list[QueueStats]) -> dict[str, int]:
        if filters.get("queue"):
            stats = [q for q in stats if q.queue == filters["queue"]]
        return _views.totals(stats)

    async def counts_fragment(self, request: Request) -> Response:
        try:
            filters = self._filters(request)
        except ValidationError as exc:
            return self.error(request, 400, str(exc))
        return self.render(
            request,
            "_counts.html",
            counts=self._counts(filters, await self._stats()),
            filters=filters,
            qs=_views.query_string,
        )

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            info = await self.app.get_job_async(job_id)
        except JobNotFound:
            return self.error(request, 404, f"No job with id {job_id}.")
        except ValidationError as exc:
            return self.error(request, 400, str(exc))
        keys = await self.app.stored_redact_keys_async()
        graph = await self.app.job_graph_async(job_id)
        errors = [
            {**err, "number": i + 1} for i, err in enumerate(info.errors) if isinstance(err, dict)
        ]
        return self.render(
            request,
            "job.html",
            page="jobs",
            job=info,
            args=_views.pretty_json(info.args, keys),
            result=None if info.result is None else _views.pretty_json(info.result, keys),
            errors=errors[::-1],
            timeline=_views.timeline(info),
            can_retry=info.state
            in (JobState.FAILED, JobState.CANCELLED, JobState.RETRYING, JobState.SCHEDULED),
            can_cancel=not info.state.finished,
            trace=(info.trace or {}).get("traceparent"),
            graph=graph,
            workflow=_views.workflow(graph),
        )

    async def _workers_context(self) -> dict[str, Any]:
        workers = await self._workers()
        running = await self.shared.get("running", self.app.running_jobs_async)
        by_worker: dict[str, list[dict[str, Any]]] = {}
        for job in running:
            by_worker.setdefault(str(job["worker_id"]), []).append(job)
        return {"workers": workers, "running": by_worker, "running_total": len(running)}

    async def workers(self, request: Request) -> Response:
        context = await self._workers_context()
        return self.render(request, "workers.html", page="workers", **context)

    async def workers_fragment(self, request: Request) -> Response:
        return self.render(request, "_workers_live.html", **(await self._workers_context()))

    async def schedules(self, request: Request) -> Response:
        rows = await self.app.schedules_async()
        return self.render(request, "schedules.html", page="schedules", rows=rows)

    async def topics(self, request: Request) -> Response:
        rows = await self.app.subscriptions_async()
        return self.render(request, "topics.html", page="topics", rows=rows)

    async def bulk_retry_confirm(self, request: Request) -> Response:
        try:
            filters = self._filters(request)
            count = await self.app.count_failed_async(filters["queue"], filters["task"])
        except ValidationError as exc:
            return self.error(request, 400, str(exc))
        return self.render(
            request,
            "confirm.html",
            page="jobs",
            filters=filters,
            count=count,
            back=_views.query_string({**filters, "state": "failed"}),
        )

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.static:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(
            self.static[name],
            media_type=STATIC_TYPES[name],
            headers={"cache-control": "max-age=300", "x-content-type-options": "nosniff"},
        )

    # --- the application ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        routes = [
            Route("/", self.overview),
            Route("/jobs", self.jobs),
            Route("/job/{job_id:int}", self.job),
            Route("/workers", self.workers),
            Route("/schedules", self.schedules),
            Route("/topics", self.topics),
            Route("/live/overview", self.overview_fragment),
            Route("/live/counts", self.counts_fragment),
            Route("/live/workers", self.workers_fragment),
            Route("/static/{name}", self.static_file),
        ]
        if not self.read_only:
            routes += [
                Route("/job/{job_id:int}/retry", self.retry, methods=["POST"]),
                Route("/job/{job_id:int}/cancel", self.cancel, methods=["POST"]),
                Route("/queue/{queue}/pause", self.pause, methods=["POST"]),
                Route("/queue/{queue}/resume", self.pause, methods=["POST"]),
                Route("/schedule/{name}/pause", self.pause_schedule, methods=["POST"]),
                Route("/schedule/{name}/resume", self.pause_schedule, methods=["POST"]),
                Route("/bulk-retry", self.bulk_retry_confirm),
                Route("/bulk-retry", self.bulk_retry, methods=["POST"]),
            ]
        return routes


class _Guard:
    """The `auth` hook in front of every request (pages, fragments, actions, files)."""

    def __init__(self, inner: ASGIApp, auth: AuthHook) -> None:
        self.inner = inner
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed = self.auth(Request(scope, receive))
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                response = Response("Forbidden", status_code=403, media_type="text/plain")
                await response(scope, receive, send)
                return
        await self.inner(scope, receive, send)


def create_app(
    app: App,
    read_only: bool = False,
    auth: AuthHook | None = None,
    base_path: str = "",
    *,
    secret: bytes | None = None,
    refresh: float = REFRESH_SECONDS,
) -> ASGIApp:
    """The dashboard for `app` as an ASGI application.

    Mount it in FastAPI or Starlette (`Mount("/jobs", create_app(app))`), route to it from
    Django's ASGI application, or serve it with `pgqueue web`. `read_only` leaves out every
    action (no buttons, no POST routes); `auth(request)` (sync or async) allows or denies
    each request; `base_path` serves it under a prefix when nothing mounts it there.
    `secret` signs the CSRF tokens: give every process behind one load balancer the same
    one (default: random per process).
    """
    if base_path and (not base_path.startswith("/") or base_path.endswith("/")):
        raise ValueError(f"base_path must start with / and not end with one, not {base_path!r}")
    dashboard = Dashboard(
        app, read_only=read_only, secret=secret or secrets.token_bytes(32), refresh=refresh
    )
    inner: ASGIApp = Starlette(routes=dashboard.routes())
    if base_path:
        inner = Starlette(routes=[Mount(base_path, app=inner)])
    if auth is not None:
        inner = _Guard(inner, auth)
    return inner
