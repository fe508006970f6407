"""SetPermissions: callers that may see the key but not do what they ask."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from keyscope.v1 import keys_pb2
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, rejected
from tests.set_permissions.call import direct_names, set_permissions

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def test_permission_denied_among_concurrent_calls_changes_only_its_own_key(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    # Concurrent writes may share one SQLite transaction: a denied one must leave no trace,
    # and must not take the others down with it.
    api = await admin.make_api(["documents.read", "documents.write"])
    keys = [(await admin.make_key(api.id, ["documents.read"]))[0] for _ in range(10)]
    limited = await make_caller([f"api.{api.id}.update_key", f"api.{api.id}.read_key"])  # cannot create
    before = await store.revision()

    results = await asyncio.gather(
        *(
            set_permissions(limited, key.id, ["documents.write"] if i % 2 == 0 else ["documents.write", f"new.{i}"])
            for i, key in enumerate(keys)
        ),
        return_exceptions=True,
    )

    for i, (key, result) in enumerate(zip(keys, results, strict=True)):
        if i % 2 == 0:
            assert isinstance(result, keys_pb2.SetPermissionsResponse)
            assert [p.name for p in result.permissions] == ["documents.write"]
            assert await direct_names(admin, key.id) == ["documents.write"]
        else:
            assert isinstance(result, grpc.aio.AioRpcError)
            assert result.code() == grpc.StatusCode.PERMISSION_DENIED
            assert await direct_names(admin, key.id) == ["documents.read"]
    assert sorted(r.revision for r in results if isinstance(r, keys_pb2.SetPermissionsResponse)) == list(
        range(before + 1, before + 6)
    )
    assert set(await admin.catalog(api.id)) == {"documents.read", "documents.write"}


async def test_permission_denied_read_key_without_update_key(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id)
    caller = await make_caller([f"api.{api.id}.read_key", "rbac.*.create_permission", "api.*.update_api"])
    error = await rejected(
        store, lambda: set_permissions(caller, key.id, ["documents.read"]), grpc.StatusCode.PERMISSION_DENIED
    )
    info = error_info(error)
    assert (info.reason, info.metadata["permission"]) == ("MISSING_PERMISSION", f"api.{api.id}.update_key")


@pytest.mark.parametrize("extra", [[], ["rbac.api_other.create_permission", "rbac.*.create_role"]])
async def test_permission_denied_unknown_names_without_create_permission(
    admin: Caller, make_caller: MakeCaller, store: Store, extra: list[str]
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    key, secret = await admin.make_key(api.id, ["documents.write"])
    caller = await make_caller([f"api.{api.id}.update_key", *extra])
    error = await rejected(
        store,
        lambda: set_permissions(caller, key.id, ["documents.read", "billing.read", "billing.write"]),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    info = error_info(error)
    assert info.reason == "PERMISSIONS_NOT_IN_CATALOG"
    assert info.metadata["permission"] == f"rbac.{api.id}.create_permission"
    assert sorted(info.metadata["permissions_not_in_catalog"].split(",")) == ["billing.read", "billing.write"]
    # The known name in the same request was not applied either.
    assert (await admin.verify(secret, "documents.write")).code == Code.CODE_VALID


async def test_permission_denied_update_key_alone_cannot_create_permissions(
    admin: Caller, make_caller: MakeCaller, store: Store
) -> None:
    # The seed's root key without its rbac permission (moved here from tests/test_root_key_auth.py).
    api = await admin.make_api(["documents.read", "documents.write"])
    key, _ = await admin.make_key(api.id, ["documents.write"])
    caller = await make_caller(["api.*.update_key"])
    error = await rejected(
        store,
        lambda: set_permissions(caller, key.id, ["documents.read", "documents.delete"]),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    info = error_info(error)
    assert info.reason == "PERMISSIONS_NOT_IN_CATALOG"
    assert info.metadata["permission"] == f"rbac.{api.id}.create_permission"
    assert info.metadata["permissions_not_in_catalog"] == "documents.delete"
