"""The naturalness detector (VA351) scored directly on every dev corpus with the generated attacks planted, leave-one-
corpus-out and leave-one-family-out (issue 16 item 2); no store, no ledger: fast enough to iterate.

    .venv/bin/python benchmarks/naturalness_eval.py [--data ../shared/data/dev] [--corpora wiki,pubmed,...]
        [--generated /tmp/vecaudit-attack-recall/generated] [--max-docs 2000] [--seed 0] [--max-share 0.0005]
        [--typo-plants /tmp/vecaudit-naturalness/typos] [--typo-count 40] [--typo-share 0.0001]
    .venv/bin/python benchmarks/naturalness_eval.py --corpora wiki,pubmed,reuters --fit-typo-weights

Each corpus is the seeded sample ``benchmarks/attack_recall.py`` hosts attacks in (``corpus_sample``, same seed and
size), with the attack texts that benchmark generated and cached (``--generated``; run it first) planted into it:
the 20 white-box passages (PoisonedRAG behind a HotFlip prefix) and the GASLITE and corpus-poisoning triggers (the
corpus's own where it is a host corpus; elsewhere a seeded sample of the three hosts', about 1% of the corpus per
family, at least 2: a 100-document corpus is not drowned by 40 plants), and typo-edited documents, each replacing
the document it edits (which leaves the clean set): on the three host corpora (wiki, pubmed, reuters) attack_recall's
own; on the eight others, made here by the same generator with the same settings (:func:`typo_plants`, 40 per corpus
generated against the bundled model and cached under ``--typo-plants``; ``--typo-count 0``: none), at most 5% of the
corpus planted (email and code: 5 of 100, recipes 21). The detector's models are fitted on the whole planted
collection, as a scan would.

Parameters and the data that choose them:

* ``soup_line`` and ``whole_line`` (MEDIUM lines, the rule's alert floor in strength units): for each corpus, the
  lowest lines that at most ``--max-share`` of the *other* corpora's clean documents (pooled) reach; ``typo_line``
  likewise at ``--typo-share`` (0.0001: at 0.0005 the corpus with the heaviest tail of real typos, Reuters, held
  out got 0.25% at MEDIUM+); no attack text chooses them. The shipped lines are those chosen on all corpora.
* ``scale_quantile`` and ``window`` of the soup window: for each (corpus, family), the grid point with the highest
  MEDIUM+ recall summed over the *other* families on the *other* host corpora (ties: the detector's default).
* The typo component's near-miss weights (:data:`detectors.typos.WEIGHTS`): fitted on the typo family and the clean
  near misses of wiki, pubmed and reuters (``--fit-typo-weights``); a held-out host corpus is measured with weights
  fitted on the other two hosts, every other corpus with the weights of all three.
* ``typo_word_line`` (-2) and ``typo_min_misses`` (2): chosen by the author on wiki, pubmed and reuters (typos and
  clean), leave-one-host-out; ``typo_min_coverage`` (0.6) after seeing the two GOV.UK clean pages (Welsh, lorem
  ipsum) the typo component flagged without it (so GOV.UK's clean figure is in-sample for that one parameter). The
  typo rules were written after reading those three hosts' typos: the other eight corpora's typo figures are the
  held-out ones.
* ``order``, ``beta``, ``cased``, ``name_cap``, ``min_words``: fixed by the author before or while comparing
  held-out tables of this script over all corpora and families (so in-sample choices: the results file says which).

Reported per corpus: the clean share flagged at LOW+ (MEDIUM findings plus the strongest LOW within the review
budget, 0.1% of the collection, as the alert budget keeps them) and MEDIUM+, and per family the recall at both;
then the typo component alone (what it would flag as a detector of its own). Prints markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from content_data import DEFAULT_DATA  # noqa: E402
from generalization import ALL_CORPORA, _bold_worst, corpus_sample, machine, parse_corpora, source_label  # noqa: E402

from auditor.budget import DEFAULT_REVIEW_BUDGET  # noqa: E402
from detectors.naturalness import DocumentScores, NaturalnessDetector, score_documents, strengths  # noqa: E402
from detectors.typos import FEATURES, WEIGHTS, document_words, rescore, reweigh, score_typos  # noqa: E402

HOSTS = ("wiki", "pubmed", "reuters")
FAMILIES = ("whitebox-poison", "gaslite", "corpus-poisoning", "typo")
SOUP_FAMILIES = ("whitebox-poison", "gaslite", "corpus-poisoning")
#: Plants per family in a corpus that hosts no generated attacks of its own (at most ~1% of it, as attack_recall).
PER_FAMILY_SHARE, PER_FAMILY_LEAST = 0.01, 2
#: Typo plants in a corpus that hosts no generated attacks: at most this share of it.
TYPO_SHARE = 0.05
GRID = [(q, window) for q in (0.0, 0.75, 0.9) for window in (8, 12, 20)]
DEFAULTS = dict(NaturalnessDetector.defaults)


def typo_plants(data: Path, cache: Path, corpus: str, max_docs: int, seed: int, count: int) -> list[dict[str, Any]]:
    """GARAG-style typo edits of ``count`` documents (>= 80 characters) of a corpus's evaluation sample, made by the
    red-team generator (:func:`auditor.redteam.adversarial.typo_attack`, the parameters of
    ``benchmarks/attack_recall.py``: at most 6 edits, 16 candidates a round, toward the document's question bait)
    against the bundled model: ``[{"host": row, "text", "edits"}]``, cached in ``cache/typo-<corpus>.json``. Made
    for corpora the typo rules were not written after (the three host corpora's typos come from attack_recall)."""
    path = cache / f"typo-{corpus}-{max_docs}-{seed}-{count}.json"
    if path.exists():
        return list(json.loads(path.read_text(encoding="utf-8")))
    from auditor.embedder import Embedder
    from auditor.progress import progress_bar
    from auditor.redteam.adversarial import typo_attack
    from auditor.redteam.generators import question_bait

    rows = corpus_sample(data, corpus, max_docs, seed)
    rng = random.Random(f"{seed}:{corpus}:typo-plants")
    hosts = sorted(rng.sample([i for i, r in enumerate(rows) if len(str(r["text"])) >= 80], count))
    scorer = Embedder()
    out = []
    bar = progress_bar(total=len(hosts), desc=f"{corpus} typos", unit="doc")
    try:
        for i in hosts:
            text = str(rows[i]["text"])
            edited, edits, _, _ = typo_attack(text, scorer.encode([question_bait(text)])[0], scorer.encode, rng=rng,
                                              most=6, candidates=16)
            out.append({"host": i, "text": edited, "edits": edits})
            bar.update(1)
    finally:
        bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    return out


def planted_corpus(data: Path, generated: Path, corpus: str, max_docs: int, seed: int, plants: Path | None = None,
                   plant_count: int = 0) -> tuple[list[str], list[str], list[str]]:
    """The texts of one evaluation collection, per text ``clean`` or its family (a typo-edited document replaces
    the one it edits, which leaves the clean set), and per text the original it was edited from (else itself).
    Typo plants of a corpus that hosts no generated attacks come from :func:`typo_plants` (``plant_count`` per
    corpus, cached under ``plants``; none when 0)."""
    rows = corpus_sample(data, corpus, max_docs, seed)
    texts = [str(r["text"]) for r in rows]
    labels = ["clean"] * len(texts)
    planted: dict[str, list[str]] = {f: [] for f in FAMILIES}
    planted["whitebox-poison"] = [r["text"] for r in json.loads((generated / "whitebox.json").read_text("utf-8"))]
    for host in [corpus] if corpus in HOSTS else list(HOSTS):
        path = generated / f"{host}.json"
        if not path.exists():
            continue
        for r in json.loads(path.read_text(encoding="utf-8")):
            if r["family"] in ("gaslite", "corpus-poisoning"):
                planted[r["family"]].append(r["text"])
            elif r["family"] == "typo" and host == corpus:
                texts[int(r["host"])] = r["text"]
                labels[int(r["host"])] = "typo"
    if corpus not in HOSTS and plants is not None and plant_count > 0:
        made = typo_plants(data, plants, corpus, max_docs, seed, plant_count)
        # at most 5% of a small corpus (email, code: 5 of 100), as an attack wave would be
        keep = random.Random(f"{seed}:{corpus}:typo-keep").sample(made, min(len(made), max(
            PER_FAMILY_LEAST, round(TYPO_SHARE * len(rows)))))
        for r in keep:
            texts[int(r["host"])] = r["text"]
            labels[int(r["host"])] = "typo"
    originals = [str(r["text"]) for r in rows]
    most = max(PER_FAMILY_LEAST, round(PER_FAMILY_SHARE * len(rows)))
    for family, items in planted.items():
        if family != "typo":
            keep = items if corpus in HOSTS else random.Random(f"{seed}:{corpus}:{family}").sample(
                items, min(most, len(items)))
            texts += keep
            labels += [family] * len(keep)
            originals += keep
    return texts, labels, originals


def smallest_line(values: np.ndarray, max_share: float, integer: bool) -> float:
    """The lowest line that at most ``max_share`` of ``values`` reach (a line just above the allowed tail)."""
    allowed = math.floor(max_share * values.size + 1e-9)
    ordered = np.sort(values)[::-1]
    top = float(ordered[allowed]) if allowed < ordered.size else float("-inf")
    line = math.floor(top) + 1.0 if integer else float(np.nextafter(top, np.inf))
    return max(line, 1.0 if integer else 0.05)


def flagged(strength: np.ndarray, report: float) -> tuple[np.ndarray, np.ndarray]:
    """(LOW+, MEDIUM+) masks as the alert budget leaves them: MEDIUM at strength >= 1 (the floor); of the LOW
    (report <= strength < 1) the strongest ceil(review_budget * n) stay LOW, the rest go to INFO."""
    medium = strength >= 1.0
    low_idx = np.flatnonzero((strength >= report) & ~medium)
    slots = math.ceil(DEFAULT_REVIEW_BUDGET * strength.size - 1e-9)
    kept = low_idx[np.argsort(-strength[low_idx], kind="stable")][:slots]
    low = medium.copy()
    low[kept] = True
    return low, medium


def evaluate(args: argparse.Namespace, corpora: Sequence[str]) -> dict[str, Any]:
    """Scores of every corpus and grid point: ``{corpus: {"labels", "typos" (TypoScores), "truth" (per document
    the words a typo edit made), (scale_quantile, window): DocumentScores}}``."""
    out: dict[str, Any] = {}
    for corpus in corpora:
        texts, labels, originals = planted_corpus(args.data, args.generated, corpus, args.max_docs, args.seed,
                                                  args.typo_plants, args.typo_count)
        typos = score_typos(texts, word_line=float(DEFAULTS["typo_word_line"]),
                            min_misses=int(DEFAULTS["typo_min_misses"]),
                            min_coverage=float(DEFAULTS["typo_min_coverage"]))
        entry: dict[Any, Any] = {"labels": np.array(labels), "typos": typos, "truth": [
            {w.lower() for w in document_words(t)} - {w.lower() for w in document_words(o)} if lab == "typo" else set()
            for t, o, lab in zip(texts, originals, labels, strict=True)]}
        for q, window in GRID:
            entry[(q, window)] = score_documents(texts, {**DEFAULTS, "scale_quantile": q, "window": window}, typos)
        out[corpus] = entry
        print(f"[{time.strftime('%H:%M:%S')}] {corpus}: {len(texts)} documents scored", file=sys.stderr, flush=True)
    return out


def fit_typo_weights(scores: dict[str, Any], corpora: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """The near-miss feature weights (:data:`detectors.typos.WEIGHTS`) fitted on ``corpora``: per feature bucket,
    the add-one smoothed log ratio of its share among the typo edits (near misses of typo documents whose word an
    edit made) to its share among the clean documents' near misses; ``prior`` the log ratio of the two counts."""
    edits = [m.buckets for c in corpora for ms, truth in zip(scores[c]["typos"].near, scores[c]["truth"], strict=True)
             for m in ms if m.word in truth]
    clean = [m.buckets for c in corpora for ms, lab in zip(scores[c]["typos"].near, scores[c]["labels"], strict=True)
             if lab == "clean" for m in ms]
    if not edits or not clean:
        return dict(WEIGHTS)
    weights: dict[str, tuple[float, ...]] = {"prior": (math.log(len(edits) / len(clean)),)}
    for i, feature in enumerate(FEATURES):
        n = len(WEIGHTS[feature])
        weights[feature] = tuple(round(math.log(((sum(b[i] == v for b in edits) + 1) / (len(edits) + n))
                                                / ((sum(b[i] == v for b in clean) + 1) / (len(clean) + n))), 2)
                                 for v in range(n))
    return weights


def weighed(scores: dict[str, Any], weights: dict[str, tuple[float, ...]]) -> dict[str, Any]:
    """The scores with the typo component re-weighed with ``weights`` (soup components unchanged)."""
    word_line, least = float(DEFAULTS["typo_word_line"]), int(DEFAULTS["typo_min_misses"])
    out: dict[str, Any] = {}
    for c, e in scores.items():
        t = e["typos"]
        again = rescore(reweigh(t.near, weights), t.lengths, word_line=word_line, min_misses=least,
                        coverage=t.coverage, min_coverage=float(DEFAULTS["typo_min_coverage"]))
        near = [[m for m in ms if m.weight >= word_line] for ms in again.near]
        out[c] = {k: (dataclasses.replace(v, near=near, typo=again.surprise) if isinstance(v, DocumentScores) else v)
                  for k, v in e.items()}
        out[c]["typos"] = again
    return out


def typo_weights_for(corpus: str, corpora: Sequence[str], scores: dict[str, Any]) -> dict[str, tuple[float, ...]]:
    """The weights a held-out ``corpus`` is measured with: fitted on the host corpora's typos other than itself."""
    return fit_typo_weights(scores, [h for h in HOSTS if h in corpora and h != corpus])


#: The clean share allowed over the typo line (``--typo-share``; None: ``--max-share`` as the soup lines).
TYPO_MAX_SHARE: list[float | None] = [None]


def lines_from(scores: dict[str, Any], corpora: Sequence[str], grid: tuple[float, int], max_share: float,
               ) -> dict[str, float]:
    """``soup_line``, ``typo_line`` and ``whole_line`` chosen on the clean documents of ``corpora`` (pooled)."""
    def pooled(values: Callable[[DocumentScores], np.ndarray]) -> np.ndarray:
        return np.concatenate([values(scores[c][grid])[scores[c]["labels"] == "clean"] for c in corpora])

    return {
        "soup_line": smallest_line(pooled(lambda s: s.soup), max_share, False),
        "typo_line": smallest_line(pooled(lambda s: s.typo), TYPO_MAX_SHARE[0] or max_share, False),
        "whole_line": smallest_line(pooled(lambda s: s.whole), max_share, False),
    }


def measure(scores: dict[str, Any], corpus: str, grid: tuple[float, int], lines: dict[str, float],
            only_typos: bool = False) -> dict[str, Any]:
    """Clean (LOW+, MEDIUM+, n) and per family (hits LOW+, MEDIUM+, planted) of one corpus at ``lines``; with
    ``only_typos`` the typo component alone."""
    e = scores[corpus]
    off = {"soup_line": math.inf, "whole_line": math.inf} if only_typos else {}
    strength, _ = strengths(e[grid], {**DEFAULTS, **lines, **off})
    low, medium = flagged(strength, float(DEFAULTS["report_strength"]))
    labels = e["labels"]
    clean = labels == "clean"
    out: dict[str, Any] = {"clean": (int(low[clean].sum()), int(medium[clean].sum()), int(clean.sum()))}
    for family in FAMILIES:
        m = labels == family
        if m.any():
            out[family] = (int(low[m].sum()), int(medium[m].sum()), int(m.sum()))
    return out


def merit(scores: dict[str, Any], others: list[str], train: list[str], grid: tuple[float, int], family: str,
          max_share: float) -> int:
    """MEDIUM+ hits of every family but ``family`` on the ``train`` corpora, lines chosen on ``others``."""
    lines = lines_from(scores, others, grid, max_share)
    return sum(measure(scores, t, grid, lines).get(f, (0, 0, 0))[1] for t in train for f in FAMILIES if f != family)


def held_out(scores: dict[str, Any], corpora: Sequence[str], max_share: float) -> dict[str, Any]:
    """Per corpus: its clean measure and family recalls with lines chosen on the other corpora and, per family,
    the grid point chosen on the other families of the other host corpora."""
    results: dict[str, Any] = {}
    every = scores
    for c in corpora:
        scores = weighed(every, typo_weights_for(c, corpora, every))
        others = [t for t in corpora if t != c]
        default = (float(DEFAULTS["scale_quantile"]), int(DEFAULTS["window"]))
        res: dict[str, Any] = {"clean": measure(scores, c, default, lines_from(scores, others, default, max_share))
                               ["clean"], "grid": {}, "lines": lines_from(scores, others, default, max_share)}
        for family in FAMILIES:
            if not (scores[c]["labels"] == family).any():
                continue
            train = [t for t in others if t in HOSTS]
            chosen = max(GRID, key=lambda g, family=family, others=others, train=train: (
                merit(scores, others, train, g, family, max_share), g == default))
            res["grid"][family] = chosen
            res[family] = measure(scores, c, chosen, lines_from(scores, others, chosen, max_share))[family]
        res["typo-only"] = measure(scores, c, default, res["lines"], only_typos=True)
        results[c] = res
    return results


def _cell(k: int, n: int) -> tuple[float, str]:
    return (k / n if n else float("nan"), f"{k / n:.2f}" if n else "-")


def _pct(k: int, n: int) -> tuple[float, str]:
    return (100 * k / n if n else float("nan"), f"{100 * k / n:.2f}%" if n else "-")


def table(results: dict[str, Any], corpora: Sequence[str]) -> list[str]:
    lines = ["| | " + " | ".join(corpora) + " |", "|---|" + "---:|" * len(corpora)]
    for label, idx in (("clean flagged LOW+", 0), ("clean flagged MEDIUM+", 1)):
        cells = [_pct(results[c]["clean"][idx], results[c]["clean"][2]) for c in corpora]
        lines.append(f"| {label} | " + " | ".join(_bold_worst(cells, True)) + " |")
    for family in FAMILIES:
        for label, idx in (("LOW+", 0), ("MEDIUM+", 1)):
            cells = [_cell(results[c][family][idx], results[c][family][2]) if family in results[c]
                     else (float("nan"), "-") for c in corpora]
            texts = _bold_worst(cells, False)
            n = [str(results[c][family][2]) if family in results[c] else "" for c in corpora]
            lines.append(f"| {family} recall {label} | " + " | ".join(
                f"{t} ({k})" if k else t for t, k in zip(texts, n, strict=True)) + " |")
    return [*lines, ""]


def typo_table(results: dict[str, Any], corpora: Sequence[str]) -> list[str]:
    """The typo component alone: clean flagged and typo recall, LOW+ and MEDIUM+."""
    rows = ["| typo component alone | " + " | ".join(corpora) + " |", "|---|" + "---:|" * len(corpora)]
    only = {c: results[c]["typo-only"] for c in corpora}
    for label, idx in (("clean flagged LOW+", 0), ("clean flagged MEDIUM+", 1)):
        cells = [_pct(only[c]["clean"][idx], only[c]["clean"][2]) for c in corpora]
        rows.append(f"| {label} | " + " | ".join(_bold_worst(cells, True)) + " |")
    for label, idx in (("typo recall LOW+", 0), ("typo recall MEDIUM+", 1)):
        cells = [_cell(only[c]["typo"][idx], only[c]["typo"][2]) if "typo" in only[c] else (float("nan"), "-")
                 for c in corpora]
        rows.append(f"| {label} | " + " | ".join(_bold_worst(cells, False)) + " |")
    return [*rows, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--corpora", default=",".join(ALL_CORPORA), help="corpora: " + ", ".join(ALL_CORPORA))
    ap.add_argument("--generated", type=Path, default=Path("/tmp/vecaudit-attack-recall/generated"))
    ap.add_argument("--max-docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-share", type=float, default=0.0005, help="clean share allowed at or above a line")
    ap.add_argument("--typo-plants", type=Path, default=Path("/tmp/vecaudit-naturalness/typos"),
                    help="cache of the typo plants generated for the corpora that host no other attack")
    ap.add_argument("--typo-count", type=int, default=40, help="typo plants per such corpus (0: none)")
    ap.add_argument("--fit-typo-weights", action="store_true",
                    help="print the near-miss weights fitted on the host corpora's typos and exit")
    ap.add_argument("--typo-share", type=float, default=0.0001,
                    help="clean share allowed over the typo line (0: --max-share, as the soup lines)")
    ap.add_argument("--typo-word-line", type=float, help="override the detector's typo_word_line")
    ap.add_argument("--typo-min-misses", type=int, help="override the detector's typo_min_misses")
    ap.add_argument("--typo-min-coverage", type=float, help="override the detector's typo_min_coverage")
    args = ap.parse_args(argv)
    TYPO_MAX_SHARE[0] = args.typo_share
    if args.typo_word_line is not None:
        DEFAULTS["typo_word_line"] = args.typo_word_line
    if args.typo_min_coverage is not None:
        DEFAULTS["typo_min_coverage"] = args.typo_min_coverage
    if args.typo_min_misses is not None:
        DEFAULTS["typo_min_misses"] = args.typo_min_misses
    corpora = parse_corpora(ap, args.corpora)
    if not (args.generated / "whitebox.json").exists():
        ap.error(f"no generated attacks under {args.generated}: run benchmarks/attack_recall.py first")
    started = time.time()
    scores = evaluate(args, corpora)
    if args.fit_typo_weights:
        print(json.dumps(fit_typo_weights(scores, [h for h in HOSTS if h in corpora])))
        return 0
    default = (float(DEFAULTS["scale_quantile"]), int(DEFAULTS["window"]))
    shipped = lines_from(scores, corpora, default, args.max_share)
    held = held_out(scores, corpora, args.max_share)
    insample = {c: {"clean": measure(scores, c, default, shipped)["clean"],
                    **{f: v for f, v in measure(scores, c, default, shipped).items() if f != "clean"}}
                for c in corpora}
    out = [f"## Naturalness (VA351) — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
           f"Machine: {machine(source_label())}. Wall time {(time.time() - started) / 60:.1f} min.", "",
           f"Corpora: seeded samples of at most {args.max_docs:,} documents (seed {args.seed}); attack texts from "
           f"{args.generated}.", "",
           "### Held out: lines chosen on the other corpora, the soup window's scale_quantile and length on the "
           "other families", "",
           *table(held, corpora),
           "Lines per held-out corpus (soup z, typo surprise, whole-text soup; default grid): " + "; ".join(
               f"{c} {held[c]['lines']['soup_line']:.2f}, {held[c]['lines']['typo_line']:.2f}, "
               f"{held[c]['lines']['whole_line']:.3f}" for c in corpora) + ".", "",
           "Typo component alone (held out: its line and the near-miss weights chosen without the corpus):", "",
           *typo_table(held, corpora),
           "Grid chosen per (corpus, family) (scale_quantile, window): " + "; ".join(
               f"{c}: " + ", ".join(f"{f} {g[0]}/{g[1]}" for f, g in held[c]['grid'].items())
               for c in corpora if held[c]["grid"]) + ".", "",
           f"### In-sample: the lines chosen on all {len(corpora)} corpora (soup z {shipped['soup_line']:.2f}, "
           f"typo surprise {shipped['typo_line']:.2f}, whole-text soup {shipped['whole_line']:.3f}), default "
           f"scale_quantile {default[0]}, window {default[1]}", "",
           *table(insample, corpora)]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
