"""`validate_only` on UpdateScopes and SetPermissions: the answer the call would give, and nothing written."""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import apis_pb2, keys_pb2, permissions_pb2
from keyscope_server.store import Store
from tests.audit_replay import all_events
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import rejected

pytestmark = pytest.mark.asyncio


def _scopes(*values: str) -> list[permissions_pb2.Scope]:
    return [permissions_pb2.Scope(value=v, description=f"about {v}") for v in values]


async def test_ok_update_scopes_dry_run_answers_what_the_call_does_and_writes_nothing(
    admin: Caller, store: Store
) -> None:
    api = await admin.make_api(["a", "b", "c"])
    await admin.make_role(api.id, "r", ["b"])
    for permissions in (["a"], ["b"], ["b", "c"], []):
        await admin.make_key(api.id, permissions)
    request = apis_pb2.UpdateScopesRequest(api_id=api.id, scopes=_scopes("a", "d"))
    before, events = await store.export_snapshot(), await all_events(admin)

    dry = await admin.apis.UpdateScopes(
        apis_pb2.UpdateScopesRequest(api_id=api.id, scopes=_scopes("a", "d"), validate_only=True), metadata=admin.md
    )

    assert await store.export_snapshot() == before
    assert await all_events(admin) == events
    assert (dry.revision, dry.api.etag) == (events[-1].revision, (await admin.get_api(api.id)).etag)
    real = await admin.apis.UpdateScopes(request, metadata=admin.md)
    assert (list(dry.removed_scopes), dry.keys_affected, dry.roles_affected) == (["b", "c"], 2, 1)
    assert (list(dry.removed_scopes), dry.keys_affected, dry.roles_affected) == (
        list(real.removed_scopes),
        real.keys_affected,
        real.roles_affected,
    )
    assert [(s.value, s.description) for s in dry.api.scopes] == [(s.value, s.description) for s in real.api.scopes]
    kept = {s.value: s.id for s in real.api.scopes}
    assert {s.value: s.id for s in dry.api.scopes} == {"a": kept["a"], "d": ""}  # "d" has no id until it exists


async def test_ok_set_permissions_dry_run_answers_what_the_call_does_and_writes_nothing(
    admin: Caller, store: Store
) -> None:
    api = await admin.make_api(["a", "b"])
    key, secret = await admin.make_key(api.id, ["a"])
    etag = (await admin.get_key(key.id)).etag
    before, events = await store.export_snapshot(), await all_events(admin)

    dry = await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["b", "new.one"], etag=etag, validate_only=True),
        metadata=admin.md,
    )

    assert await store.export_snapshot() == before
    assert await all_events(admin) == events
    assert (dry.revision, dry.etag) == (events[-1].revision, etag)
    assert [(p.name, bool(p.id)) for p in dry.permissions] == [("b", True), ("new.one", False)]
    assert [(p.name, p.id) for p in dry.created_permissions] == [("new.one", "")]
    assert (await admin.verify(secret, "a")).valid  # nothing changed for the key either
    real = await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["b", "new.one"], etag=etag), metadata=admin.md
    )
    assert [p.name for p in real.permissions] == [p.name for p in dry.permissions]
    assert real.revision == dry.revision + 1 and real.etag != etag


async def test_ok_dry_run_of_a_call_that_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id, ["a"])
    before = await store.export_snapshot()
    dry = await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["a"], validate_only=True), metadata=admin.md
    )
    assert [p.name for p in dry.permissions] == ["a"]
    assert await store.export_snapshot() == before


# -- a dry run fails as the call would --------------------------------------------------------------


async def test_permission_denied_dry_run_of_unknown_names_without_create_permission(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id)
    caller = await make_caller(["api.*.update_key", "api.*.read_key"])
    request = keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["unknown"], validate_only=True)
    denied = grpc.StatusCode.PERMISSION_DENIED
    await rejected(store, lambda: caller.keys.SetPermissions(request, metadata=caller.md), denied)


async def test_aborted_dry_run_with_a_stale_etag(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["a"])
    stale = api.etag
    await admin.apis.UpdateScopes(apis_pb2.UpdateScopesRequest(api_id=api.id, scopes=_scopes("b")), metadata=admin.md)
    request = apis_pb2.UpdateScopesRequest(api_id=api.id, scopes=_scopes("c"), etag=stale, validate_only=True)
    await rejected(store, lambda: admin.apis.UpdateScopes(request, metadata=admin.md), grpc.StatusCode.ABORTED)


async def test_not_found_dry_run_of_a_missing_key(admin: Caller, store: Store) -> None:
    request = keys_pb2.SetPermissionsRequest(key_id="key_0000000000000000", permissions=["a"], validate_only=True)
    await rejected(store, lambda: admin.keys.SetPermissions(request, metadata=admin.md), grpc.StatusCode.NOT_FOUND)
