"""The http target's egress: HTTP_PROXY/HTTPS_PROXY/NO_PROXY through a real proxy, the address
policy on a proxied request's own host, HTTP_DENY_PRIVATE at connect, and URLs quoted without
their credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_executor import FAILED, SUCCEEDED, HttpServer, http_item
from tests.integration.test_executor_http import run_items
from tests.proxy_support import Proxy, running_proxy
from tests.support import free_port

# REQUEST_METHOD too: with it set (CGI), Python ignores HTTP_PROXY.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


@pytest.fixture()
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """A proxy named in HTTP_PROXY and HTTPS_PROXY, with no other proxy variable set."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with running_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        yield proxy


def test_requests_go_through_the_proxy(http_server: HttpServer, proxy: Proxy) -> None:
    work = http_item(http_server.url("/ok?page=2"), headers={"X-Custom": "abc"})
    result = run_items([work])[work.execution_id]
    assert result.status == SUCCEEDED, result.status_message
    assert result.result.output == "fine ✓"
    assert proxy.received == [("POST", http_server.url("/ok?page=2"))]
    (got,) = http_server.received
    assert got["headers"]["X-Custom"] == "abc"
    assert got["headers"]["Idempotency-Key"] == work.execution_id


def test_https_goes_through_a_connect_tunnel(http_server: HttpServer, proxy: Proxy) -> None:
    port = http_server.server_address[1]
    work = http_item(f"https://127.0.0.1:{port}/ok")  # a plain http server: the handshake fails
    result = run_items([work])[work.execution_id]
    assert result.status == FAILED
    assert proxy.received == [("CONNECT", f"127.0.0.1:{port}")]


def test_no_proxy_hosts_are_reached_directly(
    http_server: HttpServer, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    work = http_item(http_server.url("/ok"))
    result = run_items([work])[work.execution_id]
    assert result.status == SUCCEEDED, result.status_message
    assert proxy.received == []
    assert len(http_server.received) == 1


def test_the_policy_judges_a_proxied_requests_own_host(http_server: HttpServer, proxy: Proxy) -> None:
    """The proxy (at 127.0.0.1, the operator's choice) is reached; the target is what is checked."""
    port = http_server.server_address[1]
    urls = [f"http://127.0.0.1:{port}/ok", f"http://localhost:{port}/ok", f"http://[::ffff:7f00:1]:{port}/ok"]
    items = [http_item(url) for url in urls]
    results = run_items(items, http_deny_networks="127.0.0.0/8, ::1/128")
    private = http_item(f"https://127.0.0.1:{port}/ok")
    results.update(run_items([private], http_deny_private=True))
    for work in [*items, private]:
        result = results[work.execution_id]
        assert result.status == FAILED and not result.retryable, result.status_message
        assert "refused" in result.status_message and "denied" in result.status_message.replace(
            "HTTP_DENY_PRIVATE", "denied"
        )
    assert "HTTP_DENY_PRIVATE" in results[private.execution_id].status_message
    assert proxy.received == [] and http_server.received == []


def test_a_proxied_host_that_does_not_resolve_is_not_sent_to_the_proxy(proxy: Proxy) -> None:
    work = http_item("http://no-such-host.invalid/hook")
    result = run_items([work])[work.execution_id]
    assert result.status == FAILED
    assert "cannot resolve no-such-host.invalid" in result.status_message
    assert proxy.received == []


def test_deny_private_refuses_loopback_at_connect(http_server: HttpServer) -> None:
    port = http_server.server_address[1]
    urls = [
        http_server.url("/ok"),
        f"http://localhost:{port}/ok",
        f"http://0.0.0.0:{port}/ok",
        f"http://[::]:{port}/ok",
        f"http://2130706433:{port}/ok",
    ]
    items = [http_item(url) for url in urls]
    results = run_items(items, http_deny_private=True)
    for work in items:
        result = results[work.execution_id]
        assert result.status == FAILED and not result.retryable, work.target.http.url
        assert "HTTP_DENY_PRIVATE" in result.status_message, result.status_message
    assert http_server.received == []
    allowed = http_item(http_server.url("/ok"))
    assert run_items([allowed])[allowed.execution_id].status == SUCCEEDED, "off by default"


def test_messages_quote_a_url_without_its_credentials() -> None:
    """A task stored before the api refused credentials in URLs still runs; its messages hide them."""
    work = http_item(f"http://alice:hunter2@127.0.0.1:{free_port()}/hook?page=2&token=hunter2")
    result = run_items([work])[work.execution_id]
    assert result.status == FAILED
    assert "hunter2" not in result.status_message
    assert "token=[secret]" in result.status_message and "[secret]@127.0.0.1" in result.status_message
