"""SetPermissions: keys that do not exist, or that the caller may not see."""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import keys_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import rejected, resource_names
from tests.set_permissions.call import set_permissions

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


@pytest.mark.parametrize("key_id", ["key_doesnotexist0000", "k" * 64])
async def test_not_found_unknown_key(admin: Caller, store: Store, key_id: str) -> None:
    error = await rejected(store, lambda: set_permissions(admin, key_id, ["documents.read"]), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [key_id]


async def test_not_found_deleted_key(admin: Caller) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    await admin.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=key.id), metadata=admin.md)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_permissions(admin, key.id, [])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{other}.update_key", "api.{other}.read_key", "rbac.*.create_permission"],
        ["api.{api}.verify_key", "api.{api}.read_api", "api.{api}.update_api"],
        [],
    ],
    ids=["other-api", "cannot-read-keys", "nothing"],
)
async def test_not_found_key_the_caller_may_not_see(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([p.format(api=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await set_permissions(caller, key.id, ["documents.read"])
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await set_permissions(caller, "key_doesnotexist0000", ["documents.read"])

    # Indistinguishable from a key that does not exist, so ids cannot be probed.
    assert hidden.value.code() == missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.value.details() == missing.value.details().replace("key_doesnotexist0000", key.id)
    assert resource_names(hidden.value) == [key.id]
    assert await store.export_snapshot() == before


async def test_not_found_before_aborted_for_a_caller_that_may_not_see_the_key(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    # A stale etag is not checked for a key the caller may not see (moved here from tests/test_etags.py).
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a"])
    stranger = await make_caller(["api.api_other.*"])
    request = keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["a", "p1"], etag="r0")
    error = await rejected(
        store, lambda: stranger.keys.SetPermissions(request, metadata=stranger.md), grpc.StatusCode.NOT_FOUND
    )
    assert "etag" not in (error.details() or "")
