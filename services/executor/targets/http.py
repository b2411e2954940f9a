"""The http target: one request per attempt through a pooled client shared by all attempts.

Redirects are not followed: a 3xx response is the attempt's result, compared with
expected_status like any other status. Following one would resend the method, body, the task's
headers (credentials, often) and the Idempotency-Key to whatever host the response names, and
would turn a POST into a GET on 301-303; a task that wants the final endpoint names it, and a task
for which the redirect itself is success sets expected_status to it.

Proxies and CA bundles come from the standard environment variables (HTTP_PROXY, HTTPS_PROXY,
ALL_PROXY, NO_PROXY, SSL_CERT_FILE), with the address policy kept on each request's own host
(guard.py). The client has no timeouts of its own: the runner's per-attempt timeout bounds
connecting, sending and reading alike. Messages quote a URL with its credentials redacted.
"""

from __future__ import annotations

import time

import httpx

from schedcore import pb, signing, tracing
from schedcore.egress import AddressRefused, GuardedTransport, proxy_mounts
from schedcore.ipb import WorkItem
from schedcore.netpolicy import AddressPolicy
from schedcore.sealing import Sealer, SealError, secret_maps
from schedcore.settings import Settings
from schedcore.urlsecrets import redact
from services.executor.targets.base import SUCCEEDED, AttemptContext, Outcome, Target
from services.executor.targets.scrub import margin, scrubbed

METHODS: dict[int, str] = {
    pb.HttpMethod.HTTP_METHOD_UNSPECIFIED: "POST",
    pb.HttpMethod.HTTP_METHOD_GET: "GET",
    pb.HttpMethod.HTTP_METHOD_POST: "POST",
    pb.HttpMethod.HTTP_METHOD_PUT: "PUT",
    pb.HttpMethod.HTTP_METHOD_PATCH: "PATCH",
    pb.HttpMethod.HTTP_METHOD_DELETE: "DELETE",
    pb.HttpMethod.HTTP_METHOD_HEAD: "HEAD",
}
IDEMPOTENCY_KEY = "Idempotency-Key"
SIGNING = "http.signing_secrets"
# Connections kept open between attempts, per executor.
MAX_KEEPALIVE = 100


class HttpTarget(Target):
    def __init__(self, settings: Settings) -> None:
        self.sealer = Sealer(settings.secret_keys)
        super().__init__(settings)
        limits = httpx.Limits(
            max_connections=settings.executor_concurrency,
            max_keepalive_connections=min(settings.executor_concurrency, MAX_KEEPALIVE),
        )
        policy = AddressPolicy.from_settings(settings)
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=None,
            transport=GuardedTransport(policy, limits),
            mounts=proxy_mounts(policy, limits),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def run(self, item: WorkItem, ctx: AttemptContext) -> Outcome:
        target = item.target.http
        method = METHODS.get(target.method)
        if method is None:
            return Outcome.failed(f"unknown http method {target.method}", retryable=False)
        # Sealed at rest: opened only here, and one way for both kinds (schedcore/sealing.py).
        opened: dict[str, dict[str, str]] = {}
        for what, values in secret_maps(item.target):
            try:
                opened[what] = self.sealer.open_each(values)
            except SealError as exc:
                kind = "signing secret" if what == SIGNING else "secret header"
                return Outcome.failed(f"{kind} {exc}", retryable=False)
        sent = opened["http.secret_headers"]
        keys = list(opened[SIGNING].values())
        reserved = {IDEMPOTENCY_KEY.lower(), *(signing.HEADERS if keys else ())}
        headers = {k: v for k, v in [*target.headers.items(), *sent.items()] if k.lower() not in reserved}
        headers[IDEMPOTENCY_KEY] = item.execution_id
        secrets = [v for v in [*sent.values(), *keys] if v]
        with tracing.http_call(method, target.url, headers) as span:  # adds its traceparent
            outcome = await self._call(item, method, headers, keys, ctx.output_limit + margin(secrets))
            outcome = scrubbed(outcome, secrets, ctx.output_limit)
            if span is not None:
                ok = outcome.status == SUCCEEDED
                tracing.http_ended(span, ok, outcome.status_message, outcome.http_status)
        return outcome

    async def _call(
        self, item: WorkItem, method: str, headers: dict[str, str], keys: list[str], read_limit: int
    ) -> Outcome:
        """The request (signed with `keys`, the signing secrets in the clear, when there are any)
        and its outcome, with up to `read_limit` bytes of the body as output (the caller scrubs
        secrets, then cuts it to the bound)."""
        target = item.target.http
        shown = redact(target.url)
        try:
            request = self.client.build_request(
                method, target.url, headers=headers, content=target.body or None
            )
            if keys:  # over the bytes httpx sends; the timestamp is this attempt's sending time
                signed = signing.signature_headers(keys, item.execution_id, int(time.time()), request.content)
                request.headers.update(signed)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            return Outcome.failed(f"cannot build the request: {exc}", retryable=False)
        try:
            response = await self.client.send(request, stream=True)
            try:
                # A secret the response echoes is scrubbed before the output is cut, so the
                # read goes the longest form of a secret beyond the bound: one straddling it stays whole.
                body = await _read_bounded(response, read_limit)
            finally:
                await response.aclose()
        except httpx.UnsupportedProtocol as exc:
            return Outcome.failed(f"{method} {shown}: {exc}", retryable=False)
        except httpx.ConnectError as exc:
            refused = isinstance(exc.__cause__, AddressRefused)
            kind = "refused" if refused else "failed: ConnectError"
            return Outcome.failed(f"{method} {shown} {kind}: {exc}", retryable=not refused)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            return Outcome.failed(f"{method} {shown} failed: {type(exc).__name__}: {reason}", retryable=True)
        output = body.decode("utf-8", "replace")
        truncated = len(body) > read_limit
        code = response.status_code
        expected = target.expected_status
        ok = code == expected if expected else 200 <= code < 300
        if ok:
            return Outcome(SUCCEEDED, output=output, output_truncated=truncated, http_status=code)
        return Outcome.failed(
            f"{method} {shown} answered {code}, expected {expected or 'a 2xx status'}",
            retryable=True,
            output=output,
            output_truncated=truncated,
            http_status=code,
        )


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of the body, plus one more when there are more (so the caller
    knows it was cut). The rest is never downloaded."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            return bytes(data[: limit + 1])
    return bytes(data)
