"""The audit trail is complete: replaying it from an empty state gives exactly the store's final state.

A random workload (seeded, so a failure repeats) of every changing RPC, with
calls that fail on purpose mixed in: those must leave no event. The replay
also checks each event's `before` against the state the earlier events built.
"""

from __future__ import annotations

import random
from dataclasses import replace

import grpc
import pytest

from keyscope.v1 import apis_pb2, keys_pb2, permissions_pb2, roles_pb2
from keyscope_server.store import Store
from keyscope_server.store.audit_replay import AuditTrailMismatch, check_audit_trail
from keyscope_server.store.audit_replay import replay as replay_records
from keyscope_server.store.snapshot import StoreSnapshot
from tests.audit_replay import all_events, as_json, as_record, replay, store_state
from tests.client import Caller, from_now

pytestmark = pytest.mark.asyncio

NAMES = [f"{area}.{verb}" for area in ("docs", "users", "billing") for verb in ("read", "write", "admin")]


def _some(rng: random.Random, pool: list[str], most: int = 4) -> list[str]:
    return rng.sample(pool, rng.randint(0, min(most, len(pool))))


async def _workload(admin: Caller, rng: random.Random, steps: int) -> tuple[int, int]:
    """Random calls; how many succeeded and how many failed (on purpose)."""
    apis: list[str] = []
    keys: dict[str, str] = {}  # key id -> api id
    roles: dict[str, tuple[str, str]] = {}  # role id -> (api id, name)
    ok = failed = 0
    for step in range(steps):
        choice = rng.random()
        try:
            if step % 40 == 39 and len(apis) > 1:  # an API, with its keys and roles, now and then
                api_id = apis.pop(rng.randrange(len(apis)))
                await admin.apis.DeleteApi(apis_pb2.DeleteApiRequest(api_id=api_id), metadata=admin.md)
                keys = {k: a for k, a in keys.items() if a != api_id}
                roles = {r: held for r, held in roles.items() if held[0] != api_id}
            elif step % 20 == 9 and roles:  # a role, which its keys lose
                role_id = rng.choice(list(roles))
                await admin.roles.DeleteRole(roles_pb2.DeleteRoleRequest(role_id=role_id), metadata=admin.md)
                del roles[role_id]
            elif not apis or choice < 0.05:
                scopes = [permissions_pb2.Scope(value=v, description=f"d{step}") for v in _some(rng, NAMES)]
                apis.append((await admin.make_api([(s.value, s.description) for s in scopes], f"api {step}")).id)
            elif choice < 0.15:
                values = _some(rng, NAMES, 6)
                await admin.apis.UpdateScopes(
                    apis_pb2.UpdateScopesRequest(
                        api_id=rng.choice(apis),
                        scopes=[permissions_pb2.Scope(value=v, description=rng.choice(["", "x", "y"])) for v in values],
                    ),
                    metadata=admin.md,
                )
            elif not keys or choice < 0.3:
                api_id = rng.choice(apis)
                role_names = [name for a, name in roles.values() if a == api_id][:1]
                key, _ = await admin.make_key(api_id, _some(rng, NAMES), role_names, name=f"key {step}")
                keys[key.id] = api_id
            elif choice < 0.55:
                await admin.keys.SetPermissions(
                    keys_pb2.SetPermissionsRequest(key_id=rng.choice(list(keys)), permissions=_some(rng, NAMES, 5)),
                    metadata=admin.md,
                )
            elif choice < 0.65:
                key_id = rng.choice(list(keys))
                names = [name for a, name in roles.values() if a == keys[key_id]]
                await admin.keys.SetRoles(
                    keys_pb2.SetRolesRequest(key_id=key_id, roles=_some(rng, names, 2)), metadata=admin.md
                )
            elif choice < 0.72:
                update = keys_pb2.UpdateKeyRequest(key_id=rng.choice(list(keys)))
                if rng.random() < 0.5:
                    update.enabled = rng.random() < 0.5
                else:
                    update.expire_time.CopyFrom(from_now(rng.randint(60, 10**6)))
                await admin.keys.UpdateKey(update, metadata=admin.md)
            elif choice < 0.77:
                key_id = rng.choice(list(keys))
                await admin.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=key_id), metadata=admin.md)
                del keys[key_id]
            elif choice < 0.85:
                api_id = rng.choice(apis)
                role = await admin.make_role(api_id, f"role{step}", _some(rng, NAMES), description=f"r{step}")
                roles[role.id] = (api_id, role.name)
            elif roles and choice < 0.93:
                await admin.roles.SetRolePermissions(
                    roles_pb2.SetRolePermissionsRequest(role_id=rng.choice(list(roles)), permissions=_some(rng, NAMES)),
                    metadata=admin.md,
                )
            else:  # calls that fail, each in its own way, after validation
                fail = rng.choice(["etag", "role", "dry-run"])
                key_id = rng.choice(list(keys))
                if fail == "etag":
                    request = keys_pb2.SetPermissionsRequest(key_id=key_id, permissions=["docs.read"], etag="r0")
                elif fail == "role":
                    request = keys_pb2.SetPermissionsRequest(key_id=key_id, permissions=["docs.read"])
                    unknown_role = keys_pb2.SetRolesRequest(key_id=key_id, roles=["nope"])
                    await admin.keys.SetRoles(unknown_role, metadata=admin.md)
                else:
                    request = keys_pb2.SetPermissionsRequest(
                        key_id=key_id, permissions=["new.from.dry.run"], validate_only=True
                    )
                    await admin.keys.SetPermissions(request, metadata=admin.md)
                    failed += 1  # written nothing, on purpose
                    continue
                await admin.keys.SetPermissions(request, metadata=admin.md)
                raise AssertionError(f"{fail} should have failed")
            ok += 1
        except grpc.aio.AioRpcError as error:
            assert error.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND), error
            failed += 1
    return ok, failed


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_ok_replaying_the_audit_trail_rebuilds_the_store(admin: Caller, store: Store, seed: int) -> None:
    ok, failed = await _workload(admin, random.Random(seed), steps=160)

    events = await all_events(admin)
    rebuilt = replay(events)

    assert failed > 5 and ok > 100
    assert {"DeleteApi", "DeleteRole"} <= {e.action for e in events}  # the deletions' side effects replayed too
    snapshot = await store.export_snapshot()
    assert as_json(rebuilt) == as_json(store_state(snapshot))
    # What clients read is what the store keeps (so the store's own replay, over its records, sees the same).
    assert [as_record(e) for e in events] == list(snapshot.audit_events)
    # One event per change, none for the calls that failed or only validated; every revision accounted for
    # (the admin root key's creation is one more, from the command line).
    revisions = [e.revision for e in events]
    assert len(revisions) == len(set(revisions))
    assert {e.actor for e in events} == {admin.root_key_id, "cli"}
    assert set(revisions) == set(range(1, max(revisions) + 1))


async def test_ok_replay_after_deleting_a_role_and_an_api(admin: Caller, store: Store) -> None:
    # A deletion's one event stands for more: a role's place among its keys' roles, an API's keys and roles.
    # Roles of the same name in other APIs, and the keys that have them, stay.
    kept, other, gone = [await admin.make_api(["docs.read", "docs.write"], name) for name in ("kept", "other", "gone")]
    reader = await admin.make_role(kept.id, "reader", ["docs.read"])
    await admin.make_role(kept.id, "writer", ["docs.write"])
    await admin.make_role(other.id, "reader", ["docs.read"])
    await admin.make_role(gone.id, "reader", ["docs.read"])
    key, _ = await admin.make_key(kept.id, ["docs.write"], ["reader", "writer"])
    await admin.make_key(other.id, roles=["reader"])
    await admin.make_key(gone.id, ["docs.read"], ["reader"])

    await admin.roles.DeleteRole(roles_pb2.DeleteRoleRequest(role_id=reader.id), metadata=admin.md)
    await admin.apis.DeleteApi(apis_pb2.DeleteApiRequest(api_id=gone.id), metadata=admin.md)
    # Later events' `before` must agree with what the deletions left: a new role of the old name, given to the key.
    await admin.make_role(kept.id, "reader", ["docs.write"])
    await admin.keys.AddRoles(keys_pb2.AddRolesRequest(key_id=key.id, roles=["reader"]), metadata=admin.md)

    events = await all_events(admin)
    snapshot = await store.export_snapshot()
    assert [e.action for e in events[-4:]] == ["DeleteRole", "DeleteApi", "CreateRole", "AddRoles"]
    assert as_json(replay(events)) == as_json(store_state(snapshot))
    check_audit_trail(snapshot)


# -- mismatch: the replay names where a trail goes wrong ------------------------------------------


async def _key_with_history(admin: Caller, store: Store) -> tuple[str, StoreSnapshot]:
    """A key created, then given other permissions of its API's catalog: its id, and the store's snapshot."""
    api = await admin.make_api(["docs.read", "docs.write"])
    key, _ = await admin.make_key(api.id, ["docs.read"])
    await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["docs.write"]), metadata=admin.md
    )
    snapshot = await store.export_snapshot()
    check_audit_trail(snapshot)  # whole, it replays
    return key.id, snapshot


async def test_mismatch_a_lost_event_is_named_by_the_first_event_it_contradicts(admin: Caller, store: Store) -> None:
    key_id, snapshot = await _key_with_history(admin, store)
    created, updated = [e for e in snapshot.audit_events if e.resource_id == key_id]

    with pytest.raises(AuditTrailMismatch) as mismatch:
        check_audit_trail(replace(snapshot, audit_events=tuple(e for e in snapshot.audit_events if e != created)))

    assert str(mismatch.value).startswith(
        f"revision {updated.revision} (SetPermissions key {key_id}): the event says before {created.after}, the "
        "trail so far built None"
    )


async def test_mismatch_a_lost_last_event_is_named_by_the_resource_it_leaves_behind(
    admin: Caller, store: Store
) -> None:
    key_id, snapshot = await _key_with_history(admin, store)
    created, updated = [e for e in snapshot.audit_events if e.resource_id == key_id]

    with pytest.raises(AuditTrailMismatch) as mismatch:
        check_audit_trail(replace(snapshot, audit_events=snapshot.audit_events[:-1]))

    assert updated == snapshot.audit_events[-1]
    rebuilt, held = str(mismatch.value).split(", the store holds ")
    assert rebuilt.startswith(f"keys {key_id} (its last event is revision {created.revision}): the trail rebuilds")
    assert "'permissions': ['docs.read']" in rebuilt and "'permissions': ['docs.write']" in held


async def test_mismatch_events_out_of_order_are_refused(admin: Caller, store: Store) -> None:
    _, snapshot = await _key_with_history(admin, store)
    first, second = snapshot.audit_events[:2]

    with pytest.raises(AuditTrailMismatch, match=f"^revision {first.revision} .*: out of order"):
        replay_records([second, first])
