"""ApiService.ListApis: the APIs the caller may read, each as GetApi shows it, ordered by id, a page at a time.

An API the caller may not read is left out of the list, never an error: a caller that may read none gets an
empty list. So ListApis has no PERMISSION_DENIED and no NOT_FOUND.
"""

from __future__ import annotations

import base64
import json

import grpc
import pytest

from keyscope.v1 import apis_pb2, audit_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.paging import every_page, unsigned_token
from tests.rpc_errors import error_info, field_violations, rejected

pytestmark = pytest.mark.asyncio

Request = apis_pb2.ListApisRequest


async def _list(caller: Caller, **fields: object) -> apis_pb2.ListApisResponse:
    return await caller.apis.ListApis(Request(**fields), metadata=caller.md)  # type: ignore[arg-type]


async def _pages(caller: Caller, page_size: int, page_token: str = "") -> list[list[str]]:
    """The ids of every page from `page_token` on, following next_page_token to the end."""

    async def fetch(size: int, token: str) -> tuple[list[str], str]:
        page = await _list(caller, page_size=size, page_token=token)
        return [a.id for a in page.apis], page.next_page_token

    return await every_page(fetch, page_size, page_token)


async def _make_apis(admin: Caller, count: int) -> list[str]:
    """`count` new APIs, their ids in the order ListApis gives them (byte order, as str sorts ASCII)."""
    return sorted([(await admin.make_api([f"scope.{n}"], name=f"api {n}")).id for n in range(count)])


def _signed_looking(payload: object) -> str:
    """A JSON payload followed by 16 bytes where the server's signature would be."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode() + bytes(16)).decode().rstrip("=")


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_every_api_by_id_with_its_whole_scope_list(admin: Caller, store: Store) -> None:
    made = [
        await admin.make_api([("documents.write", "Write"), ("documents.read", "Read")], name="documents"),
        await admin.make_api(name="empty"),
        await admin.make_api(["billing.read"], name="billing"),
    ]
    await admin.make_key(made[1].id, ["created.by.a.key"])  # a catalog entry another call added
    before = await store.export_snapshot()

    response = await _list(admin)

    assert list(response.apis) == [await admin.get_api(api_id) for api_id in sorted(a.id for a in made)]
    assert [s.value for s in next(a for a in response.apis if a.id == made[0].id).scopes] == [
        "documents.read",
        "documents.write",
    ]
    assert response.next_page_token == ""
    assert await store.export_snapshot() == before  # a read changes nothing, not even the revision


async def test_ok_pages_hold_every_api_once_in_order(admin: Caller) -> None:
    ids = await _make_apis(admin, 7)

    pages = await _pages(admin, page_size=3)

    assert [api_id for page in pages for api_id in page] == ids
    assert len(pages) >= 3


@pytest.mark.parametrize(
    ("permissions", "listed"),
    [
        (["api.{0}.read_api", "api.{3}.read_api"], [0, 3]),
        (["api.{2}.*"], [2]),
        (["api.*.read_api"], [0, 1, 2, 3, 4]),
        (["*.*.*"], [0, 1, 2, 3, 4]),
        # Everything but read_api, or read_api of nothing there: an empty list, not an error.
        (["api.*.read_key", "api.*.update_api", "rbac.*.read_role", "api.{0}.read_api.extra", "api.{0}"], []),
    ],
    ids=["two of them", "all verbs of one", "wildcard api", "wildcard everything", "none"],
)
async def test_ok_only_the_apis_the_caller_may_read(
    admin: Caller, make_caller: MakeCaller, permissions: list[str], listed: list[int]
) -> None:
    ids = await _make_apis(admin, 5)
    caller = await make_caller([p.format(*ids) for p in permissions])

    whole = await _list(caller)
    pages = await _pages(caller, page_size=1)

    assert [a.id for a in whole.apis] == [ids[n] for n in listed]
    assert whole.next_page_token == ""
    assert [api_id for page in pages for api_id in page] == [ids[n] for n in listed]


async def test_ok_apis_created_between_pages_appear_after_the_tokens_position(admin: Caller) -> None:
    await _make_apis(admin, 5)
    first = await _list(admin, page_size=2)
    position = first.apis[-1].id
    await _make_apis(admin, 6)  # random ids: some sort before the position, some after

    rest = await _pages(admin, page_size=2, page_token=first.next_page_token)

    everything = [a.id for a in (await _list(admin, page_size=1000)).apis]
    assert [api_id for page in rest for api_id in page] == [i for i in everything if i > position]


async def test_ok_min_revision_of_the_latest_write_sees_it(admin: Caller) -> None:
    created = await admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="new"), metadata=admin.md)
    response = await _list(admin, min_revision=created.revision)
    assert [a.id for a in response.apis] == [created.api.id]


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "abc"}, "page_token"),
        ({"page_token": unsigned_token({"p": "api_0", "f": "0" * 16})}, "page_token"),
        ({"page_token": _signed_looking({"p": "api_0", "f": "0" * 16})}, "page_token"),
        ({"min_revision": -1}, "min_revision"),
    ],
    ids=[
        "negative page_size",
        "page_size 1001",
        "garbage token",
        "unsigned token",
        "unsigned token with a mac",
        "negative min_revision",
    ],
)
async def test_invalid_argument(admin: Caller, store: Store, fields: dict[str, object], field: str) -> None:
    await _make_apis(admin, 2)
    error = await rejected(store, lambda: _list(admin, **fields), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == [field]


async def test_invalid_argument_page_token_altered_in_the_middle(admin: Caller, store: Store) -> None:
    await _make_apis(admin, 3)
    token = (await _list(admin, page_size=1)).next_page_token
    middle = len(token) // 2  # not the last character, which may carry only padding bits
    altered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    error = await rejected(
        store, lambda: _list(admin, page_size=1, page_token=altered), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "page_token" in field_violations(error)


@pytest.mark.parametrize("rpc", ["ListPermissions", "ListAuditEvents"])
async def test_invalid_argument_page_token_of_another_list(admin: Caller, store: Store, rpc: str) -> None:
    api = await admin.make_api(["a", "b", "c"])
    await _make_apis(admin, 2)
    token: str
    if rpc == "ListPermissions":
        listed = await admin.apis.ListPermissions(
            apis_pb2.ListPermissionsRequest(api_id=api.id, page_size=1), metadata=admin.md
        )
        token = listed.next_page_token
    else:
        events = await admin.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=1), metadata=admin.md)
        token = events.next_page_token
    assert token

    error = await rejected(store, lambda: _list(admin, page_size=1, page_token=token), grpc.StatusCode.INVALID_ARGUMENT)
    assert "page_token" in field_violations(error)


# -- out of range -----------------------------------------------------------------------------------


async def test_out_of_range_min_revision_ahead_of_the_store(admin: Caller, store: Store) -> None:
    await _make_apis(admin, 1)
    current = await store.revision()
    error = await rejected(store, lambda: _list(admin, min_revision=current + 1), grpc.StatusCode.OUT_OF_RANGE)
    info = error_info(error)
    assert info.reason == "REVISION_NOT_REACHED"
    assert dict(info.metadata) == {"min_revision": str(current + 1), "revision": str(current)}
