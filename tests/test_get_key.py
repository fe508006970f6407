"""KeyService.GetKey: a key with its direct permissions and its roles listed apart, never its secret."""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import keys_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.store import Store
from tests.client import INVALID_KEY_IDS, Caller, from_now
from tests.conftest import MakeCaller
from tests.rpc_errors import field_violations, resource_names

pytestmark = pytest.mark.asyncio


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_same_key_as_created(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    expiry = from_now(3600)
    created, _ = await admin.make_key(
        api.id, ["billing.read"], ["reader"], name="ci", prefix="sk", expire_time=expiry, enabled=False
    )

    key = await admin.get_key(created.id)

    assert key == created
    assert (key.api_id, key.name, key.enabled, key.expire_time) == (api.id, "ci", False, expiry)


async def test_ok_direct_permissions_and_roles_listed_apart(admin: Caller) -> None:
    api = await admin.make_api([("documents.read", "Read documents")])
    await admin.make_role(api.id, "writer", ["documents.write", "documents.read"])
    await admin.make_role(api.id, "auditor", ["audit.read"])
    created, _ = await admin.make_key(api.id, ["zeta", "documents.read"], ["writer", "auditor"])

    key = await admin.get_key(created.id)

    # Direct only, ordered by name, with the catalog's ids and descriptions.
    assert [(p.id, p.name, p.description) for p in key.permissions] == [
        (api.scopes[0].id, "documents.read", "Read documents"),
        (key.permissions[1].id, "zeta", ""),
    ]
    # Roles ordered by name, each with what it grants, ordered by name.
    assert [(r.name, [p.name for p in r.permissions]) for r in key.roles] == [
        ("auditor", ["audit.read"]),
        ("writer", ["documents.read", "documents.write"]),
    ]
    assert all(r.api_id == api.id and r.id.startswith("role_") for r in key.roles)


async def test_ok_never_returns_the_secret(admin: Caller) -> None:
    api = await admin.make_api()
    created, secret = await admin.make_key(api.id, prefix="sk_test")

    key = await admin.get_key(created.id)

    assert secret.encode() not in key.SerializeToString()
    assert key.start == secret[: len("sk_test_") + 4]


async def test_ok_caller_with_read_key_only(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api()
    created, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.read_key"])

    assert await caller.get_key(created.id) == created


async def test_ok_reading_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    created, _ = await admin.make_key(api.id, ["a"])
    before = await store.export_snapshot()

    await admin.get_key(created.id)

    assert await store.export_snapshot() == before


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize("key_id", INVALID_KEY_IDS)
async def test_invalid_argument_key_id(admin: Caller, key_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.get_key(key_id)

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(e.value)) == ["key_id"]


# -- not found ---------------------------------------------------------------------------------------
# GetKey has no PERMISSION_DENIED: read_key is both what it needs and what makes a key visible.


async def test_not_found_unknown_key(admin: Caller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.get_key("key_does_not_exist")

    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(e.value) == ["key_does_not_exist"]


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{own}.read_key"],  # scoped to another API
        [p for p in EXAMPLE_ROOT_KEY if p != "api.*.read_key"],  # everything on the key's API but read_key
    ],
)
async def test_not_found_key_the_caller_may_not_read(
    admin: Caller, make_caller: MakeCaller, permissions: list[str]
) -> None:
    own, other = await admin.make_api(), await admin.make_api()
    created, _ = await admin.make_key(other.id)
    caller = await make_caller([p.format(own=own.id) for p in permissions])

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await caller.get_key(created.id)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await caller.get_key("key_does_not_exist")

    # As if the key did not exist, so key ids cannot be probed.
    assert e.value.code() == unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(e.value) == [created.id]
    assert e.value.details() == unknown.value.details().replace("key_does_not_exist", created.id)


async def test_not_found_deleted_key(admin: Caller) -> None:
    api = await admin.make_api()
    created, _ = await admin.make_key(api.id)
    await admin.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=created.id), metadata=admin.md)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.get_key(created.id)

    assert e.value.code() == grpc.StatusCode.NOT_FOUND
