"""Milvus connector on Milvus Lite: string primary keys with awkward characters, resume, probes, and one
clear error for a missing file, an unknown collection, a non-vector field or an unreachable server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from connector_stores import build_milvus, free_port

from auditor.connector import cursor_from_json, cursor_to_json
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.registry import connector_for
from connectors.milvus import MilvusConnector


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory, small_data: Any) -> Path:
    """One Milvus Lite file with the int-keyed ``docs`` and a string-keyed ``notes`` collection."""
    from pymilvus import DataType, MilvusClient

    path = tmp_path_factory.mktemp("milvus") / "lite.db"
    build_milvus(path, *small_data)
    ids, vectors, payloads = small_data
    client = MilvusClient(str(path))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("emb", DataType.FLOAT_VECTOR, dim=8)
    index = client.prepare_index_params()
    index.add_index("emb", index_type="FLAT", metric_type="L2")
    client.create_collection("notes", schema=schema, index_params=index)
    client.insert("notes", [{"key": f'k"{i}\\\'', "emb": v.tolist(), **p}
                            for i, v, p in zip(ids, vectors, payloads, strict=True)])
    client.close()
    return path


def test_string_keys_with_quotes_paginate_and_resume(lite: Path) -> None:
    uri = f"milvus://{lite}"
    with connector_for(uri, collection="notes") as conn:
        pages = conn.iter_batches(batch_size=16)
        first, cursor = next(pages)
        full = [str(i) for b, _ in conn.iter_batches(batch_size=16) for i in b.ids]
    with connector_for(uri, collection="notes") as conn:
        rest = [str(i) for b, _ in conn.iter_batches(batch_size=16, start=cursor_from_json(cursor_to_json(cursor)))
                for i in b.ids]
    assert len(full) == len(set(full)) == 40
    assert [str(i) for i in first.ids] + rest == full


def test_probe_search_filters_on_the_tenant_field(lite: Path, small_data: Any) -> None:
    _, vectors, _ = small_data
    with connector_for(f"milvus://{lite}", collection="docs") as conn:
        hits = conn.probe_search(vectors[2], tenant_field="tenant", tenant="globex", limit=5)
    assert hits[0].id == 102 and {h.payload["tenant"] for h in hits} == {"globex"}
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_missing_file_is_reported_not_created(tmp_path: Path) -> None:
    with connector_for(f"milvus://{tmp_path / 'nope.db'}", collection="docs") as conn, \
            pytest.raises(StoreNotFoundError, match="no Milvus Lite"):
        conn.describe()
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize(("collection", "vector", "error", "text"), [
    ("nope", None, StoreNotFoundError, "collections here: "),
    (None, None, ConfigError, "no collection given"),
    ("docs", "text", ConfigError, "is VARCHAR, not FLOAT_VECTOR"),
    ("docs", "nope", ConfigError, "no field 'nope'"),
])
def test_bad_names_give_one_clear_error(lite: Path, collection: str | None, vector: str | None,
                                        error: type[Exception], text: str) -> None:
    with connector_for(f"milvus://{lite}", collection=collection, vector=vector) as conn, \
            pytest.raises(error, match=text):
        conn.describe()


def test_unreachable_server() -> None:
    with connector_for(f"milvus://127.0.0.1:{free_port()}", collection="docs", options={"timeout": 2}) as conn, \
            pytest.raises(ConnectorError) as caught:
        conn.describe()
    assert "connect failed" in str(caught.value) and "127.0.0.1" in str(caught.value)


def test_tag_needs_a_dynamic_field_and_the_flag_is_filtered_by_not_exists(tmp_path: Path, small_data: Any) -> None:
    """Tag mode writes the flag as a dynamic field, so retrieval guards with ``not exists <flag>``; a collection
    without dynamic fields refuses tag mode before writing anything."""
    from pymilvus import DataType, MilvusClient

    path = tmp_path / "lite.db"
    build_milvus(path, *small_data)
    ids, vectors, _ = small_data
    client = MilvusClient(str(path))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    client.create_collection("fixed", schema=schema, index_params=index)
    client.insert("fixed", [{"id": i, "vector": v.tolist()} for i, v in zip(ids, vectors, strict=True)])
    schema = client.create_schema(auto_id=True, enable_dynamic_field=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    client.create_collection("auto", schema=schema, index_params=index)
    auto_ids = list(client.insert("auto", [{"vector": v.tolist()} for v in vectors])["ids"])
    client.close()
    with connector_for(f"milvus://{path}", collection="docs") as conn:
        assert isinstance(conn, MilvusConnector)
        conn.set_payload([ids[0]], {"vecaudit_quarantine": {"action_id": 1}})
        guarded = conn.client().query("docs", filter="not exists vecaudit_quarantine", output_fields=["id"])
        conn.overwrite_payload([ids[0]], {"text": "document 100", "tenant": "globex"})
        [restored] = conn.fetch([ids[0]])
    assert sorted(r["id"] for r in guarded) == ids[1:]
    assert restored.payload == {"text": "document 100", "tenant": "globex"}
    assert restored.vectors["vector"] == vectors[0].tolist()
    with connector_for(f"milvus://{path}", collection="fixed") as conn:
        with pytest.raises(ConnectorError, match="no dynamic field") as refused:
            conn.set_payload([ids[0]], {"vecaudit_quarantine": True})
        assert [p.payload for p in conn.fetch([ids[0]])] == [{}]
    assert "--mode move" in str(refused.value)
    with connector_for(f"milvus://{path}", collection="auto") as conn:  # a rewrite would get a new primary key
        with pytest.raises(ConnectorError, match="auto_id"):
            conn.set_payload(auto_ids[:1], {"vecaudit_quarantine": True})
        with pytest.raises(ConnectorError, match="auto_id"):
            conn.ensure_collection_like("auto__quarantine")
        assert not conn.collection_exists("auto__quarantine")
