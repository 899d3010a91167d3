"""LanceDB connector: pinned-version cursors, probes, and one clear error for a missing database or table,
a vector column of the wrong type or a missing id column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from connector_stores import build_lancedb

from auditor.errors import ConfigError, StoreNotFoundError
from auditor.registry import connector_for
from auditor.types import Distance


@pytest.fixture
def db(tmp_path: Path, small_data: Any) -> Path:
    build_lancedb(tmp_path / "lance", *small_data)
    return tmp_path / "lance"


def test_a_resumed_scan_reads_the_version_it_started_on(db: Path, small_data: Any) -> None:
    import lancedb

    with connector_for(f"lancedb://{db}?table=docs") as conn:
        info = conn.describe()
        first, cursor = next(conn.iter_batches(batch_size=10))
    assert info.distance is Distance.EUCLID and info.extra["distance_source"] == "assumed"
    ids, vectors, _ = small_data
    lancedb.connect(str(db)).open_table("docs").add(pa.table({
        "id": [1], "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[0]), 8), "text": ["late"],
        "tenant": ["acme"]}))
    with connector_for(f"lancedb://{db}?table=docs") as conn:
        rest = [i for b, _ in conn.iter_batches(batch_size=10, start=cursor) for i in b.ids]
        assert conn.describe().count == 41  # a new scan sees the new version
    assert first.ids + rest == ids


def test_probe_search_filters_on_the_tenant_column(db: Path, small_data: Any) -> None:
    _, vectors, _ = small_data
    with connector_for(f"lancedb://{db}?table=docs&distance=cosine") as conn:
        hits = conn.probe_search(vectors[3], tenant_field="tenant", tenant="acme", limit=5)
    assert hits[0].id == 103 and {h.payload["tenant"] for h in hits} == {"acme"}
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_missing_database_is_reported_not_created(tmp_path: Path) -> None:
    with connector_for(f"lancedb://{tmp_path / 'nope'}?table=docs") as conn, \
            pytest.raises(StoreNotFoundError, match="no LanceDB database"):
        conn.describe()
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize(("query", "error", "text"), [
    ("table=nope", StoreNotFoundError, "tables here: docs"),
    ("", ConfigError, "no table given"),
    ("table=docs&vector=text", ConfigError, "is string, not a list of floats"),
    ("table=docs&vector=nope", ConfigError, "no column 'nope'"),
    ("table=docs&id=key", ConfigError, "no id column 'key'"),
])
def test_bad_names_and_types_give_one_clear_error(db: Path, query: str, error: type[Exception], text: str) -> None:
    with connector_for(f"lancedb://{db}?{query}") as conn, pytest.raises(error, match=text):
        conn.describe()
