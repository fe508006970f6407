"""ApiService.GetApi: an API and its whole scope list.

GetApi needs `api.<id>.read_api`, which is also what lets a caller see an API
at all; so a caller without it never gets PERMISSION_DENIED, only NOT_FOUND,
exactly as for an API that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from keyscope.v1 import apis_pb2, permissions_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import blanked_answer, field_violations, resource_names

pytestmark = pytest.mark.asyncio

UNKNOWN_API = "api_0000000000000000"


async def get_api(caller: Caller, api_id: str, metadata: Sequence[tuple[str, str]] | None = None) -> apis_pb2.Api:
    response = await caller.apis.GetApi(
        apis_pb2.GetApiRequest(api_id=api_id), metadata=caller.md if metadata is None else metadata
    )
    return response.api


async def get_api_error(
    caller: Caller, api_id: str, metadata: Sequence[tuple[str, str]] | None = None
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await get_api(caller, api_id, metadata)
    return e.value


# -- ok ---------------------------------------------------------------------------------------


async def test_ok_returns_the_api_and_its_scopes_ordered_by_value(admin: Caller) -> None:
    api = await admin.make_api(
        [("documents.write", "Write"), ("documents.read", "Read"), ("admin", "")], name="documents"
    )
    read = await get_api(admin, api.id)
    assert read.id == api.id
    assert read.name == "documents"
    assert [(s.value, s.description) for s in read.scopes] == [
        ("admin", ""),
        ("documents.read", "Read"),
        ("documents.write", "Write"),
    ]
    assert read == api


async def test_ok_scope_ids_match_the_permission_ids_of_keys_and_roles(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    role = await admin.make_role(api.id, "reader", ["documents.read"])
    key, _ = await admin.make_key(api.id, ["documents.write"])
    ids = {s.value: s.id for s in (await get_api(admin, api.id)).scopes}
    assert [(p.name, p.id) for p in role.permissions] == [("documents.read", ids["documents.read"])]
    assert [(p.name, p.id) for p in key.permissions] == [("documents.write", ids["documents.write"])]


async def test_ok_shows_permissions_other_calls_added_to_the_catalog(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    await admin.make_key(api.id, ["documents.write"])
    await admin.make_role(api.id, "auditor", ["audit.read"])
    assert [s.value for s in (await get_api(admin, api.id)).scopes] == [
        "audit.read",
        "documents.read",
        "documents.write",
    ]


async def test_ok_reflects_the_latest_scope_list(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    await admin.apis.UpdateScopes(
        apis_pb2.UpdateScopesRequest(
            api_id=api.id, scopes=[permissions_pb2.Scope(value="documents.read", description="now described")]
        ),
        metadata=admin.md,
    )
    assert [(s.value, s.description) for s in (await get_api(admin, api.id)).scopes] == [
        ("documents.read", "now described")
    ]


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{id}.read_api"],
        ["api.*.read_api"],
        ["api.{id}.*"],
        ["*.{id}.read_api"],
        ["*.*.*"],
    ],
)
async def test_ok_with_read_api(admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]) -> None:
    api = await admin.make_api(["documents.read"])
    reader = await make_caller([p.format(id=api.id) for p in permissions])
    before = await store.export_snapshot()
    assert await get_api(reader, api.id) == api
    # A read changes nothing, not even the revision.
    assert await store.export_snapshot() == before


# -- invalid argument -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_id", "description"),
    [
        ("", "is required"),
        ("api-1", "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like api_3f9c2a"),
        ("api 1", "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like api_3f9c2a"),
        ("api.1", "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like api_3f9c2a"),
        ("api_é", "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like api_3f9c2a"),
        ("a" * 65, "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like api_3f9c2a"),
    ],
)
async def test_invalid_argument_api_id(admin: Caller, api_id: str, description: str) -> None:
    error = await get_api_error(admin, api_id)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"api_id": description}


async def test_not_found_for_a_well_formed_id_of_64_characters(admin: Caller) -> None:
    # 64 characters is still a valid id, so the answer is about existence, not shape.
    error = await get_api_error(admin, "a" * 64)
    assert error.code() == grpc.StatusCode.NOT_FOUND


# -- not found (also what a caller without read_api gets) -------------------------------------------


async def test_not_found_unknown_api(admin: Caller) -> None:
    error = await get_api_error(admin, UNKNOWN_API)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(error) == [UNKNOWN_API]


@pytest.mark.parametrize(
    "permissions",
    [
        [],
        # Every other verb on this very API: none of them is read_api.
        [
            "api.{id}.update_api",
            "api.{id}.create_key",
            "api.{id}.read_key",
            "api.{id}.update_key",
            "api.{id}.delete_key",
            "api.{id}.verify_key",
            "api.*.create_api",
        ],
        ["rbac.{id}.*"],
        ["api.{other}.read_api"],
        ["*.{other}.*"],
        ["api.{id}.read_api.extra"],
        ["api.{id}"],
        ["api.{id}.READ_API"],
        ["api.*.read_api*"],
        ["api.read_api.*"],
    ],
)
async def test_not_found_without_read_api_is_the_same_answer_as_an_unknown_api(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api(name="other")
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    hidden = await get_api_error(caller, api.id)
    unknown = await get_api_error(caller, UNKNOWN_API)

    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(hidden) == [api.id]
    assert blanked_answer(hidden, api.id) == blanked_answer(unknown, UNKNOWN_API)
    assert await store.export_snapshot() == before


async def test_not_found_an_id_of_another_kind(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    role = await admin.make_role(api.id, "reader", ["documents.read"])
    error = await get_api_error(admin, role.id)
    assert error.code() == grpc.StatusCode.NOT_FOUND
