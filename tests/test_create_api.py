"""ApiService.CreateApi: a new API, optionally with an initial scope list (the UpdateScopes rules)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from keyscope.v1 import apis_pb2, permissions_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, request_id

pytestmark = pytest.mark.asyncio

PATTERN = r"must match ^[a-zA-Z0-9_:\-\.\*]+$"


def request(name: str = "documents", scopes: Sequence[tuple[str, str]] = ()) -> apis_pb2.CreateApiRequest:
    return apis_pb2.CreateApiRequest(
        name=name, scopes=[permissions_pb2.Scope(value=v, description=d) for v, d in scopes]
    )


async def create_api(
    caller: Caller, req: apis_pb2.CreateApiRequest, metadata: Sequence[tuple[str, str]] | None = None
) -> apis_pb2.CreateApiResponse:
    return await caller.apis.CreateApi(req, metadata=caller.md if metadata is None else metadata)


# -- ok ---------------------------------------------------------------------------------------


async def test_ok_returns_the_api_with_its_scopes_and_the_next_revision(admin: Caller, store: Store) -> None:
    before = await store.revision()

    response = await create_api(
        admin, request("documents", [("documents.read", "Read documents"), ("documents.write", "Write documents")])
    )

    api = response.api
    assert api.id.startswith("api_")
    assert api.name == "documents"
    assert [(s.value, s.description) for s in api.scopes] == [
        ("documents.read", "Read documents"),
        ("documents.write", "Write documents"),
    ]
    assert all(s.id.startswith("perm_") for s in api.scopes)
    assert len({s.id for s in api.scopes}) == 2
    assert api.create_time.ToMilliseconds() > 0
    assert api.update_time == api.create_time
    assert response.revision == before + 1 == await store.revision()


async def test_ok_what_it_returns_is_what_get_api_reads(admin: Caller) -> None:
    response = await create_api(admin, request("documents", [("b", "second"), ("a", "first")]))
    assert await admin.get_api(response.api.id) == response.api


async def test_ok_without_scopes_the_catalog_is_empty(admin: Caller, store: Store) -> None:
    before = await store.revision()
    response = await create_api(admin, request("bare"))
    assert list(response.api.scopes) == []
    assert response.revision == before + 1


async def test_ok_scopes_are_ordered_by_value(admin: Caller) -> None:
    values = ["b.read", "A.read", "a.read", "_z", "0.read", "a.*"]
    response = await create_api(admin, request(scopes=[(v, "") for v in values]))
    # Byte order, as the store sorts: digits < upper case < `_` < lower case.
    assert [s.value for s in response.api.scopes] == sorted(values)


async def test_ok_scope_ids_sent_in_the_request_are_ignored(admin: Caller) -> None:
    req = apis_pb2.CreateApiRequest(name="documents", scopes=[permissions_pb2.Scope(id="perm_mine", value="x")])
    [scope] = (await create_api(admin, req)).api.scopes
    assert scope.id != "perm_mine"
    assert scope.id.startswith("perm_")


async def test_ok_each_api_gets_its_own_id_and_catalog_even_with_the_same_name(admin: Caller, store: Store) -> None:
    before = await store.revision()
    first = await create_api(admin, request("same", [("documents.read", "")]))
    second = await create_api(admin, request("same", [("documents.read", "")]))
    assert first.api.id != second.api.id
    # Catalogs are per API: the same value is a different entry.
    assert first.api.scopes[0].id != second.api.scopes[0].id
    assert (first.revision, second.revision) == (before + 1, before + 2)


@pytest.mark.parametrize("name", ["x", "n" * 200, "Documents API (v2) — ünïcödé 名前"])
async def test_ok_name_limits(admin: Caller, name: str) -> None:
    response = await create_api(admin, request(name))
    assert response.api.name == name
    assert (await admin.get_api(response.api.id)).name == name


@pytest.mark.parametrize("value", ["x", "v" * 280, "read:users", "documents.read", "a-b_c:d.e*", "*", "documents.*"])
async def test_ok_scope_value_limits(admin: Caller, value: str) -> None:
    [scope] = (await create_api(admin, request(scopes=[(value, "")]))).api.scopes
    assert scope.value == value


async def test_ok_scope_description_limits(admin: Caller) -> None:
    descriptions = ["", "d" * 500, "two\nlines\tand a tab", "ünïcödé"]
    response = await create_api(admin, request(scopes=[(f"s{i}", d) for i, d in enumerate(descriptions)]))
    assert [s.description for s in response.api.scopes] == descriptions


async def test_ok_a_thousand_scopes(admin: Caller) -> None:
    values = [f"scope.{i:04d}" for i in range(1000)]
    response = await create_api(admin, request(scopes=[(v, "") for v in values]))
    assert [s.value for s in response.api.scopes] == values


async def test_ok_only_create_api_is_needed(make_caller: MakeCaller, admin: Caller) -> None:
    creator = await make_caller(["api.*.create_api"])
    response = await create_api(creator, request("documents", [("documents.read", "")]))
    # It may create an API without being able to read it afterwards; an admin can.
    assert (await admin.get_api(response.api.id)) == response.api


@pytest.mark.parametrize("permissions", [["api.*.*"], ["*.*.create_api"], ["*.*.*"]])
async def test_ok_wildcards_that_cover_create_api(make_caller: MakeCaller, permissions: list[str]) -> None:
    caller = await make_caller(permissions)
    assert (await create_api(caller, request("documents"))).api.id.startswith("api_")


# -- invalid argument -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("", "is required"),
        ("   ", "is required"),
        ("n" * 201, "must be at most 200 characters (got 201)"),
        ("nul\x00byte", "must not contain control characters"),
        ("bell\x07", "must not contain control characters"),
        ("escape\x1b[31m", "must not contain control characters"),
        ("carriage\rreturn", "must not contain control characters"),
        ("delete\x7f", "must not contain control characters"),
        ("next line\x85", "must not contain control characters"),
    ],
)
async def test_invalid_argument_name(admin: Caller, store: Store, name: str, description: str) -> None:
    error = await rejected(store, lambda: create_api(admin, request(name)), grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(error) == {"name": description}


@pytest.mark.parametrize(
    ("scopes", "violations"),
    [
        ([("", "")], {"scopes[0].value": "must not be empty"}),
        ([("ok", ""), ("v" * 281, "")], {"scopes[1].value": "must be at most 280 characters (got 281)"}),
        ([("documents read", "")], {"scopes[0].value": PATTERN}),
        ([("documents/read", "")], {"scopes[0].value": PATTERN}),
        ([("dócuments.read", "")], {"scopes[0].value": PATTERN}),
        ([("documents.read\n", "")], {"scopes[0].value": PATTERN}),
        ([("a", ""), ("b", ""), ("a", "again")], {"scopes[2].value": "duplicates scopes[0].value 'a'"}),
        ([("a", "d" * 501)], {"scopes[0].description": "must be at most 500 characters (got 501)"}),
        ([("a", ""), ("b", "bell\x07")], {"scopes[1].description": "must not contain control characters"}),
    ],
    ids=[
        "empty",
        "too-long",
        "space",
        "slash",
        "non-ascii",
        "newline",
        "duplicate",
        "long-description",
        "control-in-description",
    ],
)
async def test_invalid_argument_scopes(
    admin: Caller, store: Store, scopes: list[tuple[str, str]], violations: dict[str, str]
) -> None:
    error = await rejected(
        store, lambda: create_api(admin, request("documents", scopes)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert field_violations(error) == violations


async def test_invalid_argument_more_than_a_thousand_scopes(admin: Caller, store: Store) -> None:
    error = await rejected(
        store,
        lambda: create_api(admin, request(scopes=[(f"scope.{i}", "") for i in range(1001)])),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error) == {"scopes": "must hold at most 1000 scopes (got 1001)"}


async def test_invalid_argument_lists_every_bad_field_at_once(admin: Caller, store: Store) -> None:
    error = await rejected(
        store,
        lambda: create_api(admin, request("", [("ok", ""), ("bad value", ""), ("ok", "d" * 501)])),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error) == {
        "name": "is required",
        "scopes[1].value": PATTERN,
        "scopes[2].value": "duplicates scopes[0].value 'ok'",
        "scopes[2].description": "must be at most 500 characters (got 501)",
    }
    assert request_id(error)


# -- permission denied ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permissions",
    [
        [],
        ["api.*.read_api", "api.*.update_api", "api.*.create_key", "rbac.*.create_role"],
        # The permission is literally `api.*.create_api`: naming one API does not grant it.
        ["api.api_1.create_api"],
        ["api.*.create_ap"],
        ["api.*.Create_Api"],
        ["api.*"],
    ],
)
async def test_permission_denied_without_create_api(
    make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    caller = await make_caller(permissions)
    error = await rejected(
        store,
        lambda: create_api(caller, request("documents", [("documents.read", "")])),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    info = error_info(error)
    assert info.reason == "MISSING_PERMISSION"
    assert info.metadata["permission"] == "api.*.create_api"


async def test_invalid_argument_is_checked_before_permission(make_caller: MakeCaller) -> None:
    # Validation touches no stored data, so answering it first reveals nothing.
    caller = await make_caller([])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create_api(caller, request(""))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
