"""Recall of the default scan per attack family and host corpus, at the alert budget (issue 16 item 3).

    .venv/bin/python benchmarks/attack_recall.py [--data ../shared/data/dev] [--corpora wiki,pubmed,reuters]
        [--max-docs 2000] [--seed 0] [--steps 15] [--out /tmp/vecaudit-attack-recall]
        [--cache ~/.cache/vecaudit-bench] [--report-only] [--max-share 0.0005]
        [--with conflicting-twins --with language-group] [--monitoring]

One store per host corpus (English Wikipedia lead summaries, PubMed abstracts, Reuters newswire by default: three
domains and registers), written as a JSONL export and scanned with the default detectors exactly as
``vecaudit scan file:///store.jsonl --text-field text`` chooses them (``generalization.default_scan``). Into each
store, every family at ~1% of the store (at least 5 points; white-box 4 target questions x 5):

- the dev attack sets, planted as ``benchmarks/generalization.py`` plants them (``attack_store``): PoisonedRAG
  passages alone (``poisonedrag``) and with the question bait (``poisonedrag_bait``), PIArena passages with the
  question (``piarena``), dev injection strings at the start/middle/end of real documents (``injection``);
- the attacks generated against all-MiniLM-L6-v2 by ``auditor.redteam.adversarial`` (docs/redteam.md):
  ``whitebox-poison`` (PoisonedRAG's own passages behind a HotFlip prefix optimised toward their question; target
  questions none of the stores uses otherwise; the same 20 passages in every store), ``gaslite`` and
  ``corpus-poisoning`` (optimised against 30 pseudo-queries of one topic of the host), ``typo`` (GARAG-style edits of
  host documents, in place), ``counterfactual`` (a host snippet with one fact changed, stored beside its original;
  the original leaves the clean set), ``foreign`` (50 Spanish Wikipedia summaries of one topic).

``--with`` adds opt-in detectors to the default set; ``--monitoring`` first scans the host corpus as it was (the
baseline) and then the attacked store into the same ledger, as a scheduled scan after the attack would: the
setting where detectors that weigh provenance (new since the last scan) are meant to alert. A group finding
(language-group VA341) flags every member it lists.

Families are separable: every planted point belongs to one family, the scan document of each store is saved with
its ground truth under ``--out/<corpus>/attack.scan.json`` (and the generated texts under ``--out/generated/``), and
``--report-only`` recomputes every table from those files. The held-out section re-applies the alert budget
(``benchmarks/alert_floors.py``) with floors chosen on the *other* corpora and, for rules registered in ``TUNERS``
(detectors whose parameters learn from attacks), on the *other families* only: a family is never scored with a
parameter its own points chose. Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from alert_floors import KEEP_ATTACK, budgeted, floors_from, rebudget, shipped_settings  # noqa: E402
from content_data import DEFAULT_DATA, load  # noqa: E402
from embedding_quality import EmbeddingCache, poison_sets  # noqa: E402
from generalization import (  # noqa: E402
    ALL_CORPORA,
    Cell,
    _bold_worst,
    _rate,
    _recall,
    attack_store,
    corpus_sample,
    default_scan,
    machine,
    parse_corpora,
    question_key,
    recall_by_detector,
    share,
    source_label,
    store_measures,
    write_jsonl,
)

POISONEDRAG = ("poisonedrag", "poisonedrag_bait", "piarena")
DEV_FAMILIES = (*POISONEDRAG, "injection")
GENERATED = ("whitebox-poison", "gaslite", "corpus-poisoning", "typo", "counterfactual", "foreign")
FAMILIES = (*DEV_FAMILIES, *GENERATED)
HOSTS = ("wiki", "pubmed", "reuters")
FOREIGN = "wikipedia_vital_es.jsonl"
WHITEBOX_TARGETS = 4

#: Rules whose parameters are learned from attack families (issue 16 item 2 adds them): rule id -> a function of
#: the training views (other corpora, other families; see ``family_view``) and the clean share allowed, returning
#: the rule's floor. Rules not listed get the clean-only leave-one-corpus-out floor of ``alert_floors.floors_from``.
Tuner = Callable[[list[dict[str, Any]], float], float | None]
TUNERS: dict[str, Tuner] = {}


# -- generated attacks ------------------------------------------------------------------------------------------
def whitebox_passages(data: Path, used: set[str], steps: int, seed: int, folder: Path) -> list[dict[str, Any]]:
    """PoisonedRAG's published passages (alone) of ``WHITEBOX_TARGETS`` questions none of the stores uses, each
    behind a HotFlip prefix optimised toward its question; cached in ``folder/whitebox.json``."""
    path = folder / "whitebox.json"
    if path.exists():
        return list(json.loads(path.read_text(encoding="utf-8")))
    from auditor.progress import progress_bar
    from auditor.redteam.adversarial import GradientRetriever, whitebox_prefix

    rows = poison_sets(data)["PoisonedRAG passage only"]
    questions = sorted({question_key(r) for r in rows} - used)
    rng = random.Random(f"{seed}:whitebox")
    chosen = set(rng.sample(questions, min(WHITEBOX_TARGETS, len(questions))))
    targets = [r for r in rows if question_key(r) in chosen]
    retriever = GradientRetriever()
    out = []
    bar = progress_bar(total=len(targets) * steps, desc="white-box prefixes", unit="step")
    try:
        for r in targets:
            text, found = whitebox_prefix(retriever, r["question"], r["text"], rng=rng, steps=steps, progress=bar)
            out.append({"text": text, "detail": f"whitebox-poison {r['id']}: cosine to its question "
                                                f"{found.start:.3f} -> {found.score:.3f}"})
    finally:
        bar.close()
    path.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    return out


def generated_attacks(
    corpus: str, rows: list[dict[str, Any]], vecs: np.ndarray, clean: list[int], args: argparse.Namespace,
    embed: EmbeddingCache,
) -> list[dict[str, Any]]:
    """The host-dependent generated families of one corpus: ``{"family", "text", "host" (edited document or the
    original of a twin, else None), "detail"}``; cached in ``--out/generated/<corpus>.json``."""
    path = args.out / "generated" / f"{corpus}.json"
    if path.exists():
        return list(json.loads(path.read_text(encoding="utf-8")))
    from auditor.embedder import Embedder
    from auditor.progress import progress_bar
    from auditor.redteam.adversarial import (
        GASLITE_INFO,
        GradientRetriever,
        concept_trigger,
        counterfactual,
        foreign_cluster,
        topic_queries,
        typo_attack,
    )
    from auditor.redteam.generators import Doc, question_bait

    rng = random.Random(f"{args.seed}:{corpus}:generated")
    n = len(rows)
    docs = [Doc(i, i, rows[i]["text"], None, vecs[i]) for i in clean]
    out: list[dict[str, Any]] = []
    retriever = GradientRetriever()
    per_topic = max(4, share(n, 0.002))
    for family, info in (("gaslite", GASLITE_INFO), ("corpus-poisoning", "")):
        bar = progress_bar(total=per_topic * args.concept_steps, desc=f"{corpus} {family}", unit="step")
        try:
            for _ in range(per_topic):
                seed_doc, queries = topic_queries(docs, rng)
                text, found = concept_trigger(retriever, queries, rng=rng, info=info, steps=args.concept_steps,
                                              progress=bar)
                out.append({"family": family, "text": text, "host": None,
                            "detail": f"{family} on the topic of document {seed_doc.row}: mean cosine to its 30 "
                                      f"queries {found.start:.3f} -> {found.score:.3f}"})
        finally:
            bar.close()
    hosts = rng.sample([d for d in docs if len(d.text) >= 80], min(len(docs), 2 * share(n, 0.01, least=5)))
    typo_hosts, twin_hosts = hosts[: len(hosts) // 2], hosts[len(hosts) // 2 :]
    scorer = Embedder()  # candidate typos are scored without filling the shared benchmark cache
    bar = progress_bar(total=len(typo_hosts), desc=f"{corpus} typos", unit="doc")
    try:
        for d in typo_hosts:
            query = question_bait(d.text)
            text, edits, before, after = typo_attack(d.text, scorer.encode([query])[0], scorer.encode, rng=rng,
                                                     most=6, candidates=16)
            out.append({"family": "typo", "text": text, "host": d.row,
                        "detail": f"typo: {edits} edits, cosine to {query!r} {before:.3f} -> {after:.3f}"})
            bar.update(1)
    finally:
        bar.close()
    donors = [d.text for d in rng.sample(docs, min(200, len(docs)))]
    for d in twin_hosts:
        twin = counterfactual(d.text, rng, donors)
        if twin is not None:
            out.append({"family": "counterfactual", "text": twin.text, "host": d.row,
                        "detail": f"counterfactual of {d.row}: {twin.kind} {twin.before!r} -> {twin.after!r}"})
    spanish = [r["text"] for r in load(args.data / "corpora" / FOREIGN) if isinstance(r.get("text"), str)]
    for text, _vec in foreign_cluster(spanish, embed, 50, rng):
        out.append({"family": "foreign", "text": text, "host": None, "detail": "foreign: Spanish Wikipedia"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    return out


def family_store(
    corpus: str, rows: list[dict[str, Any]], vecs: np.ndarray, args: argparse.Namespace, embed: EmbeddingCache,
    whitebox: list[dict[str, Any]],
) -> tuple[list[tuple[int, np.ndarray, dict[str, Any]]], dict[str, Any]]:
    """The corpus with every family planted; the points and the ground truth (``planted`` by family, ``clean``,
    ``detail``, ``twins``: planted twin -> its original)."""
    points, truth = attack_store(rows, vecs, args.data, embed, corpus, args.seed)
    planted: dict[str, list[int]] = {f: list(truth["planted"].get(f, [])) for f in FAMILIES}
    clean = set(truth["clean"])
    detail = dict(truth["detail"])
    twins: dict[str, int] = {}
    plants = [{"family": "whitebox-poison", "host": None, **w} for w in whitebox]
    plants += generated_attacks(corpus, rows, vecs, sorted(clean), args, embed)
    for p, vec in zip(plants, embed([p["text"] for p in plants]), strict=True):
        if p["family"] == "typo":
            pid = int(p["host"])
            points[pid] = (pid, vec, {"text": p["text"]})
        else:
            pid = len(points)
            points.append((pid, vec, {"text": p["text"]}))
        if p["host"] is not None:
            clean.discard(int(p["host"]))  # an edited document, or the original a twin contradicts
            if p["family"] == "counterfactual":
                twins[str(pid)] = int(p["host"])
        planted[p["family"]].append(pid)
        detail[str(pid)] = p["detail"]
    return points, {"planted": planted, "clean": sorted(clean), "detail": detail, "twins": twins}


def run_corpus(corpus: str, args: argparse.Namespace, embed: EmbeddingCache, whitebox: list[dict[str, Any]]) -> None:
    rows = corpus_sample(args.data, corpus, args.max_docs, args.seed)
    vecs = embed([r["text"] for r in rows])
    folder = args.out / corpus
    folder.mkdir(parents=True, exist_ok=True)
    points, truth = family_store(corpus, rows, vecs, args, embed, whitebox)
    store = folder / "attack.jsonl"
    ledger = folder / "attack.ledger.db"
    if args.monitoring:  # the host as it was: a baseline scan into the ledger the attack scan then continues
        write_jsonl(store, [(i, vecs[i], {"text": r["text"]}) for i, r in enumerate(rows)])
        default_scan(store, ledger, tenant=False, seed=args.seed, embed_sample=None, extra=tuple(args.with_))
    write_jsonl(store, points)
    load_before = os.getloadavg()[0]
    print(f"[{time.strftime('%H:%M:%S')}] {corpus}: scanning {len(points)} points (load {load_before:.1f})",
          file=sys.stderr, flush=True)
    doc = default_scan(store, ledger, tenant=False, seed=args.seed, embed_sample=None, fresh=not args.monitoring,
                       extra=tuple(args.with_))
    doc["bench"].update(load_before=load_before, corpus=corpus, store="attack", points=len(points),
                        documents=len(rows), max_docs=args.max_docs, seed=args.seed, embed_sample=None,
                        steps=args.steps, concept_steps=args.concept_steps, monitoring=args.monitoring,
                        extra_detectors=list(args.with_))
    doc["truth"] = {**truth, "corpus_ids": [str(r["id"]) for r in rows]}
    (folder / "attack.scan.json").write_text(json.dumps(doc, ensure_ascii=False, default=str), encoding="utf-8")
    store.unlink()
    print(f"[{time.strftime('%H:%M:%S')}] {corpus}: {doc['bench']['status']} in {doc['bench']['seconds']:.0f} s, "
          f"{len(doc['findings'])} findings", file=sys.stderr, flush=True)


def used_questions(data: Path, corpora: list[str], max_docs: int, seed: int) -> set[str]:
    """Target questions the dev poison families of any of ``corpora`` plant (``attack_store``'s choice, replayed
    without embedding anything), so the white-box passages never share a question with them."""
    used: set[str] = set()
    forms = poison_sets(data)
    by_id = {str(r["id"]): question_key(r) for rows in forms.values() for r in rows}

    def no_vectors(texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 1), np.float32)

    for corpus in corpora:
        rows = corpus_sample(data, corpus, max_docs, seed)
        zeros = np.zeros((len(rows), 1), np.float32)
        _, truth = attack_store(rows, zeros, data, no_vectors, corpus, seed)  # type: ignore[arg-type]
        for text in truth["detail"].values():
            cls, _, rest = text.partition(" ")
            if cls in ("poisonedrag", "poisonedrag_bait", "piarena") and rest in by_id:
                used.add(by_id[rest])
    return used


# -- families as separable views --------------------------------------------------------------------------------
def family_view(doc: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """The scan document as if only the ``keep`` families had been planted: the other families' points and their
    findings are dropped (clean documents stay). Graph rules saw every plant, so this is a view for choosing and
    scoring parameters per family, not a re-scan."""
    gone = {str(p) for f, ids in doc["truth"]["planted"].items() if f not in keep for p in ids}
    truth = {**doc["truth"], "planted": {f: ids for f, ids in doc["truth"]["planted"].items() if f in keep}}
    return {**doc, "truth": truth,
            "findings": [f for f in doc["findings"] if f["point_id"] is None or str(f["point_id"]) not in gone]}


def held_out(docs: dict[str, dict[str, Any]], max_share: float) -> dict[tuple[str, str], dict[str, Any]]:
    """For every host corpus *c* and family *F*: the view of *c* with only *F* planted, re-budgeted with floors
    chosen on the other corpora's clean documents and, for ``TUNERS`` rules, on the other corpora's views without
    *F* (leave-one-corpus-out and leave-one-family-out at once)."""
    rules, per_detector = budgeted()
    rule_ids = sorted(r for rs in per_detector.values() for r in rs)
    fixed, shares = shipped_settings(per_detector)
    out = {}
    for c, doc in docs.items():
        others = [t for t in docs if t != c]
        # the poisoning floors rise as far as the other corpora's PoisonedRAG waves allow (alert_floors.py)
        stores = {**{(t, "clean"): docs[t] for t in others},
                  **{(t, "attack"): family_view(docs[t], set(POISONEDRAG)) for t in others}}
        base = {**fixed, **floors_from(stores, others, rule_ids, max_share, KEEP_ATTACK)}
        for family in FAMILIES:
            train = [family_view(docs[t], set(FAMILIES) - {family}) for t in others]
            floors = dict(base)
            for rule_id, tune in TUNERS.items():
                chosen = tune(train, max_share)
                if chosen is not None:
                    floors[rule_id] = chosen
            out[(c, family)] = rebudget(family_view(doc, {family}), rules, per_detector, floors, shares)
    return out


# -- report -----------------------------------------------------------------------------------------------------
def family_table(cells: dict[tuple[str, str], dict[str, Any]], corpora: list[str]) -> list[str]:
    """Rows: families; columns: corpora, ``LOW+ / MEDIUM+ (n)``, the lowest recall of a row in bold; then the clean
    FPR rows. ``cells`` maps (corpus, family) to ``store_measures`` of a store where that family is planted."""
    lines = ["| family | " + " | ".join(corpora) + " |", "|---|" + "---:|" * len(corpora)]
    for family in FAMILIES:
        per = [cells[(c, family)]["recall"].get(family) for c in corpora]
        low = _bold_worst([_recall(p["LOW+"]) if p else (float("nan"), "-") for p in per], False)
        med = _bold_worst([_recall(p["MEDIUM+"]) if p else (float("nan"), "-") for p in per], False)
        lines.append(f"| {family} | " + " | ".join(
            f"{a} / {b} ({p['LOW+'][1] if p else 0})" for a, b, p in zip(low, med, per, strict=True)) + " |")
    for label in ("LOW+", "MEDIUM+", "HIGH"):
        rates: list[Cell] = [_rate(cells[(c, FAMILIES[0])]["all"][label], cells[(c, FAMILIES[0])]["clean"])
                             for c in corpora]
        lines.append(f"| clean FPR % {label} | " + " | ".join(_bold_worst(rates, True)) + " |")
    return [*lines, ""]


def report(out: Path, corpora: list[str], max_share: float) -> list[str]:
    docs = {c: json.loads((out / c / "attack.scan.json").read_text(encoding="utf-8"))
            for c in corpora if (out / c / "attack.scan.json").exists()}
    if not docs:
        return [f"no scan documents under {out}"]
    have = [c for c in corpora if c in docs]
    first = next(iter(docs.values()))["bench"]
    measured = {c: store_measures(d) for c, d in docs.items()}
    stores = ", ".join(f"{c} ({docs[c]['bench']['points']:,} points, {len(docs[c]['truth']['clean']):,} clean)"
                       for c in have)
    lines = [f"Stores: {stores}; at most {first['max_docs']:,} host documents (seeded "
             f"sample, seed {first['seed']}); gradient steps: white-box {first['steps']}, GASLITE / corpus poisoning "
             f"{first['concept_steps']}; detectors (the CLI's default set): " + ", ".join(first["detectors"]) + ".",
             "", "### Today's default scan: recall per family (LOW+ / MEDIUM+, n planted) and clean FPR", "",
             "A planted point counts when any finding at that severity names it (any detector, PII/secrets "
             "included); the FPR counts the store's untouched documents (PII/secrets aside; originals of "
             "counterfactual twins and documents edited by a plant are not clean). Lowest recall per family in "
             "bold.", ""]
    lines += family_table({(c, f): measured[c] for c in have for f in FAMILIES}, have)
    lines += recall_by_detector([docs[c] for c in have], FAMILIES)
    if len(have) > 1:
        lines += [f"### Held out: each corpus with floors chosen on the other {len(have) - 1}, each family with "
                  "parameters chosen without it", "",
                  "Per (corpus, family): the scan document with only that family planted (the other families' "
                  "points and findings dropped), the alert budget re-applied with each budgeted rule's floor chosen "
                  f"on the other corpora's clean documents (at most {max_share:.2%} of them at or above it, "
                  "`benchmarks/alert_floors.py`); rules in `TUNERS` (none today) choose theirs on the other "
                  "corpora without the family scored.", ""]
        views = held_out({c: docs[c] for c in have}, max_share)
        lines += family_table({key: store_measures(v) for key, v in views.items()}, have)
    seconds = sum(d["bench"]["seconds"] for d in docs.values())
    lines += [f"Scans: {seconds / 60:.1f} min in all (" + ", ".join(f"{c} {docs[c]['bench']['seconds']:.0f} s"
                                                               for c in have) + ").", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--corpora", default=",".join(HOSTS), help="host corpora: " + ", ".join(ALL_CORPORA))
    ap.add_argument("--max-docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=15, help="HotFlip steps per white-box prefix [15]")
    ap.add_argument("--concept-steps", type=int, default=30, help="steps per GASLITE / corpus-poisoning trigger [30]")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vecaudit-attack-recall"))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vecaudit-bench")
    ap.add_argument("--max-share", type=float, default=0.0005, help="clean share allowed above a held-out floor")
    ap.add_argument("--report-only", action="store_true", help="tables from the scan documents under --out")
    ap.add_argument("--with", dest="with_", action="append", default=[], metavar="DETECTOR",
                    help="add an opt-in detector to the default set (repeatable)")
    ap.add_argument("--monitoring", action="store_true",
                    help="scan the clean host first (the baseline), then the attacked store into the same ledger")
    ap.add_argument("--source", help="what code is scanned with, for the header [git HEAD of this checkout]")
    args = ap.parse_args(argv)
    corpora = parse_corpora(ap, args.corpora)
    started = time.time()
    if not args.report_only:
        embed = EmbeddingCache(args.cache)
        (args.out / "generated").mkdir(parents=True, exist_ok=True)
        used = used_questions(args.data, corpora, args.max_docs, args.seed)
        whitebox = whitebox_passages(args.data, used, args.steps, args.seed, args.out / "generated")
        for corpus in corpora:
            run_corpus(corpus, args, embed, whitebox)
    run = "" if args.report_only else f" Wall time {(time.time() - started) / 60:.1f} min (generation, stores, scans)."
    lines = [f"## Attack recall per family — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Machine: {machine(args.source or source_label())}.{run}", "",
             *report(args.out, corpora, args.max_share)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
