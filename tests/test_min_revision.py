"""`min_revision` on VerifyKey and the Get and List RPCs: the answer reflects at least that revision, or is
OUT_OF_RANGE."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import pytest

from keyscope.v1 import apis_pb2, keys_pb2, roles_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.rpc_errors import error_info, field_violations

pytestmark = pytest.mark.asyncio

T = TypeVar("T")
Read = Callable[[Caller, dict[str, str], int], Awaitable[Any]]


async def _resources(admin: Caller) -> dict[str, str]:
    api = await admin.make_api(["documents.read"])
    role = await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id, ["documents.read"])
    [scope] = api.scopes
    return {"api": api.id, "role": role.id, "key": key.id, "secret": secret, "scope": scope.id}


READS: dict[str, Read] = {
    "GetApi": lambda c, r, m: c.apis.GetApi(apis_pb2.GetApiRequest(api_id=r["api"], min_revision=m), metadata=c.md),
    "GetKey": lambda c, r, m: c.keys.GetKey(keys_pb2.GetKeyRequest(key_id=r["key"], min_revision=m), metadata=c.md),
    "GetRole": lambda c, r, m: c.roles.GetRole(
        roles_pb2.GetRoleRequest(role_id=r["role"], min_revision=m), metadata=c.md
    ),
    "VerifyKey": lambda c, r, m: c.keys.VerifyKey(
        keys_pb2.VerifyKeyRequest(key=r["secret"], min_revision=m), metadata=c.md
    ),
    "ListApis": lambda c, r, m: c.apis.ListApis(apis_pb2.ListApisRequest(min_revision=m), metadata=c.md),
    "ListPermissions": lambda c, r, m: c.apis.ListPermissions(
        apis_pb2.ListPermissionsRequest(api_id=r["api"], min_revision=m), metadata=c.md
    ),
    "ListKeys": lambda c, r, m: c.keys.ListKeys(
        keys_pb2.ListKeysRequest(api_id=r["api"], min_revision=m), metadata=c.md
    ),
    "ListRoles": lambda c, r, m: c.roles.ListRoles(
        roles_pb2.ListRolesRequest(api_id=r["api"], min_revision=m), metadata=c.md
    ),
}


def _only(items: Sequence[T]) -> T:
    """The one item of a list answer (the resources made above hold one of each)."""
    [item] = items
    return item


# What each answer says of the resource it read: (kind of resource, its id, a field that shows it is that one).
ANSWERED: dict[str, Callable[[Any], tuple[str, str, object]]] = {
    "GetApi": lambda answer: ("api", answer.api.id, [s.value for s in answer.api.scopes]),
    "GetKey": lambda answer: ("key", answer.key.id, [p.name for p in answer.key.permissions]),
    "GetRole": lambda answer: ("role", answer.role.id, [p.name for p in answer.role.permissions]),
    "VerifyKey": lambda answer: ("key", answer.key_id, list(answer.permissions)),
    "ListApis": lambda answer: ("api", _only(answer.apis).id, [s.value for s in _only(answer.apis).scopes]),
    "ListPermissions": lambda answer: ("scope", _only(answer.scopes).id, [s.value for s in answer.scopes]),
    "ListKeys": lambda answer: ("key", _only(answer.keys).id, [p.name for p in _only(answer.keys).permissions]),
    "ListRoles": lambda answer: ("role", _only(answer.roles).id, [p.name for p in _only(answer.roles).permissions]),
}


async def test_ok_min_revision_of_the_latest_write_sees_it(admin: Caller) -> None:
    resources = await _resources(admin)
    written = await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=resources["key"], permissions=["documents.write"]), metadata=admin.md
    )

    key = await READS["GetKey"](admin, resources, written.revision)
    verified = await READS["VerifyKey"](admin, resources, written.revision)

    assert ANSWERED["GetKey"](key) == ("key", resources["key"], ["documents.write"])
    assert ANSWERED["VerifyKey"](verified) == ("key", resources["key"], ["documents.write"])


@pytest.mark.parametrize("rpc", READS)
async def test_ok_min_revision_zero_or_reached(admin: Caller, store: Store, rpc: str) -> None:
    resources = await _resources(admin)
    for min_revision in (0, 1, await store.revision()):
        kind, answered_id, shown = ANSWERED[rpc](await READS[rpc](admin, resources, min_revision))
        assert (answered_id, shown) == (resources[kind], ["documents.read"])


@pytest.mark.parametrize("rpc", READS)
async def test_out_of_range_min_revision_ahead_of_the_store(admin: Caller, store: Store, rpc: str) -> None:
    resources = await _resources(admin)
    current = await store.revision()

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await READS[rpc](admin, resources, current + 1)

    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info = error_info(e.value)
    assert info.reason == "REVISION_NOT_REACHED"
    assert dict(info.metadata) == {"min_revision": str(current + 1), "revision": str(current)}


async def test_out_of_range_for_an_unknown_key_too(admin: Caller, store: Store) -> None:
    # Never an answer from a state older than asked for, not even "no such key".
    current = await store.revision()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.keys.VerifyKey(
            keys_pb2.VerifyKeyRequest(key="unknown", min_revision=current + 5), metadata=admin.md
        )
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE


@pytest.mark.parametrize("rpc", READS)
async def test_invalid_argument_negative_min_revision(admin: Caller, rpc: str) -> None:
    resources = await _resources(admin)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await READS[rpc](admin, resources, -1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(e.value)) == ["min_revision"]
