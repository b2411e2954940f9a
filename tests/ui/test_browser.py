"""One real browser: Debian's chromium, driven by Playwright, against the running dashboard.

The dashboard runs as `streamlit run ui/app.py` (the command `make run` uses) in front of a real
api and Redis. Without chromium the test is skipped locally; CI installs chromium and sets
REQUIRE_BROWSER=1, which turns a missing browser into a failure. SCREENSHOT_DIR=docs/img (as
`make screenshots` sets it) keeps the screenshots for the README.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from schedcore import pb
from tests.integration import helpers
from tests.integration.helpers import create, cron_task, list_all_tasks
from tests.support import ServiceThread, free_port, wait_for
from tests.ui import dash
from tests.ui.dash import BOOTSTRAP

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
api = helpers.api
stub = helpers.stub

if CHROMIUM is None and os.environ.get("REQUIRE_BROWSER") != "1":
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

secured = dash.secured  # a fixture, shared with the other dashboard tests


def dashboard_command(port: int) -> list[str]:
    """How the dashboard is served (tools/run_local.py builds the same command)."""
    from tools.run_local import ui_command

    return ui_command(sys.executable, port)


@pytest.fixture()
def dashboard(api: ServiceThread, tmp_path: Path) -> Iterator[str]:
    yield from serve_dashboard(api, tmp_path)


@pytest.fixture()
def secured_dashboard(secured: ServiceThread, tmp_path: Path) -> Iterator[str]:
    yield from serve_dashboard(secured, tmp_path)


def serve_dashboard(api: ServiceThread, tmp_path: Path) -> Iterator[str]:
    """`streamlit run` in front of `api`, logging at debug level into tmp_path/streamlit.log."""
    port = free_port()
    env = dict(os.environ, API_ADDR=api.target, HOME=str(tmp_path), STREAMLIT_LOGGER_LEVEL="debug")
    with open(tmp_path / "streamlit.log", "wb") as log:
        proc = subprocess.Popen(
            dashboard_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"streamlit exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    try:
        wait_for(healthy, 60)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def chromium_page(height: int = 1000) -> Iterator[Any]:
    """A page of Debian's chromium, 1,400 px wide, waiting up to 30 s for what it expects."""
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM is not None, "REQUIRE_BROWSER=1 but chromium is not installed"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": height})
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)  # shared, busy machines: a rerun may take seconds
        yield page
        browser.close()


def test_create_a_task_in_the_browser(dashboard: str, stub, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        page.goto(f"{dashboard}/edit")
        expect(page.get_by_role("heading", name="Create a task")).to_be_visible()
        page.get_by_role("textbox", name="Name").fill("made in a browser")
        page.get_by_role("textbox", name="Labels").fill("team=qa")
        cron = page.get_by_role("textbox", name="Cron expression")
        cron.fill("*/15 * * * *")
        cron.press("Enter")
        expect(page.get_by_text("Every 15 minutes (UTC)")).to_be_visible()
        page.screenshot(path=str(shots / "dashboard-create.png"), full_page=True)
        page.get_by_role("button", name="Create task").click()
        expect(page.get_by_text("Created task")).to_be_visible()

        page.goto(f"{dashboard}/tasks")
        expect(page.get_by_text("made in a browser", exact=True).first).to_be_visible()
        page.wait_for_timeout(500)  # let the table's canvas paint before the picture
        page.screenshot(path=str(shots / "dashboard-tasks.png"), full_page=True)
    [task] = list_all_tasks(stub)
    assert task.name == "made in a browser"
    assert dict(task.labels) == {"team": "qa"}
    assert task.schedule.cron.expression == "*/15 * * * *"
    assert (shots / "dashboard-tasks.png").stat().st_size > 10_000


def test_the_task_list_fits_and_its_pager_is_not_covered(dashboard: str, stub, tmp_path: Path) -> None:
    """At 1,400 px the whole table shows (long schedules and URLs do not push the labels off),
    the pager's Next is not under the table's toolbar, and the pager counts the tasks."""
    from playwright.sync_api import expect

    for i in range(60):
        task = cron_task(
            f"job-{i:02d}", "0 9 * * 1-5", labels={"team": "ops", "env": "prod", "owner": f"p-{i}"}
        )
        task.schedule.cron.time_zone = "America/Argentina/Buenos_Aires"
        task.target.http.url = f"https://hooks.example.com/services/reports/nightly/{i:02d}/run?format=json"
        create(stub, task)
    with chromium_page() as page:
        page.goto(f"{dashboard}/tasks")
        expect(page.get_by_text("Page 1 · 1-50 of 60")).to_be_visible()
        grid = page.get_by_test_id("stDataFrame").first
        expect(grid).to_be_visible()
        page.wait_for_timeout(1000)  # the grid lays out its columns on its canvas
        widths = grid.locator(".dvn-scroller").evaluate("s => [s.scrollWidth, s.clientWidth]")
        page.screenshot(path=str(tmp_path / "tasks.png"), full_page=True)
        assert widths[0] <= widths[1], f"the table scrolls sideways at 1,400 px: {widths}"
        box = grid.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # shows the toolbar
        expect(grid.get_by_test_id("stElementToolbar")).to_be_visible()
        next_button = page.get_by_role("button", name="Next")
        nb = next_button.bounding_box()
        assert nb is not None
        for fraction in (0.1, 0.5, 0.9):  # across the button, at mid height
            point = [nb["x"] + nb["width"] * fraction, nb["y"] + nb["height"] / 2]
            on_top = next_button.evaluate(
                "(b, p) => b.contains(document.elementFromPoint(p[0], p[1]))", point
            )
            assert on_top, f"something covers Next at {point} (see {tmp_path / 'tasks.png'})"
        next_button.click()
        expect(page.get_by_text("Page 2 · 51-60 of 60")).to_be_visible()


def test_the_execution_detail_has_no_empty_header_cells(dashboard: str, stub) -> None:
    from playwright.sync_api import expect

    task = create(stub, cron_task("nightly"))
    execution = stub.RunTask(pb.RunTaskRequest(id=task.id), timeout=helpers.TIMEOUT).execution
    with chromium_page() as page:
        page.goto(f"{dashboard}/executions?id={execution.id}")
        details = page.get_by_test_id("stTable")
        expect(details.get_by_text("Nominal time")).to_be_visible()
        headers = details.locator("th").all_inner_texts()
    assert all(h.strip() for h in headers), f"empty header cells: {headers}"


def test_sign_in_keeps_the_token_out_of_urls_and_logs(secured_dashboard: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    with chromium_page(900) as page:
        page.on("request", lambda request: seen.append(request.url))
        # A deep link: signing in lands on the page (and filter) the link names, not on Overview.
        page.goto(f"{secured_dashboard}/executions?task=nightly")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.screenshot(path=str(shots / "dashboard-sign-in.png"))
        page.get_by_label("API token").fill(BOOTSTRAP)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("Signed in as")).to_be_visible()
        expect(page.get_by_role("heading", name="Executions")).to_be_visible()
        expect(page.get_by_text("No task's name contains 'nightly'")).to_be_visible()
        assert page.url.endswith("/executions?task=nightly"), page.url
        # Within the session (a page load would start a new one, which asks again).
        page.get_by_role("link", name="Tasks").click()
        expect(page.get_by_text("No tasks yet")).to_be_visible()
        seen.append(page.url)
        cookies = page.context.cookies()
    assert len(seen) > 1
    assert not [url for url in seen if BOOTSTRAP in url]
    assert not [c for c in cookies if BOOTSTRAP in c["value"]]
    log = (tmp_path / "streamlit.log").read_text(errors="replace")
    assert "Runtime state:" in log  # a debug-level line: the dashboard logged at its most talkative
    assert BOOTSTRAP not in log


def test_a_channel_is_created_tested_and_deleted_in_the_browser(dashboard: str, api, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from tests import alert_receiver

    receiver = alert_receiver.start()
    try:
        with chromium_page() as page:
            page.goto(f"{dashboard}/channels")
            expect(page.get_by_role("heading", name="New channel")).to_be_visible()
            page.get_by_role("textbox", name="Name", exact=True).fill("on-call")
            url = page.get_by_role("textbox", name="URL", exact=True)
            url.fill(f"{receiver.url}/hook")
            url.press("Enter")
            page.get_by_role("button", name="Generate a secret").click()
            expect(page.get_by_text("shown only this once")).to_be_visible()
            secret = page.get_by_test_id("stCode").inner_text().strip()
            assert secret.startswith("whsec_"), secret
            page.get_by_role("button", name="Create channel").click()
            expect(page.get_by_text("Created channel on-call")).to_be_visible()
            page.get_by_role("button", name="Send test").click()
            expect(page.get_by_text("Delivered a test notification through on-call")).to_be_visible()
            page.screenshot(path=str(tmp_path / "channels.png"), full_page=True)
            page.get_by_role("button", name="Delete...").click()
            expect(page.get_by_text("Delete channel on-call (webhook, namespace default)?")).to_be_visible()
            page.get_by_role("button", name="Yes, delete it").click()
            expect(page.get_by_text("Deleted channel on-call")).to_be_visible()
            expect(page.get_by_text("No channels yet")).to_be_visible()
        [sent] = receiver.notifications()
        assert alert_receiver.verify(secret, sent.headers, sent.body)
    finally:
        receiver.close()


def test_the_task_forms_alerts_in_the_browser(dashboard: str, api, stub) -> None:
    from playwright.sync_api import TimeoutError as PageTimeout
    from playwright.sync_api import expect

    from ui.channelform import new_secret

    with grpc.insecure_channel(api.target) as channel:
        hook = pb.WebhookChannel(url="https://hooks.example.com/x", signing_secrets=[new_secret()])
        ops = (
            pb.alert_service_grpc.AlertServiceStub(channel)
            .CreateChannel(pb.CreateChannelRequest(channel=pb.Channel(name="ops", webhook=hook)))
            .channel
        )
    with chromium_page(1400) as page:
        page.goto(f"{dashboard}/edit")
        expect(page.get_by_role("heading", name="Alerts")).to_be_visible()
        expect(page.get_by_text("No alerts.")).to_be_visible()
        name = page.get_by_role("textbox", name="Name")
        name.fill("watched in a browser")
        name.press("Enter")  # the rerun this starts must not close the picker opened next
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=10_000)
        option = page.get_by_role("option", name="ops (webhook)")
        for _ in range(5):  # a rerun still under way closes it: open it again
            page.get_by_test_id("stMultiSelect").click()
            try:
                option.click(timeout=3_000)
                break
            except PageTimeout:
                page.keyboard.press("Escape")
        page.keyboard.press("Escape")
        failures = page.get_by_role("spinbutton", name="After failures in a row (0: never)")
        failures.fill("3")
        failures.press("Enter")
        expect(
            page.get_by_text("Alerts go to ops (webhook) when 3 executions in a row fail.")
        ).to_be_visible()
        page.get_by_role("button", name="Create task").click()
        expect(page.get_by_text("Created task")).to_be_visible()
    [task] = list_all_tasks(stub)
    assert task.alerts == pb.AlertPolicy(channel_ids=[ops.id], consecutive_failures=3)


def test_a_task_page_deep_link_survives_sign_in(secured_dashboard: str, secured: ServiceThread) -> None:
    from playwright.sync_api import expect

    with grpc.insecure_channel(secured.target) as channel:
        task = (
            pb.task_service_grpc.TaskServiceStub(channel)
            .CreateTask(
                pb.CreateTaskRequest(task=cron_task("nightly", expression="0 3 * * *")),
                timeout=helpers.TIMEOUT,
                metadata=(("authorization", f"Bearer {BOOTSTRAP}"),),
            )
            .task
        )
    with chromium_page() as page:
        page.goto(f"{secured_dashboard}/task?id={task.id}")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("API token").fill(BOOTSTRAP)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="nightly")).to_be_visible()
        expect(page.get_by_text("Next runs:")).to_be_visible()
        assert page.url.endswith(f"/task?id={task.id}"), page.url
