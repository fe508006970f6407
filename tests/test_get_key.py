"""KeyService.GetKey: a key with its direct permissions and its roles listed apart, never its secret."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from keyscope.v1 import keys_pb2
from server.cli import EXAMPLE_ROOT_KEY
from server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from server.store import SqliteStore
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import field_violations, resource_names
from tests.store_snapshot import snapshot

pytestmark = pytest.mark.asyncio


async def _get(caller: Caller, key_id: str) -> keys_pb2.Key:
    return (await caller.keys.GetKey(keys_pb2.GetKeyRequest(key_id=key_id), metadata=caller.md)).key


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_same_key_as_created(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    expiry = Timestamp(seconds=int(time.time()) + 3600)
    created, _ = await admin.make_key(api.id, ["billing.read"], ["reader"], name="ci", prefix="sk",
                                      expire_time=expiry, enabled=False)

    key = await _get(admin, created.id)

    assert key == created
    assert (key.api_id, key.name, key.enabled, key.expire_time) == (api.id, "ci", False, expiry)


async def test_ok_direct_permissions_and_roles_listed_apart(admin: Caller) -> None:
    api = await admin.make_api([("documents.read", "Read documents")])
    await admin.make_role(api.id, "writer", ["documents.write", "documents.read"])
    await admin.make_role(api.id, "auditor", ["audit.read"])
    created, _ = await admin.make_key(api.id, ["zeta", "documents.read"], ["writer", "auditor"])

    key = await _get(admin, created.id)

    # Direct only, ordered by name, with the catalog's ids and descriptions.
    assert [(p.id, p.name, p.description) for p in key.permissions] == [
        (api.scopes[0].id, "documents.read", "Read documents"), (key.permissions[1].id, "zeta", "")]
    # Roles ordered by name, each with what it grants, ordered by name.
    assert [(r.name, [p.name for p in r.permissions]) for r in key.roles] == [
        ("auditor", ["audit.read"]), ("writer", ["documents.read", "documents.write"])]
    assert all(r.api_id == api.id and r.id.startswith("role_") for r in key.roles)


async def test_ok_never_returns_the_secret(admin: Caller) -> None:
    api = await admin.make_api()
    created, secret = await admin.make_key(api.id, prefix="sk_test")

    key = await _get(admin, created.id)

    assert secret.encode() not in key.SerializeToString()
    assert key.start == secret[:len("sk_test_") + 4]


async def test_ok_caller_with_read_key_only(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api()
    created, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.read_key"])

    assert await _get(caller, created.id) == created


async def test_ok_reading_changes_nothing(admin: Caller, db_path: Path) -> None:
    api = await admin.make_api()
    created, _ = await admin.make_key(api.id, ["a"])
    before = snapshot(db_path)

    await _get(admin, created.id)

    assert snapshot(db_path) == before


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize("key_id", ["", "key-1", "key 1", "key_é", "key_" + "a" * 61])
async def test_invalid_argument_key_id(admin: Caller, key_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _get(admin, key_id)

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(e.value)) == ["key_id"]


# -- unauthenticated ----------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [
    (),
    (("authorization", "Basic dXNlcjpwYXNz"),),
    (("authorization", "Bearer"),),
    (("authorization", "Bearer two tokens"),),
    (("authorization", "Bearer ksroot_unknown0123456789"),),
], ids=["missing", "basic", "no token", "two tokens", "unknown root key"])
async def test_unauthenticated_metadata(admin: Caller, metadata: tuple[tuple[str, str], ...]) -> None:
    api = await admin.make_api()
    created, _ = await admin.make_key(api.id)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.keys.GetKey(keys_pb2.GetKeyRequest(key_id=created.id), metadata=metadata)

    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("how", ["disabled", "expired", "deleted"])
async def test_unauthenticated_root_key_no_longer_usable(
        admin: Caller, store: SqliteStore, channel: grpc.aio.Channel, make_caller: MakeCaller, how: str) -> None:
    api = await admin.make_api()
    created, _ = await admin.make_key(api.id)
    caller = await _unusable_caller(how, store, channel, make_caller)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _get(caller, created.id)

    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def _unusable_caller(how: str, store: SqliteStore, channel: grpc.aio.Channel,
                           make_caller: MakeCaller) -> Caller:
    """A caller whose root key holds every permission but is disabled, expired or deleted."""
    if how == "expired":
        secret = new_secret(ROOT_KEY_PREFIX)
        record = await store.create_root_key("expired", hash_secret(secret), EXAMPLE_ROOT_KEY,
                                             expires_ms=int(time.time() * 1000) - 60_000)
        return Caller(channel, secret, record.id)
    caller = await make_caller(EXAMPLE_ROOT_KEY)
    if how == "disabled":
        await store.set_root_key_enabled(caller.root_key_id, False)
    else:
        await store.delete_root_key(caller.root_key_id)
    return caller


# -- not found ---------------------------------------------------------------------------------------
# GetKey has no PERMISSION_DENIED: read_key is both what it needs and what makes a key visible.


async def test_not_found_unknown_key(admin: Caller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _get(admin, "key_does_not_exist")

    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(e.value) == ["key_does_not_exist"]


@pytest.mark.parametrize("permissions", [
    ["api.{own}.read_key"],  # scoped to another API
    [p for p in EXAMPLE_ROOT_KEY if p != "api.*.read_key"],  # everything on the key's API but read_key
])
async def test_not_found_key_the_caller_may_not_read(
        admin: Caller, make_caller: MakeCaller, permissions: list[str]) -> None:
    own, other = await admin.make_api(), await admin.make_api()
    created, _ = await admin.make_key(other.id)
    caller = await make_caller([p.format(own=own.id) for p in permissions])

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _get(caller, created.id)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _get(caller, "key_does_not_exist")

    # As if the key did not exist, so key ids cannot be probed.
    assert e.value.code() == unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(e.value) == [created.id]
    assert e.value.details() == unknown.value.details().replace("key_does_not_exist", created.id)


async def test_not_found_deleted_key(admin: Caller) -> None:
    api = await admin.make_api()
    created, _ = await admin.make_key(api.id)
    await admin.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=created.id), metadata=admin.md)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _get(admin, created.id)

    assert e.value.code() == grpc.StatusCode.NOT_FOUND
