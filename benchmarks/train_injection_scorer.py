"""Train the learned injection sentence scorer (detectors/patterns/injection_scorer.json) on MIT-licensed dev data:
positives are sentences of BIPIA and CyberSecEval injection strings, negatives sentences of clean training-split
documents; the threshold is set for <= 1% document false positives, averaged over corpora, on the calibration
split (rules included).

    .venv/bin/python benchmarks/train_injection_scorer.py [--data ../shared/data/dev] [--holdout-families 0.3]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from content_data import DEFAULT_DATA, clean_docs, injection_strings, plant

from detectors.injection import InjectionDetector
from detectors.patterns.injection_scorer import WEIGHTS, SentenceScorer, featurize, sentences

FPR_BUDGET = 0.01
RULE_SHARE = 0.8
SECOND_PERSON_WEIGHT = 10.0  # the learned rule may use at most this share of the FPR budget left after the rules


def positive_units(text: str) -> list[str]:
    """Sentences of an injection string; code blocks stay out (their lines also occur in clean code answers)."""
    prose = text.split("```")[0]
    return [s for _, s in sentences(prose)] + [prose.strip()[:400]]


def train(pos_rows: list[dict], neg_docs: list[dict], seed: int = 0, c: float = 1.0) -> SentenceScorer:
    from sklearn.linear_model import LogisticRegression

    pos = [u for r in pos_rows for u in positive_units(r["text"]) if len(u) >= 8]
    neg_pairs = [(s, d["corpus"]) for d in neg_docs for _, s in sentences(d["text"])]
    random.Random(seed).shuffle(neg_pairs)
    neg = [s for s, _ in neg_pairs]
    X = featurize(pos + neg)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    # Clean text that addresses its reader ("your code", "your receipt") is rare in the corpora but is where
    # injected tasks must be told apart, so those genres weigh more.
    weight = np.r_[np.full(len(pos), len(neg) / len(pos)),
                   [SECOND_PERSON_WEIGHT if corpus in ("email", "code") else 1.0 for _, corpus in neg_pairs]]
    model = LogisticRegression(C=c, max_iter=2000, solver="liblinear")
    model.fit(X, y, sample_weight=weight)
    return SentenceScorer(model.coef_[0].astype(np.float64), float(model.intercept_[0]),
                          {"positives": len(pos), "negatives": len(neg)})


def doc_scores(detector: InjectionDetector, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per document: whether any rule fired, and the highest learned sentence probability."""
    detector.params["learned_threshold"] = 0.0  # report every learned score
    rule_hit, learned = [], []
    for verdicts in detector.analyse_many(texts):
        rule_hit.append(any(v[0].id != "VA518" for v in verdicts))
        learned.append(max([v[1] for v in verdicts if v[0].id == "VA518"], default=0.0))
    return np.array(rule_hit), np.array(learned)


def pick_threshold(detector: InjectionDetector, calib_docs: list[dict]) -> tuple[float, float]:
    """Smallest threshold whose document FPR, averaged over the corpora (each genre counts the same, so the
    large Wikipedia sets cannot hide false positives on emails or code answers), stays within the budget."""
    rule_hit, learned = doc_scores(detector, [d["text"] for d in calib_docs])
    corpora = np.array([d["corpus"] for d in calib_docs])
    for threshold in np.linspace(0.5, 0.999, 500):
        flagged = rule_hit | (learned >= threshold)
        if np.mean([flagged[corpora == c].mean() for c in set(corpora)]) <= FPR_BUDGET:
            return float(threshold), float(rule_hit.mean())
    return 0.999, float(rule_hit.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--holdout-families", type=float, default=0.0,
                    help="evaluate on this share of attack families left out of training; does not save weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--c", type=float, default=1.0, help="inverse L2 regularisation strength")
    args = ap.parse_args()
    docs = clean_docs(args.data)
    attacks = injection_strings(args.data)
    train_docs = [d for d in docs if d["split"] == "train"]
    calib_docs = [d for d in docs if d["split"] == "calib"]
    calib_texts = [d["text"] for d in calib_docs]
    rng = random.Random(args.seed)
    if args.holdout_families:
        families = sorted({a["family"] for a in attacks})
        rng.shuffle(families)
        held = set(families[: int(len(families) * args.holdout_families)])
        train_attacks = [a for a in attacks if a["family"] not in held]
        eval_attacks = [a for a in attacks if a["family"] in held]
    else:
        train_attacks, eval_attacks = attacks, []
    scorer = train(train_attacks, train_docs, args.seed, args.c)
    detector = InjectionDetector()
    detector._scorer = scorer
    threshold, rule_fpr = pick_threshold(detector, calib_docs)
    scorer.meta.update({"threshold": round(threshold, 4), "calib_rule_fpr": round(rule_fpr, 4),
                        "trained_on": "BIPIA text+code attacks, CyberSecEval prompt injection (MIT); dev corpora "
                                      "train split (MIT, CC BY-SA 4.0 text)"})
    print(f"positives {scorer.meta['positives']} negatives {scorer.meta['negatives']} "
          f"threshold {threshold:.4f} calib rule FPR {rule_fpr:.4f}")
    detector.params["learned_threshold"] = threshold
    flagged = [bool(v) for v in detector.analyse_many(calib_texts)]
    by_corpus: dict[str, list[bool]] = {}
    for d, f in zip(calib_docs, flagged, strict=True):
        by_corpus.setdefault(d["corpus"], []).append(f)
    print("calib FPR by corpus: " + ", ".join(f"{k} {np.mean(v):.3f} (n={len(v)})" for k, v in by_corpus.items()))
    if eval_attacks:
        hosts = [d["text"] for d in docs if d["split"] == "calib" and d["corpus"] in ("email", "code", "wiki")]
        planted = [plant(rng.choice(hosts), a["text"], ("start", "middle", "end")[i % 3])
                   for i, a in enumerate(eval_attacks)]
        detector.params["learned_threshold"] = threshold
        hit = [bool(v) for v in detector.analyse_many(planted)]
        learned_only = [any(x[0].id == "VA518" for x in v) for v in detector.analyse_many(planted)]
        print(f"held-out families {len(held)}/{len(families)}: recall {np.mean(hit):.3f} "
              f"({len(eval_attacks)} strings; learned rule fired on {np.mean(learned_only):.3f})")
        return
    scorer.save(WEIGHTS)
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
