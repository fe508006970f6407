"""A test caller: the generated stubs over a real channel, with one root key's credentials.

Fixtures in conftest.py hand these out; `make_*` methods create what a test
needs in one call, and `get_*` methods read it back, through the public RPCs.
Below the class: what every RPC module sends wrong on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from keyscope.v1 import (
    apis_pb2,
    apis_pb2_grpc,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    permissions_pb2,
    roles_pb2,
    roles_pb2_grpc,
)


@dataclass
class Caller:
    channel: grpc.aio.Channel
    root_key: str  # the root key's secret
    root_key_id: str

    def __post_init__(self) -> None:
        self.apis = apis_pb2_grpc.ApiServiceStub(self.channel)
        self.keys = keys_pb2_grpc.KeyServiceStub(self.channel)
        self.roles = roles_pb2_grpc.RoleServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: `await caller.keys.GetKey(request, metadata=caller.md)`."""
        return (("authorization", f"Bearer {self.root_key}"),)

    async def make_api(self, scopes: Sequence[str | tuple[str, str]] = (), name: str = "test api") -> apis_pb2.Api:
        entries = [
            permissions_pb2.Scope(value=s)
            if isinstance(s, str)
            else permissions_pb2.Scope(value=s[0], description=s[1])
            for s in scopes
        ]
        response = await self.apis.CreateApi(apis_pb2.CreateApiRequest(name=name, scopes=entries), metadata=self.md)
        return response.api

    async def make_key(
        self, api_id: str, permissions: Sequence[str] = (), roles: Sequence[str] = (), **fields: object
    ) -> tuple[keys_pb2.Key, str]:
        """A new key and its secret."""
        response = await self.keys.CreateKey(
            keys_pb2.CreateKeyRequest(api_id=api_id, permissions=permissions, roles=roles, **fields),  # type: ignore[arg-type]
            metadata=self.md,
        )
        return response.key, response.secret

    async def make_role(
        self, api_id: str, name: str, permissions: Sequence[str] = (), description: str = ""
    ) -> roles_pb2.Role:
        response = await self.roles.CreateRole(
            roles_pb2.CreateRoleRequest(api_id=api_id, name=name, description=description, permissions=permissions),
            metadata=self.md,
        )
        return response.role

    async def verify(self, secret: str, query: str = "") -> keys_pb2.VerifyKeyResponse:
        return await self.keys.VerifyKey(keys_pb2.VerifyKeyRequest(key=secret, permissions=query), metadata=self.md)

    async def get_api(self, api_id: str) -> apis_pb2.Api:
        return (await self.apis.GetApi(apis_pb2.GetApiRequest(api_id=api_id), metadata=self.md)).api

    async def get_key(self, key_id: str) -> keys_pb2.Key:
        return (await self.keys.GetKey(keys_pb2.GetKeyRequest(key_id=key_id), metadata=self.md)).key

    async def get_role(self, role_id: str) -> roles_pb2.Role:
        return (await self.roles.GetRole(roles_pb2.GetRoleRequest(role_id=role_id), metadata=self.md)).role

    async def catalog(self, api_id: str) -> dict[str, str]:
        """The API's scopes, value -> id."""
        return {s.value: s.id for s in (await self.get_api(api_id)).scopes}


def from_now(seconds: int) -> Timestamp:
    """An expire_time `seconds` from now (in the past when negative)."""
    return Timestamp(seconds=int(time.time()) + seconds)


# Call metadata that authenticates no one: the short check each RPC's own module makes. The full
# matrix of bad credentials (and disabled, expired, deleted root keys) against every RPC is in
# tests/test_root_key_auth.py.
BAD_AUTHORIZATION = [
    pytest.param((), id="missing"),
    pytest.param((("authorization", "Basic dXNlcjpwYXNz"),), id="malformed"),
    pytest.param((("authorization", "Bearer ksroot_unknown0123456789"),), id="unknown root key"),
]

# Key ids of the wrong shape (the rule: ^[a-zA-Z0-9_]+$, at most 64 characters), refused by every
# RPC that takes a key_id before anything is looked up.
INVALID_KEY_IDS = [
    pytest.param("", id="empty"),
    pytest.param("key-1", id="dash"),
    pytest.param("key 1", id="space"),
    pytest.param("key.1", id="dot"),
    pytest.param("key_é", id="accented"),
    pytest.param("ключ_1", id="cyrillic"),
    pytest.param("key_" + "a" * 61, id="65 characters"),
]
