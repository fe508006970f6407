"""keyscope.Client and keyscope.AsyncClient, the hand-written clients, against the real server: the root key sent
as it must be (a header in plaintext, call credentials over TLS), typed errors with their details, the default
deadline, and UNAVAILABLE retried by gRPC's retry policy where a call is safe to repeat (and only there)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

import keyscope
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.factory import RunningServer, ServerConfig, TlsConfig, start_server
from keyscope_server.store import Store
from tests.certs import Certificates, make_certificates
from tests.client import Caller
from tests.conftest import MakeCaller

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def client(server: RunningServer, admin: Caller) -> AsyncIterator[keyscope.AsyncClient]:
    async with keyscope.AsyncClient(f"127.0.0.1:{server.port}", root_key=admin.root_key) as made:
        yield made


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


# -- ok -----------------------------------------------------------------------------------------------------------


async def test_ok_async_client_creates_and_verifies(client: keyscope.AsyncClient) -> None:
    api = (
        await client.apis.CreateApi(keyscope.CreateApiRequest(name="docs", scopes=[keyscope.Scope(value="d.r")]))
    ).api
    created = await client.keys.CreateKey(keyscope.CreateKeyRequest(api_id=api.id, permissions=["d.r"]))
    answer = await client.keys.VerifyKey(keyscope.VerifyKeyRequest(key=created.secret, permissions="d.r"))
    assert (answer.valid, answer.code, answer.key_id) == (True, keyscope.VerifyKeyResponse.CODE_VALID, created.key.id)


async def test_ok_sync_client_creates_and_reads(server: RunningServer, admin: Caller) -> None:
    def calls() -> tuple[keyscope.Api, keyscope.Api]:
        with keyscope.Client(f"127.0.0.1:{server.port}", root_key=admin.root_key) as blocking:
            made = blocking.apis.CreateApi(keyscope.CreateApiRequest(name="sync")).api
            return made, blocking.apis.GetApi(keyscope.GetApiRequest(api_id=made.id)).api

    made, read = await asyncio.to_thread(calls)
    assert read == made and made.name == "sync"


async def test_ok_tls_root_key_as_call_credentials(store: Store, certs: Certificates) -> None:
    secret = new_secret(ROOT_KEY_PREFIX)
    await store.create_root_key("client over tls", hash_secret(secret), EXAMPLE_ROOT_KEY)
    tls = TlsConfig(certs.server.cert_pem, certs.server.key_pem, None)
    running = await start_server(store, ServerConfig(host="127.0.0.1", port=0, tls=tls))
    try:
        target = f"127.0.0.1:{running.port}"
        async with keyscope.AsyncClient(target, root_key=secret, tls=keyscope.Tls(certs.ca_pem)) as over_tls:
            api = (await over_tls.apis.CreateApi(keyscope.CreateApiRequest(name="over tls"))).api
            assert api.id.startswith("api_")
        async with keyscope.AsyncClient(target, root_key=None, tls=keyscope.Tls(certs.ca_pem)) as anonymous:
            with pytest.raises(keyscope.Unauthenticated):
                await anonymous.apis.GetApi(keyscope.GetApiRequest(api_id=api.id))
    finally:
        await running.stop(None)


async def test_ok_root_key_not_in_repr(server: RunningServer, admin: Caller) -> None:
    async with keyscope.AsyncClient(f"127.0.0.1:{server.port}", root_key=admin.root_key) as made:
        assert admin.root_key not in repr(made) and admin.root_key not in str(vars(made))
    with keyscope.Client(f"127.0.0.1:{server.port}", root_key=admin.root_key) as blocking:
        assert admin.root_key not in repr(blocking)


async def test_ok_every_message_re_exported() -> None:
    from keyscope.v1 import apis_pb2, audit_pb2, keys_pb2, permissions_pb2, roles_pb2

    for module in (apis_pb2, audit_pb2, keys_pb2, permissions_pb2, roles_pb2):
        for name in module.DESCRIPTOR.message_types_by_name:
            assert getattr(keyscope, name) is getattr(module, name)
            assert name in keyscope.__all__


# -- typed errors ---------------------------------------------------------------------------------------------------


async def test_invalid_argument_typed_with_every_violation_and_request_id(client: keyscope.AsyncClient) -> None:
    with pytest.raises(keyscope.InvalidArgument) as error:
        await client.keys.SetPermissions(keyscope.SetPermissionsRequest(key_id="not a key", permissions=["", "a b"]))
    assert [v.field for v in error.value.field_violations] == ["key_id", "permissions[0]", "permissions[1]"]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.request_id is not None and error.value.request_id.startswith("req_")
    assert isinstance(error.value, grpc.RpcError)


async def test_permission_denied_names_the_permission(
    server: RunningServer, make_caller: MakeCaller, admin: Caller
) -> None:
    api = await admin.make_api(["x"])
    reader = await make_caller([f"api.{api.id}.read_api"])
    async with keyscope.AsyncClient(f"127.0.0.1:{server.port}", root_key=reader.root_key) as limited:
        with pytest.raises(keyscope.PermissionDenied) as error:
            await limited.apis.CreateApi(keyscope.CreateApiRequest(name="no"))
    assert error.value.permission == "api.*.create_api"


async def test_aborted_carries_the_current_etag(client: keyscope.AsyncClient, admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a"])
    changed = await client.keys.SetPermissions(keyscope.SetPermissionsRequest(key_id=key.id, permissions=["b"]))
    with pytest.raises(keyscope.Aborted) as error:
        await client.keys.SetPermissions(keyscope.SetPermissionsRequest(key_id=key.id, permissions=[], etag=key.etag))
    assert error.value.current_etag == changed.etag != key.etag
    assert error.value.reason == "ETAG_MISMATCH"


async def test_not_found_names_the_resource(client: keyscope.AsyncClient) -> None:
    with pytest.raises(keyscope.NotFound) as error:
        await client.keys.GetKey(keyscope.GetKeyRequest(key_id="key_nothing"))
    assert error.value.resources == (("key", "key_nothing"),)


async def test_unauthenticated_unknown_root_key(server: RunningServer) -> None:
    async with keyscope.AsyncClient(f"127.0.0.1:{server.port}", root_key="ks_root_unknown") as stranger:
        with pytest.raises(keyscope.Unauthenticated) as error:
            await stranger.apis.GetApi(keyscope.GetApiRequest(api_id="api_x"))
    assert error.value.reason == "UNAUTHENTICATED"


async def test_sync_client_raises_typed_errors(server: RunningServer, admin: Caller) -> None:
    def call() -> keyscope.KeyscopeError:
        with keyscope.Client(f"127.0.0.1:{server.port}", root_key=admin.root_key) as blocking:
            with pytest.raises(keyscope.NotFound) as error:
                blocking.keys.GetKey(keyscope.GetKeyRequest(key_id="key_nothing"))
            return error.value

    error = await asyncio.to_thread(call)
    assert error.resources == (("key", "key_nothing"),) and error.request_id is not None


async def test_deadline_exceeded_default_deadline_applies(server: RunningServer, admin: Caller) -> None:
    target = f"127.0.0.1:{server.port}"
    async with keyscope.AsyncClient(target, root_key=admin.root_key, timeout=1e-6) as hurried:
        with pytest.raises(keyscope.DeadlineExceeded):
            await hurried.apis.CreateApi(keyscope.CreateApiRequest(name="late"))
        # A deadline of the call's own wins over the default.
        api = (await hurried.apis.CreateApi(keyscope.CreateApiRequest(name="in time"), timeout=10)).api
    assert api.name == "in time"


# -- retries (a proxy that answers UNAVAILABLE to the first attempt of each call, then passes the rest on) ------------


class FlakyProxy:
    """Between the client and the real server: the network, which is not ours, failing once per call."""

    def __init__(self, upstream: int) -> None:
        self.attempts: list[str] = []
        self._upstream = grpc.aio.insecure_channel(f"127.0.0.1:{upstream}")
        self._failed_once = False
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((self,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method  # type: ignore[attr-defined]

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.attempts.append(method.rsplit("/", 1)[1])
            if not self._failed_once:
                self._failed_once = True
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the network dropped it")
            self._failed_once = False
            forward = self._upstream.unary_unary(method)
            metadata = [(k, v) for k, v in context.invocation_metadata() or () if k == "authorization"]
            try:
                return await forward(request, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
                raise

        return grpc.unary_unary_rpc_method_handler(handle)

    async def close(self) -> None:
        await self.server.stop(None)
        await self._upstream.close()


@pytest_asyncio.fixture
async def flaky(server: RunningServer) -> AsyncIterator[FlakyProxy]:
    proxy = FlakyProxy(server.port)
    await proxy.server.start()
    yield proxy
    await proxy.close()


async def test_ok_unavailable_retried_for_verify_key_and_replacements(flaky: FlakyProxy, admin: Caller) -> None:
    api = await admin.make_api(["a"])
    key, secret = await admin.make_key(api.id)
    async with keyscope.AsyncClient(f"127.0.0.1:{flaky.port}", root_key=admin.root_key) as through:
        replaced = await through.keys.SetPermissions(keyscope.SetPermissionsRequest(key_id=key.id, permissions=["a"]))
        answer = await through.keys.VerifyKey(keyscope.VerifyKeyRequest(key=secret, permissions="a"))
    assert list(replaced.permissions)[0].name == "a"
    assert answer.code == keyscope.VerifyKeyResponse.CODE_VALID
    assert flaky.attempts == ["SetPermissions", "SetPermissions", "VerifyKey", "VerifyKey"]


async def test_unavailable_not_retried_for_creations(flaky: FlakyProxy, admin: Caller) -> None:
    async with keyscope.AsyncClient(f"127.0.0.1:{flaky.port}", root_key=admin.root_key) as through:
        with pytest.raises(keyscope.Unavailable):
            await through.apis.CreateApi(keyscope.CreateApiRequest(name="once"))
    assert flaky.attempts == ["CreateApi"]
