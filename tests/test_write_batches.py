"""Writes that arrive together share one transaction (group commit): one that fails, or a dry run, among them
leaves no trace, and the others commit with one revision each, in their order."""

from __future__ import annotations

import asyncio

import pytest

from keyscope_server.access import Principal
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import hash_secret, new_secret
from keyscope_server.errors import EtagMismatch, NotFound
from keyscope_server.store import Store
from keyscope_server.store.models import NewKey, ScopeSpec

pytestmark = pytest.mark.asyncio

ADMIN = Principal("root_test", EXAMPLE_ROOT_KEY)


async def _keys(store: Store, count: int) -> list[str]:
    api = (await store.create_api(ADMIN, "documents", [ScopeSpec("documents.read", "")])).value
    created = []
    for n in range(count):
        new = NewKey(api.id, f"k{n}", hash_secret(new_secret("sk")), "sk_ab", True, None, ("documents.read",), ())
        created.append((await store.create_key(ADMIN, new)).value.id)
    return created


async def test_ok_a_failed_write_and_a_dry_run_among_others_leave_no_trace(store: Store) -> None:
    first, second, third = await _keys(store, 3)
    before = await store.revision()
    outcomes = await asyncio.gather(
        store.set_permissions(ADMIN, first, ["documents.write"]),
        store.set_permissions(ADMIN, "key_missing", ["documents.write"]),
        store.set_permissions(ADMIN, second, ["documents.admin"], validate_only=True),
        store.set_permissions(ADMIN, third, ["documents.read"], etag="E999"),
        store.set_permissions(ADMIN, third, ["documents.list"]),
        return_exceptions=True,
    )
    done, missing, dry, stale, last = outcomes
    assert isinstance(missing, NotFound)
    assert isinstance(stale, EtagMismatch)
    assert not isinstance(done, BaseException) and not isinstance(last, BaseException)
    assert not isinstance(dry, BaseException)
    # The two that were written took the next two revisions, in their order; the rest took none.
    assert (done.revision, last.revision) == (before + 1, before + 2)
    assert await store.revision() == before + 2
    assert [p.name for p in dry.permissions] == ["documents.admin"]
    permissions = {k: [p.name for p in (await store.get_key(ADMIN, k)).permissions] for k in (first, second, third)}
    assert permissions == {first: ["documents.write"], second: ["documents.read"], third: ["documents.list"]}
    snapshot = await store.export_snapshot()
    assert [e.revision for e in snapshot.audit_events][-2:] == [before + 1, before + 2]
    # The dry run created no catalog entry; the writes created theirs.
    assert sorted(p.name for p in snapshot.permissions) == ["documents.list", "documents.read", "documents.write"]


async def test_ok_a_dry_run_among_writes_that_all_succeed_writes_nothing(store: Store) -> None:
    first, second = await _keys(store, 2)
    before = await store.revision()
    done, dry, last = await asyncio.gather(
        store.set_permissions(ADMIN, first, ["documents.write"]),
        store.set_permissions(ADMIN, second, ["documents.admin"], validate_only=True),
        store.set_permissions(ADMIN, first, ["documents.list"]),
    )
    assert (done.revision, dry.revision, last.revision) == (before + 1, before + 1, before + 2)
    assert [p.name for p in dry.permissions] == ["documents.admin"]
    assert [p.name for p in (await store.get_key(ADMIN, second)).permissions] == ["documents.read"]
    snapshot = await store.export_snapshot()
    assert sorted(p.name for p in snapshot.permissions) == ["documents.list", "documents.read", "documents.write"]


async def test_ok_each_write_of_a_batch_sees_what_the_writes_before_it_did(store: Store) -> None:
    """What a write reads first may be read ahead for the whole batch (PostgreSQL's read_ahead); a write must still
    see the changes of the writes before it in the batch: a permission one created, a key one changed or deleted."""
    creator, follower, changed, deleted = await _keys(store, 4)
    etag = (await store.get_key(ADMIN, changed)).etag
    created, followed, first, stale, gone_key, gone = await asyncio.gather(
        store.set_permissions(ADMIN, creator, ["documents.new"]),
        store.set_permissions(ADMIN, follower, ["documents.new", "documents.read"]),
        store.set_permissions(ADMIN, changed, ["documents.write"], etag=etag),
        store.set_permissions(ADMIN, changed, ["documents.list"], etag=etag),
        store.delete_key(ADMIN, deleted),
        store.add_permissions(ADMIN, deleted, ["documents.read"]),
        return_exceptions=True,
    )
    assert [p.name for p in created.created_permissions] == ["documents.new"]  # type: ignore[union-attr]
    assert list(followed.created_permissions) == []  # type: ignore[union-attr]
    assert [p.name for p in followed.permissions] == ["documents.new", "documents.read"]  # type: ignore[union-attr]
    assert not isinstance(first, BaseException) and not isinstance(gone_key, BaseException)
    assert isinstance(stale, EtagMismatch)  # the key's etag moved with the write before it
    assert isinstance(gone, NotFound)
    snapshot = await store.export_snapshot()
    assert [p.name for p in snapshot.permissions].count("documents.new") == 1
    assert [p.name for p in (await store.get_key(ADMIN, changed)).permissions] == ["documents.write"]
    assert deleted not in {k.id for k in snapshot.keys}
