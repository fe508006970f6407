"""RoleService.GetRole: a role and its permissions.

GetRole needs `rbac.<api_id>.read_role`, which is also what lets a caller see
a role at all; so a caller without it never gets PERMISSION_DENIED, only
NOT_FOUND, exactly as for a role that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from keyscope.v1 import apis_pb2, permissions_pb2, roles_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import blanked_answer, field_violations, resource_names

pytestmark = pytest.mark.asyncio

UNKNOWN_ROLE = "role_0000000000000000"
ID_RULE = "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like role_3f9c2a"


async def get_role(caller: Caller, role_id: str, metadata: Sequence[tuple[str, str]] | None = None) -> roles_pb2.Role:
    response = await caller.roles.GetRole(
        roles_pb2.GetRoleRequest(role_id=role_id), metadata=caller.md if metadata is None else metadata
    )
    return response.role


async def get_role_error(
    caller: Caller, role_id: str, metadata: Sequence[tuple[str, str]] | None = None
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await get_role(caller, role_id, metadata)
    return e.value


# -- ok ---------------------------------------------------------------------------------------


async def test_ok_returns_the_role_with_its_permissions_ordered_by_name(admin: Caller) -> None:
    api = await admin.make_api([("documents.write", "Write"), ("documents.read", "Read"), ("admin", "All")])
    scopes = {s.value: s.id for s in api.scopes}
    created = await admin.make_role(
        api.id, "editor", ["documents.write", "admin", "documents.read"], description="Edits documents"
    )

    role = await get_role(admin, created.id)

    assert (role.id, role.api_id, role.name, role.description) == (created.id, api.id, "editor", "Edits documents")
    assert [(p.id, p.name, p.description) for p in role.permissions] == [
        (scopes["admin"], "admin", "All"),
        (scopes["documents.read"], "documents.read", "Read"),
        (scopes["documents.write"], "documents.write", "Write"),
    ]
    assert role == created


async def test_ok_permission_descriptions_follow_the_catalog(admin: Caller) -> None:
    api = await admin.make_api([("documents.read", "old"), ("documents.write", "")])
    role = await admin.make_role(api.id, "reader", ["documents.read", "documents.write"])
    # The catalog changes: one description rewritten, one entry removed.
    await admin.apis.UpdateScopes(
        apis_pb2.UpdateScopesRequest(
            api_id=api.id, scopes=[permissions_pb2.Scope(value="documents.read", description="new")]
        ),
        metadata=admin.md,
    )
    assert [(p.name, p.description) for p in (await get_role(admin, role.id)).permissions] == [
        ("documents.read", "new")
    ]


@pytest.mark.parametrize(
    "permissions",
    [
        ["rbac.{id}.read_role"],
        ["rbac.*.read_role"],
        ["rbac.{id}.*"],
        ["*.{id}.read_role"],
        ["*.*.*"],
    ],
)
async def test_ok_with_read_role(admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]) -> None:
    api = await admin.make_api(["documents.read"])
    role = await admin.make_role(api.id, "reader", ["documents.read"])
    reader = await make_caller([p.format(id=api.id) for p in permissions])
    before = await store.export_snapshot()
    assert await get_role(reader, role.id) == role
    assert await store.export_snapshot() == before


# -- invalid argument -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role_id", "description"),
    [
        ("", "is required"),
        ("role-1", ID_RULE),
        ("role 1", ID_RULE),
        ("role.1", ID_RULE),
        ("r" * 65, ID_RULE),
    ],
)
async def test_invalid_argument_role_id(admin: Caller, role_id: str, description: str) -> None:
    error = await get_role_error(admin, role_id)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"role_id": description}


# -- not found (also what a caller without read_role gets) -----------------------------------------


async def test_not_found_unknown_role(admin: Caller) -> None:
    error = await get_role_error(admin, UNKNOWN_ROLE)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(error) == [UNKNOWN_ROLE]


@pytest.mark.parametrize(
    "permissions",
    [
        [],
        # Every other right on this API, including reading the API itself: roles stay hidden.
        ["rbac.{id}.create_role", "rbac.{id}.update_role", "rbac.{id}.create_permission", "api.{id}.*"],
        ["rbac.{other}.read_role"],
        ["*.{other}.*"],
        ["rbac.{id}.read_roles"],
        ["rbac.{id}.read_role.x"],
        ["RBAC.{id}.read_role"],
        ["rbac.read_role.*"],
    ],
)
async def test_not_found_without_read_role_is_the_same_answer_as_an_unknown_role(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api(name="other")
    role = await admin.make_role(api.id, "reader", ["documents.read"])
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    hidden = await get_role_error(caller, role.id)
    unknown = await get_role_error(caller, UNKNOWN_ROLE)

    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(hidden) == [role.id]
    assert blanked_answer(hidden, role.id) == blanked_answer(unknown, UNKNOWN_ROLE)
    assert await store.export_snapshot() == before


async def test_not_found_a_role_name_is_not_an_id(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    error = await get_role_error(admin, "reader")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(error) == ["reader"]


async def test_not_found_the_same_name_in_another_api_does_not_leak(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api()
    other = await admin.make_api(name="other")
    mine = await admin.make_role(other.id, "reader")
    theirs = await admin.make_role(api.id, "reader")
    caller = await make_caller([f"rbac.{other.id}.read_role"])
    assert await get_role(caller, mine.id) == mine
    assert (await get_role_error(caller, theirs.id)).code() == grpc.StatusCode.NOT_FOUND
