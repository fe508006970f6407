"""SetPermissions: what a call that succeeds does."""

from __future__ import annotations

import asyncio

import pytest

from keyscope.v1 import apis_pb2, keys_pb2, permissions_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.set_permissions.call import direct_names, set_permissions

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


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
    assert (await admin.verify(secret, "documents.read")).code == Code.CODE_VALID
    assert (await admin.verify(secret, "documents.write")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


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
    assert (await admin.verify(secret, "billing.read AND documents.write")).code == Code.CODE_VALID


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
    assert (await admin.verify(secret, "documents.read")).code == Code.CODE_VALID

    await set_permissions(admin, key.id, ["documents.write"])
    answer = await admin.verify(secret, "documents.read AND documents.write")
    assert answer.code == Code.CODE_INSUFFICIENT_PERMISSIONS
    assert list(answer.missing_permissions) == ["documents.read"]

    # A wildcard grant set directly covers one segment at once.
    await set_permissions(admin, key.id, ["documents.*"])
    assert (await admin.verify(secret, "documents.read AND documents.write")).code == Code.CODE_VALID
    assert (await admin.verify(secret, "documents.read.own")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


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


# Moved here from tests/test_update_scopes.py, tests/test_etags.py and tests/test_root_key_auth.py: what
# SetPermissions does after UpdateScopes, with etags, and for the seed's root key.


async def test_ok_scopes_added_by_update_scopes_can_be_granted_without_create_permission(
    admin: Caller, make_caller: MakeCaller
) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id)
    scopes = [permissions_pb2.Scope(value="read:users", description="Read users")]
    await admin.apis.UpdateScopes(apis_pb2.UpdateScopesRequest(api_id=api.id, scopes=scopes), metadata=admin.md)
    caller = await make_caller([f"api.{api.id}.update_key"])

    response = await set_permissions(caller, key.id, ["read:users"])

    assert [(p.name, p.description) for p in response.permissions] == [("read:users", "Read users")]
    assert (await admin.verify(secret, "read:users")).code == Code.CODE_VALID


async def test_ok_a_call_that_changes_nothing_keeps_the_etag(admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a"])
    etag = (await admin.get_key(key.id)).etag
    request = keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["a"], etag=etag)
    assert (await admin.keys.SetPermissions(request, metadata=admin.md)).etag == etag


async def test_ok_permissions_it_creates_change_the_apis_etag(admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a"])
    before = (await admin.get_api(api.id)).etag
    await set_permissions(admin, key.id, ["brand.new"])
    assert (await admin.get_api(api.id)).etag != before


# The seed's root key: update_key on every API, and the right to add names to any catalog.
SEED_ROOT_KEY = ["api.*.update_key", "rbac.*.create_permission"]


async def test_ok_seed_root_key_sets_permissions_creating_unknown_ones(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id, ["documents.write"], ["reader"])
    caller = await make_caller(SEED_ROOT_KEY)
    before = await store.revision()

    response = await set_permissions(caller, key.id, ["documents.read", "documents.delete"])

    [created] = response.created_permissions
    assert created.name == "documents.delete"
    assert [p.name for p in response.permissions] == ["documents.delete", "documents.read"]
    assert response.revision == before + 1
    assert (await admin.catalog(api.id))["documents.delete"] == created.id
    assert (await admin.verify(secret, "documents.delete")).code == Code.CODE_VALID


async def test_ok_seed_root_key_removes_all_permissions(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id, ["documents.write"], ["reader"])
    caller = await make_caller(SEED_ROOT_KEY)

    response = await set_permissions(caller, key.id, [])

    assert list(response.permissions) == []
    # The role's grant stays: only direct permissions were replaced.
    assert list((await admin.verify(secret)).permissions) == ["documents.read"]
