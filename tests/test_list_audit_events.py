"""AuditService.ListAuditEvents, and what the events hold."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from keyscope.v1 import audit_pb2, keys_pb2
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.factory import ServerConfig, start_server
from keyscope_server.page_tokens import PageTokens
from keyscope_server.store import Store
from tests.audit_replay import all_events
from tests.client import Caller
from tests.conftest import MakeCaller, OpenStore
from tests.rpc_errors import error_info, field_violations, rejected

pytestmark = pytest.mark.asyncio

Request = audit_pb2.ListAuditEventsRequest


async def _list(caller: Caller, **fields: object) -> audit_pb2.ListAuditEventsResponse:
    return await caller.audit.ListAuditEvents(Request(**fields), metadata=caller.md)  # type: ignore[arg-type]


def forged_token(position: object) -> str:
    """A token as the server made them before it signed them: the position and the filters' fingerprint of a
    request with no filters, unsigned."""
    real = PageTokens(b"any key").encode(1, NO_FILTERS)
    fingerprint = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4))[:-16])["f"]
    payload = json.dumps({"p": position, "f": fingerprint})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


NO_FILTERS = ("", "", "", "", None, None)  # (api_id, resource_id, actor, action, start, end) of ListAuditEvents


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_set_permissions_event_holds_before_after_actor_and_request_id(admin: Caller) -> None:
    api = await admin.make_api(["docs.read", "docs.write"])
    key, _ = await admin.make_key(api.id, ["docs.read"], name="k")
    response = await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["docs.write", "docs.new"]),
        metadata=(*admin.md, ("x-request-id", "audit-test-1")),
    )

    [event] = (await _list(admin, resource_id=key.id, action="SetPermissions")).events

    assert event.revision == response.revision
    assert (event.actor, event.action, event.resource_type, event.api_id) == (
        admin.root_key_id,
        "SetPermissions",
        "key",
        api.id,
    )
    assert event.request_id == "audit-test-1"
    assert MessageToDict(event.before) == {
        "name": "k",
        "enabled": True,
        "expire_time": None,
        "permissions": ["docs.read"],
        "roles": [],
    }
    assert MessageToDict(event.after)["permissions"] == ["docs.new", "docs.write"]
    assert list(event.created_permissions) == ["docs.new"]
    assert abs(event.time.ToMilliseconds() - time.time() * 1000) < 60_000


async def test_ok_newest_first_and_paged_without_gaps_or_repeats(admin: Caller) -> None:
    api = await admin.make_api(["a"])
    key, _ = await admin.make_key(api.id)
    for n in range(23):
        await admin.keys.SetPermissions(
            keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=[f"p{n}"]), metadata=admin.md
        )

    pages: list[list[int]] = []
    token = ""
    while True:
        page = await _list(admin, resource_id=key.id, page_size=5, page_token=token)
        pages.append([e.revision for e in page.events])
        token = page.next_page_token
        if not token:
            break

    flat = [r for page in pages for r in page]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 4]  # 23 SetPermissions and the CreateKey
    assert flat == sorted(flat, reverse=True)
    assert len(set(flat)) == 24


async def test_ok_filters(admin: Caller, make_caller: MakeCaller) -> None:
    other = await make_caller(["api.*.create_api", "api.*.create_key"])
    a = await admin.make_api(["x"], name="a")
    b = await other.make_api(["x"], name="b")
    key_a, _ = await admin.make_key(a.id)
    key_b, _ = await other.make_key(b.id)
    middle = Timestamp()
    middle.GetCurrentTime()
    request = keys_pb2.SetPermissionsRequest(key_id=key_a.id, permissions=["x"])
    await admin.keys.SetPermissions(request, metadata=admin.md)

    def ids(response: audit_pb2.ListAuditEventsResponse) -> list[tuple[str, str]]:
        return [(e.action, e.resource_id) for e in response.events]

    assert ids(await _list(admin, api_id=b.id)) == [("CreateKey", key_b.id), ("CreateApi", b.id)]
    assert ids(await _list(admin, actor=other.root_key_id)) == [("CreateKey", key_b.id), ("CreateApi", b.id)]
    assert ids(await _list(admin, action="CreateApi", api_id=a.id)) == [("CreateApi", a.id)]
    assert ids(await _list(admin, resource_id=key_a.id)) == [("SetPermissions", key_a.id), ("CreateKey", key_a.id)]
    assert ids(await _list(admin, start_time=middle, api_id=a.id)) == [("SetPermissions", key_a.id)]
    assert ids(await _list(admin, end_time=middle, api_id=a.id)) == [("CreateKey", key_a.id), ("CreateApi", a.id)]
    assert ids(await _list(admin, api_id="api_0000000000000000")) == []


async def test_ok_root_keys_made_on_the_command_line_are_audited_without_secrets(admin: Caller, store: Store) -> None:
    secret = new_secret(ROOT_KEY_PREFIX)
    record = await store.create_root_key("ops", hash_secret(secret), ["api.*.read_api"])
    await store.set_root_key_enabled(record.id, False)
    await store.set_root_key_enabled(record.id, False)  # no change, no event
    await store.delete_root_key(record.id)

    events = (await _list(admin, resource_id=record.id)).events

    assert [(e.action, e.actor) for e in events] == [
        ("DeleteRootKey", "cli"),
        ("DisableRootKey", "cli"),
        ("CreateRootKey", "cli"),
    ]
    assert MessageToDict(events[2].after) == {
        "name": "ops",
        "enabled": True,
        "expire_time": None,
        "permissions": ["api.*.read_api"],
    }
    assert not events[0].HasField("after")
    assert secret not in str(events) and secret.split("_", 1)[1] not in str(events)


async def test_ok_no_event_for_a_call_that_changes_nothing(admin: Caller) -> None:
    api = await admin.make_api(["x"])
    key, _ = await admin.make_key(api.id, ["x"])
    before = await all_events(admin)

    same = await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["x"]), metadata=admin.md
    )

    assert await all_events(admin) == before
    assert same.revision == before[-1].revision


async def test_ok_caller_with_one_apis_permission_reads_that_apis_events(
    admin: Caller, make_caller: MakeCaller
) -> None:
    api = await admin.make_api(["x"])
    caller = await make_caller([f"audit.{api.id}.read_events"])
    assert [e.action for e in (await _list(caller, api_id=api.id)).events] == ["CreateApi"]


# -- invalid argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "garbage"}, "page_token"),
        ({"page_token": forged_token(2**63)}, "page_token"),
        ({"page_token": forged_token(10**40)}, "page_token"),
        ({"page_token": forged_token(0)}, "page_token"),
        ({"page_token": forged_token(-1)}, "page_token"),
        ({"page_token": forged_token(1.5)}, "page_token"),
        ({"page_token": forged_token(True)}, "page_token"),
        ({"api_id": "api-1"}, "api_id"),
        ({"resource_id": "key 1"}, "resource_id"),
        ({"actor": "root.1"}, "actor"),
        ({"action": "Set Permissions"}, "action"),
        ({"start_time": Timestamp(seconds=-1)}, "start_time"),
    ],
)
async def test_invalid_argument(admin: Caller, store: Store, fields: dict[str, object], field: str) -> None:
    error = await rejected(store, lambda: _list(admin, **fields), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)


async def test_invalid_argument_forged_page_token_with_a_position_in_range(admin: Caller, store: Store) -> None:
    # Unsigned, with the filters' fingerprint and a position a real token could hold: still not the server's.
    await admin.make_api(["x"])
    error = await rejected(store, lambda: _list(admin, page_token=forged_token(1)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "page_token" in field_violations(error)


async def test_invalid_argument_altered_page_token(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["x"])
    for _ in range(3):
        await admin.make_key(api.id)
    token = (await _list(admin, page_size=1)).next_page_token
    middle = len(token) // 2  # not the last character, which may carry only padding bits
    altered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    error = await rejected(
        store, lambda: _list(admin, page_size=1, page_token=altered), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "page_token" in field_violations(error)


async def test_ok_page_token_of_another_server_on_the_same_store(
    admin: Caller, open_test_store: OpenStore, db_path: Path, server_config: ServerConfig
) -> None:
    api = await admin.make_api(["x"])
    for _ in range(3):
        await admin.make_key(api.id)
    first = await _list(admin, page_size=2)
    other = await start_server(await open_test_store(db_path.stem), server_config)  # its own Store, same database
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
            rest = await Caller(channel, admin.root_key, admin.root_key_id).audit.ListAuditEvents(
                Request(page_size=100, page_token=first.next_page_token), metadata=admin.md
            )
    finally:
        await other.stop(None)
    everything = (await _list(admin, page_size=100)).events
    assert [e.revision for e in [*first.events, *rest.events]] == [e.revision for e in everything]


async def test_invalid_argument_page_token_with_other_filters(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["x"])
    for _ in range(3):
        await admin.make_key(api.id)
    token = (await _list(admin, api_id=api.id, page_size=1)).next_page_token
    assert token

    other_filters = lambda: _list(admin, api_id=api.id, action="CreateKey", page_token=token)  # noqa: E731
    error = await rejected(store, other_filters, grpc.StatusCode.INVALID_ARGUMENT)
    assert "page_token" in field_violations(error)


# -- permission denied -------------------------------------------------------------------------------


async def test_permission_denied_every_api_needs_the_wildcard(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api(["x"])
    caller = await make_caller([f"audit.{api.id}.read_events", "api.*.read_api"])
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _list(caller)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error.value).metadata["permission"] == "audit.*.read_events"
