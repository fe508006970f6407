"""ApiService.ListPermissions: an API's permission catalog (its scopes), ordered by value, a page at a time.

It needs `api.<api_id>.read_api`, which is also what lets a caller see the API at all: a caller without it gets
NOT_FOUND, exactly as for an API that does not exist, never PERMISSION_DENIED.
"""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import apis_pb2, permissions_pb2, roles_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.paging import every_page, unsigned_token
from tests.rpc_errors import blanked_answer, error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Request = apis_pb2.ListPermissionsRequest
UNKNOWN_API = "api_0000000000000000"


async def _list(caller: Caller, api_id: str, **fields: object) -> apis_pb2.ListPermissionsResponse:
    return await caller.apis.ListPermissions(Request(api_id=api_id, **fields), metadata=caller.md)  # type: ignore[arg-type]


async def _pages(caller: Caller, api_id: str, page_size: int, page_token: str = "") -> list[list[str]]:
    """The values of every page from `page_token` on, following next_page_token to the end."""

    async def fetch(size: int, token: str) -> tuple[list[str], str]:
        page = await _list(caller, api_id, page_size=size, page_token=token)
        return [s.value for s in page.scopes], page.next_page_token

    return await every_page(fetch, page_size, page_token)


async def _set_scopes(admin: Caller, api_id: str, values: list[str]) -> apis_pb2.UpdateScopesResponse:
    request = apis_pb2.UpdateScopesRequest(api_id=api_id, scopes=[permissions_pb2.Scope(value=v) for v in values])
    return await admin.apis.UpdateScopes(request, metadata=admin.md)


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_the_whole_catalog_by_value_as_get_api_shows_it(admin: Caller, store: Store) -> None:
    api = await admin.make_api([("documents.read", "Read"), ("Documents.write", "Write"), ("_ops", ""), ("admin", "")])
    await admin.make_key(api.id, ["billing.read"])  # catalog entries other calls add are listed too
    await admin.make_role(api.id, "auditor", ["audit.read"])
    await admin.make_api(["other.api.scope"], name="other")
    before = await store.export_snapshot()

    response = await _list(admin, api.id)

    # Byte order: upper case before `_` before lower case, on every engine.
    assert [s.value for s in response.scopes] == [
        "Documents.write",
        "_ops",
        "admin",
        "audit.read",
        "billing.read",
        "documents.read",
    ]
    assert list(response.scopes) == list((await admin.get_api(api.id)).scopes)  # ids and descriptions too
    assert response.next_page_token == ""
    assert await store.export_snapshot() == before


async def test_ok_page_size_0_means_50_and_1000_is_allowed(admin: Caller) -> None:
    values = sorted(f"scope.{n:02}" for n in range(60))
    api = await admin.make_api(values)

    default = await _list(admin, api.id)
    largest = await _list(admin, api.id, page_size=1000)
    rest = await _pages(admin, api.id, page_size=0, page_token=default.next_page_token)

    assert [s.value for s in default.scopes] == values[:50]
    assert [v for page in rest for v in page] == values[50:]
    assert ([s.value for s in largest.scopes], largest.next_page_token) == (values, "")


async def test_ok_pages_hold_every_scope_once_in_order(admin: Caller) -> None:
    values = [f"documents.{verb}" for verb in ("read", "write", "delete", "share", "admin", "list", "audit")]
    api = await admin.make_api(values)

    pages = await _pages(admin, api.id, page_size=2)

    assert [v for page in pages for v in page] == sorted(values)
    assert len(pages) >= 4


async def test_ok_scopes_added_and_removed_between_pages(admin: Caller) -> None:
    api = await admin.make_api(["a", "c", "e", "g"])
    first = await _list(admin, api.id, page_size=2)
    assert [s.value for s in first.scopes] == ["a", "c"]
    # `c`, the token's position, goes; `b` comes before it, `d` and `f` after it.
    await _set_scopes(admin, api.id, ["a", "b", "d", "e", "f", "g"])

    rest = await _pages(admin, api.id, page_size=2, page_token=first.next_page_token)

    assert [v for page in rest for v in page] == ["d", "e", "f", "g"]


@pytest.mark.parametrize("read_api", ["api.{id}.read_api", "api.*.read_api", "*.{id}.*"])
async def test_ok_caller_with_read_api_only(admin: Caller, make_caller: MakeCaller, read_api: str) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    caller = await make_caller([read_api.format(id=api.id)])
    assert [s.value for s in (await _list(caller, api.id)).scopes] == ["documents.read", "documents.write"]


async def test_ok_min_revision_of_the_latest_write_sees_it(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    written = await _set_scopes(admin, api.id, ["documents.write"])
    response = await _list(admin, api.id, min_revision=written.revision)
    assert [s.value for s in response.scopes] == ["documents.write"]


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"api_id": ""}, "api_id"),
        ({"api_id": "api-1"}, "api_id"),
        ({"api_id": "a" * 65}, "api_id"),
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "abc"}, "page_token"),
        ({"page_token": unsigned_token({"p": "a", "f": "0" * 16})}, "page_token"),
        ({"min_revision": -1}, "min_revision"),
    ],
    ids=[
        "empty api_id",
        "api_id with a dash",
        "api_id of 65 characters",
        "negative page_size",
        "page_size 1001",
        "garbage token",
        "unsigned token",
        "negative min_revision",
    ],
)
async def test_invalid_argument(admin: Caller, store: Store, fields: dict[str, object], field: str) -> None:
    api = await admin.make_api(["a", "b", "c"])
    request = {"api_id": api.id, **fields}
    error = await rejected(store, lambda: _list(admin, **request), grpc.StatusCode.INVALID_ARGUMENT)  # type: ignore[arg-type]
    assert list(field_violations(error)) == [field]


async def test_invalid_argument_page_token_altered_in_the_middle(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b", "c"])
    token = (await _list(admin, api.id, page_size=1)).next_page_token
    middle = len(token) // 2  # not the last character, which may carry only padding bits
    altered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    error = await rejected(
        store, lambda: _list(admin, api.id, page_size=1, page_token=altered), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "page_token" in field_violations(error)


@pytest.mark.parametrize("source", ["another api", "ListRoles"])
async def test_invalid_argument_page_token_of_another_list(admin: Caller, store: Store, source: str) -> None:
    # Both are lists keyed by a name within an API: a token that only held the position would fit.
    api = await admin.make_api(["a", "b", "c"])
    other = await admin.make_api(["a", "b", "c"])
    if source == "another api":
        token = (await _list(admin, other.id, page_size=1)).next_page_token
    else:
        for name in ("a", "b", "c"):
            await admin.make_role(api.id, name)
        roles = await admin.roles.ListRoles(roles_pb2.ListRolesRequest(api_id=api.id, page_size=1), metadata=admin.md)
        token = roles.next_page_token
    assert token

    error = await rejected(
        store, lambda: _list(admin, api.id, page_size=1, page_token=token), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "page_token" in field_violations(error)


# -- not found (also what a caller without read_api gets) -------------------------------------------


async def test_not_found_unknown_api(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _list(admin, UNKNOWN_API), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [UNKNOWN_API]


@pytest.mark.parametrize(
    "permissions",
    [
        [],
        ["api.{id}.read_key", "api.{id}.update_api", "rbac.{id}.read_role", "api.*.create_api"],
        ["api.{other}.read_api"],
    ],
    ids=["nothing", "every right but read_api", "read_api of another api"],
)
async def test_not_found_without_read_api_is_the_same_answer_as_an_unknown_api(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["documents.read"])
    other = await admin.make_api(name="other")
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])

    hidden = await rejected(store, lambda: _list(caller, api.id), grpc.StatusCode.NOT_FOUND)
    unknown = await rejected(store, lambda: _list(caller, UNKNOWN_API), grpc.StatusCode.NOT_FOUND)

    assert resource_names(hidden) == [api.id]
    assert blanked_answer(hidden, api.id) == blanked_answer(unknown, UNKNOWN_API)


# -- out of range -----------------------------------------------------------------------------------


async def test_out_of_range_min_revision_ahead_of_the_store(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    current = await store.revision()
    error = await rejected(store, lambda: _list(admin, api.id, min_revision=current + 1), grpc.StatusCode.OUT_OF_RANGE)
    info = error_info(error)
    assert info.reason == "REVISION_NOT_REACHED"
    assert dict(info.metadata) == {"min_revision": str(current + 1), "revision": str(current)}
