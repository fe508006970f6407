"""The SQL of the store-wide revision (one row, `meta`) and of the change log (`changes`)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from keyscope_server.store.changes import CHANGES_KEPT
from keyscope_server.store.engine import ChangeRecord, ChangesSince
from keyscope_server.store.sqlite.audit import insert_events
from keyscope_server.store.sqlite.connection import fetch_all, fetch_one
from keyscope_server.store.sqlite.links import LINK_TABLES, TOUCHED_TABLES, replace_links, touch

__all__ = ["SqliteChanges", "changes_since"]


def changes_since(db: sqlite3.Connection, revision: int) -> ChangesSince:
    """One statement, hence one snapshot without a transaction around it: it runs on the event loop's thread
    whenever another connection has committed."""
    rows = fetch_all(
        db,
        "SELECT m.revision, c.revision, c.kind, c.id FROM meta m"
        " LEFT JOIN changes c ON c.revision > ? AND c.revision <= m.revision ORDER BY c.revision",
        (revision,),
    )
    current = int(rows[0][0])
    changes = [(r, kind, id_) for _, r, kind, id_ in rows if r is not None]
    return ChangesSince(current, revision >= current - CHANGES_KEPT, changes)


class SqliteChanges:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def revision(self) -> int:
        row = fetch_one(self._db, "SELECT revision FROM meta")
        assert row is not None
        return int(row[0])

    async def page_token_key(self) -> bytes:
        row = fetch_one(self._db, "SELECT page_token_key FROM meta")
        assert row is not None
        return bytes(row[0])

    async def record(self, change: ChangeRecord) -> int:
        db = self._db
        for links in change.replaced:
            replace_links(db, LINK_TABLES[links.kind], links.owner_id, links.target_ids)
        # The writer's transaction (BEGIN IMMEDIATE) holds SQLite's write lock: revisions commit in their order.
        row = fetch_one(db, "UPDATE meta SET revision = revision + 1 RETURNING revision")
        assert row is not None
        revision = int(row[0])
        if change.cached:
            db.executemany(
                "INSERT INTO changes (revision, kind, id) VALUES (?, ?, ?)", [(revision, *c) for c in change.cached]
            )
        for resource_type, ids in change.touched.items():
            touch(db, TOUCHED_TABLES[resource_type], ids, revision, change.now)
        insert_events(db, [replace(change.event, revision=revision)])
        return revision

    async def prune(self, through_revision: int) -> None:
        fetch_all(self._db, "DELETE FROM changes WHERE revision <= ?", (through_revision,))
