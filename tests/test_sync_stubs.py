"""Internal callers use the *sync* stubs. pytest-grpc's fixtures give them a channel to our real async server.

pytest-grpc builds a sync grpc.server, which cannot run async servicers, so this
module overrides its `grpc_addr` and `grpc_server` fixtures: our server runs on
its own event loop in a background thread, over a real SQLite file. The rest
(`grpc_create_channel`, `grpc_channel`, `grpc_stub`) is the plugin's, unchanged.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from keyscope.v1 import apis_pb2, apis_pb2_grpc, keys_pb2, keys_pb2_grpc
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.factory import RunningServer, ServerConfig, start_server
from keyscope_server.store import Store, open_store
from tests.loop_thread import LoopThread
from tests.rpc_errors import field_violations, request_id

T = TypeVar("T")
Code = keys_pb2.VerifyKeyResponse.Code


class BackgroundServer:
    """Keyscope's async server on an event loop of its own thread, driven from synchronous code."""

    def __init__(self, db_path: Path) -> None:
        self._loop = LoopThread("keyscope-server")
        self.store: Store = self.run(open_store(str(db_path)))
        self.running: RunningServer = self.run(start_server(self.store, ServerConfig(host="127.0.0.1", port=0)))
        self.admin_secret = new_secret(ROOT_KEY_PREFIX)
        self.run(self.store.create_root_key("sync admin", hash_secret(self.admin_secret), EXAMPLE_ROOT_KEY))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coroutine, timeout=30)

    def close(self) -> None:
        try:
            self.run(self.running.stop(5))
            self.run(self.store.close())
        finally:
            self._loop.close()


@pytest.fixture(scope="module")
def background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    server = BackgroundServer(tmp_path_factory.mktemp("sync_stubs") / "keyscope.db")
    yield server
    server.close()


@pytest.fixture(scope="module")
def grpc_addr(background: BackgroundServer) -> str:
    return f"127.0.0.1:{background.running.port}"


@pytest.fixture(scope="module")
def grpc_server(background: BackgroundServer) -> RunningServer:
    return background.running


@pytest.fixture(scope="module")
def grpc_stub_cls() -> type[keys_pb2_grpc.KeyServiceStub]:
    return keys_pb2_grpc.KeyServiceStub


@pytest.fixture(scope="module")
def md(background: BackgroundServer) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {background.admin_secret}"),)


@pytest.fixture(scope="module")
def apis(grpc_channel: grpc.Channel) -> apis_pb2_grpc.ApiServiceStub:
    return apis_pb2_grpc.ApiServiceStub(grpc_channel)


def test_ok_create_api_key_set_permissions_verify(
    grpc_stub: keys_pb2_grpc.KeyServiceStub, apis: apis_pb2_grpc.ApiServiceStub, md: tuple[tuple[str, str], ...]
) -> None:
    api = apis.CreateApi(apis_pb2.CreateApiRequest(name="sync"), metadata=md).api
    created = grpc_stub.CreateKey(keys_pb2.CreateKeyRequest(api_id=api.id), metadata=md)
    assert created.secret

    response = grpc_stub.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=created.key.id, permissions=["documents.read", "documents.write"]),
        metadata=md,
    )
    assert [p.name for p in response.permissions] == ["documents.read", "documents.write"]
    assert [p.name for p in response.created_permissions] == ["documents.read", "documents.write"]

    verified = grpc_stub.VerifyKey(
        keys_pb2.VerifyKeyRequest(key=created.secret, permissions="documents.read AND documents.write"), metadata=md
    )
    assert (verified.valid, verified.code, verified.key_id) == (True, Code.CODE_VALID, created.key.id)
    denied = grpc_stub.VerifyKey(
        keys_pb2.VerifyKeyRequest(key=created.secret, permissions="documents.read AND documents.delete"), metadata=md
    )
    assert (denied.valid, denied.code) == (False, Code.CODE_INSUFFICIENT_PERMISSIONS)
    assert list(denied.missing_permissions) == ["documents.delete"]


def test_ok_request_id_with_call(
    grpc_stub: keys_pb2_grpc.KeyServiceStub, apis: apis_pb2_grpc.ApiServiceStub, md: tuple[tuple[str, str], ...]
) -> None:
    api = apis.CreateApi(apis_pb2.CreateApiRequest(name="sync"), metadata=md).api
    key = grpc_stub.CreateKey(keys_pb2.CreateKeyRequest(api_id=api.id), metadata=md).key
    _, call = grpc_stub.GetKey.with_call(
        keys_pb2.GetKeyRequest(key_id=key.id), metadata=(*md, ("x-request-id", "sync-1"))
    )
    assert ("x-request-id", "sync-1") in call.trailing_metadata()


def test_unauthenticated_sync_error(grpc_stub: keys_pb2_grpc.KeyServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as e:
        grpc_stub.GetKey(
            keys_pb2.GetKeyRequest(key_id="key_1"),
            metadata=(("authorization", "Bearer ksroot_nope"), ("x-request-id", "sync-2")),
        )
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    # Rich details read the same from a sync error as from an async one.
    assert request_id(e.value) == "sync-2"  # type: ignore[arg-type]


def test_invalid_argument_sync_error(grpc_stub: keys_pb2_grpc.KeyServiceStub, md: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(grpc.RpcError) as e:
        grpc_stub.SetPermissions(
            keys_pb2.SetPermissionsRequest(key_id="key_1", permissions=["ok", "not ok"]), metadata=md
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert field_violations(e.value) == {"permissions[1]": r"must match ^[a-zA-Z0-9_:\-\.\*]+$"}  # type: ignore[arg-type]


def test_not_found_sync_error(grpc_stub: keys_pb2_grpc.KeyServiceStub, md: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(grpc.RpcError) as e:
        grpc_stub.GetKey(keys_pb2.GetKeyRequest(key_id="key_doesnotexist"), metadata=md)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_ok_many_threads_share_one_channel(
    grpc_stub: keys_pb2_grpc.KeyServiceStub, apis: apis_pb2_grpc.ApiServiceStub, md: tuple[tuple[str, str], ...]
) -> None:
    # Sync callers are threads: each sets and verifies its own key, all through the one module channel.
    api = apis.CreateApi(apis_pb2.CreateApiRequest(name="threads"), metadata=md).api

    def set_and_verify(index: int) -> tuple[int, list[str]]:
        created = grpc_stub.CreateKey(keys_pb2.CreateKeyRequest(api_id=api.id), metadata=md)
        name = f"thread.{index}"
        grpc_stub.SetPermissions(keys_pb2.SetPermissionsRequest(key_id=created.key.id, permissions=[name]), metadata=md)
        verified = grpc_stub.VerifyKey(keys_pb2.VerifyKeyRequest(key=created.secret, permissions=name), metadata=md)
        return verified.code, list(verified.permissions)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(set_and_verify, range(24)))
    assert results == [(Code.CODE_VALID, [f"thread.{i}"]) for i in range(24)]
