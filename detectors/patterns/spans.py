"""Shared base of the secrets and PII detectors: scan each text for sensitive values, keep only masked forms,
and report one finding per point and rule with per-tenant counts once the whole collection has been read."""

from __future__ import annotations

import abc
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import Finding, Rule
from auditor.masking import mask_value
from auditor.types import PointId, RecordBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One sensitive value found in a text: its rule, kind and span. ``masked`` is the only form kept."""

    rule: Rule
    kind: str
    start: int
    end: int
    masked: str


def make_hit(rule: Rule, kind: str, text: str, start: int, end: int, mask_kind: str) -> Hit:
    """A hit whose value is masked at once, so the raw value is never stored beyond the text itself."""
    return Hit(rule, kind, start, end, mask_value(text[start:end], mask_kind))


def drop_overlaps(hits: Iterable[Hit]) -> list[Hit]:
    """Keep the earliest-listed hit of any overlapping group (callers list the most specific rules first)."""
    kept: list[Hit] = []
    for hit in hits:
        if all(hit.end <= k.start or hit.start >= k.end for k in kept):
            kept.append(hit)
    return sorted(kept, key=lambda h: h.start)


class SensitiveSpanDetector(Detector):
    """Base: subclasses implement :meth:`scan_text`; one finding per point and rule, from ``observe`` (so
    incremental scans re-read only new or changed texts); a scan note counts flagged points per tenant.

    Score: the number of values of the rule's kinds in the text; threshold 1 (every value that passed its
    validator is reported — the false-positive budget is spent in the validators, not in a score cut).
    """

    requires = frozenset({"text"})
    defaults: ClassVar[dict[str, Any]] = {"max_items": 10}
    pointwise_observe = True
    #: Word used in messages and notes ("secret", "personal value").
    noun: ClassVar[str] = "value"

    @abc.abstractmethod
    def scan_text(self, text: str) -> list[Hit]:
        """The validated values of this detector's kinds found in ``text``."""

    def masked_spans(self, text: str) -> list[Hit]:
        """``auditor.masking.TextMasker``: the same values, each already masked, for reports and logs."""
        return self.scan_text(text)

    def begin(self, ctx: ScanContext) -> None:
        self._flagged: set[tuple[PointId, str | None]] = set()
        self._findings = 0

    def observe(self, batch: RecordBatch, ctx: ScanContext) -> Iterable[Finding]:
        tenants = batch.tenants
        limit = int(self.params["max_items"])
        for i, text in enumerate(batch.texts):
            if not text:
                continue
            by_rule: dict[Rule, list[Hit]] = defaultdict(list)
            for hit in self.scan_text(text):
                by_rule[hit.rule].append(hit)
            for rule, hits in by_rule.items():
                finding = self._finding(batch.ids[i], tenants[i], rule, hits, limit)
                self.observe_carried([finding], ctx)
                yield finding

    def observe_carried(self, findings: Iterable[Finding], ctx: ScanContext) -> None:
        for f in findings:
            self._flagged.add((f.point_id, f.tenant))  # type: ignore[arg-type]
            self._findings += 1

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        if self._flagged:
            points_by_tenant = Counter(tenant for _, tenant in self._flagged)
            summary = ", ".join(f"{t or '(no tenant)'}: {n}" for t, n in sorted(points_by_tenant.items(),
                                                                               key=lambda kv: (-kv[1], str(kv[0]))))
            ctx.note(f"{self.name}: {self._findings} findings on {len(self._flagged)} points; per tenant: {summary}")
        return ()

    def _finding(self, point_id: PointId, tenant: str | None, rule: Rule, hits: list[Hit], limit: int) -> Finding:
        kinds = Counter(h.kind for h in hits)
        items = [{"kind": h.kind, "masked": h.masked, "offset": h.start, "length": h.end - h.start}
                 for h in hits[:limit]]
        kind_list = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        return Finding(
            rule, self.name, point_id, float(len(hits)),
            f"{rule.title}: {kind_list} (masked: {', '.join(h.masked for h in hits[:3])})",
            1.0,
            {"count": len(hits), "kinds": dict(kinds), "items": items},
            tenant,
            identity=",".join(sorted(kinds)),
        )
