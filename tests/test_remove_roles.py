"""KeyService.RemoveRoles: roles taken from a key (Unkey's keys.removeRoles); names it does not hold are ignored;
atomic and idempotent, with etags, revisions and audit events."""

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


async def _remove(caller: Caller, key_id: str, roles: Sequence[str], etag: str = "") -> keys_pb2.RemoveRolesResponse:
    request = keys_pb2.RemoveRolesRequest(key_id=key_id, roles=roles, etag=etag)
    return await caller.keys.RemoveRoles(request, metadata=caller.md)


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_removes_from_the_roles(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    writer = await admin.make_role(api.id, "writer", ["documents.write"])
    key, secret = await admin.make_key(api.id, roles=["reader", "writer"])
    before = await store.revision()

    response = await _remove(admin, key.id, ["reader"])

    assert list(response.roles) == [writer]
    assert response.revision == before + 1 == await store.revision()
    assert response.etag == (await admin.get_key(key.id)).etag
    assert (await admin.verify(secret, "documents.read")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


async def test_ok_names_not_held_are_ignored(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    await admin.make_role(api.id, "writer")
    key, _ = await admin.make_key(api.id, roles=["reader"])
    revision = await store.revision()
    before = await store.export_snapshot()

    # One role the key lacks, one the API lacks: neither is an error, and nothing changes.
    response = await _remove(admin, key.id, ["writer", "ghost"])

    assert [r.name for r in response.roles] == ["reader"]
    assert (response.revision, response.etag) == (revision, key.etag)
    assert await store.export_snapshot() == before


async def test_ok_direct_permissions_stay(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id, ["documents.read"], roles=["reader"])

    response = await _remove(admin, key.id, ["reader"])

    assert list(response.roles) == []
    assert (await admin.verify(secret, "documents.read")).code == Code.CODE_VALID  # held directly too


async def test_ok_audit_event_names_the_action(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    key, _ = await admin.make_key(api.id, roles=["reader"])
    response = await _remove(admin, key.id, ["reader"])
    events = await admin.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(resource_id=key.id, action="RemoveRoles"), metadata=admin.md
    )
    [event] = events.events
    assert event.revision == response.revision
    assert (MessageToDict(event.before)["roles"], MessageToDict(event.after)["roles"]) == (["reader"], [])


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_id", "roles", "field"),
    [("", [], "key_id"), (None, [""], "roles[0]"), (None, ["has space"], "roles[0]")],
    ids=["empty key_id", "empty role", "role with space"],
)
async def test_invalid_argument(admin: Caller, store: Store, key_id: str | None, roles: list[str], field: str) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    error = await rejected(
        store, lambda: _remove(admin, key.id if key_id is None else key_id, roles), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert field in field_violations(error)


# -- aborted ----------------------------------------------------------------------------------------


async def test_aborted_stale_etag_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    await admin.make_role(api.id, "writer")
    key, _ = await admin.make_key(api.id, roles=["reader", "writer"])
    changed = await _remove(admin, key.id, ["reader"])
    error = await rejected(store, lambda: _remove(admin, key.id, ["writer"], etag=key.etag), grpc.StatusCode.ABORTED)
    assert error_info(error).metadata["etag"] == changed.etag


# -- permission denied ---------------------------------------------------------------------------------


async def test_permission_denied_without_update_key(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    key, _ = await admin.make_key(api.id, roles=["reader"])
    caller = await make_caller([f"api.{api.id}.read_key"])
    error = await rejected(store, lambda: _remove(caller, key.id, ["reader"]), grpc.StatusCode.PERMISSION_DENIED)
    assert error_info(error).metadata["permission"] == f"api.{api.id}.update_key"


# -- not found ---------------------------------------------------------------------------------------


async def test_not_found_unknown_key(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _remove(admin, "key_does_not_exist", []), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["key_does_not_exist"]
