"""RoleService.DeleteRole: the role goes, and every key that had it loses it with the permissions it granted them;
their own permissions, the API's catalog and the other roles stay."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from keyscope.v1 import keys_pb2, roles_pb2
from keyscope_server.store import Store
from tests.audit_replay import all_events
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def _delete(
    caller: Caller, role_id: str, etag: str = "", validate_only: bool = False
) -> roles_pb2.DeleteRoleResponse:
    request = roles_pb2.DeleteRoleRequest(role_id=role_id, etag=etag, validate_only=validate_only)
    return await caller.roles.DeleteRole(request, metadata=caller.md)


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_holders_lose_the_role_and_what_it_granted_at_once(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["docs.read", "docs.write", "billing.read"])
    role = await admin.make_role(api.id, "editor", ["docs.read", "docs.write"])
    holder, secret = await admin.make_key(api.id, ["billing.read"], ["editor"])
    # Verified once, so the verification cache holds the key with the role: the deletion must drop it.
    assert (await admin.verify(secret, "docs.write AND billing.read")).code == Code.CODE_VALID
    before = await store.revision()

    deleted = await _delete(admin, role.id)

    assert deleted.keys_affected == 1
    assert deleted.revision == before + 1 == await store.revision()
    answer = await admin.verify(secret, "docs.write AND billing.read")
    assert (answer.code, list(answer.missing_permissions)) == (Code.CODE_INSUFFICIENT_PERMISSIONS, ["docs.write"])
    answer = await admin.verify(secret, "billing.read")
    assert (answer.code, list(answer.roles), list(answer.permissions)) == (Code.CODE_VALID, [], ["billing.read"])
    key = await admin.get_key(holder.id)
    assert (list(key.roles), [p.name for p in key.permissions]) == ([], ["billing.read"])
    assert key.etag != holder.etag
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.get_role(role.id)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_ok_a_permission_also_held_directly_stays(admin: Caller) -> None:
    api = await admin.make_api(["docs.read"])
    role = await admin.make_role(api.id, "reader", ["docs.read"])
    _, secret = await admin.make_key(api.id, ["docs.read"], ["reader"])
    assert (await admin.verify(secret, "docs.read")).code == Code.CODE_VALID

    await _delete(admin, role.id)

    answer = await admin.verify(secret, "docs.read")
    assert (answer.code, list(answer.roles)) == (Code.CODE_VALID, [])


async def test_ok_counts_every_holder_and_only_they_change(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b"])
    role = await admin.make_role(api.id, "gone", ["a"])
    await admin.make_role(api.id, "kept", ["b"])
    holders = [
        (await admin.make_key(api.id, roles=["gone"]))[0],
        (await admin.make_key(api.id, ["b"], ["gone"]))[0],
        (await admin.make_key(api.id, roles=["gone", "kept"]))[0],
    ]
    bystander, bystander_secret = await admin.make_key(api.id, ["a"], ["kept"])
    assert (await admin.verify(bystander_secret, "a AND b")).code == Code.CODE_VALID

    deleted = await _delete(admin, role.id)

    assert deleted.keys_affected == 3
    after = [await admin.get_key(k.id) for k in holders]
    assert [[r.name for r in k.roles] for k in after] == [[], [], ["kept"]]
    assert all(k.etag != h.etag for k, h in zip(after, holders, strict=True))
    assert await admin.get_key(bystander.id) == bystander  # its etag too
    assert (await admin.verify(bystander_secret, "a AND b")).code == Code.CODE_VALID
    assert role.id not in {link[1] for link in (await store.export_snapshot()).key_roles}


async def test_ok_the_catalog_keeps_the_roles_permissions(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    role = await admin.make_role(api.id, "r", ["a"])
    # CreateRole added "new.one" to the catalog: the role's deletion does not take it back.
    created = await admin.roles.CreateRole(
        roles_pb2.CreateRoleRequest(api_id=api.id, name="maker", permissions=["a", "new.one"]), metadata=admin.md
    )
    catalog = await admin.catalog(api.id)

    await _delete(admin, role.id)
    await _delete(admin, created.role.id)

    assert await admin.catalog(api.id) == catalog == {"a": catalog["a"], "new.one": catalog["new.one"]}
    assert {p.name for p in (await store.export_snapshot()).permissions if p.api_id == api.id} == {"a", "new.one"}


async def test_ok_other_roles_and_the_same_name_in_another_api_stay(admin: Caller) -> None:
    api, other = await admin.make_api(["a"]), await admin.make_api(["a"])
    role = await admin.make_role(api.id, "reader", ["a"])
    sibling = await admin.make_role(api.id, "sibling", ["a"])
    namesake = await admin.make_role(other.id, "reader", ["a"])
    _, secret = await admin.make_key(other.id, roles=["reader"])
    assert (await admin.verify(secret, "a")).code == Code.CODE_VALID

    await _delete(admin, role.id)

    assert await admin.get_role(sibling.id) == sibling
    assert await admin.get_role(namesake.id) == namesake
    answer = await admin.verify(secret, "a")
    assert (answer.code, list(answer.roles)) == (Code.CODE_VALID, ["reader"])


async def test_ok_a_new_role_of_the_same_name_is_not_given_to_former_holders(admin: Caller) -> None:
    api = await admin.make_api(["a"])
    role = await admin.make_role(api.id, "reader", ["a"])
    key, secret = await admin.make_key(api.id, roles=["reader"])

    await _delete(admin, role.id)
    again = await admin.make_role(api.id, "reader", ["a"])

    assert again.id != role.id
    assert list((await admin.get_key(key.id)).roles) == []
    assert (await admin.verify(secret, "a")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


async def test_ok_audit_event_holds_the_role_before_and_nothing_after(admin: Caller) -> None:
    api = await admin.make_api(["b", "a"])
    role = await admin.make_role(api.id, "reader", ["b", "a"], description="reads")
    await admin.make_key(api.id, roles=["reader"])

    deleted = await _delete(admin, role.id)

    # One event for the deletion: none for the keys that lost the role.
    [event] = [e for e in await all_events(admin) if e.revision == deleted.revision]
    assert (event.action, event.resource_type, event.resource_id, event.api_id, event.actor) == (
        "DeleteRole",
        "role",
        role.id,
        api.id,
        admin.root_key_id,
    )
    assert MessageToDict(event.before) == {"name": "reader", "description": "reads", "permissions": ["a", "b"]}
    assert not event.HasField("after")


async def test_ok_validate_only_counts_and_deletes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    role = await admin.make_role(api.id, "reader", ["a"])
    for _ in range(2):
        await admin.make_key(api.id, roles=["reader"])
    _, secret = await admin.make_key(api.id, roles=["reader"])
    assert (await admin.verify(secret, "a")).code == Code.CODE_VALID
    before, events = await store.export_snapshot(), await all_events(admin)

    dry = await _delete(admin, role.id, etag=role.etag, validate_only=True)

    assert (dry.keys_affected, dry.revision) == (3, before.revision)
    assert await store.export_snapshot() == before
    assert await all_events(admin) == events
    assert (await admin.verify(secret, "a")).code == Code.CODE_VALID
    assert await admin.get_role(role.id) == role
    real = await _delete(admin, role.id, etag=role.etag)
    assert (real.keys_affected, real.revision) == (3, dry.revision + 1)


@pytest.mark.parametrize("delete_role", ["rbac.*.delete_role", "rbac.{api}.delete_role", "rbac.{api}.*"])
async def test_ok_caller_with_delete_role(admin: Caller, make_caller: MakeCaller, delete_role: str) -> None:
    api = await admin.make_api(["a"])
    role = await admin.make_role(api.id, "reader", ["a"])
    _, secret = await admin.make_key(api.id, roles=["reader"])
    caller = await make_caller([delete_role.format(api=api.id)])

    assert (await _delete(caller, role.id)).keys_affected == 1

    assert (await admin.verify(secret, "a")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize("role_id", ["", "role-1", "role 1", "role.1", "role_é", "r" * 65])
async def test_invalid_argument_role_id(admin: Caller, store: Store, role_id: str) -> None:
    api = await admin.make_api(["a"])
    await admin.make_role(api.id, "reader", ["a"])
    error = await rejected(store, lambda: _delete(admin, role_id), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == ["role_id"]


@pytest.mark.parametrize("etag", ["r 1", "x" * 65, "r1\x00", "é"])
async def test_invalid_argument_malformed_etag(admin: Caller, store: Store, etag: str) -> None:
    api = await admin.make_api(["a"])
    role = await admin.make_role(api.id, "reader", ["a"])
    error = await rejected(store, lambda: _delete(admin, role.id, etag=etag), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == ["etag"]


# -- aborted ----------------------------------------------------------------------------------------


async def test_aborted_stale_etag_deletes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b"])
    role = await admin.make_role(api.id, "reader", ["a"])
    _, secret = await admin.make_key(api.id, roles=["reader"])
    changed = await admin.roles.SetRolePermissions(
        roles_pb2.SetRolePermissionsRequest(role_id=role.id, permissions=["a", "b"]), metadata=admin.md
    )

    error = await rejected(store, lambda: _delete(admin, role.id, etag=role.etag), grpc.StatusCode.ABORTED)

    info = error_info(error)
    assert (info.reason, info.metadata["etag"]) == ("ETAG_MISMATCH", changed.role.etag)
    assert resource_names(error) == [role.id]
    assert (await admin.verify(secret, "a AND b")).code == Code.CODE_VALID


# -- permission denied ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permissions",
    [
        ["rbac.{api}.read_role"],
        ["rbac.*.read_role", "rbac.{other}.delete_role", "rbac.{api}.update_role", "api.{api}.delete_api"],
    ],
    ids=["read-role", "read-role-and-every-other-verb"],
)
async def test_permission_denied_read_role_without_delete_role(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api, other = await admin.make_api(["a"]), await admin.make_api()
    role = await admin.make_role(api.id, "reader", ["a"])
    await admin.make_key(api.id, roles=["reader"])
    caller = await make_caller([p.format(api=api.id, other=other.id) for p in permissions])
    error = await rejected(store, lambda: _delete(caller, role.id), grpc.StatusCode.PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"rbac.{api.id}.delete_role")


# -- not found ---------------------------------------------------------------------------------------


async def test_not_found_unknown_role(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _delete(admin, "role_doesnotexist0000"), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["role_doesnotexist0000"]


async def test_not_found_deleting_twice(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    role = await admin.make_role(api.id, "reader", ["a"])
    await _delete(admin, role.id)
    error = await rejected(store, lambda: _delete(admin, role.id), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [role.id]


@pytest.mark.parametrize(
    "permissions",
    [
        ["rbac.{other}.delete_role", "rbac.{other}.read_role"],
        ["api.{api}.read_api", "api.{api}.delete_api", "api.{api}.read_key", "rbac.{api}.update_role"],
        [],
    ],
    ids=["other-api", "cannot-read-roles", "nothing"],
)
async def test_not_found_role_the_caller_may_not_see(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api, other = await admin.make_api(["a"]), await admin.make_api()
    role = await admin.make_role(api.id, "reader", ["a"])
    _, secret = await admin.make_key(api.id, roles=["reader"])
    caller = await make_caller([p.format(api=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await _delete(caller, role.id)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _delete(caller, "role_doesnotexist0000")

    # Indistinguishable from a role that does not exist, so ids cannot be probed.
    assert hidden.value.code() == missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.value.details() == (missing.value.details() or "").replace("role_doesnotexist0000", role.id)
    assert resource_names(hidden.value) == [role.id]
    assert await store.export_snapshot() == before
    assert (await admin.verify(secret, "a")).code == Code.CODE_VALID
