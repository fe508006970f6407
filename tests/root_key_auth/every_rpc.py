"""One request of every keyscope.v1 RPC, over a small world, that an all-powerful root key would have succeed:
the credentials or the permissions a test gives are then the only thing that can make it fail."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from keyscope.v1 import apis_pb2, audit_pb2, keys_pb2, permissions_pb2, roles_pb2
from tests.client import Caller

Metadata = tuple[tuple[str, str], ...]
Code = keys_pb2.VerifyKeyResponse.Code
OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@dataclass(frozen=True)
class World:
    """API A with a role and a key, and API B with nothing in it."""

    a: str
    b: str
    key_id: str
    secret: str
    role_id: str

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.a, self.b, self.key_id, self.role_id)


UNKNOWN = World(
    a="api_0000000000000000",
    b="api_0000000000000001",
    key_id="key_0000000000000000",
    secret="not_a_key",
    role_id="role_0000000000000000",
)


async def make_world(admin: Caller) -> World:
    a = await admin.make_api(["documents.read", "documents.write"], name="a")
    b = await admin.make_api(["documents.read"], name="b")
    role = await admin.make_role(a.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(a.id, ["documents.write"], ["reader"])
    return World(a.id, b.id, key.id, secret, role.id)


def _scopes(*values: str) -> list[permissions_pb2.Scope]:
    return [permissions_pb2.Scope(value=v) for v in values]


# RPC name -> (stub attribute of Caller, request for the world). Every name here is a known catalog entry.
RPCS: dict[str, tuple[str, Callable[[World], Message]]] = {
    "CreateApi": ("apis", lambda w: apis_pb2.CreateApiRequest(name="c", scopes=_scopes("x.read"))),
    "GetApi": ("apis", lambda w: apis_pb2.GetApiRequest(api_id=w.a)),
    "ListApis": ("apis", lambda w: apis_pb2.ListApisRequest()),
    "ListPermissions": ("apis", lambda w: apis_pb2.ListPermissionsRequest(api_id=w.a)),
    "UpdateScopes": (
        "apis",
        lambda w: apis_pb2.UpdateScopesRequest(
            api_id=w.a, scopes=_scopes("documents.read", "documents.write", "documents.delete")
        ),
    ),
    "DeleteApi": ("apis", lambda w: apis_pb2.DeleteApiRequest(api_id=w.a)),
    "CreateKey": (
        "keys",
        lambda w: keys_pb2.CreateKeyRequest(
            api_id=w.a, name="second", permissions=["documents.read"], roles=["reader"]
        ),
    ),
    "GetKey": ("keys", lambda w: keys_pb2.GetKeyRequest(key_id=w.key_id)),
    "ListKeys": ("keys", lambda w: keys_pb2.ListKeysRequest(api_id=w.a)),
    "UpdateKey": ("keys", lambda w: keys_pb2.UpdateKeyRequest(key_id=w.key_id, name="renamed")),
    "DeleteKey": ("keys", lambda w: keys_pb2.DeleteKeyRequest(key_id=w.key_id)),
    "SetPermissions": (
        "keys",
        lambda w: keys_pb2.SetPermissionsRequest(key_id=w.key_id, permissions=["documents.read"]),
    ),
    "AddPermissions": (
        "keys",
        lambda w: keys_pb2.AddPermissionsRequest(key_id=w.key_id, permissions=["documents.read"]),
    ),
    "RemovePermissions": (
        "keys",
        lambda w: keys_pb2.RemovePermissionsRequest(key_id=w.key_id, permissions=["documents.write"]),
    ),
    "SetRoles": ("keys", lambda w: keys_pb2.SetRolesRequest(key_id=w.key_id, roles=[])),
    "AddRoles": ("keys", lambda w: keys_pb2.AddRolesRequest(key_id=w.key_id, roles=["reader"])),
    "RemoveRoles": ("keys", lambda w: keys_pb2.RemoveRolesRequest(key_id=w.key_id, roles=["reader"])),
    "VerifyKey": ("keys", lambda w: keys_pb2.VerifyKeyRequest(key=w.secret, permissions="documents.read")),
    "CreateRole": (
        "roles",
        lambda w: roles_pb2.CreateRoleRequest(api_id=w.a, name="writer", permissions=["documents.write"]),
    ),
    "GetRole": ("roles", lambda w: roles_pb2.GetRoleRequest(role_id=w.role_id)),
    "ListRoles": ("roles", lambda w: roles_pb2.ListRolesRequest(api_id=w.a)),
    "SetRolePermissions": (
        "roles",
        lambda w: roles_pb2.SetRolePermissionsRequest(
            role_id=w.role_id, permissions=["documents.read", "documents.write"]
        ),
    ),
    "DeleteRole": ("roles", lambda w: roles_pb2.DeleteRoleRequest(role_id=w.role_id)),
    "ListAuditEvents": ("audit", lambda w: audit_pb2.ListAuditEventsRequest(api_id=w.a)),
}
# VerifyKey answers "not yours" with status OK and code CODE_NOT_FOUND, so it has tests of its own.
STATUS_RPCS = [rpc for rpc in RPCS if rpc != "VerifyKey"]
# The RPCs on an existing resource of API A. (ListAuditEvents looks up no resource: without the permission
# it is denied alike for every API id, existing or not. ListApis names no API: it lists those the caller may
# read and leaves the others out, so it answers OK to every caller.)
RESOURCE_RPCS = [rpc for rpc in STATUS_RPCS if rpc not in ("CreateApi", "ListApis", "ListAuditEvents")]


async def call(
    caller: Caller,
    rpc: str,
    world: World,
    metadata: Sequence[tuple[str, str]] | None = None,
    request: Message | None = None,
) -> Any:
    stub, build = RPCS[rpc]
    method = getattr(getattr(caller, stub), rpc)
    return await method(
        build(world) if request is None else request, metadata=caller.md if metadata is None else metadata
    )


async def outcome(caller: Caller, rpc: str, world: World) -> grpc.StatusCode:
    try:
        await call(caller, rpc, world)
    except grpc.aio.AioRpcError as e:
        return e.code()
    return OK
