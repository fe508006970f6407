"""RoleService.ListRoles: the roles of an API, each with its permissions as GetRole shows it, ordered by name, a
page at a time.

It needs `rbac.<api_id>.read_role`. A caller that may read the API but not its roles gets PERMISSION_DENIED; one
that may do neither gets NOT_FOUND, as for an API that does not exist.
"""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import apis_pb2, roles_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.paging import every_page, flat, unsigned_token
from tests.rpc_errors import blanked_answer, error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Request = roles_pb2.ListRolesRequest
UNKNOWN_API = "api_0000000000000000"


async def _list(caller: Caller, api_id: str, **fields: object) -> roles_pb2.ListRolesResponse:
    return await caller.roles.ListRoles(Request(api_id=api_id, **fields), metadata=caller.md)  # type: ignore[arg-type]


async def _pages(caller: Caller, api_id: str, page_size: int, page_token: str = "") -> list[list[str]]:
    """The names of every page from `page_token` on, following next_page_token to the end."""

    async def fetch(size: int, token: str) -> tuple[list[str], str]:
        page = await _list(caller, api_id, page_size=size, page_token=token)
        return [r.name for r in page.roles], page.next_page_token

    return await every_page(fetch, page_size, page_token)


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_the_apis_roles_by_name_as_get_role_shows_them(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read"])
    made = [
        await admin.make_role(api.id, "writer", ["documents.write", "documents.read"], description="Writes"),
        await admin.make_role(api.id, "Admin", ["*"]),
        await admin.make_role(api.id, "_ops"),
        await admin.make_role(api.id, "reader", ["documents.read"]),
    ]
    other = await admin.make_api(name="other")
    await admin.make_role(other.id, "auditor", ["audit.read"])
    before = await store.export_snapshot()

    response = await _list(admin, api.id)

    # Byte order: upper case before `_` before lower case, on every engine.
    assert [r.name for r in response.roles] == ["Admin", "_ops", "reader", "writer"]
    by_name = {r.name: r.id for r in made}
    assert list(response.roles) == [await admin.get_role(by_name[r.name]) for r in response.roles]
    assert [p.name for p in response.roles[3].permissions] == ["documents.read", "documents.write"]
    assert response.next_page_token == ""
    assert await store.export_snapshot() == before


async def test_ok_pages_hold_every_role_once_in_order(admin: Caller) -> None:
    api = await admin.make_api()
    names = [f"role.{n}" for n in range(6)]
    for name in reversed(names):
        await admin.make_role(api.id, name)

    pages = await _pages(admin, api.id, page_size=2)

    assert flat(pages) == names
    assert len(pages) >= 3


async def test_ok_roles_created_between_pages_after_the_tokens_position_appear(admin: Caller) -> None:
    api = await admin.make_api()
    for name in ("r1", "r3", "r5", "r7"):
        await admin.make_role(api.id, name)
    first = await _list(admin, api.id, page_size=2)
    assert [r.name for r in first.roles] == ["r1", "r3"]
    for name in ("r2", "r4", "r6"):
        await admin.make_role(api.id, name)

    rest = await _pages(admin, api.id, page_size=2, page_token=first.next_page_token)

    assert flat(rest) == ["r4", "r5", "r6", "r7"]


@pytest.mark.parametrize("read_role", ["rbac.{id}.read_role", "rbac.*.read_role", "rbac.{id}.*"])
async def test_ok_caller_with_read_role_only_sees_the_latest_write(
    admin: Caller, make_caller: MakeCaller, read_role: str
) -> None:
    api = await admin.make_api()
    role = await admin.make_role(api.id, "reader", ["documents.read"])
    caller = await make_caller([read_role.format(id=api.id)])
    written = await admin.roles.SetRolePermissions(
        roles_pb2.SetRolePermissionsRequest(role_id=role.id, permissions=["documents.write"]), metadata=admin.md
    )

    response = await _list(caller, api.id, min_revision=written.revision)

    assert [(r.id, [p.name for p in r.permissions]) for r in response.roles] == [(role.id, ["documents.write"])]


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"api_id": ""}, "api_id"),
        ({"api_id": "api 1"}, "api_id"),
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "abc"}, "page_token"),
        ({"page_token": unsigned_token({"p": "a", "f": "0" * 16})}, "page_token"),
        ({"min_revision": -1}, "min_revision"),
    ],
    ids=[
        "empty api_id",
        "api_id with a space",
        "negative page_size",
        "page_size 1001",
        "garbage token",
        "unsigned token",
        "negative min_revision",
    ],
)
async def test_invalid_argument(admin: Caller, store: Store, fields: dict[str, object], field: str) -> None:
    api = await admin.make_api()
    for name in ("a", "b", "c"):
        await admin.make_role(api.id, name)
    request = {"api_id": api.id, **fields}
    error = await rejected(store, lambda: _list(admin, **request), grpc.StatusCode.INVALID_ARGUMENT)  # type: ignore[arg-type]
    assert list(field_violations(error)) == [field]


async def test_invalid_argument_page_token_altered_in_the_middle(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    for name in ("a", "b", "c"):
        await admin.make_role(api.id, name)
    token = (await _list(admin, api.id, page_size=1)).next_page_token
    middle = len(token) // 2  # not the last character, which may carry only padding bits
    altered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    error = await rejected(
        store, lambda: _list(admin, api.id, page_size=1, page_token=altered), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "page_token" in field_violations(error)


@pytest.mark.parametrize("source", ["another api", "ListApis", "ListPermissions"])
async def test_invalid_argument_page_token_of_another_list(admin: Caller, store: Store, source: str) -> None:
    api = await admin.make_api(["a", "b", "c"])
    other = await admin.make_api(["a", "b", "c"], name="other")
    for api_id in (api.id, other.id):
        for name in ("a", "b", "c"):
            await admin.make_role(api_id, name)
    token: str
    if source == "another api":
        token = (await _list(admin, other.id, page_size=1)).next_page_token
    elif source == "ListApis":
        token = (await admin.apis.ListApis(apis_pb2.ListApisRequest(page_size=1), metadata=admin.md)).next_page_token
    else:
        listed = await admin.apis.ListPermissions(
            apis_pb2.ListPermissionsRequest(api_id=api.id, page_size=1), metadata=admin.md
        )
        token = listed.next_page_token
    assert token

    error = await rejected(
        store, lambda: _list(admin, api.id, page_size=1, page_token=token), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "page_token" in field_violations(error)


# -- permission denied ------------------------------------------------------------------------------


async def test_permission_denied_with_read_api_but_not_read_role(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    caller = await make_caller([f"api.{api.id}.read_api", f"rbac.{api.id}.update_role", f"api.{api.id}.read_key"])
    error = await rejected(store, lambda: _list(caller, api.id), grpc.StatusCode.PERMISSION_DENIED)
    assert error_info(error).metadata["permission"] == f"rbac.{api.id}.read_role"


# -- not found ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permissions",
    [[], ["rbac.{other}.read_role", "api.{other}.read_api", "rbac.{id}.update_role", "api.{id}.read_key"]],
    ids=["nothing", "neither read_api nor read_role of this api"],
)
async def test_not_found_without_read_api_or_read_role_is_the_same_answer_as_an_unknown_api(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    other = await admin.make_api(name="other")
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])

    hidden = await rejected(store, lambda: _list(caller, api.id), grpc.StatusCode.NOT_FOUND)
    unknown = await rejected(store, lambda: _list(caller, UNKNOWN_API), grpc.StatusCode.NOT_FOUND)

    assert (resource_names(hidden), resource_names(unknown)) == ([api.id], [UNKNOWN_API])
    assert blanked_answer(hidden, api.id) == blanked_answer(unknown, UNKNOWN_API)


async def test_not_found_unknown_api_for_a_caller_who_may_read_every_role(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _list(admin, UNKNOWN_API), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [UNKNOWN_API]


# -- out of range -----------------------------------------------------------------------------------


async def test_out_of_range_min_revision_ahead_of_the_store(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    current = await store.revision()
    error = await rejected(store, lambda: _list(admin, api.id, min_revision=current + 1), grpc.StatusCode.OUT_OF_RANGE)
    info = error_info(error)
    assert info.reason == "REVISION_NOT_REACHED"
    assert dict(info.metadata) == {"min_revision": str(current + 1), "revision": str(current)}
