"""Store faults (issue 4): a full disk, a read-only database file, the file removed underneath.

Each fault is injected under a running server, from outside it, as an operator or the machine would cause
it. While it stands, writes fail with a clear code and change nothing, reads go on answering, and health
(`""` and every keyscope service) reports NOT_SERVING; once it is gone, the server recovers on its own
(SERVING again, writes work) without a restart, and every write acknowledged before is still there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from keyscope.v1 import keys_pb2
from keyscope_server.factory import ServerConfig
from keyscope_server.store.engine_store import EngineStore
from keyscope_server.store.sqlite.connection import fetch_all
from keyscope_server.store.sqlite.engine import RESERVE_PAGES
from tests import health
from tests.client import Caller
from tests.health import Serving
from tests.polling import until
from tests.rpc_errors import error_info
from tests.sqlite.database_file import integrity_problems, rejected, revision, snapshot
from tests.sqlite.writer import writer_of

pytestmark = pytest.mark.asyncio

T = TypeVar("T")

Code = keys_pb2.VerifyKeyResponse.Code

PROBE_SECONDS = 0.05
DEADLINE_SECONDS = 5.0  # for health to follow a fault or its end: a hundred probes


@pytest.fixture
def server_config() -> ServerConfig:
    """conftest's server, probing its store every PROBE_SECONDS so that health follows faults quickly."""
    return ServerConfig(host="127.0.0.1", port=0, store_probe_seconds=PROBE_SECONDS)


async def health_turns(channel: grpc.aio.Channel, status: int) -> None:
    """Waits until every health name reports `status`; fails after DEADLINE_SECONDS."""
    await health.health_turns(channel, status, DEADLINE_SECONDS, PROBE_SECONDS / 2)


async def wait_for_success(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`'s answer once the store takes writes again: refusals as full are retried until the deadline.

    A write that SQLite found no room for leaves the store refusing writes until the next probe finds room.
    """

    async def answer() -> T | None:
        try:
            return await call()
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return None

    return await until(answer, "the store takes writes again", DEADLINE_SECONDS, every=PROBE_SECONDS / 2)


def logged(caplog: pytest.LogCaptureFixture, level: int, *words: str) -> bool:
    """Whether the server's own logger wrote a record at `level` naming every one of `words`."""
    return any(
        r.name == "keyscope" and r.levelno == level and all(w in r.getMessage() for w in words) for r in caplog.records
    )


async def assert_has(caller: Caller, key_id: str, secret: str, names: list[str]) -> None:
    """The key holds exactly `names` as direct permissions, by GetKey and by VerifyKey."""
    key = await caller.get_key(key_id)
    assert sorted(p.name for p in key.permissions) == sorted(names)
    answer = await caller.verify(secret, f"{names[0]} AND {names[-1]}")
    assert answer.code == Code.CODE_VALID, answer


def file_bytes(*paths: Path) -> dict[str, str]:
    """SHA-256 of each file that exists: compared before and after, it shows that nothing was written."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.exists()}


# -- a full disk -----------------------------------------------------------------------------------------


async def _pragma(store: EngineStore, name: str, value: int | None = None) -> int:
    """A PRAGMA on the store's own writer connection (max_page_count is a setting of each connection)."""
    statement = f"PRAGMA {name}" if value is None else f"PRAGMA {name} = {int(value)}"
    return int((await writer_of(store).run(fetch_all, statement))[0][0])


async def test_resource_exhausted_when_disk_full_then_recovers(
    store: EngineStore, channel: grpc.aio.Channel, admin: Caller, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyscope")
    api = await admin.make_api(["base.read"])
    acknowledged: dict[str, tuple[str, list[str]]] = {}  # key id -> (secret, its direct permissions)
    key, secret = await admin.make_key(api.id, ["base.read"])
    acknowledged[key.id] = (secret, ["base.read"])

    # Fault injection: a disk filling up is outside the server's control. SQLite's page limit on the server's
    # own writer connection (the one its probe reads too) stands in for it: a few writes still fit beyond the
    # reserve the server keeps, then none.
    pages = await _pragma(store, "page_count")
    # No free pages inside the file, so the room left is what the limit leaves.
    assert await _pragma(store, "freelist_count") == 0
    unlimited = await _pragma(store, "max_page_count")
    limit = await _pragma(store, "max_page_count", pages + RESERVE_PAGES + 8)
    assert limit == pages + RESERVE_PAGES + 8
    try:
        # Writes of a few pages each (20 new names of 100 characters), half of them keys created, half
        # permissions replaced, until the store refuses one.
        failed: tuple[Callable[[], Awaitable[object]], str, list[str]] | None = None
        for n in range(200):
            names = [f"n{n}.{i}." + "x" * 90 for i in range(20)]
            if n % 2 == 0:
                key_id = ""
                call = functools.partial(
                    admin.keys.CreateKey,
                    keys_pb2.CreateKeyRequest(api_id=api.id, name=f"k{n}", permissions=names),
                    metadata=admin.md,
                )
            else:
                key_id = list(acknowledged)[-1]
                call = functools.partial(
                    admin.keys.SetPermissions,
                    keys_pb2.SetPermissionsRequest(key_id=key_id, permissions=names),
                    metadata=admin.md,
                )
            before = snapshot(db_path)
            try:
                response = await call()
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                info = error_info(e)
                assert (info.reason, info.domain) == ("STORE_FULL", "keyscope.v1")
                assert "full" in (e.details() or "")
                assert snapshot(db_path) == before  # the failed call changed nothing
                failed = (call, key_id, names)
                break
            if isinstance(response, keys_pb2.CreateKeyResponse):
                acknowledged[response.key.id] = (response.secret, names)
            else:
                acknowledged[key_id] = (acknowledged[key_id][0], names)
        assert failed is not None, "200 writes fit in a store of a few pages more than it held"
        assert len(acknowledged) > 1, "no write fitted before the store was full"
        call, key_id, names = failed
        acknowledged_revision = revision(db_path)

        await health_turns(channel, Serving.NOT_SERVING)
        assert logged(caplog, logging.WARNING, "NOT_SERVING", "full")
        # While it is full: the same write is refused again, and changes nothing; reads go on.
        error = await rejected(db_path, call, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert error_info(error).reason == "STORE_FULL"
        for acked_id, (acked_secret, acked_names) in acknowledged.items():
            await assert_has(admin, acked_id, acked_secret, acked_names)
        assert revision(db_path) == acknowledged_revision
    finally:
        # The disk has room again.
        await _pragma(store, "max_page_count", unlimited)

    await health_turns(channel, Serving.SERVING)
    assert logged(caplog, logging.INFO, "recovered")
    response = await call()
    if key_id:
        acknowledged[key_id] = (acknowledged[key_id][0], names)
    else:
        assert isinstance(response, keys_pb2.CreateKeyResponse)
        acknowledged[response.key.id] = (response.secret, names)
    assert revision(db_path) == acknowledged_revision + 1
    for acked_id, (acked_secret, acked_names) in acknowledged.items():
        await assert_has(admin, acked_id, acked_secret, acked_names)
    assert integrity_problems(db_path) == []


async def test_resource_exhausted_when_write_outgrows_room_left(
    store: EngineStore, admin: Caller, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Above, writes of a few pages fill the store until less than the server's reserve is left. Here more than
    # the reserve is left, so the probe lets writes through, and one write needs more than that room: SQLite
    # itself fails it (SQLITE_FULL) halfway through, inside the server's batch transaction.
    api = await admin.make_api(["base.read"])
    key, secret = await admin.make_key(api.id, ["base.read"])
    pages = await _pragma(store, "page_count")
    assert await _pragma(store, "freelist_count") == 0
    unlimited = await _pragma(store, "max_page_count")
    # Fault injection, as above: the disk filling up, outside the server's control.
    await _pragma(store, "max_page_count", pages + RESERVE_PAGES + 4)
    names = [f"big.{i}." + "x" * 200 for i in range(400)]  # some 80 KiB of new names, and their index

    def set_permissions() -> Awaitable[keys_pb2.SetPermissionsResponse]:
        return admin.keys.SetPermissions(
            keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=names), metadata=admin.md
        )

    try:
        error = await rejected(db_path, set_permissions, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert (error_info(error).reason, error_info(error).domain) == ("STORE_FULL", "keyscope.v1")
        # SQLite's own SQLITE_FULL, not the probe's refusal, is what the caller heard about.
        assert any("full" in r.getMessage() and r.name.startswith("keyscope_server.store") for r in caplog.records)
        await assert_has(admin, key.id, secret, ["base.read"])
    finally:
        await _pragma(store, "max_page_count", unlimited)

    response = await wait_for_success(set_permissions)
    assert sorted(p.name for p in response.permissions) == sorted(names)
    await assert_has(admin, key.id, secret, names)
    assert integrity_problems(db_path) == []


# -- a read-only database file ------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Fault injection: an operator makes the database file read-only under the server. As root, file modes do
    not bind (root may write a 0o444 file), so the file is made immutable (`chattr +i`), which binds root too."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        undo = ["chattr", "-i", str(path)]
    else:
        mode = path.stat().st_mode
        path.chmod(0o444)
    try:
        yield
    finally:
        # Always undone: an immutable file would also break the cleanup of the temporary directory.
        if os.geteuid() == 0:
            subprocess.run(undo, check=True)
        else:
            path.chmod(mode)


async def test_unavailable_when_file_read_only_then_recovers(
    channel: grpc.aio.Channel, admin: Caller, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyscope")
    api = await admin.make_api(["documents.read", "documents.write", "documents.delete"])
    key, secret = await admin.make_key(api.id, ["documents.read"])
    await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["documents.read", "documents.write"]),
        metadata=admin.md,
    )
    wanted = ["documents.read", "documents.delete"]

    def set_permissions() -> Awaitable[object]:
        return admin.keys.SetPermissions(
            keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=wanted), metadata=admin.md
        )

    with read_only(db_path):
        await health_turns(channel, Serving.NOT_SERVING)
        assert logged(caplog, logging.WARNING, "NOT_SERVING", "read-only")
        error = await rejected(db_path, set_permissions, grpc.StatusCode.UNAVAILABLE)
        # Clear for the caller, without the server's file layout.
        assert "read-only" in (error.details() or "") and str(db_path.parent) not in (error.details() or "")
        await rejected(
            db_path,
            lambda: admin.keys.CreateKey(keys_pb2.CreateKeyRequest(api_id=api.id), metadata=admin.md),
            grpc.StatusCode.UNAVAILABLE,
        )
        await assert_has(admin, key.id, secret, ["documents.read", "documents.write"])

    await health_turns(channel, Serving.SERVING)
    assert logged(caplog, logging.INFO, "recovered")
    await set_permissions()
    await assert_has(admin, key.id, secret, wanted)
    assert integrity_problems(db_path) == []


# -- the database file removed underneath -------------------------------------------------------------------


async def test_unavailable_when_file_removed_then_recovers(
    channel: grpc.aio.Channel, admin: Caller, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyscope")
    api = await admin.make_api(["documents.read", "documents.write"])
    key, secret = await admin.make_key(api.id, ["documents.read"])
    wanted = ["documents.read", "documents.write"]

    def set_permissions() -> Awaitable[object]:
        return admin.keys.SetPermissions(
            keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=wanted), metadata=admin.md
        )

    before = snapshot(db_path)
    # Fault injection: someone moves the database file away under the server (same directory, same inode).
    moved = db_path.with_name(db_path.name + ".moved")
    wal = db_path.with_name(db_path.name + "-wal")
    os.rename(db_path, moved)
    try:
        await health_turns(channel, Serving.NOT_SERVING)
        assert logged(caplog, logging.WARNING, "NOT_SERVING", "missing")
        # Not opened with SQLite while moved (a second name for the file would get a WAL of its own): compared
        # byte for byte instead. The -shm file is left out: readers write their marks there.
        files = file_bytes(moved, wal)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await set_permissions()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "missing" in (e.value.details() or "") and str(db_path.parent) not in (e.value.details() or "")
        assert file_bytes(moved, wal) == files
        assert not db_path.exists()
        await assert_has(admin, key.id, secret, ["documents.read"])
    finally:
        if not db_path.exists():
            os.rename(moved, db_path)

    await health_turns(channel, Serving.SERVING)
    assert logged(caplog, logging.INFO, "recovered")
    assert snapshot(db_path) == before  # what was there is intact, and the refused write left no trace
    await set_permissions()
    await assert_has(admin, key.id, secret, wanted)
    assert integrity_problems(db_path) == []
