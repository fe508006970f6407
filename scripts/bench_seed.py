"""The benchmark's database: one API, its catalog, roles and `keys` keys, and what the load needs to know of them.

The schema and the root key go through the store (`SqliteStore.open`, `create_root_key`); the rest is bulk-inserted
with sqlite3 in one transaction. Key secrets live only in memory (`Workload`), never on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from server.credentials import ROOT_KEY_PREFIX, hash_secret, new_id, new_secret, secret_start
from server.store import SqliteStore

__all__ = ["CATALOG", "Workload", "copy_database", "seed"]

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
SEED_CACHE_KIB = 512 * 1024


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


async def _create_schema_and_root_key(path: Path) -> str:
    secret = new_secret(ROOT_KEY_PREFIX)
    store = await SqliteStore.open(path)
    try:
        await store.create_root_key("bench", hash_secret(secret), ROOT_PERMISSIONS)
    finally:
        await store.close()
    return secret


def seed(path: Path, keys: int) -> Workload:
    """A database with one API, its catalog, roles, and `keys` keys: a quarter with a role, each with 3 direct
    permissions (always documents.read), so that the query's answer varies from key to key."""
    root_secret = asyncio.run(_create_schema_and_root_key(path))
    rng = random.Random(1)
    permission_ids = {name: new_id("perm") for name in CATALOG}
    role_ids = [new_id("role") for _ in ROLES]
    secrets = [new_secret(KEY_PREFIX) for _ in range(keys)]
    key_ids = [new_id("key") for _ in range(keys)]
    key_roles = [(i // 4) % len(ROLES) if i % 4 == 0 else -1 for i in range(keys)]
    now = int(time.time() * 1000)
    api_id = new_id("api")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA cache_size = -{SEED_CACHE_KIB}")  # the indexes take random inserts
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO apis (id, name, created_at, updated_at) VALUES (?, 'bench', ?, ?)", (api_id, now, now))
        db.executemany(
            "INSERT INTO permissions (id, api_id, name, created_at) VALUES (?, ?, ?, ?)",
            ((pid, api_id, name, now) for name, pid in permission_ids.items()),
        )
        db.executemany(
            "INSERT INTO roles (id, api_id, name, description, created_at, updated_at) VALUES (?, ?, ?, '', ?, ?)",
            ((rid, api_id, name, now, now) for rid, name in zip(role_ids, ROLES, strict=True)),
        )
        db.executemany(
            "INSERT INTO role_permissions (role_id, permission_id) VALUES (?, ?)",
            ((rid, permission_ids[p]) for rid, names in zip(role_ids, ROLES.values(), strict=True) for p in names),
        )
        db.executemany(
            "INSERT INTO keys (id, api_id, secret_hash, start, name, enabled, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
            (
                (kid, api_id, hash_secret(s), secret_start(s, KEY_PREFIX), f"key {i}", now, now)
                for i, (kid, s) in enumerate(zip(key_ids, secrets, strict=True))
            ),
        )
        db.executemany(
            "INSERT INTO key_permissions (key_id, permission_id) VALUES (?, ?)",
            (
                (kid, permission_ids[name])
                for kid in key_ids
                for name in ("documents.read", *rng.sample(CATALOG[1:], 2))
            ),
        )
        db.executemany(
            "INSERT INTO key_roles (key_id, role_id) VALUES (?, ?)",
            ((kid, role_ids[role]) for kid, role in zip(key_ids, key_roles, strict=True) if role >= 0),
        )
        db.execute("UPDATE meta SET revision = revision + 1")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Workload(
        root_secret,
        key_ids,
        secrets,
        key_roles,
        [frozenset(names) for names in ROLES.values()],
        list(permission_ids.values()),
    )


def copy_database(source: Path, target: Path) -> None:
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
