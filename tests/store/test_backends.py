"""Backend-specific edges of the two stores: URLs, database names, unreachable servers."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest

from mcp_server.errors import ConfigError, Unavailable
from mcp_server.store.base import open_store
from mcp_server.store.mongo import MongoStore
from mcp_server.store.sqlite import SqliteStore, sqlite_path
from tests.services import free_port


def test_open_store_picks_the_backend_from_the_url() -> None:
    assert isinstance(open_store("sqlite:////tmp/x.db"), SqliteStore)
    assert isinstance(open_store("mongodb://127.0.0.1:1/db"), MongoStore)
    with pytest.raises(ConfigError, match="sqlite:///"):
        open_store("postgres://nope")


def test_sqlite_url_forms() -> None:
    assert sqlite_path("sqlite:///abs/path.db").as_posix() == "/abs/path.db"
    assert sqlite_path("sqlite:////abs/path.db").as_posix() == "/abs/path.db"
    assert sqlite_path("sqlite:rel.db").as_posix() == "rel.db"
    with pytest.raises(ConfigError):
        sqlite_path("sqlite:///:memory:")


async def test_sqlite_unwritable_place_is_unavailable() -> None:
    store = SqliteStore("sqlite:////proc/opsmedic-nope/x.db")
    with pytest.raises(Unavailable):
        await store.open()
    with pytest.raises(Unavailable, match="open"):
        await store.get_job("j")


async def test_mongo_database_name_comes_from_the_url(mongo_url: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    with client:
        for url, name in ((mongo_url, "opsmedic"), (f"{mongo_url}/t_named", "t_named")):
            store = MongoStore(url)
            await store.open()
            try:
                assert store.db_name == name and await store.ping()
                assert "seq_unique" in client[name].audit.index_information()
            finally:
                await store.close()
                client.drop_database(name)


async def test_mongo_unreachable_is_unavailable_and_redacted() -> None:
    store = MongoStore(f"mongodb://user:s3cret@127.0.0.1:{free_port()}/x", timeout_ms=300)
    with pytest.raises(Unavailable, match="unreachable") as caught:
        await store.open()
    assert "s3cret" not in str(caught.value)
    assert not await store.ping()
