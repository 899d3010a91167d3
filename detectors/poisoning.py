"""Knowledge-poisoning clusters (PoisonedRAG and kin): several distinct passages packed around one claim, often
carrying the target question as retrieval bait, told apart from benign duplicates and ordinary topical groups."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import (
    ATLAS_FALSE_RAG_ENTRY,
    ATLAS_RAG_POISONING,
    OWASP_DATA_POISONING,
    OWASP_VECTOR_WEAKNESS,
    Finding,
    Rule,
    point_key,
)
from auditor.graph import NeighbourGraph
from auditor.masking import redact_text
from auditor.types import Confidence, Distance, Severity
from detectors.textsignals import (
    TermProfile,
    claim_shaped,
    consecutive_chunks,
    content_words,
    jaccard,
    normalised,
    question_sentences,
    question_shaped,
    section_heading,
    single_spaced,
    slot_substitution,
    term_agreement,
    term_in,
    term_profile,
    words,
)

_TAGS = (OWASP_DATA_POISONING, OWASP_VECTOR_WEAKNESS, ATLAS_RAG_POISONING, ATLAS_FALSE_RAG_ENTRY)
QUESTION_BAIT_CLUSTER = Rule(
    "VA321", "Distinct passages share one question as retrieval bait (PoisonedRAG signature)", Severity.HIGH,
    Confidence.HIGH, _TAGS,
)
CLAIM_CLUSTER = Rule(
    "VA322", "Distinct passages restate one claim about the same names, which their neighbourhood does not make",
    Severity.MEDIUM, Confidence.MEDIUM, _TAGS,
)


#: A retrieval bait is a whole question; shorter question-shaped titles ("Who's Afraid of Virginia Woolf?") are not.
_BAIT_WORDS = 6
_SENTENCE = re.compile(r"(?<=[.!?])(?=\s|[A-Z\"'])")


def row_norms(vectors: npt.NDArray[np.float32], step: int = 65_536) -> npt.NDArray[np.float64]:
    """Euclidean norm of every row, read in slices of the (memmapped) matrix, float64 ``(n,)``."""
    out = np.empty(len(vectors), dtype=np.float64)
    for start in range(0, len(vectors), step):
        out[start : start + step] = np.linalg.norm(np.asarray(vectors[start : start + step], np.float64), axis=1)
    return out


def neighbour_cosines(graph: NeighbourGraph, norms: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Cosine similarity of every graph edge whatever the collection's distance, float64 ``(n, k)``, NaN where
    no neighbour: dot / (|a||b|) for dot, (|a|^2 + |b|^2 - d^2) / (2|a||b|) for Euclidean graphs."""
    idx = graph.indices
    present = idx >= 0
    nb = norms[np.maximum(idx, 0)]
    me = norms[:, None]
    sims = graph.sims.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if graph.distance is Distance.COSINE:
            cos = sims
        elif graph.distance is Distance.DOT:
            cos = sims / (me * nb)
        else:
            cos = (me**2 + nb**2 - sims**2) / (2.0 * me * nb)
    return np.where(present, np.clip(cos, -1.0, 1.0), np.nan)


def _timestamp(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _Texts:
    """Per-row text features, computed on first use (only rows in candidate groups are ever tokenised)."""

    def __init__(self, texts: list[str | None]) -> None:
        self.texts = texts
        self._words: dict[int, frozenset[str]] = {}
        self._questions: dict[int, list[frozenset[str]]] = {}
        self._keys: dict[int, str] = {}
        self._openings: dict[int, tuple[str, ...]] = {}
        self._profiles: dict[int, TermProfile] = {}
        self._claims: dict[int, bool] = {}
        self._headings: dict[int, str | None] = {}
        self._spaced: dict[int, str] = {}

    def content(self, row: int) -> frozenset[str]:
        if row not in self._words:
            self._words[row] = content_words(self.texts[row])
        return self._words[row]

    def questions(self, row: int) -> list[frozenset[str]]:
        """Word sets of the row's question-shaped sentences of >= ``_BAIT_WORDS`` words."""
        if row not in self._questions:
            found = [q.split() for q in question_sentences(self.texts[row])]
            self._questions[row] = [frozenset(q) for q in found if len(q) >= _BAIT_WORDS]
        return self._questions[row]

    def opening(self, row: int) -> tuple[str, ...]:
        """Words of the first sentence (``Q + "." + passage`` keeps the bait there even without a "?")."""
        if row not in self._openings:
            head = _SENTENCE.split((self.texts[row] or "").lstrip()[:400], maxsplit=1)[0]
            self._openings[row] = tuple(words(head))
        return self._openings[row]

    def claim_shaped(self, row: int) -> bool:
        """:func:`~detectors.textsignals.claim_shaped`, cached."""
        if row not in self._claims:
            self._claims[row] = claim_shaped(self.texts[row])
        return self._claims[row]

    def profile(self, row: int) -> TermProfile:
        """Names and numbers the row mentions (:func:`term_profile`)."""
        if row not in self._profiles:
            self._profiles[row] = term_profile(self.texts[row])
        return self._profiles[row]

    def terms(self, row: int) -> frozenset[str]:
        return self.profile(row).terms

    def heading(self, row: int) -> str | None:
        if row not in self._headings:
            self._headings[row] = section_heading(self.texts[row])
        return self._headings[row]

    def spaced(self, row: int) -> str:
        if row not in self._spaced:
            self._spaced[row] = single_spaced(self.texts[row])
        return self._spaced[row]

    def key(self, row: int) -> str:
        if row not in self._keys:
            self._keys[row] = normalised(self.texts[row])
        return self._keys[row]


@dataclass(frozen=True)
class _Arrivals:
    """Per row, the scan a point first appeared in with its current vector and text (0: this scan), and the
    collection's baseline scan (its first: everything arrived there at once, which says nothing)."""

    scans: list[int]
    baseline: int

    @classmethod
    def of(cls, ctx: ScanContext) -> _Arrivals | None:
        changed = ctx.new_or_changed()
        previous = ctx.previous or {}
        known = [s.first_scan_id for s in previous.values() if s.first_scan_id is not None]
        if changed is None or not known:
            return None
        scans = []
        for pid, new in zip(ctx.table.ids, changed, strict=True):
            first = None if new else previous[point_key(pid)].first_scan_id
            scans.append(first if first is not None else 0)
        return cls(scans, min(known))


class PoisonClusterDetector(Detector):
    """The PoisonedRAG signature: several *distinct* passages packed around one claim.

    For each point, its group is the point plus the neighbours (of ``k``) within cosine ``member_sim``,
    counting passages of the same document once (equal doc id, equal normalised text, content-word Jaccard
    >= ``same_doc_jaccard``, or neighbouring chunks of one page — the end of one is verbatim the start of the
    other, as a splitter with overlap writes them: :func:`detectors.textsignals.consecutive_chunks`; or sections
    that open with the same heading line, :func:`detectors.textsignals.section_heading`): benign re-ingestion,
    chunking and one publisher's page structure are not poisoning. (A poisoner who writes his passages as
    overlapping chunks, or under one heading, makes them one document here; each then has to win retrieval
    alone.)

    VA321 (HIGH) score: the number of other group members carrying the same bait as the point: a question-shaped
    sentence of >= 6 words (word sets with Jaccard >= ``question_jaccard``) or the same verbatim opening sentence
    of >= 6 words (PoisonedRAG stores ``Q + "." + passage``, and some target questions lack their "?"); flagged
    at >= ``min_bait_members`` (2, i.e. three distinct passages with one bait). Clean corpora rarely repeat one
    full question inside distinct passages (short question-like titles are ignored); budget 0.1% of a clean
    store.

    VA322 (MEDIUM) is the passage-alone form. Its group keeps only the point's *paraphrase partners*: claim-shaped
    members (a finished sentence of >= 8 words, not a bare title) that name the same things — Jaccard of the
    names and numbers the two passages mention (:func:`term_agreement`, >= 2 shared, inflections matched)
    >= ``entity_agreement`` (0.5) — and are not one template filled with another value (each passage's subject
    holds a name or number the other never mentions: "The 1925 Birthday Honours" / "The 1926 Birthday Honours",
    "Ukraine is a country" / "Pakistan is a country"; :func:`slot_substitution`). Five LLM paraphrases of one
    false claim repeat the question's entities; templated clean passages and topical neighbours each have
    their own subject. Score in [0, 1]: mean of four signals, each clipped to [0, 1]: partners / 4, their mean
    name agreement, novelty of the shared claim (share of the content words used by >= 60% of the point and
    its partners that no other neighbour uses — the wrong answer their neighbourhood does not state), and
    cohesion (mean partner cosine minus the mean cosine of the other neighbours, / 0.2). When timestamps are
    configured, partners ingested within ``burst_seconds`` add 0.1 (an ingestion burst). Provenance from the
    ledger in monitoring scans: a group whose members all first appeared in one scan after the baseline (one
    ingest wave) adds 0.1; one where at least half of the other members arrived in another scan than the point
    (a claim restated over time) loses 0.1 (``provenance`` false turns this off). Flagged at ``claim_score`` 0.5
    with >= ``min_members`` (2) partners.
    A claim that more than ``max_claim_support`` (2) documents of the group's wider neighbourhood (every member's
    neighbours, less the point's tight neighbours and, for a point new in a monitoring scan, less what arrived
    with it) also make — each using >= ``claim_support_share`` (half) of the words >= 60% of the members share —
    is an honest, repeated claim (a news event, a template): reported as INFO with ``evidence.claim_support``.
    Poisoning passages carry a wrong answer their surroundings do not state. Measured
    (benchmarks/embedding_quality.py, 7,017 clean passages incl. the 1,000 hotpotqa passages retrieved for the
    target questions, 5 trials x 70 PoisonedRAG passages stored without their question): recall 0.97 at 0.5%
    FPR, 0.09% of the clean-only store flagged. Missed: poisons that contradict each other (5 members vs 7
    members), or name things only in lower case. See benchmarks/results/embedding.md.
    A point already reported as VA321 is not reported again as VA322.
    """

    name = "poison-cluster"
    version = "5"
    description = "distinct passages packed around one claim, with shared question bait or a contested claim"
    rules = (QUESTION_BAIT_CLUSTER, CLAIM_CLUSTER)
    budgeted_rules = frozenset({"VA321", "VA322"})
    #: chosen leave-one-corpus-out on the dev corpora (benchmarks/alert_floors.py, results/generalization.md):
    #: VA322's is where 98% of the dev PoisonedRAG groups still reach, above the clean tail (0.602)
    alert_floors: ClassVar[dict[str, float]] = {"VA321": 2.0, "VA322": 0.696}
    requires = frozenset({"vectors", "text", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "k": 10, "member_sim": 0.6, "same_doc_jaccard": 0.8, "question_jaccard": 0.6, "min_bait_members": 2,
        "min_members": 2, "entity_agreement": 0.5, "claim_score": 0.5, "burst_seconds": 3600.0, "max_evidence": 10,
        "claim_support_share": 0.5, "max_claim_support": 2, "provenance": True,
    }

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        valid = ctx.valid_mask()
        k = int(self.params["k"])
        if int(valid.sum()) < 3:
            return
        graph = ctx.graph(k).truncated(k)
        cos = neighbour_cosines(graph, row_norms(table.vectors))
        member_sim = float(self.params["member_sim"])
        tight = np.nan_to_num(cos, nan=-1.0) >= member_sim
        candidates = np.flatnonzero(valid & (tight.sum(axis=1) >= int(self.params["min_members"])))
        texts = _Texts(table.texts)
        times = [_timestamp(t) for t in table.timestamps] if ctx.field_map.timestamp else None
        arrivals = _Arrivals.of(ctx) if self.params["provenance"] else None
        for row in candidates:
            finding = self._judge(ctx, int(row), graph, cos[row], tight[row], texts, times, arrivals)
            if finding is not None:
                yield finding

    def _same_document(self, ctx: ScanContext, texts: _Texts, a: int, b: int) -> bool:
        da, db = ctx.table.doc_ids[a], ctx.table.doc_ids[b]
        if ctx.field_map.doc_id and da is not None and da == db:
            return True
        if texts.key(a) == texts.key(b):
            return True
        if jaccard(texts.content(a), texts.content(b)) >= float(self.params["same_doc_jaccard"]):
            return True
        heading = texts.heading(a)
        if heading is not None and heading == texts.heading(b):
            return True  # sections under one heading: one publisher's structure, not independent passages
        return consecutive_chunks(texts.spaced(a), texts.spaced(b), spaced=True)

    def _judge(
        self, ctx: ScanContext, row: int, graph: NeighbourGraph, cos: npt.NDArray[np.float64],
        tight: npt.NDArray[np.bool_], texts: _Texts, times: list[float | None] | None, arrivals: _Arrivals | None,
    ) -> Finding | None:
        table = ctx.table
        if not table.texts[row]:
            return None
        neighbours = graph.indices[row]
        members: list[int] = []
        member_cos: list[float] = []
        others: list[int] = []
        other_cos: list[float] = []
        for j, c, close in zip(neighbours, cos, tight, strict=True):
            j = int(j)
            if j < 0 or not table.texts[j]:
                continue
            if close:
                if self._same_document(ctx, texts, row, j) or any(
                    self._same_document(ctx, texts, m, j) for m in members
                ):
                    continue
                members.append(j)
                member_cos.append(float(c))
            else:
                others.append(j)
                other_cos.append(float(c))
        if len(members) < int(self.params["min_members"]):
            return None
        group = [row, *members]
        show = int(self.params["max_evidence"])
        evidence: dict[str, Any] = {
            "members": [table.ids[m] for m in group][:show],
            "similarities": [round(c, 4) for c in member_cos][:show],
            "graph_exact": graph.exact,
        }
        bait = self._shared_question(row, members, texts)
        if bait:
            evidence["shared_question"] = bait[1]
            evidence["members_with_question"] = [table.ids[m] for m in bait[0]][:show]
            if len(bait[0]) >= int(self.params["min_bait_members"]):
                return Finding(
                    QUESTION_BAIT_CLUSTER, self.name, table.ids[row], float(len(bait[0])),
                    f"{len(bait[0]) + 1} distinct passages carry the same question ({bait[1]!r}) as retrieval bait",
                    float(self.params["min_bait_members"]), evidence, table.tenants[row],
                )
        if not texts.claim_shaped(row):
            return None
        partners, agreement, templates = self._paraphrase_partners(row, members, texts)
        if len(partners) < int(self.params["min_members"]):
            return None
        partner_cos = [c for m, c in zip(members, member_cos, strict=True) if m in partners]
        around = [m for m in members if m not in partners] + others
        around_cos = [c for m, c in zip(members, member_cos, strict=True) if m not in partners] + other_cos
        cohesion = float(np.mean(partner_cos))
        context = float(np.mean(around_cos)) if around_cos else float(np.min(partner_cos)) - 0.2
        group = [row, *partners]
        shared_words = self._shared_words(group, texts)
        novel, claim = self._novel_claim(shared_words, around, texts)
        signals = {
            "paraphrase_partners": min(1.0, len(partners) / 4.0),
            "entity_agreement": agreement,
            "claim_novelty": novel,
            "cohesion_gap": min(1.0, max(0.0, (cohesion - context) / 0.2)),
        }
        score = float(np.mean(list(signals.values())))
        burst = self._burst(group, times)
        together = False
        if burst is not None:
            evidence["ingestion_span_seconds"] = burst
            together = burst <= float(self.params["burst_seconds"])
        arrival = self._arrival(group, arrivals)
        if arrival is not None:
            evidence["arrival"] = arrival
            together = together or arrival["together"]
        if together:
            score = min(1.0, score + 0.1)
        elif arrival is not None and arrival["spread"] >= 0.5:
            score = max(0.0, score - 0.1)
        threshold = float(self.params["claim_score"])
        if score < threshold:
            return None
        support = self._claim_support(graph, group, [row, *members], shared_words, texts, arrivals)
        severity = None
        if len(support) > int(self.params["max_claim_support"]):
            severity = Severity.INFO
            evidence["claim_support"] = [table.ids[m] for m in support][:show]
        shared = sorted(t for t in texts.terms(row) if all(term_in(t, texts.terms(m)) for m in partners))
        # quote only the terms the masked text still shows (the digit groups of a card or phone are terms too)
        visible = set(words(redact_text(texts.texts[row] or "")))
        shared, claim = [t for t in shared if t.casefold() in visible], [t for t in claim if t.casefold() in visible]
        evidence.update({
            "members": [table.ids[m] for m in group][:show],
            "similarities": [round(c, 4) for c in partner_cos][:show],
            "signals": {name: round(v, 3) for name, v in signals.items()},
            "group_cosine": round(cohesion, 4), "neighbourhood_cosine": round(context, 4),
            "shared_entities": shared[:show], "shared_claim_terms": claim[:show],
            "template_neighbours": [table.ids[m] for m in templates][:show],
        })
        message = (
            f"{len(group)} distinct passages name the same things ({', '.join(shared[:4]) or '-'}) packed together "
            f"(cosine {cohesion:.2f} vs {context:.2f} around them) repeating terms their neighbours lack: "
            f"{', '.join(claim[:5]) or '-'}"
        )
        if severity is Severity.INFO:
            message += f"; {len(support)} documents around the group make the same claim (an honest, repeated claim)"
        return Finding(
            CLAIM_CLUSTER, self.name, table.ids[row], score, message, threshold, evidence, table.tenants[row],
            severity=severity,
        )

    def _paraphrase_partners(self, row: int, members: list[int], texts: _Texts) -> tuple[list[int], float, list[int]]:
        """Members that restate the point's claim: they name the same things (:func:`term_agreement` >=
        ``entity_agreement``) and are not the same template filled with another value
        (:func:`slot_substitution`). Returns the partners, their mean agreement and the template members."""
        limit = float(self.params["entity_agreement"])
        partners: list[int] = []
        agreements: list[float] = []
        templates: list[int] = []
        for m in members:
            if not texts.claim_shaped(m):
                continue
            if slot_substitution(texts.profile(row), texts.profile(m)):
                templates.append(m)
                continue
            agreement = term_agreement(texts.terms(row), texts.terms(m))
            if agreement >= limit:
                partners.append(m)
                agreements.append(agreement)
        return partners, float(np.mean(agreements)) if agreements else 0.0, templates

    def _shared_question(self, row: int, members: list[int], texts: _Texts) -> tuple[list[int], str] | None:
        """Members sharing the point's bait: a question sentence (word-set Jaccard >= ``question_jaccard``) or a
        verbatim, question-shaped opening sentence of >= ``_BAIT_WORDS`` words (the question prefix without its
        "?")."""
        limit = float(self.params["question_jaccard"])
        best: tuple[list[int], str] | None = None
        for q in texts.questions(row):
            sharing = [m for m in members if any(jaccard(q, other) >= limit for other in texts.questions(m))]
            if sharing and (best is None or len(sharing) > len(best[0])):
                best = (sharing, _question_text(texts, row, q))
        opening = texts.opening(row)
        # a question prefix without its "?" still opens like a question; a shared boilerplate first sentence
        # ("This file may not be suitable for users of assistive technology") does not
        if len(opening) >= _BAIT_WORDS and question_shaped(opening):
            same = [m for m in members if texts.opening(m) == opening]
            if same and (best is None or len(same) > len(best[0])):
                best = (same, _opening_text(texts, row))
        return best

    @staticmethod
    def _shared_words(group: list[int], texts: _Texts) -> frozenset[str]:
        """The group's claim: content words used by >= 60% of its members (at least two)."""
        counts: dict[str, int] = {}
        for m in group:
            for w in texts.content(m):
                counts[w] = counts.get(w, 0) + 1
        need = max(2, round(0.6 * len(group)))
        return frozenset(w for w, c in counts.items() if c >= need)

    @staticmethod
    def _novel_claim(shared: frozenset[str], others: list[int], texts: _Texts) -> tuple[float, list[str]]:
        """Share of the claim's words that no other neighbour uses (the wrong answer they do not state)."""
        if not shared:
            return 0.0, []
        around: set[str] = set()
        for o in others:
            around |= texts.content(o)
        novel = sorted(w for w in shared if w not in around)
        return len(novel) / len(shared), novel

    def _claim_support(
        self, graph: NeighbourGraph, group: list[int], tight: list[int], shared: frozenset[str], texts: _Texts,
        arrivals: _Arrivals | None,
    ) -> list[int]:
        """Documents of the group's wider neighbourhood (every member's neighbours) that use >=
        ``claim_support_share`` of its claim words: an honest claim about an event or a template is made by many
        documents around it; a poisoning group's wrong answer is made by its members alone. The point's tight
        neighbours (within ``member_sim``) never vouch for it, nor, in a monitoring scan, documents that arrived
        in the same scan as a new point (a wave does not vouch for itself)."""
        if not shared:
            return []
        inside = set(group) | set(tight)
        wider = sorted({int(j) for m in group for j in graph.indices[m] if j >= 0} - inside)
        if arrivals is not None and arrivals.scans[group[0]] == 0:
            wider = [j for j in wider if arrivals.scans[j] != 0]
        need = float(self.params["claim_support_share"]) * len(shared)
        return [j for j in wider if texts.texts[j] and len(shared & texts.content(j)) >= need]

    @staticmethod
    def _arrival(group: list[int], arrivals: _Arrivals | None) -> dict[str, Any] | None:
        """When the group's members first appeared with their current content (monitoring scans only).

        Members that arrived together after the baseline scan (one scan: one ingest batch) are a poisoning wave's
        shape; a group assembled over several scans is a claim restated over time. ``scans`` lists the scan ids
        (0: this scan), ``spread`` is the share of the other members that arrived in another scan than the point."""
        if arrivals is None:
            return None
        seen = [arrivals.scans[m] for m in group]
        mine = seen[0]
        return {
            "scans": sorted(set(seen)),
            "together": mine != arrivals.baseline and all(a == mine for a in seen),
            "spread": round(sum(a != mine for a in seen[1:]) / max(1, len(seen) - 1), 3),
        }

    @staticmethod
    def _burst(group: list[int], times: list[float | None] | None) -> float | None:
        if times is None:
            return None
        stamps = [times[m] for m in group]
        known = [t for t in stamps if t is not None]
        if len(known) < len(group):
            return None
        return float(max(known) - min(known))


def _question_text(texts: _Texts, row: int, question: frozenset[str]) -> str:
    """The bait as quoted in evidence, read from the row's masked text: a question may carry an address or a
    number, and once normalised to words it no longer looks like one to the masker."""
    quoted = question_sentences(redact_text(texts.texts[row] or ""))
    return max(quoted, key=lambda q: jaccard(frozenset(q.split()), question)) if quoted else "(question masked)"


def _opening_text(texts: _Texts, row: int) -> str:
    """The shared opening sentence as quoted in evidence, from the row's masked text (see ``_question_text``)."""
    head = _SENTENCE.split(redact_text((texts.texts[row] or "").lstrip(), limit=400), maxsplit=1)[0]
    return " ".join(words(head))
