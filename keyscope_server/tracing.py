"""OpenTelemetry traces: a server span for every RPC, made by the OpenTelemetry gRPC instrumentation.

Off unless `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, which is OTLP over gRPC, the one installed;
`console`; or any other installed under the SDK's `opentelemetry_traces_exporter` entry points): the
OpenTelemetry default, otlp, would otherwise send spans to a collector nobody set up. Everything else is
the SDK's own reading of the standard variables: `OTEL_SERVICE_NAME` (default here: keyscope),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_BSP_*`, and `OTEL_SDK_DISABLED`.

The interceptor adds to each span the request id and the calling root key's id (never a secret): see
`annotate_span`.

The instrumentation is a grpc.aio ServerInterceptor, and a server with any interceptor runs, for every call, a chain
of coroutines in Python to find the call's handler, where one without finds it in gRPC's own code: on a 2-core VM
about 18 µs of a Health check's 280, sampled or not. So it is not installed as one: `CallTracer` wraps each
method's handler as it is registered, and hands only the sampled calls to the instrumentation's `intercept_service`,
which makes their spans as it would as an interceptor.
"""

from __future__ import annotations

import inspect
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeAlias

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

__all__ = [
    "REQUEST_ID_ATTRIBUTE",
    "ROOT_KEY_ATTRIBUTE",
    "CallSampler",
    "CallTracer",
    "Tracing",
    "TracingConfigError",
    "annotate_span",
    "tracing_from_environment",
]

REQUEST_ID_ATTRIBUTE = "keyscope.request_id"
ROOT_KEY_ATTRIBUTE = "keyscope.root_key_id"
EXPORTER_ENTRY_POINTS = "opentelemetry_traces_exporter"


class TracingConfigError(ValueError):
    """OTEL_TRACES_EXPORTER names an exporter that is not installed, or OTEL_TRACES_SAMPLER_ARG is no ratio."""


@dataclass(frozen=True)
class CallSampler:
    """Which calls reach the instrumentation at all: the sampling of `parentbased_traceidratio` (or, with
    `parent_based` False, `traceidratio`), decided before it runs.

    The instrumentation is a grpc.aio interceptor that extracts the caller's context and starts a span for every
    call, recording or not; at a ratio of 0.01 that is 99 calls in 100 paying for a span nobody sees (about 45 µs
    of CPU a call on a 2-core VM). Given this as its filter, it traces only the calls sampled here: those whose
    `traceparent` says sampled, when the sampling follows the parent, and of the others a `ratio` share at
    random, as a trace-id ratio samples a new trace's random id. The provider then records every call it is
    given (`ParentBased(ALWAYS_ON)`), so that no call is sampled twice.
    """

    ratio: float
    parent_based: bool = True

    def __call__(self, details: grpc.HandlerCallDetails) -> bool:
        if self.parent_based:
            for key, value in details.invocation_metadata or ():
                if key == "traceparent":
                    flags = _TRACEPARENT.fullmatch(value) if isinstance(value, str) else None
                    if flags is not None:
                        return int(flags.group(1), 16) & 1 == 1
                    break  # malformed: a new trace, as the propagator would start
        return random.random() < self.ratio


@dataclass(frozen=True)
class Tracing:
    """The tracer provider the standard variables describe, and the calls it sees (None: every call)."""

    provider: TracerProvider
    sampler: CallSampler | None = None


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# A handler's behaviour is one of these, and the function that makes a handler of it.
_KINDS: dict[str, Callable[..., Handler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _with_behaviour(handler: Handler, kind: str, behaviour: Callable[..., Any]) -> Handler:
    return _KINDS[kind](
        behaviour, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class _CallDetails(grpc.HandlerCallDetails):
    """What the sampler and the instrumentation are given of a call, as an interceptor is given it."""

    __slots__ = ("method", "invocation_metadata")

    def __init__(self, method: str, invocation_metadata: Any) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata


class CallTracer:
    """Wraps a method's handler (`wrap`) so that the calls `tracing.sampler` picks (all, without one) run in a server
    span of the OpenTelemetry gRPC instrumentation, and the others run as if it were not there."""

    def __init__(self, tracing: Tracing) -> None:
        self._instrumentation = aio_server_interceptor(tracer_provider=tracing.provider)  # type: ignore[no-untyped-call]
        self._sampler = tracing.sampler

    def wrap(self, method: str, handler: Handler) -> Handler:
        kind = next(kind for kind in _KINDS if getattr(handler, kind) is not None)
        inner: Callable[..., Any] = getattr(handler, kind)
        generator = inspect.isasyncgenfunction(inner)
        if not generator and kind.endswith("_stream"):  # writes its answers with context.write, as Health/Watch does
            # The instrumentation iterates a streaming behaviour; this one yields nothing and writes as it did.
            async def iterable(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await inner(request, context)
                return
                yield

            handler = _with_behaviour(handler, kind, iterable)
        sampler = self._sampler
        instrumentation = self._instrumentation

        async def continuation(_: grpc.HandlerCallDetails) -> Handler:
            return handler

        def sampled(context: grpc.aio.ServicerContext[Any, Any]) -> _CallDetails | None:
            details = _CallDetails(method, context.invocation_metadata())
            return details if sampler is None or sampler(details) else None

        async def in_span(details: _CallDetails) -> Callable[..., Any]:
            """The call's behaviour, in a span of its own."""
            traced: Callable[..., Any] = getattr(await instrumentation.intercept_service(continuation, details), kind)
            return traced

        behaviour: Callable[..., Any]
        if generator:

            async def streamed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                details = sampled(context)
                responses = inner if details is None else await in_span(details)
                async for response in responses(request, context):
                    yield response

            behaviour = streamed
        elif kind.endswith("_stream"):

            async def written(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                details = sampled(context)
                if details is None:
                    await inner(request, context)
                    return
                async for _ in (await in_span(details))(request, context):
                    pass

            behaviour = written
        else:

            async def answered(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                details = sampled(context)
                if details is None:
                    return await inner(request, context)
                return await (await in_span(details))(request, context)

            behaviour = answered
        return _with_behaviour(handler, kind, behaviour)


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-([0-9a-f]{2})")
_RATIO_SAMPLERS = {"parentbased_traceidratio": True, "traceidratio": False}


def tracing_from_environment(environ: Mapping[str, str]) -> Tracing | None:
    """What the standard variables describe: the provider, its exporters behind batch processors, and for the
    trace-id ratio samplers the CallSampler in their place; None when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if not names or names == ["none"]:
        return None
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":  # as the SDK reads it: the OTLP exporter of OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            name = "otlp_proto_http" if protocol == "http/protobuf" else "otlp_proto_grpc"
        found = entry_points(group=EXPORTER_ENTRY_POINTS, name=name)
        if not found:
            installed = sorted(point.name for point in entry_points(group=EXPORTER_ENTRY_POINTS))
            raise TracingConfigError(f"OTEL_TRACES_EXPORTER: no exporter {name!r} (installed: {', '.join(installed)})")
        exporters.append(next(iter(found)).load()())
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "keyscope"}))
    sampler_name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    call_sampler = None
    if sampler_name in _RATIO_SAMPLERS:
        try:
            ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError:
            raise TracingConfigError("OTEL_TRACES_SAMPLER_ARG: not a number from 0 to 1") from None
        if not 0.0 <= ratio <= 1.0:
            raise TracingConfigError("OTEL_TRACES_SAMPLER_ARG: not a number from 0 to 1")
        call_sampler = CallSampler(ratio, parent_based=_RATIO_SAMPLERS[sampler_name])
        provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    else:
        provider = TracerProvider(resource=resource)  # its sampler from OTEL_TRACES_SAMPLER, as the SDK reads it
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, call_sampler)


def annotate_span(request_id: str, root_key_id: str | None) -> None:
    """Add the call's request id and caller to its server span, if it is being recorded."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        if root_key_id is not None:
            span.set_attribute(ROOT_KEY_ATTRIBUTE, root_key_id)
