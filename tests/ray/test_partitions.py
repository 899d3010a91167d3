"""Read partitions of every store that splits: read in order they give exactly what ``iter_batches`` gives (ids,
vectors, payloads, same order), each is resumable from a cursor of its own, and a store that cannot split says so."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "contract"))

import itertools

from connector_stores import (
    build_jsonl,
    build_lancedb,
    build_milvus,
    build_npz,
    build_parquet,
    build_pgvector,
    build_qdrant,
    create_database,
    pgvector_server,
)

from auditor.connector import Connector
from auditor.partitions import Partition
from auditor.registry import connector_for

N = 1300
TARGET = 300


@pytest.fixture(scope="module")
def data() -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(11)
    ids = [int(i) for i in rng.permutation(np.arange(10, 10 + 3 * N, 3))[:N]]  # not in insertion order
    vectors = rng.standard_normal((N, 6)).astype(np.float32)
    payloads = [{"text": f"passage {i}", "tenant": "acme" if i % 2 else "globex"} for i in ids]
    return ids, vectors, payloads


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with pgvector_server() as url:
        yield url


def _read(pages: Iterator[Any]) -> list[tuple[Any, bytes, Any]]:
    return [(pid, np.asarray(vec, dtype=np.float32).tobytes(), payload)
            for page, _ in pages for pid, vec, payload in zip(page.ids, page.vectors, page.payloads, strict=True)]


def _check_partitions(conn: Connector, *, exclusive: bool = False, min_parts: int = 3) -> None:
    whole = _read(conn.iter_batches(batch_size=128))
    assert len(whole) == N
    plan = conn.partitions(target_points=TARGET)
    assert plan.split and len(plan) >= min_parts and plan.exclusive is exclusive
    assert [p.index for p in plan.partitions] == list(range(len(plan)))
    read: list[tuple[Any, bytes, Any]] = []
    for part in plan.partitions:
        rows = _read(conn.iter_partition(part, batch_size=128))
        assert part.points is None or part.points == len(rows), part
        read.extend(rows)
    assert read == whole
    # resumable: a cursor from inside a partition continues it, and its last page carries None
    part = plan.partitions[1]
    pages = conn.iter_partition(part, batch_size=64)
    first, cursor = next(pages)
    assert cursor is not None
    tail = list(conn.iter_partition(part, batch_size=64, start=cursor))
    assert tail[-1][1] is None
    assert [*_read(iter([(first, cursor)])), *_read(iter(tail))] == _read(conn.iter_partition(part, batch_size=64))


Builder = Callable[[Path, Any], str]


def _files(fmt: str) -> Builder:
    def build(root: Path, data: Any) -> str:
        ids, vectors, payloads = data
        if fmt == "parquet":
            build_parquet(root / "export.parquet", ids, vectors, payloads, row_group_size=100)
            return f"file://{root}/export.parquet"
        writer = {"jsonl": build_jsonl, "npz": build_npz, "glob": build_parquet}[fmt]
        cuts = [0, 500, 900, N]
        for k, (lo, hi) in enumerate(itertools.pairwise(cuts)):
            suffix = "parquet" if fmt == "glob" else fmt
            writer(root / f"part-{k}.{suffix}", ids[lo:hi], vectors[lo:hi], payloads[lo:hi])
        return f"file://{root}/part-*.{'parquet' if fmt == 'glob' else fmt}"
    return build


def _qdrant(root: Path, data: Any) -> str:
    ids, vectors, payloads = data
    return build_qdrant(root / "qdrant", ids, vectors, payloads)


def _lancedb(root: Path, data: Any) -> str:
    ids, vectors, payloads = data
    build_lancedb(root / "lancedb", ids, vectors, payloads)
    return f"lancedb://{root}/lancedb?table=docs"


def _milvus(root: Path, data: Any) -> str:
    ids, vectors, payloads = data
    return build_milvus(root / "milvus.db", ids, vectors, payloads)


@pytest.mark.parametrize(
    ("name", "build", "exclusive"),
    [("parquet", _files("parquet"), False), ("parquet-glob", _files("glob"), False), ("jsonl", _files("jsonl"), False),
     ("npz", _files("npz"), False), ("qdrant-local", _qdrant, True), ("lancedb", _lancedb, False),
     ("milvus-lite", _milvus, True)],
)
def test_partitions_cover_the_collection_in_order(
    name: str, build: Builder, exclusive: bool, data: Any, tmp_path: Path
) -> None:
    uri = build(tmp_path, data)
    with connector_for(uri, collection="docs") as conn:
        _check_partitions(conn, exclusive=exclusive)


@pytest.mark.postgres
def test_pgvector_primary_key_ranges(pg_url: str, data: Any) -> None:
    url = create_database(pg_url, "parts_" + uuid.uuid4().hex[:8])
    build_pgvector(url, *data)
    with connector_for(url.replace("postgresql://", "pgvector://") + "?table=docs&distance=cosine") as conn:
        _check_partitions(conn)
        plan = conn.partitions(target_points=TARGET)
        assert plan.partitions[0].spec["after"] is None and plan.partitions[-1].spec["upto"] is None


def test_qdrant_uuid_ids_split_in_store_order(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    rng = np.random.default_rng(5)
    keys: list[Any] = [str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64)) for _ in range(400)]
    keys += list(range(1, 301))  # integer ids sort before every UUID
    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("docs", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.upsert("docs", models.Batch(ids=keys, vectors=rng.standard_normal((len(keys), 4)).tolist(),
                                       payloads=[{"n": i} for i in range(len(keys))]))
    client.close()
    with connector_for(f"qdrant+local://{tmp_path}/q", collection="docs") as conn:
        whole = [pid for page, _ in conn.iter_batches(batch_size=64) for pid in page.ids]
        plan = conn.partitions(target_points=128)
        got = [pid for p in plan.partitions for page, _ in conn.iter_partition(p, batch_size=50) for pid in page.ids]
    assert got == whole and len(got) == 700 and len(plan) == 6


def test_a_store_that_cannot_split_says_so() -> None:
    with connector_for(":memory:", collection="docs") as conn:
        conn.client().create_collection("docs", vectors_config=__import__("qdrant_client").models.VectorParams(
            size=4, distance="Cosine"))
        plan = conn.partitions(target_points=10)
        assert not plan.split and not plan.remote and "in-memory" in (plan.reason or "")
        assert len(plan) == 1 and plan.partitions[0].spec == {"whole": True}


def test_stores_without_a_split_run_as_one_partition(tmp_path: Path) -> None:
    from auditor.errors import ConnectorError

    conn = connector_for(f"chroma://{tmp_path}", collection="docs")  # the contract's default: no I/O needed
    plan = conn.partitions(target_points=10)
    assert not plan.split and plan.remote and plan.reason == "Chroma stores are read as one partition"
    with pytest.raises(ConnectorError, match="cannot read partition 'rows 5-9'"):
        next(iter(conn.iter_partition(Partition(0, "rows 5-9", {"rows": [5, 10]}))))
