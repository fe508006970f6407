"""How the PostgreSQL engine uses its database, in a module of its own so that a process can read and pass the
settings (the command line, the supervisor of --workers) without loading the driver."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PostgresSettings"]


@dataclass(frozen=True)
class PostgresSettings:
    """How the engine uses the database: connections at most, and how long each wait may take."""

    pool_size: int = 10
    connect_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 5.0
    write_attempts: int = 5  # a batch that meets a serialization failure or deadlock is run again, this often
