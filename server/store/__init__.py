"""Persistence behind one interface (`Store`); SQLite is the embedded default."""

from server.store.interface import Store
from server.store.sqlite_store import SqliteStore

__all__ = ["SqliteStore", "Store"]
