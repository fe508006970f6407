"""The SQL of the store-wide revision (one row, `meta`) and of the change log (`changes`).

The revision is commit-ordered: every write transaction locks the `meta` row
first (server.store.postgresql.batches) and holds it until it commits, so
revision N+1 commits after N, on every server. A reader that sees revision R
sees every change up to R; a sequence would give neither (its numbers are
taken at once and committed in any order).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from server.store.changes import CHANGES_KEPT
from server.store.engine import ChangesSince

__all__ = ["CHANGES_SINCE", "PostgresChanges", "changes_since"]

CHANGES_SINCE = (
    "SELECT m.revision, c.revision, c.kind, c.id FROM meta m"
    " LEFT JOIN changes c ON c.revision > $1 AND c.revision <= m.revision ORDER BY c.revision"
)


def changes_since(records: Sequence[asyncpg.Record], revision: int) -> ChangesSince:
    current = int(records[0][0])
    changes = [(r[1], r[2], r[3]) for r in records if r[1] is not None]
    return ChangesSince(current, revision >= current - CHANGES_KEPT, changes)


class PostgresChanges:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def revision(self) -> int:
        return int(await self._conn.fetchval("SELECT revision FROM meta"))

    async def next_revision(self) -> int:
        # The transaction has held the meta row's lock since its start (batches.BEGIN_WRITE), until its commit.
        return int(await self._conn.fetchval("UPDATE meta SET revision = revision + 1 RETURNING revision"))

    async def log(self, revision: int, changed: Sequence[tuple[str, str]]) -> None:
        await self._conn.execute(
            "INSERT INTO changes (revision, kind, id) SELECT $1, c.kind, c.id"
            " FROM unnest($2::text[], $3::text[]) AS c (kind, id)",
            revision,
            [c[0] for c in changed],
            [c[1] for c in changed],
        )

    async def prune(self, through_revision: int) -> None:
        await self._conn.execute("DELETE FROM changes WHERE revision <= $1", through_revision)
