"""SetPermissions: requests refused before anything is looked up."""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import keys_pb2
from keyscope_server.store import Store
from tests.client import INVALID_KEY_IDS, Caller
from tests.rpc_errors import field_violations, rejected, request_id
from tests.set_permissions.call import set_permissions

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


@pytest.mark.parametrize("key_id", INVALID_KEY_IDS)
async def test_invalid_argument_key_id(admin: Caller, store: Store, key_id: str) -> None:
    error = await rejected(
        store, lambda: set_permissions(admin, key_id, ["documents.read"]), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert list(field_violations(error)) == ["key_id"]


@pytest.mark.parametrize(
    ("permissions", "field"),
    [
        ([""], "permissions[0]"),
        (["documents read"], "permissions[0]"),
        (["documents/read"], "permissions[0]"),
        (["documents.read", "dokumente.lesen\u00e9"], "permissions[1]"),
        (["a", "b", "p" * 281], "permissions[2]"),
        (["documents.read\n"], "permissions[0]"),
        (["documents.read", "documents.read", "+"], "permissions[2]"),
    ],
)
async def test_invalid_argument_permission_names(
    admin: Caller, store: Store, permissions: list[str], field: str
) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id, ["documents.read"])
    error = await rejected(store, lambda: set_permissions(admin, key.id, permissions), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(field_violations(error)) == [field]


async def test_invalid_argument_more_than_1000_names(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    error = await rejected(
        store,
        lambda: set_permissions(admin, key.id, [f"perm.{i}" for i in range(1001)]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(field_violations(error)) == ["permissions"]


async def test_invalid_argument_lists_every_bad_field_at_once(admin: Caller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_permissions(admin, "no-such-key!", ["ok", "not ok", "", "fine"])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(e.value)) == ["key_id", "permissions[1]", "permissions[2]"]
    assert request_id(e.value).startswith("req_")
