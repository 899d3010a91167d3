"""Does a classifier on all-MiniLM-L6-v2 sentence embeddings catch injected tasks of unseen families better than the
learned n-gram scorer (VA518)? Leave-family-out x leave-corpus-group-out (issue 16 item 2, "injection").

    nice .venv/bin/python benchmarks/injection_embedding.py [--data ../shared/data/dev] [--max-docs 150]
        [--cache ~/.cache/vecaudit-bench] [--cascade-share 0.1] [--seed 0] [--shipped-lines] [--save]

Data: at most ``--max-docs`` clean documents of each of the eleven dev corpora (seeded, as injection_corpora.py)
and the 501 dev injection strings, whose families (dataset:category) are hashed into five folds. The corpora are
split in two groups (alternating in ``ALL_CORPORA`` order). For every corpus group *g* held out and every family
fold *f* held out:

* the n-gram scorer is trained (``injection_corpora.fit``: the shipped recipe) on the clean documents of the other
  group and the attacks of the other folds (plus the generic generated tasks);
* a logistic regression is trained on the same data on each sentence's embedding (384 dims) plus a context
  feature: the sentence's cosine to the mean embedding of the rest of its document (an injected task is off-topic
  in its host). Positives are the attacks' prose sentences and whole prose, each placed in a random training host
  for its context, and the generated tasks (weight ``TEMPLATE_WEIGHT``); negatives every sentence of the training
  documents, task-shaped ones (imperative or question, the n-gram scorer's cue) weighted ``TASK_SHAPED_WEIGHT`` as
  the n-gram scorer does; classes balanced. Nothing is tuned on held-out data: C=1 and the weights are the n-gram
  scorer's;
* every held-out attack is planted at the start / middle / end (in turn) of a random document of group *g*, and
  the methods score the planted documents and *g*'s clean documents (a document's score is its highest sentence).

Recall is measured at the line that flags 0.1% and 1% of *g*'s clean documents (rule hits count as flagged, and
planted documents caught by a rule count as caught): the recall each method reaches at that false-positive rate of
clean documents of corpora it never saw, on families it never saw. Methods: ``ngram`` (today's VA518 scorer),
``emb`` (embedding LR), ``emb-noctx`` (without the context feature), ``mean`` (per sentence, the mean of the two
probabilities), ``rank-max`` (per sentence, the larger of the two scores as a rank among the training documents'
clean sentences), and ``cascade``: ``mean`` where only documents with a sentence above a low n-gram line are
embedded (the line passes ``--cascade-share`` of the training documents; the rest keep the n-gram score / 2),
whose cost is the share of documents embedded. ``--shipped-lines`` also scores ``ngram`` and ``mean`` at lines
chosen as the shipped ones are (out of corpus, on the training group alone) and reports the held-out clean
documents they flag per corpus. Prints markdown; embeddings are cached (``--cache``) so reruns only embed new
sentences. Results: benchmarks/results/injection-embedding.md.

``--save`` instead trains the shipped classifier (detectors/patterns/injection_embedding.json) on every corpus and
attack, with the two lines of the mean chosen out of corpus (two corpus groups, each scored by models trained on
the other) and the digest of the n-gram weights they hold for; rerun it after every new n-gram weights file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from content_data import DEFAULT_DATA, injection_strings, plant
from embedding_quality import EmbeddingCache
from generalization import ALL_CORPORA
from injection_corpora import corpus_docs, fit, line_at
from injection_templates import generic_tasks
from train_injection_scorer import (
    READER_ADDRESSED_WEIGHT,
    TASK_SHAPED_WEIGHT,
    TEMPLATE_TASKS,
    TEMPLATE_WEIGHT,
    DocSet,
)

from detectors.injection import (
    EMBEDDING_WEIGHTS,
    EmbeddingClassifier,
    InjectionDetector,
    context_column,
    file_digest,
    normalise,
)
from detectors.patterns.injection_scorer import WEIGHTS, cue_features, sentences

FOLDS = 5
FPRS = (0.001, 0.01)
ALERT_FPR, REPORT_FPR = FPRS
POSITIONS = ("start", "middle", "end")
METHODS = ("ngram", "emb", "emb-noctx", "mlp", "mean", "mean-mlp", "rank-max", "cascade")
CHUNK = 1000


def family_fold(family: str) -> int:
    return int(hashlib.sha1(family.encode()).hexdigest(), 16) % FOLDS


class Embeddings:
    """Unit sentence embeddings through the persistent cache, embedded in chunks (saved after each) with progress."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache = EmbeddingCache(cache_dir)
        self.embedded = 0
        self.seconds = 0.0

    def __call__(self, texts: list[str]) -> np.ndarray:
        from tqdm import tqdm

        missing = [t for t in dict.fromkeys(texts) if self.cache.key(t) not in self.cache.vectors]
        if missing:
            t0 = time.perf_counter()
            for k in tqdm(range(0, len(missing), CHUNK), desc="embed (chunks of 1000)", file=sys.stderr):
                self.cache(missing[k : k + CHUNK])
            self.seconds += time.perf_counter() - t0
            self.embedded += len(missing)
        if not texts:
            return np.zeros((0, 384), np.float32)
        out = self.cache(texts)
        return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-9)


def doc_max(scores: np.ndarray, owner: np.ndarray, n_docs: int) -> np.ndarray:
    out = np.zeros(n_docs)
    np.maximum.at(out, owner, scores)
    return out


def positive_units(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Per attack, its prose sentences and its whole prose (clipped), as the n-gram scorer trains on them."""
    out = []
    for r in rows:
        prose = normalise(r["text"].split("```")[0])
        units = [s for _, s in sentences(prose)] + [prose.strip()[:400]]
        out.append([u for u in units if len(u) >= 8])
    return out


def train_embedding_lr(emb: Embeddings, pos: list[list[str]], pos_weight: list[float], host_emb: list[np.ndarray],
                       neg_X: np.ndarray, neg_w: np.ndarray, seed: int, context: bool, mlp: bool = False) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    rng = random.Random(seed)
    rows, weights = [], []
    for units, w in zip(pos, pos_weight, strict=True):
        if not units:
            continue
        E = emb(units)
        host = host_emb[rng.randrange(len(host_emb))]
        # context of each unit: the host's sentences and the attack's other sentences
        total = host.sum(0) + E[:-1].sum(0) if len(E) > 1 else host.sum(0)
        for j, e in enumerate(E):
            rest = total - (e if j < len(E) - 1 else 0)
            n = np.linalg.norm(rest)
            rows.append(np.r_[e, float(e @ rest / n) if n > 0 else 0.0])
            weights.append(w)
    Xp = np.array(rows, np.float32)
    X = np.r_[Xp, neg_X] if context else np.r_[Xp[:, :-1], neg_X[:, :-1]]
    y = np.r_[np.ones(len(Xp)), np.zeros(len(neg_X))]
    wp = np.array(weights)
    w = np.r_[wp * (neg_w.sum() / wp.sum()), neg_w]
    w = w * (len(w) / w.sum())
    if mlp:  # fixed a priori, not tuned: one hidden layer of 128, L2 1e-3, 10% held out for early stopping
        return MLPClassifier((128,), alpha=1e-3, early_stopping=True, random_state=seed, max_iter=200).fit(
            X, y, sample_weight=w)
    return LogisticRegression(C=1.0, max_iter=3000, random_state=seed).fit(X, y, sample_weight=w)


def rank_of(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of ``reference`` strictly below each score (0..1)."""
    ref = np.sort(reference)
    return np.searchsorted(ref, scores, side="left") / len(ref)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max-docs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vecaudit-bench")
    ap.add_argument("--cascade-share", type=float, default=0.1,
                    help="share of training documents whose top n-gram sentence passes the cascade's low line")
    ap.add_argument("--shipped-lines", action="store_true",
                    help="also measure ngram and mean at lines chosen out of corpus on the training group, as shipped")
    ap.add_argument("--save", action="store_true",
                    help=f"instead of the held-out report, train the shipped classifier ({EMBEDDING_WEIGHTS.name})")
    args = ap.parse_args(argv)
    if not (args.data / "corpora").is_dir():
        ap.error(f"no dev data at {args.data} (expected {args.data / 'corpora'})")
    if args.max_docs < 10 or not 0 < args.cascade_share <= 1:
        ap.error("--max-docs must be >= 10 and --cascade-share in (0, 1]")
    t_start = time.perf_counter()
    rules = InjectionDetector(learned=False)
    docs = corpus_docs(args.data, args.max_docs, args.seed)
    attacks = injection_strings(args.data)
    names = np.array([d["corpus"] for d in docs])
    corpora = list(ALL_CORPORA)
    groups = [corpora[0::2], corpora[1::2]]
    clean = DocSet([d["text"] for d in docs], rules)
    emb = Embeddings(args.cache)
    print(f"{len(docs)} documents, {len(clean.sentences)} sentences; {len(attacks)} attacks", file=sys.stderr)
    clean_E = emb(clean.sentences)
    clean_X = context_column(clean_E, clean.owner, len(docs))
    cues = cue_features(clean.sentences).toarray()
    task_shaped = (cues[:, 0] > 0) | (cues[:, 4] > 0)
    neg_w_all = np.where(task_shaped, TASK_SHAPED_WEIGHT, 1.0) * np.where(
        np.isin(names[clean.owner], ("email", "code")), READER_ADDRESSED_WEIGHT, 1.0)
    templates = [[t] for t in generic_tasks(random.Random(args.seed), TEMPLATE_TASKS)]
    attack_units = positive_units(attacks)
    folds = np.array([family_fold(a["family"]) for a in attacks])
    emb([u for units in attack_units + templates for u in units])  # one pass, not one per attack
    if args.save:
        return save(args, docs, attacks, names, clean, clean_X, neg_w_all, attack_units, templates, emb)
    rng = random.Random(args.seed)

    # planted documents: every attack once in each held-out group's documents
    planted: dict[int, tuple[DocSet, np.ndarray, list[str]]] = {}
    for g, group in enumerate(groups):
        hosts = np.flatnonzero(np.isin(names, group))
        chosen = [int(rng.choice(list(hosts))) for _ in attacks]
        texts = [plant(docs[h]["text"], a["text"], POSITIONS[j % 3]) for j, (h, a) in
                 enumerate(zip(chosen, attacks, strict=True))]
        ps = DocSet(texts, rules)
        X = context_column(emb(ps.sentences), ps.owner, len(texts))
        planted[g] = (ps, X, [str(names[h]) for h in chosen])
    embed_rate = emb.embedded / emb.seconds if emb.seconds else float("nan")

    # results[method][fpr] -> list of (group, fold, caught array over held-out planted docs, host corpora)
    caught: dict[tuple[str, float], list[tuple[int, int, np.ndarray, list[str]]]] = {}
    cascade_docs, cascade_sents = [], []
    exact: dict[float, list[tuple[float, float]]] = {fpr: [] for fpr in FPRS}
    clean_fpr: dict[tuple[str, float], dict[str, list[float]]] = {}
    rules_fpr = {g: float(clean.rule_hit[np.isin(names, group)].mean()) for g, group in enumerate(groups)}
    for g, group in enumerate(groups):
        test_c, train_c = group, groups[1 - g]
        tr = np.flatnonzero(np.isin(names, train_c))
        te = np.flatnonzero(np.isin(names, test_c))
        tr_sent = np.isin(clean.owner, tr)
        host_emb = [clean_E[clean.owner == i] for i in tr if (clean.owner == i).any()]
        ps, pX, planted_hosts = planted[g]
        for f in range(FOLDS):
            t0 = time.perf_counter()
            tr_att = [a for a, k in zip(attacks, folds, strict=True) if k != f]
            held = np.flatnonzero(folds == f)
            ng = fit(docs, clean, tr, tr_att, args.seed)
            ng_clean = ng.score_features(clean.features)
            ng_planted = ng.score_features(ps.features)
            pos = [u for u, k in zip(attack_units, folds, strict=True) if k != f] + templates
            pos_w = [1.0] * int((folds != f).sum()) + [TEMPLATE_WEIGHT] * len(templates)
            sent: dict[str, tuple[np.ndarray, np.ndarray]] = {"ngram": (ng_clean, ng_planted)}
            for name, ctx, mlp in (("emb", True, False), ("emb-noctx", False, False), ("mlp", True, True)):
                lr = train_embedding_lr(emb, pos, pos_w, host_emb, clean_X[tr_sent], neg_w_all[tr_sent],
                                        args.seed + f, ctx, mlp)
                cols = slice(None) if ctx else slice(0, -1)
                if name == "emb":  # as the detector scores it
                    shipped = EmbeddingClassifier(lr.coef_[0], float(lr.intercept_[0]), {})
                    sent[name] = (shipped.probabilities(clean_X), shipped.probabilities(pX))
                else:
                    sent[name] = (lr.predict_proba(clean_X[:, cols])[:, 1], lr.predict_proba(pX[:, cols])[:, 1])
            sent["mean"] = ((sent["ngram"][0] + sent["emb"][0]) / 2, (sent["ngram"][1] + sent["emb"][1]) / 2)
            sent["mean-mlp"] = ((sent["ngram"][0] + sent["mlp"][0]) / 2, (sent["ngram"][1] + sent["mlp"][1]) / 2)
            ref_ng, ref_emb = ng_clean[tr_sent], sent["emb"][0][tr_sent]
            clean_rank, planted_rank = (np.maximum(rank_of(n, ref_ng), rank_of(e, ref_emb)) + 1e-3 * (n + e) / 2
                                        for n, e in zip(sent["ngram"], sent["emb"], strict=True))
            sent["rank-max"] = (clean_rank, planted_rank)
            # cascade: documents whose top n-gram sentence passes the low line are embedded
            low = line_at(doc_max(ng_clean, clean.owner, len(docs))[tr], args.cascade_share)
            doc_scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for name, (cs, pscore) in sent.items():
                doc_scores[name] = (doc_max(cs, clean.owner, len(docs)), doc_max(pscore, ps.owner, len(ps.rule_hit)))
            cand_c = doc_scores["ngram"][0] >= low
            cand_p = doc_scores["ngram"][1] >= low
            doc_scores["cascade"] = (np.where(cand_c, doc_scores["mean"][0], doc_scores["ngram"][0] / 2),
                                     np.where(cand_p, doc_scores["mean"][1], doc_scores["ngram"][1] / 2))
            cascade_docs.append(float(cand_c[te].mean()))
            cascade_sents.append(float(np.isin(clean.owner, te[cand_c[te]]).sum() / len(te)))
            for name in METHODS:
                cs, pscore = doc_scores[name]
                # the line is the learned part's own budget: documents a rule flags are counted apart
                clean_s = np.where(clean.rule_hit, -np.inf, cs)[te]
                for fpr in FPRS:
                    line = line_at(clean_s, fpr)
                    got = (ps.rule_hit | (pscore >= line))[held]
                    caught.setdefault((name, fpr), []).append((g, f, got, [planted_hosts[i] for i in held]))
                    if name == "mean":
                        # exact cascade: emb <= 1, so a document whose best n-gram sentence is under 2 * line - 1
                        # cannot reach the line; only the others need embedding
                        need = doc_scores["ngram"][0][te] >= 2 * line - 1
                        exact[fpr].append((float(need.mean()), float(np.isin(clean.owner, te[need]).sum() / len(te))))
            if args.shipped_lines:
                lines_oof = out_of_corpus_lines(docs, clean, clean_X, neg_w_all, names, train_c, tr_att,
                                                pos, pos_w, emb, args.seed + f)
                for name, line_of in lines_oof.items():
                    cs, pscore = doc_scores[name]
                    for fpr, line in line_of.items():
                        flagged = clean.rule_hit | (cs >= line)
                        got = (ps.rule_hit | (pscore >= line))[held]
                        key = (f"{name}, line out of corpus", fpr)
                        caught.setdefault(key, []).append((g, f, got, [planted_hosts[i] for i in held]))
                        for c in test_c:
                            clean_fpr.setdefault(key, {}).setdefault(c, []).append(float(flagged[names == c].mean()))
            print(f"group {g} fold {f}: {time.perf_counter() - t0:.0f} s; " + ", ".join(
                f"{n} {np.mean(caught[(n, 0.01)][-1][2]):.3f}" for n in METHODS) + " at 1% FPR", file=sys.stderr)

    lines = report(caught, groups, docs, clean, cascade_docs, cascade_sents, embed_rate, args,
                   time.perf_counter() - t_start)
    if clean_fpr:
        lines += ["", "#### At lines chosen out of corpus (as shipped): held-out clean FPR per corpus "
                  "(mean over the five folds; worst in bold) and recall", "",
                  "| method | budget | recall pooled | worst fold | worst host | " + " | ".join(corpora) + " |",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(corpora)]
        for (name, fpr), per in clean_fpr.items():
            runs = caught[(name, fpr)]
            folds_r = [float(np.mean(np.concatenate([r[2] for r in runs if r[1] == f]))) for f in range(FOLDS)]
            hosts_r: dict[str, list[bool]] = {}
            for r in runs:
                for c_, h in zip(r[2], r[3], strict=True):
                    hosts_r.setdefault(h, []).append(c_)
            fprs = [float(np.mean(per[c])) for c in corpora]
            cells = [f"**{100 * v:.2f}%**" if v == max(fprs) else f"{100 * v:.2f}%" for v in fprs]
            lines.append(f"| {name} | {100 * fpr:g}% | {np.mean(np.concatenate([r[2] for r in runs])):.3f} | "
                         f"{min(folds_r):.3f} | {min(float(np.mean(v)) for v in hosts_r.values()):.3f} | "
                         + " | ".join(cells) + " |")
    for fpr in FPRS:
        docs_share, sents = np.mean(exact[fpr], axis=0)
        lines.append(f"Exact cascade for `mean` at {100 * fpr:g}% FPR: {100 * docs_share:.1f}% of held-out clean "
                     "documents have a sentence with n-gram score >= 2 x line - 1 and need embedding "
                     f"({1000 * sents:,.0f} sentences per 1,000 documents); the rest cannot reach the line.")
    lines.append("Clean documents flagged by the rules (counted apart from every method's budget): " + ", ".join(
        f"group {'AB'[g]} {100 * v:.2f}%" for g, v in rules_fpr.items()) + ".")
    print("\n".join(lines))
    return 0


def out_of_corpus_lines(docs: list[dict[str, Any]], clean: DocSet, clean_X: np.ndarray, neg_w: np.ndarray,
                        names: np.ndarray, corpora: list[str], attacks: list[dict[str, Any]], pos: list[list[str]],
                        pos_w: list[float], emb: Embeddings, seed: int) -> dict[str, dict[float, float]]:
    """Lines of ``ngram`` and ``mean`` chosen as the shipped ones are (injection_corpora.fit_with_lines): ``corpora``
    in two halves, each scored by models trained on the other, rule hits left out, pooled."""
    halves = [corpora[0::2], corpora[1::2]]
    pooled: dict[str, list[np.ndarray]] = {"ngram": [], "mean": []}
    for a in range(2):
        trained = np.flatnonzero(np.isin(names, halves[a]))
        scored = np.isin(names, halves[1 - a])
        in_train = np.isin(clean.owner, trained)
        host_emb = [clean_X[clean.owner == i, :-1] for i in trained if (clean.owner == i).any()]
        lr = train_embedding_lr(emb, pos, pos_w, host_emb, clean_X[in_train], neg_w[in_train], seed, True)
        p = fit(docs, clean, trained, attacks, seed).score_features(clean.features)
        q = EmbeddingClassifier(lr.coef_[0], float(lr.intercept_[0]), {}).probabilities(clean_X)
        for name, sent in (("ngram", p), ("mean", (p + q) / 2)):
            pooled[name].append(np.where(clean.rule_hit, 0.0, doc_max(sent, clean.owner, len(docs)))[scored])
    return {name: {fpr: line_at(np.concatenate(v), fpr) for fpr in FPRS} for name, v in pooled.items()}


def save(args: argparse.Namespace, docs: list[dict[str, Any]], attacks: list[dict[str, Any]], names: np.ndarray,
         clean: DocSet, clean_X: np.ndarray, neg_w: np.ndarray,
         attack_units: list[list[str]], templates: list[list[str]], emb: Embeddings) -> int:
    """Train the shipped classifier on every corpus and attack; its lines (of the mean with the n-gram probability)
    are chosen out of corpus: each corpus group's clean documents scored by an n-gram scorer and a classifier
    trained on the other group, pooled (rule hits left out, as injection_corpora.py does)."""
    pos = attack_units + templates
    pos_w = [1.0] * len(attack_units) + [TEMPLATE_WEIGHT] * len(templates)
    lines = out_of_corpus_lines(docs, clean, clean_X, neg_w, names, list(ALL_CORPORA), attacks, pos, pos_w, emb,
                                args.seed)["mean"]
    alert, report = lines[ALERT_FPR], lines[REPORT_FPR]
    host_emb = [clean_X[clean.owner == i, :-1] for i in range(len(docs)) if (clean.owner == i).any()]
    lr = train_embedding_lr(emb, pos, pos_w, host_emb, clean_X, neg_w, args.seed, True)
    final = EmbeddingClassifier(lr.coef_[0], float(lr.intercept_[0]), {})
    final.meta = {
        "model": "all-MiniLM-L6-v2", "features": "unit sentence embedding (384) + cosine to the rest of its document",
        "score": "mean of this probability and the n-gram scorer's (VA518)",
        "threshold": round(report, 6), "alert_threshold": round(alert, 6), "fpr_budget": REPORT_FPR,
        "alert_fpr_budget": ALERT_FPR, "ngram_weights_sha256": file_digest(WEIGHTS),
        "trained_on": "BIPIA text+code attacks, CyberSecEval prompt injection (MIT); generated generic tasks "
                      "(benchmarks/injection_templates.py); sentences of the clean documents of the "
                      f"{len(ALL_CORPORA)} dev corpora, at most {args.max_docs} each "
                      "(benchmarks/injection_embedding.py --save)",
        "lines_chosen_on": f"{len(docs)} clean documents, each corpus group scored by models trained on the other",
    }
    final.save(EMBEDDING_WEIGHTS)
    print(f"Saved {EMBEDDING_WEIGHTS.name}: report line {report:.4f}, alert line {alert:.4f} (mean of the n-gram and "
          f"embedding probabilities; lines chosen out of corpus on {len(docs)} clean documents).")
    return 0


def _cell(values: list[float], bold_min: bool) -> list[str]:
    worst = min(values) if bold_min else None
    return [f"**{v:.3f}**" if v == worst else f"{v:.3f}" for v in values]


def report(caught: dict[tuple[str, float], list[tuple[int, int, np.ndarray, list[str]]]], groups: list[list[str]],
           docs: list[dict[str, Any]], clean: DocSet, cascade_docs: list[float], cascade_sents: list[float],
           embed_rate: float, args: argparse.Namespace, seconds: float) -> list[str]:
    sents_per_doc = len(clean.sentences) / len(docs)
    lines = [f"{len(docs)} clean documents (at most {args.max_docs} per corpus, seed {args.seed}), "
             f"{len(clean.sentences)} sentences; corpus groups A = {', '.join(groups[0])}; "
             f"B = {', '.join(groups[1])}; {FOLDS} family folds; total {seconds / 60:.1f} min.", ""]
    for fpr in FPRS:
        lines += [f"#### Recall at {100 * fpr:g}% FPR of the held-out group's clean documents "
                  "(rows: method; worst cell of each row in bold)", ""]
        cols = [f"fold {f}" for f in range(FOLDS)] + ["group A", "group B"]
        host_names = sorted({h for v in caught[("ngram", fpr)] for h in v[3]})
        lines += ["| method | pooled | " + " | ".join(cols + host_names) + " |",
                  "|---|---:|" + "---:|" * (len(cols) + len(host_names))]
        for name in METHODS:
            runs = caught[(name, fpr)]
            pooled = float(np.mean(np.concatenate([r[2] for r in runs])))
            per_fold = [float(np.mean(np.concatenate([r[2] for r in runs if r[1] == f]))) for f in range(FOLDS)]
            per_group = [float(np.mean(np.concatenate([r[2] for r in runs if r[0] == g]))) for g in range(2)]
            per_host = []
            for h in host_names:
                got = [c for r in runs for c, hh in zip(r[2], r[3], strict=True) if hh == h]
                per_host.append(float(np.mean(got)))
            lines.append(f"| {name} | {pooled:.3f} | " + " | ".join(
                _cell(per_fold + per_group, True) + _cell(per_host, True)) + " |")
        lines.append("")
    share = float(np.mean(cascade_docs))
    per_k = 1000 * float(np.mean(cascade_sents))
    lines += [f"Cascade: {100 * share:.1f}% of held-out clean documents pass the low n-gram line (chosen at "
              f"{100 * args.cascade_share:g}% of the training documents); {per_k:,.0f} sentences to embed per 1,000 "
              f"documents (all sentences of the candidate documents, for the context feature), against "
              f"{1000 * sents_per_doc:,.0f} for embedding every sentence. Measured embedding rate this run: "
              f"{embed_rate:.0f} sentences/s (nan when every sentence was cached)."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
