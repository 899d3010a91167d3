"""The naturalness detector (VA351) scored directly on every dev corpus with the generated attacks planted, leave-one-
corpus-out and leave-one-family-out (issue 16 item 2); no store, no ledger: fast enough to iterate.

    .venv/bin/python benchmarks/naturalness_eval.py [--data ../shared/data/dev] [--corpora wiki,pubmed,...]
        [--generated /tmp/vecaudit-attack-recall/generated] [--max-docs 2000] [--seed 0] [--max-share 0.0005]

Each corpus is the seeded sample ``benchmarks/attack_recall.py`` hosts attacks in (``corpus_sample``, same seed and
size), with the attack texts that benchmark generated and cached (``--generated``; run it first) planted into it:
the 20 white-box passages (PoisonedRAG behind a HotFlip prefix) and the GASLITE and corpus-poisoning triggers (the
corpus's own where it is a host corpus; elsewhere a seeded sample of the three hosts', about 1% of the corpus per
family, at least 2: a 100-document corpus is not drowned by 40 plants), and the typo-edited documents (host corpora
only; each replaces the document it edits, which leaves the clean set). The detector's models are fitted on the
whole planted collection, as a scan would.

Parameters and the data that choose them:

* ``soup_line``, ``typo_line`` and ``whole_line`` (the MEDIUM lines, the rule's alert floor in strength units):
  for each corpus, the lowest lines that at most ``--max-share`` of the *other* corpora's clean documents (pooled)
  reach; no attack text chooses them. The shipped lines are those chosen on all corpora.
* ``scale_quantile`` and ``window`` of the soup window: for each (corpus, family), the grid point with the highest
  MEDIUM+ recall summed over the *other* families on the *other* host corpora (ties: the detector's default).
* ``order``, ``beta``, ``cased``, ``name_cap``, ``min_words``, ``typo_min_*``: fixed by the author before or while
  comparing held-out tables of this script over all corpora and families (so in-sample choices: the results file
  says which); ``typo_min_count`` / ``typo_min_length`` / ``typo_min_gap`` after a look at the typo family of wiki,
  pubmed and reuters (in-sample for the typo family).

Reported per corpus: the clean share flagged at LOW+ (MEDIUM findings plus the strongest LOW within the review
budget, 0.1% of the collection, as the alert budget keeps them) and MEDIUM+, and per family the recall at both.
Prints markdown.
"""

from __future__ import annotations

import argparse
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

HOSTS = ("wiki", "pubmed", "reuters")
FAMILIES = ("whitebox-poison", "gaslite", "corpus-poisoning", "typo")
SOUP_FAMILIES = ("whitebox-poison", "gaslite", "corpus-poisoning")
#: Plants per family in a corpus that hosts no generated attacks of its own (at most ~1% of it, as attack_recall).
PER_FAMILY_SHARE, PER_FAMILY_LEAST = 0.01, 2
GRID = [(q, window) for q in (0.0, 0.75, 0.9) for window in (8, 12, 20)]
DEFAULTS = NaturalnessDetector.defaults


def planted_corpus(data: Path, generated: Path, corpus: str, max_docs: int, seed: int) -> tuple[list[str], list[str]]:
    """The texts of one evaluation collection and, per text, ``clean``, ``edited`` (the original a typo replaced:
    neither clean nor planted) or its family."""
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
    most = max(PER_FAMILY_LEAST, round(PER_FAMILY_SHARE * len(rows)))
    for family, items in planted.items():
        if family != "typo":
            keep = items if corpus in HOSTS else random.Random(f"{seed}:{corpus}:{family}").sample(
                items, min(most, len(items)))
            texts += keep
            labels += [family] * len(keep)
    return texts, labels


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
    """Scores of every corpus and grid point: ``{corpus: {"labels", (scale_quantile, window): DocumentScores}}``."""
    out: dict[str, Any] = {}
    for corpus in corpora:
        texts, labels = planted_corpus(args.data, args.generated, corpus, args.max_docs, args.seed)
        entry: dict[Any, Any] = {"labels": np.array(labels)}
        for q, window in GRID:
            entry[(q, window)] = score_documents(texts, {**DEFAULTS, "scale_quantile": q, "window": window})
        out[corpus] = entry
        print(f"[{time.strftime('%H:%M:%S')}] {corpus}: {len(texts)} documents scored", file=sys.stderr, flush=True)
    return out


def lines_from(scores: dict[str, Any], corpora: Sequence[str], grid: tuple[float, int], max_share: float,
               ) -> dict[str, float]:
    """``soup_line``, ``typo_line`` and ``whole_line`` chosen on the clean documents of ``corpora`` (pooled)."""
    def pooled(values: Callable[[DocumentScores], np.ndarray]) -> np.ndarray:
        return np.concatenate([values(scores[c][grid])[scores[c]["labels"] == "clean"] for c in corpora])

    return {
        "soup_line": smallest_line(pooled(lambda s: s.soup), max_share, False),
        "typo_line": smallest_line(pooled(lambda s: np.array([len(n) for n in s.near], np.float64)), max_share,
                                   True),
        "whole_line": smallest_line(pooled(lambda s: s.whole), max_share, False),
    }


def measure(scores: dict[str, Any], corpus: str, grid: tuple[float, int], lines: dict[str, float],
            ) -> dict[str, Any]:
    e = scores[corpus]
    strength, _ = strengths(e[grid], {**DEFAULTS, **lines})
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
    for c in corpora:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--corpora", default=",".join(ALL_CORPORA), help="corpora: " + ", ".join(ALL_CORPORA))
    ap.add_argument("--generated", type=Path, default=Path("/tmp/vecaudit-attack-recall/generated"))
    ap.add_argument("--max-docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-share", type=float, default=0.0005, help="clean share allowed at or above a line")
    args = ap.parse_args(argv)
    corpora = parse_corpora(ap, args.corpora)
    if not (args.generated / "whitebox.json").exists():
        ap.error(f"no generated attacks under {args.generated}: run benchmarks/attack_recall.py first")
    started = time.time()
    scores = evaluate(args, corpora)
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
           "Lines per held-out corpus (soup z, near misses, whole-text soup; default grid): " + "; ".join(
               f"{c} {held[c]['lines']['soup_line']:.2f}, {held[c]['lines']['typo_line']:g}, "
               f"{held[c]['lines']['whole_line']:.3f}" for c in corpora) + ".", "",
           "Grid chosen per (corpus, family) (scale_quantile, window): " + "; ".join(
               f"{c}: " + ", ".join(f"{f} {g[0]}/{g[1]}" for f, g in held[c]['grid'].items())
               for c in corpora if held[c]["grid"]) + ".", "",
           f"### In-sample: the lines chosen on all {len(corpora)} corpora (soup z {shipped['soup_line']:.2f}, "
           f"near misses {shipped['typo_line']:g}, whole-text soup {shipped['whole_line']:.3f}), default "
           f"scale_quantile {default[0]}, window {default[1]}", "",
           *table(insample, corpora)]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
