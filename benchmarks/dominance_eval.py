"""The dominance detector (VA334/VA335) held out: its gates chosen leave-one-corpus-out and leave-one-family-out.

    .venv/bin/python benchmarks/dominance_eval.py [--data ../shared/data/dev] [--out /tmp/vecaudit-dominance]
        [--attacks /tmp/vecaudit-attack-recall] [--max-docs 2000] [--seed 0] [--report-only]

Stores: every dev corpus clean (at most ``--max-docs`` documents, the seeded sample of ``generalization.py``), and
the three attack stores of ``attack_recall.py`` (wiki, pubmed, reuters with every family planted), rebuilt from the
generated attacks under ``--attacks/generated`` (copied into ``--out``; never regenerated here). Each store is
scanned with the dominance detector **alone**, in-process, with loose gates (z >= 3, neighbour ratio >= 1.5, the
shipped 2,000 pseudo-queries, seed 0), so that every gate setting can be scored offline from the same findings.

Three protocols, each printed as markdown:

1. *LOCO x LOFO*: for host corpus *c* and family *F* (GASLITE or corpus poisoning), the gates (z, ratio, token-soup)
   are chosen on a grid to maximise the MEDIUM recall of the **other** family on the **other** hosts, subject to no
   training clean corpus (all but *c*) above 0.05% at MEDIUM; ties go to the highest gates; *F* is scored on *c*.
2. *attack-free soup gate*: z 5 and ratio 3.5 as shipped; the soup gate is the lowest grid value with no MEDIUM on
   any clean corpus but the held-out one (no attack data at all); both families scored on each host.
3. *shipped gates*: as the detector ships them (in-sample: chosen after reading these stores).

LOW findings (VA334) pass the detector's review budget (ceil(0.1% of the store) LOW, the rest INFO) under the
VA334 floor: in 1-2 chosen on the training clean stores (at most 0.05% of their clean documents at or above it),
in 3 the shipped floor.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from content_data import DEFAULT_DATA  # noqa: E402
from generalization import ALL_CORPORA, corpus_sample, machine, source_label, write_jsonl  # noqa: E402

HOSTS = ("wiki", "pubmed", "reuters")
FAMILIES = ("gaslite", "corpus-poisoning")
LOOSE = {"z": 3.0, "neighbour_ratio": 1.5}
GRID = list(itertools.product([4.0, 5.0, 6.0, 7.0, 8.0], [2.0, 2.5, 3.0, 3.5, 4.0, 5.0],
                              [0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]))
SOUPS = sorted({g[2] for g in GRID})
Gates = tuple[float, float, float]


def scan_alone(points: list[tuple[int, np.ndarray, dict[str, Any]]], folder: Path, seed: int) -> dict[str, Any]:
    """The dominance detector alone (loose gates) over a JSONL store of ``points``: its findings and notes."""
    from auditor.context import ScanSettings
    from auditor.engine import Scanner, ScanOptions
    from auditor.ledger import Ledger
    from auditor.registry import connector_for
    from auditor.types import FieldMap
    from detectors.dominance import DominanceDetector

    store, ledger_path = folder / "store.jsonl", folder / "ledger.db"
    write_jsonl(store, points)
    ledger_path.unlink(missing_ok=True)
    ledger = Ledger(f"sqlite:///{ledger_path}").open()
    connector = connector_for(f"file://{store}")
    started = time.perf_counter()
    try:
        options = ScanOptions(field_map=FieldMap(text="text"), settings=ScanSettings(seed=seed), show_progress=False)
        result = Scanner(ledger, connector, [DominanceDetector(**LOOSE)], options).run()
    finally:
        connector.close()
        ledger.dispose()
        store.unlink()
    return {"seconds": time.perf_counter() - started, "notes": list(result.notes), "points": len(points),
            "findings": [{"point": int(r.finding.point_id), "z": r.finding.evidence["robust_z"],
                          "ratio": r.finding.evidence["neighbour_ratio"], "soup": r.finding.evidence["token_soup"]}
                         for r in result.findings if r.finding.rule_id in ("VA334", "VA335")]}


def build(args: argparse.Namespace) -> None:
    """Scan every clean corpus and the three attack stores; one ``<name>.json`` each under ``--out``."""
    import attack_recall as ar
    from embedding_quality import EmbeddingCache

    embed = EmbeddingCache(args.cache)
    generated = args.out / "generated"
    if not generated.exists():
        shutil.copytree(args.attacks / "generated", generated)
    whitebox = json.loads((generated / "whitebox.json").read_text(encoding="utf-8"))
    ns = argparse.Namespace(data=args.data, out=args.out, seed=args.seed, max_docs=args.max_docs, concept_steps=30,
                            steps=15)
    for corpus in ALL_CORPORA:
        rows = corpus_sample(args.data, corpus, args.max_docs, args.seed)
        vecs = embed([r["text"] for r in rows])
        stores = {"clean": ([(i, vecs[i], {"text": r["text"]}) for i, r in enumerate(rows)],
                            ["clean"] * len(rows))}
        if corpus in HOSTS:
            points, truth = ar.family_store(corpus, rows, vecs, ns, embed, whitebox)
            labels = ["other"] * len(points)
            for i in truth["clean"]:
                labels[i] = "clean"
            for family, ids in truth["planted"].items():
                for i in ids:
                    labels[i] = family
            stores["attack"] = (points, labels)
        for kind, (points, labels) in stores.items():
            doc = scan_alone(points, args.out, args.seed)
            doc["labels"] = labels
            (args.out / f"{corpus}.{kind}.json").write_text(json.dumps(doc), encoding="utf-8")
            print(f"[{time.strftime('%H:%M:%S')}] {corpus} {kind}: {len(points)} points, {doc['seconds']:.0f} s",
                  file=sys.stderr, flush=True)


# -- offline scoring ----------------------------------------------------------------------------------------------
def split(doc: dict[str, Any], gates: Gates) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(VA335, VA334) candidates at ``gates`` = (z, ratio, soup): (point, score) pairs."""
    z, ratio, soup = gates
    medium, low = [], []
    for f in doc["findings"]:
        if f["z"] >= z and f["ratio"] >= ratio:
            (medium if f["soup"] >= soup else low).append((f["point"], f["z"]))
    return medium, low


def floor_from(docs: list[dict[str, Any]], gates: Gates, share: float = 0.0005) -> float:
    """The VA334 floor: at most ``share`` of the clean documents of ``docs`` at or above it."""
    scores = sorted((z for d in docs for p, z in split(d, gates)[1] if d["labels"][p] == "clean"), reverse=True)
    allowed = math.floor(share * sum(lab == "clean" for d in docs for lab in d["labels"]))
    return scores[allowed] + 1e-6 if len(scores) > allowed else gates[0]


def measure(doc: dict[str, Any], gates: Gates, floor: float, family: str | None = None) -> dict[str, float]:
    """Clean share at MEDIUM and LOW+ after the review budget, and the recall of ``family``."""
    medium, low = split(doc, gates)
    ranked = sorted(low, key=lambda t: -t[1])
    review = math.ceil(0.001 * doc["points"])
    kept = [p for p, z in ranked if z >= floor] + [p for p, z in ranked if z < floor][:review]
    med, low_plus = {p for p, _ in medium}, {p for p, _ in medium} | set(kept)
    labels = doc["labels"]
    n_clean = max(1, sum(lab == "clean" for lab in labels))
    out = {"clean_med": sum(labels[p] == "clean" for p in med) / n_clean,
           "clean_low": sum(labels[p] == "clean" for p in low_plus) / n_clean}
    if family:
        planted = {i for i, lab in enumerate(labels) if lab == family}
        out["med"] = len(planted & med) / len(planted)
        out["low"] = len(planted & low_plus) / len(planted)
    return out


def choose(clean: list[dict[str, Any]], attacks: list[dict[str, Any]], family: str) -> tuple[Gates, float, float]:
    best: tuple[tuple[float, ...], Gates, float] | None = None
    for gates in GRID:
        floor = floor_from(clean, gates)
        if any(measure(d, gates, floor)["clean_med"] > 0.0005 for d in clean):
            continue
        recall = float(np.mean([measure(d, gates, floor, family)["med"] for d in attacks]))
        key = (recall, -sum(measure(d, gates, floor)["clean_low"] for d in clean), gates[2], gates[0], gates[1])
        if best is None or key > best[0]:
            best = (key, gates, floor)
    assert best is not None
    return best[1], best[2], best[0][0]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def report(out: Path) -> list[str]:
    from detectors.dominance import DominanceDetector

    docs = {tuple(p.stem.split(".")): json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.json"))
            if p.stem.count(".") == 1}
    corpora = [c for c in ALL_CORPORA if (c, "clean") in docs]
    hosts = [c for c in HOSTS if (c, "attack") in docs]
    lines = ["#### 1. Leave-one-corpus-out x leave-one-family-out (gates chosen on the other family, other hosts, "
             "other corpora's clean stores)", "",
             "| host | held-out family | gates chosen (z, ratio, soup; VA334 floor) | training recall | MEDIUM | LOW+ "
             "| clean % MEDIUM / LOW+ (attack store) |", "|---|---|---|---:|---:|---:|---:|"]
    for c in hosts:
        for family in FAMILIES:
            other = next(f for f in FAMILIES if f != family)
            gates, floor, train = choose([docs[(o, "clean")] for o in corpora if o != c],
                                         [docs[(o, "attack")] for o in hosts if o != c], other)
            m = measure(docs[(c, "attack")], gates, floor, family)
            lines.append(f"| {c} | {family} | {gates[0]:g}, {gates[1]:g}, {gates[2]:g}; {floor:.1f} | {other} "
                         f"{train:.2f} | {m['med']:.2f} | {m['low']:.2f} | {pct(m['clean_med'])} / "
                         f"{pct(m['clean_low'])} |")
    shipped = DominanceDetector().params
    z, ratio = float(shipped["z"]), float(shipped["neighbour_ratio"])
    lines += ["", f"#### 2. Attack-free soup gate (z {z:g}, ratio {ratio:g} as shipped; soup: the lowest with no "
              "MEDIUM on any other corpus's clean store)", "",
              "| held-out corpus | soup; VA334 floor | clean % MEDIUM | clean % LOW+ | GASLITE MEDIUM / LOW+ | "
              "corpus poisoning MEDIUM / LOW+ |", "|---|---|---:|---:|---:|---:|"]
    for c in corpora:
        train = [docs[(o, "clean")] for o in corpora if o != c]
        for soup in SOUPS:
            gates = (z, ratio, soup)
            floor = floor_from(train, gates)
            if all(measure(d, gates, floor)["clean_med"] == 0 for d in train):
                break
        mc = measure(docs[(c, "clean")], gates, floor)
        fams = ["-", "-"]
        if (c, "attack") in docs:
            fams = [f"{m['med']:.2f} / {m['low']:.2f}" for m in
                    (measure(docs[(c, "attack")], gates, floor, f) for f in FAMILIES)]
        lines.append(f"| {c} | {gates[2]:g}; {floor:.1f} | {pct(mc['clean_med'])} | {pct(mc['clean_low'])} | "
                     f"{fams[0]} | {fams[1]} |")
    gates = (z, ratio, float(shipped["soup"]))
    floor = DominanceDetector().floors()["VA334"]
    lines += ["", f"#### 3. Shipped gates (z {z:g}, ratio {ratio:g}, soup {gates[2]:g}, VA334 floor {floor:g}): "
              "in-sample", "", "| corpus | clean % MEDIUM | clean % LOW+ | GASLITE MEDIUM / LOW+ | corpus poisoning "
              "MEDIUM / LOW+ | scan of the clean store |", "|---|---:|---:|---:|---:|---|"]
    for c in corpora:
        mc = measure(docs[(c, "clean")], gates, floor)
        fams = ["-", "-"]
        if (c, "attack") in docs:
            fams = [f"{m['med']:.2f} / {m['low']:.2f}" for m in
                    (measure(docs[(c, "attack")], gates, floor, f) for f in FAMILIES)]
        note = next((n for n in docs[(c, "clean")]["notes"] if n.startswith("dominance:")), "")
        took = note.split(" in ")[1].split(";")[0] if " in " in note else "?"
        lines.append(f"| {c} | {pct(mc['clean_med'])} | {pct(mc['clean_low'])} | {fams[0]} | {fams[1]} | "
                     f"{docs[(c, 'clean')]['points']:,} points, pseudo-queries {took} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=Path("/tmp/vecaudit-dominance"))
    ap.add_argument("--attacks", type=Path, default=Path("/tmp/vecaudit-attack-recall"),
                    help="attack_recall.py's --out, whose generated/ attacks are reused")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vecaudit-bench")
    ap.add_argument("--max-docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        if not (args.out / "generated").exists() and not (args.attacks / "generated").exists():
            ap.error(f"no generated attacks under {args.attacks}/generated: run benchmarks/attack_recall.py first")
        build(args)
    print("\n".join([f"## Dominance held out — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
                     f"Machine: {machine(source_label())}.", "", *report(args.out)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
