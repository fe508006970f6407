"""RoleService.CreateRole: a named set of an API's permissions.

Unknown permission names are added to the API's catalog only when the caller
also holds `rbac.<api_id>.create_permission`; otherwise nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from keyscope.v1 import roles_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import blanked_answer, error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

UNKNOWN_API = "api_0000000000000000"
NAME_RULE = r"must match ^[a-zA-Z0-9_:\-\.]+$ and be at most 64 characters"
PERMISSION_RULE = r"must match ^[a-zA-Z0-9_:\-\.\*]+$"


async def create_role(
    caller: Caller,
    api_id: str,
    name: str = "reader",
    permissions: Sequence[str] = (),
    description: str = "",
    metadata: Sequence[tuple[str, str]] | None = None,
) -> roles_pb2.CreateRoleResponse:
    return await caller.roles.CreateRole(
        roles_pb2.CreateRoleRequest(api_id=api_id, name=name, description=description, permissions=permissions),
        metadata=caller.md if metadata is None else metadata,
    )


async def create_role_error(
    caller: Caller,
    api_id: str,
    name: str = "reader",
    permissions: Sequence[str] = (),
    description: str = "",
    metadata: Sequence[tuple[str, str]] | None = None,
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create_role(caller, api_id, name, permissions, description, metadata)
    return e.value


# -- ok ---------------------------------------------------------------------------------------


async def test_ok_returns_the_role_and_the_next_revision(admin: Caller, store: Store) -> None:
    api = await admin.make_api([("documents.read", "Read"), ("documents.write", "Write")])
    ids = await admin.catalog(api.id)
    before = await store.revision()

    response = await create_role(
        admin, api.id, "editor", ["documents.write", "documents.read"], description="Edits documents"
    )

    role = response.role
    assert role.id.startswith("role_")
    assert (role.api_id, role.name, role.description) == (api.id, "editor", "Edits documents")
    # Ordered by name, with the catalog's ids and descriptions.
    assert [(p.id, p.name, p.description) for p in role.permissions] == [
        (ids["documents.read"], "documents.read", "Read"),
        (ids["documents.write"], "documents.write", "Write"),
    ]
    assert list(response.created_permissions) == []
    assert role.create_time.ToMilliseconds() > 0
    assert role.update_time == role.create_time
    assert response.revision == before + 1 == await store.revision()


async def test_ok_what_it_returns_is_what_get_role_reads(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    role = (await create_role(admin, api.id, "reader", ["documents.read"], "Reads")).role
    assert await admin.get_role(role.id) == role


async def test_ok_without_permissions(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read"])
    before = await store.revision()
    response = await create_role(admin, api.id, "empty")
    assert list(response.role.permissions) == []
    assert response.revision == before + 1


async def test_ok_duplicates_count_once(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    role = (await create_role(admin, api.id, "editor", ["documents.read", "documents.write", "documents.read"])).role
    assert [p.name for p in role.permissions] == ["documents.read", "documents.write"]


async def test_ok_unknown_names_are_added_to_the_catalog_in_the_same_revision(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read"])
    before = await store.revision()

    response = await create_role(
        admin, api.id, "editor", ["documents.read", "documents.write", "admin", "documents.write"]
    )

    created = {p.name: p for p in response.created_permissions}
    assert sorted(created) == ["admin", "documents.write"]
    assert all(p.id.startswith("perm_") and p.description == "" for p in created.values())
    assert [p.name for p in response.role.permissions] == ["admin", "documents.read", "documents.write"]
    ids = await admin.catalog(api.id)
    assert {name: ids[name] for name in created} == {name: p.id for name, p in created.items()}
    # Role and catalog entries are one change.
    assert response.revision == before + 1


async def test_ok_permissions_resolve_within_the_role_api(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api(["billing.read"], name="other")
    response = await create_role(admin, api.id, "reader", ["billing.read"])
    # `billing.read` of the other API is not this API's entry: a new one is made here.
    [created] = response.created_permissions
    assert created.id != (await admin.catalog(other.id))["billing.read"]
    assert set(await admin.catalog(api.id)) == {"billing.read", "documents.read"}


async def test_ok_same_name_in_another_api(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api(["documents.read"], name="other")
    first = (await create_role(admin, api.id, "reader", ["documents.read"])).role
    second = (await create_role(admin, other.id, "reader", ["documents.read"])).role
    assert first.id != second.id
    assert (first.api_id, second.api_id) == (api.id, other.id)


@pytest.mark.parametrize("name", ["r", "R" * 64, "team:docs-reader.v2_1", "Admin"])
async def test_ok_name_limits(admin: Caller, name: str) -> None:
    api = await admin.make_api()
    assert (await create_role(admin, api.id, name)).role.name == name


@pytest.mark.parametrize("description", ["d" * 500, "two\nlines\tand a tab", "ünïcödé 名前"])
async def test_ok_description_limits(admin: Caller, description: str) -> None:
    api = await admin.make_api()
    assert (await create_role(admin, api.id, description=description)).role.description == description


async def test_ok_wildcard_and_long_permission_names(admin: Caller) -> None:
    api = await admin.make_api()
    names = ["documents.*", "p" * 280, "read:users", "a-b_c:d.e"]
    role = (await create_role(admin, api.id, "wide", names)).role
    assert [p.name for p in role.permissions] == sorted(names)


async def test_ok_a_thousand_permissions(admin: Caller) -> None:
    api = await admin.make_api()
    names = [f"p.{i:04d}" for i in range(1000)]
    response = await create_role(admin, api.id, "big", names)
    assert [p.name for p in response.role.permissions] == names
    assert len(response.created_permissions) == 1000


@pytest.mark.parametrize(
    "permissions",
    [
        ["rbac.{id}.create_role"],
        ["rbac.*.create_role"],
        ["rbac.{id}.*"],
        ["*.{id}.create_role"],
    ],
)
async def test_ok_create_role_is_enough_for_known_permissions(
    admin: Caller, make_caller: MakeCaller, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read"])
    caller = await make_caller([p.format(id=api.id) for p in permissions])
    role = (await create_role(caller, api.id, "reader", ["documents.read"])).role
    assert [p.name for p in role.permissions] == ["documents.read"]


async def test_ok_create_permission_lets_a_caller_add_unknown_names(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api(["documents.read"])
    caller = await make_caller([f"rbac.{api.id}.create_role", f"rbac.{api.id}.create_permission"])
    response = await create_role(caller, api.id, "editor", ["documents.read", "documents.write"])
    assert [p.name for p in response.created_permissions] == ["documents.write"]


# -- invalid argument -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"api_id": ""}, {"api_id": "is required"}),
        ({"api_id": "api-1"}, {"api_id": "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like api_3f9c2a"}),
        ({"name": ""}, {"name": "must not be empty"}),
        ({"name": "R" * 65}, {"name": NAME_RULE}),
        ({"name": "docs reader"}, {"name": NAME_RULE}),
        ({"name": "docs/reader"}, {"name": NAME_RULE}),
        # Unlike permission names, role names have no wildcard.
        ({"name": "docs.*"}, {"name": NAME_RULE}),
        ({"name": "lecteur_é"}, {"name": NAME_RULE}),
        ({"description": "d" * 501}, {"description": "must be at most 500 characters (got 501)"}),
        ({"description": "bell\x07"}, {"description": "must not contain control characters"}),
        ({"description": "nul\x00"}, {"description": "must not contain control characters"}),
        ({"permissions": ["documents.read", ""]}, {"permissions[1]": "must not be empty"}),
        ({"permissions": ["p" * 281]}, {"permissions[0]": "must be at most 280 characters (got 281)"}),
        ({"permissions": ["documents read"]}, {"permissions[0]": PERMISSION_RULE}),
        ({"permissions": ["documents.read", "x", "documents/read"]}, {"permissions[2]": PERMISSION_RULE}),
        ({"permissions": [f"p{i}" for i in range(1001)]}, {"permissions": "must hold at most 1000 names (got 1001)"}),
        (
            {"api_id": "", "name": "", "description": "d" * 501, "permissions": ["ok", "bad name"]},
            {
                "api_id": "is required",
                "name": "must not be empty",
                "description": "must be at most 500 characters (got 501)",
                "permissions[1]": PERMISSION_RULE,
            },
        ),
    ],
    ids=[
        "api_id-empty",
        "api_id-pattern",
        "name-empty",
        "name-too-long",
        "name-space",
        "name-slash",
        "name-wildcard",
        "name-non-ascii",
        "description-too-long",
        "description-bell",
        "description-nul",
        "permission-empty",
        "permission-too-long",
        "permission-space",
        "permission-slash",
        "too-many-permissions",
        "every-field",
    ],
)
async def test_invalid_argument(admin: Caller, store: Store, fields: dict, violations: dict[str, str]) -> None:
    api = await admin.make_api(["documents.read"])
    request = {"api_id": api.id, "name": "reader", "description": "", "permissions": ["documents.read"], **fields}
    error = await rejected(
        store,
        lambda: admin.roles.CreateRole(roles_pb2.CreateRoleRequest(**request), metadata=admin.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error) == violations


# -- permission denied ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{id}.read_api"],
        ["rbac.{id}.read_role"],
        ["rbac.{id}.read_role", "rbac.{id}.update_role", "rbac.{id}.create_permission", "api.{id}.*"],
        ["rbac.{other}.create_role", "api.*.read_api"],
    ],
)
async def test_permission_denied_without_create_role(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api(name="other")
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()
    error = await create_role_error(caller, api.id, "reader", ["documents.read"])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info.reason == "MISSING_PERMISSION"
    assert info.metadata["permission"] == f"rbac.{api.id}.create_role"
    assert await store.export_snapshot() == before


@pytest.mark.parametrize(
    "permissions",
    [
        ["rbac.{id}.create_role"],
        ["rbac.{id}.create_role", "rbac.{other}.create_permission"],
        ["rbac.{id}.create_role", "rbac.{id}.create_permissions", "api.{id}.create_permission"],
    ],
)
async def test_permission_denied_unknown_names_without_create_permission(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api(name="other")
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    error = await create_role_error(
        caller, api.id, "editor", ["documents.write", "documents.read", "admin", "documents.write"]
    )

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info.reason == "PERMISSIONS_NOT_IN_CATALOG"
    assert info.metadata["permission"] == f"rbac.{api.id}.create_permission"
    # Only the unknown names, each once, in request order.
    assert info.metadata["permissions_not_in_catalog"] == "documents.write,admin"
    # Neither the role nor any catalog entry was created.
    assert await store.export_snapshot() == before


# -- not found ------------------------------------------------------------------------------------


async def test_not_found_unknown_api(admin: Caller, store: Store) -> None:
    before = await store.export_snapshot()
    error = await create_role_error(admin, UNKNOWN_API, "reader", ["documents.read"])
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(error) == [UNKNOWN_API]
    assert await store.export_snapshot() == before


@pytest.mark.parametrize(
    "permissions",
    [
        [],
        ["rbac.{other}.create_role", "rbac.{other}.read_role", "api.{other}.read_api"],
        # Rights on the API that do not include seeing it or its roles.
        ["api.{id}.read_key", "api.{id}.update_api", "rbac.{id}.update_role", "rbac.{id}.create_permission"],
    ],
)
async def test_not_found_api_the_caller_cannot_see_is_the_same_answer_as_an_unknown_api(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api(name="other")
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    hidden = await create_role_error(caller, api.id, "reader", ["documents.read"])
    unknown = await create_role_error(caller, UNKNOWN_API, "reader", ["documents.read"])

    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    assert blanked_answer(hidden, api.id) == blanked_answer(unknown, UNKNOWN_API)
    assert await store.export_snapshot() == before


# -- already exists -------------------------------------------------------------------------------


async def test_already_exists_same_name_in_the_same_api(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    await create_role(admin, api.id, "reader", ["documents.read"])
    before = await store.export_snapshot()

    # Different permissions and description, and a name the catalog lacks: still the same role name.
    error = await create_role_error(admin, api.id, "reader", ["documents.write", "brand.new"], "again")

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert resource_names(error) == ["reader"]
    assert await store.export_snapshot() == before
