"""KeyService.CreateKey: the new key and its one-time secret, its rules, who may create keys where."""

from __future__ import annotations

import hashlib
import re
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from keyscope.v1 import keys_pb2
from keyscope_server.store import Store
from tests.client import Caller, from_now
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, field_violations, rejected, resource_names

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def _create(caller: Caller, **fields: object) -> keys_pb2.CreateKeyResponse:
    return await caller.keys.CreateKey(keys_pb2.CreateKeyRequest(**fields), metadata=caller.md)  # type: ignore[arg-type]


# -- ok ---------------------------------------------------------------------------------------------


async def test_ok_minimal_key(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    before = await store.revision()

    created = await _create(admin, api_id=api.id)

    key = created.key
    assert re.fullmatch(r"key_[a-zA-Z0-9]+", key.id)
    assert (key.api_id, key.name, key.enabled) == (api.id, "", True)
    assert not key.HasField("expire_time")
    assert list(key.permissions) == [] and list(key.roles) == []
    assert key.HasField("create_time") and key.HasField("update_time")
    assert re.fullmatch(r"[a-zA-Z0-9]{32}", created.secret)
    assert key.start == created.secret[:4]
    assert list(created.created_permissions) == []
    assert created.revision == before + 1 == await store.revision()


@pytest.mark.parametrize("prefix", ["sk", "sk_live", "A1_b2", "p" * 16])
async def test_ok_prefix(admin: Caller, prefix: str) -> None:
    api = await admin.make_api()

    created = await _create(admin, api_id=api.id, prefix=prefix)

    assert re.fullmatch(rf"{prefix}_[a-zA-Z0-9]{{32}}", created.secret)
    assert created.key.start == created.secret[: len(prefix) + 5]  # the prefix, `_` and 4 characters


async def test_ok_secrets_differ(admin: Caller) -> None:
    api = await admin.make_api()

    first = await _create(admin, api_id=api.id, prefix="sk")
    second = await _create(admin, api_id=api.id, prefix="sk")

    assert first.secret != second.secret and first.key.id != second.key.id


async def test_ok_new_key_verifies_at_once(admin: Caller) -> None:
    api = await admin.make_api()

    created = await _create(admin, api_id=api.id, permissions=["a"])

    answer = await admin.verify(created.secret, "a")
    assert answer.code == Code.CODE_VALID and answer.key_id == created.key.id


async def test_ok_name_of_200_characters(admin: Caller) -> None:
    api = await admin.make_api()

    created = await _create(admin, api_id=api.id, name="n" * 200)

    assert created.key.name == "n" * 200


async def test_ok_expire_time(admin: Caller) -> None:
    api = await admin.make_api()
    expiry = from_now(3600)

    created = await _create(admin, api_id=api.id, expire_time=expiry)

    assert created.key.expire_time == expiry
    assert (await admin.verify(created.secret)).expire_time == expiry


@pytest.mark.parametrize(("enabled", "code"), [(True, Code.CODE_VALID), (False, Code.CODE_DISABLED)])
async def test_ok_enabled(admin: Caller, enabled: bool, code: int) -> None:
    api = await admin.make_api()

    created = await _create(admin, api_id=api.id, enabled=enabled)

    assert created.key.enabled is enabled
    assert (await admin.verify(created.secret)).code == code


async def test_ok_permissions_from_the_catalog(admin: Caller, store: Store) -> None:
    api = await admin.make_api([("documents.write", "Write"), ("documents.read", "Read")])
    scope_ids = {s.value: s.id for s in api.scopes}

    created = await _create(admin, api_id=api.id, permissions=["documents.write", "documents.read", "documents.write"])

    # Ordered by name, duplicates once, the catalog's ids and descriptions.
    assert [(p.id, p.name, p.description) for p in created.key.permissions] == [
        (scope_ids["documents.read"], "documents.read", "Read"),
        (scope_ids["documents.write"], "documents.write", "Write"),
    ]
    assert list(created.created_permissions) == []


async def test_ok_unknown_permissions_are_added_to_the_catalog(admin: Caller, store: Store) -> None:
    api = await admin.make_api(["documents.read"])
    before = await store.revision()

    created = await _create(admin, api_id=api.id, permissions=["documents.read", "zeta", "alpha"])

    assert created.revision == before + 1  # one change: the key and its new catalog entries together

    assert sorted((p.name, p.description) for p in created.created_permissions) == [("alpha", ""), ("zeta", "")]
    assert [p.name for p in created.key.permissions] == ["alpha", "documents.read", "zeta"]
    assert await admin.catalog(api.id) == {
        "documents.read": api.scopes[0].id,
        **{p.name: p.id for p in created.created_permissions},
    }


async def test_ok_roles_listed_apart_from_direct_permissions(admin: Caller) -> None:
    api = await admin.make_api()
    writer = await admin.make_role(api.id, "writer", ["documents.write"])
    reader = await admin.make_role(api.id, "reader", ["documents.read"])

    created = await _create(admin, api_id=api.id, permissions=["billing.read"], roles=["writer", "reader", "writer"])

    assert [p.name for p in created.key.permissions] == ["billing.read"]
    assert list(created.key.roles) == [reader, writer]  # ordered by name, each with its permissions


async def test_ok_caller_scoped_to_one_api(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api(["a"])
    caller = await make_caller([f"api.{api.id}.create_key"])

    # Known permissions need no rbac permission.
    created = await _create(caller, api_id=api.id, permissions=["a"])

    assert created.key.api_id == api.id


async def test_ok_secret_is_stored_only_as_its_sha256(admin: Caller, store: Store) -> None:
    api = await admin.make_api()

    created = await _create(admin, api_id=api.id, prefix="sk_live")

    snapshot = await store.export_snapshot()
    [key] = [k for k in snapshot.keys if k.id == created.key.id]
    assert key.secret_hash == hashlib.sha256(created.secret.encode()).digest()
    # Nowhere in what the store holds (every row, the change log, the audit trail) is the secret itself, nor its
    # random part. The bytes of the SQLite files on disk: tests/test_secret_watch.py.
    held = repr(snapshot)
    assert created.secret not in held and created.secret.split("_")[-1] not in held


# -- invalid argument -------------------------------------------------------------------------------


def _case_id(case: tuple[dict[str, object], str]) -> str:
    [(name, value)] = case[0].items()
    shown = repr(value)
    return f"{name}={shown[:24]}..." if len(shown) > 24 else f"{name}={shown}"


def _expiry(label: str, seconds: int, nanos: int = 0) -> object:
    # Explicit ids: these timestamps depend on the clock, and test ids must not.
    return pytest.param(({"expire_time": Timestamp(seconds=seconds, nanos=nanos)}, "expire_time"), id=label)


_SOON = int(time.time()) + 3600


@pytest.mark.parametrize(
    "case",
    [
        ({"api_id": ""}, "api_id"),
        ({"api_id": "api-1"}, "api_id"),
        ({"api_id": "api_" + "a" * 61}, "api_id"),
        ({"name": "n" * 201}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"prefix": "sk-live"}, "prefix"),
        ({"prefix": "sk live"}, "prefix"),
        ({"prefix": "p" * 17}, "prefix"),
        ({"prefix": "clé"}, "prefix"),
        _expiry("expire_time in the past", int(time.time()) - 60),
        _expiry("expire_time before 1970", -1),
        _expiry("expire_time after 9999", 253402300800),
        _expiry("expire_time nanos=-1", _SOON, -1),
        _expiry("expire_time nanos=1e9", _SOON, 1_000_000_000),
        ({"permissions": [""]}, "permissions[0]"),
        ({"permissions": ["ok", "not ok"]}, "permissions[1]"),
        ({"permissions": ["p" * 281]}, "permissions[0]"),
        ({"permissions": [f"p{i}" for i in range(1001)]}, "permissions"),
        ({"roles": [""]}, "roles[0]"),
        ({"roles": ["ok", "not ok"]}, "roles[1]"),
        ({"roles": ["r" * 65]}, "roles[0]"),
        ({"roles": ["docs.*"]}, "roles[0]"),  # role names allow no wildcard
        ({"roles": [f"r{i}" for i in range(1001)]}, "roles"),
    ],
    ids=_case_id,
)
async def test_invalid_argument(admin: Caller, store: Store, case: tuple[dict[str, object], str]) -> None:
    fields, field = case
    api = await admin.make_api()
    request = {"api_id": api.id, **fields}
    error = await rejected(store, lambda: _create(admin, **request), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)


async def test_invalid_argument_lists_every_bad_field(admin: Caller) -> None:
    api = await admin.make_api()

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _create(
            admin, api_id=api.id, name="n" * 201, prefix="a-b", permissions=["x", "bad name"], roles=["bad role"]
        )

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(e.value)) == {"name", "prefix", "permissions[1]", "roles[0]"}


async def test_ok_limits_are_inclusive(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "r" * 64)
    names = ["p" * 280] + [f"p{i}" for i in range(999)]

    created = await _create(admin, api_id=api.id, permissions=names, roles=["r" * 64])

    assert len(created.key.permissions) == 1000 and len(created.created_permissions) == 1000
    assert [r.name for r in created.key.roles] == ["r" * 64]


# -- permission denied ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sees_with", ["read_api", "read_key"])
async def test_permission_denied_without_create_key(
    admin: Caller, make_caller: MakeCaller, store: Store, sees_with: str
) -> None:
    api = await admin.make_api()
    caller = await make_caller(
        [f"api.{api.id}.{sees_with}", f"api.{api.id}.update_key", f"rbac.{api.id}.create_permission"]
    )
    error = await rejected(store, lambda: _create(caller, api_id=api.id), grpc.StatusCode.PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"api.{api.id}.create_key")


async def test_permission_denied_unknown_permissions_without_create_permission(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    api = await admin.make_api(["known"])
    caller = await make_caller([f"api.{api.id}.create_key"])
    error = await rejected(
        store,
        lambda: _create(caller, api_id=api.id, permissions=["known", "new.one", "new.two"]),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    info = error_info(error)
    assert info.metadata["permission"] == f"rbac.{api.id}.create_permission"
    assert "new.one" in info.metadata["permissions_not_in_catalog"]
    assert "new.two" in info.metadata["permissions_not_in_catalog"]


# -- not found ---------------------------------------------------------------------------------------


async def test_not_found_unknown_api(admin: Caller, store: Store) -> None:
    error = await rejected(store, lambda: _create(admin, api_id="api_does_not_exist"), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["api_does_not_exist"]


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{own}.create_key", "api.{own}.read_api", "api.{own}.read_key"],
        ["api.{other}.verify_key", "api.{other}.update_key", "rbac.{other}.create_permission"],
    ],
)
async def test_not_found_api_the_caller_may_not_see(
    admin: Caller, make_caller: MakeCaller, store: Store, permissions: list[str]
) -> None:
    own, other = await admin.make_api(), await admin.make_api()
    caller = await make_caller([p.format(own=own.id, other=other.id) for p in permissions])
    before = await store.export_snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _create(caller, api_id=other.id)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _create(caller, api_id="api_does_not_exist")

    # As if the API did not exist, so API ids cannot be probed.
    assert e.value.code() == unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert resource_names(e.value) == [other.id]
    assert e.value.details() == unknown.value.details().replace("api_does_not_exist", other.id)
    assert await store.export_snapshot() == before


async def test_not_found_unknown_roles(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader")
    error = await rejected(
        store,
        lambda: _create(
            admin, api_id=api.id, permissions=["new.permission"], roles=["ghost", "reader", "phantom", "ghost"]
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert resource_names(error) == ["ghost", "phantom"]


async def test_not_found_role_of_another_api(admin: Caller, store: Store) -> None:
    api, other = await admin.make_api(), await admin.make_api()
    await admin.make_role(other.id, "reader")
    error = await rejected(store, lambda: _create(admin, api_id=api.id, roles=["reader"]), grpc.StatusCode.NOT_FOUND)
    assert resource_names(error) == ["reader"]
