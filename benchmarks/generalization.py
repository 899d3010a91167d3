"""Generalization of the default scan across every dev corpus (issue 17): the share of clean documents each default
detector flags, and the recall of published attacks hosted in each corpus, per corpus with the worst one in bold.

    .venv/bin/python benchmarks/generalization.py [--data ../shared/data/dev] [--corpora wiki,recipes]
        [--max-docs 3000] [--seed 0] [--embed-sample N] [--out /tmp/vecaudit-generalization]
        [--cache ~/.cache/vecaudit-bench] [--report-only] [--with conflicting-twins --with language-group]

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
``--report-only`` rebuilds the tables from those files. ``--with`` adds opt-in detectors to the default set (their
clean-store false alarms, before one is made a default). Prints markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
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
STORES = ("clean", "attack", "tenancy")
#: Documents this similar (cosine of their embeddings; or a lower cosine and this share of word 3-grams) are one
#: family and share a tenant in the tenancy store.
FAMILY_COSINE = 0.93
FAMILY_LEXICAL_COSINE = 0.7
FAMILY_CONTAINMENT = 0.75


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


def question_key(row: dict[str, Any]) -> str:
    """The PoisonedRAG target question a poison passage is written for (PIArena rows name it apart)."""
    if "poisonedrag_target_id" not in row:
        return str(row["target_id"])
    return str(row["poisonedrag_target_id"] or f"piarena:{row['target_id']}")


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
    targets = sorted({question_key(r) for r in forms["PoisonedRAG passage only"]})
    rng.shuffle(targets)
    per_class = share(n, 0.01 / 5)  # target questions per class: 5 passages each, ~1% of the store
    poison_rows: list[tuple[str, dict[str, Any]]] = []
    used: set[str] = set()
    for cls, form in POISON_CLASSES.items():
        available = {question_key(r) for r in forms[form]}  # PIArena lacks 3 of the 100 questions
        chosen = [t for t in targets if t in available and t not in used][:per_class]
        used.update(chosen)
        poison_rows += [(cls, r) for r in forms[form] if question_key(r) in chosen]
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


def _shingles(text: str) -> frozenset[str]:
    words = re.findall(r"\w+", text.casefold())
    return frozenset(" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2)))


def families(rows: list[dict[str, Any]], vecs: np.ndarray) -> np.ndarray:
    """A family label per document (int array): documents joined by one ``group`` (one claim, page, story), by
    cosine >= ``FAMILY_COSINE``, or by cosine >= ``FAMILY_LEXICAL_COSINE`` with most of the shorter text's word
    3-grams in the other (templated e-mails, a passage stored twice), connected transitively."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(rows)
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    shingles = [_shingles(r["text"]) for r in rows]
    edges = []
    for start in range(0, n, 1024):
        sims = unit[start : start + 1024] @ unit.T
        for i, j in np.argwhere(sims >= FAMILY_LEXICAL_COSINE):
            a, b = shingles[start + i], shingles[j]
            if sims[i, j] >= FAMILY_COSINE or len(a & b) >= FAMILY_CONTAINMENT * min(len(a), len(b)):
                edges.append((start + i, j))
    by_group: dict[str, int] = {}
    edges += [(i, by_group.setdefault(str(r["group"]), i)) for i, r in enumerate(rows) if r.get("group")]
    pairs = np.array(edges, dtype=int).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return np.asarray(connected_components(graph, directed=False)[1])


def tenant_labels(rows: list[dict[str, Any]], family: np.ndarray) -> list[str]:
    """One of four tenants per family by a stable hash of its first document's id: across tenants, members of one
    family would be real copies, not false alarms."""
    keys: dict[int, str] = {}
    for i, f in enumerate(family.tolist()):
        keys.setdefault(f, str(rows[i]["id"]))
    return [f"tenant-{int(hashlib.sha256(keys[f].encode()).hexdigest()[:8], 16) % N_TENANTS}" for f in family.tolist()]


def tenancy_store(
    rows: list[dict[str, Any]], vecs: np.ndarray, embed: EmbeddingCache, corpus: str, seed: int,
) -> tuple[list[tuple[int, np.ndarray, dict[str, Any]]], dict[str, Any]]:
    """The corpus as four same-distribution tenants with auditor.redteam's tenancy plants applied."""
    from auditor.redteam.generators import Doc, Plan, tenancy_plan

    family = families(rows, vecs)
    tenants = tenant_labels(rows, family)
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
    # a plant's source family is no longer clean: a copy, or a document moved to another tenant, makes real
    # cross-tenant copies of every member of its family
    sources = popped - touched
    spoilt = {int(f) for f in family[sorted(popped)]}
    return points, {"planted": planted, "clean": [i for i in range(len(rows)) if int(family[i]) not in spoilt],
                    "copy_sources": sorted(sources), "detail": detail,
                    "tenants": dict(Counter(tenants))}


# -- scans ------------------------------------------------------------------------------------------------
def default_scan(
    store: Path, ledger_path: Path, *, tenant: bool, seed: int, embed_sample: str | None, fresh: bool = True,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``vecaudit scan file://STORE --text-field text [--tenant-field tenant] --seed SEED --format json`` in-process
    (the CLI's own detector choice, settings and JSON document), into a fresh SQLite ledger (``fresh=False``: into
    the ledger already there, as a scheduled scan after an earlier one); ``extra`` adds opt-in detectors."""
    from auditor.cli.scan import build_settings, scan_document, select_detectors
    from auditor.config import Config
    from auditor.engine import Scanner, ScanOptions
    from auditor.ledger import Ledger
    from auditor.registry import connector_for, detector_classes
    from auditor.types import FieldMap

    if fresh:
        ledger_path.unlink(missing_ok=True)
    config = Config()
    classes = detector_classes()
    detectors = select_detectors(classes, config, (), ())
    detectors += [classes[name]() for name in extra if name not in {d.name for d in detectors}]
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
    builders = {"clean": lambda: (clean_points, {"planted": {}, "clean": list(range(len(rows)))}, False),
                "attack": lambda: (*attack_store(rows, vecs, args.data, embed, corpus, args.seed), False),
                "tenancy": lambda: (*tenancy_store(rows, vecs, embed, corpus, args.seed), True)}
    for name in args.stores:
        points, truth, tenant = builders[name]()
        store = folder / f"{name}.jsonl"
        write_jsonl(store, points)
        load_before = os.getloadavg()[0]
        print(f"[{time.strftime('%H:%M:%S')}] {corpus}/{name}: scanning {len(points)} points (load "
              f"{load_before:.1f})", file=sys.stderr, flush=True)
        doc = default_scan(store, folder / f"{name}.ledger.db", tenant=tenant, seed=args.seed,
                           embed_sample=args.embed_sample, extra=tuple(args.with_))
        doc["bench"].update(load_before=load_before, corpus=corpus, store=name, points=len(points),
                            documents=len(rows), max_docs=args.max_docs, seed=args.seed,
                            embed_sample=args.embed_sample)
        doc["truth"] = {**truth, "corpus_ids": ids}
        (folder / f"{name}.scan.json").write_text(json.dumps(doc, ensure_ascii=False, default=str), encoding="utf-8")
        store.unlink()  # the vectors are in the embedding cache; the scan document is what later work reads
        print(f"[{time.strftime('%H:%M:%S')}] {corpus}/{name}: {doc['bench']['status']} in "
              f"{doc['bench']['seconds']:.0f} s, {len(doc['findings'])} findings", file=sys.stderr, flush=True)


# -- measures ---------------------------------------------------------------------------------------------
#: Rules reported once per group, on one member: every member listed in ``evidence.members`` counts as flagged.
GROUP_RULES = frozenset({"VA341"})


def flagged_points(findings: list[dict[str, Any]], level: Severity,
                   detectors: frozenset[str] | None = None, exclude: frozenset[str] = frozenset()) -> set[str]:
    """Point ids (as strings) named by a finding at ``level`` or above, of ``detectors`` (all) minus ``exclude``
    (a group finding names all its members)."""
    out: set[str] = set()
    for f in findings:
        if (f["point_id"] is not None and Severity(f["severity"]) >= level
                and (detectors is None or f["detector"] in detectors) and f["detector"] not in exclude):
            out.add(str(f["point_id"]))
            if f["rule_id"] in GROUP_RULES:
                out.update(str(m) for m in (f.get("evidence") or {}).get("members", []))
    return out


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
Cell = tuple[float, str]  # (value compared for "worst", text shown)


def _rate(k: int, n: int) -> Cell:
    """A share of documents, shown in percent."""
    return (k / n, f"{100 * k / n:.2f}") if n else (float("nan"), "-")


def _recall(hit_of: tuple[int, int]) -> Cell:
    k, n = hit_of
    return (k / n, f"{k / n:.2f}") if n else (float("nan"), "-")


def _bold_worst(cells: list[Cell], worst_is_max: bool) -> list[str]:
    """Cell texts with the worst value(s) in bold (nothing bold when every value is equal)."""
    values = [v for v, _ in cells if not np.isnan(v)]
    if not values or max(values) == min(values):
        return [t for _, t in cells]
    worst = max(values) if worst_is_max else min(values)
    return [f"**{t}**" if v == worst else t for v, t in cells]


def _render(header: list[str], names: list[str], columns: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
    return lines + [f"| {name} | " + " | ".join(col[r] for col in columns) + " |" for r, name in enumerate(names)]


def _recall_columns(
    m: list[dict[str, Any]], classes: Iterable[str], higher_is_worse: frozenset[str],
) -> list[list[str]]:
    """One column per class: ``LOW+ / MEDIUM+ (n)``, each figure's worst corpus in bold."""
    out = []
    for cls in classes:
        worst_max = cls in higher_is_worse
        low = _bold_worst([_recall(mm["recall"][cls]["LOW+"]) for mm in m], worst_max)
        med = _bold_worst([_recall(mm["recall"][cls]["MEDIUM+"]) for mm in m], worst_max)
        out.append([f"{a} / {b} ({mm['recall'][cls]['LOW+'][1]})" for a, b, mm in zip(low, med, m, strict=True)])
    return out


def _fpr_columns(m: list[dict[str, Any]]) -> list[list[str]]:
    return [_bold_worst([_rate(mm["all"][label], mm["clean"]) for mm in m], True) for label in LEVELS]


def clean_tables(m: list[dict[str, Any]], corpora: list[str]) -> list[str]:
    lines = ["### Clean store: share of documents flagged (%), all default detectors, PII/secrets apart", "",
             "Worst corpus in bold per column. *all* = a document named by any finding at that severity or above of "
             "a default detector other than pii/secrets; one column per detector that flagged anything.", ""]
    names = [f"{c} ({mm['clean']:,})" for c, mm in zip(corpora, m, strict=True)]
    for label in LEVELS:
        detectors = sorted({d for mm in m for d in mm["by_detector"][label]} - SENSITIVE)
        columns = [_bold_worst([_rate(mm["all"][label], mm["clean"]) for mm in m], True)]
        columns += [_bold_worst([_rate(mm["by_detector"][label].get(d, 0), mm["clean"]) for mm in m], True)
                    for d in detectors]
        columns.append(_bold_worst([_rate(mm["sensitive"][label], mm["clean"]) for mm in m], True))
        lines += [f"**{label}**", "", *_render(["corpus (documents)", "all", *detectors, "pii/secrets"], names,
                                               columns), ""]
        pooled = _rate(sum(mm["all"][label] for mm in m), sum(mm["clean"] for mm in m))[1]
        new = [mm for c, mm in zip(corpora, m, strict=True) if c in NEW_CORPORA]
        new_rate = _rate(sum(mm["all"][label] for mm in new), sum(mm["clean"] for mm in new))[1]
        lines += [f"Pooled: {pooled}% of {sum(mm['clean'] for mm in m):,} documents"
                  + (f"; the five new look-alike corpora: {new_rate}% of {sum(mm['clean'] for mm in new):,}"
                     if new else "") + ".", ""]
    lines += ["Rules behind the clean-store findings at LOW+ (documents per rule and severity; collection-level "
              "findings apart):", ""]
    for c, mm in zip(corpora, m, strict=True):
        rules = ", ".join(f"{r} {k}" for r, k in sorted(mm["rules"].items(), key=lambda x: -x[1])) or "none"
        coll = mm["collection_findings"]
        lines.append(f"- {c}: {rules}" + (f"; collection-level: {dict(coll)}" if coll else ""))
    return [*lines, ""]


def attack_table(m: list[dict[str, Any]], corpora: list[str]) -> list[str]:
    header = ["corpus", *[f"{cls} LOW+ / MED+ (n)" for cls in ATTACK_CLASSES], "clean FPR % LOW+", "MEDIUM+", "HIGH"]
    return ["### Attack store: recall per planted class (LOW+ / MEDIUM+) and the clean FPR of the same store", "",
            "A planted point counts when any finding (any detector, PII/secrets included) names it. Worst corpus in "
            "bold (lowest recall, highest FPR); n = planted points per store. The FPR counts the store's untouched "
            "documents, PII/secrets aside.", "",
            *_render(header, corpora, _recall_columns(m, ATTACK_CLASSES, frozenset()) + _fpr_columns(m)), ""]


def recall_by_detector(docs: list[dict[str, Any]], classes: Iterable[str]) -> list[str]:
    """Pooled over corpora: the share of each class's planted points that each detector alone names at LOW+."""
    hits: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for doc in docs:
        for cls in classes:
            planted = {str(i) for i in doc["truth"]["planted"][cls]}
            totals[cls] += len(planted)
            for det in {f["detector"] for f in doc["findings"]}:
                k = len(flagged_points(doc["findings"], Severity.LOW, frozenset({det})) & planted)
                if k:
                    hits.setdefault(cls, Counter())[det] += k
    detectors = sorted({d for c in hits.values() for d in c})
    lines = ["| class (planted, all corpora) | " + " | ".join(detectors) + " |", "|---|" + "---:|" * len(detectors)]
    for cls in classes:
        lines.append(f"| {cls} ({totals[cls]}) | " + " | ".join(
            f"{hits.get(cls, Counter())[d] / totals[cls]:.2f}" if totals[cls] else "-" for d in detectors) + " |")
    return ["Recall at LOW+ of each detector alone, pooled over the corpora (a point can be named by several):", "",
            *lines, ""]


def tenancy_table(m: list[dict[str, Any]], docs: list[dict[str, Any]], corpora: list[str]) -> list[str]:
    tenancy_detectors = frozenset({"cross-tenant-copy", "misfiled", "tenant-label", "tenant-marker"})
    tenancy_only = [_rate(len(flagged_points(d["findings"], Severity.LOW, tenancy_detectors)
                              & {str(i) for i in d["truth"]["clean"]}), mm["clean"])
                    for d, mm in zip(docs, m, strict=True)]
    columns = [*_recall_columns(m, TENANCY_CLASSES, frozenset({"misfiled"})), *_fpr_columns(m),
               _bold_worst(tenancy_only, True)]
    header = ["corpus", *[f"{cls} LOW+ / MED+ (n)" for cls in TENANCY_CLASSES], "clean FPR % LOW+", "MEDIUM+",
              "HIGH", "tenancy rules alone, LOW+ %"]
    return ["### Tenancy store: four same-distribution tenants, red-team tenancy plants", "",
            f"Tenants: {N_TENANTS}, by a hash of each document's family (its `group`, joined with every document at "
            f"cosine >= {FAMILY_COSINE}, or at cosine >= {FAMILY_LEXICAL_COSINE} sharing >= {FAMILY_CONTAINMENT:.0%} "
            "of the shorter text's word 3-grams), so no tenant differs from another and no clean document has a "
            "copy in another tenant. Plants from `auditor.redteam.generators.tenancy_plan` (~1% each): copies of a "
            "document into another tenant (exact or minus its last sentence), misfiled (tenant relabelled), "
            "unlabeled (tenant field removed). Misfiled plants move a document between tenants no model can tell "
            "apart: their recall is expected to stay ~0 (bold marks the *highest*), and the figure that matters is "
            "the FPR (issue 17 item 6). The FPR leaves out the families of planted documents.", "",
            *_render(header, corpora, columns), ""]


def report(out: Path, corpora: list[str]) -> list[str]:
    docs = {(c, s): json.loads((out / c / f"{s}.scan.json").read_text(encoding="utf-8"))
            for c in corpora for s in STORES if (out / c / f"{s}.scan.json").exists()}
    if not docs:
        return [f"no scan documents under {out}"]
    m = {key: store_measures(doc) for key, doc in docs.items()}
    first = next(iter(docs.values()))["bench"]
    lines = [f"Stores: at most {first['max_docs']:,} documents per corpus (seeded sample, seed {first['seed']}); "
             f"--embed-sample {first['embed_sample'] or 'default'}; detectors (the CLI's default set and any --with): "
             + ", ".join(first["detectors"]) + ".", ""]
    for store, render in (("clean", clean_tables), ("attack", attack_table)):
        have = [c for c in corpora if (c, store) in m]
        if have:
            lines += render([m[(c, store)] for c in have], have)
    have = [c for c in corpora if (c, "attack") in m]
    if have:
        lines += recall_by_detector([docs[(c, "attack")] for c in have], ATTACK_CLASSES)
    have = [c for c in corpora if (c, "tenancy") in m]
    if have:
        lines += tenancy_table([m[(c, "tenancy")] for c in have], [docs[(c, "tenancy")] for c in have], have)
        lines += recall_by_detector([docs[(c, "tenancy")] for c in have], TENANCY_CLASSES)
    seconds = sum(d["bench"]["seconds"] for d in docs.values())
    loads = [x for d in docs.values() for x in (d["bench"]["load_before"], d["bench"]["load_after"])]
    lines += [f"Scans: {len(docs)} stores, {seconds / 60:.1f} min of scanning in all (slowest "
              + ", ".join(f"{c}/{s} {d['bench']['seconds']:.0f} s" for (c, s), d in
                          sorted(docs.items(), key=lambda x: -x[1]["bench"]["seconds"])[:3])
              + f"); 1-minute load average around the scans {min(loads):.1f}-{max(loads):.1f} "
              f"(mean {np.mean(loads):.1f}).", ""]
    failed = {key: d["bench"] for key, d in docs.items() if d["bench"]["status"] != "completed"}
    if failed:
        lines += ["Incomplete scans: " + "; ".join(f"{c}/{s}: {b['status']} {b['error']}"
                                                   for (c, s), b in failed.items()), ""]
    return lines


def source_label() -> str:
    """The code this run scanned with: git HEAD of this checkout, marked when its scanning code is uncommitted."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"{ROOT} (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "auditor", "detectors", "connectors")
    return f"{ROOT} at {commit}" + (" with uncommitted changes in auditor/detectors/connectors" if dirty else "")


def machine(source: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import torch

    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, torch {torch.__version__}; "
            f"code: {source}")


def parse_corpora(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """The comma-separated corpus short names of ``--corpora``; an unknown one is a usage error (exit 2)."""
    corpora = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(corpora) - set(ALL_CORPORA))
    if unknown:
        ap.error(f"unknown corpora {unknown}; known: {', '.join(ALL_CORPORA)}")
    return corpora


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--corpora", default=",".join(ALL_CORPORA), help="comma-separated short names: "
                    + ", ".join(ALL_CORPORA))
    ap.add_argument("--stores", default=",".join(STORES), help="which stores to (re)build and scan")
    ap.add_argument("--max-docs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embed-sample", default=None, help="as `vecaudit scan --embed-sample` [scan default]")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vecaudit-generalization"))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vecaudit-bench")
    ap.add_argument("--report-only", action="store_true", help="tables from the scan documents under --out")
    ap.add_argument("--source", help="what code is scanned with, for the header [git HEAD of this checkout]")
    ap.add_argument("--with", dest="with_", action="append", default=[], metavar="DETECTOR",
                    help="add an opt-in detector to the default set (repeatable)")
    args = ap.parse_args(argv)
    corpora = parse_corpora(ap, args.corpora)
    from auditor.registry import detector_classes

    unknown_detectors = sorted(set(args.with_) - set(detector_classes()))
    if unknown_detectors:
        ap.error(f"unknown detectors {unknown_detectors}; known: {', '.join(sorted(detector_classes()))}")
    args.stores = [x.strip() for x in args.stores.split(",") if x.strip()]
    if set(args.stores) - set(STORES):
        ap.error(f"unknown stores {sorted(set(args.stores) - set(STORES))}; known: {', '.join(STORES)}")
    started = time.time()
    load_start = os.getloadavg()
    if not args.report_only:
        embed = EmbeddingCache(args.cache)
        for corpus in corpora:
            run_corpus(corpus, args, embed)
    wall = time.time() - started
    run = "" if args.report_only else (
        f" Load average at start {' / '.join(f'{x:.1f}' for x in load_start)}, at end "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}; wall time {wall / 60:.1f} min (embedding, stores, scans).")
    lines = [f"## Generalization of the default scan — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Machine: {machine(args.source or source_label())}.{run}", "", *report(args.out, corpora)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
