"""The PostgreSQL schema, as numbered migrations (the table keyscope_schema records those applied), applied under
an advisory lock so that servers starting together on an empty database migrate it once.

Append a migration to change the schema; never edit one that has shipped. The
columns are those of the SQLite schema (keyscope_server.store.sqlite.schema) in
PostgreSQL's types; names and ids sort byte by byte (COLLATE "C"), as SQLite
and Python sort them, whatever the database's collation. Times are milliseconds
since the Unix epoch; secrets are stored only as SHA-256 digests.
"""

from __future__ import annotations

import logging

import asyncpg

from keyscope_server.errors import StoreUnavailable

__all__ = ["LATEST_VERSION", "MIGRATIONS", "migrate"]

log = logging.getLogger(__name__)

# pg_advisory_lock's key for migrations: "keyscope" in ASCII, read as a number.
MIGRATION_LOCK = 0x6B657973636F7065

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the model of SQLite's migrations 1 to 3 at once: the core, the change log, etags and the audit trail.
    (
        """CREATE TABLE meta (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            revision BIGINT NOT NULL
        )""",
        "INSERT INTO meta (singleton, revision) VALUES (1, 0)",
        """CREATE TABLE root_keys (
            id TEXT COLLATE "C" PRIMARY KEY,
            name TEXT COLLATE "C" NOT NULL,
            secret_hash BYTEA NOT NULL UNIQUE,
            enabled BOOLEAN NOT NULL DEFAULT TRUE,
            expires_at BIGINT,
            created_at BIGINT NOT NULL
        )""",
        """CREATE TABLE root_key_permissions (
            root_key_id TEXT COLLATE "C" NOT NULL REFERENCES root_keys (id) ON DELETE CASCADE,
            name TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (root_key_id, name)
        )""",
        """CREATE TABLE apis (
            id TEXT COLLATE "C" PRIMARY KEY,
            name TEXT COLLATE "C" NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            etag_revision BIGINT NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE permissions (
            id TEXT COLLATE "C" PRIMARY KEY,
            api_id TEXT COLLATE "C" NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
            name TEXT COLLATE "C" NOT NULL,
            description TEXT COLLATE "C" NOT NULL DEFAULT '',
            created_at BIGINT NOT NULL,
            UNIQUE (api_id, name)
        )""",
        """CREATE TABLE keys (
            id TEXT COLLATE "C" PRIMARY KEY,
            api_id TEXT COLLATE "C" NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
            secret_hash BYTEA NOT NULL UNIQUE,
            start TEXT COLLATE "C" NOT NULL,
            name TEXT COLLATE "C" NOT NULL,
            enabled BOOLEAN NOT NULL,
            expires_at BIGINT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            etag_revision BIGINT NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX keys_by_api ON keys (api_id)",
        """CREATE TABLE roles (
            id TEXT COLLATE "C" PRIMARY KEY,
            api_id TEXT COLLATE "C" NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
            name TEXT COLLATE "C" NOT NULL,
            description TEXT COLLATE "C" NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            etag_revision BIGINT NOT NULL DEFAULT 0,
            UNIQUE (api_id, name)
        )""",
        """CREATE TABLE key_permissions (
            key_id TEXT COLLATE "C" NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
            permission_id TEXT COLLATE "C" NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
            PRIMARY KEY (key_id, permission_id)
        )""",
        "CREATE INDEX key_permissions_by_permission ON key_permissions (permission_id)",
        """CREATE TABLE role_permissions (
            role_id TEXT COLLATE "C" NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
            permission_id TEXT COLLATE "C" NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
            PRIMARY KEY (role_id, permission_id)
        )""",
        "CREATE INDEX role_permissions_by_permission ON role_permissions (permission_id)",
        """CREATE TABLE key_roles (
            key_id TEXT COLLATE "C" NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
            role_id TEXT COLLATE "C" NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
            PRIMARY KEY (key_id, role_id)
        )""",
        "CREATE INDEX key_roles_by_role ON key_roles (role_id)",
        """CREATE TABLE changes (
            revision BIGINT NOT NULL,
            kind TEXT COLLATE "C" NOT NULL,
            id TEXT COLLATE "C" NOT NULL
        )""",
        "CREATE INDEX changes_by_revision ON changes (revision)",
        """CREATE TABLE audit_events (
            revision BIGINT PRIMARY KEY,
            time BIGINT NOT NULL,
            actor TEXT COLLATE "C" NOT NULL,
            action TEXT COLLATE "C" NOT NULL,
            resource_type TEXT COLLATE "C" NOT NULL,
            resource_id TEXT COLLATE "C" NOT NULL,
            api_id TEXT COLLATE "C" NOT NULL,
            before_state JSONB,
            after_state JSONB,
            created_permissions JSONB NOT NULL,
            request_id TEXT COLLATE "C" NOT NULL
        )""",
        "CREATE INDEX audit_events_by_resource ON audit_events (resource_id, revision)",
        "CREATE INDEX audit_events_by_api ON audit_events (api_id, revision)",
        "CREATE INDEX audit_events_by_actor ON audit_events (actor, revision)",
    ),
    # 2: the key that signs page tokens (keyscope_server.page_tokens), made once per database, so that every
    # server on it accepts the tokens of the others: 244 random bits of two gen_random_uuid() (pg_strong_random;
    # pgcrypto's gen_random_bytes is an extension a database may not have).
    (
        "ALTER TABLE meta ADD COLUMN page_token_key BYTEA",
        "UPDATE meta SET page_token_key ="
        " decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')",
        "ALTER TABLE meta ALTER COLUMN page_token_key SET NOT NULL",
    ),
    # 3: ListKeys pages through an API's keys in id order: an index that holds them in that order.
    (
        "CREATE INDEX keys_by_api_and_id ON keys (api_id, id)",
        "DROP INDEX keys_by_api",
    ),
)

LATEST_VERSION = len(MIGRATIONS)


async def migrate(conn: asyncpg.Connection) -> None:
    """Bring the database to the latest schema. Under a session advisory lock: a server that starts while
    another migrates waits for it, then finds nothing left to do."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS keyscope_schema (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM keyscope_schema")
        if version > LATEST_VERSION:
            raise StoreUnavailable(
                f"the database has schema version {version}, newer than this server "
                f"knows ({LATEST_VERSION}); upgrade the server"
            )
        for number in range(version + 1, LATEST_VERSION + 1):
            async with conn.transaction():
                for statement in MIGRATIONS[number - 1]:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO keyscope_schema (version, applied_at)"
                    " VALUES ($1, (extract(epoch FROM now()) * 1000)::bigint)",
                    number,
                )
            log.info("store schema migrated to version %d", number)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
