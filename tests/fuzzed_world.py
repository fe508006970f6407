"""The world fuzzed requests act on (tests/test_adversarial_inputs.py): a small store built through the public RPCs,
the model of what it must hold, and every check of an answer and of the store after it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

import keyscope.v1
from keyscope.v1 import apis_pb2, audit_pb2, audit_pb2_grpc, keys_pb2, roles_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.store import Store
from keyscope_server.store.snapshot import StoreSnapshot
from tests.client import Caller, from_now
from tests.conftest import MakeCaller
from tests.fuzzed_answers import MAX_MESSAGE_BYTES, check_error, check_request_id
from tests.request_strategies import Pools
from tests.store_snapshot import dangling_references

Code = grpc.StatusCode
HEALTH_EVERY = 10  # examples between two health checks


def _rpcs() -> list[MethodDescriptor]:
    methods: list[MethodDescriptor] = []
    for module_info in pkgutil.iter_modules(keyscope.v1.__path__):
        if module_info.name.endswith("_pb2"):
            module = importlib.import_module(f"keyscope.v1.{module_info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                methods.extend(service.methods)
    return sorted(methods, key=lambda m: m.full_name)


RPCS = _rpcs()


def _stub_method(channel: grpc.aio.Channel, rpc: MethodDescriptor) -> Callable[..., Any]:
    """The generated stub's method for `rpc` (keyscope/v1/keys.proto -> keyscope.v1.keys_pb2_grpc)."""
    service = rpc.containing_service
    module = importlib.import_module(service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc")
    return getattr(getattr(module, f"{service.name}Stub")(channel), rpc.name)


# -- the world the requests act on -------------------------------------------------------------------


@dataclass
class World:
    channel: grpc.aio.Channel
    store: Store
    callers: dict[str, Caller]
    pools: Pools = field(default_factory=Pools)
    # What the store must hold: ids of the APIs, keys and roles made and not deleted.
    expected: dict[str, set[str]] = field(default_factory=lambda: {"api": set(), "key": set(), "role": set()})
    api_of: dict[str, str] = field(default_factory=dict)  # key or role id -> the id of its API
    held: StoreSnapshot | None = None  # the store's snapshot after the last call
    previous: StoreSnapshot | None = None  # and before it
    revision: int = 0
    revision_at_start: int = 0
    # The successful calls that changed the store: the revision each made -> (RPC, request id).
    changes: dict[int, tuple[str, str]] = field(default_factory=dict)
    tried: Counter[str] = field(default_factory=Counter)

    @property
    def admin(self) -> Caller:
        return self.callers["admin"]

    def add(self, kind: str, resource_id: str, api_id: str = "") -> None:
        self.expected[kind].add(resource_id)
        self.pools.ids[kind].append(resource_id)
        if api_id:
            self.api_of[resource_id] = api_id

    def learn(self, message: Message) -> None:
        """Remember the names and etags an answer shows, for later requests to use."""
        for api in _all(message, apis_pb2.Api):
            self.pools.etags.append(api.etag)
            self.pools.permission_names.extend(s.value for s in api.scopes)
        for key in _all(message, keys_pb2.Key):
            self.pools.etags.append(key.etag)
        for role in _all(message, roles_pb2.Role):
            self.pools.etags.append(role.etag)
            self.pools.role_names.append(role.name)
        for pool in (self.pools.etags, self.pools.permission_names, self.pools.role_names):
            pool[:] = dict.fromkeys(value for value in pool if value)  # once each, in the order first seen

    async def read_api(self, api_id: str) -> apis_pb2.Api:
        return await self.admin.get_api(api_id)

    async def read_key(self, key_id: str) -> keys_pb2.Key:
        return await self.admin.get_key(key_id)

    async def read_role(self, role_id: str) -> roles_pb2.Role:
        return await self.admin.get_role(role_id)

    async def audit_events_after(self, revision: int) -> list[audit_pb2.AuditEvent]:
        """Every audit event of a revision after `revision`, through ListAuditEvents' pages."""
        audit = audit_pb2_grpc.AuditServiceStub(self.channel)
        events: list[audit_pb2.AuditEvent] = []
        token = ""
        while True:
            page = await audit.ListAuditEvents(
                audit_pb2.ListAuditEventsRequest(page_size=1000, page_token=token), metadata=self.admin.md
            )
            events += [e for e in page.events if e.revision > revision]
            token = page.next_page_token
            if not token or (page.events and page.events[-1].revision <= revision):
                return events

    async def check_serving(self) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    async def take_stock(self) -> None:
        self.held = await self.store.export_snapshot()
        self.revision = self.held.revision

    async def attempt(self, rpc: MethodDescriptor, who: str, request: Message, sent_id: str | None) -> None:
        """One call, and every check of its answer and of the store after it."""
        caller = self.callers[who]
        metadata = caller.md + ((("x-request-id", sent_id),) if sent_id is not None else ())
        before, revision_before = self.held, self.revision
        self.previous = before
        call = _stub_method(self.channel, rpc)(request, metadata=metadata, timeout=60)
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            self.tried[error.code().name] += 1
            check_error(rpc, request, error, sent_id)
            await self.take_stock()
            assert self.held == before, f"{rpc.name} failed with {error.code().name} but changed the store"
            assert self.revision == revision_before
        else:
            self.tried["OK"] += 1
            assert request.ByteSize() <= MAX_MESSAGE_BYTES, f"{rpc.name} accepted a request over the size limit"
            echoed_id = check_request_id(await call.trailing_metadata(), sent_id)
            await self.take_stock()
            changed = self.held != before
            if changed:
                self.changes[self.revision] = (rpc.name, echoed_id)
                assert self.revision == revision_before + 1, f"{rpc.name} changed the store: revision must grow by 1"
            else:
                assert self.revision == revision_before, f"{rpc.name} changed nothing but the revision moved"
            effect = EFFECTS[rpc.full_name]
            if not effect.writes or getattr(request, "validate_only", False):
                assert not changed, (
                    f"{rpc.name} answered OK to a request that must change nothing, and changed the store"
                )
            if effect.writes:
                assert response.revision == self.revision, f"{rpc.name} answered revision {response.revision}"
            await effect.follow(self, request, response)
            self.learn(response)
        if sum(self.tried.values()) % HEALTH_EVERY == 0:
            await self.check_serving()

    async def check_final(self) -> None:
        await self.check_serving()
        held = await self.store.export_snapshot()
        assert dangling_references(held) == []
        for kind, rows in (("api", held.apis), ("key", held.keys), ("role", held.roles)):
            assert {row.id for row in rows} == self.expected[kind], f"the {kind}s the store holds"
        assert held.revision == self.revision_at_start + len(self.changes)
        assert await self.store.revision() == held.revision
        # One audit event for each of them, and none for anything else (a failed call, a no-op, validate_only).
        events = await self.audit_events_after(self.revision_at_start)
        assert {e.revision: (e.action, e.request_id) for e in events} == self.changes
        for api_id in self.expected["api"]:
            await self.read_api(api_id)
        for key_id in self.expected["key"]:
            await self.read_key(key_id)
        for role_id in self.expected["role"]:
            await self.read_role(role_id)


def _all(message: Message, cls: type[Message]) -> list[Any]:
    """Every `cls` message inside `message`, itself included."""
    if isinstance(message, cls):
        return [message]
    found: list[Any] = []
    for descriptor, value in message.ListFields():
        inner = descriptor.message_type
        if inner is None or not inner.full_name.startswith("keyscope."):
            continue  # scalars, and google.protobuf messages (Struct, Timestamp), hold no resources
        for item in value if descriptor.is_repeated else [value]:
            found.extend(_all(item, cls))
    return found


# -- what each RPC changes, and how to read it back ---------------------------------------------------


@dataclass(frozen=True)
class Effect:
    writes: bool  # may change the store (False: must never change it)
    follow: Callable[[World, Any, Any], Awaitable[None]]  # checks the store after OK, updates the model


async def _nothing(world: World, request: Any, response: Any) -> None:
    pass


async def _page(world: World, request: Any, response: Any) -> None:
    if response.next_page_token:
        world.pools.page_tokens.append(response.next_page_token)


async def _created_api(world: World, request: Any, response: Any) -> None:
    assert await world.read_api(response.api.id) == response.api
    world.add("api", response.api.id)


async def _updated_scopes(world: World, request: Any, response: Any) -> None:
    if not request.validate_only:
        assert await world.read_api(request.api_id) == response.api


async def _created_key(world: World, request: Any, response: Any) -> None:
    assert await world.read_key(response.key.id) == response.key
    world.add("key", response.key.id, response.key.api_id)
    world.pools.secrets.append(response.secret)


async def _updated_key(world: World, request: Any, response: Any) -> None:
    assert await world.read_key(request.key_id) == response.key


async def _deleted_key(world: World, request: Any, response: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await world.read_key(request.key_id)
    assert gone.value.code() == Code.NOT_FOUND
    world.expected["key"].discard(request.key_id)


async def _set_permissions(world: World, request: Any, response: Any) -> None:
    if not request.validate_only:
        key = await world.read_key(request.key_id)
        assert list(key.permissions) == list(response.permissions)
        assert key.etag == response.etag
    world.pools.permission_names.extend(p.name for p in response.created_permissions)


async def _removed_permissions(world: World, request: Any, response: Any) -> None:
    if not request.validate_only:
        key = await world.read_key(request.key_id)
        assert list(key.permissions) == list(response.permissions)
        assert key.etag == response.etag


async def _set_roles(world: World, request: Any, response: Any) -> None:
    key = await world.read_key(request.key_id)
    assert list(key.roles) == list(response.roles)
    assert key.etag == response.etag


async def _created_role(world: World, request: Any, response: Any) -> None:
    assert await world.read_role(response.role.id) == response.role
    world.add("role", response.role.id, response.role.api_id)


async def _deleted_role(world: World, request: Any, response: Any) -> None:
    assert world.previous is not None and world.held is not None
    holders = sorted(key_id for key_id, role_id in world.previous.key_roles if role_id == request.role_id)
    assert response.keys_affected == len(holders), f"DeleteRole counted {response.keys_affected} of {holders}"
    if request.validate_only:
        return
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await world.read_role(request.role_id)
    assert gone.value.code() == Code.NOT_FOUND
    assert request.role_id not in {role_id for _, role_id in world.held.key_roles}
    for key_id in holders:
        assert request.role_id not in {r.id for r in (await world.read_key(key_id)).roles}
    world.expected["role"].discard(request.role_id)


async def _deleted_api(world: World, request: Any, response: Any) -> None:
    assert world.previous is not None
    contents = {
        kind: {rid for rid in world.expected[kind] if world.api_of.get(rid) == request.api_id}
        for kind in ("key", "role")
    }
    scopes = [p for p in world.previous.permissions if p.api_id == request.api_id]
    assert (response.keys_deleted, response.roles_deleted, response.scopes_deleted) == (
        len(contents["key"]),
        len(contents["role"]),
        len(scopes),
    ), f"DeleteApi counted what the API did not hold: {contents}, {len(scopes)} scopes"
    if request.validate_only:
        return
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await world.read_api(request.api_id)
    assert gone.value.code() == Code.NOT_FOUND
    world.expected["api"].discard(request.api_id)
    for kind, ids in contents.items():
        world.expected[kind] -= ids


async def _set_role_permissions(world: World, request: Any, response: Any) -> None:
    assert await world.read_role(request.role_id) == response.role


EFFECTS: dict[str, Effect] = {
    "keyscope.v1.ApiService.CreateApi": Effect(True, _created_api),
    "keyscope.v1.ApiService.GetApi": Effect(False, _nothing),
    "keyscope.v1.ApiService.ListApis": Effect(False, _page),
    "keyscope.v1.ApiService.ListPermissions": Effect(False, _page),
    "keyscope.v1.ApiService.UpdateScopes": Effect(True, _updated_scopes),
    "keyscope.v1.ApiService.DeleteApi": Effect(True, _deleted_api),
    "keyscope.v1.AuditService.ListAuditEvents": Effect(False, _page),
    "keyscope.v1.KeyService.CreateKey": Effect(True, _created_key),
    "keyscope.v1.KeyService.DeleteKey": Effect(True, _deleted_key),
    "keyscope.v1.KeyService.GetKey": Effect(False, _nothing),
    "keyscope.v1.KeyService.ListKeys": Effect(False, _page),
    "keyscope.v1.KeyService.SetPermissions": Effect(True, _set_permissions),
    "keyscope.v1.KeyService.AddPermissions": Effect(True, _set_permissions),
    "keyscope.v1.KeyService.RemovePermissions": Effect(True, _removed_permissions),
    "keyscope.v1.KeyService.SetRoles": Effect(True, _set_roles),
    "keyscope.v1.KeyService.AddRoles": Effect(True, _set_roles),
    "keyscope.v1.KeyService.RemoveRoles": Effect(True, _set_roles),
    "keyscope.v1.KeyService.UpdateKey": Effect(True, _updated_key),
    "keyscope.v1.KeyService.VerifyKey": Effect(False, _nothing),
    "keyscope.v1.RoleService.CreateRole": Effect(True, _created_role),
    "keyscope.v1.RoleService.GetRole": Effect(False, _nothing),
    "keyscope.v1.RoleService.ListRoles": Effect(False, _page),
    "keyscope.v1.RoleService.SetRolePermissions": Effect(True, _set_role_permissions),
    "keyscope.v1.RoleService.DeleteRole": Effect(True, _deleted_role),
}


async def build_world(make_caller: MakeCaller, channel: grpc.aio.Channel, store: Store) -> World:
    """Two APIs; keys enabled, disabled, expired and deleted; roles; an admin, a weaker caller and an unknown one.
    The callers call over `channel`."""

    async def caller_with(permissions: list[str]) -> Caller:
        made = await make_caller(permissions)
        return Caller(channel, made.root_key, made.root_key_id)

    admin = await caller_with(list(EXAMPLE_ROOT_KEY))  # the `admin` fixture's permissions, on `channel`
    world = World(channel, store, {"admin": admin})
    documents = await admin.make_api(
        [("documents.read", "Read documents"), ("documents.write", "Write\ndocuments"), "admin", "documents.*"],
        name="documents",
    )
    billing = await admin.make_api(["billing.read"], name="billing ✓")
    for api in (documents, billing):
        world.add("api", api.id)
    for api_id, name, permissions in (
        (documents.id, "reader", ["documents.read"]),
        (documents.id, "writer", ["documents.write", "admin"]),
        (billing.id, "auditor", ["billing.read"]),
    ):
        world.add("role", (await admin.make_role(api_id, name, permissions)).id, api_id)
    made = [
        await admin.make_key(documents.id, ["documents.read"], roles=["writer"], name="live", prefix="docs"),
        await admin.make_key(documents.id, ["admin"], enabled=False),
        await admin.make_key(documents.id, ["documents.*"], expire_time=from_now(3600)),
        await admin.make_key(documents.id),
        await admin.make_key(billing.id, ["billing.read"], roles=["auditor"]),
    ]
    for key, secret in made:
        world.add("key", key.id, key.api_id)
        world.pools.secrets.append(secret)
    expired, deleted = made[2][0].id, made[3][0].id
    await admin.keys.UpdateKey(keys_pb2.UpdateKeyRequest(key_id=expired, expire_time=from_now(-60)), metadata=admin.md)
    await admin.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=deleted), metadata=admin.md)
    world.expected["key"].discard(deleted)
    # May read and change the documents API's keys and roles, but not create permissions, delete keys, make
    # APIs or roles, or see the billing API at all.
    world.callers["weak"] = await caller_with(
        [
            f"api.{documents.id}.read_api",
            f"api.{documents.id}.update_api",
            f"api.{documents.id}.read_key",
            f"api.{documents.id}.create_key",
            f"api.{documents.id}.update_key",
            "api.*.verify_key",
            f"rbac.{documents.id}.read_role",
            f"rbac.{documents.id}.update_role",
            f"audit.{documents.id}.read_events",
        ]
    )
    world.callers["unknown"] = Caller(channel, "ksroot_unknown0123456789", "root_unknown")
    world.pools.ids["root"].extend([admin.root_key_id, world.callers["weak"].root_key_id])
    world.pools.actions.extend([*(m.name for m in RPCS), "CreateRootKey"])
    for resource in (await world.read_api(documents.id), await world.read_api(billing.id)):
        world.learn(resource)
    for key_id in world.expected["key"]:
        world.learn(await world.read_key(key_id))
    world.pools.revision = lambda: world.revision
    await world.take_stock()
    world.revision_at_start = world.revision
    return world
