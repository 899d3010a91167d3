"""Train the learned injection sentence scorer (detectors/patterns/injection_scorer.json) on MIT-licensed dev data:
positives are sentences of BIPIA and CyberSecEval injection strings, negatives sentences of clean training-split
documents; the threshold is set for <= 1% document false positives on the calibration split (rules included).

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
RULE_SHARE = 0.8  # the learned rule may use at most this share of the FPR budget left after the rules


def positive_units(text: str) -> list[str]:
    """Sentences of an injection string; code blocks stay out (their lines also occur in clean code answers)."""
    prose = text.split("```")[0]
    return [s for _, s in sentences(prose)] + [prose.strip()[:400]]


def train(pos_rows: list[dict], neg_docs: list[dict], seed: int = 0) -> SentenceScorer:
    from sklearn.linear_model import LogisticRegression

    pos = [u for r in pos_rows for u in positive_units(r["text"]) if len(u) >= 8]
    neg = [s for d in neg_docs for _, s in sentences(d["text"])]
    random.Random(seed).shuffle(neg)
    X = featurize(pos + neg)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, solver="liblinear")
    model.fit(X, y)
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


def pick_threshold(detector: InjectionDetector, calib_texts: list[str]) -> tuple[float, float]:
    rule_hit, learned = doc_scores(detector, calib_texts)
    rule_fpr = float(rule_hit.mean())
    allowed = max(0.0, (FPR_BUDGET - rule_fpr) * RULE_SHARE)
    free = learned[~rule_hit]
    k = int(np.floor(allowed * len(calib_texts)))
    threshold = float(np.sort(free)[::-1][k]) + 1e-6 if k < len(free) else 0.5
    return max(threshold, 0.5), rule_fpr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--holdout-families", type=float, default=0.0,
                    help="evaluate on this share of attack families left out of training; does not save weights")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    docs = clean_docs(args.data)
    attacks = injection_strings(args.data)
    train_docs = [d for d in docs if d["split"] == "train"]
    calib_texts = [d["text"] for d in docs if d["split"] == "calib"]
    rng = random.Random(args.seed)
    if args.holdout_families:
        families = sorted({a["family"] for a in attacks})
        rng.shuffle(families)
        held = set(families[: int(len(families) * args.holdout_families)])
        train_attacks = [a for a in attacks if a["family"] not in held]
        eval_attacks = [a for a in attacks if a["family"] in held]
    else:
        train_attacks, eval_attacks = attacks, []
    scorer = train(train_attacks, train_docs, args.seed)
    detector = InjectionDetector()
    detector._scorer = scorer
    threshold, rule_fpr = pick_threshold(detector, calib_texts)
    scorer.meta.update({"threshold": round(threshold, 4), "calib_rule_fpr": round(rule_fpr, 4),
                        "trained_on": "BIPIA text+code attacks, CyberSecEval prompt injection (MIT); dev corpora "
                                      "train split (MIT, CC BY-SA 4.0 text)"})
    print(f"positives {scorer.meta['positives']} negatives {scorer.meta['negatives']} "
          f"threshold {threshold:.4f} calib rule FPR {rule_fpr:.4f}")
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
