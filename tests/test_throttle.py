"""Throttling of failed lookups (issue 12): unknown root keys per peer address, unknown VerifyKey secrets per root
key. A flood is answered RESOURCE_EXHAUSTED with RetryInfo past its budget; what the caches answer never is.

The flooder and the well-behaved caller are both on 127.0.0.1, as they would be behind one NAT: the address alone
cannot tell them apart, the cost of the call can. The throttle runs on a clock the test moves.
"""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import apis_pb2, keys_pb2
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.factory import RunningServer, ServerConfig
from keyscope_server.store import Store
from keyscope_server.store.engine_store import EngineStore
from keyscope_server.throttle import ThrottleConfig
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.rpc_errors import error_info, request_id, retry_delay

pytestmark = pytest.mark.asyncio

BUDGET = 5
Code = keys_pb2.VerifyKeyResponse


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0  # the start of a window: the flood's retry delay is (1 - 0) + (1 - 4/5) = 1.2 s

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server_config(clock: FakeClock) -> ServerConfig:
    throttle = ThrottleConfig(auth_failures=BUDGET, unknown_keys=BUDGET, window_seconds=1.0, clock=clock)
    return ServerConfig(host="127.0.0.1", port=0, throttle=throttle)


def lookups(store: Store) -> tuple[int, int]:
    assert isinstance(store, EngineStore)
    return store.lookups.root_keys, store.lookups.keys


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def wrong_root_key(flooder: Caller) -> grpc.aio.AioRpcError | None:
    """A GetApi with a root key no one has; its error, None if it was answered."""
    try:
        await flooder.apis.GetApi(
            apis_pb2.GetApiRequest(api_id="api_x"),
            metadata=(("authorization", f"Bearer {new_secret(ROOT_KEY_PREFIX)}"),),
        )
    except grpc.aio.AioRpcError as error:
        return error
    return None


async def test_resource_exhausted_wrong_root_keys_past_the_budget_while_a_known_root_key_is_served(
    server: RunningServer, store: Store, admin: Caller
) -> None:
    api = await admin.make_api()  # the admin's root key is known now
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as other:
        flooder = Caller(other, "", "-")
        flood: list[grpc.StatusCode] = []
        served: list[grpc.StatusCode] = []
        root_lookups_before, _ = lookups(store)
        for _ in range(3 * BUDGET):
            error = await wrong_root_key(flooder)
            assert error is not None
            flood.append(error.code())
            served.append(await code_of(admin.apis.GetApi(apis_pb2.GetApiRequest(api_id=api.id), metadata=admin.md)))
        root_lookups_after, _ = lookups(store)

    assert flood == [grpc.StatusCode.UNAUTHENTICATED] * BUDGET + [grpc.StatusCode.RESOURCE_EXHAUSTED] * (2 * BUDGET)
    assert served == [grpc.StatusCode.OK] * (3 * BUDGET)
    assert root_lookups_after - root_lookups_before == BUDGET  # the refused calls cost no lookup


async def test_resource_exhausted_carries_retry_info_error_info_and_the_request_id(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as other:
        flooder = Caller(other, "", "-")
        for _ in range(BUDGET):
            await wrong_root_key(flooder)
        error = await wrong_root_key(flooder)
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(error) == pytest.approx(1.201)
    assert error_info(error).reason == "TOO_MANY_FAILED_AUTHENTICATIONS"
    assert request_id(error).startswith("req_")
    assert "retry in 1.201s" in (error.details() or "")


async def test_ok_the_address_is_taken_again_after_the_retry_delay(
    server: RunningServer, store: Store, channel: grpc.aio.Channel, clock: FakeClock
) -> None:
    # A root key the server has never seen needs a lookup: from a throttled address it waits out the delay too.
    secret = new_secret(ROOT_KEY_PREFIX)
    record = await store.create_root_key("late", hash_secret(secret), ["api.*.create_api"])
    late = Caller(channel, secret, record.id)
    flooder = Caller(channel, "", "-")
    for _ in range(BUDGET):
        await wrong_root_key(flooder)
    error = await wrong_root_key(flooder)
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = retry_delay(error)

    clock.now += delay - 0.002
    assert await code_of(late.make_api()) == grpc.StatusCode.RESOURCE_EXHAUSTED
    clock.now += 0.002
    assert await code_of(late.make_api()) == grpc.StatusCode.OK
    error = await wrong_root_key(flooder)
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_resource_exhausted_unknown_secrets_past_the_budget_of_one_root_key_only(
    store: Store, admin: Caller, make_caller: MakeCaller
) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id)
    a = await make_caller(["api.*.verify_key"])
    b = await make_caller(["api.*.verify_key"])
    assert (await a.verify(secret)).code == Code.CODE_VALID  # the key is cached now
    guesses = [new_secret("guess") for _ in range(3 * BUDGET)]
    _, key_lookups_before = lookups(store)

    flood: list[object] = []
    for guess in guesses:
        try:
            flood.append((await a.verify(guess)).code)
        except grpc.aio.AioRpcError as error:
            flood.append(error.code())
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert error_info(error).reason == "TOO_MANY_UNKNOWN_KEYS"
                assert retry_delay(error) == pytest.approx(1.201)
        assert (await a.verify(secret)).code == Code.CODE_VALID  # from the cache: never refused
    _, key_lookups_after = lookups(store)

    assert flood == [Code.CODE_NOT_FOUND] * BUDGET + [grpc.StatusCode.RESOURCE_EXHAUSTED] * (2 * BUDGET)
    assert key_lookups_after - key_lookups_before == BUDGET
    # A guess already found unknown is answered from the cache, as NOT_FOUND, over budget or not.
    assert (await a.verify(guesses[0])).code == Code.CODE_NOT_FOUND
    # Another root key has a budget of its own: its guesses are looked up and answered.
    assert [(await b.verify(new_secret("guess"))).code for _ in range(BUDGET)] == [Code.CODE_NOT_FOUND] * BUDGET
    assert (await b.verify(secret)).code == Code.CODE_VALID


async def test_ok_unknown_secrets_answered_again_after_the_retry_delay(
    admin: Caller, make_caller: MakeCaller, clock: FakeClock
) -> None:
    api = await admin.make_api()
    a = await make_caller(["api.*.verify_key"])
    for _ in range(BUDGET):
        assert (await a.verify(new_secret("guess"))).code == Code.CODE_NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await a.verify(new_secret("guess"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A key created while refused needs a lookup like any secret not cached: it waits out the delay as well.
    _, secret = await admin.make_key(api.id)
    assert await code_of(a.verify(secret)) == grpc.StatusCode.RESOURCE_EXHAUSTED

    clock.now += retry_delay(refused.value)
    assert (await a.verify(secret)).code == Code.CODE_VALID
    assert (await a.verify(new_secret("guess"))).code == Code.CODE_NOT_FOUND


async def test_ok_a_budget_of_zero_turns_the_throttle_off(
    store: Store, server_config: ServerConfig, make_caller: MakeCaller
) -> None:
    from dataclasses import replace

    from keyscope_server.factory import start_server

    config = replace(server_config, throttle=ThrottleConfig(auth_failures=0, unknown_keys=0))
    running = await start_server(store, config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as other:
            flooder = Caller(other, "", "-")
            codes = {(await wrong_root_key(flooder)).code() for _ in range(3 * BUDGET)}  # type: ignore[union-attr]
    finally:
        await running.stop(None)
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}


async def test_resource_exhausted_the_client_exposes_the_retry_delay(server: RunningServer) -> None:
    import keyscope

    target = f"127.0.0.1:{server.port}"
    for _ in range(BUDGET):
        async with keyscope.AsyncClient(target, root_key=new_secret(ROOT_KEY_PREFIX)) as stranger:
            with pytest.raises(keyscope.Unauthenticated) as unknown:
                await stranger.apis.GetApi(apis_pb2.GetApiRequest(api_id="api_x"))
            assert unknown.value.retry_delay is None
    async with keyscope.AsyncClient(target, root_key=new_secret(ROOT_KEY_PREFIX)) as stranger:
        with pytest.raises(keyscope.ResourceExhausted) as throttled:
            await stranger.apis.GetApi(apis_pb2.GetApiRequest(api_id="api_x"))
    assert throttled.value.retry_delay == pytest.approx(1.201)
    assert throttled.value.reason == "TOO_MANY_FAILED_AUTHENTICATIONS"
