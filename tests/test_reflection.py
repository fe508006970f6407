"""grpc.reflection.v1 and v1alpha: what grpcurl, buf curl and Postman ask before they call anything.

Each version is asked through its own method path; their messages are the same on the wire, so v1alpha's classes
read and write both."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from keyscope_server.factory import SERVICE_NAMES, RunningServer
from tests.client import Caller

pytestmark = pytest.mark.asyncio

VERSIONS = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}
BUF = Path(sys.executable).with_name("buf")  # buf-bin, a pinned test dependency: a reflection client in Go
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


async def _reflect(
    channel: grpc.aio.Channel, version: str, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    call = channel.stream_stream(
        VERSIONS[version],
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    [answer] = [answer async for answer in call(iter([request]))]
    return answer


def _files(answer: reflection_pb2.ServerReflectionResponse) -> list[descriptor_pb2.FileDescriptorProto]:
    protos = answer.file_descriptor_response.file_descriptor_proto
    return [descriptor_pb2.FileDescriptorProto.FromString(serialized) for serialized in protos]


# -- list_services ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_ok_reflection_lists_services(channel: grpc.aio.Channel, version: str) -> None:
    answer = await _reflect(channel, version, reflection_pb2.ServerReflectionRequest(list_services=""))
    assert sorted(s.name for s in answer.list_services_response.service) == sorted(
        [
            *SERVICE_NAMES,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    )


# -- file_containing_symbol -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("symbol", "file"),
    [
        ("keyscope.v1.KeyService.VerifyKey", "keyscope/v1/keys.proto"),
        ("keyscope.v1.ApiService.UpdateScopes", "keyscope/v1/apis.proto"),
        ("grpc.health.v1.Health.Check", "grpc_health/v1/health.proto"),
        ("grpc.health.v1.Health.List", "grpc_health/v1/health.proto"),
        ("grpc.reflection.v1.ServerReflection.ServerReflectionInfo", "grpc/reflection/v1/reflection.proto"),
    ],
)
async def test_ok_reflection_file_containing_method(
    channel: grpc.aio.Channel, version: str, symbol: str, file: str
) -> None:
    answer = await _reflect(channel, version, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    found = {proto.name: proto for proto in _files(answer)}
    assert file in found
    service_name, _, method_name = symbol.rpartition(".")
    [service] = [s for s in found[file].service if f"{found[file].package}.{s.name}" == service_name]
    assert method_name in [method.name for method in service.method]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("symbol", "file"),
    [
        ("keyscope.v1.KeyService", "keyscope/v1/keys.proto"),
        ("keyscope.v1.VerifyKeyRequest", "keyscope/v1/keys.proto"),
        ("keyscope.v1.VerifyKeyResponse.Code", "keyscope/v1/keys.proto"),
    ],
)
async def test_ok_reflection_file_containing_service_message_enum(
    channel: grpc.aio.Channel, version: str, symbol: str, file: str
) -> None:
    answer = await _reflect(channel, version, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    assert _files(answer)[0].name == file


async def test_ok_reflection_v1_describes_itself_in_v1_names(channel: grpc.aio.Channel) -> None:
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection")
    [file] = _files(await _reflect(channel, "v1", request))
    assert (file.name, file.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    [service] = file.service
    [method] = service.method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    type_names = {f.type_name for message in file.message_type for f in message.field if f.type_name}
    assert type_names and all(name.startswith(".grpc.reflection.v1.") for name in type_names)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "symbol", ["keyscope.v1.KeyService.NoSuchMethod", "keyscope.v1.NoSuchService.VerifyKey", "keyscope.v1.Nothing", ""]
)
async def test_not_found_reflection_unknown_symbol(channel: grpc.aio.Channel, version: str, symbol: str) -> None:
    answer = await _reflect(channel, version, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    assert answer.error_response.error_code == NOT_FOUND
    assert not answer.HasField("file_descriptor_response")


# -- buf curl: a reflection client of another language, on each version ---------------------------------------------


async def _buf_curl(port: int, version: str, method: str, headers: Sequence[tuple[str, str]], body: dict) -> dict:
    # Headers and body come on stdin, so that no root key or key secret is in a command line.
    stdin = "".join(f"{name}: {value}\n" for name, value in headers) + "\n" + json.dumps(body)
    process = await asyncio.create_subprocess_exec(
        str(BUF),
        "curl",
        "--protocol=grpc",
        "--http2-prior-knowledge",
        f"--reflect-protocol=grpc-{version}",
        "--header=@-",
        "--data=@-",
        f"http://127.0.0.1:{port}/{method}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


@pytest.mark.parametrize("version", VERSIONS)
async def test_ok_buf_curl_calls_verify_key_by_reflection(server: RunningServer, admin: Caller, version: str) -> None:
    api = await admin.make_api(["documents.read"])
    _, secret = await admin.make_key(api.id, permissions=["documents.read"])
    answer = await _buf_curl(
        server.port,
        version,
        "keyscope.v1.KeyService/VerifyKey",
        admin.md,
        {"key": secret, "permissions": "documents.read"},
    )
    assert answer["valid"] is True


@pytest.mark.parametrize("version", VERSIONS)
async def test_ok_buf_curl_health_list_by_reflection(server: RunningServer, version: str) -> None:
    answer = await _buf_curl(server.port, version, "grpc.health.v1.Health/List", (), {})
    assert answer["statuses"] == {name: {"status": "SERVING"} for name in ("", *SERVICE_NAMES)}


# -- calls made from what reflection tells (what grpcurl does) ---------------------------------------------------------


def _reflect_and_call(
    port: int, metadata: tuple[tuple[str, str], ...], method: str, body: str
) -> tuple[list[str], dict]:
    """Discover the services by reflection, then call `method` with a JSON body, as grpcurl does."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = list(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)
        service_name, method_name = method.strip("/").split("/")
        service = pool.FindServiceByName(service_name)
        descriptor = service.methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.input_type.full_name))
        response_class = message_factory.GetMessageClass(descriptor.output_type)
        request = json_format.Parse(body, request_class())
        call = channel.unary_unary(
            method, request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString
        )
        response = call(request, metadata=metadata, timeout=10)
        return services, json_format.MessageToDict(response)


async def test_ok_reflection_call_set_permissions_seed_body(server: RunningServer, admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    key, _ = await admin.make_key(api.id)
    # The body of seed 004's curl example, with a real key id.
    body = json.dumps({"keyId": key.id, "permissions": ["documents.read", "documents.write"]})

    _, response = await asyncio.to_thread(
        _reflect_and_call, server.port, admin.md, "/keyscope.v1.KeyService/SetPermissions", body
    )

    ids = {s.value: s.id for s in api.scopes}
    assert response["permissions"] == [
        {"id": ids["documents.read"], "name": "documents.read"},
        {"id": ids["documents.write"], "name": "documents.write"},
    ]
    assert all(p["id"].startswith("perm_") for p in response["permissions"])
    assert int(response["revision"]) > 0


async def test_ok_reflection_call_update_scopes_seed_body(server: RunningServer, admin: Caller) -> None:
    api = await admin.make_api(["old:scope"])
    # Seed 000's PATCH body, with its placeholders filled in.
    body = json.dumps({"apiId": api.id, "scopes": [{"value": "read:users", "description": "Read users"}]})

    _, response = await asyncio.to_thread(
        _reflect_and_call, server.port, admin.md, "/keyscope.v1.ApiService/UpdateScopes", body
    )

    [scope] = response["api"]["scopes"]
    assert scope["value"] == "read:users"
    assert scope["description"] == "Read users"
    assert scope["id"].startswith("perm_")
    assert response["removedScopes"] == ["old:scope"]


async def test_unauthenticated_reflection_call_without_credentials(server: RunningServer, admin: Caller) -> None:
    # Reflection needs no credentials; the methods it reveals still do.
    api = await admin.make_api()
    with pytest.raises(grpc.RpcError) as e:
        await asyncio.to_thread(
            _reflect_and_call, server.port, (), "/keyscope.v1.ApiService/GetApi", json.dumps({"apiId": api.id})
        )
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
