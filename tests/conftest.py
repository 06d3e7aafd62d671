"""The test session's real stores and app.

MongoDB: MONGODB_URI when set (a real mongod must pass the same tests), else a
SecantusDB server started as a subprocess for the session. Each session uses a database
of its own, dropped at the end on MONGODB_URI's server (SecantusDB's goes with its
directory). Settings are loaded here once, from config/test.toml.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.app import create_app
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.settings import Settings, load_settings
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port
from tests.redis_server import RedisServer, RedisServerError, find_redis_server

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    with tempfile.TemporaryDirectory(prefix="pollybot-secantus-") as data_dir:
        store = EmbeddedStore(Path(data_dir), free_port())
        store.start()
        try:
            yield store.uri
        finally:
            store.discard()  # its data goes with the directory: no orderly shutdown


@pytest.fixture(scope="session")
def settings(mongodb_uri: str) -> Settings:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    base = load_settings(env, profile="test")
    return base.replace(
        mongodb_uri=mongodb_uri,
        mongodb_database=f"{base.mongodb_database}_{secrets.token_hex(4)}",
        cursor_secret="test-cursor-secret",
        redis_url="",
    )


@contextlib.asynccontextmanager
async def database_of(settings: Settings, *, drop: bool = True) -> AsyncIterator[Mongo]:
    """A client on ``settings``' database, indexed; the database is dropped after
    (unless ``drop`` is false)."""
    mongo = Mongo(settings.mongodb_uri, settings.mongodb_database, settings.mongodb_driver)
    await mongo.connect()
    await ensure_all_indexes(mongo, settings)
    try:
        yield mongo
    finally:
        if drop:
            await mongo.client.drop_database(settings.mongodb_database)
        await mongo.close()


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[TestClient]:
    """The app on ``settings``, built by the same factory as production, serving."""
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def own_database(name: str, scope: Literal["module", "package"] = "module") -> tuple[Any, ...]:
    """The ``settings``, ``mongo``, ``accounts`` and ``api`` fixtures of tests that keep a
    database of their own (``<session's>_<name>``, dropped after ``scope``): so that a scan
    reads every document of every collection of it, not the whole session's. Assign them
    to those four names in the module or conftest."""

    @pytest.fixture(scope=scope, name="settings")
    def settings_(settings: Settings) -> Settings:
        return settings.replace(mongodb_database=f"{settings.mongodb_database}_{name}")

    @pytest.fixture(scope=scope, name="mongo")
    async def mongo_(settings: Settings) -> AsyncIterator[Mongo]:
        async with database_of(settings) as mongo:
            yield mongo

    @pytest.fixture(scope=scope, name="accounts")
    def accounts_(mongo: Mongo) -> AccountRepository:
        return AccountRepository(mongo)

    @pytest.fixture(scope=scope, name="api")
    async def api_(settings: Settings, mongo: Mongo) -> AsyncIterator[TestClient]:
        async with serving(settings) as client:
            yield client

    return settings_, mongo_, accounts_, api_


@pytest.fixture(scope="session")
async def mongo(settings: Settings) -> AsyncIterator[Mongo]:
    # The session's own SecantusDB goes with its directory: dropping the database first
    # only costs time (half a minute once the scale tests have filled it). A server
    # given by MONGODB_URI outlives the session: its database is dropped.
    async with database_of(settings, drop=bool(os.environ.get("MONGODB_URI"))) as mongo:
        yield mongo


@pytest.fixture(scope="session")
def accounts(mongo: Mongo) -> AccountRepository:
    return AccountRepository(mongo)


@pytest.fixture(scope="session")
def leads_repo(mongo: Mongo) -> LeadRepository:
    return LeadRepository(mongo)


@pytest.fixture(scope="session")
async def api(settings: Settings, mongo: Mongo) -> AsyncIterator[TestClient]:
    """One server for the session."""
    async with serving(settings) as client:
        yield client


@dataclass
class Tenant:
    """A workspace with one chatbot and one key: what an integration holds."""

    workspace_id: str
    chatbot_id: str
    key_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def leads_url(self) -> str:
        return f"/api/v1/chatbots/{self.chatbot_id}/leads"

    def lead_url(self, lead_id: str) -> str:
        return f"{self.leads_url}/{lead_id}"


async def make_tenant(accounts: AccountRepository, **key_options: object) -> Tenant:
    workspace = await accounts.create_workspace(name="Acme")
    chatbot = await accounts.create_chatbot(workspace_id=workspace["id"], name="Bot")
    issued = await accounts.create_key(workspace_id=workspace["id"], **key_options)
    return Tenant(workspace["id"], chatbot["id"], issued.record.id, issued.secret)


@pytest.fixture
async def tenant(accounts: AccountRepository) -> Tenant:
    return await make_tenant(accounts)


@pytest.fixture
async def other_tenant(accounts: AccountRepository) -> Tenant:
    return await make_tenant(accounts)


def redis_unavailable(reason: str) -> NoReturn:
    """No Redis to test with: a local run skips, a CI run fails (it must never skip)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: Redis tests must run)", pytrace=False)
    pytest.skip(reason)


def start_redis_or_skip() -> RedisServer:
    """A private redis-server on a free port."""
    if find_redis_server() is None:
        redis_unavailable("redis-server not found (set REDIS_SERVER_BIN or put it on PATH)")
    try:
        return RedisServer().start()
    except RedisServerError as exc:
        redis_unavailable(f"could not start redis-server: {exc}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session; tests must leave it running."""
    server = start_redis_or_skip()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, free to be stopped, paused and restarted."""
    server = start_redis_or_skip()
    try:
        yield server
    finally:
        server.close()
