"""The server killed with SIGKILL under a write load, then restarted on the same file, several times over.

A write is acknowledged only after its COMMIT, so after any crash every key holds exactly one of the sets
it was sent: the last one acknowledged, or the one in flight when the kill came; never an older one, never
a mix of two. The revisions acknowledged stay reached, and the file stays sound.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from keyscope.v1 import apis_pb2, apis_pb2_grpc, keys_pb2, keys_pb2_grpc
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from tests.processes import create_root_key, free_port, start_serve, stop

pytestmark = pytest.mark.asyncio

WRITERS = 20
NAMES_PER_SET = 5
CRASHES = 3
ACKNOWLEDGED_BEFORE_EACH_KILL = 150
DEADLINE_SECONDS = 30


def requested(writer: int, n: int) -> set[str]:
    """The n-th set writer `writer` asks for; its key is created with set 0. No two sets share a name."""
    return {f"c{writer}.n{n}.p{i}" for i in range(NAMES_PER_SET)}


@dataclass
class Writer:
    """One caller replacing its own key's permissions, one request after another."""

    index: int
    key_id: str
    acknowledged: int = 0  # the n of the last set the server answered OK for (or found after a restart)
    in_flight: int | None = None  # the n sent and not yet answered
    failure: grpc.StatusCode | None = None
    failed_after_kill: bool = False

    def next_n(self) -> int:
        return max(self.acknowledged, self.in_flight or 0) + 1


@dataclass
class Load:
    target: int  # acknowledgements before the kill
    killed: bool = False
    acknowledged: int = 0
    revisions: list[int] = field(default_factory=list)  # of the writes acknowledged
    reached: asyncio.Event = field(default_factory=asyncio.Event)


async def write_until_refused(
    keys: keys_pb2_grpc.KeyServiceStub, md: tuple[tuple[str, str], ...], writer: Writer, load: Load
) -> None:
    while True:
        n = writer.next_n()
        writer.in_flight = n
        request = keys_pb2.SetPermissionsRequest(key_id=writer.key_id, permissions=sorted(requested(writer.index, n)))
        try:
            response = await keys.SetPermissions(request, metadata=md, timeout=DEADLINE_SECONDS)
        except grpc.aio.AioRpcError as e:
            writer.failure, writer.failed_after_kill = e.code(), load.killed
            return
        assert {p.name for p in response.permissions} == requested(writer.index, n)
        writer.acknowledged, writer.in_flight = n, None
        load.revisions.append(response.revision)
        load.acknowledged += 1
        if load.acknowledged >= load.target:
            load.reached.set()


def integrity(db: Path) -> list[tuple[str]]:
    # Read-only, next to the running server: the check must not repair or rewrite what it checks.
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()


async def test_ok_every_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    db, log = tmp_path / "keyscope.db", tmp_path / "serve.log"
    md = (("authorization", f"Bearer {create_root_key(tmp_path, db, *EXAMPLE_ROOT_KEY)}"),)
    port = free_port()
    process = start_serve(tmp_path, db, port, log=log)
    writers: list[Writer] = []
    all_revisions: list[int] = []
    checked = survived_in_flight = 0
    try:
        for crash in range(CRASHES):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                keys = keys_pb2_grpc.KeyServiceStub(channel)
                if not writers:
                    api = await apis_pb2_grpc.ApiServiceStub(channel).CreateApi(
                        apis_pb2.CreateApiRequest(name="crash"), metadata=md
                    )
                    for i in range(WRITERS):
                        created = await keys.CreateKey(
                            keys_pb2.CreateKeyRequest(api_id=api.api.id, permissions=sorted(requested(i, 0))),
                            metadata=md,
                        )
                        writers.append(Writer(i, created.key.id))

                load = Load(target=ACKNOWLEDGED_BEFORE_EACH_KILL)
                tasks = [asyncio.create_task(write_until_refused(keys, md, w, load)) for w in writers]
                reached = asyncio.create_task(load.reached.wait())
                done, _ = await asyncio.wait(
                    [reached, *tasks], timeout=DEADLINE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                # A writer that ended before the kill was refused by a live server: say so.
                assert reached in done, [(w.index, w.failure) for w in writers if w.failure]
                # The first kill comes right on an acknowledgement, where a write answered before its commit
                # would be lost; the others a random moment later, anywhere in a commit (the next batch has
                # barely begun right after an acknowledgement), so some writes in flight get committed.
                if crash > 0:
                    await asyncio.sleep(random.uniform(0, 0.02))
                process.kill()
                load.killed = True
                await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_SECONDS)
            assert process.wait(DEADLINE_SECONDS) == -signal.SIGKILL
            # Every writer learnt of the crash as a refusal, after the kill, never as a wrong answer.
            assert {(w.failure, w.failed_after_kill) for w in writers} == {(grpc.StatusCode.UNAVAILABLE, True)}
            all_revisions += load.revisions
            print(f"crash {crash + 1}: {load.acknowledged} writes acknowledged before SIGKILL")

            port = free_port()
            process = start_serve(tmp_path, db, port, log=log)
            assert integrity(db) == [("ok",)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                keys = keys_pb2_grpc.KeyServiceStub(channel)
                newest = max(all_revisions)
                for w in writers:
                    # Acknowledged revisions are reached: a read that demands the newest one is served.
                    answer = await keys.GetKey(
                        keys_pb2.GetKeyRequest(key_id=w.key_id, min_revision=newest), metadata=md
                    )
                    found = {p.name for p in answer.key.permissions}
                    allowed = {w.acknowledged} | ({w.in_flight} if w.in_flight is not None else set())
                    matches = [n for n in allowed if requested(w.index, n) == found]
                    assert matches, (
                        f"writer {w.index}'s key holds {sorted(found)}: not set n{w.acknowledged} (acknowledged)"
                        f" nor n{w.in_flight} (in flight at the kill)"
                    )
                    # What survived is acknowledged now; the next write asks for a set never asked before.
                    survived_in_flight += matches[0] != w.acknowledged
                    w.acknowledged, w.failure = matches[0], None
                    checked += 1
                # The check above can fail: a revision the store has not reached is refused.
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await keys.GetKey(
                        keys_pb2.GetKeyRequest(key_id=writers[0].key_id, min_revision=newest + 1_000_000), metadata=md
                    )
                assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    finally:
        code, _ = stop(process, signal.SIGTERM)
    assert code == 0
    # Revisions count changes one by one: none acknowledged twice, so none was lost and handed out again.
    assert len(set(all_revisions)) == len(all_revisions)
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()
    text = log.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text[-5000:]
    assert text.count("keyscope serving on") == CRASHES + 1
    print(
        f"{len(all_revisions)} writes acknowledged over {CRASHES} crashes; {checked} key states checked, "
        f"{survived_in_flight} of them the write in flight at the kill (committed, never acknowledged)"
    )
