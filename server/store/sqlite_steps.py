"""The SQL steps that the store's operations are made of.

Plain sqlite3, run on the connection's own thread. Each takes the connection of
an open transaction; none begins or ends one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from server import access
from server.access import Principal
from server.credentials import new_id
from server.errors import EtagMismatch, NotFound, PermissionDenied, RevisionNotReached, StoreFull, StoreUnavailable
from server.store.models import ApiRecord, KeyRecord, PermissionEntry, RoleRecord
from server.store.sqlite_schema import LATEST_VERSION, MIGRATIONS

__all__ = [
    "CHANGES_KEPT",
    "DryRun",
    "as_json",
    "authorize_api",
    "authorize_key",
    "authorize_role",
    "bump_revision",
    "current_revision",
    "etag_of",
    "fetch_all",
    "fetch_one",
    "grantees",
    "insert_permissions",
    "link",
    "load_api",
    "load_direct_permissions",
    "load_key",
    "load_roles",
    "migrate",
    "now_ms",
    "replace_links",
    "require_revision",
    "resolve_permissions",
    "resolve_roles",
    "rollback",
    "store_faults",
]

log = logging.getLogger("server.store.sqlite_store")

Row = tuple[Any, ...]


def now_ms() -> int:
    return int(time.time() * 1000)


def as_json(values: Sequence[Any]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


class _StoreFaults:
    """The context of `store_faults`: a class rather than a generator, as it wraps every VerifyKey's catch-up."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object) -> None:
        if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.IntegrityError):
            return  # no exception, not SQLite's, or a constraint violation (a bug): it goes on as it is
        log.warning("store failure: %s: %s", type(exc).__name__, exc)
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise StoreFull() from exc
        raise StoreUnavailable() from exc


_STORE_FAULTS = _StoreFaults()


def store_faults() -> _StoreFaults:
    """Turn SQLite's operational failures into StoreFull (no room to write) or StoreUnavailable; constraint
    violations are bugs."""
    return _STORE_FAULTS


def fetch_all(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    return db.execute(sql, params).fetchall()


def fetch_one(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Row | None:
    rows = fetch_all(db, sql, params)
    return rows[0] if rows else None


def rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


# -- schema ------------------------------------------------------------------------


def migrate(db: sqlite3.Connection) -> None:
    # Another process may be migrating too: read the version inside SQLite's write lock.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = (fetch_all(db, "PRAGMA user_version"))[0][0]
        if version > LATEST_VERSION:
            raise StoreUnavailable(
                f"the database has schema version {version}, newer than this server "
                f"knows ({LATEST_VERSION}); upgrade the server"
            )
        for number in range(version + 1, LATEST_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            log.info("store schema migrated to version %d", number)
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


# -- steps shared by the operations ---------------------------------------------------


class DryRun(Exception):
    """Raised by an operation asked only to validate (validate_only), with the answer it would give: the batch
    rolls back the operation's savepoint and answers `result` (server.store.sqlite_batches)."""

    def __init__(self, result: Any) -> None:
        super().__init__("validate_only")
        self.result = result


CHANGES_KEPT = 100_000  # revisions of the change log kept; a cache further behind starts afresh


def bump_revision(db: sqlite3.Connection, *changed: tuple[str, str]) -> int:
    """Count one change of the store, and log what it changed that caches may hold: ("key", key_id),
    ("api", api_id) for every key of an API, ("root", root_key_id)."""
    row = fetch_one(db, "UPDATE meta SET revision = revision + 1 RETURNING revision")
    assert row is not None
    revision = int(row[0])
    if changed:
        db.executemany("INSERT INTO changes (revision, kind, id) VALUES (?, ?, ?)", [(revision, *c) for c in changed])
        if revision % 1000 == 0:  # prune now and then; what is kept only grows by 1000 revisions
            fetch_all(db, "DELETE FROM changes WHERE revision <= ?", (revision - CHANGES_KEPT,))
    return revision


def current_revision(db: sqlite3.Connection) -> int:
    row = fetch_one(db, "SELECT revision FROM meta")
    assert row is not None
    return int(row[0])


def require_revision(current: int, min_revision: int) -> None:
    """A read's snapshot must be at `min_revision` or later."""
    if current < min_revision:
        raise RevisionNotReached(min_revision, current)


def authorize_api(
    db: sqlite3.Connection, principal: Principal, action: access.Action, api_id: str, sent_etag: str = ""
) -> str:
    """The API's etag, once the caller may act on the API (and `sent_etag`, if any, is still its etag)."""
    hidden = NotFound("api", [api_id])
    row = fetch_one(db, "SELECT etag_revision FROM apis WHERE id = ?", (api_id,))
    if row is None:
        raise hidden
    principal.authorize(action, api_id, hidden)
    return _current_etag("api", api_id, row[0], sent_etag)


def authorize_key(
    db: sqlite3.Connection, principal: Principal, action: access.Action, key_id: str, sent_etag: str = ""
) -> tuple[str, str]:
    """The key's API id and etag, once the caller may act on the key (and `sent_etag`, if any, is its etag)."""
    return _authorize_in_api(db, principal, action, "keys", "key", key_id, sent_etag)


def authorize_role(
    db: sqlite3.Connection, principal: Principal, action: access.Action, role_id: str, sent_etag: str = ""
) -> tuple[str, str]:
    """The role's API id and etag, once the caller may act on the role (and `sent_etag`, if any, is its etag)."""
    return _authorize_in_api(db, principal, action, "roles", "role", role_id, sent_etag)


def _authorize_in_api(
    db: sqlite3.Connection,
    principal: Principal,
    action: access.Action,
    table: str,
    kind: str,
    row_id: str,
    sent_etag: str,
) -> tuple[str, str]:
    hidden = NotFound(kind, [row_id])
    row = fetch_one(db, f"SELECT api_id, etag_revision FROM {table} WHERE id = ?", (row_id,))
    if row is None:
        raise hidden
    principal.authorize(action, row[0], hidden)
    return str(row[0]), _current_etag(kind, row_id, row[1], sent_etag)


def _current_etag(kind: str, row_id: str, etag_revision: int, sent: str) -> str:
    # Checked after authorization: a caller that may not act on a resource learns nothing of its etag.
    current = etag_of(etag_revision)
    if sent and sent != current:
        raise EtagMismatch(kind, row_id, sent, current)
    return current


def insert_permissions(
    db: sqlite3.Connection, api_id: str, entries: Sequence[tuple[str, str]], now: int
) -> list[PermissionEntry]:
    created = [PermissionEntry(new_id("perm"), name, description) for name, description in entries]
    if created:
        fetch_all(
            db,
            "INSERT INTO permissions (id, api_id, name, description, created_at)"
            " SELECT j.value ->> 0, ?, j.value ->> 1, j.value ->> 2, ? FROM json_each(?) AS j",
            (api_id, now, as_json([[p.id, p.name, p.description] for p in created])),
        )
    return created


def _named(
    db: sqlite3.Connection, table: str, columns: str, api_id: str, names: Sequence[str]
) -> tuple[dict[str, Row], list[str]]:
    """An API's permissions or roles by name (`columns`, the second being the name), and the names it does not
    have (once each, in order)."""
    rows = fetch_all(
        db,
        f"SELECT {columns} FROM {table} WHERE api_id = ? AND name IN (SELECT value FROM json_each(?))",
        (api_id, as_json(names)),
    )
    found = {row[1]: row for row in rows}
    return found, [name for name in dict.fromkeys(names) if name not in found]


def resolve_permissions(
    db: sqlite3.Connection, principal: Principal, api_id: str, names: Sequence[str], now: int
) -> tuple[list[PermissionEntry], tuple[PermissionEntry, ...]]:
    """The named catalog entries (once each, in order), creating the unknown ones if the caller may; and those
    it created."""
    if not names:
        return [], ()
    rows, unknown = _named(db, "permissions", "id, name, description", api_id, names)
    found = {name: PermissionEntry(*row) for name, row in rows.items()}
    created: list[PermissionEntry] = []
    if unknown:
        required = access.CREATE_PERMISSION.permission(api_id)
        if not principal.allows(required):
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise PermissionDenied(
                required,
                reason="PERMISSIONS_NOT_IN_CATALOG",
                subjects=unknown,
                message=f"not in the API's catalog: {shown}; creating them needs {required}",
            )
        created = insert_permissions(db, api_id, [(name, "") for name in unknown], now)
        found.update((p.name, p) for p in created)
    return [found[name] for name in dict.fromkeys(names)], tuple(created)


def resolve_roles(db: sqlite3.Connection, api_id: str, names: Sequence[str]) -> list[str]:
    if not names:
        return []
    rows, unknown = _named(db, "roles", "id, name", api_id, names)
    if unknown:
        raise NotFound("role", unknown)
    return [rows[name][0] for name in dict.fromkeys(names)]


def link(
    db: sqlite3.Connection,
    table: str,
    owner_column: str,
    target_column: str,
    owner_id: str,
    target_ids: Sequence[str],
) -> None:
    # executemany: measured at half the time of one INSERT ... SELECT FROM json_each for a few rows.
    db.executemany(
        f"INSERT INTO {table} ({owner_column}, {target_column}) VALUES (?, ?)",
        [(owner_id, target_id) for target_id in target_ids],
    )


def replace_links(
    db: sqlite3.Connection,
    table: str,
    owner_column: str,
    target_column: str,
    owner_id: str,
    target_ids: Sequence[str],
) -> bool:
    """Make the owner's links exactly `target_ids`; True if that changed anything."""
    # Replacing is the common case: delete and learn the old links in one statement.
    old = fetch_all(db, f"DELETE FROM {table} WHERE {owner_column} = ? RETURNING {target_column}", (owner_id,))
    link(db, table, owner_column, target_column, owner_id, target_ids)
    return {r[0] for r in old} != set(target_ids)


def grantees(db: sqlite3.Connection, permission_ids_json: str) -> tuple[list[str], list[str]]:
    """The ids of the keys and of the roles holding any of these permissions directly."""
    keys = fetch_all(
        db,
        "SELECT DISTINCT key_id FROM key_permissions WHERE permission_id IN (SELECT value FROM json_each(?))",
        (permission_ids_json,),
    )
    roles = fetch_all(
        db,
        "SELECT DISTINCT role_id FROM role_permissions WHERE permission_id IN (SELECT value FROM json_each(?))",
        (permission_ids_json,),
    )
    return [r[0] for r in keys], [r[0] for r in roles]


def etag_of(revision: int) -> str:
    """A resource's etag: opaque to callers, made of the revision at which the resource last changed."""
    return f"r{revision}"


# -- loading whole resources --------------------------------------------------------------


def load_api(db: sqlite3.Connection, api_id: str) -> ApiRecord:
    row = fetch_one(db, "SELECT id, name, created_at, updated_at, etag_revision FROM apis WHERE id = ?", (api_id,))
    if row is None:
        raise NotFound("api", [api_id])
    scopes = tuple(
        PermissionEntry(*r)
        for r in fetch_all(
            db, "SELECT id, name, description FROM permissions WHERE api_id = ? ORDER BY name", (api_id,)
        )
    )
    return ApiRecord(row[0], row[1], scopes, row[2], row[3], etag_of(row[4]))


def load_roles(db: sqlite3.Connection, role_ids: Sequence[str]) -> list[RoleRecord]:
    ids = as_json(role_ids)
    grants: dict[str, list[PermissionEntry]] = {role_id: [] for role_id in role_ids}
    for r in fetch_all(
        db,
        "SELECT rp.role_id, p.id, p.name, p.description FROM role_permissions rp"
        " JOIN permissions p ON p.id = rp.permission_id"
        " WHERE rp.role_id IN (SELECT value FROM json_each(?)) ORDER BY p.name",
        (ids,),
    ):
        grants[r[0]].append(PermissionEntry(r[1], r[2], r[3]))
    rows = fetch_all(
        db,
        "SELECT id, api_id, name, description, created_at, updated_at, etag_revision FROM roles"
        " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY name",
        (ids,),
    )
    if len(rows) != len(grants):
        raise NotFound("role", [role_id for role_id in role_ids if role_id not in {r[0] for r in rows}])
    return [RoleRecord(r[0], r[1], r[2], r[3], tuple(grants[r[0]]), r[4], r[5], etag_of(r[6])) for r in rows]


def load_direct_permissions(db: sqlite3.Connection, key_id: str) -> tuple[PermissionEntry, ...]:
    rows = fetch_all(
        db,
        "SELECT p.id, p.name, p.description FROM key_permissions kp"
        " JOIN permissions p ON p.id = kp.permission_id WHERE kp.key_id = ? ORDER BY p.name",
        (key_id,),
    )
    return tuple(PermissionEntry(*r) for r in rows)


def load_key(db: sqlite3.Connection, key_id: str) -> KeyRecord:
    row = fetch_one(
        db,
        "SELECT id, api_id, name, start, enabled, expires_at, created_at, updated_at, etag_revision"
        " FROM keys WHERE id = ?",
        (key_id,),
    )
    if row is None:
        raise NotFound("key", [key_id])
    permissions = load_direct_permissions(db, key_id)
    role_ids = [r[0] for r in fetch_all(db, "SELECT role_id FROM key_roles WHERE key_id = ?", (key_id,))]
    roles = tuple(load_roles(db, role_ids)) if role_ids else ()
    return KeyRecord(
        row[0], row[1], row[2], row[3], bool(row[4]), row[5], permissions, roles, row[6], row[7], etag_of(row[8])
    )
