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
