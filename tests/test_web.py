"""The dashboard in a real browser (Debian's Chromium through Playwright) against a real
server, a real database and a real worker. The screenshots in docs/images are taken here."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
playwright_sync = pytest.importorskip("playwright.sync_api")

import pgqueue  # noqa: E402
from pgqueue.web import create_app  # noqa: E402
from tests.helpers import wait_until, worker_thread  # noqa: E402
from tests.webserver import CHROMIUM_ARGS, require_chromium, serve  # noqa: E402

expect = playwright_sync.expect
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'

#: The flaky task fails while this says so (the retry test turns it off).
FLAKY = {"fail": True}


def _tasks(app: pgqueue.App) -> None:
    @app.task(name="web.work")
    def work(n: int, pause: float = 0.0) -> dict[str, int]:
        time.sleep(pause)
        return {"n": n}

    @app.task(name="web.parent")
    def parent(n: int) -> str:
        ctx = pgqueue.current_job()
        ctx.step("fetch", lambda: n)
        ctx.spawn(work, n=n + 1)  # not gathered: the parent completes without waiting
        return "spawned"

    @app.task(name="web.flaky", max_attempts=1)
    def flaky(order: int) -> str:
        if FLAKY["fail"]:
            raise RuntimeError(f"payment gateway said no to order {order}")
        return "charged"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = require_chromium()
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


@pytest.fixture
def qapp(dsn: str) -> Iterator[pgqueue.App]:
    """The application: its tasks, its worker, its enqueues."""
    application = pgqueue.App(dsn, redact_keys=["password", "card_number"])
    _tasks(application)
    FLAKY["fail"] = True
    yield application
    application.close()


@pytest.fixture
def dash_app(dsn: str) -> Iterator[pgqueue.App]:
    """The dashboard's own App (as `pgqueue web` builds one): no tasks, no keys of its own."""
    application = pgqueue.App(dsn, redact_keys=[])
    yield application
    application.close()


@pytest.fixture
def site(dash_app: pgqueue.App) -> Iterator[str]:
    with serve(create_app(dash_app, refresh=0.3)) as url:
        yield url


def _post(url: str, data: bytes, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _failed_job(qapp: pgqueue.App, order: int = 7) -> int:
    job = qapp.tasks["web.flaky"].enqueue(order=order)
    with worker_thread(qapp, burst=True):
        pass
    assert qapp.get_job(job.id).state == pgqueue.JobState.FAILED
    return job.id


def test_overview_counts_move_while_jobs_drain(qapp: pgqueue.App, site: str, page: Any) -> None:
    # 300 jobs of 20 ms on 4 slots: at least 1.5 s of drain, several refreshes of 0.3 s.
    qapp.tasks["web.work"].enqueue_many([{"n": i, "pause": 0.02} for i in range(300)])
    page.goto(site + "/")
    available = page.locator("#live-overview [data-count=available]")
    expect(available).to_have_text("300")
    row = page.locator("tr[data-queue=default]")
    expect(row.locator("[data-col=available]")).to_have_text("300")
    with worker_thread(qapp, concurrency=4):
        # No reload: the live fragment follows the drain by itself.
        wait_until(
            lambda: 0 < int(available.inner_text()) < 300, 20, "the overview to show a drain"
        )
        expect(available).to_have_text("0", timeout=30_000)
        expect(row.locator("[data-col=completed]")).to_have_text("300")
        expect(page.locator("#live-overview [data-count=workers]")).to_have_text("1")
        # The chart has bars for this minute.
        expect(page.locator(".chart rect.bar-completed").first).to_be_visible()
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / "overview.png"), full_page=True)


def test_a_failed_jobs_traceback_shows_and_retry_makes_it_run(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    job_id = _failed_job(qapp, order=42)
    page.goto(site + "/jobs?state=failed")
    page.click(f"tr[data-job='{job_id}'] a[href$='/job/{job_id}']")
    expect(page.locator("h1 .state")).to_have_text("failed")
    error = page.locator(".attempt-error").first
    expect(error).to_contain_text("RuntimeError: payment gateway said no to order 42")
    traceback = error.locator("pre.traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text('raise RuntimeError(f"payment gateway said no')
    expect(page.locator(".timeline")).to_contain_text("attempt 1 failed: RuntimeError")
    page.screenshot(path=str(IMAGES / "job.png"), full_page=True)

    FLAKY["fail"] = False
    with worker_thread(qapp):
        page.click("button.retry")
        expect(page.locator(".notice")).to_contain_text("put back in line")
        wait_until(
            lambda: qapp.get_job(job_id).state == pgqueue.JobState.COMPLETED, 20, "the retry"
        )
    page.reload()
    expect(page.locator("h1 .state")).to_have_text("completed")
    expect(page.locator("#result")).to_have_text('"charged"')
    # The first attempt's error stays in the record.
    expect(page.locator(".attempt-error")).to_have_count(1)


def test_pause_from_the_overview_stops_a_queue_and_resume_starts_it(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    work = qapp.tasks["web.work"]
    work.options(queue="exports").enqueue(n=0)
    page.goto(site + "/")
    row = page.locator("tr[data-queue=exports]")
    row.locator("button.pause").click()
    expect(page.locator(".notice")).to_contain_text("Queue paused")
    expect(page.locator("tr[data-queue=exports] .badge")).to_have_text("paused")
    held = [work.options(queue="exports").enqueue(n=i) for i in range(1, 4)]
    with worker_thread(qapp):
        # The worker is alive and claiming: another queue's job runs meanwhile.
        other = work.options(queue="mail").enqueue(n=99)
        other.wait(timeout=20)
        assert all(qapp.get_job(j.id).state == pgqueue.JobState.AVAILABLE for j in held)
        page.locator("tr[data-queue=exports] button.resume").click()
        expect(page.locator(".notice")).to_contain_text("Queue resumed")
        for j in held:
            j.wait(timeout=20)


def test_filters_and_keyset_pages(qapp: pgqueue.App, site: str, page: Any) -> None:
    work = qapp.tasks["web.work"]
    work.options(queue="alpha").enqueue_many([{"n": i} for i in range(120)])
    work.options(queue="beta").enqueue_many([{"n": i} for i in range(5)])
    _failed_job(qapp, order=1)

    page.goto(site + "/jobs")
    page.fill("input[name=queue]", "alpha")
    page.click(".filters button[type=submit]")
    assert "queue=alpha" in page.url  # the filters live in the URL, shareable
    rows = page.locator("#jobs-table tbody tr")
    expect(rows).to_have_count(50)
    first = [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.job)")]
    assert first == sorted(first, reverse=True)
    assert set(page.locator("#jobs-table tbody td:nth-child(3)").all_inner_texts()) == {"alpha"}
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "jobs.png"), full_page=False)

    page.click("a[rel=next]")
    expect(rows).to_have_count(50)
    second = [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.job)")]
    assert max(second) < min(first)
    assert "before=" in page.url
    page.click("a[rel=next]")
    expect(rows).to_have_count(20)
    expect(page.locator("a[rel=next]")).to_have_count(0)
    page.click("a[rel=prev]")
    expect(rows).to_have_count(50)
    assert [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.job)")] == second
    page.click("a[rel=prev]")
    assert [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.job)")] == first

    page.select_option("select[name=state]", "failed")
    page.fill("input[name=queue]", "")
    page.click(".filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("web.flaky")

    # Search by id opens the job.
    page.fill("header input[name=id]", str(first[0]))
    page.press("header input[name=id]", "Enter")
    expect(page.locator("h1")).to_contain_text(f"Job #{first[0]}")


def test_bulk_retry_of_a_filtered_set_asks_first(qapp: pgqueue.App, site: str, page: Any) -> None:
    flaky = qapp.tasks["web.flaky"]
    ids = [flaky.enqueue(order=i).id for i in range(3)]
    with worker_thread(qapp, burst=True):
        pass
    # Bulk retry cannot narrow by group: under a group filter it is not offered.
    page.goto(site + "/jobs?state=failed&task=web.flaky&group=acme")
    expect(page.locator("h1")).to_have_text("Jobs")
    assert page.locator("a.danger").count() == 0
    page.goto(site + "/jobs?state=failed&task=web.flaky")
    page.click("text=Retry these 3 failed jobs")
    expect(page.locator("#bulk-count")).to_have_text("3")
    assert all(qapp.get_job(i).state == pgqueue.JobState.FAILED for i in ids)  # not yet
    FLAKY["fail"] = False
    with worker_thread(qapp):
        page.click("button:has-text('Yes, retry 3 jobs')")
        expect(page.locator(".notice")).to_contain_text("Failed jobs put back in line")
        wait_until(
            lambda: all(qapp.get_job(i).state == pgqueue.JobState.COMPLETED for i in ids),
            20,
            "the bulk retry to run the jobs",
        )


def test_cancel_from_the_job_page(qapp: pgqueue.App, site: str, page: Any) -> None:
    job = qapp.tasks["web.work"].options(delay=3600).enqueue(n=1)
    page.goto(f"{site}/job/{job.id}")
    expect(page.locator("h1 .state")).to_have_text("scheduled")
    page.click("button.cancel")
    expect(page.locator(".notice")).to_contain_text("Job cancelled")
    expect(page.locator("h1 .state")).to_have_text("cancelled")
    assert page.locator("button.cancel").count() == 0
    assert qapp.get_job(job.id).state == pgqueue.JobState.CANCELLED


def test_a_workflow_job_page_links_its_parents_children_and_steps(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    work = qapp.tasks["web.work"]
    first = work.options(group_key="acme").enqueue(n=1)
    second = work.options(after=[first]).enqueue(n=2)
    page.goto(f"{site}/job/{second.id}")
    expect(page.locator("h1 .state")).to_have_text("waiting")
    expect(page.locator("#waiting-on")).to_contain_text(f"Waiting for #{first.id}")
    parent_link = page.locator(f"[data-relation=after] li[data-job='{first.id}']")
    expect(parent_link.locator(".state")).to_have_text("available")
    parent_link.locator("a").click()
    expect(page.locator("h1")).to_contain_text(f"Job #{first.id}")
    expect(page.locator("#group-key")).to_have_text("acme")
    expect(page.locator(f"[data-relation=needed_by] li[data-job='{second.id}']")).to_contain_text(
        "waiting"
    )
    page.goto(f"{site}/jobs?state=waiting")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
    expect(page.locator(f"tr[data-job='{second.id}']")).to_be_visible()
    page.goto(f"{site}/job/{first.id}")
    # The group filter lists the group's jobs only.
    page.locator("#group-key").click()
    assert "group=acme" in page.url
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)

    spawner = qapp.tasks["web.parent"].enqueue(n=10)
    with worker_thread(qapp, burst=True):
        pass
    assert qapp.get_job(second.id).state == pgqueue.JobState.COMPLETED
    page.goto(f"{site}/job/{spawner.id}")
    expect(page.locator("#steps")).to_contain_text("fetch")
    child = page.locator("[data-relation=spawned] li")
    expect(child).to_have_count(1)
    expect(child.locator(".state")).to_have_text("completed")
    child.locator("a").click()
    expect(page.locator(f"[data-relation=spawned_by] a[href$='/job/{spawner.id}']")).to_be_visible()
    expect(page.locator("#waiting-on")).to_have_count(0)


def test_overview_shows_depth_limits_and_a_queue_no_worker_serves(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    qapp.configure_queue("capped", max_depth=2, concurrency=3, rate="20/s")
    qapp.tasks["web.work"].options(queue="capped").enqueue_many([{"n": 1}, {"n": 2}])
    page.goto(site + "/")
    row = page.locator("tr[data-queue=capped]")
    expect(row.locator("[data-col=depth]")).to_contain_text("2/2")
    expect(row.locator("[data-col=depth] .mark.full")).to_have_text("full")
    expect(row.locator("[data-col=limits]")).to_contain_text("slots 0/3")
    expect(row.locator("[data-col=limits]")).to_contain_text("20 left of 20/s")
    warning = page.locator(".warning[data-warn-queue=capped]")
    expect(warning.first).to_contain_text("2 jobs waiting and no live worker")
    expect(row.locator(".mark.no-worker")).to_be_visible()


def test_pause_and_resume_a_schedule_from_the_schedules_page(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    qapp.periodic("web.work", "0 3 * * *", name="nightly", args={"n": 1})
    with worker_thread(qapp, burst=True):  # a worker writes the schedules it declares
        pass
    page.goto(site + "/schedules")
    row = page.locator("tr[data-schedule=nightly]")
    expect(row).to_contain_text("0 3 * * *")
    row.locator("button.pause").click()
    expect(page.locator(".notice")).to_contain_text("Schedule paused")
    expect(row.locator("[data-col=status]")).to_contain_text("paused")
    assert qapp.schedules()[0]["paused"] is True
    row.locator("button.resume").click()
    expect(page.locator(".notice")).to_contain_text("Schedule resumed")
    assert qapp.schedules()[0]["paused"] is False
    page.locator("tr[data-schedule=nightly] a").first.click()  # the jobs it made
    assert "schedule=nightly" in page.url
    expect(page.locator("h1")).to_have_text("Jobs")


def test_topics_page_lists_subscriptions_and_a_published_job_shows_its_topic(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    qapp.subscribe("orders.*", "web.work", queue="orders")
    [job] = qapp.publish("orders.paid", {"n": 5})
    page.goto(site + "/topics")
    row = page.locator("tr[data-pattern='orders.*']")
    expect(row).to_contain_text("web.work")
    expect(row.locator("[data-col=published]")).to_have_text("1")
    page.goto(f"{site}/job/{job.id}")
    expect(page.locator("#topic")).to_have_text("orders.paid")
    qapp.tasks["web.work"].options(queue="orders").enqueue(n=6)  # the same task, no topic
    page.locator("#topic").click()
    assert "topic=orders.paid" in page.url
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
    expect(page.locator(f"tr[data-job='{job.id}']")).to_be_visible()


def test_workers_page_shows_heartbeat_leader_and_running_jobs(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    job = qapp.tasks["web.work"].enqueue(n=1, pause=30)
    with worker_thread(qapp, concurrency=2, shutdown_grace=0.1):
        wait_until(lambda: qapp.get_job(job.id).state == pgqueue.JobState.RUNNING, 20, "start")
        page.goto(site + "/workers")
        expect(page.locator(".running-job")).to_contain_text(f"#{job.id}", timeout=20_000)
        expect(page.locator(".badge.leader")).to_have_count(1, timeout=20_000)
        expect(page.locator("table.workers")).to_contain_text("ago")
        page.screenshot(path=str(IMAGES / "workers.png"), full_page=True)
        qapp.cancel(job.id)


def test_job_page_escapes_user_data_and_redacts_keys(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    job = qapp.tasks["web.work"].enqueue(n=1)
    qapp.enqueue(
        "web.payload",
        {"note": XSS, "password": "hunter2", "card": {"card_number": "4242424242424242"}},
    )
    # The stored keys are every App's: the dashboard's App has none of its own.
    page.goto(site + f"/job/{job.id + 1}")
    args = page.locator("#args")
    expect(args).to_contain_text("<script>window.__xss = 1</script>")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("script:not([src])").count() == 0
    html = page.content()
    assert "hunter2" not in html and "4242424242424242" not in html
    expect(args).to_contain_text('"password": "***"')
    # The jobs page lists it as text as well.
    page.goto(site + "/jobs?task=web.payload")
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_a_post_without_a_valid_csrf_token_is_refused(
    qapp: pgqueue.App, site: str, page: Any
) -> None:
    job_id = _failed_job(qapp)
    url = f"{site}/job/{job_id}/retry"
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert _post(url, b"", form) == 403
    assert _post(url, b"csrf_token=forged", {**form, "cookie": "pgqueue_csrf=abc"}) == 403
    # A token lifted from a page is useless without the cookie it signs, and the reverse.
    page.goto(f"{site}/job/{job_id}")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert _post(url, f"csrf_token={token}".encode(), form) == 403
    assert _post(url, b"csrf_token=", {**form, "cookie": "pgqueue_csrf=abc"}) == 403
    # The browser's own form from another origin: refused by its Origin.
    cookie = next(c for c in page.context.cookies() if c["name"] == "pgqueue_csrf")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    headers = {**form, "cookie": f"pgqueue_csrf={cookie['value']}", "origin": "http://evil.test"}
    assert _post(url, f"csrf_token={token}".encode(), headers) == 403
    assert qapp.get_job(job_id).state == pgqueue.JobState.FAILED
    # With both, from here, it is done (and redirects to the job page, which urllib follows).
    headers["origin"] = site
    assert _post(url, f"csrf_token={token}".encode(), headers) == 200
    assert qapp.get_job(job_id).state == pgqueue.JobState.AVAILABLE


def test_read_only_mode_has_no_actions(qapp: pgqueue.App, dash_app: pgqueue.App, page: Any) -> None:
    job_id = _failed_job(qapp)
    qapp.tasks["web.work"].enqueue(n=1)
    with serve(create_app(dash_app, read_only=True)) as url:
        for path in ("/", f"/job/{job_id}", "/jobs?state=failed", "/workers", "/schedules"):
            page.goto(url + path)
            expect(page.locator("h1")).to_be_visible()
            assert page.locator("form[method=post]").count() == 0, path
            actions = "button.retry, button.cancel, button.pause, button.resume, a.danger"
            assert page.locator(actions).count() == 0, path
        expect(page.locator(".badge.readonly")).to_be_visible()
        form = {"content-type": "application/x-www-form-urlencoded"}
        assert _post(f"{url}/job/{job_id}/retry", b"", form) in (404, 405)
        assert _post(f"{url}/queue/default/pause", b"", form) in (404, 405)
        assert _post(f"{url}/schedule/nightly/pause", b"", form) in (404, 405)
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/bulk-retry", timeout=10)
        assert missing.value.code == 404
    assert qapp.get_job(job_id).state == pgqueue.JobState.FAILED


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_mounted_under_a_prefix_behind_the_host_apps_auth(dash_app: pgqueue.App) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async def only_ops(request: Any) -> bool:  # an async hook, as a host's session check is
        return bool(request.headers.get("x-user") == "ops")

    host = Starlette(routes=[Mount("/ops/queue", create_app(dash_app, auth=only_ops))])
    with serve(host) as url:
        assert _get(f"{url}/ops/queue/")[0] == 403
        status, html = _get(f"{url}/ops/queue/", {"x-user": "ops"})
        assert status == 200
        assert 'href="/ops/queue/jobs"' in html and 'src="/ops/queue/static/pgqueue.js"' in html
        assert _get(f"{url}/ops/queue/static/pgqueue.js", {"x-user": "ops"})[0] == 200
        assert _get(f"{url}/ops/queue/job/1", {"x-user": "someone"})[0] == 403

    def never(request: Any) -> bool:
        return False

    with serve(create_app(dash_app, base_path="/jobs")) as url:
        status, html = _get(f"{url}/jobs/workers")
        assert status == 200 and 'href="/jobs/"' in html
        assert _get(f"{url}/workers")[0] == 404
    with serve(create_app(dash_app, auth=never)) as url:
        assert _get(f"{url}/")[0] == 403


def _free_port() -> int:
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_pgqueue_web_binds_loopback_and_says_so(dsn: str) -> None:
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    port = _free_port()
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", "web", "--port", str(port), "--read-only"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed before it listens
        assert f"http://127.0.0.1:{port}/" in line and "this machine only" in line, line
        assert "(read-only)" in line and "@" not in line  # no DSN, so no password
        wait_until(lambda: _reachable(f"http://127.0.0.1:{port}/"), 20, "pgqueue web")
        status, html = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "read-only" in html
    finally:
        proc.terminate()
        proc.wait(20)


def _reachable(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except OSError:
        return False
