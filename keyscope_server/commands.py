"""What each command does in one process, once `keyscope_server.cli` has read its flags: serve, create-root-key,
the root-key admin commands, migrate.

In a module of its own so that the supervisor of `serve --workers N`, which only starts its workers (cli.py),
loads none of it: the server's modules, grpc and OpenTelemetry would be about 20 MB of the supervisor's RSS."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from keyscope_server.addresses import is_loopback
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.errors import DomainError, StoreUnavailable
from keyscope_server.factory import ServerConfig, start_server
from keyscope_server.store import Store, open_store
from keyscope_server.store.copy import copy_store
from keyscope_server.store.engines import PostgresSettings, describe_db
from keyscope_server.store.verify_cache import CacheLimits

__all__ = ["admin", "create_root_key", "migrate", "serve"]

log = logging.getLogger("keyscope")


async def serve(
    db: str, postgres: PostgresSettings, config: ServerConfig, grace: float, lame_duck: float, cache: CacheLimits
) -> None:
    store = await open_store(db, cache, postgres)
    try:
        running = await start_server(store, config)
        # What startup made (modules, message descriptors, the server) lives as long as the process: kept out of the
        # collector's full passes, which then walk about 5k objects rather than 48k (their longest pause under
        # `scripts/bench` verify-warm went from 21 ms to 3 ms).
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        transport = "plaintext" if config.tls is None else "TLS" if config.tls.client_ca is None else "mutual TLS"
        log.info(
            "keyscope serving on %s:%d (%s), database %s, event loop %s",
            config.host,
            running.port,
            transport,
            describe_db(db),
            type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )
        if running.metrics_port is not None:
            log.info("metrics on http://%s:%d/metrics", config.host, running.metrics_port)
        if config.tls is None and not is_loopback(config.host):
            log.warning(
                "listening on %s:%d without TLS: every call, root keys and key secrets included, crosses the "
                "network in clear text; serve TLS with --tls-cert and --tls-key (env KEYSCOPE_TLS_CERT, "
                "KEYSCOPE_TLS_KEY), or listen on 127.0.0.1",
                config.host,
                running.port,
            )
        await stop.wait()
        log.info(
            "stopping: health NOT_SERVING, %.1fs more of serving, then no new calls and up to %.1fs for calls in "
            "flight",
            lame_duck,
            grace,
        )
        await running.stop(grace, lame_duck)
    finally:
        await store.close()
    log.info("stopped")


async def create_root_key(
    db: str, postgres: PostgresSettings, name: str, permissions: Sequence[str], expires_in_days: float | None
) -> str:
    secret = new_secret(ROOT_KEY_PREFIX)
    expires_ms = None
    if expires_in_days is not None:
        expires_ms = int((datetime.now(UTC).timestamp() + expires_in_days * 86400) * 1000)
    store = await open_store(db, postgres=postgres)
    try:
        record = await store.create_root_key(name, hash_secret(secret), permissions, expires_ms)
    finally:
        await store.close()
    print(f"root key id: {record.id}", file=sys.stderr)
    print(f"permissions: {' '.join(record.permissions)}", file=sys.stderr)
    print("the secret below is shown only now; store it safely:", file=sys.stderr)
    return secret


async def admin(db: str, postgres: PostgresSettings, command: str, root_key_id: str = "") -> None:
    store = await open_store(db, postgres=postgres)
    try:
        if command == "list-root-keys":
            for key in await store.list_root_keys():
                state = "enabled" if key.enabled else "disabled"
                print(f"{key.id}\t{key.name}\t{state}\t{' '.join(key.permissions)}")
        elif command == "disable-root-key":
            await store.set_root_key_enabled(root_key_id, False)
        elif command == "delete-root-key":
            await store.delete_root_key(root_key_id)
    finally:
        await store.close()


async def _open_side(flag: str, db: str, postgres: PostgresSettings) -> Store:
    try:
        return await open_store(db, postgres=postgres)
    except DomainError as exc:
        raise StoreUnavailable(f"{flag} {describe_db(db)}: {exc.message}") from None


def _progress(table: str, written: int, total: int) -> None:
    print(f"migrate: {table} {written}/{total}", file=sys.stderr)


async def migrate(from_db: str, to_db: str, postgres: PostgresSettings) -> None:
    source = await _open_side("--from", from_db, postgres)
    try:
        target = await _open_side("--to", to_db, postgres)
        try:
            print(f"migrate: copying {describe_db(from_db)} to {describe_db(to_db)}", file=sys.stderr)
            report = await copy_store(source, target, _progress)
        finally:
            await target.close()
    finally:
        await source.close()
    print(f"migrate: {report.summary()}", file=sys.stderr)
