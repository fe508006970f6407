"""The cache of unknown secrets (issue 12): a guess repeated costs no store lookup, and a key created a moment ago
verifies on the very next call all the same, on every engine and on every server over one database.

A key's secret is made by the server, so a test cannot guess it before CreateKey; these tests create the key in
the store, as CreateKey does, with a secret they chose and have already had verified as unknown.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from keyscope.v1 import keys_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret, secret_start
from keyscope_server.factory import RunningServer, ServerConfig, start_server
from keyscope_server.store import Store
from keyscope_server.store.engine_store import EngineStore
from keyscope_server.store.models import NewKey
from tests.client import Caller
from tests.conftest import OpenStore

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse


def key_lookups(store: Store) -> int:
    assert isinstance(store, EngineStore)
    return store.lookups.keys


async def create_key_with_secret(store: Store, root_key: str, api_id: str, secret: str) -> None:
    principal = await store.authenticate(hash_secret(root_key), int(time.time() * 1000))
    new = NewKey(api_id, "late", hash_secret(secret), secret_start(secret, "late"), True, None, (), ())
    await store.create_key(principal, new)


async def test_ok_a_repeated_unknown_secret_is_looked_up_once(store: Store, admin: Caller) -> None:
    await admin.make_api()
    guess = new_secret("late")
    before = key_lookups(store)
    answers = [(await admin.verify(guess)).code for _ in range(5)]
    assert answers == [Code.CODE_NOT_FOUND] * 5
    assert key_lookups(store) - before == 1


async def test_ok_a_key_created_after_its_secret_was_guessed_verifies_on_the_next_call(
    store: Store, admin: Caller
) -> None:
    api = await admin.make_api()
    secret = new_secret("late")
    assert (await admin.verify(secret)).code == Code.CODE_NOT_FOUND
    assert (await admin.verify(secret)).code == Code.CODE_NOT_FOUND  # from the cache of unknown secrets
    before = key_lookups(store)
    await create_key_with_secret(store, admin.root_key, api.id, secret)
    assert (await admin.verify(secret)).code == Code.CODE_VALID
    assert key_lookups(store) - before == 1  # the new revision dropped the unknown entry: looked up again


async def test_ok_any_new_revision_drops_the_unknown_secrets(store: Store, admin: Caller) -> None:
    await admin.make_api()
    guess = new_secret("late")
    await admin.verify(guess)
    before = key_lookups(store)
    await admin.make_api(name="another")  # creates no key, but the cache cannot tell a revision that does
    assert (await admin.verify(guess)).code == Code.CODE_NOT_FOUND
    assert key_lookups(store) - before == 1


@pytest_asyncio.fixture
async def two_servers(open_test_store: OpenStore) -> AsyncIterator[tuple[Store, RunningServer, Store, RunningServer]]:
    """Two servers, each with a store of its own (its own caches) over one database."""
    store_a, store_b = await open_test_store("shared"), await open_test_store("shared")
    a = await start_server(store_a, ServerConfig(host="127.0.0.1", port=0))
    b = await start_server(store_b, ServerConfig(host="127.0.0.1", port=0))
    try:
        yield store_a, a, store_b, b
    finally:
        await a.stop(None)
        await b.stop(None)


async def test_ok_a_key_created_through_one_server_verifies_on_the_next_call_to_another_that_had_it_unknown(
    two_servers: tuple[Store, RunningServer, Store, RunningServer],
) -> None:
    store_a, a, store_b, b = two_servers
    root_key = new_secret(ROOT_KEY_PREFIX)
    record = await store_a.create_root_key("test", hash_secret(root_key), EXAMPLE_ROOT_KEY)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as channel_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as channel_b,
    ):
        on_a, on_b = Caller(channel_a, root_key, record.id), Caller(channel_b, root_key, record.id)
        api = await on_a.make_api()
        secret = new_secret("late")
        assert (await on_b.verify(secret)).code == Code.CODE_NOT_FOUND
        before = key_lookups(store_b)
        assert (await on_b.verify(secret)).code == Code.CODE_NOT_FOUND
        assert key_lookups(store_b) == before  # B answers it from its cache of unknown secrets now

        await create_key_with_secret(store_a, root_key, api.id, secret)
        assert (await on_b.verify(secret)).code == Code.CODE_VALID
        assert (await on_a.verify(secret)).code == Code.CODE_VALID
