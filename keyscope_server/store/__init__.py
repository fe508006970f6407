"""Persistence behind one interface (`Store`): the rules in this package, the SQL in one package per engine
(`sqlite/`, the embedded default; `postgresql/`, for several servers on one database); `open_store` picks the
engine a `--db` value names.

The three names are loaded when first asked for, not with the package: the SQLite engine's writer process imports
modules of this package, and needs neither the engines nor the interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyscope_server.store.engines import open_store, prepare_store
    from keyscope_server.store.interface import Store

__all__ = ["Store", "open_store", "prepare_store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from keyscope_server.store.interface import Store  # noqa: PLC0415 - see the docstring

        return Store
    if name in ("open_store", "prepare_store"):
        from keyscope_server.store import engines  # noqa: PLC0415 - see the docstring

        return getattr(engines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
