"""The SQL of the store-wide revision (one row, `meta`) and of the change log (`changes`).

The revision is commit-ordered: every write transaction locks the `meta` row
first (keyscope_server.store.postgresql.batches) and holds it until it commits, so
revision N+1 commits after N, on every server. A reader that sees revision R
sees every change up to R; a sequence would give neither (its numbers are
taken at once and committed in any order).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import asyncpg

from keyscope_server.store.audit_rows import AUDIT_COLUMNS, audit_values
from keyscope_server.store.changes import CHANGES_KEPT
from keyscope_server.store.engine import ChangeRecord, ChangesSince
from keyscope_server.store.postgresql.links import replacing
from keyscope_server.store.postgresql.read_ahead import ReadAhead

__all__ = ["CHANGES_SINCE", "PostgresChanges", "changes_since", "record_statement"]

_TOUCHED = (("api", "apis"), ("key", "keys"), ("role", "roles"))  # ChangeRecord.touched's types, their tables
_EVENT_VALUES = ", ".join(f"${n}" for n in range(7, 7 + len(AUDIT_COLUMNS) - 1))
_LINKS_FROM = 7 + len(AUDIT_COLUMNS) - 1  # the number of the first parameter of the replaced links


@functools.cache
def record_statement(replaced: tuple[str, ...]) -> str:
    """What a change records, in one statement (a round trip is what a write costs), with the links of the kinds
    `replaced` that it replaces: the revision counted, the change log's rows, the touched rows' etag and time,
    the links, the audit event. Each part writes a table of its own, as the parts of a statement see the same
    snapshot and not each other's work."""
    return (
        "WITH r AS (UPDATE meta SET revision = revision + 1 RETURNING revision),"
        " logged AS (INSERT INTO changes (revision, kind, id) SELECT r.revision, c.kind, c.id"
        " FROM r, unnest($1::text[], $2::text[]) AS c (kind, id)),"
        + "".join(
            f" touched_{table} AS (UPDATE {table} SET updated_at = $3, etag_revision = r.revision FROM r"
            f" WHERE {table}.id = ANY(${n}::text[])),"
            for n, (_, table) in enumerate(_TOUCHED, 4)
        )
        + "".join(
            replacing(kind, _LINKS_FROM + 2 * number, _LINKS_FROM + 2 * number + 1)
            for number, kind in enumerate(replaced)
        )
        + f" event AS (INSERT INTO audit_events ({', '.join(AUDIT_COLUMNS)})"
        f" VALUES ((SELECT revision FROM r), {_EVENT_VALUES}))"
        " SELECT revision FROM r"
    )


CHANGES_SINCE = (
    "SELECT m.revision, c.revision, c.kind, c.id FROM meta m"
    " LEFT JOIN changes c ON c.revision > $1 AND c.revision <= m.revision ORDER BY c.revision"
)


def changes_since(records: Sequence[asyncpg.Record], revision: int) -> ChangesSince:
    current = int(records[0][0])
    changes = [(r[1], r[2], r[3]) for r in records if r[1] is not None]
    return ChangesSince(current, revision >= current - CHANGES_KEPT, changes)


class PostgresChanges:
    def __init__(self, conn: asyncpg.Connection, ahead: ReadAhead | None = None) -> None:
        self._conn = conn
        self._ahead = ahead

    async def revision(self) -> int:
        return int(await self._conn.fetchval("SELECT revision FROM meta"))

    async def page_token_key(self) -> bytes:
        return bytes(await self._conn.fetchval("SELECT page_token_key FROM meta"))

    async def record(self, change: ChangeRecord) -> int:
        # The transaction has held the meta row's lock since its start (batches.BEGIN_WRITE), until its commit.
        if self._ahead is not None:
            self._ahead.forget(change)
        touched = [list(change.touched.get(resource_type, ())) for resource_type, _ in _TOUCHED]
        links = [value for links in change.replaced for value in (links.owner_id, list(links.target_ids))]
        return int(
            await self._conn.fetchval(
                record_statement(tuple(links.kind for links in change.replaced)),
                [c[0] for c in change.cached],
                [c[1] for c in change.cached],
                change.now,
                *touched,
                *audit_values(change.event)[1:],
                *links,
            )
        )

    async def prune(self, through_revision: int) -> None:
        await self._conn.execute("DELETE FROM changes WHERE revision <= $1", through_revision)
