"""KeyService.RemovePermissions: direct permissions taken from a key (Unkey's keys.removePermissions); names it
does not hold are ignored, roles' permissions stay; atomic and idempotent, with etags, dry runs and audit events."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from keyscope.v1 import audit_pb2, keys_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def _remove(
    caller: Caller, key_id: str, permissions: Sequence[str], **fields: object
) -> keys_pb2.RemovePermissionsResponse:
    request = keys_pb2.RemovePermissionsRequest(key_id=key_id, permissions=permissions, **fields)  # type: ignore[arg-type]
    return await caller.keys.RemovePermissions(request, metadata=caller.md)


async def _direct(caller: Caller, key_id: str) -> list[str]:
    return [p.name for p in (await caller.get_key(key_id)).permissions]


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_removes_from_the_direct_permissions(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read", "documents.write", "billing.read"])
    key, secret = await admin.make_key(api.id, ["documents.read", "documents.write", "billing.read"])
    ids = await admin.catalog(api.id)
    before = await store.revision()

    response = await _remove(admin, key.id, ["documents.write", "billing.read"])

    assert [(p.id, p.name) for p in response.permissions] == [(ids["documents.read"], "documents.read")]
    assert response.revision == before + 1 == await store.revision()
    assert response.etag == (await admin.get_key(key.id)).etag
    assert await _direct(admin, key.id) == ["documents.read"]
    assert (await admin.verify(secret, "documents.write")).code == Code.CODE_INSUFFICIENT_PERMISSIONS
    # The catalog keeps its entries: only the key's grants went.
    assert set(await admin.catalog(api.id)) == {"documents.read", "documents.write", "billing.read"}


async def test_ok_names_not_held_are_ignored(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    key, _ = await admin.make_key(api.id, ["documents.read"])
    revision = await store.revision()
    before = await store.export_snapshot()

    # One the key lacks, one the catalog lacks: neither is an error, and nothing changes.
    response = await _remove(admin, key.id, ["documents.write", "never.heard.of"])

    assert [p.name for p in response.permissions] == ["documents.read"]
    assert (response.revision, response.etag) == (revision, key.etag)
    assert await store.export_snapshot() == before


async def test_ok_removing_every_name_leaves_none(admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a", "b"])
    response = await _remove(admin, key.id, ["b", "a", "b"])
    assert list(response.permissions) == []
    assert await _direct(admin, key.id) == []


async def test_ok_role_permissions_stay(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id, ["documents.read"], roles=["reader"])

    response = await _remove(admin, key.id, ["documents.read"])

    assert list(response.permissions) == []
    assert (await admin.verify(secret, "documents.read")).code == Code.CODE_VALID  # through the role


async def test_ok_validate_only_answers_and_writes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a", "b"])
    before = await store.export_snapshot()

    response = await _remove(admin, key.id, ["a"], validate_only=True)

    assert [p.name for p in response.permissions] == ["b"]
    assert (response.revision, response.etag) == (await store.revision(), key.etag)
    assert await store.export_snapshot() == before


async def test_ok_audit_event_names_the_action_with_before_and_after(admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a", "b"])
    response = await _remove(admin, key.id, ["a"])

    events = await admin.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(resource_id=key.id, action="RemovePermissions"), metadata=admin.md
    )
    [event] = events.events
    assert event.revision == response.revision
    assert MessageToDict(event.before)["permissions"] == ["a", "b"]
    assert MessageToDict(event.after)["permissions"] == ["b"]
    assert list(event.created_permissions) == []


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_id", "permissions", "field"),
    [
        ("", ["a"], "key_id"),
        (None, [""], "permissions[0]"),
        (None, ["a", "has space"], "permissions[1]"),
        (None, [f"p{i}" for i in range(1001)], "permissions"),
    ],
    ids=["empty key_id", "empty name", "name with space", "1001 names"],
)
async def test_invalid_argument(
    admin: Caller, store: Store, key_id: str | None, permissions: list[str], field: str
) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id, ["a"])
    error = await rejected(
        store,
        lambda: _remove(admin, key.id if key_id is None else key_id, permissions),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field in field_violations(error)


# -- aborted ----------------------------------------------------------------------------------------


async def test_aborted_stale_etag_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a", "b"])
    changed = await _remove(admin, key.id, ["a"])
    error = await rejected(store, lambda: _remove(admin, key.id, ["b"], etag=key.etag), grpc.StatusCode.ABORTED)
    assert error_info(error).metadata["etag"] == changed.etag


# -- permission denied ---------------------------------------------------------------------------------


async def test_permission_denied_without_update_key(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id, ["a"])
    caller = await make_caller([f"api.{api.id}.read_key"])
    error = await rejected(store, lambda: _remove(caller, key.id, ["a"]), grpc.StatusCode.PERMISSION_DENIED)
    assert error_info(error).metadata["permission"] == f"api.{api.id}.update_key"


# -- not found ---------------------------------------------------------------------------------------


async def test_not_found_unknown_key(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _remove(admin, "key_does_not_exist", ["a"]), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["key_does_not_exist"]
