"""OpenTelemetry traces: a server span for every RPC, with the request id and the caller, never a secret; off
unless OTEL_TRACES_EXPORTER names an exporter.

The spans come from the real server through the OpenTelemetry gRPC instrumentation, into the SDK's in-memory
exporter: the exporter is the only stand-in, and it is outside Keyscope.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind

from keyscope.v1 import apis_pb2, keys_pb2
from keyscope_server.factory import RunningServer, ServerConfig, start_server
from keyscope_server.store import Store
from keyscope_server.tracing import (
    REQUEST_ID_ATTRIBUTE,
    ROOT_KEY_ATTRIBUTE,
    CallSampler,
    Tracing,
    TracingConfigError,
    tracing_from_environment,
)
from tests.client import Caller
from tests.polling import until
from tests.processes import free_port, server_env, start_serve, stop

STATUS_CODE = "rpc.grpc.status_code"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def server_config(tracer_provider: TracerProvider) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, tracing=Tracing(tracer_provider))


def trailer_request_id(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    [value] = [value for key, value in metadata or () if key == "x-request-id"]
    assert isinstance(value, str)
    return value


def server_spans(exporter: InMemorySpanExporter, method: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == method]


def every_text(span: ReadableSpan) -> str:
    """All a span says: its name, attributes, events and status, as one text to search."""
    events = [(event.name, dict(event.attributes or {})) for event in span.events]
    return repr((span.name, dict(span.attributes or {}), events, span.status.description))


# -- OK ---------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ok_a_call_has_one_server_span_with_its_request_id_and_caller(
    admin: Caller, exporter: InMemorySpanExporter
) -> None:
    call = admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="traced"), metadata=admin.md)
    await call
    request_id = trailer_request_id(await call.trailing_metadata())
    [span] = server_spans(exporter, "/keyscope.v1.ApiService/CreateApi")
    assert span.kind == SpanKind.SERVER
    attributes = dict(span.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "keyscope.v1.ApiService"
    assert attributes["rpc.method"] == "CreateApi"
    assert attributes[STATUS_CODE] == grpc.StatusCode.OK.value[0]
    assert attributes[REQUEST_ID_ATTRIBUTE] == request_id
    assert attributes[ROOT_KEY_ATTRIBUTE] == admin.root_key_id


@pytest.mark.asyncio
async def test_ok_the_callers_own_request_id_is_on_the_span(admin: Caller, exporter: InMemorySpanExporter) -> None:
    await admin.apis.ListApis(apis_pb2.ListApisRequest(), metadata=(*admin.md, ("x-request-id", "trace-me-7")))
    [span] = server_spans(exporter, "/keyscope.v1.ApiService/ListApis")
    assert dict(span.attributes or {})[REQUEST_ID_ATTRIBUTE] == "trace-me-7"


@pytest.mark.asyncio
async def test_ok_health_check_has_a_span_without_a_caller(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    call = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert (await call).status == health_pb2.HealthCheckResponse.SERVING
    [span] = server_spans(exporter, "/grpc.health.v1.Health/Check")
    attributes = dict(span.attributes or {})
    assert attributes[REQUEST_ID_ATTRIBUTE] == trailer_request_id(await call.trailing_metadata())
    assert ROOT_KEY_ATTRIBUTE not in attributes


@pytest.mark.asyncio
async def test_ok_a_health_watch_gets_its_answer_and_a_span(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    # Watch writes its answers with context.write rather than yielding them.
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    first = await call.read()
    assert isinstance(first, health_pb2.HealthCheckResponse)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    call.cancel()
    await until(lambda: server_spans(exporter, "/grpc.health.v1.Health/Watch"), "the Watch span has ended")
    [span] = server_spans(exporter, "/grpc.health.v1.Health/Watch")
    assert span.kind == SpanKind.SERVER


@pytest.mark.asyncio
async def test_ok_a_reflection_stream_gets_its_answers_and_a_span(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    # Reflection yields its answers.
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = [
        answer
        async for answer in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    ]
    [answer] = answers
    assert "keyscope.v1.KeyService" in [service.name for service in answer.list_services_response.service]
    [span] = server_spans(exporter, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert dict(span.attributes or {})[STATUS_CODE] == grpc.StatusCode.OK.value[0]


@pytest.mark.asyncio
async def test_ok_verify_key_span_holds_no_secret(admin: Caller, exporter: InMemorySpanExporter) -> None:
    api = await admin.make_api(["documents.read"])
    created = await admin.keys.CreateKey(
        keys_pb2.CreateKeyRequest(api_id=api.id, permissions=["documents.read"]), metadata=admin.md
    )
    answer = await admin.keys.VerifyKey(
        keys_pb2.VerifyKeyRequest(key=created.secret, permissions="documents.read"), metadata=admin.md
    )
    assert answer.code == keys_pb2.VerifyKeyResponse.CODE_VALID
    spans = exporter.get_finished_spans()
    assert {span.name for span in spans} >= {
        "/keyscope.v1.ApiService/CreateApi",
        "/keyscope.v1.KeyService/CreateKey",
        "/keyscope.v1.KeyService/VerifyKey",
    }
    for span in spans:
        text = every_text(span)
        assert created.secret not in text
        assert admin.root_key not in text


# -- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_not_found_span_has_the_code_and_request_id(admin: Caller, exporter: InMemorySpanExporter) -> None:
    call = admin.apis.GetApi(apis_pb2.GetApiRequest(api_id="api_doesnotexist"), metadata=admin.md)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    [span] = server_spans(exporter, "/keyscope.v1.ApiService/GetApi")
    attributes = dict(span.attributes or {})
    assert attributes[STATUS_CODE] == grpc.StatusCode.NOT_FOUND.value[0]
    assert attributes[REQUEST_ID_ATTRIBUTE] == trailer_request_id(e.value.trailing_metadata())
    assert attributes[ROOT_KEY_ATTRIBUTE] == admin.root_key_id


@pytest.mark.asyncio
async def test_unauthenticated_span_has_no_caller_and_no_secret(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    stranger = Caller(channel, "ksroot_notarealkey0000000000000000", "-")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stranger.apis.ListApis(apis_pb2.ListApisRequest(), metadata=stranger.md)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    [span] = server_spans(exporter, "/keyscope.v1.ApiService/ListApis")
    attributes = dict(span.attributes or {})
    assert attributes[STATUS_CODE] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert ROOT_KEY_ATTRIBUTE not in attributes
    assert stranger.root_key not in every_text(span)


# -- sampling before the instrumentation -----------------------------------------------------------------------

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest_asyncio.fixture
async def sampled_server(
    store: Store, exporter: InMemorySpanExporter
) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    """A server whose calls reach the instrumentation only as a parent-based ratio of 0 lets them: those of a
    sampled trace. Its provider records all it is given, as tracing_from_environment builds it."""
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = await start_server(
        store, ServerConfig(host="127.0.0.1", port=0, tracing=Tracing(provider, CallSampler(0.0)))
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, channel
    finally:
        await running.stop(None)
        provider.shutdown()


@pytest.mark.asyncio
async def test_ok_a_call_not_sampled_has_no_span_and_a_sampled_parent_gets_one(
    sampled_server: tuple[RunningServer, grpc.aio.Channel], exporter: InMemorySpanExporter
) -> None:
    _, channel = sampled_server
    health = health_pb2_grpc.HealthStub(channel)
    for parent in (None, UNSAMPLED_PARENT, "00-not-a-traceparent-01"):
        metadata = () if parent is None else (("traceparent", parent),)
        assert (await health.Check(health_pb2.HealthCheckRequest(), metadata=metadata)).status == 1
    assert exporter.get_finished_spans() == ()
    await health.Check(health_pb2.HealthCheckRequest(), metadata=(("traceparent", SAMPLED_PARENT),))
    [span] = exporter.get_finished_spans()
    assert span.name == "/grpc.health.v1.Health/Check"
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == SAMPLED_PARENT.split("-")[1]  # the caller's trace, continued
    assert f"{span.parent.span_id:016x}" == SAMPLED_PARENT.split("-")[2]


@dataclass(frozen=True)
class _Details:
    """What gRPC hands an interceptor's filter of a call (grpc.HandlerCallDetails, a protocol at run time)."""

    invocation_metadata: tuple[tuple[str, str], ...]
    method: str = "/grpc.health.v1.Health/Check"


@pytest.mark.parametrize(
    ("sampler", "metadata", "traced"),
    [
        (CallSampler(0.0), (), False),
        (CallSampler(1.0), (), True),
        (CallSampler(0.0), (("traceparent", SAMPLED_PARENT),), True),
        (CallSampler(1.0), (("traceparent", UNSAMPLED_PARENT),), False),
        (CallSampler(1.0), (("traceparent", "garbage"),), True),
        (CallSampler(0.0), (("traceparent", "garbage"),), False),
        (CallSampler(0.0, parent_based=False), (("traceparent", SAMPLED_PARENT),), False),
        (CallSampler(1.0, parent_based=False), (("traceparent", UNSAMPLED_PARENT),), True),
    ],
    ids=[
        "ratio-0",
        "ratio-1",
        "sampled-parent",
        "unsampled-parent",
        "bad-parent-1",
        "bad-parent-0",
        "not-parent-based-0",
        "not-parent-based-1",
    ],
)
def test_call_sampler(sampler: CallSampler, metadata: tuple[tuple[str, str], ...], traced: bool) -> None:
    assert sampler(cast(grpc.HandlerCallDetails, _Details(metadata))) is traced


@pytest.mark.parametrize(("name", "parent_based"), [("parentbased_traceidratio", True), ("traceidratio", False)])
def test_ratio_samplers_decide_before_the_instrumentation(name: str, parent_based: bool) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    tracing = tracing_from_environment(environ)
    assert tracing is not None
    try:
        assert tracing.sampler == CallSampler(0.25, parent_based=parent_based)
        assert tracing.provider.sampler.get_description() == ParentBased(ALWAYS_ON).get_description()
    finally:
        tracing.provider.shutdown()


@pytest.mark.parametrize("argument", ["1.5", "-0.1", "often"])
def test_a_ratio_out_of_range_is_an_error(argument: str) -> None:
    environ = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": argument,
    }
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        tracing_from_environment(environ)


# -- configuration from the environment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": ""},
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"},
    ],
    ids=["unset", "none", "empty", "sdk-disabled"],
)
def test_off_by_default(environ: dict[str, str]) -> None:
    assert tracing_from_environment(environ) is None


def test_on_with_an_exporter_named_and_the_service_called_keyscope() -> None:
    tracing = tracing_from_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing is not None
    provider = tracing.provider
    try:
        assert provider.resource.attributes["service.name"] == "keyscope"
        assert tracing.sampler is None  # the SDK's own sampler (parentbased_always_on) decides
    finally:
        provider.shutdown()


def test_otlp_is_the_otlp_exporter_over_grpc() -> None:
    tracing = tracing_from_environment({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing is not None
    provider = tracing.provider
    try:
        [processor] = provider._active_span_processor._span_processors  # the SDK keeps no public list of them
        assert type(processor.span_exporter).__module__ == "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
    finally:
        provider.shutdown()


def test_otlp_over_http_is_not_installed() -> None:
    environ = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    with pytest.raises(TracingConfigError, match="no exporter 'otlp_proto_http'"):
        tracing_from_environment(environ)


def test_service_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK reads the resource variables from the process environment itself.
    monkeypatch.setenv("OTEL_SERVICE_NAME", "permissions-eu")
    tracing = tracing_from_environment({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "x"})
    assert tracing is not None
    provider = tracing.provider
    try:
        assert provider.resource.attributes["service.name"] == "permissions-eu"
    finally:
        provider.shutdown()


def test_unknown_exporter_is_an_error_naming_the_installed_ones() -> None:
    with pytest.raises(TracingConfigError, match="no exporter 'zipkinx'.*console"):
        tracing_from_environment({"OTEL_TRACES_EXPORTER": "zipkinx"})


def test_serve_exports_spans_to_the_console_exporter(tmp_path: Path) -> None:
    port = free_port()
    process = start_serve(tmp_path, tmp_path / "k.db", port, env=server_env(OTEL_TRACES_EXPORTER="console"))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(), metadata=(("x-request-id", "console-probe-1"),)
        )
    assert call.code() == grpc.StatusCode.OK
    code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    spans = [json.loads(text) for text in _json_objects(output)]
    probes = [s for s in spans if s.get("attributes", {}).get(REQUEST_ID_ATTRIBUTE) == "console-probe-1"]
    assert [s["name"] for s in probes] == ["/grpc.health.v1.Health/Check"]


def test_serve_refuses_an_unknown_exporter(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keyscope_server", "serve", "--db", str(tmp_path / "k.db"), "--port", "0"],
        env=server_env(OTEL_TRACES_EXPORTER="zipkinx"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no exporter 'zipkinx'" in result.stderr


def _json_objects(output: str) -> Iterator[str]:
    """The console exporter's spans: indented JSON objects, each from a line "{" to a line "}"."""
    lines: list[str] = []
    for line in output.splitlines():
        if line == "{":
            lines = [line]
        elif lines:
            lines.append(line)
            if line == "}":
                yield "\n".join(lines)
                lines = []
