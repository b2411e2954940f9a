"""The http target against a real local HTTP server: the request it sends, what counts as
success, failures, timeouts, the bounded body excerpt."""

from __future__ import annotations

import time

from schedcore import ipb, pb
from tests.integration.test_executor import (
    FAILED,
    SUCCEEDED,
    TIMED_OUT,
    HttpServer,
    assert_complete,
    executor,
    http_item,
    scheduler_stream,
)
from tests.support import free_port


def run_items(items: list[ipb.WorkItem], **settings: object) -> dict[str, ipb.WorkResult]:
    """Run the items on a fresh executor; their results by execution id."""
    with executor(**settings) as ex, scheduler_stream(ex) as s:
        s.send(demand=len(items))
        s.wait_granted(len(items))
        s.send(items)
        s.wait_results(len(items))
        results = {r.execution_id: r for r in s.results}
    for work in items:
        assert_complete(results[work.execution_id], work)
    return results


def test_request_carries_method_headers_body_and_idempotency_key(http_server: HttpServer) -> None:
    put = http_item(
        http_server.url("/ok"),
        method=pb.HttpMethod.HTTP_METHOD_PUT,
        headers={"X-Custom": "abc", "Content-Type": "text/plain", "idempotency-key": "not mine"},
        body=b"hello body",
    )
    default = http_item(http_server.url("/ok?q=1"), body=b"{}")
    head = http_item(http_server.url("/ok"), method=pb.HttpMethod.HTTP_METHOD_HEAD)
    results = run_items([put, default, head])
    seen = {r["headers"]["Idempotency-Key"]: r for r in http_server.received}
    assert set(seen) == {put.execution_id, default.execution_id, head.execution_id}

    got = seen[put.execution_id]
    assert got["method"] == "PUT"
    assert got["body"] == b"hello body"
    assert got["headers"]["X-Custom"] == "abc"
    assert got["headers"]["Content-Type"] == "text/plain"
    assert [k.lower() for k in got["headers"]].count("idempotency-key") == 1
    assert seen[default.execution_id]["method"] == "POST"  # HTTP_METHOD_UNSPECIFIED
    assert seen[default.execution_id]["path"] == "/ok?q=1"
    assert seen[head.execution_id]["method"] == "HEAD"

    ok = results[put.execution_id]
    assert ok.status == SUCCEEDED
    assert ok.result.http.status_code == 200
    assert ok.result.output == "fine ✓"
    assert not ok.result.output_truncated
    assert results[head.execution_id].status == SUCCEEDED
    assert results[head.execution_id].result.output == ""


def test_expected_status_semantics(http_server: HttpServer) -> None:
    cases = {
        "any 2xx, 201": (http_item(http_server.url("/status/201")), SUCCEEDED),
        "any 2xx, 204": (http_item(http_server.url("/status/204")), SUCCEEDED),
        "exactly 200, got 201": (http_item(http_server.url("/status/201"), expected_status=200), FAILED),
        "exactly 404": (http_item(http_server.url("/status/404"), expected_status=404), SUCCEEDED),
        "any 2xx, 404": (http_item(http_server.url("/status/404")), FAILED),
        "redirect not followed": (http_item(http_server.url("/status/302")), FAILED),
        "redirect expected": (http_item(http_server.url("/status/302"), expected_status=302), SUCCEEDED),
    }
    results = run_items([work for work, _ in cases.values()])
    for name, (work, status) in cases.items():
        result = results[work.execution_id]
        assert result.status == status, name
        assert result.result.http.status_code == int(work.target.http.url.rsplit("/", 1)[1]), name
    assert not any(r["path"] == "/ok" for r in http_server.received), "a redirect was followed"


def test_server_error_fails_retryable_with_status_and_body(http_server: HttpServer) -> None:
    work = http_item(http_server.url("/status/500"))
    result = run_items([work])[work.execution_id]
    assert result.status == FAILED
    assert result.retryable
    assert result.result.http.status_code == 500
    assert result.result.output == "status 500 body"
    assert "500" in result.status_message


def test_connection_refused_fails_retryable() -> None:
    work = http_item(f"http://127.0.0.1:{free_port()}/nobody")
    result = run_items([work])[work.execution_id]
    assert result.status == FAILED
    assert result.retryable
    assert "ConnectError" in result.status_message
    assert not result.result.HasField("http")


def test_unusable_url_fails_not_retryable() -> None:
    work = http_item("ftp://127.0.0.1/file")
    result = run_items([work])[work.execution_id]
    assert result.status == FAILED
    assert not result.retryable


def test_hanging_endpoint_times_out(http_server: HttpServer) -> None:
    work = http_item(http_server.url("/hang"), timeout_s=0.5)
    with executor() as ex, scheduler_stream(ex) as s:
        s.send(demand=1)
        s.wait_granted(1)
        started = time.monotonic()
        s.send([work])
        result = s.result(work.execution_id, timeout=5)
        took = time.monotonic() - started
    assert result.status == TIMED_OUT
    assert result.retryable
    assert "0.5 s" in result.status_message
    assert 0.5 <= took < 1.5
    ran = result.finish_time.ToNanoseconds() - result.start_time.ToNanoseconds()
    assert 0.5e9 <= ran < 1.0e9
    assert_complete(result, work)


def test_body_excerpt_is_bounded(http_server: HttpServer) -> None:
    big = http_item(http_server.url("/big/100000"))
    small = http_item(http_server.url("/big/300"))
    results = run_items([big, small], output_limit_bytes=512)
    assert results[big.execution_id].status == SUCCEEDED
    assert results[big.execution_id].result.output == "x" * 512
    assert results[big.execution_id].result.output_truncated
    assert results[small.execution_id].result.output == "x" * 300
    assert not results[small.execution_id].result.output_truncated


def test_denied_addresses_are_refused_without_a_request(http_server: HttpServer) -> None:
    port = http_server.server_address[1]
    by_name = http_item(f"http://localhost:{port}/ok")  # resolves to a denied address
    by_ip = http_item(f"http://127.0.0.1:{port}/ok")
    mapped = http_item(f"http://[::ffff:127.0.0.1]:{port}/ok")
    results = run_items([by_name, by_ip, mapped], http_deny_networks="127.0.0.0/8, ::1/128")
    for work in (by_name, by_ip, mapped):
        result = results[work.execution_id]
        assert result.status == FAILED
        assert not result.retryable, "a refused destination stays refused: no retry"
        assert "denied network" in result.status_message, result.status_message
    assert http_server.received == [], "no request reached the server"


def test_an_allow_list_admits_only_its_networks(http_server: HttpServer) -> None:
    inside = http_item(http_server.url("/ok"))
    results = run_items([inside], http_allow_networks="127.0.0.0/8")
    assert results[inside.execution_id].status == SUCCEEDED
    outside = http_item(http_server.url("/ok"))
    results = run_items([outside], http_allow_networks="10.0.0.0/8")
    assert results[outside.execution_id].status == FAILED
    assert "outside the allowed networks" in results[outside.execution_id].status_message
    assert len(http_server.received) == 1


def test_default_policy_refuses_cloud_metadata() -> None:
    metadata = http_item("http://169.254.169.254/latest/meta-data/")
    results = run_items([metadata])
    result = results[metadata.execution_id]
    assert result.status == FAILED and not result.retryable
    assert "169.254.169.254" in result.status_message and "denied" in result.status_message
