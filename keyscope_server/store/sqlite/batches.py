"""Group commit on SQLite (keyscope_server.store.group_commit queues the writes): a batch runs in the writer process in
one `BEGIN IMMEDIATE` transaction, each write in a savepoint of its own, and commits once, with one fsync. A dry
run (validate_only) is rolled back like a failed write, and its caller gets the answer its rule gave. Batches that
wait in the writer's pipe together run as one (`run_batches`): their writes in order, one transaction, one commit;
if it fails, the writes of all of them fail."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from keyscope_server.store.sqlite.connection import rollback, run_to_end
from keyscope_server.store.sqlite.tables import SqliteTables
from keyscope_server.store.sqlite.writer import with_child_traceback

if TYPE_CHECKING:  # the writer process needs only the names, not group commit's asyncio
    from keyscope_server.store.group_commit import Outcome, Write

__all__ = ["run_batch", "run_batches"]


def run_batch(db: sqlite3.Connection, writes: list[Write]) -> list[Outcome]:
    tables = SqliteTables(db)
    outcomes: list[Outcome] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for rule, args, dry_run, _ in writes:  # reads are cheap here: none is read ahead
            db.execute("SAVEPOINT write")
            try:
                outcomes.append((True, run_to_end(rule(tables, *args))))
                if dry_run:
                    db.execute("ROLLBACK TO write")
            except Exception as exc:  # noqa: BLE001 - handed to the write's caller
                db.execute("ROLLBACK TO write")
                outcomes.append((False, with_child_traceback(exc)))
            db.execute("RELEASE write")
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise
    return outcomes


def run_batches(db: sqlite3.Connection, batches: list[tuple[list[Write]]]) -> list[list[Outcome]]:
    """Several batches, each `(writes,)` as `run_batch` takes them, in one transaction: the outcomes of each."""
    outcomes = run_batch(db, [write for (writes,) in batches for write in writes])
    split: list[list[Outcome]] = []
    for (writes,) in batches:
        split.append(outcomes[: len(writes)])
        outcomes = outcomes[len(writes) :]
    return split


setattr(run_batch, "together", run_batches)  # noqa: B010 - what the writer process looks for (writer._serve)
