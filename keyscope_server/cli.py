"""`python -m keyscope_server` (or `keyscope-server`): serve, administer root keys, and copy a store to another
database. The only code that reads flags and environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path

from keyscope_server.errors import DomainError
from keyscope_server.logs import LOG_FORMATS, configure_logging
from keyscope_server.metrics_endpoint import serve_multiprocess
from keyscope_server.store import prepare_store
from keyscope_server.store.engines import PostgresSettings, engine_name
from keyscope_server.store.verify_cache import CacheLimits
from keyscope_server.workers import supervise

__all__ = ["main"]

log = logging.getLogger("keyscope")

TlsFiles = tuple[bytes, bytes, bytes | None]  # PEM: certificate chain, private key, client CA (mutual TLS)

# `serve --event-loop`: the first is the default. uvloop (libuv's loop, on which grpc.aio runs as on asyncio's, through
# its poller thread) serves Health/Check for about 20% less CPU a call; it is not built for Windows.
EVENT_LOOPS = ("uvloop", "asyncio") if find_spec("uvloop") is not None else ("asyncio",)

EXAMPLE_ROOT_KEY = (
    "api.*.create_api",
    "api.*.read_api",
    "api.*.update_api",
    "api.*.delete_api",
    "api.*.create_key",
    "api.*.read_key",
    "api.*.update_key",
    "api.*.delete_key",
    "api.*.verify_key",
    "rbac.*.create_permission",
    "rbac.*.create_role",
    "rbac.*.read_role",
    "rbac.*.update_role",
    "rbac.*.delete_role",
    "audit.*.read_events",
)


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    # Shared by every command, so that they can follow it: `python -m keyscope_server serve --db x.db`. `migrate`
    # takes two databases instead of --db, and the rest.
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--db",
        default=env.get("KEYSCOPE_DB", "keyscope.db"),
        help="the database: a SQLite file, created if missing, or a PostgreSQL URL, postgresql://user@host:port/"
        "dbname, whose password is best given by PGPASSWORD or a PGPASSFILE (env KEYSCOPE_DB; default %(default)s)",
    )
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument(
        "--db-pool-size",
        type=int,
        default=int(env.get("KEYSCOPE_DB_POOL_SIZE", "10")),
        help="PostgreSQL: pooled connections this process opens at most, besides one for the freshness check of"
        " VerifyKey (env KEYSCOPE_DB_POOL_SIZE; default %(default)s)",
    )
    settings.add_argument(
        "--db-timeout",
        type=float,
        default=float(env.get("KEYSCOPE_DB_TIMEOUT_SECONDS", "5")),
        help="PostgreSQL: seconds a connection attempt or a statement may take before the call fails UNAVAILABLE "
        "(env KEYSCOPE_DB_TIMEOUT_SECONDS; default %(default)s)",
    )
    settings.add_argument(
        "--log-level",
        default=env.get("KEYSCOPE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="(env KEYSCOPE_LOG_LEVEL; default %(default)s)",
    )
    settings.add_argument(
        "--log-format",
        default=env.get("KEYSCOPE_LOG_FORMAT", "text"),
        choices=LOG_FORMATS,
        help="text lines, or one JSON object a line with the access log's fields (method, code, duration_ms, "
        "caller, peer, VerifyKey's outcome) (env KEYSCOPE_LOG_FORMAT; default %(default)s)",
    )
    common = argparse.ArgumentParser(add_help=False, parents=[database, settings])
    parser = argparse.ArgumentParser(
        prog="python -m keyscope_server",
        description="Keyscope: permissions of APIs and API keys, over gRPC. "
        "Run `python -m keyscope_server COMMAND --help` for a command's flags.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the gRPC server until SIGTERM or SIGINT")
    serve.add_argument(
        "--host",
        default=env.get("KEYSCOPE_HOST", "127.0.0.1"),
        help="address to listen on (env KEYSCOPE_HOST; default %(default)s)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(env.get("KEYSCOPE_PORT", "50051")),
        help="port, 0 for any free one (env KEYSCOPE_PORT; default %(default)s)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=float(env.get("KEYSCOPE_GRACE_SECONDS", "10")),
        help="seconds calls in flight get to finish on shutdown (default %(default)s)",
    )
    serve.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=env.get("KEYSCOPE_EVENT_LOOP", EVENT_LOOPS[0]),
        help="the asyncio event loop that serves: uvloop (libuv's, the faster; not on Windows) or asyncio (the "
        "standard library's) (env KEYSCOPE_EVENT_LOOP; default %(default)s)",
    )
    serve.add_argument(
        "--lame-duck",
        type=float,
        default=float(env.get("KEYSCOPE_LAME_DUCK_SECONDS", "0.5")),
        help="seconds of serving on after SIGTERM with health NOT_SERVING, before new calls are refused, so "
        "that calls already sent are served (env KEYSCOPE_LAME_DUCK_SECONDS; default %(default)s)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(env.get("KEYSCOPE_WORKERS", "1")),
        help="server processes sharing the port and the database (env KEYSCOPE_WORKERS; default %(default)s)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other processes (SO_REUSEPORT); --workers sets it for its workers",
    )
    serve.add_argument(
        "--cache-entries",
        type=int,
        default=int(env.get("KEYSCOPE_CACHE_ENTRIES", "100000")),
        help="keys and root keys the verification cache holds at most (env KEYSCOPE_CACHE_ENTRIES; "
        "default %(default)s)",
    )
    serve.add_argument(
        "--cache-mib",
        type=int,
        default=int(env.get("KEYSCOPE_CACHE_MIB", "64")),
        help="memory the verification cache may use, roughly (env KEYSCOPE_CACHE_MIB; default %(default)s)",
    )
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        default=int(env.get("KEYSCOPE_MAX_MESSAGE_BYTES", str(4 * 1024 * 1024))),
        help="largest request or response accepted (env KEYSCOPE_MAX_MESSAGE_BYTES; default %(default)s)",
    )
    serve.add_argument(
        "--max-auth-failures",
        type=int,
        default=int(env.get("KEYSCOPE_MAX_AUTH_FAILURES", "50")),
        help="unknown root keys one peer address may send per --throttle-window; past that, calls whose root key "
        "would need a store lookup get RESOURCE_EXHAUSTED with RetryInfo (known root keys are served); 0: off "
        "(env KEYSCOPE_MAX_AUTH_FAILURES; default %(default)s)",
    )
    serve.add_argument(
        "--max-unknown-keys",
        type=int,
        default=int(env.get("KEYSCOPE_MAX_UNKNOWN_KEYS", "100")),
        help="VerifyKey secrets that no key has one root key may send per --throttle-window; past that, its "
        "VerifyKeys of secrets the cache does not hold get RESOURCE_EXHAUSTED with RetryInfo; 0: off "
        "(env KEYSCOPE_MAX_UNKNOWN_KEYS; default %(default)s)",
    )
    serve.add_argument(
        "--throttle-window",
        type=float,
        default=float(env.get("KEYSCOPE_THROTTLE_WINDOW_SECONDS", "1")),
        help="seconds over which --max-auth-failures and --max-unknown-keys are counted, sliding "
        "(env KEYSCOPE_THROTTLE_WINDOW_SECONDS; default %(default)s)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=env.get("KEYSCOPE_METRICS_PORT") or None,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics, HOST as --host; 0 for any free port (logged); "
        "with --workers, one port for all of them (env KEYSCOPE_METRICS_PORT; default: off)",
    )
    # A worker of `--workers` records its metrics in PROMETHEUS_MULTIPROC_DIR; the supervisor serves them.
    serve.add_argument("--metrics-multiprocess", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument(
        "--tls-cert",
        default=env.get("KEYSCOPE_TLS_CERT") or None,
        metavar="PEM_FILE",
        help="the server's certificate chain; with --tls-key, serve TLS only (env KEYSCOPE_TLS_CERT)",
    )
    serve.add_argument(
        "--tls-key",
        default=env.get("KEYSCOPE_TLS_KEY") or None,
        metavar="PEM_FILE",
        help="the unencrypted private key of --tls-cert (env KEYSCOPE_TLS_KEY)",
    )
    serve.add_argument(
        "--tls-client-ca",
        default=env.get("KEYSCOPE_TLS_CLIENT_CA") or None,
        metavar="PEM_FILE",
        help="CA certificates: every client must present a certificate one of them signed (mutual TLS; "
        "needs --tls-cert and --tls-key) (env KEYSCOPE_TLS_CLIENT_CA)",
    )

    create = commands.add_parser(
        "create-root-key", parents=[common], help="create a root key and print its secret, once"
    )
    create.add_argument("--name", default="root key", help="a label for people")
    create.add_argument(
        "--permission",
        "-p",
        action="append",
        dest="permissions",
        default=[],
        metavar="PERMISSION",
        help="a permission such as api.*.update_key; repeat the flag for more",
    )
    create.add_argument(
        "--all", action="store_true", help="grant every permission on every API: " + " ".join(EXAMPLE_ROOT_KEY)
    )
    create.add_argument("--expires-in-days", type=float, default=None, help="default: never expires")

    commands.add_parser(
        "list-root-keys", parents=[common], help="list root keys (ids, names, permissions; never secrets)"
    )
    disable = commands.add_parser("disable-root-key", parents=[common], help="make a root key stop working")
    disable.add_argument("root_key_id")
    delete = commands.add_parser("delete-root-key", parents=[common], help="delete a root key for good")
    delete.add_argument("root_key_id")

    migrate = commands.add_parser(
        "migrate",
        parents=[settings],
        help="copy a whole store (keys as hashes, audit trail and all) into an empty database, and prove the copy",
    )
    migrate.add_argument(
        "--from",
        dest="from_db",
        required=True,
        metavar="DB",
        help="the database to copy, only read: a SQLite file or a PostgreSQL URL, as --db takes them",
    )
    migrate.add_argument(
        "--to",
        dest="to_db",
        required=True,
        metavar="DB",
        help="the database to copy into, which must hold no data: a PostgreSQL URL (an empty database gets the "
        "schema) or a SQLite file, created if missing",
    )
    return parser


def _read_file(parser: argparse.ArgumentParser, flag: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        parser.error(f"{flag}: cannot read {path}: {exc.strerror or exc}")


def _tls_files(parser: argparse.ArgumentParser, options: argparse.Namespace) -> TlsFiles | None:
    """The TLS files of `serve` (certificate chain, private key, client CA), read and checked; a bad combination or
    file ends the program (exit code 2)."""
    cert, key, client_ca = options.tls_cert, options.tls_key, options.tls_client_ca
    if not (cert or key or client_ca):
        return None
    if client_ca and not (cert or key):
        parser.error("--tls-client-ca needs --tls-cert and --tls-key: client certificates are asked for over TLS only")
    if not (cert and key):
        parser.error("--tls-cert and --tls-key go together: the server's certificate chain and its private key")
    cert_pem = _read_file(parser, "--tls-cert", cert)
    key_pem = _read_file(parser, "--tls-key", key)
    client_ca_pem = _read_file(parser, "--tls-client-ca", client_ca) if client_ca else None
    if b"ENCRYPTED" in key_pem:
        parser.error(f"--tls-key {key} is encrypted: gRPC needs the key unencrypted (protect the file instead)")
    # gRPC would say only "failed to bind" about a bad file; the ssl module can tell what is wrong.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            parser.error(f"--tls-key {key} is not the private key of the certificate in --tls-cert {cert}")
        parser.error(f"--tls-cert {cert} and --tls-key {key} must be a PEM certificate chain and its PEM private key")
    if client_ca_pem is not None:
        try:
            context.load_verify_locations(cadata=client_ca_pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            parser.error(f"--tls-client-ca {client_ca} holds no PEM certificate")
    return cert_pem, key_pem, client_ca_pem


def _loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop `serve --event-loop` names: uvloop's, or None for asyncio's own."""
    if event_loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only `serve` needs it, and not on every platform

        return uvloop.new_event_loop
    return None


def _worker_command(options: argparse.Namespace) -> list[str]:
    command = [
        sys.executable, "-m", "keyscope_server", "serve", "--reuse-port", "--workers", "1",
        "--log-level", options.log_level, "--log-format", options.log_format,
        "--host", options.host, "--port", str(options.port), "--event-loop", options.event_loop,
        "--grace", str(options.grace), "--lame-duck", str(options.lame_duck),
        "--max-message-bytes", str(options.max_message_bytes),
        "--max-auth-failures", str(options.max_auth_failures),
        "--max-unknown-keys", str(options.max_unknown_keys),
        "--throttle-window", str(options.throttle_window),
        "--cache-entries", str(options.cache_entries), "--cache-mib", str(options.cache_mib),
        "--db-pool-size", str(options.db_pool_size), "--db-timeout", str(options.db_timeout),
    ]  # fmt: skip
    # The database reaches the workers in their environment (KEYSCOPE_DB), not their command line: a URL may
    # hold a password, and command lines are there for anyone on the host to read.
    if options.tls_cert:  # and --tls-key: _tls_files checked
        command += ["--tls-cert", options.tls_cert, "--tls-key", options.tls_key]
    if options.tls_client_ca:
        command += ["--tls-client-ca", options.tls_client_ca]
    if options.metrics_port is not None:
        command += ["--metrics-multiprocess"]
    return command


def _supervise(options: argparse.Namespace) -> int:
    """`serve --workers N`: the workers, and with --metrics-port one endpoint that serves the metrics of them all."""
    # The database reaches the workers in their environment; an inherited KEYSCOPE_METRICS_PORT must not make each
    # of them serve metrics too.
    environment = {"KEYSCOPE_DB": options.db, "KEYSCOPE_METRICS_PORT": ""}
    if options.metrics_port is None:
        return supervise(_worker_command(options), options.workers, environment)
    with serve_multiprocess(options.host, options.metrics_port) as metrics:
        log.info(
            "metrics of every worker on http://%s:%d/metrics (from %s)", options.host, metrics.port, metrics.directory
        )
        environment["PROMETHEUS_MULTIPROC_DIR"] = metrics.directory
        return supervise(_worker_command(options), options.workers, environment, metrics.worker_exited)


def _postgres(options: argparse.Namespace) -> PostgresSettings:
    return PostgresSettings(
        pool_size=options.db_pool_size,
        connect_timeout_seconds=options.db_timeout,
        statement_timeout_seconds=options.db_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    configure_logging(options.log_level, options.log_format)
    if options.db_pool_size < 1:
        parser.error("--db-pool-size must be at least 1")
    if not options.db_timeout > 0:
        parser.error("--db-timeout must be a number of seconds above 0")
    if options.command == "serve":
        if options.max_auth_failures < 0 or options.max_unknown_keys < 0:
            parser.error("--max-auth-failures and --max-unknown-keys must be 0 (off) or more")
        if not options.throttle_window > 0:
            parser.error("--throttle-window must be a number of seconds above 0")
        if options.metrics_port is not None and not 0 <= options.metrics_port <= 65535:
            parser.error("--metrics-port must be a port number, 0 to 65535 (0: any free port)")
    try:
        # Before anything opens the database or listens.
        tls = _tls_files(parser, options) if options.command == "serve" else None
        if options.command == "serve" and options.workers > 1:
            if options.port == 0:
                parser.error("--workers needs a fixed --port: workers cannot share a port picked at random")
            asyncio.run(prepare_store(options.db, _postgres(options)))  # once, before the workers open it
            return _supervise(options)
        if options.command == "serve" and options.workers < 1:
            parser.error("--workers must be at least 1")
        return _run(parser, options, tls)
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _run(parser: argparse.ArgumentParser, options: argparse.Namespace, tls: TlsFiles | None) -> int:
    """Every command but the supervisor of `serve --workers N`, in this process."""
    # Imported here, not with this module: the supervisor has returned before this point without loading the server
    # (grpc, OpenTelemetry, the services: about 20 MB of its RSS).
    from keyscope_server import commands  # noqa: PLC0415
    from keyscope_server.factory import MetricsConfig, ServerConfig, ThrottleConfig, TlsConfig  # noqa: PLC0415
    from keyscope_server.store.copy import CopyFailed, same_database  # noqa: PLC0415
    from keyscope_server.tracing import TracingConfigError, tracing_from_environment  # noqa: PLC0415

    try:
        if options.command == "serve":
            try:
                tracing = tracing_from_environment(os.environ)
            except TracingConfigError as exc:
                parser.error(str(exc))
            metrics = None
            if options.metrics_multiprocess:
                metrics = MetricsConfig(port=None)  # recorded for the supervisor, which serves them
            elif options.metrics_port is not None:
                metrics = MetricsConfig(port=options.metrics_port)
            config = ServerConfig(
                host=options.host,
                port=options.port,
                max_message_bytes=options.max_message_bytes,
                reuse_port=options.reuse_port,
                tls=None if tls is None else TlsConfig(*tls),
                tracing=tracing,
                throttle=ThrottleConfig(
                    auth_failures=options.max_auth_failures,
                    unknown_keys=options.max_unknown_keys,
                    window_seconds=options.throttle_window,
                ),
                metrics=metrics,
            )
            cache = CacheLimits(entries=options.cache_entries, bytes=options.cache_mib * 1024 * 1024)
            try:
                serving = commands.serve(
                    options.db, _postgres(options), config, options.grace, options.lame_duck, cache
                )
                with asyncio.Runner(loop_factory=_loop_factory(options.event_loop)) as runner:
                    runner.run(serving)
            finally:
                if tracing is not None:
                    tracing.provider.shutdown()  # exports the spans still batched
        elif options.command == "create-root-key":
            permissions = list(options.permissions) + (list(EXAMPLE_ROOT_KEY) if options.all else [])
            if not permissions:
                parser.error("create-root-key needs --permission (one or more) or --all")
            postgres = _postgres(options)
            print(
                asyncio.run(
                    commands.create_root_key(options.db, postgres, options.name, permissions, options.expires_in_days)
                )
            )
        elif options.command == "migrate":
            if same_database(options.from_db, options.to_db):
                parser.error("--from and --to name the same database: a store is copied into another one")
            if engine_name(options.from_db) == "sqlite" and not os.path.exists(options.from_db):
                parser.error(f"--from {options.from_db}: no such file")
            asyncio.run(commands.migrate(options.from_db, options.to_db, _postgres(options)))
        else:
            command, root_key_id = options.command, getattr(options, "root_key_id", "")
            asyncio.run(commands.admin(options.db, _postgres(options), command, root_key_id))
    except CopyFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
