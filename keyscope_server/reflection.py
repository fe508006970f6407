"""Server reflection in both its versions, `grpc.reflection.v1` and `grpc.reflection.v1alpha`, for grpcurl, buf curl,
Postman and the like; every service, method and message of the server can be described by its name.

grpcio-reflection serves only v1alpha (grpc/grpc#38576), while newer tools ask for v1 first. The two protocols are
the same messages under two package names (v1 is v1alpha renamed), so one servicer answers both: v1 is registered as a
generic handler whose requests and answers are read and written with v1alpha's classes, byte for byte the same on the
wire. So that v1 can itself be described, its file descriptor, v1alpha's under v1's names, is added to the pool.

Protobuf's pool finds the file of a message, enum or service by name but not of a method
(`keyscope.v1.KeyService.VerifyKey` is "Symbol not found" to grpcurl otherwise): a method is looked up as its
service's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection as v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_pb2_grpc

__all__ = ["SERVICE_NAMES", "enable_reflection"]

_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1_SERVICE = f"{_V1_PACKAGE}.ServerReflection"
SERVICE_NAMES = (_V1_SERVICE, v1alpha.SERVICE_NAME)  # the reflection services, v1 first


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """v1's file in the pool: v1alpha's, its package and its type references renamed."""
    try:
        pool.FindFileByName(_V1_FILE)
        return  # added before (another server in this process), or shipped by a newer grpcio-reflection
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto.FromString(v1alpha_pb2.DESCRIPTOR.serialized_pb)
    old, new = f".{file.package}.", f".{_V1_PACKAGE}."
    file.name, file.package = _V1_FILE, _V1_PACKAGE
    file.ClearField("options")  # v1alpha's Java and Go package names; v1's own are of no use to a Python server
    for message in file.message_type:
        for message_field in message.field:
            if message_field.type_name.startswith(old):
                message_field.type_name = new + message_field.type_name[len(old) :]
    for method in (m for service in file.service for m in service.method):
        method.input_type = new + method.input_type[len(old) :]
        method.output_type = new + method.output_type[len(old) :]
    pool.Add(file)


class _ReflectionServicer(v1alpha.aio.ReflectionServicer):
    # The base class's private lookup, which typeshed's stubs leave out; its arguments are as the base passes them.
    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        service_name, _, method_name = fully_qualified_name.rpartition(".")
        try:
            service = self._pool.FindServiceByName(service_name)  # type: ignore[attr-defined]
        except KeyError:
            service = None
        if service is not None and method_name in service.methods_by_name:
            fully_qualified_name = service_name
        return super()._file_containing_symbol(request, fully_qualified_name)  # type: ignore[misc]


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection (both versions) of `service_names` and of reflection itself."""
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    servicer = _ReflectionServicer((*service_names, *SERVICE_NAMES), pool=pool)
    v1alpha_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_V1_SERVICE, {"ServerReflectionInfo": info}),)
    )
