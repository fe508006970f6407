"""OpenTelemetry traces: a server span for every RPC, made by the OpenTelemetry gRPC instrumentation.

Off unless `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, which is OTLP over gRPC, the one installed;
`console`; or any other installed under the SDK's `opentelemetry_traces_exporter` entry points): the
OpenTelemetry default, otlp, would otherwise send spans to a collector nobody set up. Everything else is
the SDK's own reading of the standard variables: `OTEL_SERVICE_NAME` (default here: keyscope),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_BSP_*`, and `OTEL_SDK_DISABLED`.

The interceptor adds to each span the request id and the calling root key's id (never a secret): see
`annotate_span`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

__all__ = [
    "REQUEST_ID_ATTRIBUTE",
    "ROOT_KEY_ATTRIBUTE",
    "TracingConfigError",
    "annotate_span",
    "tracer_provider_from_environment",
]

REQUEST_ID_ATTRIBUTE = "keyscope.request_id"
ROOT_KEY_ATTRIBUTE = "keyscope.root_key_id"
EXPORTER_ENTRY_POINTS = "opentelemetry_traces_exporter"


class TracingConfigError(ValueError):
    """OTEL_TRACES_EXPORTER names an exporter that is not installed."""


def tracer_provider_from_environment(environ: Mapping[str, str]) -> TracerProvider | None:
    """The provider the standard variables describe, its exporters behind batch processors; None when tracing
    is off."""
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
    provider = TracerProvider(resource=resource)  # its sampler from OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def annotate_span(request_id: str, root_key_id: str | None) -> None:
    """Add the call's request id and caller to its server span, if it is being recorded."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        if root_key_id is not None:
            span.set_attribute(ROOT_KEY_ATTRIBUTE, root_key_id)
