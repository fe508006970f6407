"""The PostgreSQL engine's own tests: each runs on PostgreSQL only, whatever engines the rest of the suite covers."""

from __future__ import annotations

import pytest


@pytest.fixture
def engine() -> str:
    return "postgresql"
