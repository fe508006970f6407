"""Root-key authentication and authorization, across every keyscope.v1 RPC.

Each RPC is called with a request that would succeed for an all-powerful root
key, so that the credentials or the permissions are the only thing that can
make it fail.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from keyscope.v1 import apis_pb2, audit_pb2, keys_pb2, permissions_pb2, roles_pb2
from server.cli import EXAMPLE_ROOT_KEY
from server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from server.factory import SERVICE_NAMES
from server.store import Store
from tests.client import BAD_AUTHORIZATION, Caller
from tests.conftest import UNUSABLE_ROOT_KEYS, MakeCaller, UnusableCaller
from tests.rpc_errors import blanked_answer, error_info, rejected, request_id

pytestmark = pytest.mark.asyncio

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


@pytest_asyncio.fixture
async def world(admin: Caller) -> World:
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
    "UpdateScopes": (
        "apis",
        lambda w: apis_pb2.UpdateScopesRequest(
            api_id=w.a, scopes=_scopes("documents.read", "documents.write", "documents.delete")
        ),
    ),
    "CreateKey": (
        "keys",
        lambda w: keys_pb2.CreateKeyRequest(
            api_id=w.a, name="second", permissions=["documents.read"], roles=["reader"]
        ),
    ),
    "GetKey": ("keys", lambda w: keys_pb2.GetKeyRequest(key_id=w.key_id)),
    "UpdateKey": ("keys", lambda w: keys_pb2.UpdateKeyRequest(key_id=w.key_id, name="renamed")),
    "DeleteKey": ("keys", lambda w: keys_pb2.DeleteKeyRequest(key_id=w.key_id)),
    "SetPermissions": (
        "keys",
        lambda w: keys_pb2.SetPermissionsRequest(key_id=w.key_id, permissions=["documents.read"]),
    ),
    "SetRoles": ("keys", lambda w: keys_pb2.SetRolesRequest(key_id=w.key_id, roles=[])),
    "VerifyKey": ("keys", lambda w: keys_pb2.VerifyKeyRequest(key=w.secret, permissions="documents.read")),
    "CreateRole": (
        "roles",
        lambda w: roles_pb2.CreateRoleRequest(api_id=w.a, name="writer", permissions=["documents.write"]),
    ),
    "GetRole": ("roles", lambda w: roles_pb2.GetRoleRequest(role_id=w.role_id)),
    "SetRolePermissions": (
        "roles",
        lambda w: roles_pb2.SetRolePermissionsRequest(
            role_id=w.role_id, permissions=["documents.read", "documents.write"]
        ),
    ),
    "ListAuditEvents": ("audit", lambda w: audit_pb2.ListAuditEventsRequest(api_id=w.a)),
}
# VerifyKey answers "not yours" with status OK and code NOT_FOUND, so it has tests of its own.
STATUS_RPCS = [rpc for rpc in RPCS if rpc != "VerifyKey"]
# The RPCs on an existing resource of API A. (ListAuditEvents looks up no resource: without the permission
# it is denied alike for every API id, existing or not.)
RESOURCE_RPCS = [rpc for rpc in STATUS_RPCS if rpc not in ("CreateApi", "ListAuditEvents")]


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


async def test_the_tables_cover_every_keyscope_rpc() -> None:
    methods = {
        m.name
        for module in (apis_pb2, audit_pb2, keys_pb2, roles_pb2)
        for s in module.DESCRIPTOR.services_by_name.values()
        if s.full_name in SERVICE_NAMES
        for m in s.methods
    }
    assert set(RPCS) == methods


# -- unauthenticated ------------------------------------------------------------------------------


def _bearer(value: str) -> Metadata:
    return (("authorization", value),)


# Makes the metadata of one bad-credential case.
MakeMetadata = Callable[[MakeCaller, UnusableCaller], Awaitable[Metadata]]


async def _valid_secret(make_caller: MakeCaller) -> str:
    return (await make_caller(EXAMPLE_ROOT_KEY)).root_key


def _unusable(how: str) -> MakeMetadata:
    """The metadata of an all-powerful root key that is disabled, expired or deleted."""

    async def make(make_caller: MakeCaller, unusable_caller: UnusableCaller) -> Metadata:
        return (await unusable_caller(how)).md

    return make


def _header(template: str) -> MakeMetadata:
    """`authorization: <template>`, where {secret} is the secret of a working all-powerful root key."""

    async def make(make_caller: MakeCaller, unusable_caller: UnusableCaller) -> Metadata:
        secret = await _valid_secret(make_caller) if "{secret}" in template else ""
        return _bearer(template.format(secret=secret))

    return make


async def _none(make_caller: MakeCaller, unusable_caller: UnusableCaller) -> Metadata:
    return ()


async def _other_header(make_caller: MakeCaller, unusable_caller: UnusableCaller) -> Metadata:
    return (("x-api-key", await _valid_secret(make_caller)),)


BAD_CREDENTIALS: dict[str, MakeMetadata] = {
    "no-metadata": _none,
    "secret-in-another-header": _other_header,
    "empty": _header(""),
    "basic": _header("Basic x"),
    "scheme-only": _header("Bearer"),
    "scheme-and-spaces": _header("bearer  "),
    "secret-without-scheme": _header("{secret}"),
    "other-scheme": _header("Token {secret}"),
    "scheme-glued-to-secret": _header("Bearer{secret}"),
    "trailing-junk": _header("Bearer {secret} extra"),
    "unknown": _header(f"Bearer {new_secret(ROOT_KEY_PREFIX)}"),
    "unknown-of-another-shape": _header("Bearer ksroot_unknown0123456789"),
    **{how: _unusable(how) for how in UNUSABLE_ROOT_KEYS},
}


@pytest.mark.parametrize("rpc", list(RPCS))
@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
async def test_unauthenticated(
    admin: Caller,
    world: World,
    make_caller: MakeCaller,
    unusable_caller: UnusableCaller,
    store: Store,
    case: str,
    rpc: str,
) -> None:
    metadata = await BAD_CREDENTIALS[case](make_caller, unusable_caller)
    error = await rejected(store, lambda: call(admin, rpc, world, metadata), grpc.StatusCode.UNAUTHENTICATED)
    info = error_info(error)
    assert (info.reason, info.domain) == ("UNAUTHENTICATED", "keyscope.v1")


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_unauthenticated_comes_before_validation(admin: Caller, rpc: str) -> None:
    stub, build = RPCS[rpc]
    empty = type(build(UNKNOWN))()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(admin, rpc, UNKNOWN, (), request=empty)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unauthenticated_answer_carries_the_request_id(admin: Caller, world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(admin, "GetApi", world, (("x-request-id", "trace-123"),))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert request_id(e.value) == "trace-123"
    assert ("x-request-id", "trace-123") in tuple(e.value.initial_metadata() or ())


async def test_unauthenticated_the_call_after_a_root_key_is_disabled(
    admin: Caller, world: World, store: Store, make_caller: MakeCaller
) -> None:
    caller = await make_caller(EXAMPLE_ROOT_KEY)
    await call(caller, "GetApi", world)
    await store.set_root_key_enabled(caller.root_key_id, False)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(caller, "GetApi", world)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Enabled again, it works again at once.
    await store.set_root_key_enabled(caller.root_key_id, True)
    assert (await call(caller, "GetApi", world)).api.id == world.a


# -- accepted credentials -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template", ["Bearer {secret}", "bearer {secret}", "BEARER {secret}", "Bearer   {secret}", "Bearer {secret} "]
)
async def test_ok_bearer_forms(admin: Caller, world: World, template: str) -> None:
    # The scheme is case-insensitive (RFC 9110); the secret itself is not.
    response = await call(admin, "GetApi", world, _bearer(template.format(secret=admin.root_key)))
    assert response.api.id == world.a


async def test_unauthenticated_the_secret_is_case_sensitive(admin: Caller, world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(admin, "GetApi", world, _bearer(f"Bearer {admin.root_key.upper()}"))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_ok_root_key_that_expires_later(admin: Caller, world: World, store: Store) -> None:
    secret = new_secret(ROOT_KEY_PREFIX)
    await store.create_root_key(
        "t", hash_secret(secret), EXAMPLE_ROOT_KEY, expires_ms=int(time.time() * 1000) + 3_600_000
    )
    response = await call(admin, "GetApi", world, _bearer(f"Bearer {secret}"))
    assert response.api.id == world.a


@pytest.mark.parametrize("metadata", BAD_AUTHORIZATION)
@pytest.mark.parametrize("service", ["", *SERVICE_NAMES])
async def test_ok_health_needs_no_credentials(channel: grpc.aio.Channel, metadata: Metadata, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), metadata=metadata)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_ok_reflection_needs_no_credentials(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    stream = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    [response] = [r async for r in stream]
    assert set(SERVICE_NAMES) <= {s.name for s in response.list_services_response.service}


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
        (["api.*.verify_key"], Code.VALID),
        (["api.{a}.verify_key"], Code.VALID),
        (["api.{a}.*"], Code.VALID),
        (["*.*.*"], Code.VALID),
        (["*.{a}.verify_key"], Code.VALID),
        (["api.{b}.verify_key"], Code.NOT_FOUND),
        (["api.verify_key.*"], Code.NOT_FOUND),
        (["api.*"], Code.NOT_FOUND),
        (["api.*.update_key", "api.*.read_key", "rbac.*.*"], Code.NOT_FOUND),
    ],
)
async def test_wildcards_verify_key(
    world: World, make_caller: MakeCaller, granted: list[str], code: keys_pb2.VerifyKeyResponse.Code.ValueType
) -> None:
    caller = await make_caller([p.format(a=world.a, b=world.b) for p in granted])
    assert (await call(caller, "VerifyKey", world)).code == code


# -- the matrix: every RPC x the permission it needs, held rightly and wrongly --------------------------

# The one root-key permission each RPC needs for the world's requests (all names are in the catalog).
REQUIRED: dict[str, str] = {
    "CreateApi": "api.*.create_api",
    "GetApi": "api.{a}.read_api",
    "UpdateScopes": "api.{a}.update_api",
    "CreateKey": "api.{a}.create_key",
    "GetKey": "api.{a}.read_key",
    "UpdateKey": "api.{a}.update_key",
    "DeleteKey": "api.{a}.delete_key",
    "SetPermissions": "api.{a}.update_key",
    "SetRoles": "api.{a}.update_key",
    "VerifyKey": "api.{a}.verify_key",
    "CreateRole": "rbac.{a}.create_role",
    "GetRole": "rbac.{a}.read_role",
    "SetRolePermissions": "rbac.{a}.update_role",
    "ListAuditEvents": "audit.{a}.read_events",
}
# What each way of holding it wrongly becomes: the required permission made into another.
WRONG_HOLDINGS: dict[str, Callable[[str], list[str]]] = {
    "none": lambda required: [],
    "for-another-api": lambda required: [required.replace("{a}", "{b}")],
    "wildcard-in-the-wrong-segment": lambda required: [".".join([required.split(".")[0], required.split(".")[2], "*"])],
    "another-verb": lambda required: [required.rsplit(".", 1)[0] + ".other_verb"],
}


def _refused(rpc: str) -> grpc.StatusCode | keys_pb2.VerifyKeyResponse.Code.ValueType:
    """How an RPC refuses a caller that may not do it: calls on no existing resource say PERMISSION_DENIED;
    on a resource the caller cannot see, NOT_FOUND (VerifyKey: the answer's code)."""
    if rpc == "VerifyKey":
        return Code.NOT_FOUND
    return PERMISSION_DENIED if rpc in ("CreateApi", "ListAuditEvents") else NOT_FOUND


async def _answer(
    caller: Caller, rpc: str, world: World
) -> grpc.StatusCode | keys_pb2.VerifyKeyResponse.Code.ValueType:
    if rpc == "VerifyKey":
        return (await call(caller, rpc, world)).code
    return await outcome(caller, rpc, world)


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_ok_matrix_the_required_permission_alone_is_enough(
    world: World, make_caller: MakeCaller, rpc: str
) -> None:
    caller = await make_caller([REQUIRED[rpc].format(a=world.a)])
    assert await _answer(caller, rpc, world) == (Code.VALID if rpc == "VerifyKey" else OK)


# (CreateApi's permission names no API, so it has no "for another API" case.)
WRONGLY_HELD = [
    (rpc, holding)
    for rpc in RPCS
    for holding in WRONG_HOLDINGS
    if not (holding == "for-another-api" and "{a}" not in REQUIRED[rpc])
]


@pytest.mark.parametrize(("rpc", "holding"), WRONGLY_HELD, ids=[f"{rpc}-{holding}" for rpc, holding in WRONGLY_HELD])
async def test_not_found_or_denied_matrix_the_required_permission_held_wrongly(
    world: World, make_caller: MakeCaller, store: Store, rpc: str, holding: str
) -> None:
    held = [p.format(a=world.a, b=world.b) for p in WRONG_HOLDINGS[holding](REQUIRED[rpc])]
    caller = await make_caller(held)
    before = await store.export_snapshot()
    assert await _answer(caller, rpc, world) == _refused(rpc)
    assert await store.export_snapshot() == before


async def test_the_matrix_covers_every_rpc() -> None:
    assert set(REQUIRED) == set(RPCS)


# -- another API's permissions: not found -----------------------------------------------------------


@pytest.mark.parametrize("rpc", RESOURCE_RPCS)
async def test_not_found_with_every_permission_on_another_api(
    world: World, make_caller: MakeCaller, store: Store, rpc: str
) -> None:
    caller = await make_caller([f"api.{world.b}.*", f"rbac.{world.b}.*"])
    before = await store.export_snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await call(caller, rpc, world)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await call(caller, rpc, replace(UNKNOWN, b=world.b))

    assert hidden.value.code() == NOT_FOUND
    # Word for word what a resource that does not exist answers: ids cannot be probed.
    assert blanked_answer(hidden.value, *world.ids) == blanked_answer(unknown.value, *UNKNOWN.ids)
    assert await store.export_snapshot() == before


async def test_not_found_verify_key_of_another_api_says_nothing_about_the_key(
    world: World, make_caller: MakeCaller
) -> None:
    caller = await make_caller([f"api.{world.b}.*", f"rbac.{world.b}.*"])
    hidden = await call(caller, "VerifyKey", world)
    unknown = await call(caller, "VerifyKey", UNKNOWN)
    assert hidden.code == Code.NOT_FOUND
    assert hidden == unknown == keys_pb2.VerifyKeyResponse(valid=False, code=Code.NOT_FOUND)


# -- the wrong permission on an API one may read: permission denied ---------------------------------


DENIALS: list[tuple[list[str], str, str]] = [
    ([], "CreateApi", "api.*.create_api"),
    (["api.{a}.read_api"], "UpdateScopes", "api.{a}.update_api"),
    (["api.{a}.read_api"], "CreateKey", "api.{a}.create_key"),
    (["api.{a}.read_key"], "CreateKey", "api.{a}.create_key"),
    (["api.{a}.read_key"], "UpdateKey", "api.{a}.update_key"),
    (["api.{a}.read_key"], "DeleteKey", "api.{a}.delete_key"),
    (["api.{a}.read_key", "api.{a}.delete_key"], "SetPermissions", "api.{a}.update_key"),
    (["api.*.read_key", "api.{b}.update_key"], "SetRoles", "api.{a}.update_key"),
    (["api.{a}.read_api"], "CreateRole", "rbac.{a}.create_role"),
    (["rbac.{a}.read_role"], "CreateRole", "rbac.{a}.create_role"),
    (["rbac.{a}.read_role", "rbac.{a}.create_role"], "SetRolePermissions", "rbac.{a}.update_role"),
    (["api.{a}.*", "rbac.{a}.*"], "ListAuditEvents", "audit.{a}.read_events"),
    (["audit.{b}.read_events"], "ListAuditEvents", "audit.{a}.read_events"),
]


@pytest.mark.parametrize(("held", "rpc", "required"), DENIALS, ids=[f"{rpc}-{'+'.join(h)}" for h, rpc, _ in DENIALS])
async def test_permission_denied_names_the_missing_permission(
    world: World, make_caller: MakeCaller, store: Store, held: list[str], rpc: str, required: str
) -> None:
    caller = await make_caller([p.format(a=world.a, b=world.b) for p in held])
    error = await rejected(store, lambda: call(caller, rpc, world), PERMISSION_DENIED)
    info = error_info(error)
    assert (info.reason, info.domain) == ("MISSING_PERMISSION", "keyscope.v1")
    assert info.metadata["permission"] == required.format(a=world.a)
    assert request_id(error)
