"""Prometheus metrics: the gRPC server series as go-grpc-prometheus names them, and Keyscope's own.

One `Metrics` per server, on a registry of its own (tests run many servers in one process). The call hook
(`Metrics.calls(method)`, one `CallMetrics` per method, made when the method is first wrapped) holds the
label children of that method, so a call costs a few increments and no `.labels()` lookup. VerifyKey
outcomes and write batches are counted as they happen; what the store layer counts in plain numbers (the
verification cache), the revision and store health are copied into instruments by `follow(store)`, every
`refresh_seconds`, because the store layer does not import prometheus_client.

Every instrument aggregates in prometheus-client's multiprocess mode (`serve --workers N`: each worker writes
its values to files in PROMETHEUS_MULTIPROC_DIR, and the supervisor serves them all from one port with
keyscope_server.metrics_endpoint's `serve_multiprocess`): counters and histograms sum over workers, gauges say how
(`multiprocess_mode`). A custom collector would not be aggregated there, which is why store numbers are copied
into instruments.

No label holds anything a caller sent but the method it called: values come from fixed sets (status codes,
outcome codes, failure reasons, cache entry kinds) or from the methods the server registered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from keyscope.v1 import keys_pb2
from keyscope_server.errors import AUTHENTICATION_FAILURES, Unauthenticated
from keyscope_server.store import Store
from keyscope_server.store.verify_cache import CacheStats
from keyscope_server.verification import OUTCOMES

__all__ = ["CallMetrics", "Metrics"]

log = logging.getLogger("keyscope")

# Seconds. go-grpc-prometheus's default buckets start at 5 ms, above most of Keyscope's calls (a warm VerifyKey takes
# a few hundred microseconds), so these start lower.
HANDLING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)  # group_commit.MAX_BATCH is 128
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_GRPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")
_CACHE_KINDS = ("key", "root_key")


class CallMetrics:
    """The series of one method: `started()` when a call begins, `handled(code, seconds, outcome)` when it ends
    (`outcome`: VerifyKey's answer code, as request_context.verify_outcome_var holds it), and `failed(error)` with the
    error it ends with, if any (authentication failures are counted by reason)."""

    def __init__(self, metrics: Metrics, method: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self._labels = (service, name, "unary")  # the interceptor wraps unary methods only
        self._handled_family = metrics.handled
        self._handled: dict[grpc.StatusCode, Counter] = {}
        self._handling = metrics.handling.labels(*self._labels)
        self._auth_failures = metrics.auth_failures_by_reason
        self._outcomes = metrics.outcomes
        self.started: Callable[[], None] = metrics.started.labels(*self._labels).inc

    def handled(self, code: grpc.StatusCode, seconds: float, outcome: str | None = None) -> None:
        counter = self._handled.get(code)
        if counter is None:  # once per code this method answers
            counter = self._handled[code] = self._handled_family.labels(*self._labels, code.name)
        counter.inc()
        self._handling.observe(seconds)
        if outcome is not None:
            self._outcomes[outcome].inc()

    def failed(self, error: Exception) -> None:
        if isinstance(error, Unauthenticated):
            counter = self._auth_failures.get(error.reason)
            if counter is not None:
                counter.inc()


class Metrics:
    """Every series of one server, on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.started = Counter("grpc_server_started", "RPCs started on the server.", _GRPC_LABELS, registry=r)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            (*_GRPC_LABELS, "grpc_code"),
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Seconds the server took to handle an RPC, to its answer.",
            _GRPC_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=r,
        )
        outcomes = Counter("keyscope_verify_key_outcomes", "VerifyKey answers by their code.", ("code",), registry=r)
        self.outcomes = {  # by name: VALID, NOT_FOUND...
            name: outcomes.labels(name)
            for code, name in OUTCOMES.items()
            if code != keys_pb2.VerifyKeyResponse.CODE_UNSPECIFIED
        }
        auth_failures = Counter(
            "keyscope_authentication_failures",
            "Calls refused UNAUTHENTICATED, by the way their root key failed.",
            ("reason",),
            registry=r,
        )
        self.auth_failures_by_reason = {reason: auth_failures.labels(reason) for reason in AUTHENTICATION_FAILURES}

        cache_hits = Counter(
            "keyscope_verify_cache_hits", "Verification-cache lookups that found the entry.", ("kind",), registry=r
        )
        cache_misses = Counter(
            "keyscope_verify_cache_misses",
            "Verification-cache lookups that had to read the store.",
            ("kind",),
            registry=r,
        )
        cache_evictions = Counter(
            "keyscope_verify_cache_evictions",
            "Verification-cache entries dropped to stay within --cache-entries and --cache-mib.",
            ("kind",),
            registry=r,
        )
        # Gauges of every worker add up; the revision is the highest any worker has seen; the store is up only if
        # every worker finds it so.
        cache_entries = Gauge(
            "keyscope_verify_cache_entries",
            "Entries in the verification cache.",
            ("kind",),
            multiprocess_mode="livesum",
            registry=r,
        )
        self._cache_bytes = Gauge(
            "keyscope_verify_cache_bytes",
            "Estimated size of the verification cache's entries.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self._revision = Gauge(
            "keyscope_store_revision", "The store's current revision.", multiprocess_mode="livemax", registry=r
        )
        self._store_up = Gauge(
            "keyscope_store_up",
            "1 while the store takes writes (health SERVING), 0 while a probe finds a fault.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self._store_up.set(1)
        self._batch_size = Histogram(
            "keyscope_write_batch_size",
            "Writes committed together in one transaction (group commit).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self._commit_seconds = Histogram(
            "keyscope_write_batch_commit_seconds",
            "Seconds a batch of writes took to run and commit.",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        # The cache's counters, by kind, as (instrument child, the CacheStats field it follows).
        self._cache_counters = [
            (family.labels(kind), f"{'root' if kind == 'root_key' else 'key'}_{what}")
            for family, what in ((cache_hits, "hits"), (cache_misses, "misses"), (cache_evictions, "evictions"))
            for kind in _CACHE_KINDS
        ]
        self._cache_entries = [(cache_entries.labels("key"), "keys"), (cache_entries.labels("root_key"), "root_keys")]
        self._copied = CacheStats()  # what has been copied into the counters so far
        self._calls: dict[str, CallMetrics] = {}

    def calls(self, method: str) -> CallMetrics:
        """The series of `method` (its full name, "/keyscope.v1.KeyService/VerifyKey")."""
        found = self._calls.get(method)
        if found is None:
            found = self._calls[method] = CallMetrics(self, method)
        return found

    def batch_committed(self, size: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._commit_seconds.observe(seconds)

    def store_serving(self, serving: bool) -> None:
        self._store_up.set(1 if serving else 0)

    def copy_store_numbers(self, stats: CacheStats, revision: int | None) -> None:
        """Bring the instruments up to what the store counted (counters grow by what is new since the last copy)."""
        for counter, field in self._cache_counters:
            new = getattr(stats, field) - getattr(self._copied, field)
            if new > 0:
                counter.inc(new)
        self._copied = stats
        for gauge, field in self._cache_entries:
            gauge.set(getattr(stats, field))
        self._cache_bytes.set(stats.bytes)
        if revision is not None:
            self._revision.set(revision)

    async def refresh(self, store: Store) -> None:
        try:
            revision: int | None = await store.revision()
        except Exception:  # noqa: BLE001 - a store that cannot be read now shows in health; the rest goes on
            revision = None
        self.copy_store_numbers(store.cache_stats(), revision)

    async def follow(self, store: Store, interval: float) -> None:
        """Copy the store's numbers into the instruments every `interval` seconds, until cancelled."""
        while True:
            await self.refresh(store)
            await asyncio.sleep(interval)
