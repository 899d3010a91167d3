"""Quarantine throughput: apply and release N points in tag and move mode on a Qdrant local store, with the
bit-exact round trip checked at the end.

    .venv/bin/python benchmarks/quarantine_speed.py --points 2000 --quarantine 200

Vectors are random unit vectors (write speed does not depend on the text); the ledger is SQLite on disk.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from auditor.engine import Scanner, ScanOptions
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.quarantine import Quarantine, Selection, plan
from auditor.registry import connector_for, detector_classes
from auditor.types import FieldMap


def build(path: Path, n: int, k: int, dim: int) -> tuple[str, str, list[int]]:
    from qdrant_client import QdrantClient, models

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    client = QdrantClient(path=str(path / "store"))
    client.create_collection("docs", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
    payloads = [{"text": f"document {i}", "tenant": "acme"} for i in range(n)]
    for i in range(k):  # the integrity detector flags a missing tenant: k findings to quarantine
        del payloads[i]["tenant"]
    for start in range(0, n, 500):
        client.upsert(
            "docs",
            [
                models.PointStruct(id=i, vector=vectors[i].tolist(), payload=payloads[i])
                for i in range(start, min(n, start + 500))
            ],
        )
    client.close()
    uri = f"qdrant+local://{(path / 'store').resolve()}"
    ledger_url = f"sqlite:///{path / 'ledger.db'}"
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    try:
        result = Scanner(
            ledger,
            connector,
            [detector_classes()["integrity"]()],
            ScanOptions(field_map=FieldMap(text="text", tenant="tenant"), show_progress=False),
        ).run()
    finally:
        connector.close()
    ids = [r.row_id for r in result.findings if r.finding.rule_id == "VA108"]
    with ledger.session() as s:
        for fid in ids:
            repo.add_review(s, finding_id=fid, reviewer="bench", verdict="confirmed", note=None)
    ledger.dispose()
    return uri, ledger_url, ids


def snapshot(uri: str) -> dict[object, tuple[bytes, dict[str, object]]]:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    out: dict[object, tuple[bytes, dict[str, object]]] = {}
    offset = None
    while True:
        recs, offset = client.scroll("docs", limit=1000, offset=offset, with_vectors=True, with_payload=True)
        out.update({r.id: (np.asarray(r.vector, dtype="<f4").tobytes(), dict(r.payload or {})) for r in recs})
        if offset is None:
            break
    client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--quarantine", type=int, default=200)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    print("| mode | points quarantined | apply s | apply pts/s | release s | release pts/s | bit-exact |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for mode in ("tag", "move"):
        with tempfile.TemporaryDirectory() as tmp:
            uri, ledger_url, finding_ids = build(Path(tmp), args.points, args.quarantine, args.dim)
            before = snapshot(uri)
            ledger = Ledger(ledger_url).open()
            runner = Quarantine(ledger, actor="bench")
            items = plan(ledger, Selection(finding_ids=finding_ids), mode=mode)
            t0 = time.perf_counter()
            applied = runner.apply(items)
            t_apply = time.perf_counter() - t0
            assert all(o.state == "applied" for o in applied), applied[:3]
            action_ids = [o.action_id for o in applied if o.action_id is not None]
            t0 = time.perf_counter()
            released = runner.release(action_ids)
            t_release = time.perf_counter() - t0
            assert all(o.state == "released" for o in released)
            exact = snapshot(uri) == before
            ledger.dispose()
            k = len(action_ids)
            rates = f"{t_apply:.1f} | {k / t_apply:.0f} | {t_release:.1f} | {k / t_release:.0f}"
            print(f"| {mode} | {k} | {rates} | {exact} |")


if __name__ == "__main__":
    main()
