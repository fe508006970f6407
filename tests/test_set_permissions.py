"""KeyService.SetPermissions: Unkey's `keys.setPermissions` (seed 004) over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest

from keyscope.v1 import keys_pb2
from server.store import Store
from tests.client import BAD_AUTHORIZATION, INVALID_KEY_IDS, Caller
from tests.conftest import UNUSABLE_ROOT_KEYS, MakeCaller, UnusableCaller
from tests.rpc_errors import error_info, field_violations, rejected, request_id, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def set_permissions(
    caller: Caller, key_id: str, permissions: Sequence[str], metadata: Sequence[tuple[str, str]] | None = None
) -> keys_pb2.SetPermissionsResponse:
    return await caller.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key_id, permissions=permissions),
        metadata=caller.md if metadata is None else metadata,
    )


async def direct_names(caller: Caller, key_id: str) -> list[str]:
    return [p.name for p in (await caller.get_key(key_id)).permissions]


# -- ok ---------------------------------------------------------------------------------------


async def test_ok_seed_example_replaces_the_direct_permissions(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write", "documents.delete"])
    key, _ = await admin.make_key(api.id, ["documents.delete"])
    ids = await admin.catalog(api.id)

    response = await set_permissions(admin, key.id, ["documents.read", "documents.write"])

    # The seed's response shape: every direct permission with its catalog id and name.
    assert [(p.id, p.name) for p in response.permissions] == [
        (ids["documents.read"], "documents.read"),
        (ids["documents.write"], "documents.write"),
    ]
    assert list(response.created_permissions) == []
    assert await direct_names(admin, key.id) == ["documents.read", "documents.write"]


async def test_ok_response_is_ordered_by_name(admin: Caller) -> None:
    api = await admin.make_api(["m.mid", "z.last", "a.first"])
    key, _ = await admin.make_key(api.id)
    response = await set_permissions(admin, key.id, ["z.last", "a.first", "m.mid"])
    assert [p.name for p in response.permissions] == ["a.first", "m.mid", "z.last"]


async def test_ok_empty_list_removes_every_direct_permission(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    key, secret = await admin.make_key(api.id, ["documents.read", "documents.write"])

    response = await set_permissions(admin, key.id, [])

    assert list(response.permissions) == []
    assert await direct_names(admin, key.id) == []
    assert list((await admin.verify(secret)).permissions) == []
    # The catalog keeps its entries: only the key's grants went.
    assert set(await admin.catalog(api.id)) == {"documents.read", "documents.write"}


async def test_ok_role_permissions_are_untouched_and_still_verify(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id, ["documents.write"], roles=["reader"])

    response = await set_permissions(admin, key.id, [])

    assert list(response.permissions) == []  # role grants are not direct permissions
    got = await admin.get_key(key.id)
    assert [(r.name, [p.name for p in r.permissions]) for r in got.roles] == [("reader", ["documents.read"])]
    assert (await admin.verify(secret, "documents.read")).code == Code.VALID
    assert (await admin.verify(secret, "documents.write")).code == Code.INSUFFICIENT_PERMISSIONS


async def test_ok_a_name_held_directly_and_through_a_role_can_be_set_directly(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, _ = await admin.make_key(api.id, roles=["reader"])

    response = await set_permissions(admin, key.id, ["documents.read"])

    assert [p.name for p in response.permissions] == ["documents.read"]


async def test_ok_duplicates_count_once(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id)

    response = await set_permissions(admin, key.id, ["documents.read", "new.one", "documents.read", "new.one"])

    assert [p.name for p in response.permissions] == ["documents.read", "new.one"]
    assert [p.name for p in response.created_permissions] == ["new.one"]
    assert sorted(await admin.catalog(api.id)) == ["documents.read", "new.one"]


@pytest.mark.parametrize("create_permission", ["rbac.*.create_permission", "rbac.{api}.create_permission"])
async def test_ok_unknown_names_are_created_when_the_caller_may(
    admin: Caller, make_caller: MakeCaller, create_permission: str
) -> None:
    api = await admin.make_api(["documents.read"])
    key, secret = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.update_key", create_permission.format(api=api.id)])

    response = await set_permissions(caller, key.id, ["documents.read", "documents.write", "billing.read"])

    created = {p.name: p for p in response.created_permissions}
    assert sorted(created) == ["billing.read", "documents.write"]
    assert all(p.description == "" and p.id.startswith("perm_") for p in created.values())
    ids = await admin.catalog(api.id)
    assert {name: p.id for name, p in created.items()} == {n: ids[n] for n in created}
    assert {p.name: p.id for p in response.permissions} == ids
    assert (await admin.verify(secret, "billing.read AND documents.write")).code == Code.VALID


async def test_ok_known_names_need_no_create_permission(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.update_key"])

    response = await set_permissions(caller, key.id, ["documents.write"])

    assert [p.name for p in response.permissions] == ["documents.write"]


async def test_ok_names_resolve_in_the_keys_own_api(admin: Caller) -> None:
    api = await admin.make_api()
    other = await admin.make_api(["documents.read"])
    other_before = await admin.catalog(other.id)
    key, _ = await admin.make_key(api.id)

    response = await set_permissions(admin, key.id, ["documents.read"])

    # Another API's entry of the same name is not this API's permission: a new one is created here.
    [created] = response.created_permissions
    assert created.id != other_before["documents.read"]
    assert await admin.catalog(api.id) == {"documents.read": created.id}
    assert await admin.catalog(other.id) == other_before


async def test_ok_wildcard_update_key_root_key(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id)
    caller = await make_caller(["api.*.update_key"])

    response = await set_permissions(caller, key.id, ["documents.read"])

    assert [p.name for p in response.permissions] == ["documents.read"]


async def test_ok_the_next_verify_sees_the_change(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write", "documents.*"])
    key, secret = await admin.make_key(api.id, ["documents.read"])
    assert (await admin.verify(secret, "documents.read")).code == Code.VALID

    await set_permissions(admin, key.id, ["documents.write"])
    answer = await admin.verify(secret, "documents.read AND documents.write")
    assert answer.code == Code.INSUFFICIENT_PERMISSIONS
    assert list(answer.missing_permissions) == ["documents.read"]

    # A wildcard grant set directly covers one segment at once.
    await set_permissions(admin, key.id, ["documents.*"])
    assert (await admin.verify(secret, "documents.read AND documents.write")).code == Code.VALID
    assert (await admin.verify(secret, "documents.read.own")).code == Code.INSUFFICIENT_PERMISSIONS


async def test_ok_revision_grows_by_exactly_one(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a"])
    before = await store.revision()

    # Creating catalog entries and relinking the key is one change.
    first = await set_permissions(admin, key.id, ["b", "c", "d"])
    second = await set_permissions(admin, key.id, [])

    assert (first.revision, second.revision) == (before + 1, before + 2)


async def test_ok_unchanged_set_keeps_the_revision_and_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a", "b"])
    before = await store.export_snapshot()
    revision = await store.revision()

    # The same set in another order, with a duplicate, is no change.
    response = await set_permissions(admin, key.id, ["b", "a", "b"])

    assert response.revision == revision
    assert [p.name for p in response.permissions] == ["a", "b"]
    assert await store.export_snapshot() == before


async def test_ok_kept_permissions_keep_their_ids(admin: Caller) -> None:
    api = await admin.make_api(["a", "b", "c"])
    key, _ = await admin.make_key(api.id, ["a", "b"])
    ids = await admin.catalog(api.id)

    response = await set_permissions(admin, key.id, ["b", "c"])

    assert {p.name: p.id for p in response.permissions} == {"b": ids["b"], "c": ids["c"]}
    assert await admin.catalog(api.id) == ids


async def test_ok_boundaries(admin: Caller) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    longest = "p" * 280
    odd_but_valid = "Read:Users_v2-beta.*"

    response = await set_permissions(admin, key.id, [longest, odd_but_valid])
    assert sorted(p.name for p in response.permissions) == sorted([longest, odd_but_valid])

    most = [f"perm.{i:04d}" for i in range(1000)]
    response = await set_permissions(admin, key.id, most)
    assert [p.name for p in response.permissions] == most
    assert len(response.created_permissions) == 1000


async def test_ok_concurrent_calls_leave_exactly_one_requested_set(admin: Caller, store: Store) -> None:
    api = await admin.make_api([f"p{i:02d}" for i in range(25)] + ["initial"])
    key, _ = await admin.make_key(api.id, ["initial"])
    sets = [[f"p{i:02d}", f"p{i + 1:02d}", f"p{i + 5:02d}"] for i in range(20)]
    before = await store.revision()

    responses = await asyncio.gather(*(set_permissions(admin, key.id, s) for s in sets))

    # Serialised: each call saw its own set and made one change of its own.
    for requested, response in zip(sets, responses, strict=True):
        assert [p.name for p in response.permissions] == sorted(requested)
    assert sorted(r.revision for r in responses) == list(range(before + 1, before + 21))
    last = max(responses, key=lambda r: r.revision)
    final = await direct_names(admin, key.id)
    assert final in [sorted(s) for s in sets]
    assert final == [p.name for p in last.permissions]


async def test_ok_concurrent_calls_create_a_new_name_once(admin: Caller) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)

    responses = await asyncio.gather(*(set_permissions(admin, key.id, ["shared.new", f"own.{i}"]) for i in range(20)))

    creators = [r for r in responses if "shared.new" in [p.name for p in r.created_permissions]]
    assert len(creators) == 1
    ids = await admin.catalog(api.id)
    assert {p.id for r in responses for p in r.permissions if p.name == "shared.new"} == {ids["shared.new"]}
    assert len(ids) == 21


# -- invalid_argument ----------------------------------------------------------------------------


@pytest.mark.parametrize("key_id", INVALID_KEY_IDS)
async def test_invalid_argument_key_id(admin: Caller, store: Store, key_id: str) -> None:
    error = await rejected(
        store, lambda: set_permissions(admin, key_id, ["documents.read"]), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert list(field_violations(error)) == ["key_id"]


@pytest.mark.parametrize(
    ("permissions", "field"),
    [
        ([""], "permissions[0]"),
        (["documents read"], "permissions[0]"),
        (["documents/read"], "permissions[0]"),
        (["documents.read", "dokumente.lesen\u00e9"], "permissions[1]"),
        (["a", "b", "p" * 281], "permissions[2]"),
        (["documents.read\n"], "permissions[0]"),
        (["documents.read", "documents.read", "+"], "permissions[2]"),
    ],
)
async def test_invalid_argument_permission_names(
    admin: Caller, store: Store, permissions: list[str], field: str
) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id, ["documents.read"])
    error = await rejected(store, lambda: set_permissions(admin, key.id, permissions), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == [field]


async def test_invalid_argument_more_than_1000_names(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    error = await rejected(
        store,
        lambda: set_permissions(admin, key.id, [f"perm.{i}" for i in range(1001)]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(field_violations(error)) == ["permissions"]


async def test_invalid_argument_lists_every_bad_field_at_once(admin: Caller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_permissions(admin, "no-such-key!", ["ok", "not ok", "", "fine"])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(e.value)) == ["key_id", "permissions[1]", "permissions[2]"]
    assert request_id(e.value).startswith("req_")


# -- unauthenticated --------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", BAD_AUTHORIZATION)
async def test_unauthenticated_bad_credentials(
    admin: Caller, store: Store, metadata: tuple[tuple[str, str], ...]
) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id)
    error = await rejected(
        store,
        lambda: set_permissions(admin, key.id, ["documents.read"], metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert error_info(error).reason == "UNAUTHENTICATED"


@pytest.mark.parametrize("how", UNUSABLE_ROOT_KEYS)
async def test_unauthenticated_root_key_no_longer_usable(
    admin: Caller, unusable_caller: UnusableCaller, how: str
) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id)
    caller = await unusable_caller(how)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_permissions(caller, key.id, ["documents.read"])
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await direct_names(admin, key.id) == []


async def test_unauthenticated_comes_before_validation(admin: Caller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_permissions(admin, "bad id", ["bad name"], metadata=())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- permission_denied --------------------------------------------------------------------------------


async def test_permission_denied_among_concurrent_calls_changes_only_its_own_key(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    # Concurrent writes may share one SQLite transaction: a denied one must leave no trace,
    # and must not take the others down with it.
    api = await admin.make_api(["documents.read", "documents.write"])
    keys = [(await admin.make_key(api.id, ["documents.read"]))[0] for _ in range(10)]
    limited = await make_caller([f"api.{api.id}.update_key", f"api.{api.id}.read_key"])  # cannot create
    before = await store.revision()

    results = await asyncio.gather(
        *(
            set_permissions(limited, key.id, ["documents.write"] if i % 2 == 0 else ["documents.write", f"new.{i}"])
            for i, key in enumerate(keys)
        ),
        return_exceptions=True,
    )

    for i, (key, result) in enumerate(zip(keys, results, strict=True)):
        if i % 2 == 0:
            assert isinstance(result, keys_pb2.SetPermissionsResponse)
            assert [p.name for p in result.permissions] == ["documents.write"]
            assert await direct_names(admin, key.id) == ["documents.write"]
        else:
            assert isinstance(result, grpc.aio.AioRpcError)
            assert result.code() == grpc.StatusCode.PERMISSION_DENIED
            assert await direct_names(admin, key.id) == ["documents.read"]
    assert sorted(r.revision for r in results if isinstance(r, keys_pb2.SetPermissionsResponse)) == list(
        range(before + 1, before + 6)
    )
    assert set(await admin.catalog(api.id)) == {"documents.read", "documents.write"}


async def test_permission_denied_read_key_without_update_key(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.read_key", "rbac.*.create_permission", "api.*.update_api"])
    error = await rejected(
        store, lambda: set_permissions(caller, key.id, ["documents.read"]), grpc.StatusCode.PERMISSION_DENIED
    )
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"api.{api.id}.update_key")


@pytest.mark.parametrize("extra", [[], ["rbac.api_other.create_permission", "rbac.*.create_role"]])
async def test_permission_denied_unknown_names_without_create_permission(
    admin: Caller, make_caller: MakeCaller, store: Store, extra: list[str]
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    key, secret = await admin.make_key(api.id, ["documents.write"])
    caller = await make_caller([f"api.{api.id}.update_key", *extra])
    error = await rejected(
        store,
        lambda: set_permissions(caller, key.id, ["documents.read", "billing.read", "billing.write"]),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    info = error_info(error)
    assert info.reason == "PERMISSIONS_NOT_IN_CATALOG"
    assert info.metadata["permission"] == f"rbac.{api.id}.create_permission"
    assert sorted(info.metadata["permissions_not_in_catalog"].split(",")) == ["billing.read", "billing.write"]
    # The known name in the same request was not applied either.
    assert (await admin.verify(secret, "documents.write")).code == Code.VALID


# -- not_found ----------------------------------------------------------------------------------------


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
