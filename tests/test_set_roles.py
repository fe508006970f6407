"""KeyService.SetRoles: replace all roles of a key at once; unknown roles change nothing; direct permissions stay."""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import keys_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def _set_roles(caller: Caller, key_id: str, roles: list[str]) -> keys_pb2.SetRolesResponse:
    return await caller.keys.SetRoles(keys_pb2.SetRolesRequest(key_id=key_id, roles=roles), metadata=caller.md)


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_assigns_roles(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    writer = await admin.make_role(api.id, "writer", ["documents.write"])
    auditor = await admin.make_role(api.id, "auditor", ["audit.read"])
    key, secret = await admin.make_key(api.id)
    before = await store.revision()

    response = await _set_roles(admin, key.id, ["writer", "auditor"])

    assert list(response.roles) == [auditor, writer]  # ordered by name, each with its permissions
    assert response.revision == before + 1 == await store.revision()
    assert list((await admin.get_key(key.id)).roles) == [auditor, writer]
    answer = await admin.verify(secret, "documents.write AND audit.read")
    assert (answer.code, list(answer.roles)) == (Code.CODE_VALID, ["auditor", "writer"])


async def test_ok_replaces_every_role(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    writer = await admin.make_role(api.id, "writer", ["documents.write"])
    key, secret = await admin.make_key(api.id, roles=["reader"])

    response = await _set_roles(admin, key.id, ["writer"])

    assert list(response.roles) == [writer]
    assert list((await admin.verify(secret, "documents.read")).missing_permissions) == ["documents.read"]


async def test_ok_empty_list_removes_every_role(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    await admin.make_role(api.id, "writer", ["documents.write"])
    key, secret = await admin.make_key(api.id, roles=["reader", "writer"])

    response = await _set_roles(admin, key.id, [])

    assert list(response.roles) == []
    assert list((await admin.get_key(key.id)).roles) == []
    assert list((await admin.verify(secret)).roles) == []


async def test_ok_duplicates_count_once(admin: Caller) -> None:
    api = await admin.make_api()
    reader = await admin.make_role(api.id, "reader")

    key, _ = await admin.make_key(api.id)
    response = await _set_roles(admin, key.id, ["reader", "reader", "reader"])

    assert list(response.roles) == [reader]


async def test_ok_direct_permissions_untouched(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id, ["billing.read", "documents.read"])

    await _set_roles(admin, key.id, ["reader"])
    await _set_roles(admin, key.id, [])

    assert list((await admin.get_key(key.id)).permissions) == list(key.permissions)
    assert list((await admin.verify(secret)).permissions) == ["billing.read", "documents.read"]


@pytest.mark.parametrize("roles", [["reader", "writer"], ["writer", "reader", "writer"]])
async def test_ok_same_roles_again_bump_nothing(admin: Caller, store: Store, roles: list[str]) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    await admin.make_role(api.id, "writer")
    key, _ = await admin.make_key(api.id, roles=["reader", "writer"])
    revision = await store.revision()
    before = await store.export_snapshot()

    response = await _set_roles(admin, key.id, roles)

    assert response.revision == revision
    assert [r.name for r in response.roles] == ["reader", "writer"]
    assert await store.export_snapshot() == before


async def test_ok_empty_list_on_a_key_without_roles_bumps_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    before = await store.export_snapshot()

    response = await _set_roles(admin, key.id, [])

    assert response.revision == await store.revision()
    assert await store.export_snapshot() == before


async def test_ok_caller_with_update_key_only(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.update_key"])

    response = await _set_roles(caller, key.id, ["reader"])

    assert [r.name for r in response.roles] == ["reader"]


async def test_ok_role_names_up_to_64_characters(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "r" * 64)
    key, _ = await admin.make_key(api.id)

    response = await _set_roles(admin, key.id, ["r" * 64])

    assert [r.name for r in response.roles] == ["r" * 64]


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_id", "roles", "field"),
    [
        ("", [], "key_id"),
        ("key-1", [], "key_id"),
        ("key_" + "a" * 61, [], "key_id"),
        (None, [""], "roles[0]"),
        (None, ["reader", "not ok"], "roles[1]"),
        (None, ["r" * 65], "roles[0]"),
        (None, ["docs.*"], "roles[0]"),  # role names allow no wildcard
        (None, ["rôle"], "roles[0]"),
        (None, [f"r{i}" for i in range(1001)], "roles"),
    ],
    ids=[
        "empty key_id",
        "key_id with dash",
        "long key_id",
        "empty role",
        "role with space",
        "long role",
        "wildcard role",
        "non-ascii role",
        "1001 roles",
    ],
)
async def test_invalid_argument(admin: Caller, store: Store, key_id: str | None, roles: list[str], field: str) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    key, _ = await admin.make_key(api.id)
    error = await rejected(
        store,
        lambda: _set_roles(admin, key.id if key_id is None else key_id, roles),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field in field_violations(error)


# -- permission denied ---------------------------------------------------------------------------------


async def test_permission_denied_without_update_key(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    key, _ = await admin.make_key(api.id)
    # Rights over roles do not stand in for update_key.
    caller = await make_caller([f"api.{api.id}.read_key", f"rbac.{api.id}.update_role", f"rbac.{api.id}.read_role"])
    error = await rejected(store, lambda: _set_roles(caller, key.id, ["reader"]), grpc.StatusCode.PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"api.{api.id}.update_key")


# -- not found ---------------------------------------------------------------------------------------


async def test_not_found_unknown_roles_change_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    await admin.make_role(api.id, "writer")
    key, _ = await admin.make_key(api.id, roles=["writer"])
    error = await rejected(
        store, lambda: _set_roles(admin, key.id, ["ghost", "reader", "phantom", "ghost"]), grpc.StatusCode.NOT_FOUND
    )
    assert resource_names(error) == ["ghost", "phantom"]  # in request order, once each
    assert [r.name for r in (await admin.get_key(key.id)).roles] == ["writer"]


async def test_not_found_role_of_another_api(admin: Caller, store: Store) -> None:
    api, other = await admin.make_api(), await admin.make_api()
    await admin.make_role(api.id, "writer")
    await admin.make_role(other.id, "reader")
    key, _ = await admin.make_key(api.id)
    error = await rejected(store, lambda: _set_roles(admin, key.id, ["writer", "reader"]), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["reader"]


async def test_not_found_unknown_key(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _set_roles(admin, "key_does_not_exist", []), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["key_does_not_exist"]


async def test_not_found_key_of_another_api(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    own, other = await admin.make_api(), await admin.make_api()
    await admin.make_role(other.id, "reader")
    key, _ = await admin.make_key(other.id)
    caller = await make_caller([f"api.{own.id}.update_key", f"api.{own.id}.read_key", f"rbac.{other.id}.read_role"])
    before = await store.export_snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _set_roles(caller, key.id, ["reader"])
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _set_roles(caller, "key_does_not_exist", ["reader"])

    # As if the key did not exist, so key ids cannot be probed.
    assert e.value.code() == unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(e.value) == [key.id]
    assert e.value.details() == unknown.value.details().replace("key_does_not_exist", key.id)
    assert await store.export_snapshot() == before
