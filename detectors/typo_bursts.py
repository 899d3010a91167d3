"""Typo bursts (VA352, a default detector): documents holding several GARAG-style character edits — words the
language and the collection do not know, each one interior edit from a common word — far beyond the collection's
own rate of such words. The typo component of ``naturalness`` (:mod:`detectors.typos`) on its own, without the
token-soup parts that keep that detector opt-in."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.errors import DetectorError
from auditor.findings import ATLAS_RAG_POISONING, OWASP_DATA_POISONING, OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.types import Confidence, Severity
from detectors.typos import TYPO_DEFAULTS, burst_evidence, burst_message, check_typo_params, score_typos

TYPO_BURST = Rule(
    "VA352", "Typo burst (GARAG-style character edits)", Severity.LOW, Confidence.LOW,
    (OWASP_DATA_POISONING, OWASP_VECTOR_WEAKNESS, ATLAS_RAG_POISONING),
)
#: The strength (typo surprise / ``typo_line``) at which a finding turns MEDIUM and keeps its severity whatever the
#: alert budget: the rule's floor.
ALERT_STRENGTH = 1.0


class TypoBurstDetector(Detector):
    """Documents with a burst of typos, judged against the bundled model's vocabulary (the language) and the
    collection's own words — nothing downloaded (:mod:`detectors.typos`):

    a document's **near misses** are words the language does not know and no other document uses, one interior
    edit (first and last letter kept) from a common word of the language or the collection; each is weighed by how
    much it looks like a planted edit (the kind of edit, how common the word it misspells is, whether that word is
    also in the document, a capital, its spelling); those weighing at least ``typo_word_line`` are counted, and a
    count of at least ``typo_min_misses`` is scored by its Poisson surprise (-log10 p) against the collection's own
    rate of such words for a document of its length (documents that are no burst set the rate: a wave of bursts
    cannot calibrate itself away). One typo is normal; several in one short text are not. A text whose words the
    language and the collection cover less than ``typo_min_coverage`` (a page in another language, placeholder
    text) is not judged.

    Strength = surprise / ``typo_line``; reported from ``report_strength`` (1.0: the line). 1.0 is the rule's alert
    floor: a finding there keeps its severity however many there are (a wave of typo documents is never budgeted
    away); with ``report_strength`` under 1.0 the weaker bursts share the detector's review budget (the strongest
    0.1% of the points LOW, the rest INFO). A burst is **LOW** (reviewable, not alerting) unless ``alert = true``
    makes those at the floor MEDIUM: rare real words the vocabulary lacks ("tup", "wether"; "hoes", "sowing",
    "sown") and real wire typos read as bursts too, and at MEDIUM they would take a corpus over the 0.2% MEDIUM+
    budget of all default detectors (benchmarks/results/naturalness.md). The line and weights were chosen
    leave-one-corpus-out on the development corpora. Evidence: the counted near misses, the words they seem to
    misspell (masked) and their weights, the surprise, the document's word count and the collection's rate."""

    name = "typo-burst"
    version = "1"
    description = "a document with a burst of typos: GARAG-style character edits that steer retrieval"
    rules = (TYPO_BURST,)
    requires = frozenset({"text"})
    budgeted_rules = frozenset({"VA352"})
    alert_floors: ClassVar[dict[str, float]] = {"VA352": ALERT_STRENGTH}
    defaults: ClassVar[dict[str, Any]] = {**TYPO_DEFAULTS, "report_strength": 1.0, "alert": False, "min_documents": 50}

    def begin(self, ctx: ScanContext) -> None:
        p = self.params
        check_typo_params(self.name, p)
        if int(p["min_documents"]) < 1:
            raise DetectorError(f"parameter 'min_documents' of detector {self.name!r} must be at least 1, got "
                                f"{p['min_documents']}",
                                hint=f"write it like `min_documents = {self.defaults['min_documents']}` under "
                                     f"[detectors.{self.name}]")
        if float(p["report_strength"]) <= 0:
            raise DetectorError(f"parameter 'report_strength' of detector {self.name!r} must be positive, got "
                                f"{p['report_strength']}",
                                hint=f"write it like `report_strength = {self.defaults['report_strength']}` under "
                                     f"[detectors.{self.name}]")

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table, p = ctx.table, self.params
        rows = [i for i, t in enumerate(table.texts) if isinstance(t, str) and t.strip()]
        if len(rows) < int(p["min_documents"]):
            ctx.note(f"typo-burst: {len(rows)} documents with text, fewer than min_documents "
                     f"({p['min_documents']}): no collection model fitted")
            return
        line, report = float(p["typo_line"]), float(p["report_strength"])
        word_line, alert = float(p["typo_word_line"]), bool(p["alert"])
        scores = score_typos([str(table.texts[i]) for i in rows], word_line=word_line,
                             min_misses=int(p["typo_min_misses"]), min_coverage=float(p["typo_min_coverage"]))
        strength = scores.surprise / line
        floor = self.floors().get(TYPO_BURST.id, ALERT_STRENGTH)
        reported = np.flatnonzero(strength >= report)
        ctx.note(f"typo-burst: {len(rows):,} documents, {scores.rate * 1e3:.3f} typo-like words per 1,000 "
                 f"(the collection's rate), {reported.size} burst(s) at strength >= {report:g}, "
                 f"{int((strength >= floor).sum())} at the floor {floor:g} (surprise {line:g})")
        for j in reported:
            row, s = rows[int(j)], float(strength[j])
            near = [m for m in scores.near[j] if m.weight >= word_line]
            evidence = {**burst_evidence(near, float(scores.surprise[j])), "words": int(scores.lengths[j]),
                        "collection_rate": round(scores.rate, 6), "typo_line": line}
            yield Finding(TYPO_BURST, self.name, table.ids[row], s,
                          burst_message(near, float(scores.surprise[j]), line), report, evidence, table.tenants[row],
                          severity=Severity.MEDIUM if alert and s >= floor else Severity.LOW)
