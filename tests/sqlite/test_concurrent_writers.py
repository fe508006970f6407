"""Concurrency: two worker processes, 50 callers replacing overlapping keys, roles and scope lists for 20 s.

What must hold afterwards: the audit trail replayed from empty equals the
store's final state; every acknowledged write is in the trail with the
revision it was acknowledged with (or changed nothing); no caller ever saw
"database is locked", and a call that failed (only UNAVAILABLE or
DEADLINE_EXCEEDED are allowed) left no event behind.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sqlite3
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from keyscope.v1 import apis_pb2, keys_pb2, permissions_pb2, roles_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from tests.audit_replay import all_events, as_json, replay, store_state
from tests.client import Caller
from tests.polling import until
from tests.processes import create_root_key, free_port, start_serve, stop
from tests.sqlite.database_file import exported

pytestmark = pytest.mark.asyncio

CALLERS = 50
SECONDS = 20.0
NAMES = [f"{area}.{verb}" for area in ("docs", "users", "billing", "audit") for verb in ("read", "write", "admin")]


@dataclass(frozen=True)
class Outcome:
    rpc: str
    request_id: str
    code: grpc.StatusCode
    revision: int = 0
    message: str = ""


@dataclass
class World:
    apis: list[str]
    keys: list[str]
    roles: list[tuple[str, str, str]]  # (role id, api id, name)
    key_api: dict[str, str]


async def _seed(admin: Caller) -> World:
    world = World([], [], [], {})
    for n in range(2):
        api = await admin.make_api(NAMES[:6], name=f"api {n}")
        world.apis.append(api.id)
        for r in range(2):
            role = await admin.make_role(api.id, f"role{r}", NAMES[r : r + 2])
            world.roles.append((role.id, api.id, role.name))
        for k in range(5):
            key, _ = await admin.make_key(api.id, NAMES[k : k + 2])
            world.keys.append(key.id)
            world.key_api[key.id] = api.id
    return world


def _request(rng: random.Random, world: World) -> tuple[str, str, Message]:
    names = rng.sample(NAMES, rng.randint(0, 4))
    roll = rng.random()
    if roll < 0.45:
        return (
            "keys",
            "SetPermissions",
            keys_pb2.SetPermissionsRequest(key_id=rng.choice(world.keys), permissions=names),
        )
    if roll < 0.7:
        key_id = rng.choice(world.keys)
        roles = [name for _, api_id, name in world.roles if api_id == world.key_api[key_id]]
        return "keys", "SetRoles", keys_pb2.SetRolesRequest(key_id=key_id, roles=rng.sample(roles, rng.randint(0, 2)))
    if roll < 0.9:
        role_id = rng.choice(world.roles)[0]
        return "roles", "SetRolePermissions", roles_pb2.SetRolePermissionsRequest(role_id=role_id, permissions=names)
    scopes = [permissions_pb2.Scope(value=v, description=rng.choice(["", "x"])) for v in rng.sample(NAMES, 8)]
    return "apis", "UpdateScopes", apis_pb2.UpdateScopesRequest(api_id=rng.choice(world.apis), scopes=scopes)


async def _caller(admin: Caller, world: World, number: int, end: float) -> list[Outcome]:
    rng = random.Random(number)
    outcomes: list[Outcome] = []
    sequence = 0
    while time.monotonic() < end:
        stub, rpc, request = _request(rng, world)
        request_id = f"c{number}-{sequence}"
        sequence += 1
        try:
            response = await getattr(getattr(admin, stub), rpc)(
                request, metadata=(*admin.md, ("x-request-id", request_id)), timeout=10
            )
            outcomes.append(Outcome(rpc, request_id, grpc.StatusCode.OK, response.revision))
        except grpc.aio.AioRpcError as error:
            outcomes.append(Outcome(rpc, request_id, error.code(), message=error.details() or ""))
    return outcomes


async def test_ok_two_workers_fifty_callers_the_audit_trail_replays_to_the_final_state(tmp_path: Path) -> None:
    db, port = tmp_path / "keyscope.db", free_port()
    secret = create_root_key(tmp_path, db, *EXAMPLE_ROOT_KEY)
    log = tmp_path / "server.log"
    server = start_serve(tmp_path, db, port, "--workers", "2", log=log)
    try:
        # start_serve saw one worker answer; connections made before the other listens would all go to the first.
        await until(lambda: log.read_text().count("keyscope serving on") == 2, "both workers serving")
        # Several connections, which the kernel spreads over the two workers (SO_REUSEPORT).
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(8)
        ]
        callers = [Caller(channel, secret, "") for channel in channels]
        world = await _seed(callers[0])
        end = time.monotonic() + SECONDS
        results = await asyncio.gather(*(_caller(callers[n % len(callers)], world, n, end) for n in range(CALLERS)))
        outcomes = [o for result in results for o in result]
        events = await all_events(callers[0], page_size=1000)
        for channel in channels:
            await channel.close()
    finally:
        code, _ = stop(server, signal.SIGTERM)
    assert code == 0

    by_request = Counter(e.request_id for e in events)
    revision_of = {e.request_id: e.revision for e in events}
    acknowledged = [o for o in outcomes if o.code == grpc.StatusCode.OK]
    failed = [o for o in outcomes if o.code != grpc.StatusCode.OK]
    assert len(acknowledged) > 500, "too little load to say anything"
    served_by = set(re.findall(r" INFO (\d+) keyscope\.rpc ", log.read_text()))
    assert len(served_by) == 2, "both workers should have served calls"
    # No "database is locked" (nor any other store error) reaches a caller; failures are only timeouts that
    # left nothing behind.
    assert not [o for o in failed if "locked" in o.message.lower()]
    assert {o.code for o in failed} <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert not [o for o in failed if o.request_id in by_request]
    # Every acknowledged write is in the trail, once, with its revision; or it changed nothing (no event).
    assert max(by_request.values()) == 1
    assert all(revision_of.get(o.request_id, o.revision) == o.revision for o in acknowledged)
    changed = sum(o.request_id in revision_of for o in acknowledged)
    assert changed > len(acknowledged) // 2
    # The trail, replayed from empty, is exactly the store.
    assert as_json(replay(events)) == as_json(store_state(await exported(db)))
    with closing(sqlite3.connect(db)) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    print(f"concurrent writers: {len(outcomes)} calls, {len(acknowledged)} acknowledged, {changed} changes replayed")
