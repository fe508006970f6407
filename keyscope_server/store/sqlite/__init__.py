"""The SQLite engine: the embedded default. Its SQL, one module per resource, its transactions and connections."""

from keyscope_server.store.sqlite.engine import SqliteEngine

__all__ = ["SqliteEngine"]
