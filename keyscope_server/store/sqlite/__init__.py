"""The SQLite engine: the embedded default. Its SQL, one module per resource, its transactions and connections.

`SqliteEngine` is loaded when first asked for: the engine's writer process imports modules of this package, and
needs none of the engine's own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyscope_server.store.sqlite.engine import SqliteEngine

__all__ = ["SqliteEngine"]


def __getattr__(name: str) -> Any:
    if name == "SqliteEngine":
        from keyscope_server.store.sqlite.engine import SqliteEngine  # noqa: PLC0415 - see the docstring

        return SqliteEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
