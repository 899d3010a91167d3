"""Quarantine exactness on every store that can write: 1,000 real all-MiniLM vectors (texts of tests/data), plus
vectors built to be and not to be fixed points of normalisation on any CPU, moved to the quarantine collection
and released, then compared bit for bit with the store as a new client reads it.

Each store runs two ways. The quarantine state machine (ledger backups, encrypted; verification after reopening;
notes) moves and releases a sample of 24 points: it commits every step of every point to the ledger, a few points
a second, so it does not run on all 1,000 here. The store's side of the same operations (``ensure_collection_like``,
``upsert_points``, ``delete_points`` with the points as decoded from an encrypted ledger backup) then runs on
every point at once. Chroma's cosine space rounds what is written in a way of its own: there, the copy in the
(ip) quarantine collection is exact, a released point is exact or named in a note, and fixed points are exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import load_jsonl
from quarantine_support import fixed_point_vector, moved_point_vector
from sqlalchemy import select
from support import run_scan

sys.path.insert(0, str(Path(__file__).parents[1] / "contract"))

from connector_stores import (  # the contract suite's engines and builders
    build_lancedb,
    build_milvus,
    build_pgvector,
    build_qdrant,
    canonical,
    create_database,
    f32,
    lancedb_snapshot,
    milvus_snapshot,
    pgvector_server,
    pgvector_snapshot,
    qdrant_snapshot,
)

from auditor.backupcrypt import BackupKeys, new_key
from auditor.connector import Connector
from auditor.findings import point_key
from auditor.ledger import Ledger
from auditor.ledger.models import CollectionRow
from auditor.quarantine import PlanItem, Quarantine, decode_point, encode_point
from auditor.registry import connector_for
from auditor.types import FieldMap, PointId, StoredPoint

TARGET = "docs__quarantine"
FLAG = "vecaudit_quarantine"
FIXED = range(1000, 1004)  # 64 components of +-1/8: norm exactly 1 in any order of summation
MOVED = range(1004, 1006)  # norm 5: no normalisation leaves them alone
NUDGED = range(1006, 1008)  # a MiniLM vector one ulp off in one component
SAMPLE = [*FIXED, *MOVED, *NUDGED, *range(16)]
Snapshot = dict[str, tuple[bytes, str]]


@pytest.fixture(scope="session")
def corpus(embed: Any) -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
    """1,008 points: 1,000 real texts embedded by the bundled all-MiniLM-L6-v2 (once per session), then the
    built vectors; ids 0..1007, payload text and tenant."""
    sources = ["wikipedia_en", "pubmed", "wikipedia_es", "emails", "hotpotqa_retrieved", "code"]
    texts = list(dict.fromkeys(r["text"] for name in sources for r in load_jsonl(f"{name}.jsonl")))[:1000]
    assert len(texts) == 1000
    vectors = [*embed(texts).astype(np.float32)]
    vectors += [fixed_point_vector(384, seed) for seed in FIXED]
    vectors += [moved_point_vector(384, seed) for seed in MOVED]
    for seed in NUDGED:
        v = vectors[seed - 1000].copy()
        v[7] = np.nextafter(v[7], np.float32(1))
        vectors.append(v)
    texts += [f"built vector {i}" for i in range(1000, 1008)]
    payloads = [{"text": t, "tenant": "acme" if i % 2 else "globex"} for i, t in enumerate(texts)]
    return list(range(1008)), np.stack(vectors), payloads


@dataclass
class Store:
    """One store holding the corpus: its URI and a reader that opens it anew (a new client or process)."""

    name: str
    uri: str
    read: Callable[[], Snapshot]
    keeps_bits: bool = True


CHROMA_READER = """
import json, sys, chromadb
client = chromadb.PersistentClient(path=sys.argv[1], settings=chromadb.Settings(anonymized_telemetry=False))
got = client.get_collection("docs", embedding_function=None).get(include=["embeddings", "metadatas", "documents"])
print(json.dumps([[i, [float(x) for x in e], m, d]
                  for i, e, m, d in zip(got["ids"], got["embeddings"], got["metadatas"], got["documents"])]))
"""


def chroma_in_new_process(path: Path) -> Snapshot:
    """Chroma shares one client per folder within a process: a new process is the way to reopen the store."""
    out = subprocess.run([sys.executable, "-c", CHROMA_READER, str(path)], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return {pid: (f32(vec), canonical({**(meta or {}), "document": doc})) for pid, vec, meta, doc in json.loads(out)}


def build_chroma_space(path: Path, ids: list[int], vectors: np.ndarray, payloads: list[dict[str, Any]],
                       space: str) -> None:
    import chromadb

    client = chromadb.PersistentClient(path=str(path), settings=chromadb.Settings(anonymized_telemetry=False))
    config: Any = {"hnsw": {"space": space}}
    coll = client.create_collection("docs", configuration=config, embedding_function=None)
    coll.add(ids=[str(i) for i in ids], embeddings=vectors, documents=[p["text"] for p in payloads],
             metadatas=[{"tenant": p["tenant"]} for p in payloads])


STORES = ["qdrant-cosine", "qdrant-dot", "chroma-cosine", "pgvector", "milvus", "lancedb"]


@pytest.fixture(scope="session")
def pg_exactness_server() -> Iterator[str]:
    with pgvector_server() as url:
        yield url


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """A folder in memory (tmpfs) where the machine has one: local stores commit every written point, and what
    is checked here does not depend on the disk; else the test's temporary folder."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="vecaudit-exactness-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, work: Path, corpus: Any) -> Store:
    name: str = request.param
    ids, vectors, payloads = corpus
    if name.startswith("qdrant"):
        path = work / "qdrant"
        return Store(name, build_qdrant(path, ids, vectors, payloads, distance=name.split("-")[1]),
                     lambda: qdrant_snapshot(path))
    if name.startswith("chroma"):
        space = name.split("-")[1]
        build_chroma_space(work / "chroma", ids, vectors, payloads, space)
        return Store(name, f"chroma://{work / 'chroma'}", lambda: chroma_in_new_process(work / "chroma"),
                     keeps_bits=space != "cosine")
    if name == "pgvector":
        url = create_database(request.getfixturevalue("pg_exactness_server"), "exactness")
        build_pgvector(url, ids, vectors, payloads)

        def read_pg() -> Snapshot:
            snap = pgvector_snapshot(url)
            snap.pop("__writes__")
            return snap

        return Store(name, url.replace("postgresql://", "pgvector://") + "?table=docs&distance=cosine", read_pg)
    if name == "milvus":
        from milvus_lite.server_manager import server_manager_instance

        path = work / "milvus.db"
        # Milvus Lite serves a file from a thread until the process ends: stop it before the folder goes
        request.addfinalizer(lambda: server_manager_instance.release_server(str(path)))
        return Store(name, build_milvus(path, ids, vectors, payloads), lambda: milvus_snapshot(path))
    path = work / "lancedb"
    build_lancedb(path, ids, vectors, payloads)
    return Store(name, f"lancedb://{path}?table=docs&distance=cosine", lambda: lancedb_snapshot(path))


def open_store(store: Store) -> Connector:
    return connector_for(store.uri, collection="docs")


def all_points(conn: Connector) -> dict[str, StoredPoint]:
    """Every point as the connector reads it (the store's own id types), by ``str(id)``."""
    ids = [pid for batch, _ in conn.iter_batches(batch_size=500) for pid in batch.ids]
    return {str(p.id): p for p in conn.fetch(ids)}


def as_vector(point: StoredPoint) -> np.ndarray:
    return np.asarray(next(iter(point.vectors.values())), dtype=np.float32)


def differing(before: Snapshot, after: Snapshot) -> set[int]:
    assert after.keys() == before.keys()
    assert all(after[k][1] == before[k][1] for k in before)  # payloads: always exact
    return {int(k) for k in before if after[k][0] != before[k][0]}


def test_move_and_release_give_every_bit_back_after_reopening(store: Store, work: Path) -> None:
    original = store.read()
    keys = BackupKeys.parse(new_key().decode(), source="test")
    ledger_url = f"sqlite:///{work / 'ledger.db'}"
    scan = run_scan(store.uri, ledger_url, detectors=["integrity"], field_map=FieldMap(text="text"))
    assert scan.status == "completed", scan.error
    with open_store(store) as conn:
        points = all_points(conn)
    assert len(points) == 1008

    # 1. the state machine on a sample: ledger backups, verification after reopening, notes
    ledger = Ledger(ledger_url).open()
    try:
        with ledger.session() as s:
            coll = s.scalars(select(CollectionRow)).one()
            s.expunge(coll)
        items = [plan_item(coll, points[str(i)].id, scan.scan_id) for i in SAMPLE]
        runner = Quarantine(ledger, actor="exactness", keys=keys)
        applied = runner.apply(items)
        assert [(o.state, o.notes) for o in applied] == [("applied", [])] * len(SAMPLE), applied
        released = runner.release([o.action_id for o in applied if o.action_id])
        assert [o.state for o in released] == ["released"] * len(SAMPLE), released
    finally:
        ledger.dispose()
    after_sample = store.read()
    altered = differing(original, after_sample)
    named = {int(str(o.point_id)) for o in released for n in o.notes if "ulp off" in n}
    assert named == altered  # every point the store did not give back is named, and no other
    assert not altered & set(FIXED)
    if store.keeps_bits:
        assert altered == set()

    # 2. the same store operations on every point at once, with the points as an encrypted backup returns them
    backups = {k: decode_point(keys.open(keys.seal(encode_point(p)), action_id=0)) for k, p in points.items()}
    ids: list[PointId] = [p.id for p in backups.values()]
    with open_store(store) as conn:
        conn.ensure_collection_like(TARGET)
        conn.upsert_points([flagged(p) for p in backups.values()], collection=TARGET)
        conn.delete_points(ids)
        conn.close()  # reopen: the copies as a new client reads them
        copies = {str(p.id): p for p in conn.fetch_points(ids, collection=TARGET)}
        assert copies.keys() == backups.keys() and conn.fetch(ids) == []
        assert all(as_vector(copies[k]).tobytes() == as_vector(b).tobytes() for k, b in backups.items())
        conn.upsert_points(list(backups.values()))
        conn.delete_points(ids, collection=TARGET)
    final = store.read()
    altered = differing(original, final)
    assert not altered & set(FIXED)
    if store.keeps_bits:
        assert altered == set(), sorted(altered)[:10]
    for k in map(str, altered):  # a normalising store (Chroma cosine): the same vector up to float32 rounding
        got, want = np.frombuffer(final[k][0], np.float32), np.frombuffer(original[k][0], np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def plan_item(coll: CollectionRow, pid: PointId, scan_id: int) -> PlanItem:
    return PlanItem(collection_id=coll.id, collection=coll.name, source=coll.source, point_key=point_key(pid),
                    point_id=pid, finding_ids=[], rule_ids=[], statuses=[], mode="move", target=TARGET,
                    flag_field=FLAG, last_scan_id=scan_id)


def flagged(point: StoredPoint) -> StoredPoint:
    return StoredPoint(point.id, point.vectors, {**point.payload, FLAG: {"action_id": 0, "finding_ids": []}})
