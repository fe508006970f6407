"""KeyService.AddPermissions: direct permissions added to those a key has (Unkey's keys.addPermissions), atomic and
idempotent, with SetPermissions' catalog rule, etags, dry runs, revisions and audit events."""

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


async def _add(
    caller: Caller, key_id: str, permissions: Sequence[str], **fields: object
) -> keys_pb2.AddPermissionsResponse:
    request = keys_pb2.AddPermissionsRequest(key_id=key_id, permissions=permissions, **fields)  # type: ignore[arg-type]
    return await caller.keys.AddPermissions(request, metadata=caller.md)


async def _direct(caller: Caller, key_id: str) -> list[str]:
    return [p.name for p in (await caller.get_key(key_id)).permissions]


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_adds_to_the_direct_permissions(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read", "documents.write", "billing.read"])
    key, secret = await admin.make_key(api.id, ["documents.read"])
    ids = await admin.catalog(api.id)
    before = await store.revision()

    response = await _add(admin, key.id, ["documents.write", "billing.read"])

    assert [(p.id, p.name) for p in response.permissions] == [
        (ids["billing.read"], "billing.read"),
        (ids["documents.read"], "documents.read"),
        (ids["documents.write"], "documents.write"),
    ]
    assert list(response.created_permissions) == []
    assert response.revision == before + 1 == await store.revision()
    assert response.etag == (await admin.get_key(key.id)).etag == f"r{response.revision}"
    assert await _direct(admin, key.id) == ["billing.read", "documents.read", "documents.write"]
    answer = await admin.verify(secret, "documents.read AND documents.write AND billing.read")
    assert answer.code == Code.CODE_VALID


async def test_ok_held_already_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    key, _ = await admin.make_key(api.id, ["documents.read", "documents.write"])
    revision = await store.revision()
    before = await store.export_snapshot()

    response = await _add(admin, key.id, ["documents.write", "documents.read", "documents.write"])

    assert [p.name for p in response.permissions] == ["documents.read", "documents.write"]
    assert (response.revision, response.etag) == (revision, key.etag)
    assert await store.export_snapshot() == before


async def test_ok_empty_list_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id, ["documents.read"])
    before = await store.export_snapshot()

    response = await _add(admin, key.id, [])

    assert [p.name for p in response.permissions] == ["documents.read"]
    assert await store.export_snapshot() == before


async def test_ok_unknown_names_created_with_create_permission(admin: Caller) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id, ["documents.read"])

    response = await _add(admin, key.id, ["documents.share"])

    [created] = response.created_permissions
    assert (created.name, created.id.startswith("perm_")) == ("documents.share", True)
    assert (await admin.catalog(api.id))["documents.share"] == created.id
    assert [p.name for p in response.permissions] == ["documents.read", "documents.share"]


async def test_ok_role_permissions_untouched(admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, _ = await admin.make_key(api.id, roles=["reader"])

    response = await _add(admin, key.id, ["documents.write"])

    assert [p.name for p in response.permissions] == ["documents.write"]
    assert [r.name for r in (await admin.get_key(key.id)).roles] == ["reader"]


async def test_ok_matching_etag(admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a"])
    response = await _add(admin, key.id, ["b"], etag=key.etag)
    assert [p.name for p in response.permissions] == ["a", "b"]


async def test_ok_validate_only_answers_and_writes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id, ["a"])
    before = await store.export_snapshot()

    response = await _add(admin, key.id, ["new.one"], validate_only=True)

    assert [(p.name, p.id) for p in response.created_permissions] == [("new.one", "")]
    assert [p.name for p in response.permissions] == ["a", "new.one"]
    assert (response.revision, response.etag) == (await store.revision(), key.etag)
    assert await store.export_snapshot() == before


async def test_ok_audit_event_names_the_action_with_before_and_after(admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a"])
    response = await _add(admin, key.id, ["b"])

    events = await admin.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(resource_id=key.id, action="AddPermissions"), metadata=admin.md
    )
    [event] = events.events
    assert event.revision == response.revision
    assert MessageToDict(event.before)["permissions"] == ["a"]
    assert MessageToDict(event.after)["permissions"] == ["a", "b"]


async def test_ok_caller_with_update_key_only(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id, ["a"])
    caller = await make_caller([f"api.{api.id}.update_key"])
    response = await _add(caller, key.id, ["b"])
    assert [p.name for p in response.permissions] == ["a", "b"]


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_id", "permissions", "field"),
    [
        ("", ["a"], "key_id"),
        ("key-1", ["a"], "key_id"),
        (None, [""], "permissions[0]"),
        (None, ["a", "has space"], "permissions[1]"),
        (None, ["p" * 281], "permissions[0]"),
        (None, [f"p{i}" for i in range(1001)], "permissions"),
    ],
    ids=["empty key_id", "key_id with dash", "empty name", "name with space", "long name", "1001 names"],
)
async def test_invalid_argument(
    admin: Caller, store: Store, key_id: str | None, permissions: list[str], field: str
) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id)
    error = await rejected(
        store, lambda: _add(admin, key.id if key_id is None else key_id, permissions), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert field in field_violations(error)


async def test_invalid_argument_malformed_etag(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id)
    error = await rejected(
        store, lambda: _add(admin, key.id, ["a"], etag="not an etag"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "etag" in field_violations(error)


# -- aborted ----------------------------------------------------------------------------------------


async def test_aborted_stale_etag_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a", "b"])
    key, _ = await admin.make_key(api.id)
    changed = await _add(admin, key.id, ["a"])
    error = await rejected(store, lambda: _add(admin, key.id, ["b"], etag=key.etag), grpc.StatusCode.ABORTED)
    assert error_info(error).metadata["etag"] == changed.etag


# -- permission denied ---------------------------------------------------------------------------------


async def test_permission_denied_without_update_key(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.read_key"])
    error = await rejected(store, lambda: _add(caller, key.id, ["a"]), grpc.StatusCode.PERMISSION_DENIED)
    assert error_info(error).metadata["permission"] == f"api.{api.id}.update_key"


async def test_permission_denied_unknown_names_without_create_permission(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.update_key"])
    error = await rejected(store, lambda: _add(caller, key.id, ["a", "new.one"]), grpc.StatusCode.PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == (
        "PERMISSIONS_NOT_IN_CATALOG",
        f"rbac.{api.id}.create_permission",
    )


# -- not found ---------------------------------------------------------------------------------------


async def test_not_found_unknown_key(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _add(admin, "key_does_not_exist", ["a"]), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["key_does_not_exist"]


async def test_not_found_key_of_another_api(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    own, other = await admin.make_api(["a"]), await admin.make_api(["a"])
    key, _ = await admin.make_key(other.id)
    caller = await make_caller([f"api.{own.id}.update_key", f"api.{own.id}.read_key"])
    error = await rejected(store, lambda: _add(caller, key.id, ["a"]), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == [key.id]
