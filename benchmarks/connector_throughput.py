"""Read throughput (points/s) and peak memory of every connector on the same data: one streaming pass
(``iter_batches`` + ``resolve_batch``, as pass 1 of a scan) in a fresh process per store and size.

Usage: .venv/bin/python benchmarks/connector_throughput.py [--sizes 20000,200000] [--dim 384] [--stores ...]
Memory is bounded when the peak RSS growth during the pass stays flat as the collection grows 10x.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "contract"))

STORES = ["qdrant", "chroma", "chroma-http", "pgvector", "milvus", "lancedb", "parquet", "jsonl", "npz"]


def make_data(n: int, dim: int) -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
    """Deterministic vectors and short payloads; the same for every store."""
    rng = np.random.default_rng(2026)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = list(range(1, n + 1))
    payloads = [{"text": f"synthetic passage number {i} about topic {i % 97}", "tenant": f"tenant-{i % 8}"}
                for i in range(n)]
    return ids, vectors, payloads


def build(name: str, root: Path, data: Any, servers: dict[str, Any]) -> str:
    """Write the data into one store; returns the URI the connector reads."""
    import connector_stores as cs

    ids, vectors, payloads = data
    if name == "qdrant":
        return cs.build_qdrant(root / "qdrant", ids, vectors, payloads)
    if name in ("chroma", "chroma-http"):
        import chromadb

        settings = chromadb.Settings(anonymized_telemetry=False)
        if name == "chroma":
            cs.build_chroma(chromadb.PersistentClient(path=str(root / "chroma"), settings=settings), ids, vectors,
                            payloads)
            return f"chroma://{root / 'chroma'}"
        host, port = servers["chroma-http"]
        client = chromadb.HttpClient(host=host, port=port, settings=settings)
        with contextlib.suppress(Exception):
            client.delete_collection("docs")
        cs.build_chroma(client, ids, vectors, payloads)
        return f"chroma+http://{host}:{port}"
    if name == "pgvector":
        url = cs.create_database(servers["pgvector"], f"bench_{len(ids)}")
        cs.build_pgvector(url, ids, vectors, payloads)
        return url.replace("postgresql://", "pgvector://") + "?table=docs&distance=cosine"
    if name == "milvus":
        # Milvus Lite keeps its file locked while the writing process lives: write from a forked child.
        import multiprocessing

        child = multiprocessing.get_context("fork").Process(target=cs.build_milvus,
                                                            args=(root / "milvus.db", ids, vectors, payloads))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"building the Milvus Lite store failed (exit {child.exitcode})")
        return f"milvus://{root / 'milvus.db'}"
    if name == "lancedb":
        cs.build_lancedb(root / "lancedb", ids, vectors, payloads)
        return f"lancedb://{root / 'lancedb'}?table=docs"
    path = root / f"export.{name}"
    {"parquet": cs.build_parquet, "jsonl": cs.build_jsonl, "npz": cs.build_npz}[name](path, ids, vectors, payloads)
    return f"file://{path}"


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def scan(uri: str, batch_size: int) -> dict[str, Any]:
    """One streaming pass in this process; run in a child so peak RSS belongs to this store alone."""
    from auditor.batching import resolve_batch
    from auditor.registry import connector_for
    from auditor.types import FieldMap

    field_map = FieldMap(text="document" if uri.startswith("chroma") else "text", tenant="tenant")
    with connector_for(uri, collection="docs") as conn:
        info = conn.describe()
        baseline = _rss_mb()
        peak, points, texts = baseline, 0, 0
        started = time.perf_counter()
        for page, _ in conn.iter_batches(batch_size=batch_size):
            batch = resolve_batch(page, field_map, info.dim)
            points += len(batch)
            texts += sum(t is not None for t in batch.texts)
            peak = max(peak, _rss_mb())
        seconds = time.perf_counter() - started
    return {"points": points, "texts": texts, "count": info.count, "seconds": seconds,
            "baseline_mb": baseline, "peak_growth_mb": peak - baseline,
            # Polled, not ru_maxrss: Linux keeps the parent's high-water mark across fork + exec.
            "max_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--stores", nargs="*", default=STORES, choices=STORES)
    parser.add_argument("--workdir", type=Path, default=None, help="where stores are built (default: a temp dir)")
    parser.add_argument("--scan", help=argparse.SUPPRESS)  # child mode: scan one URI, print JSON
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.scan:
        print(json.dumps(scan(args.scan, args.batch_size)))
        return

    import connector_stores as cs

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vecaudit-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    with contextlib.ExitStack() as stack:
        servers: dict[str, Any] = {}
        if "pgvector" in args.stores:
            servers["pgvector"] = stack.enter_context(cs.pgvector_server())
        if "chroma-http" in args.stores:
            servers["chroma-http"] = stack.enter_context(cs.chroma_server(workdir / "chroma-server"))
        for n in [int(s) for s in args.sizes.split(",")]:
            data = make_data(n, args.dim)
            raw_mb = n * args.dim * 4 / 2**20
            for name in args.stores:
                root = workdir / f"{name}-{n}"
                root.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                uri = build(name, root, data, servers)
                build_s = time.perf_counter() - t0
                child = subprocess.run([sys.executable, __file__, "--scan", uri, "--batch-size", str(args.batch_size)],
                                       capture_output=True, text=True, check=False)
                if child.returncode != 0:
                    print(f"{name} n={n}: scan failed\n{child.stderr[-2000:]}", file=sys.stderr)
                    continue
                result = json.loads(child.stdout.strip().splitlines()[-1])
                assert result["points"] == result["count"] == n, result
                row = {"store": name, "n": n, "dim": args.dim, "raw_vectors_mb": round(raw_mb, 1),
                       "build_s": round(build_s, 1), "read_s": round(result["seconds"], 2),
                       "points_per_s": round(n / result["seconds"]),
                       "peak_growth_mb": round(result["peak_growth_mb"], 1),
                       "max_rss_mb": round(result["max_rss_mb"], 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\nmachine: {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}; "
          f"batch size {args.batch_size}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| store | points | read s | points/s | peak RSS growth MB | max RSS MB | raw vectors MB | build s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['store']} | {r['n']} | {r['read_s']} | {r['points_per_s']} | {r['peak_growth_mb']} | "
              f"{r['max_rss_mb']} | {r['raw_vectors_mb']} | {r['build_s']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
