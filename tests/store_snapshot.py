"""Everything the SQLite file holds, read with the standard sqlite3 module, to prove a call changed nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def snapshot(path: Path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        db.close()


def revision(path: Path) -> int:
    """The store-wide revision: one more for every change."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT revision FROM meta").fetchone()[0])
    finally:
        db.close()


def integrity_problems(path: Path) -> list[tuple]:
    """What PRAGMA integrity_check and PRAGMA foreign_key_check find wrong with the file: [] when it is sound."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        problems = [r for r in db.execute("PRAGMA integrity_check").fetchall() if r != ("ok",)]
        return problems + db.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        db.close()
