"""Every RPC x the root-key permission it needs, held rightly and wrongly: enough alone, or NOT_FOUND (a resource
the caller may not see) or PERMISSION_DENIED naming the permission, and nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import grpc
import pytest

from keyscope.v1 import keys_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.root_key_auth.every_rpc import (
    NOT_FOUND,
    OK,
    PERMISSION_DENIED,
    RESOURCE_RPCS,
    RPCS,
    UNKNOWN,
    Code,
    World,
    call,
    outcome,
)
from tests.rpc_errors import blanked_answer, error_info, rejected, request_id

pytestmark = pytest.mark.asyncio


# -- the matrix: every RPC x the permission it needs, held rightly and wrongly --------------------------

# The one root-key permission each RPC needs for the world's requests (all names are in the catalog). ListApis
# needs none to be called: it lists the APIs the caller may read, so what it needs is the permission that shows
# API A in the list (see _answer).
REQUIRED: dict[str, str] = {
    "CreateApi": "api.*.create_api",
    "GetApi": "api.{a}.read_api",
    "ListApis": "api.{a}.read_api",
    "ListPermissions": "api.{a}.read_api",
    "UpdateScopes": "api.{a}.update_api",
    "DeleteApi": "api.{a}.delete_api",
    "CreateKey": "api.{a}.create_key",
    "GetKey": "api.{a}.read_key",
    "ListKeys": "api.{a}.read_key",
    "UpdateKey": "api.{a}.update_key",
    "DeleteKey": "api.{a}.delete_key",
    "SetPermissions": "api.{a}.update_key",
    "AddPermissions": "api.{a}.update_key",
    "RemovePermissions": "api.{a}.update_key",
    "SetRoles": "api.{a}.update_key",
    "AddRoles": "api.{a}.update_key",
    "RemoveRoles": "api.{a}.update_key",
    "VerifyKey": "api.{a}.verify_key",
    "CreateRole": "rbac.{a}.create_role",
    "GetRole": "rbac.{a}.read_role",
    "ListRoles": "rbac.{a}.read_role",
    "SetRolePermissions": "rbac.{a}.update_role",
    "DeleteRole": "rbac.{a}.delete_role",
    "ListAuditEvents": "audit.{a}.read_events",
}
# What each way of holding it wrongly becomes: the required permission made into another.
WRONG_HOLDINGS: dict[str, Callable[[str], list[str]]] = {
    "none": lambda required: [],
    "for-another-api": lambda required: [required.replace("{a}", "{b}")],
    "wildcard-in-the-wrong-segment": lambda required: [".".join([required.split(".")[0], required.split(".")[2], "*"])],
    "another-verb": lambda required: [required.rsplit(".", 1)[0] + ".other_verb"],
}


def _refused(rpc: str) -> grpc.StatusCode | keys_pb2.VerifyKeyResponse.Code.ValueType:
    """How an RPC refuses a caller that may not do it: calls on no existing resource say PERMISSION_DENIED;
    on a resource the caller cannot see, NOT_FOUND (VerifyKey: the answer's code; ListApis: API A left out of
    the list, see _answer)."""
    if rpc == "VerifyKey":
        return Code.CODE_NOT_FOUND
    return PERMISSION_DENIED if rpc in ("CreateApi", "ListAuditEvents") else NOT_FOUND


async def _answer(
    caller: Caller, rpc: str, world: World
) -> grpc.StatusCode | keys_pb2.VerifyKeyResponse.Code.ValueType:
    if rpc == "VerifyKey":
        return (await call(caller, rpc, world)).code
    if rpc == "ListApis":
        # OK to every caller: an API the caller may not read is left out of the list, as if it did not exist.
        listed = [api.id for api in (await call(caller, rpc, world)).apis]
        return OK if world.a in listed else NOT_FOUND
    return await outcome(caller, rpc, world)


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_ok_matrix_the_required_permission_alone_is_enough(
    world: World, make_caller: MakeCaller, rpc: str
) -> None:
    caller = await make_caller([REQUIRED[rpc].format(a=world.a)])
    assert await _answer(caller, rpc, world) == (Code.CODE_VALID if rpc == "VerifyKey" else OK)


# (CreateApi's permission names no API, so it has no "for another API" case.)
WRONGLY_HELD = [
    (rpc, holding)
    for rpc in RPCS
    for holding in WRONG_HOLDINGS
    if not (holding == "for-another-api" and "{a}" not in REQUIRED[rpc])
]


@pytest.mark.parametrize(("rpc", "holding"), WRONGLY_HELD, ids=[f"{rpc}-{holding}" for rpc, holding in WRONGLY_HELD])
async def test_not_found_or_denied_matrix_the_required_permission_held_wrongly(
    world: World, make_caller: MakeCaller, store: Store, rpc: str, holding: str
) -> None:
    held = [p.format(a=world.a, b=world.b) for p in WRONG_HOLDINGS[holding](REQUIRED[rpc])]
    caller = await make_caller(held)
    before = await store.export_snapshot()
    assert await _answer(caller, rpc, world) == _refused(rpc)
    assert await store.export_snapshot() == before


async def test_the_matrix_covers_every_rpc() -> None:
    assert set(REQUIRED) == set(RPCS)


# -- another API's permissions: not found -----------------------------------------------------------


@pytest.mark.parametrize("rpc", RESOURCE_RPCS)
async def test_not_found_with_every_permission_on_another_api(
    world: World, make_caller: MakeCaller, store: Store, rpc: str
) -> None:
    caller = await make_caller([f"api.{world.b}.*", f"rbac.{world.b}.*"])
    before = await store.export_snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await call(caller, rpc, world)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await call(caller, rpc, replace(UNKNOWN, b=world.b))

    assert hidden.value.code() == NOT_FOUND
    # Word for word what a resource that does not exist answers: ids cannot be probed.
    assert blanked_answer(hidden.value, *world.ids) == blanked_answer(unknown.value, *UNKNOWN.ids)
    assert await store.export_snapshot() == before


async def test_not_found_verify_key_of_another_api_says_nothing_about_the_key(
    world: World, make_caller: MakeCaller
) -> None:
    caller = await make_caller([f"api.{world.b}.*", f"rbac.{world.b}.*"])
    hidden = await call(caller, "VerifyKey", world)
    unknown = await call(caller, "VerifyKey", UNKNOWN)
    assert hidden.code == Code.CODE_NOT_FOUND
    assert hidden == unknown == keys_pb2.VerifyKeyResponse(valid=False, code=Code.CODE_NOT_FOUND)


# -- the wrong permission on an API one may read: permission denied ---------------------------------


DENIALS: list[tuple[list[str], str, str]] = [
    ([], "CreateApi", "api.*.create_api"),
    (["api.{a}.read_api"], "UpdateScopes", "api.{a}.update_api"),
    (["api.{a}.read_api"], "DeleteApi", "api.{a}.delete_api"),
    (["api.{a}.read_api", "api.{a}.update_api", "api.{b}.delete_api"], "DeleteApi", "api.{a}.delete_api"),
    (["api.{a}.read_api"], "ListKeys", "api.{a}.read_key"),
    (["api.{a}.read_api"], "CreateKey", "api.{a}.create_key"),
    (["api.{a}.read_key"], "CreateKey", "api.{a}.create_key"),
    (["api.{a}.read_key"], "UpdateKey", "api.{a}.update_key"),
    (["api.{a}.read_key"], "DeleteKey", "api.{a}.delete_key"),
    (["api.{a}.read_key", "api.{a}.delete_key"], "SetPermissions", "api.{a}.update_key"),
    (["api.*.read_key", "api.{b}.update_key"], "SetRoles", "api.{a}.update_key"),
    (["api.{a}.read_api"], "CreateRole", "rbac.{a}.create_role"),
    (["rbac.{a}.read_role"], "CreateRole", "rbac.{a}.create_role"),
    (["rbac.{a}.read_role", "rbac.{a}.create_role"], "SetRolePermissions", "rbac.{a}.update_role"),
    (["api.{a}.read_api"], "ListRoles", "rbac.{a}.read_role"),
    (["rbac.{a}.read_role"], "DeleteRole", "rbac.{a}.delete_role"),
    (["rbac.{a}.read_role", "rbac.{a}.update_role", "api.{a}.delete_api"], "DeleteRole", "rbac.{a}.delete_role"),
    (["api.{a}.*", "rbac.{a}.*"], "ListAuditEvents", "audit.{a}.read_events"),
    (["audit.{b}.read_events"], "ListAuditEvents", "audit.{a}.read_events"),
]


@pytest.mark.parametrize(("held", "rpc", "required"), DENIALS, ids=[f"{rpc}-{'+'.join(h)}" for h, rpc, _ in DENIALS])
async def test_permission_denied_names_the_missing_permission(
    world: World, make_caller: MakeCaller, store: Store, held: list[str], rpc: str, required: str
) -> None:
    caller = await make_caller([p.format(a=world.a, b=world.b) for p in held])
    error = await rejected(store, lambda: call(caller, rpc, world), PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.domain) == ("MISSING_PERMISSION", "keyscope.v1")
    assert info.metadata["permission"] == required.format(a=world.a)
    assert request_id(error)
