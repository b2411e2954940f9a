"""A local HTTP sink for http targets, in a process of its own (so the test process' GIL does not
throttle it): counts calls per Idempotency-Key, and fails, is slow or hangs by its path
(/ok, /status/503, /slow/<ms>, /hang). GET /_counts returns the counts as JSON, GET /_first
the sink's clock (ms) at the first call of each key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from urllib.request import urlopen

from tests.support import free_port


def serve(port: int) -> None:
    """A minimal asyncio HTTP/1.1 server (keep-alive, Content-Length bodies): fast enough that
    the sink is never what a test measures."""
    calls: Counter[str] = Counter()
    first: dict[str, int] = {}

    async def respond(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if path == "/_counts":
            return 200, json.dumps(calls).encode()
        if path == "/_first":
            return 200, json.dumps(first).encode()
        key = headers.get("idempotency-key", "")
        calls[key] += 1
        first.setdefault(key, time.time_ns() // 1_000_000)
        parts = path.strip("/").split("/")
        if parts[0] == "status":
            return int(parts[1]), b"{}"
        if parts[0] == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
        elif parts[0] == "hang":
            await asyncio.sleep(30)
        return 200, b'{"ok": true}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length") or 0))
                status, body = await respond(head[0].split(" ")[1], headers)
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.sink", str(self.port)])
        deadline = time.monotonic() + 10
        while True:
            try:
                self.counts()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def url(self, path: str = "/ok") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def counts(self) -> Counter[str]:
        with urlopen(self.url("/_counts"), timeout=30) as response:
            return Counter(json.loads(response.read()))

    def first_calls(self) -> dict[str, int]:
        """Per idempotency key, the sink's wall clock (ms) when it was first called."""
        with urlopen(self.url("/_first"), timeout=30) as response:
            return {k: int(v) for k, v in json.loads(response.read()).items()}

    @property
    def calls(self) -> Counter[str]:
        return self.counts()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
