"""Detection quality of the embedding-space detectors (outlier, near-duplicate, poison-cluster, hub) on real dev
text embedded by the real model, with published PoisonedRAG / PIArena poisons planted at ~1%. Prints markdown.

    .venv/bin/python benchmarks/embedding_quality.py [--data ../shared/data/dev] [--trials 5] [--approximate]
        [--cache ~/.cache/vecaudit-bench] [--only poison,outlier,duplicate,hub] [--other-clean]

Stores are built in memory and run through pass 2 exactly as the engine does (PointTable memmap, ScanContext,
shared graph); ``--approximate`` forces the pynndescent graph to show quality on the approximate path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import auditor.graph  # noqa: E402
from auditor.batching import make_batch  # noqa: E402
from auditor.context import ScanContext, ScanSettings  # noqa: E402
from auditor.detector import Detector  # noqa: E402
from auditor.types import CollectionInfo, Distance, FieldMap, Severity  # noqa: E402
from detectors.duplicates import NearDuplicateDetector  # noqa: E402
from detectors.hubs import HubDetector  # noqa: E402
from detectors.outliers import OutlierDetector  # noqa: E402
from detectors.poisoning import PoisonClusterDetector  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dev"
FPR_BUDGET = 0.005


def load(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class EmbeddingCache:
    """all-MiniLM-L6-v2 embeddings keyed by the text's SHA-1, persisted as one .npz (reruns embed nothing new)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "minilm.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            data = np.load(self.path)
            self.vectors = dict(zip(data["keys"].tolist(), data["vecs"], strict=True))
        self._embedder: Any = None

    def _save(self) -> None:
        """Merge with what other runs saved meanwhile and replace the file atomically, under a lock (two benchmarks
        writing at once each dropped the other's new vectors)."""
        import fcntl

        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                with np.load(self.path) as data:
                    for key, vec in zip(data["keys"].tolist(), data["vecs"], strict=True):
                        self.vectors.setdefault(key, vec)
            keys = list(self.vectors)
            partial = self.path.with_name(f".{self.path.stem}.{os.getpid()}.npz")
            np.savez(partial, keys=np.array(keys), vecs=np.stack([self.vectors[k] for k in keys]))
            os.replace(partial, self.path)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if self.key(t) not in self.vectors))
        if missing:
            if self._embedder is None:
                from auditor.embedder import Embedder

                self._embedder = Embedder()
            print(f"embedding {len(missing)} texts ...", file=sys.stderr, flush=True)
            for t, v in zip(missing, self._embedder.encode(missing), strict=True):
                self.vectors[self.key(t)] = v
            self._save()
        return np.stack([self.vectors[self.key(t)] for t in texts]).astype(np.float32)


def run_pass_two(
    texts: list[str], vectors: np.ndarray, detectors: Sequence[Detector], *, tenants: list[str] | None = None,
    doc_ids: list[str] | None = None, extra: dict[str, Any] | None = None, distance: Distance = Distance.COSINE,
) -> tuple[dict[str, list[Any]], float]:
    """Findings per detector name (after pass 1 into a memmapped PointTable) and the pass-2 wall time."""
    fm = FieldMap(text="text", tenant="tenant" if tenants else None, doc_id="doc" if doc_ids else None)
    info = CollectionInfo(name="bench", dim=vectors.shape[1], distance=distance, count=len(texts))
    ctx = ScanContext(info=info, field_map=fm, collection_key="bench", settings=ScanSettings(extra=extra or {}))
    try:
        for det in detectors:
            det.begin(ctx)
            ctx.request_neighbours(det.neighbours_needed())
        for start in range(0, len(texts), 1024):
            stop = min(len(texts), start + 1024)
            payloads = [{"text": texts[i], **({"tenant": tenants[i]} if tenants else {}),
                         **({"doc": doc_ids[i]} if doc_ids else {})} for i in range(start, stop)]
            ctx.table.append(make_batch(list(range(start, stop)), vectors[start:stop], payloads, fm))
        ctx.table.seal()
        t0 = time.perf_counter()
        out = {det.name: list(det.finish(ctx)) for det in detectors}
        return out, time.perf_counter() - t0
    finally:
        ctx.close()


def rank_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Average precision and recall at a 0.5% false-positive rate (threshold = clean scores' tail)."""
    from sklearn.metrics import average_precision_score

    clean = np.sort(scores[labels == 0])[::-1]
    allowed = int(np.floor(FPR_BUDGET * len(clean)))
    cut = clean[allowed] if allowed < len(clean) else -np.inf
    return {
        "ap": float(average_precision_score(labels, scores)),
        "recall_at_fpr": float(np.mean(scores[labels == 1] > cut)),
    }


def at_threshold(flagged: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(flagged & (labels == 1)))
    fp = int(np.sum(flagged & (labels == 0)))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(int(labels.sum()), 1),
            "fpr": fp / max(int((labels == 0).sum()), 1)}


def clean_corpus(data: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    sources = (("wikipedia_vital_en_even.jsonl", "wiki"), ("piarena_hotpotqa_retrieved_passages.jsonl", "hotpotqa"),
               ("pubmedqa_abstracts.jsonl", "pubmed"))
    for name, corpus in sources:
        for r in load(data / "corpora" / name):
            if isinstance(r.get("text"), str) and r["text"].strip():
                rows.append({"id": r["id"], "text": r["text"], "corpus": corpus})
    return rows


def poison_sets(data: Path) -> dict[str, list[dict[str, Any]]]:
    """Each attack in both forms: with the question bait (as the attacks store it) and passage alone."""
    out: dict[str, list[dict[str, Any]]] = {}
    prag = load(data / "poison" / "poisonedrag_hotpotqa.jsonl")
    out["PoisonedRAG + question"] = [{**r, "text": r["question"] + "." + r["text"]} for r in prag]
    out["PoisonedRAG passage only"] = prag
    pia = load(data / "poison" / "piarena_hotpotqa_knowledge_corruption.jsonl")
    out["PIArena + question"] = pia
    out["PIArena passage only"] = [
        {**r, "text": r["text"][len(r["question"]):].lstrip("?. ")} if r["text"].startswith(r["question"]) else r
        for r in pia
    ]
    return out


def poison_score(findings: list[Any], n: int) -> np.ndarray:
    """Benchmark ranking: VA321 above every VA322 (2 + bait members), VA322 its claim score, else 0."""
    scores = np.zeros(n)
    for f in findings:
        value = 2.0 + f.score if f.rule_id == "VA321" else f.score
        scores[int(f.point_id)] = max(scores[int(f.point_id)], value)
    return scores


def bench_poison(data: Path, embed: EmbeddingCache, trials: int, seed: int, other_clean: bool = False) -> list[str]:
    clean = clean_corpus(data)
    clean_vecs = embed([r["text"] for r in clean])
    lines = ["## poison-cluster", "",
             f"Clean store: {len(clean)} passages (wikipedia {sum(r['corpus'] == 'wiki' for r in clean)}, hotpotqa "
             f"retrieved for the target questions {sum(r['corpus'] == 'hotpotqa' for r in clean)}, pubmed "
             f"{sum(r['corpus'] == 'pubmed' for r in clean)}); per trial 14 target questions x 5 poisons (~1%), "
             f"{trials} trials with disjoint questions.", "",
             "| attack form | AP | recall @0.5% FPR | precision @default | recall @default | clean FPR @default "
             "| poisons flagged VA321 / VA322 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    default = PoisonClusterDetector()
    thr = float(default.params["claim_score"])
    others: dict[tuple[str, str], dict[str, list[float]]] = {}
    for form, rows in poison_sets(data).items():
        by_q: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_q.setdefault(r["target_id"], []).append(r)
        targets = sorted(by_q)
        random.Random(seed).shuffle(targets)
        agg: dict[str, list[float]] = {}
        for t in range(trials):
            chosen = targets[t * 14 : (t + 1) * 14]
            if len(chosen) < 14:
                break
            poisons = [p for q in chosen for p in by_q[q]]
            texts = [r["text"] for r in clean] + [p["text"] for p in poisons]
            vecs = np.concatenate([clean_vecs, embed([p["text"] for p in poisons])])
            labels = np.r_[np.zeros(len(clean)), np.ones(len(poisons))].astype(int)
            found, _ = run_pass_two(texts, vecs, [PoisonClusterDetector(claim_score=0.0), *_others()])
            scores = poison_score(found["poison-cluster"], len(texts))
            if form.startswith("PoisonedRAG"):
                for name, (s_other, flagged_other) in _other_scores(found, len(texts)).items():
                    for key, value in {**rank_metrics(s_other, labels), **at_threshold(flagged_other, labels)}.items():
                        others.setdefault((form, name), {}).setdefault(key, []).append(value)
            flagged = (scores >= thr) | (scores >= 2.0)
            poison_rows = labels == 1
            by_rule = {"va321": float(np.mean(scores[poison_rows] >= 2.0)),
                       "va322": float(np.mean((scores[poison_rows] >= thr) & (scores[poison_rows] < 2.0)))}
            for key, value in {**rank_metrics(scores, labels), **at_threshold(flagged, labels), **by_rule}.items():
                agg.setdefault(key, []).append(value)
        m = {k: float(np.mean(v)) for k, v in agg.items()}
        lines.append(f"| {form} | {m['ap']:.3f} | {m['recall_at_fpr']:.3f} | {m['precision']:.3f} | "
                     f"{m['recall']:.3f} | {m['fpr']:.4f} | {m['va321']:.3f} / {m['va322']:.3f} |")
    lines += ["", "The other embedding detectors on the same PoisonedRAG plants (same trials, same pass; a point a "
              "detector does not report ranks last; outlier scored for every point):", "",
              "| attack form | detector | AP | recall @0.5% FPR | precision @default | recall @default | "
              "clean FPR @default |", "|---|---|---:|---:|---:|---:|---:|"]
    for (form, name), agg in others.items():
        m = {k: float(np.mean(v)) for k, v in agg.items()}
        lines.append(f"| {form} | {name} | {m['ap']:.3f} | {m['recall_at_fpr']:.3f} | {m['precision']:.3f} | "
                     f"{m['recall']:.3f} | {m['fpr']:.4f} |")
    if other_clean:
        other = [r["text"] for name in ("wikipedia_vital_es.jsonl", "bipia_email_contexts.jsonl",
                                        "bipia_code_contexts.jsonl")
                 for r in load(data / "corpora" / name) if isinstance(r.get("text"), str) and r["text"].strip()]
        found, _ = run_pass_two(other, embed(other), [PoisonClusterDetector()])
        flagged_other = {f.point_id for f in found["poison-cluster"]}
        lines += ["", f"Clean-only store of other corpora (Spanish wikipedia, BIPIA e-mails and code, {len(other)} "
                  f"points): {len(flagged_other)} flagged = {len(flagged_other) / len(other):.2%}"]
    defaults: list[Detector] = [PoisonClusterDetector(), OutlierDetector(), NearDuplicateDetector(), HubDetector()]
    found, seconds = run_pass_two([r["text"] for r in clean], clean_vecs, defaults)
    flagged_clean = {f.point_id for f in found["poison-cluster"]}
    every = [f for fs in found.values() for f in fs]
    above_info = {f.point_id for f in every if f.effective_severity is not Severity.INFO}
    lines += ["", f"Clean-only store ({len(clean)} points): {len(flagged_clean)} flagged = "
              f"{len(flagged_clean) / len(clean):.2%} "
              f"(pass 2 {seconds:.1f} s); rules: "
              + ", ".join(f"{r} {sum(f.rule_id == r for f in found['poison-cluster'])}" for r in ("VA321", "VA322")),
              "", f"All four embedding detectors at their defaults on the clean-only store: "
              f"{len({f.point_id for f in every})} points with a finding, {len(above_info)} "
              f"({len(above_info) / len(clean):.2%}) above INFO; by rule: "
              + ", ".join(f"{r} {c}" for r, c in sorted(_rule_counts(every).items())), ""]
    return lines


def _others() -> list[Detector]:
    return [OutlierDetector(z=-1e9), NearDuplicateDetector(), HubDetector()]


def _other_scores(found: dict[str, list[Any]], n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score (unreported = -1e30, below any real score) and default-threshold flag of every point, for outlier,
    near-duplicate and hub."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    outlier_z = float(OutlierDetector.defaults["z"])
    for name in ("outlier", "near-duplicate", "hub"):
        scores = np.full(n, -1e30)  # finite: sklearn's average precision refuses -inf
        flagged = np.zeros(n, dtype=bool)
        for f in found[name]:
            row = int(f.point_id)
            scores[row] = max(scores[row], f.score)
            flagged[row] |= f.score >= outlier_z if name == "outlier" else True
        out[name] = (scores, flagged)
    return out


def _rule_counts(findings: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.rule_id] = counts.get(f.rule_id, 0) + 1
    return counts


def _outlier_scores(texts: list[str], vecs: np.ndarray, method: str) -> np.ndarray:
    """VA301 score of every point (robust z of its kNN distance; -inf where not reported)."""
    found, _ = run_pass_two(texts, vecs, [OutlierDetector(method=method, z=-1e9)])
    scores = np.full(len(texts), -np.inf)
    for f in found["outlier"]:
        if f.rule_id == "VA301":
            scores[int(f.point_id)] = f.score
    return scores


def bench_outlier(data: Path, embed: EmbeddingCache, seed: int, trials: int) -> list[str]:
    """Foreign documents planted two ways: 70 at once (they find each other: a small topic of their own), and one
    of each kind per trial (a lone misplaced document, the case a kNN-distance score is built for)."""
    clean = clean_corpus(data)
    rng = random.Random(seed)
    es = rng.sample(load(data / "corpora" / "wikipedia_vital_es.jsonl"), 30 + trials)
    code = rng.sample(load(data / "corpora" / "bipia_code_contexts.jsonl"), 20 + trials)
    mail = rng.sample(load(data / "corpora" / "bipia_email_contexts.jsonl"), 20 + trials)
    clean_texts = [r["text"] for r in clean]
    grouped = [r["text"] for r in es[:30] + code[:20] + mail[:20]]
    vecs = embed(clean_texts + grouped)
    lone = [[es[30 + t]["text"], code[20 + t]["text"], mail[20 + t]["text"]] for t in range(trials)]
    lone_vecs = embed([t for trio in lone for t in trio]).reshape(trials, 3, -1)
    threshold = float(OutlierDetector.defaults["z"])
    lines = ["## outlier", "",
             f"Foreign documents planted into the {len(clean)}-passage clean store (wiki, pubmed, hotpotqa): "
             f"*grouped*, 70 at once (30 Spanish wikipedia, 20 code answers, 20 e-mails); *lone*, one Spanish "
             f"passage, one code answer and one e-mail per trial, {trials} trials pooled (clean points counted once "
             f"per trial).", "",
             "| plants | method | AP | recall @0.5% FPR | precision @default | recall @default | clean FPR @default |",
             "|---|---|---:|---:|---:|---:|---:|"]
    by_kind: list[str] = []
    for method in ("knn", "lof"):
        labels = np.r_[np.zeros(len(clean)), np.ones(len(grouped))].astype(int)
        rows = [("grouped", _outlier_scores(clean_texts + grouped, vecs, method), labels)]
        pooled_s, pooled_l = [], []
        for t in range(trials):
            trial_vecs = np.concatenate([vecs[: len(clean)], lone_vecs[t]])
            pooled_s.append(_outlier_scores(clean_texts + lone[t], trial_vecs, method))
            pooled_l.append(np.r_[np.zeros(len(clean)), np.ones(3)].astype(int))
        rows.append(("lone", np.concatenate(pooled_s), np.concatenate(pooled_l)))
        kinds = np.array([s[-3:] for s in pooled_s])  # (trials, 3): Spanish, code, e-mail
        by_kind.append(f"{method}: " + ", ".join(f"{kind} {np.mean(kinds[:, j] >= threshold):.2f}"
                                                 for j, kind in enumerate(("Spanish", "code", "e-mail"))))
        for name, scores, lab in rows:
            m = {**rank_metrics(scores, lab), **at_threshold(scores >= threshold, lab)}
            lines.append(f"| {name} | {method} | {m['ap']:.3f} | {m['recall_at_fpr']:.3f} | {m['precision']:.3f} | "
                         f"{m['recall']:.3f} | {m['fpr']:.4f} |")
    return [*lines, "", "Lone plants flagged at the default threshold, by kind: " + "; ".join(by_kind) + ".", ""]


def mojibake(text: str) -> str:
    return text.encode("utf-8").decode("latin-1", errors="replace")


def bench_duplicates(data: Path, embed: EmbeddingCache, seed: int) -> list[str]:
    clean = clean_corpus(data)
    rng = random.Random(seed)
    # three disjoint sets: re-ingested sources, forged texts, and the documents whose vectors are stolen (stealing
    # a re-ingested source's vector would put a different text in that copy's group and make it VA312 by right)
    sources = rng.sample(range(len(clean)), 210)
    variants = [lambda t: "  ".join(t.split()), lambda t: t.upper(), lambda t: mojibake(t.replace("'", "’")),
                lambda t: t + " "]
    copies = [variants[i % len(variants)](clean[s]["text"]) for i, s in enumerate(sources[:70])]
    forged_text = [clean[s]["text"] for s in sources[70:140]]
    texts = [r["text"] for r in clean] + copies + forged_text
    vecs = embed([r["text"] for r in clean] + copies)
    # forged: a near copy of another document's vector (tiny perturbation) stored with an unrelated text
    nprng = np.random.default_rng(seed)
    stolen = vecs[sources[140:210]] + nprng.normal(0, 0.004, size=(70, vecs.shape[1])).astype(np.float32)
    vecs = np.concatenate([vecs, stolen / np.linalg.norm(stolen, axis=1, keepdims=True)])
    n_clean = len(clean)
    found, _ = run_pass_two(texts, vecs, [NearDuplicateDetector()])
    by_rule: dict[str, set[int]] = {"VA311": set(), "VA312": set()}
    for f in found["near-duplicate"]:
        by_rule[f.rule_id].add(int(f.point_id))
    copy_rows = set(range(n_clean, n_clean + 70))
    forged_rows = set(range(n_clean + 70, n_clean + 140))
    clean_texts = [r["text"] for r in clean]
    clean_only, _ = run_pass_two(clean_texts, embed(clean_texts), [NearDuplicateDetector()])
    natural = {"VA311": 0, "VA312": 0}
    for f in clean_only["near-duplicate"]:
        natural[f.rule_id] += 1
    return ["## near-duplicate", "",
            "70 re-ingested copies (double spaces, upper case, mojibake, trailing space) and 70 forged points (another "
            "document's vector + N(0, 0.004) noise, unrelated text) planted into the clean store.", "",
            "| planted | reported as VA311 (benign) | reported as VA312 (distinct text) |", "|---|---:|---:|",
            f"| re-ingested copies | {len(copy_rows & by_rule['VA311']) / 70:.3f} | "
            f"{len(copy_rows & by_rule['VA312']) / 70:.3f} |",
            f"| forged vectors | {len(forged_rows & by_rule['VA311']) / 70:.3f} | "
            f"{len(forged_rows & by_rule['VA312']) / 70:.3f} |", "",
            f"Clean-only store: {natural['VA311']} VA311 (the corpora's own duplicate passages) and "
            f"{natural['VA312']} VA312 findings among {n_clean} points ({natural['VA312'] / n_clean:.2%} at MEDIUM).",
            ""]


def bench_hubs(data: Path, embed: EmbeddingCache, seed: int) -> list[str]:
    clean = clean_corpus(data)
    texts = [r["text"] for r in clean]
    vecs = embed(texts)
    queries = sorted({r["question"] for r in load(data / "corpora" / "piarena_hotpotqa_retrieved_passages.jsonl")})
    qfile = Path(os.environ.get("TMPDIR", "/tmp")) / f"vecaudit-bench-queries-{os.getpid()}.txt"
    qfile.write_text("\n".join(queries), encoding="utf-8")
    qvecs = embed(queries)
    rng = np.random.default_rng(seed)
    # Emulated corpus-poisoning passages (Zhong et al. 2023): an embedding at the centroid of a query set, with the
    # token-soup text such optimisation produces (real released adversarial passages are not in the dev set).
    vocab = sorted({w for t in texts[:2000] for w in t.split() if w.isalpha()})
    hubs_v, hubs_t = [], []
    for _ in range(10):
        pick = rng.choice(len(qvecs), size=30, replace=False)
        centre = qvecs[pick].mean(axis=0)
        hubs_v.append(centre / np.linalg.norm(centre))
        hubs_t.append(" ".join(rng.choice(vocab, size=30)) + " ##ing )( 2k9 ##ed")
    all_t = texts + hubs_t
    all_v = np.concatenate([vecs, np.stack(hubs_v).astype(np.float32)])
    try:
        found, _ = run_pass_two(all_t, all_v, [HubDetector()], extra={"queries_file": str(qfile)})
        clean_found, _ = run_pass_two(texts, vecs, [HubDetector()], extra={"queries_file": str(qfile)})
    finally:
        qfile.unlink(missing_ok=True)
    planted = set(range(len(texts), len(all_t)))
    lines = ["## hub", "", f"10 emulated corpus-poisoning hubs (embedding = centroid of 30 of the {len(queries)} "
             "hotpotqa questions, token-soup text) planted into the clean store; the same questions as `--queries`.",
             "", "| rule | planted hubs found | clean points flagged (clean-only store) |", "|---|---:|---:|"]
    for rule in ("VA331", "VA332", "VA333"):
        got = {int(f.point_id) for f in found["hub"] if f.rule_id == rule}
        fp = sum(1 for f in clean_found["hub"] if f.rule_id == rule)
        lines.append(f"| {rule} | {len(got & planted)}/10 | {fp} ({fp / len(texts):.2%}) |")
    any_rule = {int(f.point_id) for f in found["hub"]}
    return [*lines, "", f"Any hub rule: {len(any_rule & planted)}/10 planted, {len(any_rule - planted)} clean.", ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vecaudit-bench")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--approximate", action="store_true", help="force the pynndescent graph at every size")
    ap.add_argument("--only", default="poison,outlier,duplicate,hub")
    ap.add_argument("--other-clean", action="store_true",
                    help="also scan a clean-only store of other corpora with poison-cluster (embeds ~6,400 more texts)")
    args = ap.parse_args(argv)
    if args.approximate:
        auditor.graph.EXACT_LIMIT = 0
    embed = EmbeddingCache(args.cache)
    only = set(args.only.split(","))
    lines = [f"# Embedding-space detectors — quality ({time.strftime('%Y-%m-%d')}, "
             f"{'approximate' if args.approximate else 'exact'} graph)", ""]
    if "poison" in only:
        lines += bench_poison(args.data, embed, args.trials, args.seed, args.other_clean)
    if "outlier" in only:
        lines += bench_outlier(args.data, embed, args.seed, max(args.trials, 10))
    if "duplicate" in only:
        lines += bench_duplicates(args.data, embed, args.seed)
    if "hub" in only:
        lines += bench_hubs(args.data, embed, args.seed)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
