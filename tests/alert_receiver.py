"""A local receiver of alert notifications (webhooks and Slack-style posts) for the alert tests.

Runs in a thread of the test process on a free port and keeps every request it got (path,
headers, body). Paths: `/hook` answers 200; `/fail/<n>` answers 503 to the first n requests of
each webhook-id, then 200; `/hold` holds the first request of each webhook-id for 30 s (a
scheduler killed meanwhile never hears back), then answers 200; `/target/<status>` is an http
*target* (tasks call it: it answers <status>, and is not recorded as a notification).

`verify` is the Standard Webhooks check of docs/alerts.md, taken from the page and run as a
receiver would run it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"


def snippet(language: str) -> str:
    """The first ```<language> block of docs/alerts.md, "Verifying a webhook"."""
    found = re.search(rf"### Verifying a webhook.*?```{language}\n(.*?)```", DOCS.read_text(), re.S)
    assert found, f"docs/alerts.md has no {language} verification snippet"
    return found.group(1)


def _documented_verify() -> Callable[..., bool]:
    namespace: dict[str, Any] = {}
    exec(snippet("python"), namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


# The Python verification of docs/alerts.md, run as written there: the tests check the docs.
verify = _documented_verify()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: Counter[str] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def notifications(self, path: str = "") -> list[Received]:
        with self.lock:
            return [
                r
                for r in self.received
                if r.path.startswith(path or "/") and not r.path.startswith("/target")
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start() -> Receiver:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            receiver = holder["r"]
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = 200
            if self.path.startswith("/target/"):
                status = int(self.path.rsplit("/", 1)[1])
            else:
                key = headers.get("webhook-id", self.path)
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body))
                    receiver.seen[key] += 1
                    nth = receiver.seen[key]
                if self.path.startswith("/fail/") and nth <= int(self.path.rsplit("/", 1)[1]):
                    status = 503
                elif self.path == "/hold" and nth == 1:
                    time.sleep(30)
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["r"] = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return holder["r"]
