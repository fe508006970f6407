"""RoleService.SetRolePermissions: replace every permission of a role, seen at once by every key holding it."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from keyscope.v1 import keys_pb2, roles_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import blanked_answer, error_info, field_violations, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code
UNKNOWN_ROLE = "role_0000000000000000"
PERMISSION_RULE = r"must match ^[a-zA-Z0-9_:\-\.\*]+$"


async def set_role_permissions(
    caller: Caller, role_id: str, permissions: Sequence[str], metadata: Sequence[tuple[str, str]] | None = None
) -> roles_pb2.SetRolePermissionsResponse:
    return await caller.roles.SetRolePermissions(
        roles_pb2.SetRolePermissionsRequest(role_id=role_id, permissions=permissions),
        metadata=caller.md if metadata is None else metadata,
    )


async def set_error(
    caller: Caller, role_id: str, permissions: Sequence[str], metadata: Sequence[tuple[str, str]] | None = None
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_role_permissions(caller, role_id, permissions, metadata)
    return e.value


async def role_names(caller: Caller, role_id: str) -> list[str]:
    return [p.name for p in (await caller.get_role(role_id)).permissions]


# -- ok ---------------------------------------------------------------------------------------


async def test_ok_replaces_every_permission_and_bumps_the_revision(admin: Caller, store: Store) -> None:
    api = await admin.make_api([("documents.read", "Read"), ("documents.write", "Write"), ("admin", "All")])
    ids = await admin.catalog(api.id)
    role = await admin.make_role(api.id, "editor", ["documents.read", "admin"], description="Edits")
    before = await store.revision()

    response = await set_role_permissions(admin, role.id, ["documents.write", "documents.read"])

    assert [(p.id, p.name, p.description) for p in response.role.permissions] == [
        (ids["documents.read"], "documents.read", "Read"),
        (ids["documents.write"], "documents.write", "Write"),
    ]
    assert (response.role.id, response.role.name, response.role.description) == (role.id, "editor", "Edits")
    assert response.role.create_time == role.create_time
    assert response.role.update_time.ToMilliseconds() >= role.update_time.ToMilliseconds()
    assert list(response.created_permissions) == []
    assert response.revision == before + 1 == await store.revision()
    assert await role_names(admin, role.id) == ["documents.read", "documents.write"]
    # Replacing a role's grants leaves the catalog alone.
    assert set(await admin.catalog(api.id)) == {"admin", "documents.read", "documents.write"}


async def test_ok_empty_list_clears_the_role(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    role = await admin.make_role(api.id, "editor", ["documents.read", "documents.write"])
    before = await store.revision()
    response = await set_role_permissions(admin, role.id, [])
    assert list(response.role.permissions) == []
    assert response.revision == before + 1
    assert await role_names(admin, role.id) == []


async def test_ok_duplicates_count_once(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    role = await admin.make_role(api.id, "editor")
    response = await set_role_permissions(admin, role.id, ["documents.write", "documents.read", "documents.write"])
    assert [p.name for p in response.role.permissions] == ["documents.read", "documents.write"]


@pytest.mark.parametrize(
    ("initial", "again"),
    [
        (["documents.read", "documents.write"], ["documents.write", "documents.read"]),
        (["documents.read"], ["documents.read", "documents.read"]),
        ([], []),
    ],
)
async def test_ok_the_same_set_changes_nothing(
    admin: Caller, store: Store, initial: list[str], again: list[str]
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    role = await admin.make_role(api.id, "editor", initial)
    revision = await store.revision()
    before = await store.export_snapshot()

    response = await set_role_permissions(admin, role.id, again)

    assert response.revision == revision
    assert response.role == role
    assert await store.export_snapshot() == before


async def test_ok_unknown_names_are_added_to_the_catalog_in_the_same_revision(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read"])
    role = await admin.make_role(api.id, "editor", ["documents.read"])
    before = await store.revision()

    response = await set_role_permissions(admin, role.id, ["documents.read", "documents.write", "admin", "admin"])

    created = {p.name: p.id for p in response.created_permissions}
    assert sorted(created) == ["admin", "documents.write"]
    assert all(p.description == "" for p in response.created_permissions)
    assert {name: (await admin.catalog(api.id))[name] for name in created} == created
    assert [p.name for p in response.role.permissions] == ["admin", "documents.read", "documents.write"]
    assert response.revision == before + 1


async def test_ok_permissions_resolve_within_the_role_api(admin: Caller) -> None:
    api = await admin.make_api()
    other = await admin.make_api(["billing.read"], name="other")
    role = await admin.make_role(api.id, "reader")
    [created] = (await set_role_permissions(admin, role.id, ["billing.read"])).created_permissions
    assert created.id != (await admin.catalog(other.id))["billing.read"]
    assert created.id == (await admin.catalog(api.id))["billing.read"]


async def test_ok_every_key_holding_the_role_sees_the_change_in_the_next_verification(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write", "audit.read"])
    role = await admin.make_role(api.id, "editor", ["documents.read"])
    first, first_secret = await admin.make_key(api.id, ["audit.read"], ["editor"])
    _, second_secret = await admin.make_key(api.id, [], ["editor"])
    assert (await admin.verify(first_secret, "documents.write")).code == Code.CODE_INSUFFICIENT_PERMISSIONS

    await set_role_permissions(admin, role.id, ["documents.write"])

    for secret in (first_secret, second_secret):
        assert (await admin.verify(secret, "documents.write")).code == Code.CODE_VALID
        answer = await admin.verify(secret, "documents.read")
        assert answer.code == Code.CODE_INSUFFICIENT_PERMISSIONS
        assert list(answer.missing_permissions) == ["documents.read"]
    assert list((await admin.verify(first_secret)).permissions) == ["audit.read", "documents.write"]
    assert list((await admin.verify(second_secret)).permissions) == ["documents.write"]
    # The keys' own grants are untouched: only what the role brings changed.
    key = await admin.get_key(first.id)
    assert [p.name for p in key.permissions] == ["audit.read"]
    assert [[p.name for p in r.permissions] for r in key.roles] == [["documents.write"]]


async def test_ok_clearing_the_role_leaves_keys_with_their_direct_permissions(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    role = await admin.make_role(api.id, "editor", ["documents.read", "documents.write"])
    _, secret = await admin.make_key(api.id, ["documents.read"], ["editor"])

    await set_role_permissions(admin, role.id, [])

    answer = await admin.verify(secret, "documents.read AND documents.write")
    assert answer.code == Code.CODE_INSUFFICIENT_PERMISSIONS
    assert list(answer.permissions) == ["documents.read"]
    assert list(answer.roles) == ["editor"]


async def test_ok_a_wildcard_granted_through_a_role(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    role = await admin.make_role(api.id, "all-documents")
    _, secret = await admin.make_key(api.id, [], ["all-documents"])
    await set_role_permissions(admin, role.id, ["documents.*"])
    assert (await admin.verify(secret, "documents.delete")).code == Code.CODE_VALID
    assert (await admin.verify(secret, "documents.read.own")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


@pytest.mark.parametrize(
    "permissions",
    [
        ["rbac.{id}.update_role"],
        ["rbac.*.update_role"],
        ["rbac.{id}.*"],
        ["*.*.*"],
    ],
)
async def test_ok_update_role_is_enough_for_known_permissions(
    admin: Caller, make_caller: MakeCaller, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    role = await admin.make_role(api.id, "editor", ["documents.read"])
    caller = await make_caller([p.format(id=api.id) for p in permissions])
    response = await set_role_permissions(caller, role.id, ["documents.write"])
    assert [p.name for p in response.role.permissions] == ["documents.write"]


async def test_ok_create_permission_lets_a_caller_add_unknown_names(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api(["documents.read"])
    role = await admin.make_role(api.id, "editor")
    caller = await make_caller([f"rbac.{api.id}.update_role", f"rbac.{api.id}.create_permission"])
    response = await set_role_permissions(caller, role.id, ["documents.read", "documents.write"])
    assert [p.name for p in response.created_permissions] == ["documents.write"]


async def test_ok_a_thousand_permissions(admin: Caller) -> None:
    api = await admin.make_api()
    role = await admin.make_role(api.id, "big")
    names = [f"p.{i:04d}" for i in range(1000)]
    response = await set_role_permissions(admin, role.id, names)
    assert [p.name for p in response.role.permissions] == names


# -- invalid argument -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role_id", "permissions", "violations"),
    [
        ("", ["documents.read"], {"role_id": "is required"}),
        (
            "role-1",
            ["documents.read"],
            {"role_id": "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like role_3f9c2a"},
        ),
        (
            "r" * 65,
            ["documents.read"],
            {"role_id": "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like role_3f9c2a"},
        ),
        (None, ["documents.read", ""], {"permissions[1]": "must not be empty"}),
        (None, ["p" * 281], {"permissions[0]": "must be at most 280 characters (got 281)"}),
        (None, ["documents read"], {"permissions[0]": PERMISSION_RULE}),
        (None, ["documents.read", "documents/write"], {"permissions[1]": PERMISSION_RULE}),
        (None, ["dócuments.read"], {"permissions[0]": PERMISSION_RULE}),
        (None, [f"p{i}" for i in range(1001)], {"permissions": "must hold at most 1000 names (got 1001)"}),
        (
            "",
            ["ok", "", "bad name"],
            {"role_id": "is required", "permissions[1]": "must not be empty", "permissions[2]": PERMISSION_RULE},
        ),
    ],
    ids=[
        "role_id-empty",
        "role_id-pattern",
        "role_id-too-long",
        "permission-empty",
        "permission-too-long",
        "permission-space",
        "permission-slash",
        "permission-non-ascii",
        "too-many",
        "every-field",
    ],
)
async def test_invalid_argument(
    admin: Caller, store: Store, role_id: str | None, permissions: list[str], violations: dict[str, str]
) -> None:
    api = await admin.make_api(["documents.read"])
    role = await admin.make_role(api.id, "reader", ["documents.read"])
    before = await store.export_snapshot()
    error = await set_error(admin, role.id if role_id is None else role_id, permissions)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == violations
    assert await store.export_snapshot() == before


# -- permission denied ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permissions",
    [
        ["rbac.{id}.read_role"],
        ["rbac.*.read_role", "rbac.{id}.create_role", "rbac.{id}.create_permission", "api.{id}.*"],
        ["rbac.{id}.read_role", "rbac.{other}.update_role"],
    ],
)
async def test_permission_denied_without_update_role(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    other = await admin.make_api(name="other")
    role = await admin.make_role(api.id, "editor", ["documents.read"])
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()
    error = await set_error(caller, role.id, ["documents.write"])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info.reason == "MISSING_PERMISSION"
    assert info.metadata["permission"] == f"rbac.{api.id}.update_role"
    assert await store.export_snapshot() == before


@pytest.mark.parametrize(
    "permissions",
    [
        ["rbac.{id}.update_role"],
        ["rbac.{id}.update_role", "rbac.{other}.create_permission"],
        ["rbac.{id}.update_role", "api.{id}.create_permission", "api.*.*"],
    ],
)
async def test_permission_denied_unknown_names_without_create_permission(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    other = await admin.make_api(name="other")
    role = await admin.make_role(api.id, "editor", ["documents.read"])
    _, secret = await admin.make_key(api.id, [], ["editor"])
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    error = await set_error(caller, role.id, ["documents.write", "admin", "documents.delete", "admin"])

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info.reason == "PERMISSIONS_NOT_IN_CATALOG"
    assert info.metadata["permission"] == f"rbac.{api.id}.create_permission"
    assert info.metadata["permissions_not_in_catalog"] == "admin,documents.delete"
    # Not even the known part of the request was applied.
    assert await store.export_snapshot() == before
    assert (await admin.verify(secret, "documents.read")).code == Code.CODE_VALID


# -- not found ------------------------------------------------------------------------------------


async def test_not_found_unknown_role(admin: Caller, store: Store) -> None:
    before = await store.export_snapshot()
    error = await set_error(admin, UNKNOWN_ROLE, ["documents.read"])
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(error) == [UNKNOWN_ROLE]
    assert await store.export_snapshot() == before


@pytest.mark.parametrize(
    "permissions",
    [
        [],
        ["rbac.{other}.update_role", "rbac.{other}.read_role", "rbac.{other}.create_permission"],
        # Rights on the role's API that do not include seeing its roles.
        ["rbac.{id}.create_role", "rbac.{id}.create_permission", "api.{id}.*"],
    ],
)
async def test_not_found_role_the_caller_cannot_see_is_the_same_answer_as_an_unknown_role(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    other = await admin.make_api(name="other")
    role = await admin.make_role(api.id, "editor", ["documents.read"])
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    hidden = await set_error(caller, role.id, ["documents.write"])
    unknown = await set_error(caller, UNKNOWN_ROLE, ["documents.write"])

    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    assert blanked_answer(hidden, role.id) == blanked_answer(unknown, UNKNOWN_ROLE)
    assert await store.export_snapshot() == before
