"""The PostgreSQL engine: several Keyscope servers on one shared database."""

from keyscope_server.store.postgresql.engine import PostgresEngine, PostgresSettings

__all__ = ["PostgresEngine", "PostgresSettings"]
