"""Wildcards in root-key permissions: which segment they stand for, and what they never grant."""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import keys_pb2
from tests.conftest import MakeCaller
from tests.root_key_auth.every_rpc import NOT_FOUND, OK, PERMISSION_DENIED, STATUS_RPCS, Code, World, call, outcome

pytestmark = pytest.mark.asyncio


# -- wildcards ------------------------------------------------------------------------------------


ALL_API_VERBS_OF_A = [
    "GetApi",
    "UpdateScopes",
    "CreateKey",
    "GetKey",
    "UpdateKey",
    "DeleteKey",
    "SetPermissions",
    "SetRoles",
]

GRANTS: list[tuple[list[str], str, grpc.StatusCode]] = [
    # `api.*.update_key` is update_key on every API, and nothing more: not even reading the key.
    (["api.*.update_key"], "UpdateKey", OK),
    (["api.*.update_key"], "SetPermissions", OK),
    (["api.*.update_key"], "SetRoles", OK),
    (["api.*.update_key"], "GetKey", NOT_FOUND),
    (["api.*.update_key"], "DeleteKey", NOT_FOUND),
    (["api.*.update_key"], "GetApi", NOT_FOUND),
    # `api.<id>.*` is every api verb of that API...
    *[(["api.{a}.*"], rpc, OK) for rpc in ALL_API_VERBS_OF_A],
    # ...but no rbac verb (it does show the API, so CreateRole is denied rather than hidden)...
    (["api.{a}.*"], "CreateRole", PERMISSION_DENIED),
    (["api.{a}.*"], "GetRole", NOT_FOUND),
    (["api.{a}.*"], "SetRolePermissions", NOT_FOUND),
    # ...and not `api.*.create_api`, whose middle segment is a literal `*` it does not hold.
    (["api.{a}.*"], "CreateApi", PERMISSION_DENIED),
    (["api.{b}.*"], "GetApi", NOT_FOUND),
    # `*.*.*` is everything with three segments.
    *[(["*.*.*"], rpc, OK) for rpc in STATUS_RPCS],
    (["rbac.*.*"], "CreateRole", OK),
    (["rbac.*.*"], "SetRolePermissions", OK),
    (["rbac.*.*"], "GetApi", NOT_FOUND),
    (["*.{a}.update_key"], "UpdateKey", OK),
    (["*.{a}.*"], "SetRolePermissions", OK),
    # A wildcard in the wrong segment, or a name of the wrong shape, grants nothing.
    (["api.update_key.*"], "UpdateKey", NOT_FOUND),
    (["*.{b}.update_key"], "UpdateKey", NOT_FOUND),
    (["*.update_key.{a}"], "UpdateKey", NOT_FOUND),
    (["api.*"], "UpdateKey", NOT_FOUND),
    (["*.*"], "UpdateKey", NOT_FOUND),
    (["*"], "UpdateKey", NOT_FOUND),
    (["api.*.*.*"], "UpdateKey", NOT_FOUND),
    (["api.*.update_key.*"], "UpdateKey", NOT_FOUND),
    (["api.*.update_key*"], "UpdateKey", NOT_FOUND),
    (["api.api_*.update_key"], "UpdateKey", NOT_FOUND),
    (["api.*.update_*"], "UpdateKey", NOT_FOUND),
    (["API.*.update_key"], "UpdateKey", NOT_FOUND),
    (["api.*.Update_Key"], "UpdateKey", NOT_FOUND),
    (["api.{a}.update_key "], "UpdateKey", NOT_FOUND),
    # Reading one kind of resource shows nothing of another kind.
    (["api.{a}.read_api"], "UpdateKey", NOT_FOUND),
    (["api.{a}.read_key"], "UpdateScopes", NOT_FOUND),
    (["api.{a}.read_api"], "SetRolePermissions", NOT_FOUND),
    (["rbac.{a}.read_role"], "UpdateScopes", NOT_FOUND),
    (["rbac.{a}.read_role"], "GetKey", NOT_FOUND),
    # The audit trail: `audit.<api>.read_events` for one API's events, and nothing else.
    (["audit.*.read_events"], "ListAuditEvents", OK),
    (["audit.{a}.read_events"], "ListAuditEvents", OK),
    (["audit.{a}.*"], "ListAuditEvents", OK),
    (["audit.{a}.read_events"], "GetApi", NOT_FOUND),
    (["audit.read_events.*"], "ListAuditEvents", PERMISSION_DENIED),
]


@pytest.mark.parametrize(("granted", "rpc", "expected"), GRANTS, ids=[f"{'+'.join(g)}-{rpc}" for g, rpc, _ in GRANTS])
async def test_wildcards(
    world: World, make_caller: MakeCaller, granted: list[str], rpc: str, expected: grpc.StatusCode
) -> None:
    caller = await make_caller([p.format(a=world.a, b=world.b) for p in granted])
    assert await outcome(caller, rpc, world) == expected


@pytest.mark.parametrize(
    ("granted", "code"),
    [
        (["api.*.verify_key"], Code.CODE_VALID),
        (["api.{a}.verify_key"], Code.CODE_VALID),
        (["api.{a}.*"], Code.CODE_VALID),
        (["*.*.*"], Code.CODE_VALID),
        (["*.{a}.verify_key"], Code.CODE_VALID),
        (["api.{b}.verify_key"], Code.CODE_NOT_FOUND),
        (["api.verify_key.*"], Code.CODE_NOT_FOUND),
        (["api.*"], Code.CODE_NOT_FOUND),
        (["api.*.update_key", "api.*.read_key", "rbac.*.*"], Code.CODE_NOT_FOUND),
    ],
)
async def test_wildcards_verify_key(
    world: World, make_caller: MakeCaller, granted: list[str], code: keys_pb2.VerifyKeyResponse.Code.ValueType
) -> None:
    caller = await make_caller([p.format(a=world.a, b=world.b) for p in granted])
    assert (await call(caller, "VerifyKey", world)).code == code
