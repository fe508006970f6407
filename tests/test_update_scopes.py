"""ApiService.UpdateScopes: Auth0's `PATCH /api/v2/resource-servers/{id}` with `scopes` (seed 000) over gRPC."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest
from google.protobuf import json_format

from keyscope.v1 import apis_pb2, keys_pb2, permissions_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code
ScopeArg = str | tuple[str, str]


def scopes_of(entries: Sequence[ScopeArg]) -> list[permissions_pb2.Scope]:
    return [
        permissions_pb2.Scope(value=e) if isinstance(e, str) else permissions_pb2.Scope(value=e[0], description=e[1])
        for e in entries
    ]


async def update_scopes(
    caller: Caller, api_id: str, entries: Sequence[ScopeArg], metadata: Sequence[tuple[str, str]] | None = None
) -> apis_pb2.UpdateScopesResponse:
    return await caller.apis.UpdateScopes(
        apis_pb2.UpdateScopesRequest(api_id=api_id, scopes=scopes_of(entries)),
        metadata=caller.md if metadata is None else metadata,
    )


def values(api: apis_pb2.Api) -> list[str]:
    return [s.value for s in api.scopes]


# -- ok ---------------------------------------------------------------------------------------


async def test_ok_seed_json_body(admin: Caller) -> None:
    api = await admin.make_api(["write:users"])
    body = '{"apiId": "API_ID", "scopes": [{"value": "read:users", "description": "Read users"}]}'
    request = json_format.Parse(body.replace("API_ID", api.id), apis_pb2.UpdateScopesRequest())

    response = await admin.apis.UpdateScopes(request, metadata=admin.md)

    assert [(s.value, s.description) for s in response.api.scopes] == [("read:users", "Read users")]
    assert response.api.scopes[0].id.startswith("perm_")
    assert list(response.removed_scopes) == ["write:users"]
    assert response.api == await admin.get_api(api.id)


async def test_ok_scopes_not_in_the_request_are_removed(admin: Caller) -> None:
    api = await admin.make_api(["read:users", "write:users", "delete:users"])

    # The seed's PATCH body: two scopes, each a value and a description.
    response = await update_scopes(admin, api.id, [("read:users", "Read users"), ("create:users", "Create users")])

    assert [(s.value, s.description) for s in response.api.scopes] == [
        ("create:users", "Create users"),
        ("read:users", "Read users"),
    ]
    assert sorted(response.removed_scopes) == ["delete:users", "write:users"]
    assert values(await admin.get_api(api.id)) == ["create:users", "read:users"]


async def test_ok_empty_list_removes_every_scope_and_every_grant(admin: Caller) -> None:
    api = await admin.make_api(["read:users", "write:users"])
    role = await admin.make_role(api.id, "editor", ["write:users"])
    key, secret = await admin.make_key(api.id, ["read:users"], roles=["editor"])

    response = await update_scopes(admin, api.id, [])

    assert list(response.api.scopes) == []
    assert sorted(response.removed_scopes) == ["read:users", "write:users"]
    assert (response.keys_affected, response.roles_affected) == (1, 1)
    assert list((await admin.get_key(key.id)).permissions) == []
    assert list((await admin.get_role(role.id)).permissions) == []
    assert list((await admin.verify(secret)).permissions) == []


async def test_ok_kept_scope_keeps_its_id_and_takes_the_new_description(admin: Caller) -> None:
    api = await admin.make_api([("read:users", "old words"), ("write:users", "Write users")])
    ids = {s.value: s.id for s in api.scopes}
    key, secret = await admin.make_key(api.id, ["read:users"])

    response = await update_scopes(admin, api.id, [("read:users", "Read users"), ("write:users", "Write users")])

    assert [(s.id, s.value, s.description) for s in response.api.scopes] == [
        (ids["read:users"], "read:users", "Read users"),
        (ids["write:users"], "write:users", "Write users"),
    ]
    assert (list(response.removed_scopes), response.keys_affected, response.roles_affected) == ([], 0, 0)
    # The key's grant follows the entry: same id, new description.
    [held] = (await admin.get_key(key.id)).permissions
    assert (held.id, held.description) == (ids["read:users"], "Read users")
    assert (await admin.verify(secret, "read:users")).code == Code.CODE_VALID


async def test_ok_scope_ids_sent_in_the_request_are_ignored(admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    ids = {s.value: s.id for s in api.scopes}
    request = apis_pb2.UpdateScopesRequest(
        api_id=api.id,
        scopes=[
            permissions_pb2.Scope(id=ids["b"], value="a"),  # another entry's id
            permissions_pb2.Scope(id="perm_madeup", value="c"),
        ],
    )

    response = await admin.apis.UpdateScopes(request, metadata=admin.md)

    got = {s.value: s.id for s in response.api.scopes}
    assert got["a"] == ids["a"]
    assert got["c"] not in {"perm_madeup", ids["b"]}
    assert list(response.removed_scopes) == ["b"]


async def test_ok_scopes_are_ordered_by_value(admin: Caller) -> None:
    api = await admin.make_api()
    response = await update_scopes(admin, api.id, ["z", "a:b", "m.n", "A"])
    assert values(response.api) == ["A", "a:b", "m.n", "z"]


async def test_ok_removed_scope_leaves_every_key_and_role_of_the_api(admin: Caller) -> None:
    api = await admin.make_api(["keep", "drop.one", "drop.two"])
    both, _ = await admin.make_key(api.id, ["keep", "drop.one", "drop.two"])
    one, _ = await admin.make_key(api.id, ["drop.two"])
    untouched, _ = await admin.make_key(api.id, ["keep"])
    role = await admin.make_role(api.id, "dropper", ["drop.one", "drop.two", "keep"])
    await admin.make_role(api.id, "keeper", ["keep"])

    response = await update_scopes(admin, api.id, ["keep"])

    # A key or role that lost two scopes counts once; those that lost nothing do not count.
    assert (response.keys_affected, response.roles_affected) == (2, 1)
    assert sorted(response.removed_scopes) == ["drop.one", "drop.two"]
    assert [p.name for p in (await admin.get_key(both.id)).permissions] == ["keep"]
    assert [p.name for p in (await admin.get_key(one.id)).permissions] == []
    assert [p.name for p in (await admin.get_key(untouched.id)).permissions] == ["keep"]
    assert [p.name for p in (await admin.get_role(role.id)).permissions] == ["keep"]


async def test_ok_removal_shows_in_the_next_verify(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write", "documents.*", "admin"])
    await admin.make_role(api.id, "reader", ["documents.read"])
    _, direct_secret = await admin.make_key(api.id, ["documents.write", "admin"])
    _, role_secret = await admin.make_key(api.id, roles=["reader"])
    _, wildcard_secret = await admin.make_key(api.id, ["documents.*"])
    assert (await admin.verify(direct_secret, "documents.write AND admin")).code == Code.CODE_VALID

    await update_scopes(admin, api.id, ["admin"])

    answer = await admin.verify(direct_secret, "documents.write AND admin")
    assert (answer.code, list(answer.missing_permissions)) == (Code.CODE_INSUFFICIENT_PERMISSIONS, ["documents.write"])
    assert (await admin.verify(role_secret, "documents.read")).code == Code.CODE_INSUFFICIENT_PERMISSIONS
    assert (await admin.verify(role_secret)).roles == ["reader"]  # the role stays, emptied
    assert (await admin.verify(wildcard_secret, "documents.read")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


async def test_ok_other_apis_are_untouched(admin: Caller) -> None:
    api = await admin.make_api(["read:users", "write:users"])
    other = await admin.make_api(["read:users", "write:users"])
    await admin.make_role(other.id, "reader", ["read:users"])
    key, secret = await admin.make_key(other.id, ["write:users"], roles=["reader"])
    other_before = await admin.get_api(other.id)
    key_before = await admin.get_key(key.id)

    await update_scopes(admin, api.id, [])

    assert await admin.get_api(other.id) == other_before
    assert await admin.get_key(key.id) == key_before
    assert (await admin.verify(secret, "read:users AND write:users")).code == Code.CODE_VALID


async def test_ok_a_removed_scope_added_again_is_a_new_entry(admin: Caller) -> None:
    api = await admin.make_api(["read:users"])
    old_id = api.scopes[0].id
    key, secret = await admin.make_key(api.id, ["read:users"])

    await update_scopes(admin, api.id, [])
    response = await update_scopes(admin, api.id, ["read:users"])

    assert response.api.scopes[0].id != old_id
    assert (response.keys_affected, list(response.removed_scopes)) == (0, [])
    assert (await admin.verify(secret, "read:users")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


@pytest.mark.parametrize("update_api", ["api.*.update_api", "api.{api}.update_api"])
async def test_ok_caller_with_update_api(admin: Caller, make_caller: MakeCaller, update_api: str) -> None:
    api = await admin.make_api(["read:users"])
    caller = await make_caller([update_api.format(api=api.id)])
    response = await update_scopes(caller, api.id, ["write:users"])
    assert values(response.api) == ["write:users"]


async def test_ok_revision_grows_by_exactly_one(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b", "c"])
    for _ in range(3):
        await admin.make_key(api.id, ["a", "b"])
    await admin.make_role(api.id, "r", ["a"])
    before = await store.revision()

    # Removing, adding and redescribing, across keys and roles, is one change.
    first = await update_scopes(admin, api.id, [("c", "new words"), "d"])
    second = await update_scopes(admin, api.id, [("c", "newer words"), "d"])

    assert (first.revision, second.revision) == (before + 1, before + 2)


async def test_ok_unchanged_list_keeps_the_revision_and_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api([("a", "A"), ("b", "B")])
    await admin.make_key(api.id, ["a"])
    before = await store.export_snapshot()
    revision = await store.revision()

    response = await update_scopes(admin, api.id, [("b", "B"), ("a", "A")])

    assert response.revision == revision
    assert (list(response.removed_scopes), response.keys_affected, response.roles_affected) == ([], 0, 0)
    assert response.api.update_time == api.update_time
    assert await store.export_snapshot() == before


async def test_ok_boundaries(admin: Caller) -> None:
    api = await admin.make_api()
    longest, longest_description = "s" * 280, "d" * 500
    odd_but_valid = "Read:Users_v2-beta.*"

    response = await update_scopes(
        admin, api.id, [(longest, longest_description), (odd_but_valid, "tabs\tand\nnewlines are text")]
    )
    assert {s.value: s.description for s in response.api.scopes} == {
        longest: longest_description,
        odd_but_valid: "tabs\tand\nnewlines are text",
    }

    most = [f"scope.{i:04d}" for i in range(1000)]
    response = await update_scopes(admin, api.id, most)
    assert values(response.api) == most
    assert sorted(response.removed_scopes) == sorted([longest, odd_but_valid])


# -- invalid_argument ----------------------------------------------------------------------------


@pytest.mark.parametrize("api_id", ["", "api-1", "api 1", "api.1", "k" * 65])
async def test_invalid_argument_api_id(admin: Caller, store: Store, api_id: str) -> None:
    error = await rejected(
        store, lambda: update_scopes(admin, api_id, ["read:users"]), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert list(field_violations(error)) == ["api_id"]


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([""], "scopes[0].value"),
        (["read users"], "scopes[0].value"),
        (["read/users"], "scopes[0].value"),
        (["ok", "r\u00e9ad:users"], "scopes[1].value"),
        (["a", "b", "s" * 281], "scopes[2].value"),
        (["read:users\n"], "scopes[0].value"),
        (["a", "b", "a"], "scopes[2].value"),
        ([("read:users", "d" * 501)], "scopes[0].description"),
        ([("read:users", "bell\x07")], "scopes[0].description"),
        (["ok", ("read:users", "nul\x00")], "scopes[1].description"),
    ],
)
async def test_invalid_argument_scopes(admin: Caller, store: Store, entries: list[ScopeArg], field: str) -> None:
    api = await admin.make_api(["a", ("read:users", "Read users")])
    await admin.make_key(api.id, ["a"])
    error = await rejected(store, lambda: update_scopes(admin, api.id, entries), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == [field]


async def test_invalid_argument_duplicate_names_the_first_occurrence(admin: Caller) -> None:
    api = await admin.make_api()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await update_scopes(admin, api.id, [("x", "one"), "y", ("x", "two")])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "scopes[0].value" in field_violations(e.value)["scopes[2].value"]


async def test_invalid_argument_more_than_1000_scopes(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    error = await rejected(
        store,
        lambda: update_scopes(admin, api.id, [f"scope.{i}" for i in range(1001)]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(field_violations(error)) == ["scopes"]


async def test_invalid_argument_lists_every_bad_field_at_once(admin: Caller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await update_scopes(admin, "api-nope", ["ok", "not ok", ("fine", "d" * 501), "ok"])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(e.value)) == [
        "api_id",
        "scopes[1].value",
        "scopes[2].description",
        "scopes[3].value",
    ]


# -- permission_denied --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{api}.read_api"],
        ["api.*.read_api", "api.{other}.update_api", "api.{api}.update_key", "rbac.*.create_permission"],
    ],
)
async def test_permission_denied_read_api_without_update_api(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["read:users"])
    other = await admin.make_api()
    caller = await make_caller([p.format(api=api.id, other=other.id) for p in permissions])
    error = await rejected(store, lambda: update_scopes(caller, api.id, []), grpc.StatusCode.PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"api.{api.id}.update_api")


# -- not_found ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_id", ["api_doesnotexist0000", "a" * 64])
async def test_not_found_unknown_api(admin: Caller, store: Store, api_id: str) -> None:
    error = await rejected(store, lambda: update_scopes(admin, api_id, ["read:users"]), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [api_id]


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{other}.update_api", "api.{other}.read_api"],
        ["api.{api}.update_key", "api.{api}.read_key", "rbac.{api}.update_role", "rbac.{api}.read_role"],
        [],
    ],
    ids=["other-api", "cannot-read-api", "nothing"],
)
async def test_not_found_api_the_caller_may_not_see(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["read:users"])
    other = await admin.make_api()
    caller = await make_caller([p.format(api=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await update_scopes(caller, api.id, [])
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await update_scopes(caller, "api_doesnotexist0000", [])

    # Indistinguishable from an API that does not exist, so ids cannot be probed.
    assert hidden.value.code() == missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.value.details() == missing.value.details().replace("api_doesnotexist0000", api.id)
    assert resource_names(hidden.value) == [api.id]
    assert await store.export_snapshot() == before
