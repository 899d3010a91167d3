"""Cost of `scan --incremental` against a full scan after 1% of a 100k-point collection changed, with every
default detector, and whether both record the same findings.

    .venv/bin/python benchmarks/incremental.py [--points 100000] [--changed 0.01] [--data ../shared/data/dev]
        [--cache ~/.cache/vecaudit-bench] [--work /tmp/vecaudit-incremental] [--no-final-full]

The store is a Parquet export (the `file://` connector: the cheapest read, so the scans' own work shows).
Every point is two real documents of the dev corpora (Wikipedia, PubMedQA, HotpotQA, BIPIA e-mails) joined, its
vector the normalised sum of their all-MiniLM-L6-v2 embeddings (from the embedding cache that
``benchmarks/embedding_quality.py`` writes; documents missing from it are embedded once), its tenant the corpus
of the first document: 100k distinct texts whose vectors agree with a re-embedding of the text at cosine ~0.9,
without embedding 100k texts on a 2-core box. Then 1% of points change: half get a new text (a third document
appended), half a moved vector (the second document swapped). Scans:

1. baseline: ``--incremental`` with no earlier scan = a full scan that leaves its state (graphs, re-embeddings);
2. incremental: the changed collection, ``--incremental``;
3. full (unless ``--no-final-full``): the changed collection, a plain full scan into a copy of the baseline
   ledger, timed, and its findings compared with the incremental scan's.

The in-process encoding cache is cleared before every scan, so each scan pays for its own embedding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORPORA = {
    "wiki": "corpora/wikipedia_vital_en_even.jsonl",
    "pubmed": "corpora/pubmedqa_abstracts.jsonl",
    "hotpot": "corpora/piarena_hotpotqa_retrieved_passages.jsonl",
    "email": "corpora/bipia_email_contexts.jsonl",
}
MARKERS = {
    "wiki": {"names": ["Acme Corp"], "canaries": ["WIKI-CANARY-0001"]},
    "pubmed": {"names": ["Globex Industries"]},
    "hotpot": {"domains": ["initech.example"]},
}
#: Characters kept of each joined document: two of them stay inside the model's 256-token window.
PART_CHARS = 600


def _documents(data: Path, cache_dir: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Tenant, text and embedding of every dev document (embedding cache first, the model for the rest)."""
    tenants: list[str] = []
    texts: list[str] = []
    for tenant, rel in CORPORA.items():
        with open(data / rel, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    tenants.append(tenant)
                    texts.append(json.loads(line)["text"])
    cached: dict[str, np.ndarray] = {}
    path = cache_dir / "minilm.npz"
    if path.exists():
        with np.load(path) as z:
            cached = {str(k): v for k, v in zip(z["keys"], z["vecs"], strict=True)}
    keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    missing = [i for i, k in enumerate(keys) if k not in cached]
    if missing:
        from auditor.embedder import Embedder

        print(f"embedding {len(missing)} documents missing from {path}", flush=True)
        for i, v in zip(missing, Embedder().encode([texts[i] for i in missing], show_progress=True), strict=True):
            cached[keys[i]] = v
    return tenants, texts, np.stack([cached[k] for k in keys]).astype(np.float32)


def _point(texts: list[str], vecs: np.ndarray, parts: tuple[int, ...]) -> tuple[str, np.ndarray]:
    text = "\n\n".join(texts[p][:PART_CHARS] for p in parts)
    v = vecs[list(parts)].sum(axis=0)
    return text, (v / np.linalg.norm(v)).astype(np.float32)


def build(n: int, data: Path, cache_dir: Path, seed: int) -> dict[str, Any]:
    tenants, texts, vecs = _documents(data, cache_dir)
    rng = np.random.default_rng(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n:
        a, b = rng.integers(0, len(texts), size=2)
        if a != b:
            pairs.add((int(a), int(b)))
    rows = sorted(pairs, key=lambda _: rng.random())
    out_text, out_vec = zip(*(_point(texts, vecs, p) for p in rows), strict=True)
    return {
        "ids": np.arange(n, dtype=np.int64),
        "parts": rows,
        "text": list(out_text),
        "vectors": np.stack(out_vec),
        "tenant": [tenants[a] for a, _ in rows],
        "doc_texts": texts,
        "doc_vecs": vecs,
    }


def write_parquet(path: Path, store: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = store["vectors"].shape[1]
    table = pa.table({
        "id": pa.array(store["ids"]),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(store["vectors"].reshape(-1)), dim),
        "text": pa.array(store["text"]),
        "tenant": pa.array(store["tenant"]),
    })
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, row_group_size=10_000)
    os.replace(tmp, path)


def change(store: dict[str, Any], fraction: float, seed: int) -> int:
    """Re-text half of the chosen points (a third document appended), move the other half's vectors."""
    rng = np.random.default_rng(seed + 1)
    n = len(store["ids"])
    chosen = rng.choice(n, size=int(n * fraction), replace=False)
    half = len(chosen) // 2
    docs, doc_vecs = store["doc_texts"], store["doc_vecs"]
    for i in chosen[:half]:
        extra = int(rng.integers(0, len(docs)))
        store["text"][i] = store["text"][i] + "\n\n" + docs[extra][:200]
    for i in chosen[half:]:
        a, _ = store["parts"][i]
        _, vec = _point(docs, doc_vecs, (a, int(rng.integers(0, len(docs)))))
        store["vectors"][i] = vec  # the text stays: a moved vector the tamper detector should notice
    return len(chosen)


def scan(uri: str, ledger_url: str, *, incremental: bool, state_dir: Path) -> tuple[float, Any]:
    from auditor.context import ScanSettings
    from auditor.embedder import clear_encoding_cache
    from auditor.engine import Scanner, ScanOptions
    from auditor.ledger import Ledger
    from auditor.registry import connector_for, detector_classes
    from auditor.types import FieldMap

    clear_encoding_cache()
    dets = [cls() for cls in detector_classes().values() if cls.enabled_by_default]
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri)
    opts = ScanOptions(
        field_map=FieldMap(text="text", tenant="tenant"),
        settings=ScanSettings(extra={"tenant_markers": MARKERS}),
        show_progress=sys.stderr.isatty(),
        batch_size=2048,
        incremental=incremental,
        state_dir=str(state_dir),
    )
    start = time.perf_counter()
    try:
        result = Scanner(ledger, connector, dets, opts).run()
    finally:
        connector.close()
        ledger.dispose()
    return time.perf_counter() - start, result


def _summary(seconds: float, result: Any) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 1), "status": result.status, "findings": len(result.findings),
        "carried": result.counts.get("carried"), "stage_seconds": result.counts.get("seconds"),
        "notes": [n for n in result.notes if "incremental" in n or "re-embedded" in n],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dev")
    ap.add_argument("--cache", type=Path, default=Path("~/.cache/vecaudit-bench").expanduser())
    ap.add_argument("--work", type=Path, default=Path("/tmp/vecaudit-incremental"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-final-full", action="store_true", help="skip the full scan after the change")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    t0 = time.perf_counter()
    store = build(args.points, args.data, args.cache, args.seed)
    export = args.work / "export.parquet"
    write_parquet(export, store)
    uri = f"file://{export}"
    print(f"built a {args.points:,}-point Parquet export in {time.perf_counter() - t0:.0f} s", flush=True)
    state = args.work / "state"
    report: dict[str, Any] = {"points": args.points}
    base_time, base = scan(uri, f"sqlite:///{args.work / 'inc.db'}", incremental=True, state_dir=state)
    report["baseline_full_scan"] = _summary(base_time, base)
    print(json.dumps(report["baseline_full_scan"]), flush=True)
    shutil.copy(args.work / "inc.db", args.work / "full.db")
    report["changed_points"] = change(store, args.changed, args.seed)
    write_parquet(export, store)
    inc_time, inc = scan(uri, f"sqlite:///{args.work / 'inc.db'}", incremental=True, state_dir=state)
    report["incremental_scan"] = _summary(inc_time, inc)
    report["ratio_to_baseline_full"] = round(inc_time / base_time, 3)
    print(json.dumps(report["incremental_scan"]), flush=True)
    if not args.no_final_full:
        full_time, full = scan(uri, f"sqlite:///{args.work / 'full.db'}", incremental=False, state_dir=state)
        report["full_scan_after_change"] = _summary(full_time, full)
        report["ratio"] = round(inc_time / full_time, 3)
        sig_inc = {(r.fingerprint, r.is_new, r.status) for r in inc.findings}
        sig_full = {(r.fingerprint, r.is_new, r.status) for r in full.findings}
        report["identical_findings"] = sig_inc == sig_full
        report["only_incremental"] = len(sig_inc - sig_full)
        report["only_full"] = len(sig_full - sig_inc)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
