"""Chroma connector on a real on-disk store and a real `chroma run` server: documents as payload, probes,
and one clear error for a missing store, an unknown collection or an unreachable server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb
import pytest
from connector_stores import build_chroma, free_port

from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.registry import connector_for
from auditor.types import Distance

SETTINGS = chromadb.Settings(anonymized_telemetry=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_data: Any) -> Path:
    path = tmp_path_factory.mktemp("chroma") / "db"
    build_chroma(chromadb.PersistentClient(path=str(path), settings=SETTINGS), *small_data)
    return path


def test_document_and_metadata_form_the_payload(store: Path) -> None:
    with connector_for(f"chroma://{store}?document_field=body", collection="docs") as conn:
        info = conn.describe()
        batch, cursor = next(conn.iter_batches(batch_size=3))
    assert (info.dim, info.count, info.distance) == (8, 40, Distance.COSINE)
    assert batch.payloads[0] == {"body": "document 100", "tenant": "globex"} and cursor == 3


def test_probe_search_keeps_to_the_tenant(store: Path, small_data: Any) -> None:
    _, vectors, _ = small_data
    with connector_for(f"chroma://{store}", collection="docs") as conn:
        hits = conn.probe_search(vectors[1], tenant_field="tenant", tenant="acme", limit=4)
        other = conn.probe_search(vectors[1], tenant_field="tenant", tenant="globex", limit=4)
    assert hits[0].id == "101" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert {h.payload["tenant"] for h in hits} == {"acme"} and {h.payload["tenant"] for h in other} == {"globex"}
    assert hits[0].score >= hits[-1].score


def test_missing_store_is_reported_not_created(tmp_path: Path) -> None:
    with connector_for(f"chroma://{tmp_path / 'nope'}", collection="docs") as conn, \
            pytest.raises(StoreNotFoundError, match="no Chroma store"):
        conn.describe()
    assert not (tmp_path / "nope").exists()


def test_unknown_or_missing_collection(store: Path) -> None:
    with connector_for(f"chroma://{store}", collection="nope") as conn, \
            pytest.raises(StoreNotFoundError, match="collections here: docs"):
        conn.describe()
    with connector_for(f"chroma://{store}") as conn, pytest.raises(ConfigError, match="this store has: docs"):
        conn.describe()


def test_server_collection_and_unreachable_server(chroma_address: tuple[str, int], small_data: Any) -> None:
    host, port = chroma_address
    build_chroma(chromadb.HttpClient(host=host, port=port, settings=SETTINGS), *small_data)
    with connector_for(f"chroma+http://{host}:{port}", collection="docs") as conn:
        assert conn.describe().extra["mode"] == "server"
        assert [p.id for p in conn.fetch(["139", "nope"])] == ["139"]
    with connector_for(f"chroma+http://127.0.0.1:{free_port()}", collection="docs") as conn, \
            pytest.raises(ConnectorError) as caught:
        conn.describe()
    assert type(caught.value) is ConnectorError and "connect failed" in str(caught.value)
    assert len(str(caught.value)) < 500


def test_vector_option_is_refused(store: Path) -> None:
    with connector_for(f"chroma://{store}", collection="docs", vector="dense") as conn, \
            pytest.raises(ConfigError, match="one unnamed vector"):
        conn.describe()


def test_a_dict_flag_round_trips_and_the_guard_filters_on_its_marker(tmp_path: Path, small_data: Any) -> None:
    """Chroma metadata cannot hold a dict: the flag is stored as a marked JSON list, read back as the dict, and
    excluded by ``where={flag: {"$not_contains": "vecaudit:json"}}``; removing it leaves the vector as stored."""
    # fresh settings: chromadb.HttpClient (an earlier test) rewrites the Settings object it is given
    fresh = chromadb.Settings(anonymized_telemetry=False)
    client = chromadb.PersistentClient(path=str(tmp_path / "db"), settings=fresh)
    build_chroma(client, *small_data)
    coll = client.get_collection("docs", embedding_function=None)
    with connector_for(f"chroma://{tmp_path / 'db'}", collection="docs") as conn:
        [before] = conn.fetch(["101"])
        conn.set_payload(["101"], {"vecaudit_quarantine": {"action_id": 3, "finding_ids": [1, 2]}})
        [flagged] = conn.fetch(["101"])
        guard: Any = {"vecaudit_quarantine": {"$not_contains": "vecaudit:json"}}
        guarded = coll.get(where=guard)["ids"]
        conn.overwrite_payload(["101"], before.payload)
        [after] = conn.fetch(["101"])
    assert flagged.payload["vecaudit_quarantine"] == {"action_id": 3, "finding_ids": [1, 2]}
    assert "101" not in guarded and len(guarded) == 39
    assert after == before
