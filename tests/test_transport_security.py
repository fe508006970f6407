"""Transport security: TLS and mutual TLS (the factory and `serve`), the warning about plaintext off loopback,
and the message size limit. Certificates are made per test session by tests/certs.py."""

from __future__ import annotations

import functools
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyscope.v1 import apis_pb2, apis_pb2_grpc, keys_pb2, permissions_pb2
from keyscope_server.addresses import is_loopback
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.factory import RunningServer, ServerConfig, TlsConfig, start_server
from keyscope_server.store import Store
from tests.certs import Certificates, Identity, make_certificates
from tests.client import Caller
from tests.polling import until
from tests.processes import create_root_key, free_port, server_env, start_serve, stop
from tests.rpc_errors import error_info, rejected, request_id

Serving = health_pb2.HealthCheckResponse
LIMIT = 1024  # max_message_bytes of the server in the message size tests


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def client_credentials(certs: Certificates, identity: Identity | None = None) -> grpc.ChannelCredentials:
    """Trusts the test CA; presents `identity` as the client certificate, if any."""
    return grpc.ssl_channel_credentials(
        root_certificates=certs.ca_pem,
        private_key=identity.key_pem if identity else None,
        certificate_chain=identity.cert_pem if identity else None,
    )


async def serve_tls(store: Store, certs: Certificates, *, mutual: bool) -> RunningServer:
    tls = TlsConfig(certs.server.cert_pem, certs.server.key_pem, certs.ca_pem if mutual else None)
    return await start_server(store, ServerConfig(host="127.0.0.1", port=0, tls=tls))


@pytest_asyncio.fixture
async def tls_server(store: Store, certs: Certificates) -> AsyncIterator[RunningServer]:
    running = await serve_tls(store, certs, mutual=False)
    yield running
    await running.stop(None)


@pytest_asyncio.fixture
async def mtls_server(store: Store, certs: Certificates) -> AsyncIterator[RunningServer]:
    running = await serve_tls(store, certs, mutual=True)
    yield running
    await running.stop(None)


@pytest_asyncio.fixture
async def root_key(store: Store) -> tuple[str, str]:
    """A root key holding every permission: its secret and id."""
    secret = new_secret(ROOT_KEY_PREFIX)
    record = await store.create_root_key("transport test", hash_secret(secret), EXAMPLE_ROOT_KEY)
    return secret, record.id


def secure_channel(port: int, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
    # The server's certificate names IP 127.0.0.1 (and localhost), so the address itself is checked.
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


# -- TLS through the factory ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ok_tls_create_api_with_root_key(
    tls_server: RunningServer, certs: Certificates, root_key: tuple[str, str]
) -> None:
    async with secure_channel(tls_server.port, client_credentials(certs)) as channel:
        caller = Caller(channel, *root_key)
        api = await caller.make_api(["documents.read"], name="over tls")
        assert api.id.startswith("api_")
        assert await caller.get_api(api.id) == api


@pytest.mark.asyncio
async def test_ok_tls_health_check_without_credentials(tls_server: RunningServer, certs: Certificates) -> None:
    async with secure_channel(tls_server.port, client_credentials(certs)) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert answer.status == Serving.SERVING


@pytest.mark.asyncio
async def test_unavailable_plaintext_client_to_tls_server(
    tls_server: RunningServer, root_key: tuple[str, str], store: Store
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_server.port}") as channel:
        caller = Caller(channel, *root_key)
        await rejected(
            store,
            lambda: caller.apis.CreateApi(apis_pb2.CreateApiRequest(name="in clear"), metadata=caller.md),
            grpc.StatusCode.UNAVAILABLE,
        )


@pytest.mark.asyncio
async def test_unavailable_client_that_does_not_trust_the_server_certificate(
    tls_server: RunningServer, certs: Certificates, root_key: tuple[str, str], store: Store
) -> None:
    # The root key is not sent to a server that cannot prove who it is.
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.other_ca.read_bytes())
    async with secure_channel(tls_server.port, credentials) as channel:
        caller = Caller(channel, *root_key)
        await rejected(
            store,
            lambda: caller.apis.CreateApi(apis_pb2.CreateApiRequest(name="impostor"), metadata=caller.md),
            grpc.StatusCode.UNAVAILABLE,
        )


# -- mutual TLS through the factory ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_ok_mtls_client_certificate_from_the_ca(
    mtls_server: RunningServer, certs: Certificates, root_key: tuple[str, str]
) -> None:
    async with secure_channel(mtls_server.port, client_credentials(certs, certs.client)) as channel:
        caller = Caller(channel, *root_key)
        api = await caller.make_api(name="over mutual tls")
        assert await caller.get_api(api.id) == api
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert answer.status == Serving.SERVING


@pytest.mark.asyncio
@pytest.mark.parametrize("client", [None, "stranger"], ids=["no client certificate", "certificate of another CA"])
async def test_unavailable_mtls_client_without_a_certificate_from_the_ca(
    mtls_server: RunningServer, certs: Certificates, root_key: tuple[str, str], store: Store, client: str | None
) -> None:
    identity = certs.stranger if client else None
    async with secure_channel(mtls_server.port, client_credentials(certs, identity)) as channel:
        caller = Caller(channel, *root_key)
        # A valid root key does not stand in for the client certificate.
        await rejected(
            store,
            lambda: caller.apis.CreateApi(apis_pb2.CreateApiRequest(name="refused"), metadata=caller.md),
            grpc.StatusCode.UNAVAILABLE,
        )
        # Nor is health open without one: probes of a mutual-TLS server need a client certificate too.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


# -- message size -----------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def limited(store: Store, root_key: tuple[str, str]) -> AsyncIterator[Caller]:
    """A caller with every permission, on a server that takes and sends messages of at most LIMIT bytes."""
    running = await start_server(store, ServerConfig(host="127.0.0.1", port=0, max_message_bytes=LIMIT))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Caller(channel, *root_key)
    finally:
        await running.stop(None)


def create_api_request(scopes: int) -> apis_pb2.CreateApiRequest:
    """A valid request: `scopes` scopes of about 120 bytes each."""
    return apis_pb2.CreateApiRequest(
        name="large",
        scopes=[permissions_pb2.Scope(value=f"documents.{i}", description="d" * 100) for i in range(scopes)],
    )


def verify_request(size: int) -> keys_pb2.VerifyKeyRequest:
    """A VerifyKey request of exactly `size` bytes (between 700 and 1100), for a key that does not exist."""
    query = " OR ".join(["documents.read"] * 30)
    request = keys_pb2.VerifyKeyRequest(permissions=query)
    request.key = "ks_" + "k" * (size - request.ByteSize() - 3 - 3)  # 3: the field's tag and 2-byte length
    assert request.ByteSize() == size
    return request


@pytest.mark.asyncio
async def test_resource_exhausted_request_above_max_message_bytes(
    limited: Caller, root_key: tuple[str, str], store: Store, server: RunningServer
) -> None:
    request = create_api_request(scopes=10)
    assert request.ByteSize() > LIMIT
    error = await rejected(
        store, lambda: limited.apis.CreateApi(request, metadata=limited.md), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert str(LIMIT) in (error.details() or "")
    # The same request is valid: only its size was refused (here by a server with the default limit).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        created = await apis_pb2_grpc.ApiServiceStub(channel).CreateApi(request, metadata=limited.md)
    assert len(created.api.scopes) == 10


@pytest.mark.asyncio
async def test_resource_exhausted_request_above_the_limit_has_the_request_id_and_a_log_line(
    limited: Caller, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyscope.rpc")
    request = verify_request(LIMIT + 1)
    send = functools.partial(limited.keys.VerifyKey, request, metadata=(*limited.md, ("x-request-id", "big-1")))
    error = await rejected(store, send, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert request_id(error) == "big-1"
    info = error_info(error)
    assert (info.reason, dict(info.metadata)) == ("MESSAGE_TOO_LARGE", {"limit_bytes": str(LIMIT)})
    assert f"{LIMIT + 1} bytes" in (error.details() or "")

    def logged() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.name == "keyscope.rpc"]
        return [line for line in lines if "RESOURCE_EXHAUSTED" in line]

    await until(lambda: len(logged()) == 1, lambda: f"access-log lines: {logged()}")
    assert logged()[0].startswith("/keyscope.v1.KeyService/VerifyKey RESOURCE_EXHAUSTED")


@pytest.mark.asyncio
async def test_unauthenticated_before_the_size_is_judged(limited: Caller, store: Store) -> None:
    stranger = Caller(limited.channel, "ksroot_notarealkey0000000000000000", "-")
    await rejected(
        store,
        lambda: stranger.keys.VerifyKey(verify_request(LIMIT + 1), metadata=stranger.md),
        grpc.StatusCode.UNAUTHENTICATED,
    )


@pytest.mark.asyncio
async def test_resource_exhausted_past_twice_the_limit_from_grpcs_core(limited: Caller, store: Store) -> None:
    # Past twice the limit, gRPC's core refuses the request before any of Keyscope's code runs: no details.
    request = create_api_request(scopes=20)
    assert request.ByteSize() > 2 * LIMIT
    error = await rejected(
        store, lambda: limited.apis.CreateApi(request, metadata=limited.md), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert "grpc-status-details-bin" not in dict(error.trailing_metadata() or ())


@pytest.mark.asyncio
async def test_ok_request_of_exactly_max_message_bytes(limited: Caller, store: Store) -> None:
    answer = await limited.keys.VerifyKey(verify_request(LIMIT), metadata=limited.md)
    assert answer.code == keys_pb2.VerifyKeyResponse.Code.CODE_NOT_FOUND
    await rejected(
        store,
        lambda: limited.keys.VerifyKey(verify_request(LIMIT + 1), metadata=limited.md),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )


@pytest.mark.asyncio
async def test_resource_exhausted_response_above_max_message_bytes(limited: Caller, server: RunningServer) -> None:
    # Created through a server with the default limit; read back through the limited one.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        created = await apis_pb2_grpc.ApiServiceStub(channel).CreateApi(create_api_request(10), metadata=limited.md)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await limited.get_api(created.api.id)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- loopback -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1"]
)
def test_ok_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "[::]",
        "",
        "10.0.0.5",
        "192.168.1.10",
        "128.0.0.1",
        "::2",
        "fe80::1",
        "::ffff:10.0.0.5",
        "localhost.example.com",
        "example.com",
        "keyscope",
    ],
)
def test_ok_hosts_that_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_ok_default_listen_address_is_loopback() -> None:
    assert ServerConfig().host == "127.0.0.1"
    assert is_loopback(ServerConfig().host)


# -- python -m keyscope_server serve ---------------------------------------------------------------------------


def log_lines(output: str, level: str) -> list[str]:
    return [line for line in output.splitlines() if f" {level} " in line]


def test_ok_serve_tls_flags_answer_over_tls_only(tmp_path: Path, certs: Certificates) -> None:
    db = tmp_path / "keyscope.db"
    secret = create_root_key(tmp_path, db, "api.*.create_api")
    port = free_port()
    flags = ("--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key))
    process = start_serve(tmp_path, db, port, *flags, credentials=client_credentials(certs))
    try:
        with grpc.secure_channel(f"127.0.0.1:{port}", client_credentials(certs)) as channel:
            created = apis_pb2_grpc.ApiServiceStub(channel).CreateApi(
                apis_pb2.CreateApiRequest(name="over tls"),
                metadata=(("authorization", f"Bearer {secret}"),),
                timeout=10,
            )
            assert created.api.id.startswith("api_")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as e:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    finally:
        code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    # No --host: the default is loopback, so there is nothing to warn about either.
    assert f"keyscope serving on 127.0.0.1:{port} (TLS)" in output
    assert log_lines(output, "WARNING") == []
    assert secret not in output


def test_ok_serve_mutual_tls_from_environment(tmp_path: Path, certs: Certificates) -> None:
    db = tmp_path / "keyscope.db"
    port = free_port()
    env = server_env(
        KEYSCOPE_TLS_CERT=str(certs.server.cert),
        KEYSCOPE_TLS_KEY=str(certs.server.key),
        KEYSCOPE_TLS_CLIENT_CA=str(certs.ca),
    )
    process = start_serve(tmp_path, db, port, credentials=client_credentials(certs, certs.client), env=env)
    try:
        with grpc.secure_channel(f"127.0.0.1:{port}", client_credentials(certs)) as channel:
            with pytest.raises(grpc.RpcError) as e:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    finally:
        code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert f"keyscope serving on 127.0.0.1:{port} (mutual TLS)" in output


def test_ok_serve_on_every_interface_without_tls_warns(tmp_path: Path) -> None:
    port = free_port()
    process = start_serve(tmp_path, tmp_path / "keyscope.db", port, "--host", "0.0.0.0")
    code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    [warning] = log_lines(output, "WARNING")
    assert f"listening on 0.0.0.0:{port} without TLS" in warning
    assert "root keys" in warning and "clear text" in warning
    assert "--tls-cert and --tls-key" in warning


def test_ok_serve_on_every_interface_with_tls_does_not_warn(tmp_path: Path, certs: Certificates) -> None:
    port = free_port()
    flags = ("--host", "0.0.0.0", "--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key))
    process = start_serve(tmp_path, tmp_path / "keyscope.db", port, *flags, credentials=client_credentials(certs))
    code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert f"keyscope serving on 0.0.0.0:{port} (TLS)" in output
    assert log_lines(output, "WARNING") == []


def encrypted_key(certs: Certificates) -> Path:
    key = serialization.load_pem_private_key(certs.server.key_pem, password=None)
    path = certs.ca.parent / "server-encrypted.key"
    encryption = serialization.BestAvailableEncryption(b"passphrase")
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return path


BAD_TLS_FLAGS: list = [
    pytest.param(
        lambda c: ["--tls-cert", c.server.cert], "--tls-cert and --tls-key go together", id="cert without key"
    ),
    pytest.param(lambda c: ["--tls-key", c.server.key], "--tls-cert and --tls-key go together", id="key without cert"),
    pytest.param(
        lambda c: ["--tls-client-ca", c.ca],
        "--tls-client-ca needs --tls-cert and --tls-key",
        id="client CA without cert and key",
    ),
    pytest.param(
        lambda c: ["--tls-cert", c.server.cert, "--tls-key", "missing.key"],
        "--tls-key: cannot read missing.key: No such file or directory",
        id="missing key file",
    ),
    pytest.param(
        lambda c: ["--tls-cert", c.server.cert, "--tls-key", c.client.key],
        "is not the private key of the certificate in --tls-cert",
        id="key of another certificate",
    ),
    pytest.param(
        lambda c: ["--tls-cert", c.server.key, "--tls-key", c.server.key],
        "must be a PEM certificate chain and its PEM private key",
        id="key as certificate",
    ),
    pytest.param(
        lambda c: ["--tls-cert", c.server.cert, "--tls-key", encrypted_key(c)],
        "is encrypted: gRPC needs the key unencrypted",
        id="encrypted key",
    ),
    pytest.param(
        lambda c: ["--tls-cert", c.server.cert, "--tls-key", c.server.key, "--tls-client-ca", c.server.key],
        "holds no PEM certificate",
        id="client CA not a certificate",
    ),
    pytest.param(
        lambda c: ["--workers", "2", "--port", "1", "--tls-key", c.server.key],
        "--tls-cert and --tls-key go together",
        id="workers, key without cert",
    ),
]


@pytest.mark.parametrize(("flags", "message"), BAD_TLS_FLAGS)
def test_invalid_argument_serve_bad_tls_flags(
    tmp_path: Path, certs: Certificates, flags: Callable[[Certificates], list], message: str
) -> None:
    db = tmp_path / "keyscope.db"
    command = [
        sys.executable,
        "-m",
        "keyscope_server",
        "serve",
        "--db",
        str(db),
        "--port",
        "0",
        *map(str, flags(certs)),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=server_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("usage: ")
    [error] = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert message in error
    assert result.stdout == ""
    assert not db.exists()  # refused before opening the database, let alone listening


def test_invalid_argument_serve_tls_client_ca_from_environment_alone(tmp_path: Path, certs: Certificates) -> None:
    db = tmp_path / "keyscope.db"
    result = subprocess.run(
        [sys.executable, "-m", "keyscope_server", "serve", "--db", str(db), "--port", "0"],
        cwd=tmp_path,
        env=server_env(KEYSCOPE_TLS_CLIENT_CA=str(certs.ca)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "error: --tls-client-ca needs --tls-cert and --tls-key" in result.stderr
    assert not db.exists()
