"""JSON logs to stdout, one object per line, with the current request id when there is one."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

# Set by the server interceptor for the duration of one RPC.
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# The current span's (trace id, span id) in hex, or None outside a span: set while tracing is on
# (schedcore/spans.py), so with tracing off a line costs nothing more.
trace_context: Callable[[], tuple[str, str] | None] | None = None

# Loggers kept at WARNING whatever LOG_LEVEL says: httpx logs every request's full URL at INFO
# (credentials in a query or user:password@ included) and httpcore its traffic at DEBUG.
QUIET = ("httpx", "httpcore")

# Attributes every LogRecord has; anything else passed through `extra=` is emitted as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, process_index: int | None = None) -> None:
        super().__init__()
        self.service = service
        self.process_index = process_index

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.process_index is not None:  # one of several server processes (API_PROCESSES)
            entry["process_index"] = self.process_index
            entry["pid"] = record.process
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        if trace_context is not None and (ids := trace_context()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(service: str, level: str = "INFO", *, process_index: int | None = None) -> None:
    """Route every logger (ours, grpc's, redis') to stdout as JSON; QUIET ones only from WARNING.
    `process_index`: this is one of several server processes; every line carries it and the pid."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service, process_index))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
