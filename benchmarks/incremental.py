"""Cost of `scan --incremental` against a full scan after 1% of a 100k-point collection changed, and proof that
both record the same findings.

    .venv/bin/python benchmarks/incremental.py [--points 100000] [--changed 0.01] [--data ../shared/data/dev]
        [--detectors tenant-marker,integrity,provenance] [--work /tmp/vecaudit-incremental]

Texts are real (Wikipedia vital articles, PubMedQA abstracts, HotpotQA passages from the dev data, one tenant per
corpus), cycled to the requested size with a numbered suffix; the first ``--embed`` distinct texts are embedded
with the bundled model and every point's vector is one of those plus small Gaussian noise (embedding 100k texts on
2 CPU cores would take hours and is not what this measures). ``tenant-marker`` is run declared pointwise (its
observe reads only the point and the configured markers), the property that lets incremental scans skip it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MARKERS = {
    "wiki": {"names": ["Acme Corp"], "canaries": ["WIKI-CANARY-0001"]},
    "pubmed": {"names": ["Globex Industries"]},
    "hotpot": {"domains": ["initech.example"]},
}
CORPORA = {
    "wiki": "corpora/wikipedia_vital_en_even.jsonl",
    "pubmed": "corpora/pubmedqa_abstracts.jsonl",
    "hotpot": "corpora/piarena_hotpotqa_retrieved_passages.jsonl",
}


def _texts(data: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for tenant, rel in CORPORA.items():
        with open(data / rel, encoding="utf-8") as fh:
            out.extend((tenant, json.loads(line)["text"]) for line in fh if line.strip())
    return out


def build_store(
    path: Path, n: int, data: Path, n_embed: int, seed: int
) -> tuple[str, np.ndarray, list[dict[str, Any]]]:
    from qdrant_client import QdrantClient, models

    from auditor.embedder import Embedder

    rng = np.random.default_rng(seed)
    source = _texts(data)
    order = rng.permutation(len(source))
    source = [source[i] for i in order]
    base = Embedder().encode([t for _, t in source[:n_embed]])
    payloads: list[dict[str, Any]] = []
    for i in range(n):
        tenant, text = source[i % len(source)]
        if i % 997 == 0:  # a sprinkling of foreign markers, so the marker detector has findings to carry
            text += " Figures confirmed by Acme Corp." if tenant != "wiki" else " Contact Globex Industries."
        payloads.append({"text": f"{text} (#{i})", "tenant": tenant})
    vectors = base[np.arange(n) % n_embed] + rng.normal(scale=0.02, size=(n, base.shape[1])).astype(np.float32)
    client = QdrantClient(path=str(path))
    params = models.VectorParams(size=base.shape[1], distance=models.Distance.COSINE)
    client.create_collection("docs", vectors_config=params)
    for start in range(0, n, 2000):
        client.upsert(
            "docs",
            points=[
                models.PointStruct(id=i, vector=vectors[i].tolist(), payload=payloads[i])
                for i in range(start, min(n, start + 2000))
            ],
            wait=True,
        )
    client.close()
    return f"qdrant+local://{path}", vectors, payloads


def change(uri: str, vectors: np.ndarray, payloads: list[dict[str, Any]], fraction: float, seed: int) -> int:
    """Rewrite the text of half of the chosen points and re-embed (move) the vector of the other half."""
    from qdrant_client import QdrantClient, models

    rng = np.random.default_rng(seed + 1)
    chosen = rng.choice(len(vectors), size=int(len(vectors) * fraction), replace=False)
    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    half = len(chosen) // 2
    for i in chosen[:half]:
        client.set_payload("docs", payload={"text": payloads[i]["text"] + " Revised by Acme Corp."}, points=[int(i)])
    moved = vectors[chosen[half:]] + rng.normal(scale=0.05, size=(len(chosen) - half, vectors.shape[1]))
    client.update_vectors(
        "docs",
        points=[
            models.PointVectors(id=int(i), vector=v.astype(np.float32).tolist())
            for i, v in zip(chosen[half:], moved, strict=True)
        ],
    )
    client.close()
    return len(chosen)


def scan(uri: str, ledger_url: str, names: list[str], incremental: bool) -> tuple[float, Any]:
    from auditor.context import ScanSettings
    from auditor.engine import Scanner, ScanOptions
    from auditor.ledger import Ledger
    from auditor.registry import connector_for, detector_classes
    from auditor.types import FieldMap

    classes = detector_classes()

    class PointwiseMarkers(classes["tenant-marker"]):  # type: ignore[misc, valid-type]
        pointwise_observe: ClassVar[bool] = True

    dets = [PointwiseMarkers() if n == "tenant-marker" else classes[n]() for n in names]
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    opts = ScanOptions(
        field_map=FieldMap(text="text", tenant="tenant"),
        settings=ScanSettings(extra={"tenant_markers": MARKERS}),
        show_progress=False,
        batch_size=1024,
        incremental=incremental,
    )
    start = time.perf_counter()
    try:
        result = Scanner(ledger, connector, dets, opts).run()
    finally:
        connector.close()
        ledger.dispose()
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--embed", type=int, default=1000, help="distinct real texts embedded")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dev")
    ap.add_argument("--detectors", default="tenant-marker,integrity,provenance")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vecaudit-incremental"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = args.detectors.split(",")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    t0 = time.perf_counter()
    uri, vectors, payloads = build_store(args.work / "store", args.points, args.data, args.embed, args.seed)
    print(f"built {args.points:,}-point store in {time.perf_counter() - t0:.0f} s", flush=True)
    full_ledger = f"sqlite:///{args.work / 'full.db'}"
    base_time, base = scan(uri, full_ledger, names, incremental=False)
    print(f"baseline full scan: {base_time:.1f} s, {len(base.findings)} findings", flush=True)
    shutil.copy(args.work / "full.db", args.work / "inc.db")
    changed = change(uri, vectors, payloads, args.changed, args.seed)
    inc_time, inc = scan(uri, f"sqlite:///{args.work / 'inc.db'}", names, incremental=True)
    full_time, full = scan(uri, full_ledger, names, incremental=False)
    same = {(r.fingerprint, r.is_new, r.status) for r in inc.findings} == {
        (r.fingerprint, r.is_new, r.status) for r in full.findings
    }
    report = {
        "points": args.points,
        "changed_points": changed,
        "detectors": names,
        "full_scan_s": round(full_time, 2),
        "incremental_scan_s": round(inc_time, 2),
        "ratio": round(inc_time / full_time, 3),
        "findings_full": len(full.findings),
        "findings_incremental": len(inc.findings),
        "carried": inc.counts.get("carried"),
        "identical_findings": same,
        "incremental_notes": inc.notes,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
