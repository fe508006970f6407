"""KeyService.ListKeys: the keys of an API as GetKey shows them (never their secrets), ordered by id, a page at a
time; optionally only the enabled (or disabled) ones, those holding a permission (directly or through a role), or
those having a role.

It needs `api.<api_id>.read_key`. A caller that may read the API but not its keys gets PERMISSION_DENIED; one that
may do neither gets NOT_FOUND, as for an API that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from keyscope.v1 import keys_pb2, roles_pb2
from keyscope_server.store import Store
from tests.client import Caller, from_now
from tests.conftest import MakeCaller
from tests.paging import every_page, flat, unsigned_token
from tests.rpc_errors import blanked_answer, error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Request = keys_pb2.ListKeysRequest
UNKNOWN_API = "api_0000000000000000"


async def _list(caller: Caller, api_id: str, **fields: object) -> keys_pb2.ListKeysResponse:
    return await caller.keys.ListKeys(Request(api_id=api_id, **fields), metadata=caller.md)  # type: ignore[arg-type]


async def _ids(caller: Caller, api_id: str, **fields: object) -> list[str]:
    return [k.id for k in (await _list(caller, api_id, page_size=1000, **fields)).keys]


async def _pages(
    caller: Caller, api_id: str, page_size: int, page_token: str = "", **fields: object
) -> list[list[str]]:
    """The ids of every page from `page_token` on, following next_page_token to the end."""

    async def fetch(size: int, token: str) -> tuple[list[str], str]:
        page = await _list(caller, api_id, page_size=size, page_token=token, **fields)
        return [k.id for k in page.keys], page.next_page_token

    return await every_page(fetch, page_size, page_token)


async def _make_keys(admin: Caller, api_id: str, count: int, permissions: Sequence[str] = ()) -> list[str]:
    """`count` new keys, their ids in the order ListKeys gives them (byte order, as str sorts ASCII)."""
    return sorted([(await admin.make_key(api_id, permissions))[0].id for _ in range(count)])


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_the_apis_keys_by_id_as_get_key_shows_them_without_secrets(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read"])
    await admin.make_role(api.id, "reader", ["documents.read"])
    made = [
        await admin.make_key(api.id, ["billing.read"], ["reader"], name="ci", prefix="sk", expire_time=from_now(3600)),
        await admin.make_key(api.id, enabled=False),
        await admin.make_key(api.id, ["documents.read"]),
    ]
    other = await admin.make_api(name="other")
    await admin.make_key(other.id, ["documents.read"])
    before = await store.export_snapshot()

    response = await _list(admin, api.id)

    assert list(response.keys) == [await admin.get_key(key_id) for key_id in sorted(k.id for k, _ in made)]
    assert response.next_page_token == ""
    for _, secret in made:
        assert secret.encode() not in response.SerializeToString()
        assert secret.split("_")[-1].encode() not in response.SerializeToString()
    assert await store.export_snapshot() == before


async def test_ok_pages_hold_every_key_once_in_order(admin: Caller) -> None:
    api = await admin.make_api()
    ids = await _make_keys(admin, api.id, 7)

    pages = await _pages(admin, api.id, page_size=3)

    assert flat(pages) == ids
    assert len(pages) >= 3


async def test_ok_keys_created_or_deleted_between_pages(admin: Caller) -> None:
    api = await admin.make_api()
    ids = await _make_keys(admin, api.id, 6)
    first = await _list(admin, api.id, page_size=2)
    position = first.keys[-1].id
    # The key at the token's position goes, and one further on; new keys get random ids, before and after it.
    for gone in (position, ids[4]):
        await admin.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=gone), metadata=admin.md)
    await _make_keys(admin, api.id, 6)

    rest = await _pages(admin, api.id, page_size=2, page_token=first.next_page_token)

    assert flat(rest) == [key_id for key_id in await _ids(admin, api.id) if key_id > position]
    assert position not in flat(rest) and ids[4] not in flat(rest)


async def test_ok_enabled_filter(admin: Caller) -> None:
    api = await admin.make_api()
    enabled = sorted([(await admin.make_key(api.id))[0].id for _ in range(2)])
    disabled = sorted([(await admin.make_key(api.id, enabled=False))[0].id for _ in range(2)])
    switched, _ = await admin.make_key(api.id)
    await admin.keys.UpdateKey(keys_pb2.UpdateKeyRequest(key_id=switched.id, enabled=False), metadata=admin.md)
    disabled = sorted([*disabled, switched.id])

    assert await _ids(admin, api.id, enabled=True) == enabled
    assert await _ids(admin, api.id, enabled=False) == disabled
    assert await _ids(admin, api.id) == sorted(enabled + disabled)


async def test_ok_permission_filter_matches_the_exact_name_directly_or_through_a_role(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    await admin.make_role(api.id, "everything", ["documents.*"])
    direct, _ = await admin.make_key(api.id, ["documents.read"])
    through_role, _ = await admin.make_key(api.id, roles=["reader"])
    wildcard, _ = await admin.make_key(api.id, ["documents.*"])
    wildcard_role, _ = await admin.make_key(api.id, roles=["everything"])
    await admin.make_key(api.id, ["documents.read.all", "documents"])
    await admin.make_key(api.id)
    other = await admin.make_api(name="other")
    await admin.make_key(other.id, ["documents.read"])

    # A wildcard a key holds is a name like any other here: `documents.*` does not hold `documents.read`.
    assert await _ids(admin, api.id, permission="documents.read") == sorted([direct.id, through_role.id])
    assert await _ids(admin, api.id, permission="documents.*") == sorted([wildcard.id, wildcard_role.id])
    # Unknown names, and the longest valid one, give an empty list.
    for unknown in ("Documents.read", "documents.never", "p" * 280):
        assert await _ids(admin, api.id, permission=unknown) == []


async def test_ok_role_filter(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    await admin.make_role(api.id, "writer", ["documents.write"])
    readers = sorted([(await admin.make_key(api.id, roles=r))[0].id for r in (["reader"], ["reader", "writer"])])
    await admin.make_key(api.id, ["documents.read"], roles=["writer"])
    await admin.make_key(api.id)
    other = await admin.make_api(name="other")
    for name in ("reader", "auditor"):
        await admin.make_role(other.id, name)
        await admin.make_key(other.id, roles=[name])

    assert await _ids(admin, api.id, role="reader") == readers
    # Unknown here (`auditor` is a role of the other API only), and the longest valid name: an empty list.
    for unknown in ("nobody", "auditor", "r" * 64):
        response = await _list(admin, api.id, role=unknown)
        assert (list(response.keys), response.next_page_token) == ([], "")


async def test_ok_filters_together_and_paged(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    wanted = sorted([(await admin.make_key(api.id, roles=["reader"], enabled=False))[0].id for _ in range(5)])
    await admin.make_key(api.id, roles=["reader"])  # enabled
    await admin.make_key(api.id, ["documents.read"], enabled=False)  # without the role
    pages = await _pages(admin, api.id, page_size=2, enabled=False, role="reader", permission="documents.read")

    assert flat(pages) == wanted


@pytest.mark.parametrize("read_key", ["api.{id}.read_key", "api.*.read_key"])
async def test_ok_caller_with_read_key_only_sees_the_latest_write(
    admin: Caller, make_caller: MakeCaller, read_key: str
) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id, ["documents.read"])
    caller = await make_caller([read_key.format(id=api.id)])
    written = await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["documents.write"]), metadata=admin.md
    )

    response = await _list(caller, api.id, min_revision=written.revision)

    assert [(k.id, [p.name for p in k.permissions]) for k in response.keys] == [(key.id, ["documents.write"])]


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"api_id": ""}, "api_id"),
        ({"api_id": "api.1"}, "api_id"),
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "abc"}, "page_token"),
        ({"page_token": unsigned_token({"p": "key_0", "f": "0" * 16})}, "page_token"),
        ({"permission": "documents read"}, "permission"),
        ({"permission": "documents/read"}, "permission"),
        ({"permission": "p" * 281}, "permission"),
        ({"role": "docs.*"}, "role"),
        ({"role": "r" * 65}, "role"),
        ({"min_revision": -1}, "min_revision"),
    ],
    ids=[
        "empty api_id",
        "api_id with a dot",
        "negative page_size",
        "page_size 1001",
        "garbage token",
        "unsigned token",
        "permission with a space",
        "permission with a slash",
        "permission of 281 characters",
        "wildcard role",
        "role of 65 characters",
        "negative min_revision",
    ],
)
async def test_invalid_argument(admin: Caller, store: Store, fields: dict[str, object], field: str) -> None:
    api = await admin.make_api()
    await _make_keys(admin, api.id, 2)
    request = {"api_id": api.id, **fields}
    error = await rejected(store, lambda: _list(admin, **request), grpc.StatusCode.INVALID_ARGUMENT)  # type: ignore[arg-type]
    assert list(field_violations(error)) == [field]


async def test_invalid_argument_page_token_altered_in_the_middle(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    await _make_keys(admin, api.id, 3)
    token = (await _list(admin, api.id, page_size=1)).next_page_token
    middle = len(token) // 2  # not the last character, which may carry only padding bits
    altered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    error = await rejected(
        store, lambda: _list(admin, api.id, page_size=1, page_token=altered), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "page_token" in field_violations(error)


@pytest.mark.parametrize(
    ("made_with", "sent_with"),
    [
        ({"enabled": True}, {"enabled": False}),
        ({"enabled": False}, {}),
        ({}, {"api_id": "other"}),
        ({"permission": "a"}, {"permission": "b"}),
        ({"role": "r1"}, {"role": "r2"}),
        ({}, {"rpc": "ListRoles"}),
    ],
    ids=[
        "enabled true then false",
        "enabled false then unset",
        "another api",
        "another permission",
        "another role",
        "to ListRoles",
    ],
)
async def test_invalid_argument_page_token_with_other_filters(
    admin: Caller, store: Store, made_with: dict[str, object], sent_with: dict[str, object]
) -> None:
    api = await admin.make_api(["a", "b"])
    other = await admin.make_api(["a", "b"], name="other")
    for api_id in (api.id, other.id):
        await admin.make_role(api_id, "r1", ["a"])
        await admin.make_role(api_id, "r2", ["b"])
        for enabled in (True, True, False, False):
            await admin.make_key(api_id, ["a", "b"], ["r1", "r2"], enabled=enabled)
    token = (await _list(admin, api.id, page_size=1, **made_with)).next_page_token
    assert token

    if sent_with.get("rpc") == "ListRoles":
        request = roles_pb2.ListRolesRequest(api_id=api.id, page_size=1, page_token=token)
        error = await rejected(
            store, lambda: admin.roles.ListRoles(request, metadata=admin.md), grpc.StatusCode.INVALID_ARGUMENT
        )
    else:
        fields = {"api_id": api.id, **sent_with}
        if fields["api_id"] == "other":
            fields["api_id"] = other.id
        error = await rejected(
            store,
            lambda: _list(admin, page_size=1, page_token=token, **fields),  # type: ignore[arg-type]
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    assert "page_token" in field_violations(error)


# -- permission denied ------------------------------------------------------------------------------


async def test_permission_denied_with_read_api_but_not_read_key(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    api = await admin.make_api()
    await _make_keys(admin, api.id, 1)
    caller = await make_caller([f"api.{api.id}.read_api", f"api.{api.id}.update_key", f"rbac.{api.id}.read_role"])
    error = await rejected(store, lambda: _list(caller, api.id), grpc.StatusCode.PERMISSION_DENIED)
    assert error_info(error).metadata["permission"] == f"api.{api.id}.read_key"


# -- not found ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permissions",
    [[], ["api.{other}.read_key", "api.{other}.read_api", "api.{id}.update_key", "rbac.{id}.read_role"]],
    ids=["nothing", "neither read_api nor read_key of this api"],
)
async def test_not_found_without_read_api_or_read_key_is_the_same_answer_as_an_unknown_api(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api()
    await _make_keys(admin, api.id, 1)
    other = await admin.make_api(name="other")
    caller = await make_caller([p.format(id=api.id, other=other.id) for p in permissions])

    hidden = await rejected(store, lambda: _list(caller, api.id), grpc.StatusCode.NOT_FOUND)
    unknown = await rejected(store, lambda: _list(caller, UNKNOWN_API), grpc.StatusCode.NOT_FOUND)

    assert (resource_names(hidden), resource_names(unknown)) == ([api.id], [UNKNOWN_API])
    assert blanked_answer(hidden, api.id) == blanked_answer(unknown, UNKNOWN_API)


# -- out of range -----------------------------------------------------------------------------------


async def test_out_of_range_min_revision_ahead_of_the_store(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    current = await store.revision()
    error = await rejected(store, lambda: _list(admin, api.id, min_revision=current + 1), grpc.StatusCode.OUT_OF_RANGE)
    info = error_info(error)
    assert info.reason == "REVISION_NOT_REACHED"
    assert dict(info.metadata) == {"min_revision": str(current + 1), "revision": str(current)}
