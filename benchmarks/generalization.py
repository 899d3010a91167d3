"""Generalization of the default scan across every dev corpus (issue 17): the share of clean documents each default
detector flags, and the recall of published attacks hosted in each corpus, per corpus with the worst one in bold.

    .venv/bin/python benchmarks/generalization.py [--data ../shared/data/dev] [--corpora wiki,recipes]
        [--max-docs 3000] [--seed 0] [--embed-sample N] [--out /tmp/vecaudit-generalization]
        [--cache ~/.cache/vecaudit-bench] [--report-only]

For every corpus, three stores are written as JSONL exports (all-MiniLM-L6-v2 vectors from the shared benchmark
embedding cache) and scanned with the default detectors exactly as ``vecaudit scan file:///store.jsonl`` chooses
them, each into a fresh SQLite ledger:

- ``clean``: a seeded sample of at most ``--max-docs`` documents, no tenant field: the false-alarm rates.
- ``attack``: the same documents plus, ~1% of the store each (at least 5 passages / 6 injections), PoisonedRAG
  passages without and with the question bait and PIArena knowledge-corruption passages (disjoint target questions),
  and dev injection strings planted at the start, middle or end of real documents of the corpus.
- ``tenancy``: the same documents split into four tenants by a hash of their ``group`` (one distribution: no tenant
  model can tell them apart) with the red-team tenancy plants (cross-tenant exact/near copies, misfiled, unlabeled).

Every store's scan document (every finding with rule, severity, score, threshold, evidence) and its ground truth are
kept under ``--out/<corpus>/`` so thresholds can be chosen offline (e.g. leave-one-corpus-out) without re-scanning;
``--report-only`` rebuilds the tables from those files. Prints markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from content_data import CORPORA, DEFAULT_DATA, injection_strings, load, plant  # noqa: E402
from embedding_quality import EmbeddingCache, poison_sets  # noqa: E402

from auditor.types import Severity  # noqa: E402

#: Every dev corpus (content_data's six and the clean look-alikes added for issue 17), by short name.
ALL_CORPORA = {
    **CORPORA,
    "web_evidence": "factcheckgpt_web_evidence.jsonl", "reuters": "reuters21578_wire.jsonl",
    "govuk": "govuk_content_pages.jsonl", "tables": "tatqa_financial_report_tables.jsonl",
    "recipes": "based_cooking_recipes.jsonl",
}
#: Corpora added for issue 17 after today's thresholds were chosen: the only out-of-sample ones today.
NEW_CORPORA = ("web_evidence", "reuters", "govuk", "tables", "recipes")
POISON_CLASSES = {"poisonedrag": "PoisonedRAG passage only", "poisonedrag_bait": "PoisonedRAG + question",
                  "piarena": "PIArena + question"}
ATTACK_CLASSES = (*POISON_CLASSES, "injection")
TENANCY_CLASSES = ("copy", "unlabeled", "misfiled")
LEVELS = {"LOW+": Severity.LOW, "MEDIUM+": Severity.MEDIUM, "HIGH": Severity.HIGH}
#: Counted apart: a hit on a real e-mail address or phone number in a corpus is correct, not a false alarm.
SENSITIVE = frozenset({"pii", "secrets"})
N_TENANTS = 4


# -- stores -----------------------------------------------------------------------------------------------
def corpus_sample(data: Path, corpus: str, max_docs: int, seed: int) -> list[dict[str, Any]]:
    """At most ``max_docs`` documents with text, a seeded sample kept in file order."""
    rows = [r for r in load(data / "corpora" / ALL_CORPORA[corpus])
            if isinstance(r.get("text"), str) and r["text"].strip()]
    if len(rows) > max_docs:
        keep = sorted(random.Random(f"{seed}:{corpus}:sample").sample(range(len(rows)), max_docs))
        rows = [rows[i] for i in keep]
    return rows


def share(n: int, fraction: float = 0.01, least: int = 1) -> int:
    return max(least, round(n * fraction))


def write_jsonl(path: Path, points: Iterable[tuple[int, np.ndarray, dict[str, Any]]]) -> None:
    """A file-connector export: one ``{"id", "vector", **payload}`` object per line (float32 values round-trip)."""
    with open(path, "w", encoding="utf-8") as fh:
        for pid, vec, payload in points:
            fh.write(json.dumps({"id": pid, "vector": np.asarray(vec, dtype=np.float32).tolist(), **payload},
                                ensure_ascii=False) + "\n")


def attack_store(
    rows: list[dict[str, Any]], vecs: np.ndarray, data: Path, embed: EmbeddingCache, corpus: str, seed: int,
) -> tuple[list[tuple[int, np.ndarray, dict[str, Any]]], dict[str, Any]]:
    """The corpus with poisons added and injections planted in its documents; the points and the ground truth."""
    rng = random.Random(f"{seed}:{corpus}:attack")
    n = len(rows)
    points = [(i, vecs[i], {"text": r["text"]}) for i, r in enumerate(rows)]
    planted: dict[str, list[int]] = {c: [] for c in ATTACK_CLASSES}
    detail: dict[str, str] = {}
    forms = poison_sets(data)
    targets = sorted({r["target_id"] for r in forms["PoisonedRAG passage only"]})
    rng.shuffle(targets)
    per_class = share(n, 0.01 / 5)  # target questions per class: 5 passages each, ~1% of the store
    poison_rows: list[tuple[str, dict[str, Any]]] = []
    for k, (cls, form) in enumerate(POISON_CLASSES.items()):
        chosen = set(targets[k * per_class : (k + 1) * per_class])
        poison_rows += [(cls, r) for r in forms[form] if r["target_id"] in chosen]
    poison_vecs = embed([r["text"] for _, r in poison_rows])
    for (cls, r), vec in zip(poison_rows, poison_vecs, strict=True):
        pid = len(points)
        points.append((pid, vec, {"text": r["text"]}))
        planted[cls].append(pid)
        detail[str(pid)] = f"{cls} {r['id']}"
    attacks = injection_strings(data)
    hosts = rng.sample([i for i, r in enumerate(rows) if len(r["text"]) >= 80] or list(range(n)),
                       min(n, share(n, 0.01, least=6)))
    texts = []
    for k, host in enumerate(hosts):
        attack = rng.choice(attacks)
        where = ("start", "middle", "end")[k % 3]
        texts.append(plant(rows[host]["text"], attack["text"], where))
        detail[str(host)] = f"injection {attack['id']} ({attack['family']}) at the {where}"
    for host, text, vec in zip(hosts, texts, embed(texts), strict=True):
        points[host] = (host, vec, {"text": text})
        planted["injection"].append(host)
    touched = {p for ids in planted.values() for p in ids}
    return points, {"planted": planted, "clean": [i for i in range(n) if i not in touched], "detail": detail}


def tenant_of(row: dict[str, Any]) -> str:
    """One of four tenants by a stable hash of the document's group (its id when it has none), so versions of one
    page or story stay in one tenant."""
    key = str(row.get("group") or row["id"])
    return f"tenant-{int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % N_TENANTS}"


def tenancy_store(
    rows: list[dict[str, Any]], vecs: np.ndarray, embed: EmbeddingCache, corpus: str, seed: int,
) -> tuple[list[tuple[int, np.ndarray, dict[str, Any]]], dict[str, Any]]:
    """The corpus as four same-distribution tenants with auditor.redteam's tenancy plants applied."""
    from auditor.redteam.generators import Doc, Plan, tenancy_plan

    tenants = [tenant_of(r) for r in rows]
    docs = [Doc(i, i, r["text"], t, vecs[i]) for i, (r, t) in enumerate(zip(rows, tenants, strict=True))]
    rng = random.Random(f"{seed}:{corpus}:tenancy")
    rng.shuffle(docs)
    pool = docs[:]
    plan = Plan()
    tenancy_plan(plan, pool, embed, rng, share(len(rows), 0.01, least=2), "tenant")
    payloads: list[dict[str, Any]] = [{"text": r["text"], "tenant": t} for r, t in zip(rows, tenants, strict=True)]
    for pid, update in plan.payload_updates.items():
        payloads[pid].update(update)
    for pid, keys in plan.payload_deletes.items():
        for key in keys:
            payloads[pid].pop(key, None)
    points = [(i, vecs[i], p) for i, p in enumerate(payloads)]
    planted: dict[str, list[int]] = {"copy": [], "unlabeled": list(plan.planted.get("unlabeled", [])),
                                     "misfiled": list(plan.planted.get("misfiled", []))}
    detail = {str(pid): text for pid, text in plan.descriptions.items()}
    for (_text, vec, payload), cls in zip(plan.new_points, plan.new_classes, strict=True):
        pid = len(points)
        points.append((pid, vec, payload))
        planted["copy"].append(pid)
        detail[str(pid)] = f"{cls} into {payload['tenant']}"
    popped = {d.row for d in docs} - {d.row for d in pool}
    touched = {p for ids in planted.values() for p in ids}
    # a copy's source is no clean point: a finding on it names a real cross-tenant copy
    sources = popped - touched
    return points, {"planted": planted, "clean": [i for i in range(len(rows)) if i not in popped],
                    "copy_sources": sorted(sources), "detail": detail,
                    "tenants": dict(Counter(tenants))}


# -- scans ------------------------------------------------------------------------------------------------
def default_scan(store: Path, ledger_path: Path, *, tenant: bool, seed: int, embed_sample: str | None) -> dict[str, Any]:
    """``vecaudit scan file://STORE --text-field text [--tenant-field tenant] --seed SEED --format json`` in-process
    (the CLI's own detector choice, settings and JSON document), into a fresh SQLite ledger."""
    from auditor.cli.scan import build_settings, scan_document, select_detectors
    from auditor.config import Config
    from auditor.engine import Scanner, ScanOptions
    from auditor.ledger import Ledger
    from auditor.registry import connector_for, detector_classes
    from auditor.types import FieldMap

    ledger_path.unlink(missing_ok=True)
    config = Config()
    detectors = select_detectors(detector_classes(), config, (), ())
    settings = build_settings(config, model=None, device=None, embed_batch_size=None, embed_sample=embed_sample,
                              tenants=None, probe=None, seed=seed, queries=None)
    ledger = Ledger(f"sqlite:///{ledger_path}").open()
    connector = connector_for(f"file://{store}")
    started = time.perf_counter()
    try:
        options = ScanOptions(field_map=FieldMap(text="text", tenant="tenant" if tenant else None),
                              settings=settings, show_progress=False)
        result = Scanner(ledger, connector, detectors, options).run()
        seconds = time.perf_counter() - started
        doc = scan_document(ledger, result)
    finally:
        connector.close()
        ledger.dispose()
    return {**doc, "bench": {"seconds": seconds, "status": result.status, "error": result.error,
                             "notes": list(result.notes), "detectors": [d.name for d in detectors],
                             "load_after": os.getloadavg()[0]}}


def run_corpus(corpus: str, args: argparse.Namespace, embed: EmbeddingCache) -> None:
    """Build, scan and save the three stores of one corpus under ``args.out / corpus``."""
    rows = corpus_sample(args.data, corpus, args.max_docs, args.seed)
    vecs = embed([r["text"] for r in rows])
    folder = args.out / corpus
    folder.mkdir(parents=True, exist_ok=True)
    ids = [str(r["id"]) for r in rows]
    clean_points = [(i, vecs[i], {"text": r["text"]}) for i, r in enumerate(rows)]
    stores = {"clean": (clean_points, {"planted": {}, "clean": list(range(len(rows)))}, False),
              "attack": (*attack_store(rows, vecs, args.data, embed, corpus, args.seed), False),
              "tenancy": (*tenancy_store(rows, vecs, embed, corpus, args.seed), True)}
    for name, (points, truth, tenant) in stores.items():
        store = folder / f"{name}.jsonl"
        write_jsonl(store, points)
        load_before = os.getloadavg()[0]
        print(f"[{time.strftime('%H:%M:%S')}] {corpus}/{name}: scanning {len(points)} points (load "
              f"{load_before:.1f})", file=sys.stderr, flush=True)
        doc = default_scan(store, folder / f"{name}.ledger.db", tenant=tenant, seed=args.seed,
                           embed_sample=args.embed_sample)
        doc["bench"].update(load_before=load_before, corpus=corpus, store=name, points=len(points),
                            documents=len(rows), max_docs=args.max_docs, seed=args.seed,
                            embed_sample=args.embed_sample)
        doc["truth"] = {**truth, "corpus_ids": ids}
        (folder / f"{name}.scan.json").write_text(json.dumps(doc, ensure_ascii=False, default=str), encoding="utf-8")
        store.unlink()  # the vectors are in the embedding cache; the scan document is what later work reads
        print(f"[{time.strftime('%H:%M:%S')}] {corpus}/{name}: {doc['bench']['status']} in "
              f"{doc['bench']['seconds']:.0f} s, {len(doc['findings'])} findings", file=sys.stderr, flush=True)


# -- measures ---------------------------------------------------------------------------------------------
def flagged_points(findings: list[dict[str, Any]], level: Severity,
                   detectors: frozenset[str] | None = None, exclude: frozenset[str] = frozenset()) -> set[str]:
    """Point ids (as strings) named by a finding at ``level`` or above, of ``detectors`` (all) minus ``exclude``."""
    return {str(f["point_id"]) for f in findings
            if f["point_id"] is not None and Severity(f["severity"]) >= level
            and (detectors is None or f["detector"] in detectors) and f["detector"] not in exclude}


def store_measures(doc: dict[str, Any]) -> dict[str, Any]:
    """Clean flagged shares (per detector, per rule, all but PII/secrets, PII/secrets) and recall per class."""
    findings, truth = doc["findings"], doc["truth"]
    clean = {str(i) for i in truth["clean"]}
    out: dict[str, Any] = {"clean": len(clean), "by_detector": {}, "all": {}, "sensitive": {}, "recall": {},
                           "collection_findings": Counter(f["rule_id"] for f in findings if f["point_id"] is None)}
    for label, level in LEVELS.items():
        per_detector = {det: len(flagged_points(findings, level, frozenset({det})) & clean)
                        for det in sorted({f["detector"] for f in findings})}
        out["by_detector"][label] = {det: k for det, k in per_detector.items() if k}
        out["all"][label] = len(flagged_points(findings, level, exclude=SENSITIVE) & clean)
        out["sensitive"][label] = len(flagged_points(findings, level, detectors=SENSITIVE) & clean)
        for cls, ids in truth["planted"].items():
            hit = flagged_points(findings, level) & {str(i) for i in ids}
            out["recall"].setdefault(cls, {})[label] = (len(hit), len(ids))
    rules: Counter[str] = Counter()
    for f in findings:
        if f["point_id"] is not None and str(f["point_id"]) in clean and Severity(f["severity"]) >= Severity.LOW:
            rules[f"{f['rule_id']} {f['severity']}"] += 1
    out["rules"] = dict(rules)
    return out


# -- report -----------------------------------------------------------------------------------------------
def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.2f}" if n else "-"


def _bold_worst(cells: list[tuple[float, str]], worst_is_max: bool) -> list[str]:
    """Cell texts with the worst value(s) in bold (nothing bold when every value is equal)."""
    values = [v for v, _ in cells if not np.isnan(v)]
    if not values or max(values) == min(values):
        return [t for _, t in cells]
    worst = max(values) if worst_is_max else min(values)
    return [f"**{t}**" if v == worst else t for v, t in cells]


def _table(header: list[str], columns: list[list[tuple[float, str]]], corpora: list[str],
           worst_is_max: bool) -> list[str]:
    bolded = [_bold_worst(col, worst_is_max) for col in columns]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
    for r, corpus in enumerate(corpora):
        lines.append(f"| {corpus} | " + " | ".join(col[r] for col in bolded) + " |")
    return lines


def report(out: Path, corpora: list[str]) -> list[str]:
    docs = {(c, s): json.loads((out / c / f"{s}.scan.json").read_text(encoding="utf-8"))
            for c in corpora for s in ("clean", "attack", "tenancy") if (out / c / f"{s}.scan.json").exists()}
    corpora = [c for c in corpora if (c, "clean") in docs]
    if not corpora:
        return ["no scan documents under " + str(out)]
    m = {key: store_measures(doc) for key, doc in docs.items()}
    first = docs[(corpora[0], "clean")]["bench"]
    lines = [f"Stores: at most {first['max_docs']:,} documents per corpus (seeded sample, seed {first['seed']}); "
             f"--embed-sample {first['embed_sample'] or 'default'}; detectors (CLI default set): "
             + ", ".join(first["detectors"]) + ".", ""]
    lines += ["### Clean store: share of documents flagged (%), all default detectors, PII/secrets apart", "",
              "Worst corpus in bold per column. *all* = a document named by any finding of a default detector other "
              "than pii/secrets.", ""]
    for label in LEVELS:
        detectors = sorted({d for c in corpora for d, k in m[(c, "clean")]["by_detector"][label].items() if k})
        header = ["corpus (documents)", "all", *detectors, "pii/secrets"]
        cols: list[list[tuple[float, str]]] = []
        rows = [(m[(c, "clean")]["clean"], m[(c, "clean")]) for c in corpora]
        cols.append([(k / n, _pct(k, n)) for n, mm in rows for k in [mm["all"][label]]])
        for det in detectors:
            cols.append([(k / n, _pct(k, n)) for n, mm in rows for k in [mm["by_detector"][label].get(det, 0)]])
        cols.append([(k / n, _pct(k, n)) for n, mm in rows for k in [mm["sensitive"][label]]])
        names = [f"{c} ({n:,})" for c, (n, _) in zip(corpora, rows, strict=True)]
        lines += [f"**{label}**", "", *_table(header, cols, names, worst_is_max=True), ""]
        total_n = sum(n for n, _ in rows)
        total_k = sum(mm["all"][label] for _, mm in rows)
        new = [(n, mm) for c, (n, mm) in zip(corpora, rows, strict=True) if c in NEW_CORPORA]
        lines.append(f"Pooled: {_pct(total_k, total_n)}% of {total_n:,} documents"
                     + (f"; the new look-alike corpora pooled: {_pct(sum(mm['all'][label] for _, mm in new), sum(n for n, _ in new))}% "
                        f"of {sum(n for n, _ in new):,}" if new else "") + ".")
        lines.append("")
    lines += ["Rules behind the clean-store findings at LOW+ (documents, rule and severity):", ""]
    for c in corpora:
        rules = m[(c, "clean")]["rules"]
        coll = m[(c, "clean")]["collection_findings"]
        lines.append(f"- {c}: " + (", ".join(f"{r} {k}" for r, k in sorted(rules.items(), key=lambda x: -x[1]))
                                   or "none")
                     + (f"; collection-level: {dict(coll)}" if coll else ""))
    lines += ["", "### Attack store: recall per planted class (LOW+ / MEDIUM+) and the clean FPR of the same store",
              "", "A planted point counts when any finding (any detector) names it. Worst corpus in bold "
              "(lowest recall, highest FPR). n = planted points per store.", ""]
    att = [c for c in corpora if (c, "attack") in m]
    header = ["corpus", *[f"{cls} LOW+ / MED+ (n)" for cls in ATTACK_CLASSES], "clean FPR % LOW+", "MEDIUM+", "HIGH"]
    cols = []
    for cls in ATTACK_CLASSES:
        for label in ("LOW+", "MEDIUM+"):
            cols.append([(k / n if n else np.nan, f"{k / n:.2f}" if n else "-")
                         for c in att for k, n in [m[(c, "attack")]["recall"][cls][label]]])
    merged = []
    for j in range(len(ATTACK_CLASSES)):
        low, med = _bold_worst(cols[2 * j], False), _bold_worst(cols[2 * j + 1], False)
        merged.append([f"{a} / {b} ({m[(c, 'attack')]['recall'][ATTACK_CLASSES[j]]['LOW+'][1]})"
                       for a, b, c in zip(low, med, att, strict=True)])
    fpr_cols = [_bold_worst([(mm["all"][label] / mm["clean"], _pct(mm["all"][label], mm["clean"]))
                             for c in att for mm in [m[(c, "attack")]]], True) for label in LEVELS]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r, c in enumerate(att):
        lines.append(f"| {c} | " + " | ".join(col[r] for col in merged + fpr_cols) + " |")
    lines += ["", "### Tenancy store: four same-distribution tenants (hash of `group`), red-team tenancy plants", "",
              "Recall per plant (LOW+ / MEDIUM+) and the FPR on the untouched documents. Misfiled plants move a "
              "document between tenants that no model can tell apart: recall there is expected to stay ~0 and the "
              "figure that matters is the FPR (issue 17 item 6).", ""]
    ten = [c for c in corpora if (c, "tenancy") in m]
    header = ["corpus", *[f"{cls} LOW+ / MED+ (n)" for cls in TENANCY_CLASSES], "clean FPR % LOW+", "MEDIUM+",
              "HIGH", "tenancy rules LOW+ %"]
    cols = []
    for cls in TENANCY_CLASSES:
        pair = []
        for label in ("LOW+", "MEDIUM+"):
            pair.append(_bold_worst([(k / n if n else np.nan, f"{k / n:.2f}" if n else "-")
                                     for c in ten for k, n in [m[(c, "tenancy")]["recall"][cls][label]]],
                                    cls == "misfiled"))
        cols.append([f"{a} / {b} ({m[(c, 'tenancy')]['recall'][cls]['LOW+'][1]})"
                     for a, b, c in zip(*pair, ten, strict=True)])
    for label in LEVELS:
        cols.append(_bold_worst([(mm["all"][label] / mm["clean"], _pct(mm["all"][label], mm["clean"]))
                                 for c in ten for mm in [m[(c, "tenancy")]]], True))
    tenancy_detectors = frozenset({"cross-tenant-copy", "misfiled", "tenant-label", "tenant-marker"})
    tcol = []
    for c in ten:
        doc, mm = docs[(c, "tenancy")], m[(c, "tenancy")]
        k = len(flagged_points(doc["findings"], Severity.LOW, tenancy_detectors) & {str(i) for i in doc["truth"]["clean"]})
        tcol.append((k / mm["clean"], _pct(k, mm["clean"])))
    cols.append(_bold_worst(tcol, True))
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r, c in enumerate(ten):
        lines.append(f"| {c} | " + " | ".join(col[r] for col in cols) + " |")
    seconds = sum(d["bench"]["seconds"] for d in docs.values())
    loads = [x for d in docs.values() for x in (d["bench"]["load_before"], d["bench"]["load_after"])]
    lines += ["", f"Scans: {len(docs)} stores, {seconds / 60:.1f} min of scanning in all; 1-minute load average "
              f"around the scans {min(loads):.1f}-{max(loads):.1f} (mean {np.mean(loads):.1f}).", ""]
    statuses = Counter(d["bench"]["status"] for d in docs.values())
    if set(statuses) != {"completed"}:
        lines += [f"Scan statuses: {dict(statuses)} — " + "; ".join(
            f"{c}/{s}: {d['bench']['error']}" for (c, s), d in docs.items() if d["bench"]["status"] != "completed"), ""]
    return lines


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip() or "not a git checkout"
    except OSError:
        commit = "unknown"
    import torch

    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
            f"source {ROOT} at {commit}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--corpora", default=",".join(ALL_CORPORA), help="comma-separated short names: "
                    + ", ".join(ALL_CORPORA))
    ap.add_argument("--max-docs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embed-sample", default=None, help="as `vecaudit scan --embed-sample` [scan default]")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vecaudit-generalization"))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vecaudit-bench")
    ap.add_argument("--report-only", action="store_true", help="tables from the scan documents under --out")
    args = ap.parse_args(argv)
    corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    unknown = sorted(set(corpora) - set(ALL_CORPORA))
    if unknown:
        ap.error(f"unknown corpora {unknown}; known: {', '.join(ALL_CORPORA)}")
    started = time.time()
    load_start = os.getloadavg()
    if not args.report_only:
        embed = EmbeddingCache(args.cache)
        for corpus in corpora:
            run_corpus(corpus, args, embed)
    wall = time.time() - started
    lines = [f"## Generalization of the default scan — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Machine: {machine()}. Load average at start {load_start[0]:.1f} / {load_start[1]:.1f} / "
             f"{load_start[2]:.1f}, at end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}"
             + ("" if args.report_only else f"; wall time {wall / 60:.1f} min (embedding, store writing, scans)")
             + ".", "", *report(args.out, corpora)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
