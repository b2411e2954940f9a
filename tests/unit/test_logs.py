"""JSON log lines (schedcore/logs.py)."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from schedcore import logs
from schedcore.logs import JsonFormatter, request_id_var


@pytest.fixture()
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("api"))
    logger = logging.getLogger("test.logs")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.handlers[:] = []
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_json_object_per_line_with_the_standard_fields(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info("hello %s", "world")
    logger.warning("second")
    first, second = lines(stream)
    assert first["level"] == "INFO" and second["level"] == "WARNING"
    assert first["service"] == "api"
    assert first["logger"] == "test.logs"
    assert first["msg"] == "hello world"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["ts"]))
    assert "request_id" not in first
    assert "exc" not in first


def test_timestamp_is_utc_with_milliseconds() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created = 1_780_000_000.042
    record.msecs = 42.0
    entry = json.loads(JsonFormatter("svc").format(record))
    assert entry["ts"] == "2026-05-28T20:26:40.042Z"


def test_messages_with_newlines_stay_on_one_line(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info('line one\nline two\r\n"quoted" ünïcode')
    (entry,) = lines(stream)
    assert entry["msg"] == 'line one\nline two\r\n"quoted" ünïcode'


def test_request_id_from_the_context(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    token = request_id_var.set("req-42")
    try:
        logger.info("inside")
    finally:
        request_id_var.reset(token)
    logger.info("outside")
    inside, outside = lines(stream)
    assert inside["request_id"] == "req-42"
    assert "request_id" not in outside


def test_extra_fields_are_emitted(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture

    class Opaque:
        def __str__(self) -> str:
            return "<opaque>"

    logger.info("listening", extra={"port": 50051, "grace_s": 1.5, "tags": ["a", "b"], "obj": Opaque()})
    (entry,) = lines(stream)
    assert entry["port"] == 50051
    assert entry["grace_s"] == 1.5
    assert entry["tags"] == ["a", "b"]
    assert entry["obj"] == "<opaque>"  # not JSON-serializable: rendered with str()
    # None of the LogRecord's own attributes leak out.
    for noise in ("args", "levelno", "pathname", "lineno", "funcName", "process", "thread", "msecs"):
        assert noise not in entry


def test_exception_is_one_field(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    (entry,) = lines(stream)
    assert entry["level"] == "ERROR"
    assert entry["msg"] == "failed"
    assert "Traceback" in str(entry["exc"])
    assert "RuntimeError: boom" in str(entry["exc"])


def test_configure_routes_the_root_logger_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logs.configure("scheduler", "WARNING")
        logging.getLogger("some.library").info("dropped")
        logging.getLogger("some.library").warning("kept")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    (entry,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (entry["service"], entry["logger"], entry["msg"]) == ("scheduler", "some.library", "kept")


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_http_client_loggers_stay_at_warning(monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    """httpx's INFO request log prints every URL whole, credentials included."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    try:
        logs.configure("executor", level)
        logging.getLogger("httpx").info("HTTP Request: GET https://h/?token=s3cret")
        logging.getLogger("httpcore.connection").debug("connect_tcp.started host='h'")
        logging.getLogger("httpx").warning("kept")
        logging.getLogger("services.executor").info("ours")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, lvl in saved.items():
            logging.getLogger(name).setLevel(lvl)
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["kept", "ours"]
