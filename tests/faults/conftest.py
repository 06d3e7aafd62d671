"""Fixtures of the fault tests: each test gets its own store, tenant and API server.

Nothing here is shared with the rest of the suite (its session store and in-process app
are never used): a fault test kills, pauses and restarts processes it owns, and every one
of them is stopped when the test ends, however it ends.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from pollybot_leads.store.embedded import free_port
from tests.faults.harness import ApiServer, Store, Tenant, create_tenant, server_env


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A SecantusDB server of the test's own, on a temporary data directory."""
    store = Store(tmp_path / "store", free_port())
    store.start()
    try:
        yield store
    finally:
        store.discard()  # killed, paused or running: gone


@pytest.fixture
def database() -> str:
    return f"pollybot_faults_{secrets.token_hex(4)}"


@pytest.fixture
async def tenant(store: Store, database: str) -> Tenant:
    """A workspace, chatbot and key, created in the store before the server starts."""
    return await create_tenant(store.uri, database)


@pytest.fixture
def server(store: Store, database: str, tenant: Tenant, tmp_path: Path) -> Iterator[ApiServer]:
    """The API server as a subprocess on a free port, using the test's store."""
    server = ApiServer(free_port(), server_env(store.uri, database), tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session
