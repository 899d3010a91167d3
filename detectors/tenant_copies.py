"""Cross-tenant copies: the same (exact) or nearly the same (near) content stored under two tenants, with the
direction (which tenant had it first) taken from the ledger's provenance when it is known."""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import OWASP_SENSITIVE_INFO, OWASP_VECTOR_WEAKNESS, Finding, Rule, point_key
from auditor.graph import prepare
from auditor.types import Confidence, Distance, Severity

_TAGS = (OWASP_VECTOR_WEAKNESS, OWASP_SENSITIVE_INFO)
EXACT_COPY = Rule("VA411", "Exact copy of another tenant's point", Severity.HIGH, Confidence.HIGH, _TAGS)
NEAR_COPY = Rule("VA412", "Near copy of another tenant's point", Severity.HIGH, Confidence.MEDIUM, _TAGS)

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?;:\n]+(?:\s|$)")


def normalised_text_key(text: str) -> str:
    """Hash of a text with case and whitespace differences removed (an exact copy survives re-formatting)."""
    return hashlib.sha256(" ".join(text.casefold().split()).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def word_shingles(text: str, n: int) -> frozenset[tuple[str, ...]]:
    """Set of ``n``-word shingles of a case-folded text, taken within sentences (a whole sentence when it is
    shorter than n), so dropping a sentence leaves every other shingle intact."""
    out: set[tuple[str, ...]] = set()
    for sentence in _SENTENCE_END.split(text.casefold()):
        words = _WORD.findall(sentence)
        if not words:
            continue
        if len(words) < n:
            out.add(tuple(words))
        else:
            out.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return frozenset(out)


def shingle_sketch(text: str, n: int, size: int) -> list[int]:
    """The ``size`` smallest CRC-32 hashes of a text's word shingles (as in ``word_shingles``): a bottom-k
    MinHash sketch. When the shorter of two texts has containment c in the longer, its smallest hash is among
    the longer's ``size`` smallest with probability >= 1 - (1 - c * short / long) ** size, so two texts that
    share a sketch hash are candidate copies whatever their vectors say. Hand-rolled: one CRC per shingle is
    deterministic across runs and cheap enough for every text of a scan (MinHash libraries compute one hash
    per permutation)."""
    hashes: set[int] = set()
    for sentence in _SENTENCE_END.split(text.casefold()):
        words = _WORD.findall(sentence)
        if not words:
            continue
        spans = [" ".join(words)] if len(words) < n else [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        hashes.update(zlib.crc32(span.encode("utf-8", "surrogatepass")) for span in spans)
    return heapq.nsmallest(size, hashes)


def containment(a: frozenset[Any], b: frozenset[Any]) -> float:
    """|a ∩ b| / min(|a|, |b|): 1.0 when the shorter text's shingles all occur in the longer one."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


@dataclass
class _Copy:
    sources: list[dict[str, Any]] = field(default_factory=list)
    direction_known: bool = False


class CrossTenantCopyDetector(Detector):
    """Reports a point whose content also exists under another tenant.

    * VA411 exact — same text after case/whitespace normalisation, or a bit-identical vector; score 1.0
      against 0.5. Zero false positives by construction (two tenants storing literally the same document is
      the finding; reviewers mark shared public documents as accepted).
    * VA412 near — a pair of points of two tenants whose word-3-shingle containment (share of the shorter
      text's shingles found in the longer) is >= ``min_containment`` when their cosine is >= ``near_cosine``,
      or >= ``strict_containment`` when the cosine is lower (down to ``min_cosine``); score = containment
      (0..1, higher = more of the shorter text appears verbatim in the other). Candidate pairs come from two
      routes: cross-tenant neighbours in the shared graph, and texts sharing a hash of their bottom-``sketch``
      MinHash sketches (``shingle_sketch``; buckets of more than ``max_bucket`` texts are boilerplate and
      skipped), so a copy is found even when the source is not among its vector neighbours. Cosine alone
      misses edited copies and flags same-topic documents, so the lexical test decides: a dropped sentence or
      a truncation keeps containment near 1.0 while the cosine can fall well below 0.85 (a BIPIA email cut
      from 85 to 50 words: 0.82), and distinct documents of two tenants stay below 0.45 on the development set
      (no unrelated cross-tenant pair reaches 0.6; 0.8 below ``near_cosine``). Chosen for a budget of
      <= 0.1% false positives; measured in benchmarks/tenancy_quality.py.

    Direction: ``ctx.previous`` (the ledger) gives each point's first scan; the later point is the copy
    and only it is reported, with ``from_tenant`` the earlier one. Points seen first in the same scan (or
    a baseline scan) get ``direction: unknown``; the pair is still one finding, reported on the later of the two
    points in the store's order with the other as its source (a story its publisher filed under two
    categories is one copy, not two alerts). Copies of unknown direction beyond ``alert_budget`` (0.1% of
    the points) are kept as LOW, strongest first kept at their severity (``_within_budget``): honest shared
    text — the same web page retrieved by two tenants — reached 2.5% of a store of FactCheckGPT snippets dealt
    round-robin to four tenants (benchmarks/results/tenancy.md). Of those, partial overlaps (near copies whose
    containment is under ``copy_floor`` 0.9: a quote two pages share) beyond ``review_budget`` (0.1% of the
    points) are kept as INFO: on the dev tenancy stores every planted near copy (a sentence dropped, a text cut
    to 50-75%) reached 0.947 or more, while shared quotes between tenants of one corpus scored 0.61-0.88
    (web-search snippets of different claims; benchmarks/results/generalization.md, session 11: 0.9 was
    chosen there, in-sample).
    """

    name = "cross-tenant-copy"
    version = "4"
    description = "Same or nearly the same content stored under two tenants (exact and near copies)"
    rules = (EXACT_COPY, NEAR_COPY)
    requires = frozenset({"vectors", "tenant", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "k": 10, "near_cosine": 0.85, "min_containment": 0.6, "min_cosine": 0.5, "strict_containment": 0.8,
        "shingle": 3, "sketch": 16, "max_bucket": 50, "max_evidence": 10, "alert_budget": 0.001,
        "review_budget": 0.001, "copy_floor": 0.9,
    }

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def begin(self, ctx: ScanContext) -> None:
        self._kinds: dict[tuple[int, int], str] = {}

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        tenants = table.tenants
        texts = table.texts
        valid = ctx.valid_mask()
        first_seen = self._first_seen(ctx)

        exact_pairs: set[tuple[int, int]] = set()
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, tenant in enumerate(tenants):
            if tenant is None:
                continue
            text = texts[i]
            if text is not None and text.strip():
                groups[("text", normalised_text_key(text))].append(i)
            if valid[i]:
                groups[("vector", table.vector_hashes[i])].append(i)
        for (kind, _), rows in groups.items():
            if len({tenants[r] for r in rows}) < 2:
                continue
            for a in rows:
                for b in rows:
                    if a < b and tenants[a] != tenants[b]:
                        exact_pairs.add((a, b))
                        self._kinds[(a, b)] = self._kinds.get((a, b), kind)

        near: dict[tuple[int, int], tuple[float, float]] = {}
        if ctx.field_map.text:
            near = self._near_pairs(ctx, exact_pairs)

        found = [*self._report(ctx, EXACT_COPY, {p: (1.0, 1.0) for p in exact_pairs}, first_seen, exact=True),
                 *self._report(ctx, NEAR_COPY, near, first_seen, exact=False)]
        yield from self._within_budget(ctx, found)

    def _within_budget(self, ctx: ScanContext, found: list[Finding]) -> list[Finding]:
        """Copies whose direction the ledger knows (a point that arrived after another tenant's) always alert.
        Those first seen together (a baseline scan, one bulk ingest) are the store's state, often honest
        shared text (a page retrieved by two tenants, a story filed under two desks): only the strongest
        ``alert_budget`` share of the points keep their severity (exact before near, then by containment); the
        others are kept as LOW with their score — exact copies and near copies whose containment reaches
        ``copy_floor`` all of them, partial overlaps below it only the strongest ``review_budget`` share of the
        points, the rest INFO (a quote two tenants' pages share is listed, not flagged)."""
        unknown = sorted((f for f in found if f.evidence["direction"] == "unknown"),
                         key=lambda f: (f.rule is NEAR_COPY, -f.score, str(f.point_id)))
        n_points = len(ctx.table.ids)
        budget = max(1, int(float(self.params["alert_budget"]) * n_points))
        review_slots = math.ceil(max(0.0, float(self.params["review_budget"])) * n_points)
        floor = float(self.params["copy_floor"])
        over = unknown[budget:]
        partial = [f for f in over if f.rule is NEAR_COPY and f.score < floor]
        to_info = {id(f) for f in partial[review_slots:]}
        if found:
            alerting = len(found) - len(over)
            ctx.note(f"cross-tenant-copy: {len(found)} copy findings (one per pair), {alerting} alerting; "
                     f"{len(unknown)} of unknown direction, {len(over)} of them over the alert budget ({budget} = "
                     f"{float(self.params['alert_budget']):.2%} of points) kept as LOW"
                     + (f", but {len(to_info)} partial overlaps (containment under {floor:g}) beyond the review "
                        f"budget ({review_slots}) kept as INFO" if to_info else ""))
        moved = {id(f) for f in over}
        return [self._moved(f, Severity.INFO if id(f) in to_info else Severity.LOW, budget, review_slots)
                if id(f) in moved else f for f in found]

    @staticmethod
    def _moved(f: Finding, severity: Severity, alert_slots: int, review_slots: int) -> Finding:
        """``f`` at ``severity``, saying in its evidence what it was (as the alert budget does)."""
        evidence = {**f.evidence, "alert_budget": {
            "severity_before": f.effective_severity.name, "kept_as": severity.name,
            "alert_slots": alert_slots, "review_slots": review_slots,
        }}
        return dataclasses.replace(f, severity=severity, evidence=evidence)

    def _near_pairs(
        self, ctx: ScanContext, exact_pairs: set[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[float, float]]:
        """Candidate pairs of two tenants that pass the cosine-dependent containment test: graph neighbours
        at cosine >= ``near_cosine``, and texts sharing a sketch hash (the only route below that cosine, so
        the shingle test runs on few pairs)."""
        table = ctx.table
        tenants, texts = table.tenants, table.texts
        graph = ctx.graph(int(self.params["k"]))
        near_cos = float(self.params["near_cosine"])
        n_words = int(self.params["shingle"])
        valid = ctx.valid_mask()
        candidates: dict[tuple[int, int], float | None] = {}
        for i in range(len(tenants)):
            if tenants[i] is None or texts[i] is None:
                continue
            for j, sim in zip(graph.indices[i], graph.sims[i], strict=True):
                j = int(j)
                if j < 0:
                    break
                if tenants[j] is None or tenants[j] == tenants[i] or texts[j] is None:
                    continue
                cos = float(sim) if graph.distance is Distance.COSINE else None
                if cos is None or cos >= near_cos:
                    candidates[(min(i, j), max(i, j))] = cos
        for pair in self._sketch_pairs(tenants, texts, n_words):
            if valid[pair[0]] and valid[pair[1]]:
                candidates.setdefault(pair, None)
        shingles: dict[int, frozenset[tuple[str, ...]]] = {}
        out: dict[tuple[int, int], tuple[float, float]] = {}
        for pair, known_cos in sorted(candidates.items()):
            if pair in exact_pairs:
                continue
            if known_cos is None:
                unit = prepare(np.asarray(table.vectors[list(pair)]), Distance.COSINE)
                known_cos = float(unit[0] @ unit[1])
            cos = known_cos
            if cos < float(self.params["min_cosine"]):
                continue
            for r in pair:
                if r not in shingles:
                    shingles[r] = word_shingles(texts[r] or "", n_words)
            cont = containment(shingles[pair[0]], shingles[pair[1]])
            needed = self.params["min_containment" if cos >= near_cos else "strict_containment"]
            if cont >= float(needed):
                out[pair] = (cont, cos)
        return out

    def _sketch_pairs(
        self, tenants: list[str | None], texts: list[str | None], n_words: int
    ) -> set[tuple[int, int]]:
        """Pairs of texts of two tenants that share a hash of their shingle sketches."""
        size, max_bucket = int(self.params["sketch"]), int(self.params["max_bucket"])
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, text in enumerate(texts):
            if tenants[i] is not None and text is not None and text.strip():
                for h in shingle_sketch(text, n_words, size):
                    buckets[h].append(i)
        pairs: set[tuple[int, int]] = set()
        for rows in buckets.values():
            if len(rows) < 2 or len(rows) > max_bucket:
                continue
            for pos, a in enumerate(rows):
                for b in rows[pos + 1 :]:
                    if tenants[a] != tenants[b]:
                        pairs.add((a, b))
        return pairs

    def _report(
        self, ctx: ScanContext, rule: Any, pairs: dict[tuple[int, int], tuple[float, float]],
        first_seen: list[float], *, exact: bool,
    ) -> Iterable[Finding]:
        table = ctx.table
        tenants = table.tenants
        copies: dict[int, _Copy] = defaultdict(_Copy)
        for (a, b), (score, cos) in pairs.items():
            if first_seen[a] < first_seen[b]:
                targets = [(b, a, True)]
            elif first_seen[b] < first_seen[a]:
                targets = [(a, b, True)]
            else:  # one finding per pair: on the later row of the table, the pair's other side as source
                targets = [(b, a, False)]
            for copy_row, source_row, known in targets:
                entry = copies[copy_row]
                entry.direction_known = entry.direction_known or known
                source: dict[str, Any] = {
                    "id": table.ids[source_row], "tenant": tenants[source_row], "score": round(score, 4),
                    "cosine": round(cos, 4), "direction": "from_ledger" if known else "unknown",
                }
                if exact:
                    source["match"] = self._kinds.get((min(a, b), max(a, b)), "text")
                copies[copy_row].sources.append(source)
        max_ev = int(self.params["max_evidence"])
        for row, entry in copies.items():
            # sources seen before this scan first, then the strongest match
            entry.sources.sort(key=lambda s: (s["direction"] != "from_ledger", -s["score"]))
            best = entry.sources[0]
            score = max(s["score"] for s in entry.sources)
            other_tenants = sorted({str(s["tenant"]) for s in entry.sources})
            what = (
                "exact copy" if exact else f"near copy (containment {best['score']:.2f}, cosine {best['cosine']:.3f})"
            )
            direction = (
                f"; tenant {best['tenant']!r} had it first" if best["direction"] == "from_ledger"
                else "; which tenant had it first is unknown"
            )
            limit = 0.5 if exact else float(
                self.params["min_containment" if best["cosine"] >= self.params["near_cosine"] else "strict_containment"]
            )
            yield Finding(
                rule, self.name, table.ids[row], score,
                f"{what} of point {best['id']!r} of tenant {best['tenant']!r}{direction}", limit,
                {"from_tenant": best["tenant"], "tenants": other_tenants, "direction": best["direction"],
                 "sources": entry.sources[:max_ev], "source_count": len(entry.sources)},
                tenants[row],
                confidence=None if entry.direction_known or exact else Confidence.LOW,
            )

    @staticmethod
    def _first_seen(ctx: ScanContext) -> list[float]:
        """First scan id of every row from the ledger; ``inf`` for points new in this scan."""
        previous = ctx.previous or {}
        out: list[float] = []
        for pid in ctx.table.ids:
            state = previous.get(point_key(pid))
            first = state.first_scan_id if state is not None else None
            out.append(float(first) if first is not None else math.inf)
        return out
