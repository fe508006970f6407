"""The benchmark's database: one API, its catalog, roles and `keys` keys, and what the load needs to know of them.

Written in one transaction through the store's interface (`Store.import_snapshot`), so it works on any engine. Key
secrets live only in memory (`Workload`), never on disk: the store gets their hashes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_id, new_secret, secret_start
from keyscope_server.store import open_store
from keyscope_server.store.snapshot import ApiRow, KeyRow, PermissionRow, RoleRow, RootKeyRow, StoreSnapshot

__all__ = ["CATALOG", "Workload", "seed"]

CATALOG = ("documents.read", "documents.write", "admin", *(f"perm.{i}" for i in range(47)))
ROLES = {
    "reader": ("documents.read", "perm.0"),
    "writer": ("documents.read", "documents.write", "perm.1"),
    "admin": ("admin", "perm.2", "perm.3"),
}
ROOT_PERMISSIONS = ("api.*.verify_key", "api.*.update_key", "api.*.read_key", "rbac.*.create_permission")
KEY_PREFIX = "bench"
WARM_KEYS = 1000
MIXED_KEYS = 100


@dataclass(frozen=True)
class Workload:
    """What the seeded database holds that the load needs; the secrets live only in memory."""

    root_secret: str
    key_ids: list[str]
    secrets: list[str]
    key_roles: list[int]  # index into role_permissions, -1 for a key without a role
    role_permissions: list[frozenset[str]]
    permission_ids: list[str]

    @property
    def warm(self) -> int:
        """Keys [0, warm) are the verify-warm set, keys [warm, ...) the verify-cold ones."""
        return min(WARM_KEYS, len(self.key_ids) // 4)

    @property
    def mixed(self) -> int:
        """Keys [0, mixed) are the mixed scenario's: few, so that a verify often follows a write of its key."""
        return min(MIXED_KEYS, self.warm)

    def role_permissions_of(self, index: int) -> frozenset[str]:
        role = self.key_roles[index]
        return self.role_permissions[role] if role >= 0 else frozenset()


def _snapshot(keys: int, root_secret: str, rng: random.Random) -> tuple[StoreSnapshot, Workload]:
    now = int(time.time() * 1000)
    api_id = new_id("api")
    permission_ids = {name: new_id("perm") for name in CATALOG}
    role_ids = [new_id("role") for _ in ROLES]
    secrets = [new_secret(KEY_PREFIX) for _ in range(keys)]
    key_ids = [new_id("key") for _ in range(keys)]
    key_roles = [(i // 4) % len(ROLES) if i % 4 == 0 else -1 for i in range(keys)]
    root_key_id = new_id("root")
    snapshot = StoreSnapshot(
        revision=1,
        apis=(ApiRow(api_id, "bench", now, now, 1),),
        permissions=tuple(PermissionRow(pid, api_id, name, "", now) for name, pid in permission_ids.items()),
        keys=tuple(
            KeyRow(kid, api_id, hash_secret(s), secret_start(s, KEY_PREFIX), f"key {i}", True, None, now, now, 1)
            for i, (kid, s) in enumerate(zip(key_ids, secrets, strict=True))
        ),
        roles=tuple(RoleRow(rid, api_id, name, "", now, now, 1) for rid, name in zip(role_ids, ROLES, strict=True)),
        key_permissions=tuple(
            (kid, permission_ids[name]) for kid in key_ids for name in ("documents.read", *rng.sample(CATALOG[1:], 2))
        ),
        key_roles=tuple((kid, role_ids[role]) for kid, role in zip(key_ids, key_roles, strict=True) if role >= 0),
        role_permissions=tuple(
            (rid, permission_ids[p]) for rid, names in zip(role_ids, ROLES.values(), strict=True) for p in names
        ),
        root_keys=(RootKeyRow(root_key_id, "bench", hash_secret(root_secret), True, None, now),),
        root_key_permissions=tuple((root_key_id, p) for p in sorted(ROOT_PERMISSIONS)),
        changes=(),
        audit_events=(),
    )
    workload = Workload(
        root_secret,
        key_ids,
        secrets,
        key_roles,
        [frozenset(names) for names in ROLES.values()],
        list(permission_ids.values()),
    )
    return snapshot, workload


async def _import(dbs: Sequence[str], snapshot: StoreSnapshot) -> None:
    for db in dbs:
        store = await open_store(db)
        try:
            await store.import_snapshot(snapshot)
        finally:
            await store.close()


def seed(dbs: Sequence[str], keys: int) -> Workload:
    """Each of the stores `dbs` name (`--db` values, of any engine), with the same content: one API, its catalog,
    roles, a root key and `keys` keys, a quarter with a role, each with 3 direct permissions (always
    documents.read), so that the query's answer varies from key to key."""
    snapshot, workload = _snapshot(keys, new_secret(ROOT_KEY_PREFIX), random.Random(1))
    asyncio.run(_import(dbs, snapshot))
    return workload
