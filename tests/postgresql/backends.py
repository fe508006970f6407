"""What Keyscope's connections to a database are doing, as PostgreSQL reports it."""

from __future__ import annotations

import asyncpg

__all__ = ["lock_waiters"]


async def lock_waiters(url: str) -> list[int]:
    """The pids of Keyscope's backends waiting on a lock in the database of `url`. Asked on a connection of its
    own: a transaction sees the activity of others as it was at its first look."""
    conn = await asyncpg.connect(url)
    try:
        records = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'keyscope' AND wait_event_type = 'Lock' ORDER BY pid"
        )
        return [r["pid"] for r in records]
    finally:
        await conn.close()
