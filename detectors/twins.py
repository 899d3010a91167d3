"""Conflicting twins: two near-identical passages that state a different fact — a counterfactual edit stored
beside its original (RGB-style knowledge conflicts), a silently altered figure, name, date or a slipped-in
negation. Each pair is reported once, on the newer of the two."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import ATLAS_FALSE_RAG_ENTRY, OWASP_DATA_POISONING, Finding, Rule
from auditor.masking import redact_text
from auditor.types import Confidence, Severity
from detectors.poisoning import neighbour_cosines, row_norms
from detectors.textsignals import claim_shaped

CONFLICTING_TWIN = Rule(
    "VA313", "Near-identical passages that differ in one fact (number, name, date or negation)", Severity.MEDIUM,
    Confidence.MEDIUM, (OWASP_DATA_POISONING, ATLAS_FALSE_RAG_ENTRY),
)

#: Words that turn a statement into its opposite when inserted or removed.
NEGATIONS = frozenset({"not", "no", "never", "none", "nor", "cannot", "n't", "neither", "without"})
_TOKEN = re.compile(r"\w+(?:[.,:/'’-]\w+)*|[^\w\s]")
#: Score added when one twin arrived since the last scan: over the rule's alert floor, so a new twin is never
#: budgeted away, while twins that have sat in the collection since its baseline share the alert budget.
NEW_TWIN_BONUS = 1.0


def tokens(text: str) -> list[str]:
    """Words, numbers (with their separators: "1,232,000", "3.5", "2019-04") and punctuation marks."""
    return _TOKEN.findall(text)


def fact_changes(a: str, b: str, max_runs: int, max_run_words: int) -> list[dict[str, Any]] | None:
    """The changed runs of two texts when every one of them changes a *fact*, else None.

    A fact is a number, a date, a name (a capitalised word) or a negation: each changed run may replace at most
    ``max_run_words`` tokens of one text by at most as many of the other and must touch a digit, a capitalised
    word or a negation; an inserted or deleted run must be a negation. Anything else (a sentence added, a word
    reworded) makes the two *versions* of one text, not twins. At most ``max_runs`` runs; None when they are equal
    once case is set aside."""
    return changes_between(tokens(a), tokens(b), max_runs, max_run_words)


def changes_between(ta: list[str], tb: list[str], max_runs: int, max_run_words: int) -> list[dict[str, Any]] | None:
    """:func:`fact_changes` of two texts already split by :func:`tokens`."""
    ops = difflib.SequenceMatcher(a=[t.casefold() for t in ta], b=[t.casefold() for t in tb],
                                  autojunk=False).get_opcodes()
    runs = [(op, ta[i1:i2], tb[j1:j2]) for op, i1, i2, j1, j2 in ops if op != "equal"]
    if not runs or len(runs) > max_runs:
        return None
    changes = []
    for op, before, after in runs:
        kind = _fact_kind(op, before, after, max_run_words)
        if kind is None:
            return None
        changes.append({"kind": kind, "before": " ".join(before), "after": " ".join(after)})
    return changes


def _fact_kind(op: str, before: list[str], after: list[str], max_run_words: int) -> str | None:
    changed = [*before, *after]
    if {t.casefold() for t in changed} & NEGATIONS and (op != "replace" or len(changed) <= 2 * max_run_words):
        return "negation"
    if op != "replace" or len(before) > max_run_words or len(after) > max_run_words:
        return None
    if any(c.isdigit() for t in changed for c in t):
        return "number"
    if any(t[:1].isupper() for t in changed):
        return "name"
    return None


class ConflictingTwinsDetector(Detector):
    """Pairs of neighbours (cosine >= ``min_cosine``) whose texts differ only in up to ``max_runs`` short runs,
    each changing a number, a name or a negation (:func:`fact_changes`).

    Versions of a page (a sentence added, a paragraph reworded) and one table filled with other numbers (many
    runs) are not twins. Score: 1 minus the share of tokens changed; plus ``NEW_TWIN_BONUS`` when, in a
    monitoring scan, one twin is new or changed since the last scan while the other was already there — the shape
    of a counterfactual planted beside its original: MEDIUM, over the alert floor (never budgeted away), when
    they differ in one fact (one substitution, wherever it recurs); several values changed at once are another
    item of a series (a daily story's date and rate). Texts that state nothing (bare titles) are no twins. Other
    twins (the baseline scan, or both old or both new, or a series) are INFO: listed with their score, not
    flagged (most are honest corrections and re-sent stories); ``review_budget`` > 0 keeps that share of the
    points' strongest ones as LOW for review. Evidence: the twin, the changed runs read from the reported point
    to its twin (masked), their kinds, how many distinct facts changed, which one is new."""

    name = "conflicting-twins"
    version = "2"
    description = "near-identical passages that differ in one fact: a counterfactual stored beside its original"
    rules = (CONFLICTING_TWIN,)
    budgeted_rules = frozenset({"VA313"})
    alert_floors: ClassVar[dict[str, float]] = {"VA313": NEW_TWIN_BONUS}
    requires = frozenset({"vectors", "text", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "review_budget": 0.0, "k": 10, "min_cosine": 0.9, "max_runs": 2, "max_run_words": 3, "min_words": 8,
        "max_changed_share": 0.2,
    }

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        if int(ctx.valid_mask().sum()) < 2:
            return
        k = int(self.params["k"])
        graph = ctx.graph(k).truncated(k)
        cos = np.nan_to_num(neighbour_cosines(graph, row_norms(table.vectors)), nan=-1.0)
        rows, cols = np.nonzero(cos >= float(self.params["min_cosine"]))
        partners = graph.indices[rows, cols]
        pairs = sorted({(min(int(a), int(b)), max(int(a), int(b))) for a, b in zip(rows, partners, strict=True)
                        if a != b})
        arrived = ctx.new_or_changed()
        for a, b in pairs:
            finding = self._judge(ctx, a, b, arrived)
            if finding is not None:
                yield finding

    def _judge(self, ctx: ScanContext, a: int, b: int, arrived: list[bool] | None) -> Finding | None:
        table = ctx.table
        ta, tb = table.texts[a], table.texts[b]
        if not ta or not tb:
            return None
        if not (claim_shaped(ta) and claim_shaped(tb)):
            return None  # titles name things and state nothing: "..., August 2015" / "..., October 2015"
        tok_a, tok_b = tokens(ta), tokens(tb)
        len_a, len_b = len(tok_a), len(tok_b)
        n_words = min(len_a, len_b)
        if n_words < int(self.params["min_words"]):
            return None
        if abs(len_a - len_b) > int(self.params["max_runs"]) * int(self.params["max_run_words"]):
            return None  # more words added or removed than the allowed runs can hold: no diff needed
        changes = changes_between(tok_a, tok_b, int(self.params["max_runs"]), int(self.params["max_run_words"]))
        if changes is None:
            return None
        changed = sum(len(tokens(c["before"])) + len(tokens(c["after"])) for c in changes) / 2
        share = changed / n_words
        if share > float(self.params["max_changed_share"]):
            return None
        new_one = None
        if arrived is not None and arrived[a] != arrived[b]:
            new_one = a if arrived[a] else b
        # one fact changed (in one place or repeated) is a counterfactual's edit; several values changed at once
        # (the day and the rate of a daily wire story, a form's number and file size) are another item of a series
        facts = len({(c["before"].casefold(), c["after"].casefold()) for c in changes})
        alerting = new_one is not None and facts == 1
        # report on the newer twin (the one that arrived, else the later row: the later ingested in most stores)
        point, twin = (new_one, b if new_one == a else a) if new_one is not None else (b, a)
        score = 1.0 - share + (NEW_TWIN_BONUS if alerting else 0.0)
        masked = [{**c, "before": redact_text(c["before"]), "after": redact_text(c["after"])} for c in changes]
        if point == a:  # the runs read from the reported point's text to its twin's
            masked = [{**c, "before": c["after"], "after": c["before"]} for c in masked]
        kinds = sorted({c["kind"] for c in changes})
        evidence: dict[str, Any] = {
            "twin": table.ids[twin], "changes": masked, "kinds": kinds, "changed_share": round(share, 4),
            "new_since_last_scan": new_one is not None, "facts_changed": facts,
        }
        said = "; ".join(f"{c['before'] or '(nothing)'!r} -> {c['after'] or '(nothing)'!r}" for c in masked)
        where = "new since the last scan, beside an older twin" if new_one is not None else "near-identical twin"
        series = f" ({facts} values differ: another item of a series)" if facts > 1 else ""
        return Finding(
            CONFLICTING_TWIN, self.name, table.ids[point], score,
            f"{where} {table.ids[twin]!r} states another {'/'.join(kinds)}: {said}{series}",
            1.0 - float(self.params["max_changed_share"]), evidence, table.tenants[point],
            severity=None if alerting else Severity.LOW,
        )
