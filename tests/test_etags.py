"""Optimistic concurrency: etags on APIs, keys and roles, and the RPCs that take one (AIP-154): those that change
a resource, and the deletions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio

from keyscope.v1 import apis_pb2, keys_pb2, permissions_pb2, roles_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

ABORTED = grpc.StatusCode.ABORTED


@dataclass(frozen=True)
class World:
    api_id: str
    key_id: str
    role_id: str


@pytest_asyncio.fixture
async def world(admin: Caller) -> World:
    api = await admin.make_api(["a", "b"])
    role = await admin.make_role(api.id, "r", ["a"])
    await admin.make_role(api.id, "r2", ["b"])
    for n in (1, 2, 3, 4):
        await admin.make_role(api.id, f"x{n}")
    key, _ = await admin.make_key(api.id, ["a", "q1", "q2", "q3", "q4"], ["r", "r2"])
    return World(api.id, key.id, role.id)


# RPC -> (read the resource's etag, send change number `n` with an etag and answer the resource's etag after).
# Every change differs from the one before it and from the world as the fixture made it.
Etag = Callable[[Caller, World], Awaitable[str]]
Change = Callable[[Caller, World, int, str], Awaitable[str]]


async def _api_etag(c: Caller, w: World) -> str:
    return (await c.get_api(w.api_id)).etag


async def _key_etag(c: Caller, w: World) -> str:
    return (await c.get_key(w.key_id)).etag


async def _role_etag(c: Caller, w: World) -> str:
    return (await c.get_role(w.role_id)).etag


async def _update_scopes(c: Caller, w: World, n: int, etag: str) -> str:
    scopes = [permissions_pb2.Scope(value="a"), permissions_pb2.Scope(value=f"s{n}")]
    request = apis_pb2.UpdateScopesRequest(api_id=w.api_id, scopes=scopes, etag=etag)
    return (await c.apis.UpdateScopes(request, metadata=c.md)).api.etag


async def _set_permissions(c: Caller, w: World, n: int, etag: str) -> str:
    request = keys_pb2.SetPermissionsRequest(key_id=w.key_id, permissions=["a", f"p{n}"], etag=etag)
    return (await c.keys.SetPermissions(request, metadata=c.md)).etag


async def _set_roles(c: Caller, w: World, n: int, etag: str) -> str:
    request = keys_pb2.SetRolesRequest(key_id=w.key_id, roles=["r"] if n % 2 else ["r2"], etag=etag)
    return (await c.keys.SetRoles(request, metadata=c.md)).etag


async def _add_permissions(c: Caller, w: World, n: int, etag: str) -> str:
    request = keys_pb2.AddPermissionsRequest(key_id=w.key_id, permissions=[f"p{n}"], etag=etag)
    return (await c.keys.AddPermissions(request, metadata=c.md)).etag


async def _remove_permissions(c: Caller, w: World, n: int, etag: str) -> str:
    request = keys_pb2.RemovePermissionsRequest(key_id=w.key_id, permissions=[f"q{n}"], etag=etag)
    return (await c.keys.RemovePermissions(request, metadata=c.md)).etag


async def _add_roles(c: Caller, w: World, n: int, etag: str) -> str:
    request = keys_pb2.AddRolesRequest(key_id=w.key_id, roles=[f"x{n}"], etag=etag)
    return (await c.keys.AddRoles(request, metadata=c.md)).etag


async def _remove_roles(c: Caller, w: World, n: int, etag: str) -> str:
    request = keys_pb2.RemoveRolesRequest(key_id=w.key_id, roles=["r"] if n % 2 else ["r2"], etag=etag)
    return (await c.keys.RemoveRoles(request, metadata=c.md)).etag


async def _update_key(c: Caller, w: World, n: int, etag: str) -> str:
    request = keys_pb2.UpdateKeyRequest(key_id=w.key_id, name=f"name {n}", etag=etag)
    return (await c.keys.UpdateKey(request, metadata=c.md)).key.etag


async def _set_role_permissions(c: Caller, w: World, n: int, etag: str) -> str:
    request = roles_pb2.SetRolePermissionsRequest(role_id=w.role_id, permissions=["a", f"p{n}"], etag=etag)
    return (await c.roles.SetRolePermissions(request, metadata=c.md)).role.etag


RPCS: dict[str, tuple[str, Etag, Change]] = {
    "UpdateScopes": ("api", _api_etag, _update_scopes),
    "SetPermissions": ("key", _key_etag, _set_permissions),
    "SetRoles": ("key", _key_etag, _set_roles),
    "AddPermissions": ("key", _key_etag, _add_permissions),
    "RemovePermissions": ("key", _key_etag, _remove_permissions),
    "AddRoles": ("key", _key_etag, _add_roles),
    "RemoveRoles": ("key", _key_etag, _remove_roles),
    "UpdateKey": ("key", _key_etag, _update_key),
    "SetRolePermissions": ("role", _role_etag, _set_role_permissions),
}


# Deletions take an etag too, but answer none and cannot run twice: RPC -> (the kind of resource, the RPC of RPCS
# that changes it, delete it with an etag).
Delete = Callable[[Caller, World, str], Awaitable[object]]


async def _delete_api(c: Caller, w: World, etag: str) -> object:
    return await c.apis.DeleteApi(apis_pb2.DeleteApiRequest(api_id=w.api_id, etag=etag), metadata=c.md)


async def _delete_role(c: Caller, w: World, etag: str) -> object:
    return await c.roles.DeleteRole(roles_pb2.DeleteRoleRequest(role_id=w.role_id, etag=etag), metadata=c.md)


DELETIONS: dict[str, tuple[str, str, Delete]] = {
    "DeleteApi": ("api", "UpdateScopes", _delete_api),
    "DeleteRole": ("role", "SetRolePermissions", _delete_role),
}


def _resource_id(kind: str, w: World) -> str:
    return {"api": w.api_id, "key": w.key_id, "role": w.role_id}[kind]


# -- ok ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", RPCS)
async def test_ok_current_etag_is_accepted_and_replaced(admin: Caller, world: World, rpc: str) -> None:
    _, read, change = RPCS[rpc]
    first = await read(admin, world)

    second = await change(admin, world, 1, first)
    third = await change(admin, world, 2, second)

    assert len({first, second, third}) == 3
    assert await read(admin, world) == third


@pytest.mark.parametrize("rpc", RPCS)
async def test_ok_without_etag_the_last_write_wins(admin: Caller, world: World, rpc: str) -> None:
    _, read, change = RPCS[rpc]
    first = await change(admin, world, 1, "")
    second = await change(admin, world, 2, "")
    assert second != first
    assert await read(admin, world) == second


async def test_ok_removing_a_scope_changes_the_etags_of_the_keys_and_roles_holding_it(
    admin: Caller, world: World
) -> None:
    key_before, role_before = await _key_etag(admin, world), await _role_etag(admin, world)
    request = apis_pb2.UpdateScopesRequest(api_id=world.api_id, scopes=[permissions_pb2.Scope(value="b")])
    await admin.apis.UpdateScopes(request, metadata=admin.md)
    assert await _key_etag(admin, world) != key_before
    assert await _role_etag(admin, world) != role_before


@pytest.mark.parametrize("rpc", DELETIONS)
async def test_ok_deletion_with_the_current_etag(admin: Caller, world: World, rpc: str) -> None:
    _, changer, delete = DELETIONS[rpc]
    _, read, change = RPCS[changer]
    current = await change(admin, world, 1, await read(admin, world))

    await delete(admin, world, current)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read(admin, world)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


# -- aborted ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", RPCS)
async def test_aborted_stale_etag_changes_nothing_and_names_the_current_one(
    admin: Caller, world: World, store: Store, rpc: str
) -> None:
    kind, read, change = RPCS[rpc]
    stale = await read(admin, world)
    current = await change(admin, world, 1, "")

    error = await rejected(store, lambda: change(admin, world, 2, stale), ABORTED)

    info = error_info(error)
    assert (info.reason, info.metadata["etag"]) == ("ETAG_MISMATCH", current)
    assert resource_names(error) == [_resource_id(kind, world)]
    assert stale in (error.details() or "") and current in (error.details() or "")


@pytest.mark.parametrize("rpc", RPCS)
async def test_aborted_two_admins_with_the_same_etag_exactly_one_wins(admin: Caller, world: World, rpc: str) -> None:
    _, read, change = RPCS[rpc]
    etag = await read(admin, world)

    outcomes: list[Any] = await asyncio.gather(
        *(change(admin, world, n, etag) for n in (1, 2, 3, 4)), return_exceptions=True
    )

    won = [o for o in outcomes if isinstance(o, str)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 3
    assert {e.code() for e in lost} == {ABORTED}
    assert await read(admin, world) == won[0]


@pytest.mark.parametrize("rpc", DELETIONS)
async def test_aborted_deletion_with_a_stale_etag_deletes_nothing(
    admin: Caller, world: World, store: Store, rpc: str
) -> None:
    kind, changer, delete = DELETIONS[rpc]
    _, read, change = RPCS[changer]
    stale = await read(admin, world)
    current = await change(admin, world, 1, "")

    error = await rejected(store, lambda: delete(admin, world, stale), ABORTED)

    info = error_info(error)
    assert (info.reason, info.metadata["etag"]) == ("ETAG_MISMATCH", current)
    assert resource_names(error) == [_resource_id(kind, world)]
    assert await read(admin, world) == current


@pytest.mark.parametrize("rpc", DELETIONS)
async def test_aborted_a_change_and_a_deletion_with_the_same_etag_exactly_one_wins(
    admin: Caller, world: World, rpc: str
) -> None:
    _, changer, delete = DELETIONS[rpc]
    _, read, change = RPCS[changer]
    etag = await read(admin, world)

    changed, deleted = await asyncio.gather(
        change(admin, world, 1, etag), delete(admin, world, etag), return_exceptions=True
    )

    # The loser finds the etag changed (ABORTED), or the resource gone (NOT_FOUND).
    lost = [o for o in (changed, deleted) if isinstance(o, grpc.aio.AioRpcError)]
    assert len(lost) == 1 and lost[0].code() in (ABORTED, grpc.StatusCode.NOT_FOUND)
    if isinstance(changed, str):
        assert await read(admin, world) == changed
    else:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await read(admin, world)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


# -- invalid argument -------------------------------------------------------------------------------


MALFORMED_ETAGS = ["r 1", "x" * 65, "r1\x00", "é"]


@pytest.mark.parametrize("etag", MALFORMED_ETAGS)
@pytest.mark.parametrize("rpc", RPCS)
async def test_invalid_argument_malformed_etag(admin: Caller, world: World, store: Store, rpc: str, etag: str) -> None:
    _, _, change = RPCS[rpc]
    error = await rejected(store, lambda: change(admin, world, 1, etag), grpc.StatusCode.INVALID_ARGUMENT)
    assert "etag" in field_violations(error)


@pytest.mark.parametrize("etag", MALFORMED_ETAGS)
@pytest.mark.parametrize("rpc", DELETIONS)
async def test_invalid_argument_malformed_etag_of_a_deletion(
    admin: Caller, world: World, store: Store, rpc: str, etag: str
) -> None:
    _, _, delete = DELETIONS[rpc]
    error = await rejected(store, lambda: delete(admin, world, etag), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == ["etag"]
