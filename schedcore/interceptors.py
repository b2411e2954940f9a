"""The one server interceptor every service installs.

For each unary call it:
- binds a request id (the caller's `x-request-id` metadata, or a fresh one) to the log context
  and echoes it in the initial metadata;
- decodes the request itself, so a body that is not a valid message gets INVALID_ARGUMENT instead
  of the INTERNAL grpc would answer;
- maps exceptions to statuses through schedcore.errors.status_of (bounded in size), attaching a
  google.rpc.BadRequest detail for field violations. Servicers only raise;
- counts the call by method and status code, and times it (schedcore.metrics);
- with tracing on, runs it in a server span named by its method (docs/tracing.md);
- with a bound on concurrent calls (the api's API_MAX_CONCURRENT_RPCS), refuses a call past it with
  RESOURCE_EXHAUSTED at once, before anything else runs, instead of letting calls queue until
  their deadlines. Health and reflection are exempt: probes must keep their answer under client
  load (grpc.aio.server's own maximum_concurrent_rpcs counts health checks too, so it is not used);
- when the service gives one, awaits its `authenticate(method, metadata)` hook before the request
  is decoded: the hook raises a domain error to refuse the call (nothing else runs) and may bind
  the caller to a contextvar of its own (each call runs in its own asyncio task, so the binding
  ends with the call). The api's hook is services/api/access.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from schedcore import tracing
from schedcore.errors import (
    InvalidArgument,
    ResourceExhausted,
    StoreUnavailable,
    status_for,
    status_of,
)
from schedcore.logs import request_id_var
from schedcore.metrics import REDIS_ERRORS, RPC_DURATION, RPCS

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("schedcore.rpc")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# A service's authentication hook: (full method name, invocation metadata) -> None or a raise.
Authenticate = Callable[[str, Sequence[tuple[str, str | bytes]]], Awaitable[None]]


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return secrets.token_hex(8)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    code, message = status_for(exc)
    if isinstance(exc, StoreUnavailable):
        REDIS_ERRORS.labels("rpc").inc()
    if code is grpc.StatusCode.INTERNAL:
        log.exception("unhandled error in %s", method, exc_info=exc)
    else:
        log.info("%s -> %s: %s", method, code.name, message)
    grpc_status = rpc_status.to_status(status_of(exc))
    await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)


# Services whose calls the concurrency bound never refuses.
UNBOUNDED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, authenticate: Authenticate | None = None, max_concurrent: int = 0) -> None:
        self._authenticate = authenticate
        self._max_concurrent = max_concurrent  # 0: no bound
        self.in_flight = 0  # bounded calls running now (one event loop: a plain counter)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        deserialize = handler.request_deserializer
        method = handler_call_details.method
        request_id = _request_id(handler_call_details)
        duration = RPC_DURATION.labels(method)
        authenticate = self._authenticate
        metadata = handler_call_details.invocation_metadata or ()
        bound = 0 if method.startswith(UNBOUNDED_SERVICES) else self._max_concurrent

        async def call(raw: Any, context: grpc.aio.ServicerContext, span: Span | None = None) -> Any:
            token = request_id_var.set(request_id)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            counted = False
            try:
                if bound:
                    if self.in_flight >= bound:
                        raise ResourceExhausted(
                            f"this replica is serving its limit of {bound} concurrent calls "
                            f"(API_MAX_CONCURRENT_RPCS); retry with backoff"
                        )
                    self.in_flight += 1
                    counted = True
                await context.send_initial_metadata((("x-request-id", request_id),))
                if authenticate is not None:
                    await authenticate(method, metadata)
                try:
                    request = deserialize(raw) if deserialize is not None else raw
                except (DecodeError, RecursionError, ValueError) as exc:
                    raise InvalidArgument.field("request", f"not a valid message: {exc}") from None
                return await behavior(request, context)
            except grpc.aio.AbortError:
                aborted = context.code()  # a servicer that aborted by itself
                code = aborted if isinstance(aborted, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one place errors become statuses
                code = status_for(exc)[0]
                await _abort(context, exc, method)
            finally:
                if counted:
                    self.in_flight -= 1
                request_id_var.reset(token)
                RPCS.labels(method, code.name).inc()
                duration.observe(time.perf_counter() - started)
                tracing.rpc_ended(span, code.value[0], code.name)

        async def traced(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            with tracing.rpc(method, metadata) as span:
                return await call(raw, context, span)

        serve = traced if tracing.ENABLED and not method.startswith(tracing.UNTRACED) else call
        return grpc.unary_unary_rpc_method_handler(
            serve, request_deserializer=None, response_serializer=handler.response_serializer
        )
