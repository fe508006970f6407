"""ApiService.DeleteApi: the API goes with its catalog, roles and keys, in one change (Auth0's
`DELETE /api/v2/resource-servers/{id}`); other APIs and the root keys stay."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from keyscope.v1 import apis_pb2, keys_pb2, permissions_pb2
from keyscope_server.store import Store
from keyscope_server.store.snapshot import StoreSnapshot
from tests.audit_replay import all_events
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code
GONE = keys_pb2.VerifyKeyResponse(valid=False, code=Code.CODE_NOT_FOUND)


async def _delete(
    caller: Caller, api_id: str, etag: str = "", validate_only: bool = False
) -> apis_pb2.DeleteApiResponse:
    request = apis_pb2.DeleteApiRequest(api_id=api_id, etag=etag, validate_only=validate_only)
    return await caller.apis.DeleteApi(request, metadata=caller.md)


async def _full_api(admin: Caller) -> tuple[apis_pb2.Api, str, list[str], list[str]]:
    """An API with three scopes, two roles and three keys (one holding a role): the API, the secret of the key with
    the role, and the ids of its keys and of its roles."""
    api = await admin.make_api(["docs.read", "docs.write", "admin"])
    reader = await admin.make_role(api.id, "reader", ["docs.read"])
    writer = await admin.make_role(api.id, "writer", ["docs.write"])
    with_role, secret = await admin.make_key(api.id, ["admin"], ["reader"])
    direct, _ = await admin.make_key(api.id, ["docs.write"])
    bare, _ = await admin.make_key(api.id)
    return api, secret, [with_role.id, direct.id, bare.id], [reader.id, writer.id]


def _rows_of(snapshot: StoreSnapshot, api_id: str) -> list[object]:
    """Every row and link of the snapshot that belongs to the API."""
    keys = {k.id for k in snapshot.keys if k.api_id == api_id}
    roles = {r.id for r in snapshot.roles if r.api_id == api_id}
    return [
        *(a for a in snapshot.apis if a.id == api_id),
        *(p for p in snapshot.permissions if p.api_id == api_id),
        *(k for k in snapshot.keys if k.api_id == api_id),
        *(r for r in snapshot.roles if r.api_id == api_id),
        *(link for link in (*snapshot.key_permissions, *snapshot.key_roles) if link[0] in keys),
        *(link for link in snapshot.role_permissions if link[0] in roles),
    ]


async def _status(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_the_api_its_keys_roles_and_scopes_are_gone(admin: Caller, store: Store) -> None:
    api, secret, key_ids, role_ids = await _full_api(admin)
    # Verified once, so the verification cache holds the key: the deletion must drop it.
    assert (await admin.verify(secret, "docs.read AND admin")).code == Code.CODE_VALID
    before = await store.revision()

    deleted = await _delete(admin, api.id)

    assert (deleted.keys_deleted, deleted.roles_deleted, deleted.scopes_deleted) == (3, 2, 3)
    assert deleted.revision == before + 1 == await store.revision()
    assert await admin.verify(secret, "docs.read") == GONE
    assert await admin.verify(secret) == GONE
    reads = [admin.get_api(api.id), *map(admin.get_key, key_ids), *map(admin.get_role, role_ids)]
    assert [await _status(read) for read in reads] == [grpc.StatusCode.NOT_FOUND] * 6
    assert _rows_of(await store.export_snapshot(), api.id) == []


async def test_ok_other_apis_and_their_keys_are_untouched(admin: Caller, store: Store) -> None:
    api, _, _, _ = await _full_api(admin)
    # The same scope and role names as the deleted API's, so that nothing is matched by name alone.
    other = await admin.make_api(["docs.read", "docs.write", "admin"])
    await admin.make_role(other.id, "reader", ["docs.read"])
    _, other_secret = await admin.make_key(other.id, ["admin"], ["reader"])
    assert (await admin.verify(other_secret, "docs.read AND admin")).code == Code.CODE_VALID
    held = _rows_of(await store.export_snapshot(), other.id)

    await _delete(admin, api.id)

    assert _rows_of(await store.export_snapshot(), other.id) == held
    answer = await admin.verify(other_secret, "docs.read AND admin")
    assert (answer.code, list(answer.roles)) == (Code.CODE_VALID, ["reader"])
    assert await admin.get_api(other.id) == other


async def test_ok_audit_event_holds_the_api_before_and_nothing_after(admin: Caller) -> None:
    api = await admin.make_api([("docs.read", "Read docs"), "docs.write"], name="docs")
    await admin.make_role(api.id, "reader", ["docs.read"])
    await admin.make_key(api.id, ["docs.read"], ["reader"])

    deleted = await _delete(admin, api.id)

    # One event for the whole deletion: none for the keys and roles that went with the API.
    [event] = [e for e in await all_events(admin) if e.revision == deleted.revision]
    assert (event.action, event.resource_type, event.resource_id, event.api_id, event.actor) == (
        "DeleteApi",
        "api",
        api.id,
        api.id,
        admin.root_key_id,
    )
    assert MessageToDict(event.before) == {
        "name": "docs",
        "scopes": [{"value": "docs.read", "description": "Read docs"}, {"value": "docs.write", "description": ""}],
    }
    assert not event.HasField("after")


async def test_ok_validate_only_counts_and_deletes_nothing(admin: Caller, store: Store) -> None:
    api, secret, key_ids, _ = await _full_api(admin)
    assert (await admin.verify(secret, "docs.read")).code == Code.CODE_VALID
    before, events = await store.export_snapshot(), await all_events(admin)

    dry = await _delete(admin, api.id, validate_only=True)

    assert (dry.keys_deleted, dry.roles_deleted, dry.scopes_deleted) == (3, 2, 3)
    assert dry.revision == before.revision == await store.revision()
    assert await store.export_snapshot() == before
    assert await all_events(admin) == events
    assert (await admin.verify(secret, "docs.read")).code == Code.CODE_VALID
    real = await _delete(admin, api.id)
    assert (real.keys_deleted, real.roles_deleted, real.scopes_deleted, real.revision) == (3, 2, 3, dry.revision + 1)


async def test_ok_empty_api(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    deleted = await _delete(admin, api.id)
    assert (deleted.keys_deleted, deleted.roles_deleted, deleted.scopes_deleted) == (0, 0, 0)
    assert api.id not in {a.id for a in (await store.export_snapshot()).apis}


async def test_ok_current_etag(admin: Caller) -> None:
    api = await admin.make_api(["a"])
    await admin.make_key(api.id, ["a"])
    changed = await admin.apis.UpdateScopes(
        apis_pb2.UpdateScopesRequest(api_id=api.id, scopes=[permissions_pb2.Scope(value="b")]), metadata=admin.md
    )
    assert (await _delete(admin, api.id, etag=changed.api.etag)).keys_deleted == 1


@pytest.mark.parametrize("delete_api", ["api.*.delete_api", "api.{api}.delete_api", "api.{api}.*"])
async def test_ok_caller_with_delete_api(admin: Caller, make_caller: MakeCaller, delete_api: str) -> None:
    api = await admin.make_api(["a"])
    _, secret = await admin.make_key(api.id, ["a"])
    caller = await make_caller([delete_api.format(api=api.id)])

    assert (await _delete(caller, api.id)).keys_deleted == 1

    assert await admin.verify(secret) == GONE


async def test_ok_root_keys_stay_and_keep_working(make_caller: MakeCaller, store: Store) -> None:
    # A root key made with the API and naming it: neither is a reason to delete it.
    caller = await make_caller(["api.*.create_api", "api.*.read_api", "api.*.delete_api", "api.*.create_key"])
    api = await caller.make_api(["a"])
    await caller.make_key(api.id, ["a"])
    await make_caller([f"api.{api.id}.read_api", f"api.{api.id}.verify_key"])  # another, naming the API
    before = await store.export_snapshot()

    await _delete(caller, api.id)

    held = await store.export_snapshot()
    assert (held.root_keys, held.root_key_permissions) == (before.root_keys, before.root_key_permissions)
    again = await caller.make_api(["a"])
    assert (await caller.get_api(again.id)).id == again.id


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize("api_id", ["", "api-1", "api 1", "api.1", "api_é", "k" * 65])
async def test_invalid_argument_api_id(admin: Caller, store: Store, api_id: str) -> None:
    await admin.make_api(["a"])
    error = await rejected(store, lambda: _delete(admin, api_id), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == ["api_id"]


@pytest.mark.parametrize("etag", ["r 1", "x" * 65, "r1\x00", "é"])
async def test_invalid_argument_malformed_etag(admin: Caller, store: Store, etag: str) -> None:
    api = await admin.make_api(["a"])
    error = await rejected(store, lambda: _delete(admin, api.id, etag=etag), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == ["etag"]


# -- aborted ----------------------------------------------------------------------------------------


async def test_aborted_stale_etag_deletes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    _, secret = await admin.make_key(api.id, ["a"])
    scopes = [permissions_pb2.Scope(value="a"), permissions_pb2.Scope(value="b")]
    changed = await admin.apis.UpdateScopes(
        apis_pb2.UpdateScopesRequest(api_id=api.id, scopes=scopes), metadata=admin.md
    )

    error = await rejected(store, lambda: _delete(admin, api.id, etag=api.etag), grpc.StatusCode.ABORTED)

    info = error_info(error)
    assert (info.reason, info.metadata["etag"]) == ("ETAG_MISMATCH", changed.api.etag)
    assert resource_names(error) == [api.id]
    assert (await admin.verify(secret, "a")).code == Code.CODE_VALID


# -- permission denied ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{api}.read_api"],
        ["api.*.read_api", "api.{other}.delete_api", "api.{api}.update_api", "api.{api}.delete_key"],
    ],
    ids=["read-api", "read-api-and-every-other-verb"],
)
async def test_permission_denied_read_api_without_delete_api(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["a"])
    other = await admin.make_api()
    await admin.make_key(api.id, ["a"])
    caller = await make_caller([p.format(api=api.id, other=other.id) for p in permissions])
    error = await rejected(store, lambda: _delete(caller, api.id), grpc.StatusCode.PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"api.{api.id}.delete_api")


# -- not found ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_id", ["api_doesnotexist0000", "a" * 64])
async def test_not_found_unknown_api(admin: Caller, store: Store, api_id: str) -> None:
    await admin.make_api(["a"])
    error = await rejected(store, lambda: _delete(admin, api_id), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [api_id]


async def test_not_found_deleting_twice(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    await _delete(admin, api.id)
    error = await rejected(store, lambda: _delete(admin, api.id), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [api.id]


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{other}.delete_api", "api.{other}.read_api"],
        ["api.{api}.read_key", "api.{api}.delete_key", "rbac.{api}.read_role", "rbac.{api}.delete_role"],
        [],
    ],
    ids=["other-api", "cannot-read-api", "nothing"],
)
async def test_not_found_api_the_caller_may_not_see(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    api = await admin.make_api(["a"])
    other = await admin.make_api()
    _, secret = await admin.make_key(api.id, ["a"])
    caller = await make_caller([p.format(api=api.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await _delete(caller, api.id)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _delete(caller, "api_doesnotexist0000")

    # Indistinguishable from an API that does not exist, so ids cannot be probed.
    assert hidden.value.code() == missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.value.details() == (missing.value.details() or "").replace("api_doesnotexist0000", api.id)
    assert resource_names(hidden.value) == [api.id]
    assert await store.export_snapshot() == before
    assert (await admin.verify(secret, "a")).code == Code.CODE_VALID
