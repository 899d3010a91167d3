"""Train the learned injection sentence scorer (detectors/patterns/injection_scorer.json) on MIT-licensed dev data,
and measure how it generalises to attack families it never saw (``--cv``: family-grouped cross-fitting).

    .venv/bin/python benchmarks/train_injection_scorer.py [--data ../shared/data/dev]          # train and save
    .venv/bin/python benchmarks/train_injection_scorer.py --cv [--folds 5] [--seed 0] [--jobs 2]   # held-out report

Positives are sentences of BIPIA and CyberSecEval injection strings, negatives sentences of clean documents outside
the test split (id-hash bucket 0). The threshold is the smallest one whose document false-positive rate, averaged
over the corpora and with the rules included, is within the budget on out-of-fold scores of those documents
(calibration by cross-fitting, see ``fit_calibrated``). ``--cv`` rotates the five buckets as test split and holds
out a disjoint fifth of the attack families in each fold, so every family and every clean document is scored
exactly once by a model that never saw it, at a threshold chosen without it.

The shipped weights (v7) are trained by ``benchmarks/injection_corpora.py --save`` with this module's ``train`` on
all eleven dev corpora and two lines chosen out of corpus; saving from here gives the six-corpus weights of v6.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from content_data import DEFAULT_DATA, clean_docs, injection_strings, plant
from injection_templates import generic_tasks

from detectors.injection import InjectionDetector, normalise
from detectors.patterns.injection_scorer import (
    N_CONTEXT,
    N_CUES,
    WEIGHTS,
    SentenceScorer,
    context_features,
    featurize,
    featurize_documents,
    sentences,
)

FPR_BUDGET = 0.01
HOSTS = ("email", "code", "wiki")
POSITIONS = ("start", "middle", "end")
#: Clean text that addresses its reader ("your code", "your receipt") is rare in the corpora but is where injected
#: tasks must be told apart, so those genres weigh more.
READER_ADDRESSED_WEIGHT = 10.0
#: Clean sentences shaped like a task (a question, or an imperative first word) are the hard negatives.
TASK_SHAPED_WEIGHT = 5.0
#: Generated generic tasks (benchmarks/injection_templates.py) added to the positives.
TEMPLATE_TASKS = 600
#: Weight of one generated task against one sentence of a real attack: they are many and alike, and must not
#: drown the real attacks (measured: at weight 1 the held-out code-attack families lost recall).
TEMPLATE_WEIGHT = 0.3


class DocSet:
    """Documents with their rule verdicts and cached sentence features, so a fold only has to score them."""

    def __init__(self, texts: list[str], rules: InjectionDetector) -> None:
        pieces = [[s for _, s in sentences(normalise(t))] for t in texts]
        self.owner = np.repeat(np.arange(len(texts)), [len(p) for p in pieces])
        self.sentences = [s for p in pieces for s in p]
        self.features = featurize_documents(pieces) if self.sentences else None
        self.rule_ids = [{v[0].id for v in r} for r in rules.analyse_many(texts)]
        self.rule_hit = np.array([bool(r) for r in self.rule_ids])

    def learned(self, scorer: SentenceScorer) -> np.ndarray:
        """Highest sentence probability per document (0 where a document has no sentence); the sentence that
        gave it is kept in ``top_sentence``."""
        best = np.zeros(len(self.rule_hit))
        self.top_sentence = np.full(len(self.rule_hit), -1)
        if self.features is not None:
            probs = scorer.score_features(self.features)
            order = np.lexsort((probs, self.owner))
            last = order[np.r_[self.owner[order][1:] != self.owner[order][:-1], True]]
            best[self.owner[last]] = probs[last]
            self.top_sentence[self.owner[last]] = last
        return best

    def why(self, i: int, learned: np.ndarray) -> str:
        """The rules that fired on document ``i``, else its top learned sentence (clipped)."""
        if self.rule_ids[i]:
            return "+".join(sorted(self.rule_ids[i]))
        return f"VA518 {learned[i]:.3f} {self.sentences[self.top_sentence[i]][:80]!r}"


def positive_features(pos_rows: list[dict], hosts: list[str], seed: int) -> tuple[Any, int]:
    """Features of the positive units (the sentences of each attack and the attack as a whole; code blocks stay
    out, their lines also occur in clean code answers), each as if planted in a random training host: its context
    features are computed against the host's sentences and all of the attack's other lines, code included, as the
    detector would see them."""
    rng = random.Random(seed)
    units, context = [], []
    for r in pos_rows:
        prose = normalise(r["text"].split("```")[0])
        pieces = [s for _, s in sentences(prose)]
        every = [s for _, s in sentences(normalise(r["text"]))]
        if every[: len(pieces)] != pieces:
            every = pieces
        host = [s for _, s in sentences(normalise(rng.choice(hosts)))]
        rows = context_features([*host, *every])[len(host) : len(host) + len(pieces)]
        whole = prose.strip()[:400]
        for unit, row in [*zip(pieces, rows, strict=True), (whole, context_features([*host, whole])[-1])]:
            if len(unit) >= 8:
                units.append(unit)
                context.append(row)
    return featurize(units, np.array(context).reshape(-1, N_CONTEXT)), len(units)


def train(pos_rows: list[dict], neg: DocSet, neg_corpora: list[str], seed: int = 0, c: float = 1.0,
          hosts: list[str] | None = None, templates: int = 0) -> SentenceScorer:
    from scipy.sparse import vstack
    from sklearn.linear_model import LogisticRegression

    assert neg.features is not None and hosts
    # Generic hand-written tasks (benchmarks/injection_templates.py, no dev string among them) join the attacks in
    # every fold: they teach the shape of a plain injected task, not the topics of the dev families.
    extra = [{"text": t} for t in generic_tasks(random.Random(seed), templates)] if templates else []
    attack_features, n_attack = positive_features(pos_rows, hosts, seed)
    pos_features, n_extra = positive_features(extra, hosts, seed + 1) if extra else (None, 0)
    n_pos = n_attack + n_extra
    X = vstack([m for m in (attack_features, pos_features, neg.features) if m is not None]).tocsr()
    y = np.r_[np.ones(n_pos), np.zeros(neg.features.shape[0])]
    cues = neg.features[:, -N_CUES:].toarray()
    task_shaped = (cues[:, 0] > 0) | (cues[:, 4] > 0)
    base = neg.features.shape[0] / (n_attack + TEMPLATE_WEIGHT * n_extra)
    weight = np.r_[np.full(n_attack, base), np.full(n_extra, base * TEMPLATE_WEIGHT),
                   np.array([READER_ADDRESSED_WEIGHT if neg_corpora[i] in ("email", "code") else 1.0
                             for i in neg.owner]) * np.where(task_shaped, TASK_SHAPED_WEIGHT, 1.0)]
    model = LogisticRegression(C=c, max_iter=2000, solver="liblinear", random_state=seed)
    model.fit(X, y, sample_weight=weight)
    return SentenceScorer(model.coef_[0].astype(np.float64), float(model.intercept_[0]),
                          {"positives": n_pos, "negatives": int(neg.features.shape[0])}).pruned()


def macro_fpr(flagged: np.ndarray, corpora: np.ndarray) -> float:
    """False-positive rate averaged over the corpora: each genre counts the same, so the large Wikipedia sets
    cannot hide false positives on emails or code answers."""
    return float(np.mean([flagged[corpora == c].mean() for c in np.unique(corpora)]))


def pick_threshold(rule_hit: np.ndarray, learned: np.ndarray, corpora: np.ndarray) -> float:
    """Smallest learned threshold whose corpus-averaged document FPR (rules included) is within the budget."""
    candidates = np.unique(np.r_[learned, 1.0])
    for lo, hi in itertools.pairwise(candidates):
        threshold = (lo + hi) / 2
        if macro_fpr(rule_hit | (learned >= threshold), corpora) <= FPR_BUDGET:
            return float(threshold)
    return 1.0


def plant_all(attacks: list[dict], hosts: dict[str, list[str]], rng: random.Random) -> list[dict[str, Any]]:
    """Each attack at the start, the middle and the end, each time in a host of another genre."""
    out = []
    for i, a in enumerate(attacks):
        for j, where in enumerate(POSITIONS):
            genre = HOSTS[(i + j) % 3]
            out.append({**a, "where": where, "host": genre, "text": plant(rng.choice(hosts[genre]), a["text"], where)})
    return out


def fit_calibrated(attacks: list[dict], clean: DocSet, docs: list[dict], buckets: set[int], seed: int,
                   c: float, templates: int) -> tuple[SentenceScorer, float]:
    """A scorer trained on the clean documents of ``buckets`` and its threshold. The threshold is chosen on
    out-of-fold scores of those same documents (each bucket scored by a model trained on the others): every
    document in ``buckets`` is a calibration document once, so each small genre (100 emails, 100 code answers)
    calibrates with five times the documents a single calibration bucket has, where one false positive in a
    bucket of 16 code answers would alone exceed the corpus-averaged budget."""
    bucket = np.array([d["bucket"] for d in docs])
    corpora = np.array([d["corpus"] for d in docs])
    inside = np.isin(bucket, sorted(buckets))
    subsets = [np.flatnonzero(inside & (bucket != b)) for b in sorted(buckets)] + [np.flatnonzero(inside)]
    jobs = [(attacks, idx, [docs[i]["corpus"] for i in idx],
             [docs[i]["text"] for i in idx if docs[i]["corpus"] in HOSTS], seed, c, templates) for idx in subsets]
    scorers = _map_fits(clean, jobs)
    out_of_fold = np.zeros(len(docs))
    for b, scorer in zip(sorted(buckets), scorers, strict=False):
        held = bucket == b
        out_of_fold[held] = clean.learned(scorer)[held]
    threshold = pick_threshold(clean.rule_hit[inside], out_of_fold[inside], corpora[inside])
    return scorers[-1], threshold


#: Worker processes for the independent fits of :func:`fit_calibrated` (``--jobs``); 1 fits them in this process.
JOBS = 1
_SHARED: dict[str, DocSet] = {}


def _fit_job(job: tuple[Any, ...]) -> SentenceScorer:
    attacks, idx, corpora, hosts, seed, c, templates = job
    return train(attacks, _subset(_SHARED["clean"], idx), corpora, seed, c, hosts, templates)


def _map_fits(clean: DocSet, jobs: list[tuple[Any, ...]]) -> list[SentenceScorer]:
    """The fits of ``jobs``, in forked worker processes when ``JOBS`` > 1 (they share ``clean`` copy-on-write
    instead of pickling its features for every fit); same results either way."""
    _SHARED["clean"] = clean
    if JOBS <= 1:
        return [_fit_job(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(JOBS, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_fit_job, jobs))


def cross_validate(docs: list[dict], attacks: list[dict], folds: int, seed: int, c: float, templates: int,
                   clean: DocSet | None = None) -> dict[str, Any]:
    rules = InjectionDetector(learned=False)
    rng = random.Random(seed)
    families = sorted({a["family"] for a in attacks})
    rng.shuffle(families)
    fold_of = {f: i % folds for i, f in enumerate(families)}
    if clean is None:
        t0 = time.perf_counter()
        clean = DocSet([d["text"] for d in docs], rules)
        print(f"featurised {len(docs)} clean documents ({len(clean.sentences)} sentences) in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    corpora = np.array([d["corpus"] for d in docs])
    bucket = np.array([d["bucket"] for d in docs])
    recall: dict[str, list[bool]] = defaultdict(list)
    clean_flag = np.zeros(len(docs), dtype=bool)
    clean_by: dict[str, list[str]] = defaultdict(list)
    folds_out = []
    for k in range(folds):
        test_b = k % 5
        train_attacks = [a for a in attacks if fold_of[a["family"]] != k]
        held = [a for a in attacks if fold_of[a["family"]] == k]
        scorer, threshold = fit_calibrated(train_attacks, clean, docs, set(range(5)) - {test_b}, seed, c,
                                           templates)
        learned = clean.learned(scorer)
        test = bucket == test_b
        flagged = clean.rule_hit | (learned >= threshold)
        clean_flag[test] = flagged[test]
        for i in np.flatnonzero(test & flagged):
            clean_by[docs[i]["corpus"]].append(f"{docs[i]['id']} {clean.why(int(i), learned)}")
        hosts = {g: [d["text"] for d, t in zip(docs, test, strict=True) if t and d["corpus"] == g] for g in HOSTS}
        planted = plant_all(held, hosts, rng)
        pset = DocSet([p["text"] for p in planted], rules)
        hit = pset.rule_hit | (pset.learned(scorer) >= threshold)
        for p, h in zip(planted, hit, strict=True):
            for key in (f"family {p['family']}", f"position {p['where']}", f"host {p['host']}",
                        f"source {p['family'].split(':')[0]}", "all"):
                recall[key].append(bool(h))
        folds_out.append({"fold": k, "threshold": threshold, "held_families": len({a["family"] for a in held}),
                          "recall": float(hit.mean()), "test_macro_fpr": macro_fpr(flagged[test], corpora[test]),
                          "rules_recall": float(pset.rule_hit.mean())})
        print(f"fold {k}: threshold {threshold:.4f} recall {hit.mean():.3f} (rules {pset.rule_hit.mean():.3f}) "
              f"test FPR {macro_fpr(flagged[test], corpora[test]):.4f}", file=sys.stderr)
    per_corpus = {c_: (int(clean_flag[corpora == c_].sum()), int((corpora == c_).sum())) for c_ in np.unique(corpora)}
    return {"folds": folds_out, "recall": recall, "per_corpus": per_corpus,
            "macro_fpr": macro_fpr(clean_flag, corpora), "fpr": float(clean_flag.mean()), "fired": clean_by}


def _subset(ds: DocSet, idx: np.ndarray) -> DocSet:
    """The documents ``idx`` of ``ds`` (features sliced, not recomputed)."""
    out = DocSet.__new__(DocSet)
    keep = np.isin(ds.owner, idx)
    out.owner = np.searchsorted(idx, ds.owner[keep])
    out.sentences = [s for s, k in zip(ds.sentences, keep, strict=True) if k]
    out.features = ds.features[keep] if ds.features is not None else None
    out.rule_ids = [ds.rule_ids[i] for i in idx]
    out.rule_hit = ds.rule_hit[idx]
    return out


def report(result: dict[str, Any], folds: int, seed: int) -> list[str]:
    recall = result["recall"]
    lines = [f"Family-grouped cross-fitting: {folds} folds, seed {seed}; {len(recall['all']) // 3} attack strings, "
             f"each planted at the start, middle and end of test-split hosts ({len(recall['all'])} documents).", "",
             "| fold | families held out | threshold | recall (held-out families) | rules alone | "
             "test FPR averaged over corpora |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {f['fold']} | {f['held_families']} | {f['threshold']:.4f} | {f['recall']:.3f} | "
              f"{f['rules_recall']:.3f} | {f['test_macro_fpr']:.4f} |" for f in result["folds"]]
    lines += ["", f"**Pooled: recall {np.mean(recall['all']):.3f} on unseen families; FPR averaged over corpora "
                  f"{result['macro_fpr']:.4f}, on all clean documents {result['fpr']:.4f}.**", "",
              "| clean corpus | flagged / documents | FPR |", "|---|---:|---:|"]
    lines += [f"| {c} | {k} / {n} | {k / n:.4f} |" for c, (k, n) in result["per_corpus"].items()]
    lines += ["", "| group | recall | n |", "|---|---:|---:|"]
    lines += [f"| {g} | {np.mean(v):.3f} | {len(v)} |" for g, v in sorted(recall.items()) if g != "all"]
    lines += ["", "Clean documents flagged (id, why):", ""]
    lines += [f"- {c}: {w}" for c, v in sorted(result["fired"].items()) for w in v] or ["- none"]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cv", action="store_true", help="family-grouped cross-fitting report; does not save weights")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--c", type=float, default=1.0, help="inverse L2 regularisation strength")
    ap.add_argument("--templates", type=int, default=TEMPLATE_TASKS,
                    help="generated generic task sentences added to the positives (0: none)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes for the independent fits (fork)")
    args = ap.parse_args()
    global JOBS
    JOBS = args.jobs
    docs = clean_docs(args.data)
    attacks = injection_strings(args.data)
    if args.cv:
        result = cross_validate(docs, attacks, args.folds, args.seed, args.c, args.templates)
        print("\n".join(report(result, args.folds, args.seed)))
        return
    # The test split (bucket 0) stays out of training and calibration: benchmarks/content_quality.py confirms there.
    fit_docs = [d for d in docs if d["split"] != "test"]
    clean = DocSet([d["text"] for d in fit_docs], InjectionDetector(learned=False))
    scorer, threshold = fit_calibrated(attacks, clean, fit_docs, {1, 2, 3, 4}, args.seed, args.c,
                                       args.templates)
    scorer.meta.update({"threshold": round(threshold, 6), "fpr_budget": FPR_BUDGET,
                        "trained_on": "BIPIA text+code attacks, CyberSecEval prompt injection (MIT); generated "
                                      "generic tasks (benchmarks/injection_templates.py); dev corpora train and "
                                      "calib splits (MIT, CC BY-SA 4.0 text)"})
    print(f"positives {scorer.meta['positives']} negatives {scorer.meta['negatives']} threshold {threshold:.4f}")
    scorer.save(WEIGHTS)
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
