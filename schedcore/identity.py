"""Who is calling, by certificate: the identities a verified client certificate names, and the
server interceptor that lets only allowed identities call a service (docs/security.md,
"Internal traffic: TLS and mTLS").

An identity is a subjectAltName entry of the client certificate, or its subject CN when the
certificate has no SAN at all (RFC 6125: a CN is not looked at once there is a SAN, so a
certificate with CN=scheduler and SAN client is "client"). gRPC has verified the certificate
against TLS_CLIENT_CA_FILE before any call arrives; without mTLS no call carries one.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from schedcore.errors import PermissionDenied, status_for

log = logging.getLogger("schedcore.identity")

# The auth context properties gRPC fills from the verified peer certificate.
SAN_PROPERTY = "x509_subject_alternative_name"
CN_PROPERTY = "x509_common_name"
# At most this many of a refused certificate's names are quoted back to the caller.
QUOTED_NAMES = 3


def peer_identities(auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str, ...]:
    """The identities of the verified client certificate: its SAN entries, else its CN."""
    names = list(auth_context.get(SAN_PROPERTY) or ()) or list(auth_context.get(CN_PROPERTY) or ())
    return tuple(name.decode("utf-8", "replace") for name in names)


def _quoted(names: Sequence[str]) -> str:
    if not names:
        return "no client certificate"
    shown = ", ".join(names[:QUOTED_NAMES])
    more = len(names) - QUOTED_NAMES
    return f"{shown} (and {more} more)" if more > 0 else shown


class AllowedClients(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Lets a call to a method of `services` (full service names) through only when the client
    certificate names one of `allowed`; other calls end PERMISSION_DENIED, and the refused
    identity is logged. Methods of other services (health, reflection) stay open. `setting`:
    the variable that holds the list, named in the refusal."""

    def __init__(self, allowed: Iterable[str], services: Iterable[str], setting: str) -> None:
        self.allowed = frozenset(allowed)
        self.services = frozenset(services)
        self.setting = setting

    async def _admit(self, context: grpc.aio.ServicerContext, method: str) -> None:
        names = peer_identities(context.auth_context())
        if self.allowed.intersection(names):
            return
        log.warning(
            "refused %s: client certificate names %s, none of them in %s",
            method,
            ", ".join(names) or "nothing",
            self.setting,
            extra={"peer": context.peer(), "identities": list(names), "allowed": sorted(self.allowed)},
        )
        refusal = PermissionDenied(
            f"client identity {_quoted(names)} may not call {method.rsplit('/', 1)[0].strip('/')} "
            f"(this server's {self.setting})"
        )
        code, message = status_for(refusal)
        await context.abort(code, message)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.rsplit("/", 1)[0].strip("/") not in self.services:
            return handler
        admit = self._admit
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary or handler.stream_unary:
            unary = handler.unary_unary or handler.stream_unary

            async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(context, method)
                return await unary(request, context)

            make = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return make(answer, **codecs)
        streaming = handler.unary_stream or handler.stream_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await admit(context, method)
            responses = streaming(request, context)
            if not inspect.isasyncgen(responses):  # a servicer that writes with context.write
                await responses
                return
            async for response in responses:
                yield response

        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return make(stream, **codecs)
