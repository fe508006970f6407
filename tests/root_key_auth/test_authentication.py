"""Which credentials authenticate a call to any RPC, and what every other credential gets: UNAUTHENTICATED, and
nothing changed."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from keyscope.v1 import apis_pb2, audit_pb2, keys_pb2, roles_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.factory import SERVICE_NAMES
from keyscope_server.store import Store
from tests.client import BAD_AUTHORIZATION, Caller
from tests.conftest import UNUSABLE_ROOT_KEYS, MakeCaller, UnusableCaller
from tests.root_key_auth.every_rpc import RPCS, UNKNOWN, Metadata, World, call
from tests.rpc_errors import error_info, rejected, request_id

pytestmark = pytest.mark.asyncio


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


# Authentication is one step of the interceptor, the same for every method. Every way a credential can be bad is
# tried on a method of each kind (a creation, a read, a list, a replacement, a deletion, VerifyKey); every method
# with the two commonest (no credential, an unknown key). The whole cross product cost 840 server starts a run.
KINDS = ("CreateApi", "GetKey", "ListKeys", "SetPermissions", "DeleteApi", "VerifyKey")
COMMONEST = ("no-metadata", "unknown")
CASES = [(case, rpc) for case in BAD_CREDENTIALS for rpc in KINDS] + [
    (case, rpc) for rpc in RPCS if rpc not in KINDS for case in COMMONEST
]


async def test_the_cases_cover_every_rpc_and_every_bad_credential() -> None:
    assert {rpc for _, rpc in CASES} == set(RPCS)
    assert {case for case, _ in CASES} == set(BAD_CREDENTIALS)


@pytest.mark.parametrize(("case", "rpc"), CASES)
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
    assert ("x-request-id", "trace-123") in tuple(e.value.trailing_metadata() or ())


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
