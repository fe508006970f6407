"""Store.export_snapshot and import_snapshot: a copy holds exactly what its source holds, and a store that holds
anything already takes no copy."""

from __future__ import annotations

import pytest

from keyscope_server.access import Principal
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import hash_secret, new_secret
from keyscope_server.errors import StoreUnavailable
from keyscope_server.store import Store
from keyscope_server.store.models import NewKey, ScopeSpec
from tests.conftest import OpenStore

pytestmark = pytest.mark.asyncio

ADMIN = Principal("root_test", EXAMPLE_ROOT_KEY)


async def _fill(store: Store) -> None:
    api = (await store.create_api(ADMIN, "documents", [ScopeSpec("documents.read", "Read")])).value
    role = (await store.create_role(ADMIN, api.id, "reader", "reads", ["documents.read", "documents.list"])).value
    key = NewKey(api.id, "k", hash_secret(new_secret("sk")), "sk_ab", True, None, ("admin",), (role.name,))
    created = (await store.create_key(ADMIN, key)).value
    await store.set_permissions(ADMIN, created.id, ["documents.write", "admin"])
    await store.create_root_key("ops", hash_secret(new_secret("root")), ["api.*.read_key"])


async def test_ok_a_copy_holds_exactly_what_the_source_holds(store: Store, open_test_store: OpenStore) -> None:
    await _fill(store)
    source = await store.export_snapshot()
    copy = await open_test_store("copy")
    await copy.import_snapshot(source)
    assert await copy.export_snapshot() == source
    assert await copy.revision() == source.revision == 5  # five changes
    [key] = source.keys
    # The copy answers as the source does: the key and its permissions, through its role too.
    assert await copy.get_key(ADMIN, key.id) == await store.get_key(ADMIN, key.id)
    verified = await copy.verify_key(ADMIN, key.secret_hash)
    assert verified is not None
    assert verified.permissions == ("admin", "documents.list", "documents.read", "documents.write")


async def test_unavailable_a_store_that_holds_data_takes_no_copy(store: Store, open_test_store: OpenStore) -> None:
    await _fill(store)
    target = await open_test_store("target")
    await target.create_api(ADMIN, "already here", [])
    before = await target.export_snapshot()
    with pytest.raises(StoreUnavailable, match="already holds data"):
        await target.import_snapshot(await store.export_snapshot())
    assert await target.export_snapshot() == before
