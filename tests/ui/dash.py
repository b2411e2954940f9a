"""Driving the dashboard with Streamlit's AppTest against a real api."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.support import RedisServer, ServiceThread

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
# The admin token the secured api is started with (AUTH_BOOTSTRAP_TOKEN).
BOOTSTRAP = "bootstrap-token-for-the-dashboard-tests-0123456789"


@pytest.fixture()
def secured(redis_srv: RedisServer, rds) -> Iterator[ServiceThread]:  # type: ignore[no-untyped-def]
    """An api that requires tokens (AUTH_MODE=token), with BOOTSTRAP as its first admin."""
    service = ServiceThread(
        build_api, api_settings(redis_srv.url, auth_mode="token", auth_bootstrap_token=BOOTSTRAP)
    )
    yield service
    service.stop()


def open_page(monkeypatch: pytest.MonkeyPatch, addr: str, page: str | None = None, **query: str) -> AppTest:
    """The dashboard at `page` ("views/tasks.py"; None: the default page), talking to `addr`."""
    monkeypatch.setenv("API_ADDR", addr)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    if page is not None:
        for key, value in query.items():
            at.query_params[key] = value
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every piece of text on the page, for 'is it shown' assertions."""
    parts: list[str] = []
    for kind in (
        "markdown",
        "caption",
        "error",
        "warning",
        "info",
        "success",
        "title",
        "subheader",
        "metric",
    ):
        for element in getattr(at, kind):
            parts.append(f"{getattr(element, 'label', '')} {element.value}")
    return "\n".join(parts)


def rerun_ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
