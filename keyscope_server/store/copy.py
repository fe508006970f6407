"""Copying a whole store into an empty one, on any engines (`python -m keyscope_server migrate`), and proving the copy.

The copy is the source's snapshot, written into the target in one transaction
(`Store.import_snapshot`). It is proved twice: the target's snapshot equals the
source's, row for row; and the target's audit trail, replayed from empty,
rebuilds exactly what the target holds (keyscope_server.store.audit_replay). The source's
trail is checked before anything is written, so that a source whose trail does
not replay is refused with the target untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

from keyscope_server.store.audit_replay import AuditTrailMismatch, check_audit_trail
from keyscope_server.store.engines import engine_name
from keyscope_server.store.interface import Store
from keyscope_server.store.models import AuditEventRecord
from keyscope_server.store.snapshot import ImportProgress, StoreSnapshot

__all__ = ["CopyFailed", "CopyReport", "copy_store", "prove_copy", "same_database"]


class CopyFailed(Exception):
    """The copy was refused, or does not prove to be the source's; the message says which, and what the target
    holds now."""


@dataclass(frozen=True)
class CopyReport:
    """What was copied."""

    apis: int
    keys: int
    roles: int
    root_keys: int
    audit_events: int
    revision: int

    @classmethod
    def of(cls, snapshot: StoreSnapshot) -> CopyReport:
        return cls(
            apis=len(snapshot.apis),
            keys=len(snapshot.keys),
            roles=len(snapshot.roles),
            root_keys=len(snapshot.root_keys),
            audit_events=len(snapshot.audit_events),
            revision=snapshot.revision,
        )

    def summary(self) -> str:
        return (
            f"copied {self.apis} APIs, {self.keys} keys, {self.roles} roles, {self.root_keys} root keys, "
            f"{self.audit_events} audit events, at revision {self.revision}: snapshot equal, audit replay equal"
        )


def same_database(a: str, b: str) -> bool:
    """Whether two `--db` values name the same database, as far as they tell: the same SQLite file, or the same
    host, port and database name (whoever connects)."""
    if engine_name(a) != engine_name(b):
        return False
    if engine_name(a) == "sqlite":
        return os.path.realpath(a) == os.path.realpath(b)
    try:
        first, second = urlsplit(a), urlsplit(b)
        return (first.hostname, first.port or 5432, first.path) == (second.hostname, second.port or 5432, second.path)
    except ValueError:  # a port that does not parse
        return a == b


def _row_name(row: object) -> str:
    if isinstance(row, tuple):
        return str(row[0])  # a link's first id, a change's revision
    if isinstance(row, AuditEventRecord):
        return f"revision {row.revision}"
    return str(getattr(row, "id", "?"))


def _first_difference(source: StoreSnapshot, copy: StoreSnapshot) -> str:
    for part in fields(StoreSnapshot):
        mine, theirs = getattr(source, part.name), getattr(copy, part.name)
        if mine == theirs:
            continue
        if part.name == "revision":
            return f"the revision is {mine} in the source, {theirs} in the copy"
        pairs = enumerate(zip(mine, theirs, strict=False))  # one may be longer: then its first extra row differs
        at = next((i for i, (a, b) in pairs if a != b), min(len(mine), len(theirs)))
        row = mine[at] if at < len(mine) else theirs[at]
        return (
            f"{part.name}: {len(mine)} rows in the source, {len(theirs)} in the copy, the first that differs "
            f"is row {at} ({_row_name(row)})"
        )
    return "nothing"


def _differs(reason: str) -> CopyFailed:
    return CopyFailed(
        f"the copy differs from the source: {reason}. The target now holds that copy, committed in one "
        "transaction: drop the target database (or delete its file) and create it anew before migrating again"
    )


def prove_copy(source: StoreSnapshot, copy: StoreSnapshot) -> None:
    """CopyFailed unless `copy` (the target's snapshot, read after the import) is the source's, and its audit
    trail replays to what it holds."""
    if copy != source:
        raise _differs(_first_difference(source, copy))
    try:
        check_audit_trail(copy)
    except AuditTrailMismatch as exc:
        raise _differs(str(exc)) from None


async def copy_store(source: Store, target: Store, progress: ImportProgress | None = None) -> CopyReport:
    """Copy everything `source` holds into `target`, which must hold nothing (StoreUnavailable if it does), and
    prove the copy; `source` is only read. `progress` hears how many rows of each table are written."""
    snapshot = await source.export_snapshot()
    try:
        check_audit_trail(snapshot)
    except AuditTrailMismatch as exc:
        raise CopyFailed(
            f"the source's audit trail does not replay to what the source holds, so no copy of it can be proved: "
            f"{exc}. Nothing was written"
        ) from None
    await target.import_snapshot(snapshot, progress)
    prove_copy(snapshot, await target.export_snapshot())
    return CopyReport.of(snapshot)
