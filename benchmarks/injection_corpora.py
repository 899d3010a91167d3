"""The learned injection scorer (VA518) across corpora, leave-one-corpus-out (issue 17 item 4).

    .venv/bin/python benchmarks/injection_corpora.py [--data ../shared/data/dev] [--max-docs 2000] [--save]

Negatives are the clean documents of every dev corpus (the six of content_data and the five look-alikes of issue
17: web-search evidence, Reuters wire, GOV.UK guidance, report tables, recipes), at most ``--max-docs`` of each
(seeded); positives the dev injection strings and the generic generated tasks, as in train_injection_scorer.py.
For every corpus *c*:

* a scorer is trained on the other corpora only, and its two lines are chosen on them *out of corpus*: the other
  corpora are split in two groups, a scorer trained on one group scores the other, so each training document is
  scored by a model that never saw its corpus. The **alert line** (VA518 at MEDIUM) is the lowest score with at most
  ``ALERT_FPR`` (0.1%) of those documents at or above it, pooled; the **report line** (VA518 at LOW) the lowest with
  at most ``REPORT_FPR`` (1%);
* then *c*'s clean documents are scored (the share at or above each line is its held-out false-positive rate) and
  the dev injection strings planted at the start / middle / end of *c*'s documents (recall of the rules and of the
  scorer at each line; the attack strings are in the training set of every fold: this measures the host corpus,
  not unseen attack families — train_injection_scorer.py ``--cv`` does that).

``--save`` then trains the shipped scorer on all corpora with lines chosen the same way (two corpus groups, out of
corpus) and writes detectors/patterns/injection_scorer.json. Prints markdown.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from content_data import DEFAULT_DATA, bucket_of, injection_strings, load, plant
from generalization import ALL_CORPORA
from train_injection_scorer import HOSTS, TEMPLATE_TASKS, DocSet, _subset, train

from detectors.injection import InjectionDetector
from detectors.patterns.injection_scorer import WEIGHTS, SentenceScorer

ALERT_FPR = 0.001
REPORT_FPR = 0.01
POSITIONS = ("start", "middle", "end")


def corpus_docs(data: Path, max_docs: int, seed: int) -> list[dict[str, Any]]:
    out = []
    for corpus, name in ALL_CORPORA.items():
        rows = [r for r in load(data / "corpora" / name) if isinstance(r.get("text"), str) and r["text"].strip()]
        if len(rows) > max_docs:
            rows = random.Random(f"{seed}:{corpus}").sample(rows, max_docs)
        out += [{**r, "corpus": corpus, "bucket": bucket_of(f"{corpus}:{r['id']}")} for r in rows]
    return out


def line_at(scores: np.ndarray, fpr: float) -> float:
    """The lowest score with at most ``fpr`` of ``scores`` at or above it."""
    ranked = np.sort(scores)[::-1]
    allowed = math.floor(fpr * len(ranked))
    return float(np.nextafter(ranked[allowed], np.inf)) if allowed < len(ranked) else 0.0


def fit(docs: list[dict[str, Any]], clean: DocSet, idx: np.ndarray, attacks: list[dict], seed: int) -> SentenceScorer:
    corpora = [docs[i]["corpus"] for i in idx]
    hosts = [docs[i]["text"] for i in idx if docs[i]["corpus"] in HOSTS] or [docs[i]["text"] for i in idx[:500]]
    return train(attacks, _subset(clean, idx), corpora, seed, 1.0, hosts, TEMPLATE_TASKS)


def fit_with_lines(docs: list[dict[str, Any]], clean: DocSet, corpora: list[str], attacks: list[dict],
                   seed: int) -> tuple[SentenceScorer, float, float]:
    """A scorer trained on ``corpora`` and its alert / report lines from out-of-corpus scores (two groups)."""
    names = np.array([d["corpus"] for d in docs])
    groups = [corpora[0::2], corpora[1::2]]
    oof = []
    for train_group, score_group in ((groups[0], groups[1]), (groups[1], groups[0])):
        scorer = fit(docs, clean, np.flatnonzero(np.isin(names, train_group)), attacks, seed)
        scored = np.isin(names, score_group)
        oof.append(np.where(clean.rule_hit[scored], 0.0, clean.learned(scorer)[scored]))
    pooled = np.concatenate(oof)
    final = fit(docs, clean, np.flatnonzero(np.isin(names, corpora)), attacks, seed)
    return final, line_at(pooled, ALERT_FPR), line_at(pooled, REPORT_FPR)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max-docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpora", default=",".join(ALL_CORPORA), help="held-out corpora to report")
    ap.add_argument("--save", action="store_true", help="also train and save the shipped scorer")
    args = ap.parse_args(argv)
    rules = InjectionDetector(learned=False)
    docs = corpus_docs(args.data, args.max_docs, args.seed)
    attacks = injection_strings(args.data)
    t0 = time.perf_counter()
    clean = DocSet([d["text"] for d in docs], rules)
    print(f"featurised {len(docs)} documents ({len(clean.sentences)} sentences) in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    names = np.array([d["corpus"] for d in docs])
    everything = list(ALL_CORPORA)
    rng = random.Random(args.seed)
    lines = ["| held-out corpus (docs) | alert line | report line | clean FPR at alert line | at report line | "
             "rules alone | injections planted | recall rules | rules + scorer at alert line | at report line |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    worst: dict[str, tuple[float, str]] = {}
    for c in [x for x in args.corpora.split(",") if x]:  # --corpora "" with --save: only train the shipped one
        t1 = time.perf_counter()
        scorer, alert, report = fit_with_lines(docs, clean, [x for x in everything if x != c], attacks, args.seed)
        held = names == c
        learned = clean.learned(scorer)[held]
        rule_hit = clean.rule_hit[held]
        fpr_alert = float(np.mean(rule_hit | (learned >= alert)))
        fpr_report = float(np.mean(rule_hit | (learned >= report)))
        hosts = [docs[i]["text"] for i in np.flatnonzero(held)]
        planted = [plant(rng.choice(hosts), a["text"], POSITIONS[j % 3]) for j, a in enumerate(attacks)]
        pset = DocSet(planted, rules)
        p_learned = pset.learned(scorer)
        rec_alert = float(np.mean(pset.rule_hit | (p_learned >= alert)))
        rec_report = float(np.mean(pset.rule_hit | (p_learned >= report)))
        lines.append(f"| {c} ({int(held.sum()):,}) | {alert:.4f} | {report:.4f} | {100 * fpr_alert:.2f}% | "
                     f"{100 * fpr_report:.2f}% | {100 * rule_hit.mean():.2f}% | {len(planted)} | "
                     f"{pset.rule_hit.mean():.3f} | {rec_alert:.3f} | {rec_report:.3f} |")
        for key, value, higher_worse in (("FPR at alert line", fpr_alert, True),
                                         ("FPR at report line", fpr_report, True),
                                         ("recall at alert line", rec_alert, False),
                                         ("recall at report line", rec_report, False)):
            if key not in worst or (value > worst[key][0] if higher_worse else value < worst[key][0]):
                worst[key] = (value, c)
        print(f"{c}: {time.perf_counter() - t1:.0f} s; {lines[-1]}", file=sys.stderr)
    lines += ["", "Worst held-out corpus: " + "; ".join(f"{k} {v:.4f} ({c})" for k, (v, c) in worst.items()) + "."]
    if args.save:
        scorer, alert, report = fit_with_lines(docs, clean, everything, attacks, args.seed)
        scorer.meta.update({"threshold": round(report, 6), "alert_threshold": round(alert, 6),
                            "fpr_budget": REPORT_FPR, "alert_fpr_budget": ALERT_FPR,
                            "trained_on": "BIPIA text+code attacks, CyberSecEval prompt injection (MIT); generated "
                                          "generic tasks (benchmarks/injection_templates.py); clean documents of "
                                          f"the {len(everything)} dev corpora, at most {args.max_docs} each "
                                          "(benchmarks/injection_corpora.py)"})
        scorer.save(WEIGHTS)
        lines += ["", f"Saved {WEIGHTS.name}: report line {report:.4f}, alert line {alert:.4f} (lines chosen out of "
                      "corpus: two corpus groups, each scored by a scorer trained on the other)."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
