"""Choose the alert budget's per-rule floors leave-one-corpus-out and measure what the budget does (issue 17).

    .venv/bin/python benchmarks/alert_floors.py [--out /tmp/vecaudit-generalization] [--max-share 0.0005]
        [--keep-attack 0.98]

Reads the scan documents ``benchmarks/generalization.py`` saved (every finding with rule, score and severity, and
each store's ground truth) and, for every corpus *c*:

1. chooses each budgeted rule's floor on the **other** corpora only: the lowest score at or above which at most
   ``--max-share`` (0.05%) of those corpora's clean documents (pooled) score (clean store; for the tenancy rules,
   the clean documents of the tenancy store) — so a floor is never set by the corpus it is scored on; the learned
   injection scorer's VA518 floor is the out-of-corpus line its weights carry (``TRAINED_ON``); the claim
   cluster's VA322 floor is then raised as far as a poisoning wave allows: to the score that ``--keep-attack``
   (98%: the issue lets a detector lose at most 0.02 of recall) of those corpora's planted points it reported
   still reach (``ATTACK_RULES``) — a clean tail alone sets a floor as low as the training corpora are clean, and
   the next corpus's honest groups land above it;
2. re-applies the alert budget (``auditor.budget``, the same function the scan runs) with those floors to the
   clean, attack and tenancy stores of *c*, and
3. reports, per corpus, the share of clean documents flagged at LOW+ / MEDIUM+ / HIGH and the recall of every
   planted class — each corpus measured with floors it did not choose.

The floors the product ships (``alert_floors`` of each detector) are the ones chosen on all corpora: printed last.
Their own dev figures are in-sample; the held-out tables above are the evidence. Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from generalization import ALL_CORPORA, STORES, attack_table, clean_tables, store_measures, tenancy_table  # noqa: E402

from auditor.budget import DEFAULT_ALERT_BUDGET, DEFAULT_REVIEW_BUDGET, DetectorBudget, apply_budget  # noqa: E402
from auditor.findings import Finding, Rule  # noqa: E402
from auditor.registry import detector_classes  # noqa: E402
from auditor.types import Severity  # noqa: E402

TENANCY_RULES = frozenset({"VA412", "VA421"})
#: Corpora a rule's model was trained on never choose its floor (issue 17 item 4): the learned injection scorer
#: is fitted on every dev corpus (benchmarks/injection_corpora.py), which also chose its alert line out of corpus;
#: here its findings get the line the weights carry, and its held-out figures are injection_corpora.py's.
TRAINED_ON = {"VA518": frozenset(ALL_CORPORA)}
#: Floors that are not a score tail but a bonus a finding earns by arriving new (a twin new beside an older one, a
#: language group that arrived together): a first scan's findings never reach them by construction. They keep
#: the floor the detector ships, as the VA518 line does.
STRUCTURAL = frozenset({"VA313", "VA341"})
#: The share of a poisoning wave a raised floor keeps (the issue lets a detector lose at most 0.02 of recall).
KEEP_ATTACK = 0.98
#: Rules whose attack the attack store plants and whose score grades it: their floor may rise above the clean tail
#: as far as a wave allows — to the score that ``--keep-attack`` of the other corpora's planted points reach.
#: (VA321's score is a count of bait sharers — 2 for a three-passage group — so a higher floor there would budget
#: whole small waves away: it keeps the clean tail's floor.)
ATTACK_RULES = frozenset({"VA322"})


def budgeted() -> tuple[dict[str, Rule], dict[str, frozenset[str]]]:
    """Every rule by id, and each budgeted detector's budgeted rules."""
    rules: dict[str, Rule] = {}
    per_detector: dict[str, frozenset[str]] = {}
    for name, cls in detector_classes().items():
        rules.update({r.id: r for r in cls.rules})
        if cls.budgeted_rules:
            per_detector[name] = frozenset(cls.budgeted_rules)
    return rules, per_detector


def reported_before_budget(f: dict[str, Any]) -> bool:
    """Whether a finding was LOW or above as its detector emitted it (before any alert budget moved it)."""
    before = (f.get("evidence") or {}).get("alert_budget", {}).get("severity_before") or f["severity"]
    return Severity.parse(before.lower()).rank >= Severity.LOW.rank


def clean_scores(doc: dict[str, Any], rule_id: str) -> list[float]:
    """The highest score of ``rule_id`` on each clean document of a store that it reported (LOW+ as emitted)."""
    clean = {str(i) for i in doc["truth"]["clean"]}
    best: dict[str, float] = {}
    for f in doc["findings"]:
        pid = str(f["point_id"])
        if f["rule_id"] == rule_id and f["point_id"] is not None and pid in clean and reported_before_budget(f):
            best[pid] = max(best.get(pid, -math.inf), float(f["score"]))
    return sorted(best.values(), reverse=True)


def shipped_settings(per_detector: dict[str, frozenset[str]],
                     ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The floors no corpus chooses (``TRAINED_ON``, ``STRUCTURAL``: as the detectors ship them) and each budgeted
    detector's own ``(alert_budget, review_budget)`` defaults."""
    classes = detector_classes()
    fixed = {r: v for name in per_detector for r, v in classes[name]().floors().items()
             if r in TRAINED_ON or r in STRUCTURAL}
    shares = {name: (float(classes[name].defaults.get("alert_budget", DEFAULT_ALERT_BUDGET)),
                     float(classes[name].defaults.get("review_budget", DEFAULT_REVIEW_BUDGET)))
              for name in per_detector}
    return fixed, shares


def planted_scores(doc: dict[str, Any], rule_id: str) -> list[float]:
    """The highest score of ``rule_id`` on each planted point of a store that it reported (LOW+ as emitted)."""
    planted = {str(i) for ids in doc["truth"]["planted"].values() for i in ids}
    best: dict[str, float] = {}
    for f in doc["findings"]:
        pid = str(f["point_id"])
        if f["rule_id"] == rule_id and f["point_id"] is not None and pid in planted and reported_before_budget(f):
            best[pid] = max(best.get(pid, -math.inf), float(f["score"]))
    return list(best.values())


def attack_floor(docs: list[dict[str, Any]], rule_id: str, keep: float) -> float | None:
    """The highest floor that ``keep`` of the planted points ``rule_id`` reported in ``docs`` (pooled) still reach:
    a wave of them keeps alerting however small the budget (None if it reported none)."""
    scores = sorted(s for doc in docs for s in planted_scores(doc, rule_id))
    if not scores:
        return None
    return scores[min(len(scores) - 1, math.floor((1.0 - keep) * len(scores)))]


def lowest_threshold(docs: list[dict[str, Any]], rule_id: str) -> float | None:
    """The lowest threshold any finding of ``rule_id`` carried: a floor there keeps every finding's severity."""
    found = [float(f["threshold"]) for doc in docs for f in doc["findings"]
             if f["rule_id"] == rule_id and f.get("threshold") is not None]
    return min(found) if found else None


def choose_floor(docs: list[dict[str, Any]], rule_id: str, max_share: float,
                 every_doc: list[dict[str, Any]] | None = None) -> float | None:
    """The lowest floor with at most ``max_share`` of the clean documents of ``docs`` (pooled) at or above it:
    the rule's own threshold when no more than that many clean documents were reported at all (None if it never
    fired in ``every_doc``, default ``docs``)."""
    scores = sorted((s for doc in docs for s in clean_scores(doc, rule_id)), reverse=True)
    allowed = math.floor(max_share * sum(len(doc["truth"]["clean"]) for doc in docs))
    if len(scores) > allowed:
        return math.nextafter(scores[allowed], math.inf)
    return lowest_threshold(every_doc if every_doc is not None else docs, rule_id)


def floors_from(docs: dict[tuple[str, str], dict[str, Any]], corpora: list[str], rules: list[str],
                max_share: float, keep_attack: float | None = None) -> dict[str, float]:
    """Each rule's floor chosen on ``corpora``: the clean tail (:func:`choose_floor`), raised for
    :data:`ATTACK_RULES` to :func:`attack_floor` of their attack stores when ``keep_attack`` is given."""
    out: dict[str, float] = {}
    for rule_id in rules:
        store = "tenancy" if rule_id in TENANCY_RULES else "clean"
        if rule_id in STRUCTURAL:
            continue  # the floor the detector ships (see STRUCTURAL)
        usable = [c for c in corpora if c not in TRAINED_ON.get(rule_id, ()) and (c, store) in docs]
        if not usable:
            continue  # every corpus trained the rule's model: its floor is the one its weights carry
        chosen = choose_floor([docs[(c, store)] for c in usable], rule_id, max_share,
                              [docs[key] for key in docs if key[0] in corpora])
        if chosen is not None and keep_attack is not None and rule_id in ATTACK_RULES:
            wave = attack_floor([docs[(c, "attack")] for c in corpora if (c, "attack") in docs], rule_id,
                                keep_attack)
            chosen = max(chosen, wave) if wave is not None else chosen
        if chosen is not None:
            out[rule_id] = chosen
    return out


def round_up(value: float, digits: int = 4) -> float:
    """``value`` rounded up to ``digits`` significant digits (a shipped floor is never below the chosen one)."""
    if value == 0 or not math.isfinite(value):
        return value
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(value))))
    return math.ceil(value * scale) / scale


def rebudget(doc: dict[str, Any], rules: dict[str, Rule], per_detector: dict[str, frozenset[str]],
             floors: dict[str, float], shares: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """A copy of a scan document whose findings went through the alert budget with ``floors`` (and each
    detector's own ``(alert_budget, review_budget)`` from ``shares``, default the budget's defaults)."""
    findings = []
    for f in doc["findings"]:
        rule = rules.get(f["rule_id"])
        if rule is None:
            findings.append((None, f))
            continue
        obj = Finding(rule, f["detector"], f["point_id"], float(f["score"]), f["message"], f.get("threshold"),
                      dict(f.get("evidence") or {}), f.get("tenant"), Severity.parse(f["severity"]))
        findings.append((obj, f))
    objs = [o for o, _ in findings if o is not None]
    n_points = int(doc["bench"]["points"])
    for det, det_rules in per_detector.items():
        alert, review = (shares or {}).get(det, (DEFAULT_ALERT_BUDGET, DEFAULT_REVIEW_BUDGET))
        apply_budget(objs, DetectorBudget(det, det_rules, {r: v for r, v in floors.items() if r in det_rules},
                                          alert_budget=alert, review_budget=review), n_points)
    out = []
    for obj, f in findings:
        g = dict(f)
        if obj is not None:
            g["severity"] = obj.effective_severity.value
            g["evidence"] = obj.evidence
        out.append(g)
    return {**doc, "findings": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/vecaudit-generalization"))
    ap.add_argument("--max-share", type=float, default=0.0005,
                    help="share of the training corpora's clean documents (pooled) allowed at or above a floor "
                         "[0.0005]")
    ap.add_argument("--keep-attack", type=float, default=KEEP_ATTACK,
                    help="raise the poisoning rules' floors to the score this share of the training corpora's "
                         "planted points reach [0.98]")
    args = ap.parse_args(argv)
    corpora = sorted(p.name for p in args.out.iterdir() if (p / "clean.scan.json").exists())
    docs = {(c, s): json.loads((args.out / c / f"{s}.scan.json").read_text(encoding="utf-8"))
            for c in corpora for s in STORES if (args.out / c / f"{s}.scan.json").exists()}
    rules, per_detector = budgeted()
    rule_ids = sorted(r for rs in per_detector.values() for r in rs)
    fixed, shares = shipped_settings(per_detector)

    held_out: dict[tuple[str, str], dict[str, Any]] = {}
    chosen: dict[str, dict[str, float]] = {}
    for c in corpora:
        floors = {**fixed, **floors_from(docs, [t for t in corpora if t != c], rule_ids, args.max_share,
                                             args.keep_attack)}
        chosen[c] = floors
        for s in STORES:
            if (c, s) in docs:
                held_out[(c, s)] = rebudget(docs[(c, s)], rules, per_detector, floors, shares)
    shipped = floors_from(docs, corpora, rule_ids, args.max_share, args.keep_attack)

    lines = ["## Floors chosen leave-one-corpus-out", "",
             f"Per held-out corpus, each budgeted rule's floor chosen on the other {len(corpora) - 1} corpora "
             f"(at most {args.max_share:.2%} of their clean documents, pooled, reported at or above it; the rule's "
             "threshold when fewer clean documents were reported at all); '-' = the rule never fired there.", ""]
    used = [r for r in rule_ids if any(r in f for f in chosen.values())]
    lines += ["| held out | " + " | ".join(used) + " |", "|---|" + "---:|" * len(used)]
    for c in corpora:
        lines.append(f"| {c} | " + " | ".join(f"{chosen[c][r]:.4g}" if r in chosen[c] else "-" for r in used) + " |")
    lines += ["", "## Held-out figures: every corpus measured with floors chosen without it", ""]
    for store, render in (("clean", clean_tables), ("attack", attack_table)):
        have = [c for c in corpora if (c, store) in held_out]
        lines += render([store_measures(held_out[(c, store)]) for c in have], have)
    have = [c for c in corpora if (c, "tenancy") in held_out]
    lines += tenancy_table([store_measures(held_out[(c, "tenancy")]) for c in have],
                           [held_out[(c, "tenancy")] for c in have], have)
    lines += ["## Floors chosen on all corpora (what the detectors ship)", "", "```",
              json.dumps({r: round_up(v) for r, v in shipped.items()}, indent=1), "```", ""]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
