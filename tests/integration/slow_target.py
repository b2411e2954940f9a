"""An http target that takes its time (TARGET_MS) and notices when its caller hangs up first: the
overlap and cancel tests check what a target lived through (when each call started and ended,
and whether the executor closed it), not only what the records say."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from tests.support import free_port

TARGET_MS = 2_500


@dataclass
class Call:
    key: str  # the execution id (Idempotency-Key)
    start: float
    end: float = 0.0
    closed: bool = False  # the caller closed the connection before the answer


@dataclass
class SlowTarget:
    """An HTTP server, in a thread of its own, answering every call after TARGET_MS (a path
    starting /hang: after a minute), and noticing when the caller hangs up first."""

    port: int = field(default_factory=free_port)
    calls: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {n.strip().lower(): v.strip() for n, _, v in (h.partition(":") for h in head[1:])}
            await reader.readexactly(int(headers.get("content-length") or 0))
            call = Call(headers.get("idempotency-key", ""), time.monotonic())
            with self.lock:
                self.calls[head[0].split(" ")[1]].append(call)
            hung_up = asyncio.ensure_future(reader.read(1))  # b"": the caller closed
            path = head[0].split(" ")[1]
            delay_s = 60 if path.startswith("/hang") else TARGET_MS / 1000
            done, _ = await asyncio.wait({hung_up}, timeout=delay_s)
            call.end = time.monotonic()
            if done:
                call.closed = True
                return
            hung_up.cancel()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def serve(self) -> None:
        async def main() -> None:
            server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
            async with server:
                await server.serve_forever()

        asyncio.run(main())
