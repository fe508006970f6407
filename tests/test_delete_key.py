"""KeyService.DeleteKey: the key is gone for good, for every RPC; its API, catalog and roles stay."""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import keys_pb2
from keyscope_server.store import Store
from tests.client import INVALID_KEY_IDS, Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def _delete(caller: Caller, key_id: str) -> keys_pb2.DeleteKeyResponse:
    return await caller.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=key_id), metadata=caller.md)


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_key_is_gone(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, ["a"])
    before = await store.revision()

    deleted = await _delete(admin, key.id)

    assert deleted.revision == before + 1 == await store.revision()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.get_key(key.id)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert await admin.verify(secret) == keys_pb2.VerifyKeyResponse(valid=False, code=Code.CODE_NOT_FOUND)


async def test_ok_grants_go_but_catalog_roles_and_other_keys_stay(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    role = await admin.make_role(api.id, "reader", ["a"])
    key, _ = await admin.make_key(api.id, ["a"], ["reader"])
    _, other_secret = await admin.make_key(api.id, ["a"], ["reader"])

    await _delete(admin, key.id)

    held = await store.export_snapshot()
    assert key.id not in {row.id for row in held.keys}
    assert not [link for link in (*held.key_permissions, *held.key_roles) if link[0] == key.id]
    assert await admin.get_api(api.id) == api
    assert await admin.get_role(role.id) == role
    answer = await admin.verify(other_secret, "a")
    assert (answer.code, list(answer.roles)) == (Code.CODE_VALID, ["reader"])


async def test_ok_caller_with_delete_key_only(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.delete_key"])

    await _delete(caller, key.id)

    assert (await admin.verify(secret)).code == Code.CODE_NOT_FOUND


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize("key_id", INVALID_KEY_IDS)
async def test_invalid_argument_key_id(admin: Caller, store: Store, key_id: str) -> None:
    api = await admin.make_api()
    await admin.make_key(api.id)
    error = await rejected(store, lambda: _delete(admin, key_id), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == ["key_id"]


# -- permission denied ---------------------------------------------------------------------------------


async def test_permission_denied_without_delete_key(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.read_key", f"api.{api.id}.update_key"])
    error = await rejected(store, lambda: _delete(caller, key.id), grpc.StatusCode.PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"api.{api.id}.delete_key")


# -- not found ---------------------------------------------------------------------------------------


async def test_not_found_unknown_key(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _delete(admin, "key_does_not_exist"), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["key_does_not_exist"]


async def test_not_found_deleting_twice(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    await _delete(admin, key.id)
    error = await rejected(store, lambda: _delete(admin, key.id), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [key.id]


async def test_not_found_key_of_another_api(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    own, other = await admin.make_api(), await admin.make_api()
    key, secret = await admin.make_key(other.id)
    caller = await make_caller([f"api.{own.id}.delete_key", f"api.{own.id}.read_key", f"api.{other.id}.verify_key"])
    before = await store.export_snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _delete(caller, key.id)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _delete(caller, "key_does_not_exist")

    # As if the key did not exist, so key ids cannot be probed.
    assert e.value.code() == unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == unknown.value.details().replace("key_does_not_exist", key.id)
    assert await store.export_snapshot() == before
    assert (await admin.verify(secret)).code == Code.CODE_VALID
