"""Prometheus metrics (`--metrics-port`): a real server scraped over HTTP after real calls, and `--workers 2` seen
whole from one scrape."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import grpc
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from keyscope.v1 import apis_pb2, keys_pb2, keys_pb2_grpc
from keyscope_server.factory import MetricsConfig, RunningServer, ServerConfig, start_server
from keyscope_server.store import Store, open_store
from tests.client import Caller
from tests.conftest import NewDatabase, UnusableCaller
from tests.polling import until
from tests.processes import children_of, create_root_key, free_port, start_serve, stop
from tests.scrape import Samples, scrape

API_SERVICE = "keyscope.v1.ApiService"
KEY_SERVICE = "keyscope.v1.KeyService"
# The store's numbers reach the instruments this often here (1 s by default), so that polling ends soon.
REFRESH_SECONDS = 0.02


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, metrics=MetricsConfig(port=0, refresh_seconds=REFRESH_SECONDS))


async def scraped(server: RunningServer) -> Samples:
    assert server.metrics_port is not None
    return await asyncio.to_thread(scrape, server.metrics_port)


def call_labels(service: str, method: str) -> dict[str, str]:
    return {"grpc_service": service, "grpc_method": method, "grpc_type": "unary"}


@pytest.mark.asyncio
async def test_ok_counts_each_call_by_method_and_code(server: RunningServer, admin: Caller) -> None:
    api = await admin.make_api()
    await admin.get_api(api.id)
    await admin.get_api(api.id)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await admin.apis.GetApi(apis_pb2.GetApiRequest(api_id="not an id"), metadata=admin.md)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    samples = await scraped(server)
    create, get = call_labels(API_SERVICE, "CreateApi"), call_labels(API_SERVICE, "GetApi")
    assert samples.get("grpc_server_started_total", **create) == 1
    assert samples.get("grpc_server_handled_total", **create, grpc_code="OK") == 1
    assert samples.get("grpc_server_started_total", **get) == 3
    assert samples.get("grpc_server_handled_total", **get, grpc_code="OK") == 2
    assert samples.get("grpc_server_handled_total", **get, grpc_code="INVALID_ARGUMENT") == 1
    assert samples.get("grpc_server_handled_total", **get, grpc_code="NOT_FOUND") is None  # never answered
    assert samples.get("grpc_server_handling_seconds_count", **get) == 3
    assert samples.get("grpc_server_handling_seconds_bucket", **get, le="+Inf") == 3
    # Every method's series exist from the start (its handler is wrapped as it registers), at 0 until it is called.
    assert samples.get("grpc_server_started_total", **call_labels(KEY_SERVICE, "VerifyKey")) == 0
    assert samples.get("grpc_server_handling_seconds_count", **call_labels(KEY_SERVICE, "VerifyKey")) == 0


@pytest.mark.asyncio
async def test_ok_verify_key_outcomes_and_cache(server: RunningServer, store: Store, admin: Caller) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    _, secret = await admin.make_key(api.id, ["documents.read"])
    unknown = "ks_" + "0" * 40
    assert (await admin.verify(secret, "documents.read")).valid  # the key is read from the store, and kept
    assert (await admin.verify(secret)).valid  # from the cache
    assert (
        await admin.verify(secret, "documents.write")
    ).code == keys_pb2.VerifyKeyResponse.CODE_INSUFFICIENT_PERMISSIONS
    assert (await admin.verify(unknown)).code == keys_pb2.VerifyKeyResponse.CODE_NOT_FOUND  # unknown: never kept

    samples = await scraped(server)
    outcomes = {
        code: samples.get("keyscope_verify_key_outcomes_total", code=code)
        for code in ("VALID", "NOT_FOUND", "DISABLED", "EXPIRED", "INSUFFICIENT_PERMISSIONS")
    }
    assert outcomes == {"VALID": 2, "NOT_FOUND": 1, "DISABLED": 0, "EXPIRED": 0, "INSUFFICIENT_PERMISSIONS": 1}
    verify = call_labels(KEY_SERVICE, "VerifyKey")
    assert samples.get("grpc_server_handled_total", **verify, grpc_code="OK") == 4

    # The cache's numbers are copied into the instruments every REFRESH_SECONDS: the first scrape that has them.
    expected = {"hits": 2.0, "misses": 2.0, "evictions": 0.0}

    async def cache_counts() -> dict[str, float | None]:
        samples = await scraped(server)
        return {what: samples.get(f"keyscope_verify_cache_{what}_total", kind="key") for what in expected}

    seen: dict[str, float | None] = {}

    async def counted() -> bool:
        seen.update(await cache_counts())
        return seen == expected

    await until(counted, lambda: f"key cache counts {seen}, not {expected}")
    assert store.cache_stats().key_hits == 2  # the store's own count, which the instruments follow
    samples = await scraped(server)
    assert samples.get("keyscope_verify_cache_entries", kind="key") == 1
    assert samples.get("keyscope_verify_cache_misses_total", kind="root_key") == 1  # the admin's key, once
    assert secret not in samples.text and admin.root_key not in samples.text


@pytest.mark.asyncio
async def test_ok_authentication_failures_by_reason(
    server: RunningServer, admin: Caller, unusable_caller: UnusableCaller
) -> None:
    request = apis_pb2.ListApisRequest()
    metadata = {
        "missing": (),
        "malformed": (("authorization", "Basic dXNlcjpwYXNz"),),
        "unknown": (("authorization", "Bearer ksroot_doesnotexist"),),
        "disabled": (await unusable_caller("disabled")).md,
        "expired": (await unusable_caller("expired")).md,
    }
    for reason, md in metadata.items():
        for _ in range(2 if reason == "unknown" else 1):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.apis.ListApis(request, metadata=md)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, reason
    with pytest.raises(grpc.aio.AioRpcError) as denied:  # authorization, not authentication: not counted there
        await admin.apis.GetApi(apis_pb2.GetApiRequest(api_id="api_doesnotexist"), metadata=admin.md)
    assert denied.value.code() == grpc.StatusCode.NOT_FOUND

    samples = await scraped(server)
    failures = {r: samples.get("keyscope_authentication_failures_total", reason=r) for r in metadata}
    assert failures == {"missing": 1, "malformed": 1, "unknown": 2, "disabled": 1, "expired": 1}
    listed = call_labels(API_SERVICE, "ListApis")
    assert samples.get("grpc_server_handled_total", **listed, grpc_code="UNAUTHENTICATED") == 6


@pytest.mark.asyncio
async def test_ok_revision_store_health_and_write_batches(server: RunningServer, store: Store, admin: Caller) -> None:
    # Writes since the server started: the admin's root key (a store call), an API, a key, its permissions.
    api = await admin.make_api(["documents.read"])
    key, _ = await admin.make_key(api.id)
    await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["documents.read"]), metadata=admin.md
    )
    revision = await store.revision()

    seen: list[float | None] = []

    async def revision_shown() -> bool:
        seen[:] = [(await scraped(server)).get("keyscope_store_revision")]
        return seen == [revision]

    await until(revision_shown, lambda: f"revision {seen}, the store's is {revision}")
    samples = await scraped(server)
    assert samples.get("keyscope_store_up") == 1
    # One write at a time, so one batch each.
    assert samples.get("keyscope_write_batch_size_sum") == 4
    assert samples.get("keyscope_write_batch_size_count") == 4
    assert samples.get("keyscope_write_batch_size_bucket", le="1.0") == 4
    assert samples.get("keyscope_write_batch_commit_seconds_count") == 4


@pytest.mark.asyncio
async def test_ok_each_server_counts_only_its_own_calls(server: RunningServer, store: Store, admin: Caller) -> None:
    other = await start_server(store, ServerConfig(host="127.0.0.1", port=0, metrics=MetricsConfig(port=0)))
    try:
        await admin.make_api()
        ours, theirs = await scraped(server), await scraped(other)
    finally:
        await other.stop(None)
    create = call_labels(API_SERVICE, "CreateApi")
    assert ours.get("grpc_server_started_total", **create) == 1
    assert theirs.get("grpc_server_started_total", **create) == 0
    assert theirs.get("keyscope_verify_key_outcomes_total", code="VALID") == 0


@pytest.mark.asyncio
async def test_ok_metrics_are_off_by_default(store: Store) -> None:
    running = await start_server(store, ServerConfig(host="127.0.0.1", port=0))
    try:
        assert (running.metrics, running.metrics_port, running.metrics_follow) == (None, None, None)
    finally:
        await running.stop(None)


async def _revision(db: str) -> int:
    store = await open_store(db)
    try:
        return await store.revision()
    finally:
        await store.close()


def test_ok_one_scrape_sums_every_worker(tmp_path: Path, new_database: NewDatabase) -> None:
    db, port, metrics_port = new_database("keyscope"), free_port(), free_port()
    secret = create_root_key(tmp_path, db, "api.*.verify_key")
    md = (("authorization", f"Bearer {secret}"),)
    log = tmp_path / "serve.log"
    calls = 40
    supervisor = start_serve(tmp_path, db, port, "--workers", "2", "--metrics-port", str(metrics_port), log=log)
    try:
        workers = children_of(supervisor.pid)
        match = re.search(
            r"metrics of every worker on http://127\.0\.0\.1:(\d+)/metrics \(from (\S+)\)", log.read_text()
        )
        assert match is not None, log.read_text()
        assert int(match[1]) == metrics_port
        directory = Path(match[2])
        # Each new channel is a new connection, which the kernel gives to one worker or the other.
        for _ in range(calls):
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                answer = keys_pb2_grpc.KeyServiceStub(ch).VerifyKey(
                    keys_pb2.VerifyKeyRequest(key="ks_" + "0" * 40), metadata=md, timeout=10
                )
                assert answer.code == keys_pb2.VerifyKeyResponse.CODE_NOT_FOUND

        samples = scrape(metrics_port)
        verify = call_labels(KEY_SERVICE, "VerifyKey")
        assert samples.get("grpc_server_started_total", **verify) == calls
        assert samples.get("grpc_server_handled_total", **verify, grpc_code="OK") == calls
        assert samples.get("grpc_server_handling_seconds_count", **verify) == calls
        assert samples.get("keyscope_verify_key_outcomes_total", code="NOT_FOUND") == calls
        # start_serve's own health check, before it returned
        health = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_type": "unary"}
        assert samples.get("grpc_server_handled_total", **health, grpc_code="OK") == 1

        # Each worker's own count, from its own file: both served, and the scrape is their sum.
        per_worker = {}
        for pid in workers:
            [family] = [m for m in MultiProcessCollector.merge([str(directory / f"counter_{pid}.db")])
                        if m.name == "grpc_server_handled"]  # fmt: skip
            per_worker[pid] = sum(s.value for s in family.samples if s.labels.get("grpc_method") == "VerifyKey")
        assert all(count > 0 for count in per_worker.values()), per_worker
        assert sum(per_worker.values()) == calls

        # Each worker has a cache of its own: the root key missed once in each, then hit. Copied every second.
        revision = asyncio.run(_revision(db))
        wanted = {"root misses": 2.0, "root hits": calls - 2.0, "key misses": float(calls), "revision": revision}
        seen: dict[str, float | None] = {}

        def counted() -> bool:
            samples = scrape(metrics_port)
            seen["root misses"] = samples.get("keyscope_verify_cache_misses_total", kind="root_key")
            seen["root hits"] = samples.get("keyscope_verify_cache_hits_total", kind="root_key")
            seen["key misses"] = samples.get("keyscope_verify_cache_misses_total", kind="key")
            seen["revision"] = samples.get("keyscope_store_revision")
            return seen == wanted

        asyncio.run(until(counted, lambda: f"{seen}, not {wanted}"))
        assert scrape(metrics_port).get("keyscope_store_up") == 1
    finally:
        code, _ = stop(supervisor, signal.SIGTERM)
    output = log.read_text()
    assert code == 0, output
    assert "workers stopped with codes [0, 0]" in output
    assert output.count("metrics on http") == 0  # the workers recorded; only the supervisor served
    assert not directory.exists()  # removed with the supervisor's endpoint
    assert secret not in output
