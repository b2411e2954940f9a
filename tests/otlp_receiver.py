"""An OTLP/gRPC trace receiver in the test process: the collector's TraceService (from the
opentelemetry-proto package) on a free port, keeping every span exported to it."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support import free_port


@dataclass(frozen=True)
class Received:
    """One exported span, with the service.name of the resource it came with."""

    service: str
    span: trace_pb2.Span

    @property
    def name(self) -> str:
        return str(self.span.name)

    @property
    def trace_id(self) -> str:
        return bytes(self.span.trace_id).hex()

    @property
    def span_id(self) -> str:
        return bytes(self.span.span_id).hex()

    @property
    def parent_id(self) -> str:
        return bytes(self.span.parent_span_id).hex()

    def attribute(self, key: str) -> Any:
        for kv in self.span.attributes:
            if kv.key == key:
                value = kv.value
                return getattr(value, value.WhichOneof("value"))
        return None


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._spans: list[Received] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        got = []
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                got += [Received(service, span) for span in scope_spans.spans]
        with self._lock:
            self._spans += got
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self, trace_id: str | None = None) -> list[Received]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def stop(self) -> None:
        self.server.stop(0.5)
