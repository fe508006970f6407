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
