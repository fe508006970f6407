"""What the writes of a batch read first (engine.FirstRead), read for the whole batch in one round trip.

A write's rule begins by reading its key (KeyTable.current): on a database
across a network that is a round trip of its own, made while the batch holds
the revision lock, so every write waits for it. Read ahead, after the lock is
taken, the keys of every write of the batch come in one round trip, and a rule
gets its key from here. An entry is handed out once, and only while no change
recorded in the batch since could have changed it (a change to the key, or to
its API: its catalog, its roles); otherwise the rule reads the key itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import asyncpg

from keyscope_server.store.engine import ChangeRecord, Current, FirstRead
from keyscope_server.store.postgresql.apis import by_name
from keyscope_server.store.postgresql.keys import KEY_STATE, key_state
from keyscope_server.store.states import KeyState

__all__ = ["ReadAhead"]

# Per key asked for: its position, API, etag revision, the catalog entries named for it (the names of all the
# keys are one array, $4, each key's the slice of it from $2 to $3), and its state. The OFFSET 0 and LIMIT 1 keep
# the planner from folding the subqueries into the query: the slice is cut once a key, not once a catalog entry,
# and each key is found by its index, not by a scan of every key to join with.
_READ_KEYS = (
    "SELECT w.n, k.api_id, k.etag_revision,"
    " ARRAY(SELECT ROW(p.id, p.name, p.description) FROM permissions p"
    "  WHERE p.api_id = k.api_id AND p.name = ANY(w.names)),"
    f" {KEY_STATE}"
    " FROM (SELECT u.n, u.key_id, ($4::text[])[u.first:u.last] AS names"
    "  FROM unnest($1::text[], $2::int[], $3::int[]) WITH ORDINALITY AS u (key_id, first, last, n) OFFSET 0) w"
    " CROSS JOIN LATERAL (SELECT * FROM keys WHERE keys.id = w.key_id LIMIT 1) k"
)


class ReadAhead:
    def __init__(self, found: dict[FirstRead, Current[KeyState] | None]) -> None:
        self._found = found

    @classmethod
    async def read(cls, conn: asyncpg.Connection, wanted: Sequence[FirstRead]) -> ReadAhead:
        """The keys `wanted` as the transaction sees them now (it holds the revision lock: no one else writes)."""
        distinct = list(dict.fromkeys(wanted))
        if not distinct:
            return cls({})
        names = [name for read in distinct for name in read.permission_names]
        last = list(itertools.accumulate(len(read.permission_names) for read in distinct))
        first = [end - len(read.permission_names) + 1 for end, read in zip(last, distinct, strict=True)]
        rows = await conn.fetch(_READ_KEYS, [read.key_id for read in distinct], first, last, names)
        found: dict[FirstRead, Current[KeyState] | None] = dict.fromkeys(distinct)  # None: no such key
        for row in rows:
            found[distinct[row[0] - 1]] = Current(str(row[1]), int(row[2]), key_state(row[4:]), by_name(row[3]))
        return cls(found)

    def take(self, key_id: str, permission_names: Sequence[str]) -> tuple[bool, Current[KeyState] | None]:
        """(True, the key as read ahead: None if there is no such key), or (False, None): read it."""
        read = FirstRead(key_id, tuple(permission_names))
        if read not in self._found:
            return False, None
        return True, self._found.pop(read)

    def forget(self, change: ChangeRecord) -> None:
        """Drop what `change` may have made stale."""
        if not self._found:
            return
        keys = set(change.touched.get("key", ())) | {i for kind, i in change.cached if kind == "key"}
        apis = set(change.touched.get("api", ())) | {i for kind, i in change.cached if kind == "api"}
        for read, current in list(self._found.items()):
            if read.key_id in keys or current is None or current.api_id in apis:
                del self._found[read]
