"""KeyService.UpdateKey: name, enabled flag and expiry; unset fields stay; changes show in VerifyKey at once."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from keyscope.v1 import keys_pb2
from keyscope_server.store import Store
from tests.client import INVALID_KEY_IDS, Caller, from_now
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def _update(caller: Caller, key_id: str, **fields: object) -> keys_pb2.UpdateKeyResponse:
    request = keys_pb2.UpdateKeyRequest(key_id=key_id, **fields)  # type: ignore[arg-type]
    return await caller.keys.UpdateKey(request, metadata=caller.md)


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_name_only_leaves_the_rest(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    expiry = from_now(3600)
    key, _ = await admin.make_key(api.id, ["a"], ["reader"], name="old", enabled=False, expire_time=expiry)
    before = await store.revision()

    updated = await _update(admin, key.id, name="new")

    assert updated.key.name == "new"
    assert (updated.key.enabled, updated.key.expire_time) == (False, expiry)
    assert (list(updated.key.permissions), list(updated.key.roles)) == (list(key.permissions), list(key.roles))
    assert (updated.key.start, updated.key.create_time) == (key.start, key.create_time)
    assert updated.key.update_time.ToMilliseconds() >= key.update_time.ToMilliseconds()
    assert updated.revision == before + 1 == await store.revision()


@pytest.mark.parametrize("name", ["", "n" * 200, "ünïcödé\u00a0名前"])
async def test_ok_name(admin: Caller, name: str) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id, name="old")

    updated = await _update(admin, key.id, name=name)

    # An explicitly set empty name is a change, not an unset field.
    assert updated.key.name == name
    assert (await admin.get_key(key.id)).name == name


async def test_ok_disable_and_enable(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, name="kept")

    disabled = await _update(admin, key.id, enabled=False)
    assert (disabled.key.enabled, disabled.key.name) == (False, "kept")
    assert (await admin.verify(secret)).code == Code.CODE_DISABLED

    enabled = await _update(admin, key.id, enabled=True)
    assert enabled.key.enabled
    assert (await admin.verify(secret)).code == Code.CODE_VALID


async def test_ok_new_expiry(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, expire_time=from_now(3600))
    later = from_now(7200)

    updated = await _update(admin, key.id, expire_time=later)

    assert updated.key.expire_time == later
    answer = await admin.verify(secret)
    assert (answer.code, answer.expire_time) == (Code.CODE_VALID, later)


async def test_ok_expiry_in_the_past_expires_the_key_at_once(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id)
    past = from_now(-60)

    updated = await _update(admin, key.id, expire_time=past)

    assert updated.key.expire_time == past
    assert (await admin.verify(secret)).code == Code.CODE_EXPIRED


async def test_ok_clear_expiry(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, expire_time=from_now(3600), enabled=False)

    updated = await _update(admin, key.id, clear_expire_time=True)

    assert not updated.key.HasField("expire_time") and not updated.key.enabled
    assert not (await admin.verify(secret)).HasField("expire_time")


async def test_ok_every_field_at_once(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, name="old")
    expiry = from_now(600)

    updated = await _update(admin, key.id, name="new", enabled=False, expire_time=expiry)

    assert (updated.key.name, updated.key.enabled, updated.key.expire_time) == ("new", False, expiry)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "same"},
        {"enabled": True},
        {"clear_expire_time": True},  # there is no expiry to clear
    ],
)
async def test_ok_no_change_bumps_nothing(admin: Caller, store: Store, fields: dict[str, object]) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id, name="same")
    revision = await store.revision()
    before = await store.export_snapshot()

    updated = await _update(admin, key.id, **fields)

    assert updated.revision == revision
    assert updated.key == key
    assert await store.export_snapshot() == before


async def test_ok_same_expiry_bumps_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    expiry = from_now(3600)
    key, _ = await admin.make_key(api.id, expire_time=expiry)
    before = await store.export_snapshot()

    updated = await _update(admin, key.id, expire_time=expiry)

    assert updated.revision == await store.revision()
    assert await store.export_snapshot() == before


async def test_ok_caller_with_update_key_only(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.update_key"])

    updated = await _update(caller, key.id, name="renamed")

    assert updated.key.name == "renamed"


# -- invalid argument -------------------------------------------------------------------------------


def _case_id(case: tuple[dict[str, object], str]) -> str:
    fields = case[0]
    shown = ",".join(f"{name}={value!r}"[:30] for name, value in fields.items())
    return shown or "nothing set"


@pytest.mark.parametrize(
    "case",
    [
        ({}, "key_id"),  # nothing to update
        ({"clear_expire_time": False}, "key_id"),
        ({"name": "n" * 201}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"name": "nul\x00"}, "name"),
        pytest.param(
            ({"expire_time": Timestamp(seconds=1), "clear_expire_time": True}, "clear_expire_time"),
            id="expire_time and clear_expire_time",
        ),
        pytest.param(({"expire_time": Timestamp(seconds=-1)}, "expire_time"), id="expire_time before 1970"),
        pytest.param(({"expire_time": Timestamp(seconds=253402300800)}, "expire_time"), id="expire_time after 9999"),
        pytest.param(({"expire_time": Timestamp(seconds=2_000_000_000, nanos=-1)}, "expire_time"), id="nanos=-1"),
        pytest.param(({"expire_time": Timestamp(seconds=2_000_000_000, nanos=10**9)}, "expire_time"), id="nanos=1e9"),
    ],
    ids=_case_id,
)
async def test_invalid_argument(admin: Caller, store: Store, case: tuple[dict[str, object], str]) -> None:
    fields, field = case
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id, name="kept")
    error = await rejected(store, lambda: _update(admin, key.id, **fields), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)


@pytest.mark.parametrize("key_id", INVALID_KEY_IDS)
async def test_invalid_argument_key_id(admin: Caller, key_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _update(admin, key_id, name="x")

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(e.value)) == ["key_id"]


# -- permission denied ---------------------------------------------------------------------------------


async def test_permission_denied_without_update_key(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.read_key", f"api.{api.id}.delete_key", "api.*.create_key"])
    error = await rejected(store, lambda: _update(caller, key.id, enabled=False), grpc.StatusCode.PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"api.{api.id}.update_key")


# -- not found ---------------------------------------------------------------------------------------


async def test_not_found_unknown_key(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _update(admin, "key_does_not_exist", name="x"), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["key_does_not_exist"]


async def test_not_found_key_of_another_api(admin: Caller, make_caller: MakeCaller, store: Store) -> None:
    own, other = await admin.make_api(), await admin.make_api()
    key, _ = await admin.make_key(other.id)
    caller = await make_caller([f"api.{own.id}.update_key", f"api.{own.id}.read_key", f"api.{other.id}.verify_key"])
    before = await store.export_snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _update(caller, key.id, enabled=False)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _update(caller, "key_does_not_exist", enabled=False)

    # As if the key did not exist, so key ids cannot be probed.
    assert e.value.code() == unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(e.value) == [key.id]
    assert e.value.details() == unknown.value.details().replace("key_does_not_exist", key.id)
    assert await store.export_snapshot() == before
