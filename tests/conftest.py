"""Every test gets a real server on 127.0.0.1:0 over a fresh SQLite file, called through generated stubs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from server.cli import EXAMPLE_ROOT_KEY
from server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from server.factory import RunningServer, ServerConfig, start_server
from server.store import SqliteStore, Store
from tests.client import Caller

# Every secret the run creates is searched for in its logs, errors and stores (issue 4).
pytest_plugins = ["tests.secret_watch"]

MakeCaller = Callable[[Sequence[str]], Awaitable[Caller]]
UnusableCaller = Callable[[str], Awaitable[Caller]]
# The ways a root key stops authenticating, as `unusable_caller` takes them.
UNUSABLE_ROOT_KEYS = ["disabled", "expired", "deleted"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keyscope.db"


@pytest_asyncio.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    store = await SqliteStore.open(db_path)
    yield store
    await store.close()


@pytest_asyncio.fixture
async def server(store: Store) -> AsyncIterator[RunningServer]:
    running = await start_server(store, ServerConfig(host="127.0.0.1", port=0))
    yield running
    await running.stop(None)


@pytest_asyncio.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def make_caller(store: Store, channel: grpc.aio.Channel) -> MakeCaller:
    """`await make_caller(["api.*.verify_key"])`: a caller with a new root key holding those permissions."""

    async def make(permissions: Sequence[str]) -> Caller:
        secret = new_secret(ROOT_KEY_PREFIX)
        record = await store.create_root_key("test", hash_secret(secret), permissions)
        return Caller(channel, secret, record.id)

    return make


@pytest_asyncio.fixture
async def admin(make_caller: MakeCaller) -> Caller:
    """A caller holding every root-key permission on every API."""
    return await make_caller(EXAMPLE_ROOT_KEY)


@pytest.fixture
def unusable_caller(store: Store, channel: grpc.aio.Channel, make_caller: MakeCaller) -> UnusableCaller:
    """`await unusable_caller("disabled" | "expired" | "deleted")`: a caller whose root key holds every
    permission but no longer authenticates."""

    async def make(how: str) -> Caller:
        if how == "expired":
            secret = new_secret(ROOT_KEY_PREFIX)
            # Expired a millisecond ago: at the edge, where a lenient expiry check would let it through.
            record = await store.create_root_key(
                "expired", hash_secret(secret), EXAMPLE_ROOT_KEY, expires_ms=int(time.time() * 1000) - 1
            )
            return Caller(channel, secret, record.id)
        caller = await make_caller(EXAMPLE_ROOT_KEY)
        if how == "disabled":
            await store.set_root_key_enabled(caller.root_key_id, False)
        elif how == "deleted":
            await store.delete_root_key(caller.root_key_id)
        else:
            raise ValueError(f"not one of {UNUSABLE_ROOT_KEYS}: {how!r}")
        return caller

    return make
