"""Qdrant connector specifics: named vectors, resumable cursor, describe, server errors, memory mode."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from auditor.connector import SourceURI
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.registry import connector_for
from auditor.types import Distance


@pytest.fixture
def named_store(tmp_path: Path) -> str:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "store"))
    client.create_collection("multi", vectors_config={
        "dense": models.VectorParams(size=4, distance=models.Distance.EUCLID),
        "title": models.VectorParams(size=3, distance=models.Distance.COSINE),
    })
    rng = np.random.default_rng(1)
    client.upsert("multi", [
        models.PointStruct(id=i, vector={"dense": rng.normal(size=4).tolist(), "title": rng.normal(size=3).tolist()},
                           payload={"meta": {"body": f"text {i}"}, "tenant": "t"})
        for i in range(23)
    ])
    client.close()
    return f"qdrant+local://{tmp_path / 'store'}"


def test_named_vectors_need_a_choice_and_resolve_per_name(named_store: str) -> None:
    with connector_for(named_store, collection="multi") as conn, pytest.raises(ConfigError, match="--vector"):
        conn.describe()
    with connector_for(named_store, collection="multi", vector="dense") as conn:
        info = conn.describe()
        assert (info.dim, info.distance, info.count) == (4, Distance.EUCLID, 23)
        assert set(info.vector_names) == {"dense", "title"}
        pages = list(conn.iter_batches(batch_size=5))
        assert [len(p) for p, _ in pages] == [5, 5, 5, 5, 3]
        assert all(len(v) == 4 for p, _ in pages for v in p.vectors)
        assert conn.collection_key.endswith("#multi:dense")
    with connector_for(named_store, collection="multi", vector="nope") as conn, pytest.raises(ConfigError):
        conn.describe()


def test_resume_from_cursor_yields_the_rest_exactly_once(named_store: str) -> None:
    with connector_for(named_store, collection="multi", vector="title") as conn:
        all_ids = [i for p, _ in conn.iter_batches(batch_size=7) for i in p.ids]
        first_page, cursor = next(iter(conn.iter_batches(batch_size=7)))
        rest = [i for p, _ in conn.iter_batches(batch_size=7, start=cursor) for i in p.ids]
    assert sorted(all_ids) == list(range(23))
    assert first_page.ids + rest == all_ids


def test_fetch_is_bit_exact_for_every_named_vector(named_store: str) -> None:
    with connector_for(named_store, collection="multi", vector="dense") as conn:
        page, _ = next(iter(conn.iter_batches(batch_size=50)))
        points = {p.id: p for p in conn.fetch([3, 4, 999])}
    assert set(points) == {3, 4}
    row = page.ids.index(3)
    stored = np.asarray(page.vectors[row], np.float32).tobytes()
    assert np.asarray(points[3].vectors["dense"], np.float32).tobytes() == stored
    assert set(points[3].vectors) == {"dense", "title"}
    assert points[3].payload["meta"]["body"] == "text 3"


def test_memory_mode_and_missing_collection() -> None:
    conn = connector_for(":memory:", collection="docs")
    with pytest.raises(StoreNotFoundError, match="collections here: none"):
        conn.describe()
    conn.close()


def test_unreachable_server_is_one_connector_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("QDRANT_API_KEY", "secret-key-value")
    conn = connector_for(f"qdrant://127.0.0.1:{port}", collection="docs", options={"timeout": 2})
    with pytest.raises(ConnectorError) as err:
        conn.describe()
    assert "secret-key-value" not in str(err.value)
    assert conn.collection_key == f"qdrant://127.0.0.1:{port}#docs"
    grpc = connector_for(f"qdrants://127.0.0.1:{port}", collection="docs", options={"grpc": True, "timeout": 2})
    with pytest.raises(ConnectorError):
        grpc.describe()


def test_uri_redaction_drops_passwords_and_keys() -> None:
    uri = SourceURI.parse("pgvector://bob:hunter2@db:5432/rag?table=t&api_key=abc")
    assert "hunter2" not in uri.redacted() and "abc" not in uri.redacted()
    assert uri.redacted().startswith("pgvector://bob@db:5432/rag")
    local = SourceURI.parse("qdrant+local:///data/store")
    assert local.redacted() == "qdrant+local:///data/store"
    assert SourceURI.parse(local.redacted()).path == "/data/store"  # what the ledger stores parses back
