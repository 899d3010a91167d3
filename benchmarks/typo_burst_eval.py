"""The typo-burst detector (VA352) held out on every dev corpus, alone and together with the other default detectors
(issue 16's GARAG typos under issue 17's alert budget); no store, no ledger for the typo part.

    .venv/bin/python benchmarks/typo_burst_eval.py --scans /tmp/vecaudit-generalization [--data ../shared/data/dev]
        [--generated /tmp/vecaudit-attack-recall/generated] [--typo-plants /tmp/vecaudit-naturalness/typos]
        [--report-strength 1.0] [--typo-share 0.0001] [--corpora wiki,reuters,...]

For every corpus *c*, with nothing chosen on *c*:

1. **the line**: ``typo_line`` is the lowest surprise that at most ``--typo-share`` of the *other* corpora's clean
   documents (pooled) reach, on the evaluation collections of ``benchmarks/naturalness_eval.py`` (at most 2,000
   documents per corpus with the generated attacks and typo plants in them); on a host corpus (wiki, pubmed,
   reuters) the near-miss weights are those fitted on the other two hosts' typos (``typo_weights_for``);
2. **typo recall**: the typo plants of *c*'s evaluation collection (attack_recall's own on the hosts, made by the same
   generator on the eight others) reported at strength >= ``--report-strength`` (surprise / line; under 1.0 the
   strongest of them within the review budget, as the alert budget keeps them);
3. **clean share, together with the default set**: the clean store ``benchmarks/generalization.py`` scanned for *c*
   (``--scans``: its saved scan documents, at most 3,000 documents) — the other default detectors' findings
   re-budgeted with floors chosen on the other corpora (``benchmarks/alert_floors.py``, the session's held-out
   method; any VA352 finding in the saved scan is dropped first), and the typo-burst findings of the same texts
   scored here with *c*'s held-out line and weights: the share of clean documents any of them names at LOW+ and
   MEDIUM+ (PII/secrets apart), and what typo-burst adds. ``--alert-severity medium`` counts the detector's findings at
   its floor as MEDIUM (as ``alert = true`` makes them), ``low`` as shipped.

Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import alert_floors  # noqa: E402
import naturalness_eval  # noqa: E402
from content_data import DEFAULT_DATA  # noqa: E402
from generalization import (  # noqa: E402
    ALL_CORPORA,
    SENSITIVE,
    STORES,
    _bold_worst,
    corpus_sample,
    flagged_points,
    machine,
    parse_corpora,
    source_label,
)

from auditor.types import Severity  # noqa: E402
from detectors.typo_bursts import TypoBurstDetector  # noqa: E402
from detectors.typos import score_typos  # noqa: E402

P = TypoBurstDetector.defaults
DEFAULT_GRID = (float(naturalness_eval.DEFAULTS["scale_quantile"]), int(naturalness_eval.DEFAULTS["window"]))


def base_flags(scans: Path, corpora: list[str], max_share: float) -> dict[str, dict[str, Any]]:
    """Per corpus: the clean ids and the ids the other default detectors flag at LOW+ / MEDIUM+ (PII/secrets apart)
    in its clean store, floors chosen on the other corpora (``alert_floors``)."""
    docs = {}
    for c in corpora:
        for s in STORES:
            path = scans / c / f"{s}.scan.json"
            if path.exists():
                doc = json.loads(path.read_text(encoding="utf-8"))
                doc["findings"] = [f for f in doc["findings"] if f["detector"] != TypoBurstDetector.name]
                docs[(c, s)] = doc
    rules, per_detector = alert_floors.budgeted()
    per_detector.pop(TypoBurstDetector.name, None)
    rule_ids = sorted(r for rs in per_detector.values() for r in rs)
    fixed, shares = alert_floors.shipped_settings(per_detector)
    out: dict[str, dict[str, Any]] = {}
    for c in corpora:
        floors = {**fixed, **alert_floors.floors_from(docs, [t for t in corpora if t != c], rule_ids, max_share,
                                                      alert_floors.KEEP_ATTACK)}
        doc = alert_floors.rebudget(docs[(c, "clean")], rules, per_detector, floors, shares)
        clean = {str(i) for i in doc["truth"]["clean"]}
        out[c] = {"clean": clean, "n": int(doc["bench"]["points"]),
                  **{label: flagged_points(doc["findings"], level, exclude=SENSITIVE) & clean
                     for label, level in (("LOW+", Severity.LOW), ("MEDIUM+", Severity.MEDIUM))}}
    return out


def reported(strength: np.ndarray, report: float) -> np.ndarray:
    """Reported findings as the budget leaves them at LOW+: at the floor (1.0) all, under it (from ``report``) the
    strongest within the review budget."""
    return naturalness_eval.flagged(strength, report)[0] if report < 1.0 else strength >= 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--scans", type=Path, required=True, help="generalization.py --out folder with clean stores")
    ap.add_argument("--corpora", default=",".join(ALL_CORPORA), help="corpora: " + ", ".join(ALL_CORPORA))
    ap.add_argument("--generated", type=Path, default=Path("/tmp/vecaudit-attack-recall/generated"))
    ap.add_argument("--typo-plants", type=Path, default=Path("/tmp/vecaudit-naturalness/typos"))
    ap.add_argument("--typo-count", type=int, default=40)
    ap.add_argument("--max-docs", type=int, default=2000, help="documents per evaluation collection")
    ap.add_argument("--store-docs", type=int, default=3000, help="documents per clean store (as generalization.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--typo-share", type=float, default=0.0001)
    ap.add_argument("--floor-share", type=float, default=0.0005, help="alert_floors.py --max-share for the others")
    ap.add_argument("--report-strength", type=float, default=float(P["report_strength"]))
    ap.add_argument("--alert-severity", choices=("low", "medium"), default="medium" if P["alert"] else "low")
    args = ap.parse_args(argv)
    corpora = parse_corpora(ap, args.corpora)
    missing = [c for c in corpora if not (args.scans / c / "clean.scan.json").exists()]
    if missing:
        ap.error(f"no clean-store scan for {', '.join(missing)} under {args.scans}: run benchmarks/generalization.py "
                 "--stores clean first")
    if not (args.generated / "whitebox.json").exists():
        ap.error(f"no generated attacks under {args.generated}: run benchmarks/attack_recall.py first")
    started = time.time()
    naturalness_eval.GRID[:] = [DEFAULT_GRID]  # the soup grid is not read here
    naturalness_eval.TYPO_MAX_SHARE[0] = args.typo_share
    scores = naturalness_eval.evaluate(args, corpora)
    base = base_flags(args.scans, corpora, args.floor_share)
    rows: dict[str, dict[str, Any]] = {}
    for c in corpora:
        weights = naturalness_eval.typo_weights_for(c, corpora, scores)
        held = naturalness_eval.weighed(scores, weights)
        line = naturalness_eval.lines_from(held, [t for t in corpora if t != c], DEFAULT_GRID, 0.0)["typo_line"]
        e = held[c]
        hit = reported(e["typos"].surprise / line, args.report_strength)
        labels = e["labels"]
        texts = [str(r["text"]) for r in corpus_sample(args.data, c, args.store_docs, args.seed)]
        store = score_typos(texts, word_line=float(P["typo_word_line"]), min_misses=int(P["typo_min_misses"]),
                            min_coverage=float(P["typo_min_coverage"]), weights=weights)
        mine = {str(i) for i in np.flatnonzero(reported(store.surprise / line, args.report_strength))}
        b = base[c]
        clean = b["clean"]
        medium_mine = mine if args.alert_severity == "medium" else set()
        rows[c] = {
            "line": line, "typo": (int(hit[labels == "typo"].sum()), int((labels == "typo").sum())),
            "eval_clean": (int(hit[labels == "clean"].sum()), int((labels == "clean").sum())),
            "n": len(clean), "mine": len(mine & clean),
            "low": (len(b["LOW+"] & clean), len((b["LOW+"] | mine) & clean)),
            "medium": (len(b["MEDIUM+"] & clean), len((b["MEDIUM+"] | medium_mine) & clean)),
        }
        print(f"[{time.strftime('%H:%M:%S')}] {c}: line {line:.2f}, {len(mine)} flagged in the clean store",
              file=sys.stderr, flush=True)

    def pct(k: int, n: int) -> tuple[float, str]:
        return (100 * k / n if n else math.nan, f"{100 * k / n:.2f}%" if n else "-")

    header = ["| held out | " + " | ".join(corpora) + " |", "|---|" + "---:|" * len(corpora)]
    lines = [f"## typo-burst (VA352) held out — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Machine: {machine(source_label())}. Wall time {(time.time() - started) / 60:.1f} min. Report "
             f"strength {args.report_strength:g}; findings at the floor counted as {args.alert_severity.upper()}; "
             f"line at {args.typo_share:.2%} of the other corpora's clean documents.", "", *header,
             "| typo line (surprise) | " + " | ".join(f"{rows[c]['line']:.2f}" for c in corpora) + " |"]
    cells = [(rows[c]["typo"][0] / rows[c]["typo"][1], f"{rows[c]['typo'][0] / rows[c]['typo'][1]:.2f} "
              f"({rows[c]['typo'][1]})") if rows[c]["typo"][1] else (math.nan, "-") for c in corpora]
    lines.append("| typo recall LOW+ (planted) | " + " | ".join(_bold_worst(cells, False)) + " |")
    lines.append("| evaluation collection: clean flagged | " + " | ".join(
        _bold_worst([pct(*rows[c]["eval_clean"]) for c in corpora], True)) + " |")
    lines.append("| clean store: typo-burst flags | " + " | ".join(
        _bold_worst([pct(rows[c]["mine"], rows[c]["n"]) for c in corpora], True)) + " |")
    for label, key in (("LOW+", "low"), ("MEDIUM+", "medium")):
        for which, idx in (("default set without it", 0), ("with typo-burst", 1)):
            lines.append(f"| clean store {label}, {which} | " + " | ".join(
                _bold_worst([pct(rows[c][key][idx], rows[c]["n"]) for c in corpora], True)) + " |")
    lines.append("| clean store: documents | " + " | ".join(f"{rows[c]['n']:,}" for c in corpora) + " |")
    print("\n".join([*lines, ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
