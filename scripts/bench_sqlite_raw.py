"""The `sqlite-raw` scenario: the SQLite engine's ceiling, SetPermissions' transaction with plain sqlite3 and no gRPC.

Engine-specific by design: it measures what SQLite itself can do on this machine, beside which the server's figures
are read. It runs on a copy of the seeded database, so that the server's own file is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench_load import NAMES_PER_WRITE, summarize
from bench_seed import Workload

__all__ = ["SQLITE_VERSION", "copy_database", "measure_sqlite_raw"]

SQLITE_VERSION = sqlite3.sqlite_version

AUDIT_STATE = json.dumps(
    {"enabled": True, "expire_time": None, "name": "bench key", "permissions": ["documents.read"] * 5, "roles": []}
)


def measure_sqlite_raw(path: Path, workload: Workload, seconds: float, rng: random.Random) -> dict[str, Any]:
    """SetPermissions' transaction, one at a time, in this process, for `seconds`: the key's direct permissions
    replaced, the key marked changed (etag), the revision bumped, a change-log row and an audit event."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON", "busy_timeout = 5000"):
            db.execute(f"PRAGMA {pragma}")
        latencies: list[float] = []
        cpu_start, started = time.process_time(), time.perf_counter()
        deadline = started + seconds
        while (start := time.perf_counter()) < deadline:
            key_id = rng.choice(workload.key_ids)
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM key_permissions WHERE key_id = ?", (key_id,))
            db.executemany(
                "INSERT INTO key_permissions (key_id, permission_id) VALUES (?, ?)",
                ((key_id, pid) for pid in rng.sample(workload.permission_ids, NAMES_PER_WRITE)),
            )
            now = int(time.time() * 1000)
            revision = db.execute("UPDATE meta SET revision = revision + 1 RETURNING revision").fetchall()[0][0]
            db.execute("UPDATE keys SET updated_at = ?, etag_revision = ? WHERE id = ?", (now, revision, key_id))
            db.execute("INSERT INTO changes (revision, kind, id) VALUES (?, 'key', ?)", (revision, key_id))
            db.execute(
                "INSERT INTO audit_events (revision, time, actor, action, resource_type, resource_id, api_id,"
                " before_state, after_state, created_permissions, request_id)"
                " VALUES (?, ?, 'root_bench', 'SetPermissions', 'key', ?, 'api', ?, ?, '[]', 'req_bench')",
                (revision, now, key_id, AUDIT_STATE, AUDIT_STATE),
            )
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - start)
        return summarize(latencies, time.perf_counter() - started, time.process_time() - cpu_start)


def copy_database(source: Path, target: Path) -> None:
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
