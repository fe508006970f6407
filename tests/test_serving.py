"""What every call shares: health, graceful stop, request ids, error mapping, and logs without secrets."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyscope.v1 import apis_pb2, keys_pb2
from keyscope_server.factory import SERVICE_NAMES, RunningServer, ServerConfig, start_server
from keyscope_server.logs import RequestIdFilter
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import request_id

pytestmark = pytest.mark.asyncio

Serving = health_pb2.HealthCheckResponse
Code = keys_pb2.VerifyKeyResponse.Code


def x_request_id(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[str | bytes]:
    return [value for key, value in metadata or () if key == "x-request-id"]


# -- health -----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", *SERVICE_NAMES])
async def test_ok_health_serving_without_credentials(channel: grpc.aio.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert answer.status == Serving.SERVING


async def test_ok_health_covers_every_keyscope_service() -> None:
    assert set(SERVICE_NAMES) == {
        "keyscope.v1.ApiService",
        "keyscope.v1.AuditService",
        "keyscope.v1.KeyService",
        "keyscope.v1.RoleService",
    }


async def test_ok_health_list_every_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.List(health_pb2.HealthListRequest())
    assert {name: s.status for name, s in answer.statuses.items()} == {
        name: Serving.SERVING for name in ("", *SERVICE_NAMES)
    }


async def test_ok_health_list_not_serving_once_stop_begins(server: RunningServer) -> None:
    await server.stop(None)
    answer = await server.health.List(health_pb2.HealthListRequest(), None)
    assert {name: s.status for name, s in answer.statuses.items()} == {
        name: Serving.NOT_SERVING for name in ("", *SERVICE_NAMES)
    }


async def test_not_found_health_of_unknown_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await health.Check(health_pb2.HealthCheckRequest(service="keyscope.v1.NoSuchService"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_ok_health_not_serving_once_stop_begins(server: RunningServer) -> None:
    # After stop, no call reaches the server; its health servicer is asked directly.
    await server.stop(None)
    for service in ("", *SERVICE_NAMES):
        answer = await server.health.Check(health_pb2.HealthCheckRequest(service=service), None)
        assert answer.status == Serving.NOT_SERVING


async def test_unavailable_new_call_after_stop(server: RunningServer, admin: Caller) -> None:
    await admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="before"), metadata=admin.md)
    await server.stop(1)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="after"), metadata=admin.md)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


# -- x-request-id -----------------------------------------------------------------------------------


async def test_ok_request_id_generated(admin: Caller) -> None:
    call = admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="x"), metadata=admin.md)
    [first] = x_request_id(await call.trailing_metadata())
    await call
    call = admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="y"), metadata=admin.md)
    [second] = x_request_id(await call.trailing_metadata())
    await call
    assert isinstance(first, str) and first.startswith("req_")
    assert first != second


@pytest.mark.parametrize("sent", ["my-id-123", "A" * 128, '!~"#{}[]', "0"])
async def test_ok_request_id_is_the_callers_own(admin: Caller, sent: str) -> None:
    call = admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="x"), metadata=(*admin.md, ("x-request-id", sent)))
    assert x_request_id(await call.trailing_metadata()) == [sent]
    await call


@pytest.mark.parametrize("sent", ["A" * 129, "B" * 200, "my id", " leading", ""])
async def test_ok_unsafe_request_id_is_replaced(admin: Caller, sent: str) -> None:
    call = admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="x"), metadata=(*admin.md, ("x-request-id", sent)))
    [returned] = x_request_id(await call.trailing_metadata())
    await call
    assert isinstance(returned, str) and returned.startswith("req_")
    assert returned != sent


async def test_ok_request_id_on_health_check(channel: grpc.aio.Channel) -> None:
    call = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), metadata=(("x-request-id", "probe-1"),)
    )
    assert x_request_id(await call.trailing_metadata()) == ["probe-1"]
    assert (await call).status == Serving.SERVING


async def test_unauthenticated_error_carries_callers_request_id(channel: grpc.aio.Channel) -> None:
    stub = Caller(channel, "ksroot_unknown", "-").apis
    call = stub.GetApi(
        apis_pb2.GetApiRequest(api_id="api_1"),
        metadata=(("authorization", "Bearer ksroot_unknown"), ("x-request-id", "my-id-123")),
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert request_id(e.value) == "my-id-123"
    assert x_request_id(await call.trailing_metadata()) == ["my-id-123"]


async def test_not_found_error_request_id_equals_header(admin: Caller) -> None:
    call = admin.apis.GetApi(apis_pb2.GetApiRequest(api_id="api_doesnotexist"), metadata=admin.md)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    [header] = x_request_id(await call.trailing_metadata())
    assert request_id(e.value) == header
    assert isinstance(header, str) and header.startswith("req_")


@pytest.mark.parametrize("sent", ["B" * 200, "my id"])
async def test_invalid_argument_error_request_id_replaced_when_unsafe(admin: Caller, sent: str) -> None:
    call = admin.apis.GetApi(apis_pb2.GetApiRequest(api_id=""), metadata=(*admin.md, ("x-request-id", sent)))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [header] = x_request_id(await call.trailing_metadata())
    assert request_id(e.value) == header != sent


# -- store failures and unexpected errors ------------------------------------------------------------


async def test_unavailable_when_store_closed(store: Store, admin: Caller) -> None:
    api = await admin.make_api()
    await store.close()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.apis.GetApi(apis_pb2.GetApiRequest(api_id=api.id), metadata=admin.md)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert request_id(e.value).startswith("req_")


class _BrokenStore:
    """Stands in for the store, which this test is not about: the interceptor's handling of a surprise is."""

    async def page_token_key(self) -> bytes:
        return b"k" * 32

    async def authenticate(self, secret_hash: bytes, now_ms: int, request_id: str = "", gate: object = None) -> object:
        raise RuntimeError("secret internals")


async def test_internal_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    running = await start_server(_BrokenStore(), ServerConfig(host="127.0.0.1", port=0))  # type: ignore[arg-type]
    # Installed as configure_logging installs it, so records carry the request id.
    caplog.handler.addFilter(RequestIdFilter())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = Caller(channel, "ksroot_x", "-").apis.GetApi(
                apis_pb2.GetApiRequest(api_id="api_1"),
                metadata=(("authorization", "Bearer ksroot_x"), ("x-request-id", "trace-42")),
            )
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call
    finally:
        await running.stop(None)

    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert e.value.details() == "internal error (request id trace-42)"
    assert request_id(e.value) == "trace-42"
    assert "secret internals" not in repr(e.value.trailing_metadata())
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "unexpected error in /keyscope.v1.ApiService/GetApi (request id trace-42)"
    assert record.request_id == "trace-42"  # type: ignore[attr-defined]
    assert record.exc_info is not None and str(record.exc_info[1]) == "secret internals"
    # The access log line names the outcome, under the same request id.
    [access] = [r for r in caplog.records if r.name == "keyscope.rpc" and r.levelno == logging.INFO]
    assert "INTERNAL" in access.getMessage()
    assert access.request_id == "trace-42"  # type: ignore[attr-defined]


# -- secrets never in logs -----------------------------------------------------------------------------


async def test_ok_secrets_never_logged(make_caller: MakeCaller, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caller = await make_caller(["api.*.create_api", "api.*.create_key", "api.*.verify_key", "rbac.*.create_permission"])
    api = await caller.make_api(["documents.read"])
    key, secret = await caller.make_key(api.id, ["documents.read"], prefix="sk")
    assert (await caller.verify(secret, "documents.read")).code == Code.CODE_VALID
    assert (await caller.verify(secret, "documents.write")).code == Code.CODE_INSUFFICIENT_PERMISSIONS
    wrong = secret[:-4] + "XXXX" if not secret.endswith("XXXX") else secret[:-4] + "YYYY"
    assert (await caller.verify(wrong, "documents.read")).code == Code.CODE_NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await caller.verify(secret, "documents.read AND")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    impostor = caller.root_key[:-4] + ("XXXX" if not caller.root_key.endswith("XXXX") else "YYYY")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await caller.apis.GetApi(
            apis_pb2.GetApiRequest(api_id=api.id), metadata=(("authorization", f"Bearer {impostor}"),)
        )
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert caplog.records  # the flow was logged at all
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for value in (caller.root_key, secret, wrong, impostor):
        assert value not in logged
        assert value.split("_", 1)[1] not in logged
