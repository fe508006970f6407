"""The SQLite schema, as numbered migrations (`PRAGMA user_version` records the last one applied), and
preparing a file: WAL mode and the latest schema.

Append a migration to change the schema; never edit one that has shipped.
Times are milliseconds since the Unix epoch; secrets are stored only as
SHA-256 digests.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from keyscope_server.errors import StoreUnavailable
from keyscope_server.store.sqlite.connection import connect, rollback

__all__ = ["LATEST_VERSION", "MIGRATIONS", "migrate", "prepare"]

log = logging.getLogger(__name__)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the core model.
    (
        """CREATE TABLE meta (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            revision INTEGER NOT NULL
        )""",
        "INSERT INTO meta (singleton, revision) VALUES (1, 0)",
        """CREATE TABLE root_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash BLOB NOT NULL UNIQUE,
            enabled INTEGER NOT NULL DEFAULT 1,
            expires_at INTEGER,
            created_at INTEGER NOT NULL
        )""",
        """CREATE TABLE root_key_permissions (
            root_key_id TEXT NOT NULL REFERENCES root_keys (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            PRIMARY KEY (root_key_id, name)
        ) WITHOUT ROWID""",
        """CREATE TABLE apis (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        """CREATE TABLE permissions (
            id TEXT PRIMARY KEY,
            api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            created_at INTEGER NOT NULL,
            UNIQUE (api_id, name)
        )""",
        """CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
            secret_hash BLOB NOT NULL UNIQUE,
            start TEXT NOT NULL,
            name TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            expires_at INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        "CREATE INDEX keys_by_api ON keys (api_id)",
        """CREATE TABLE roles (
            id TEXT PRIMARY KEY,
            api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE (api_id, name)
        )""",
        """CREATE TABLE key_permissions (
            key_id TEXT NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
            permission_id TEXT NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
            PRIMARY KEY (key_id, permission_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX key_permissions_by_permission ON key_permissions (permission_id)",
        """CREATE TABLE role_permissions (
            role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
            permission_id TEXT NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
            PRIMARY KEY (role_id, permission_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX role_permissions_by_permission ON role_permissions (permission_id)",
        """CREATE TABLE key_roles (
            key_id TEXT NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
            role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
            PRIMARY KEY (key_id, role_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX key_roles_by_role ON key_roles (role_id)",
    ),
    # 2: the change log: what each revision changed, for caches to catch up on (kind: key, api or root).
    (
        """CREATE TABLE changes (
            revision INTEGER NOT NULL,
            kind TEXT NOT NULL,
            id TEXT NOT NULL
        )""",
        "CREATE INDEX changes_by_revision ON changes (revision)",
    ),
    # 3: etags (the revision at which a resource last changed) and the audit trail (one event per change,
    # keyed by the revision it produced; states as JSON, never a secret).
    (
        "ALTER TABLE apis ADD COLUMN etag_revision INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE keys ADD COLUMN etag_revision INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE roles ADD COLUMN etag_revision INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE audit_events (
            revision INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            resource_type TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            api_id TEXT NOT NULL,
            before_state TEXT,
            after_state TEXT,
            created_permissions TEXT NOT NULL,
            request_id TEXT NOT NULL
        )""",
        "CREATE INDEX audit_events_by_resource ON audit_events (resource_id, revision)",
        "CREATE INDEX audit_events_by_api ON audit_events (api_id, revision)",
        "CREATE INDEX audit_events_by_actor ON audit_events (actor, revision)",
    ),
    # 4: the key that signs page tokens (keyscope_server.page_tokens): random, made once per store, so that
    # every process on the file accepts the tokens of the others. Never leaves the store but to sign.
    (
        "ALTER TABLE meta ADD COLUMN page_token_key BLOB",
        "UPDATE meta SET page_token_key = randomblob(32)",
    ),
    # 5: ListKeys pages through an API's keys in id order: an index that holds them in that order, in place of the
    # index by API alone (dropped first, so that the new one takes its pages and leaves the file no free page).
    (
        "DROP INDEX keys_by_api",
        "CREATE INDEX keys_by_api_and_id ON keys (api_id, id)",
    ),
)

LATEST_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> None:
    # Another process may be migrating too: read the version inside SQLite's write lock.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
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


def prepare(path: Path, pragmas: tuple[str, ...], timeout_seconds: float) -> None:
    """WAL mode and the latest schema, waiting out (up to `timeout_seconds`) other processes preparing the file.

    Switching a new file to WAL needs an exclusive lock, and SQLite does not call the busy handler for every
    lock that step takes: a process that opens the file while another one switches or migrates it can get
    SQLITE_BUSY at once, busy_timeout or not. Preparing is idempotent, so a busy attempt is simply made again.
    """
    deadline = time.monotonic() + timeout_seconds
    pause = 0.001
    while True:
        try:
            db = connect(path, pragmas)
            try:
                db.execute("PRAGMA journal_mode = WAL").fetchall()
                migrate(db)
            finally:
                db.close()
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
