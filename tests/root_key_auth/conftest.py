"""The world every RPC of tests/root_key_auth/every_rpc.py acts on."""

from __future__ import annotations

import pytest_asyncio

from tests.client import Caller
from tests.root_key_auth.every_rpc import World, make_world


@pytest_asyncio.fixture
async def world(admin: Caller) -> World:
    """API A with a role and a key, and API B with nothing in it."""
    return await make_world(admin)
