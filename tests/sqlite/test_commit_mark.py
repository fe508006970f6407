"""keyscope_server.store.sqlite.commit_mark.CommitMark: the mark VerifyKey reads before trusting its cache changes with
every commit, by any connection or process, and with nothing else; without a WAL index it falls back to PRAGMA
data_version."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyscope_server.store.sqlite.commit_mark import CommitMark


@contextlib.contextmanager
def database(path: Path, journal_mode: str = "WAL") -> Iterator[tuple[sqlite3.Connection, CommitMark]]:
    """A writer connection, and the mark of a second (monitor) connection, as the store has them."""
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute(f"PRAGMA journal_mode = {journal_mode}").fetchall()
    writer.execute("CREATE TABLE t (x INTEGER)")
    monitor = sqlite3.connect(path, isolation_level=None)
    monitor.execute("SELECT count(*) FROM t").fetchall()
    mark = CommitMark(path, monitor)
    try:
        yield writer, mark
    finally:
        mark.close()
        monitor.close()
        writer.close()


def test_ok_unchanged_without_a_commit(tmp_path: Path) -> None:
    with database(tmp_path / "db") as (writer, mark):
        before = mark.read()
        writer.execute("SELECT count(*) FROM t").fetchall()  # a read is no commit
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO t VALUES (1)")
        assert mark.read() == before  # not before COMMIT: nothing is visible yet
        writer.execute("ROLLBACK")
        assert mark.read() == before


def test_ok_every_commit_changes_it(tmp_path: Path) -> None:
    with database(tmp_path / "db") as (writer, mark):
        seen = [mark.read()]
        for value in range(200):
            writer.execute("INSERT INTO t VALUES (?)", (value,))
            seen.append(mark.read())
        assert all(a != b for a, b in zip(seen, seen[1:], strict=False))
        assert isinstance(seen[0], bytes)  # read from the mapped WAL index, not through the fallback


def test_ok_a_commit_after_the_wal_restarts_changes_it(tmp_path: Path) -> None:
    with database(tmp_path / "db") as (writer, mark):
        writer.execute("INSERT INTO t VALUES (1)")
        writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        before = mark.read()
        writer.execute("INSERT INTO t VALUES (2)")  # the first commit into the emptied WAL
        assert mark.read() != before


def test_ok_a_commit_by_another_process_changes_it(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with database(path) as (_, mark):
        before = mark.read()
        script = (
            f"import sqlite3; sqlite3.connect({str(path)!r}, isolation_level=None).execute('INSERT INTO t VALUES (1)')"
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
        assert mark.read() != before


def test_ok_falls_back_to_data_version_without_a_wal_index(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with database(tmp_path / "db", journal_mode="DELETE") as (writer, mark):
        before = mark.read()
        assert isinstance(before, int)
        assert "reading commits through PRAGMA data_version" in caplog.text
        assert mark.read() == before
        writer.execute("INSERT INTO t VALUES (1)")
        assert mark.read() != before
