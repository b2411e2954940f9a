"""Server reflection v1 and v1alpha on one server (schedcore/server.py's bootstrap calls it).

grpcurl and current tools ask for v1 first; grpcio-reflection 1.85 implements v1alpha only
(grpc/grpc#38576). The two protocols differ in their package name alone, so one servicer answers
both, and the v1 file descriptor is made from the v1alpha one so clients can describe v1 too."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

# The two reflection services, and the file that declares v1.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = reflection.SERVICE_NAME
REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _reflection_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Put grpc/reflection/v1/reflection.proto into `pool`, so a client can describe the v1
    service too. Made from the v1alpha file grpcio-reflection ships: the same messages, fields and
    method under the package grpc.reflection.v1, with the options of the v1 file of grpc-proto."""
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return  # already there (a grpcio-reflection that ships v1, or a second server)
    except KeyError:
        pass
    old, new = reflection_pb2.DESCRIPTOR.package, "grpc.reflection.v1"
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = REFLECTION_V1_FILE, new

    def renamed(type_name: str) -> str:  # ".grpc.reflection.v1alpha.X" -> ".grpc.reflection.v1.X"
        prefix = f".{old}."
        return f".{new}.{type_name[len(prefix) :]}" if type_name.startswith(prefix) else type_name

    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = renamed(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type, method.output_type = renamed(method.input_type), renamed(method.output_type)
    proto.options.Clear()  # v1alpha's are deprecated=true and its Java and Go packages
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.java_multiple_files = True
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve server reflection v1 and v1alpha on `server`, listing `service_names` and both
    reflection services. One servicer (grpcio-reflection's) answers both: the messages of the
    two protocols are the same on the wire, so v1 calls are decoded with the v1alpha classes."""
    pool = descriptor_pool.Default()
    _reflection_v1_descriptor(pool)
    servicer = reflection.aio.ReflectionServicer(
        [*service_names, REFLECTION_V1, REFLECTION_V1ALPHA], pool=pool
    )
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for name in (REFLECTION_V1, REFLECTION_V1ALPHA):  # as the generated add_*_to_server does
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)
