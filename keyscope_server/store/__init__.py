"""Persistence behind one interface (`Store`): the rules in this package, the SQL in one package per engine
(`sqlite/`, the embedded default; `postgresql/`, for several servers on one database); `open_store` picks the
engine a `--db` value names."""

from keyscope_server.store.engines import open_store, prepare_store
from keyscope_server.store.interface import Store

__all__ = ["Store", "open_store", "prepare_store"]
