"""A mark that changes with every commit to a WAL-mode SQLite database, by any connection of any process.

Read from the WAL-index header in the database's `-shm` file, mapped into
memory: no system call, no lock, no release of the interpreter lock. Every
commit increments the header's change counter and rewrites the header there
before COMMIT returns (sqlite3WalFrames, walIndexWriteHdr; the format is that
of https://sqlite.org/walformat.html, "The WAL-Index Header"), so a commit
acknowledged to anyone shows to a read that begins after the acknowledgement.
The first of the header's two copies is read; SQLite writes it last. A read
torn by a commit in progress differs from the mark seen before it, so it can
only cause a look that finds nothing new, never hide a commit.

`PRAGMA data_version` says the same, and is the fallback when the header cannot
be mapped, but each call takes SQLite's shared-memory locks (fcntl system
calls) and gives up the interpreter lock: under 64 concurrent VerifyKey calls
it cost about 10% of their throughput.

The mapping stays valid while the store is open: SQLite truncates `-shm` only
when a connection opens the database while no other connection has it open,
and the store's own connections keep it open until `close`.
"""

from __future__ import annotations

import logging
import mmap
import sqlite3
from pathlib import Path

__all__ = ["CommitMark"]

log = logging.getLogger(__name__)

HEADER_BYTES = 48  # one copy of the WAL-index header


class CommitMark:
    def __init__(self, path: Path, monitor: sqlite3.Connection) -> None:
        self._monitor = monitor
        self._header: mmap.mmap | None = None
        # A first read through `monitor` makes sure the WAL index exists and is set up, and keeps it so while
        # `monitor` stays open.
        monitor.execute("PRAGMA data_version").fetchall()
        try:
            with open(f"{path}-shm", "rb") as shm:
                self._header = mmap.mmap(shm.fileno(), HEADER_BYTES, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:  # no -shm, or one not yet initialised
            log.warning("reading commits through PRAGMA data_version: the WAL index is not mapped (%s)", exc)

    def read(self) -> bytes | int:
        """The mark now: equal to an earlier one only if nothing was committed in between."""
        if self._header is not None:
            return self._header[:HEADER_BYTES]
        return int(self._monitor.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        if self._header is not None:
            self._header.close()
