"""Every method, sent bytes that are not a message of its request type: INVALID_ARGUMENT naming `request`, with
the request id, an access-log line and nothing changed; never UNKNOWN or INTERNAL. Random bytes (which may happen
to decode) and truncations of valid messages get no UNKNOWN or INTERNAL either."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import Counter

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from keyscope.v1 import apis_pb2, audit_pb2, keys_pb2, roles_pb2
from keyscope_server.factory import RunningServer
from keyscope_server.store import Store
from tests.client import Caller
from tests.conftest import MakeCaller
from tests.fuzzed_answers import DELIBERATE, WIDE_METADATA
from tests.fuzzed_world import World, build_world
from tests.polling import until
from tests.request_strategies import request_strategy
from tests.rpc_errors import field_violations, rejected, request_id

pytestmark = pytest.mark.asyncio

METHODS: list[MethodDescriptor] = [
    method
    for module in (apis_pb2, keys_pb2, roles_pb2, audit_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
NOT_A_MESSAGE = (b"\xff\xff\xff", b"\x0a\x7f" + b"x" * 3, b"\x08")  # bad tag; a string cut short; a varint cut short


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _filled(method: MethodDescriptor) -> bytes:
    """A request of the method's type with every string field set: long enough for cuts inside a field."""
    message: Message = GetMessageClass(method.input_type)()
    for field in method.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            setattr(message, field.name, "x" * 24)
    return message.SerializeToString()


def _raw(channel: grpc.aio.Channel, method: MethodDescriptor) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(_path(method), request_serializer=None, response_deserializer=None)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
async def test_invalid_argument_bytes_that_are_not_a_request(
    admin: Caller, channel: grpc.aio.Channel, store: Store, method: MethodDescriptor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyscope.rpc")
    call = _raw(channel, method)
    for data in NOT_A_MESSAGE:
        send = functools.partial(call, data, metadata=admin.md)
        error = await rejected(store, send, grpc.StatusCode.INVALID_ARGUMENT)
        assert list(field_violations(error)) == ["request"]
        assert request_id(error).startswith("req_")
        assert "Error" not in (error.details() or "")  # no exception type names

    def logged() -> int:
        lines = [r.getMessage() for r in caplog.records if r.name == "keyscope.rpc"]
        return sum(f"{_path(method)} INVALID_ARGUMENT" in line for line in lines)

    # The access-log line is written once the answer has left, so the last one may come after the caller has it.
    await until(lambda: logged() == len(NOT_A_MESSAGE), lambda: f"{logged()} access-log lines")


async def test_unauthenticated_before_the_bytes_are_judged(channel: grpc.aio.Channel, store: Store) -> None:
    await rejected(store, lambda: _raw(channel, METHODS[0])(b"\xff\xff\xff"), grpc.StatusCode.UNAUTHENTICATED)


async def test_ok_random_bytes_and_cut_messages_get_no_unknown_or_internal(
    admin: Caller, channel: grpc.aio.Channel, store: Store
) -> None:
    rng = random.Random(20261203)  # the same bytes on every run
    codes: set[grpc.StatusCode] = set()
    for method in METHODS:
        filled = _filled(method)
        cuts = [filled[:n] for n in sorted(rng.sample(range(1, len(filled)), min(3, len(filled) - 1)))]
        noise = [rng.randbytes(rng.randint(1, 64)) for _ in range(3)]
        for data in cuts + noise:
            try:
                await _raw(channel, method)(data, metadata=admin.md)
                codes.add(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.add(error.code())
                assert error.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (method.name, data)
    assert grpc.StatusCode.INVALID_ARGUMENT in codes


# -- Hypothesis: raw bytes of every kind, against a world of real rows ---------------------------------------------
#
# Run as tests/test_adversarial_inputs.py runs its exploration (read its docstring): a world of real APIs, keys
# and roles built through the RPCs, a Hypothesis `@given` in a worker thread sending each example to the test's
# loop, the same inputs on every run, generation only. The bytes are drawn three ways: any bytes; a valid request
# of the method (naming the world's rows, so that it reaches the store) cut short at a drawn point; and a valid
# request with drawn bytes after it (which may decode as more fields, or not at all).

RAW_EXAMPLES = 30  # per method


def _raw_requests(method: MethodDescriptor, world: World) -> SearchStrategy[bytes]:
    valid = request_strategy(method.input_type, world.pools).map(lambda shown: shown.message.SerializeToString())

    @st.composite
    def cut(draw: st.DrawFn) -> bytes:
        data = draw(valid)
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]

    @st.composite
    def trailed(draw: st.DrawFn) -> bytes:
        return draw(valid) + draw(st.binary(min_size=1, max_size=16))

    return st.one_of(st.binary(max_size=128), cut(), trailed())


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
async def test_fuzzed_bytes_get_a_deliberate_answer_and_a_failure_changes_nothing(
    method: MethodDescriptor, make_caller: MakeCaller, server: RunningServer, store: Store
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=WIDE_METADATA) as channel:
        world = await build_world(make_caller, channel, store)
        call = _raw(channel, method)
        loop = asyncio.get_running_loop()
        answered: Counter[str] = Counter()

        async def send(data: bytes) -> None:
            before = await store.export_snapshot()
            try:
                await call(data, metadata=world.admin.md, timeout=30)
            except grpc.aio.AioRpcError as error:
                answered[error.code().name] += 1
                assert error.code() in DELIBERATE, (method.name, data, error.code(), error.details())
                assert request_id(error)  # a google.rpc.Status with a RequestInfo, as every error has
                assert "Error" not in (error.details() or "")  # no exception type names
                assert await store.export_snapshot() == before, (method.name, data, "failed but changed the store")
            else:
                answered["OK"] += 1

        @settings(max_examples=RAW_EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate])
        @given(_raw_requests(method, world))
        def explore(data: bytes) -> None:
            asyncio.run_coroutine_threadsafe(send(data), loop).result()

        await asyncio.to_thread(explore)
    assert sum(answered.values()) == RAW_EXAMPLES
    print(f"{method.full_name}: {RAW_EXAMPLES} byte strings ({', '.join(f'{c} {n}' for c, n in answered.items())})")
