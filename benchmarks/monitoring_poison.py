"""Poison clusters in monitoring scans: what the ledger's provenance does (issue 17 items 3 and 7).

    .venv/bin/python benchmarks/monitoring_poison.py [--corpora web_evidence,reuters,govuk,hotpotqa,wiki]
        [--max-docs 3000] [--seed 0] [--out /tmp/vecaudit-monitoring]

For each corpus: a baseline scan of 90% of its clean documents (a seeded choice), then the other 10% arrive
together with PoisonedRAG passages stored without their question (~1% of the store, five per target question: the
wave) and the same store is scanned again into the same ledger, as a scheduled scan would. For the second scan it
reports, on the clean documents that arrived with the wave and on those of the baseline: the share flagged by
poison-cluster (VA321/VA322) at LOW+ and MEDIUM+, and the share that raised a new *alert* from any default detector
(monitoring mode: only findings on new or changed points, or HIGH, alert); for the poisons: recall at LOW+ /
MEDIUM+ and alerting. And what provenance did: how many of the VA322 findings arrived "together" (+0.1) or
"spread" over scans (-0.1). Parameters are the shipped defaults; nothing here is tuned. Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from content_data import DEFAULT_DATA  # noqa: E402
from embedding_quality import EmbeddingCache, poison_sets  # noqa: E402
from generalization import (  # noqa: E402
    corpus_sample,
    default_scan,
    machine,
    parse_corpora,
    question_key,
    share,
    source_label,
    write_jsonl,
)

from auditor.types import Severity  # noqa: E402

DEFAULT_CORPORA = ("web_evidence", "reuters", "govuk", "hotpotqa", "wiki")
ARRIVING = 0.1
POISON = frozenset({"poison-cluster"})


def run_corpus(corpus: str, args: argparse.Namespace, embed: EmbeddingCache) -> dict[str, Any]:
    """Baseline scan, then the wave and a second scan of the same store into the same ledger."""
    rows = corpus_sample(args.data, corpus, args.max_docs, args.seed)
    vecs = embed([r["text"] for r in rows])
    rng = random.Random(f"{args.seed}:{corpus}:monitoring")
    arriving = set(rng.sample(range(len(rows)), max(1, round(ARRIVING * len(rows)))))
    baseline = [i for i in range(len(rows)) if i not in arriving]
    passages = poison_sets(args.data)["PoisonedRAG passage only"]
    targets = sorted({question_key(r) for r in passages})
    rng.shuffle(targets)
    chosen = set(targets[: share(len(rows), 0.01 / 5)])
    poison_rows = [r for r in passages if question_key(r) in chosen]
    poison_vecs = embed([r["text"] for r in poison_rows])
    folder = args.out / corpus
    folder.mkdir(parents=True, exist_ok=True)
    store, ledger = folder / "store.jsonl", folder / "ledger.db"
    write_jsonl(store, [(i, vecs[i], {"text": rows[i]["text"]}) for i in baseline])
    first = default_scan(store, ledger, tenant=False, seed=args.seed, embed_sample=None)
    poison_ids = list(range(len(rows), len(rows) + len(poison_rows)))
    points = [(i, vecs[i], {"text": r["text"]}) for i, r in enumerate(rows)]
    points += [(pid, v, {"text": r["text"]}) for pid, v, r in zip(poison_ids, poison_vecs, poison_rows, strict=True)]
    write_jsonl(store, points)
    second = default_scan(store, ledger, tenant=False, seed=args.seed, embed_sample=None, fresh=False)
    store.unlink()
    doc = {"corpus": corpus, "first": first["bench"], "findings": second["findings"], "bench": second["bench"],
           "truth": {"arrived": sorted(arriving), "baseline": baseline, "poison": poison_ids}}
    (folder / "second.scan.json").write_text(json.dumps(doc, default=str), encoding="utf-8")
    print(f"[{time.strftime('%H:%M:%S')}] {corpus}: {first['bench']['seconds']:.0f} s + "
          f"{second['bench']['seconds']:.0f} s", file=sys.stderr, flush=True)
    return doc


def measures(doc: dict[str, Any]) -> dict[str, Any]:
    findings = [f for f in doc["findings"] if f["point_id"] is not None]
    groups = {name: {str(i) for i in ids} for name, ids in doc["truth"].items()}

    def hit(name: str, *, level: Severity, detectors: frozenset[str] | None = None, alert: bool = False) -> int:
        return len({str(f["point_id"]) for f in findings
                    if Severity(f["severity"]) >= level and (detectors is None or f["detector"] in detectors)
                    and (not alert or f.get("alert"))} & groups[name])

    out: dict[str, Any] = {name: len(ids) for name, ids in groups.items()}
    for name in groups:
        out[f"{name} pc LOW+"] = hit(name, level=Severity.LOW, detectors=POISON)
        out[f"{name} pc MEDIUM+"] = hit(name, level=Severity.MEDIUM, detectors=POISON)
        out[f"{name} alert"] = hit(name, level=Severity.INFO, alert=True)
    claims = [f for f in findings if f["rule_id"] == "VA322"]
    for name in ("poison", "arrived", "baseline"):
        mine = [f for f in claims if str(f["point_id"]) in groups[name]]
        arrival = [f["evidence"].get("arrival") or {} for f in mine]
        out[f"{name} together"] = sum(bool(a.get("together")) for a in arrival)
        out[f"{name} spread"] = sum(a.get("spread", 0) >= 0.5 and not a.get("together") for a in arrival)
        out[f"{name} info (claim made around)"] = sum("claim_support" in f["evidence"] for f in mine)
    return out


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.2f}% ({k})" if n else "-"


def report(docs: list[dict[str, Any]]) -> list[str]:
    lines = ["| corpus | clean arrived | their poison-cluster LOW+ / MEDIUM+ | their alerts (any detector) | "
             "baseline docs | their poison-cluster MEDIUM+ | their alerts | poisons | recall LOW+ / MEDIUM+ | "
             "poisons alerting | VA322 together (poison / clean) | VA322 spread (poison / clean) | "
             "VA322 INFO, claim made around (poison / clean) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|---|---|"]
    for doc in docs:
        m = measures(doc)
        a, b, p = m["arrived"], m["baseline"], m["poison"]
        clean_together = m["arrived together"] + m["baseline together"]
        lines.append(
            f"| {doc['corpus']} | {a} | {_pct(m['arrived pc LOW+'], a)} / {_pct(m['arrived pc MEDIUM+'], a)} | "
            f"{_pct(m['arrived alert'], a)} | {b} | {_pct(m['baseline pc MEDIUM+'], b)} | "
            f"{_pct(m['baseline alert'], b)} | {p} | "
            f"{m['poison pc LOW+'] / p:.2f} / {m['poison pc MEDIUM+'] / p:.2f} | "
            f"{m['poison alert'] / p:.2f} | {m['poison together']} / {clean_together} | "
            f"{m['poison spread']} / {m['arrived spread'] + m['baseline spread']} | "
            f"{m['poison info (claim made around)']} / "
            f"{m['arrived info (claim made around)'] + m['baseline info (claim made around)']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--corpora", default=",".join(DEFAULT_CORPORA))
    ap.add_argument("--max-docs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/vecaudit-monitoring"))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vecaudit-bench")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--source", help="what code is scanned with, for the header [git HEAD of this checkout]")
    args = ap.parse_args(argv)
    corpora = parse_corpora(ap, args.corpora)
    started, load = time.time(), os.getloadavg()[0]
    if args.report_only:
        docs = [json.loads((args.out / c / "second.scan.json").read_text(encoding="utf-8")) for c in corpora]
    else:
        embed = EmbeddingCache(args.cache)
        docs = [run_corpus(c, args, embed) for c in corpora]
    print("\n".join([
        f"## Monitoring scans: a wave of poison and new clean documents — {time.strftime('%Y-%m-%d %H:%M UTC')}", "",
        f"Machine: {machine(args.source or source_label())}. Load average at start {load:.1f}; wall "
        f"{(time.time() - started) / 60:.1f} min.", "", *report(docs)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
