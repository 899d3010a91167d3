"""Retrieval dominance without a query log: a passage retrieved by far more of the collection's own pseudo-queries
(short spans sampled from its documents, re-embedded) than its neighbours are — the aim of GASLITE and of
corpus-poisoning token sequences, which are optimised to enter the top-k of many queries."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.errors import ConfigError, DetectorError
from auditor.findings import Finding, Rule
from auditor.types import Confidence, Severity
from detectors.hubs import RETRIEVAL_TAGS, query_top
from detectors.outliers import robust_z, tail_quantile
from detectors.textsignals import token_soup

PSEUDO_QUERY_DOMINANT = Rule(
    "VA334", "Retrieved by many of the collection's own pseudo-queries, far beyond its neighbours", Severity.LOW,
    Confidence.LOW, RETRIEVAL_TAGS,
)
OPTIMISED_DOMINANT = Rule(
    "VA335", "Dominates the collection's own pseudo-queries and its text is a token soup (GASLITE / corpus "
    "poisoning)", Severity.MEDIUM, Confidence.MEDIUM, RETRIEVAL_TAGS,
)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_soup(text: str | None, min_words: int) -> float:
    """The token-soup score of the whole text or of its most soup-like sentence of >= ``min_words`` words on one
    line, whichever is higher. A GASLITE passage is the attacker's fluent sentence and then the optimised trigger:
    its fluent part dilutes the whole text's score (0.24-0.39), its trigger alone reads like a corpus-poisoning
    sequence (0.5-0.9). Lines of tables, lists and wire briefs are judged only as the whole text, whose layout
    :func:`detectors.textsignals.token_soup` understands."""
    best = token_soup(text)
    for part in _SENTENCE_END.split(text or ""):
        if "\n" not in part.strip() and len(part.split()) >= min_words:
            best = max(best, token_soup(part))
    return best


def pseudo_queries(
    texts: list[str | None], rows: npt.NDArray[np.intp], limit: int, min_words: int, max_words: int, seed: int,
) -> tuple[npt.NDArray[np.int64], list[str]]:
    """One span of ``min_words``-``max_words`` consecutive words from each of a seeded sample of at most ``limit``
    of ``rows`` (texts shorter than ``min_words`` words give none): the source row of each span (int64, ascending)
    and the spans. Spans, not whole sentences: short like a user's query, and a document's sentence lengths (wire
    tables, list items) do not decide how many words a query has."""
    rng = random.Random(f"{seed}:dominance")
    chosen = sorted(rng.sample(range(len(rows)), limit)) if len(rows) > limit else range(len(rows))
    sources: list[int] = []
    spans: list[str] = []
    for i in chosen:
        words = (texts[int(rows[i])] or "").split()
        if len(words) < min_words:
            continue
        length = min(len(words), rng.randint(min_words, max_words))
        start = rng.randrange(len(words) - length + 1)
        sources.append(int(rows[i]))
        spans.append(" ".join(words[start : start + length]))
    return np.asarray(sources, dtype=np.int64), spans


class DominanceDetector(Detector):
    """Passages that the collection's own pseudo-queries retrieve far more often than their neighbours.

    1. **Pseudo-queries**: from a seeded sample of at most ``max_queries`` (2,000) documents with text, one span
       of ``min_words``-``max_words`` (6-14) consecutive words each, embedded with the scan's embedder (the model
       the collection was embedded with: ``--model``). Cost: one embedding of ``max_queries`` short texts and an
       exact top-``k`` search of the collection per span (blocks of the memmap).
    2. **Hits**: for every point, how many spans retrieve it in their top ``k`` (10), never counting the span's own
       document. Its robust z against the collection (median, spread of the upper tail at ``tail_quantile`` 0.9,
       at least ``min_scale`` 1: :func:`detectors.outliers.robust_z`) is the score.
    3. **Against its neighbours**: the point's hits over the median hits of its ``k`` nearest neighbours in the
       shared graph, (hits + 1) / (median + 1). A prototypical document of a dense region (a generic definition,
       an earnings brief among hundreds) is retrieved often, and so are its neighbours; a passage optimised
       towards the centre of many queries is retrieved far more than the documents around it.

    A point with z >= ``z`` (5), ratio >= ``neighbour_ratio`` (3.5) and >= ``min_hits`` (5) hits is reported:
    VA335 (MEDIUM) when its text scores >= ``soup`` (0.4) on the token-soup scale of
    :func:`detectors.textsignals.token_soup`, as a whole or in its most soup-like sentence (:func:`sentence_soup`)
    — what gradient optimisation over a vocabulary leaves behind, in GASLITE's trigger after the attacker's
    sentence and in a corpus-poisoning sequence — else VA334 (LOW): dominance alone, in fluent text, is also what
    an honest prototypical page does (Spanish encyclopaedia entries under an English model reach z 34). On the
    eleven development corpora (2,000-document samples) the clean candidates score <= 0.29 (a PubMed methods
    sentence, a Spanish list of professions), the generated GASLITE and corpus-poisoning passages 0.52-0.9; 0.4
    leaves a margin to both (a larger web-evidence sample later showed a citation list at 0.42: MEDIUM); gates
    chosen on the clean corpora alone (0.3) or on one family alone (0.5-0.6) were scored held out
    (benchmarks/results/attack-recall.md).
    Both rules are budgeted (``alert_floors``: VA335 at its threshold, since no clean development corpus has a
    VA335 candidate; VA334 at 40, above every clean one, so that fluent dominance stays within the review
    budget). Opt-in (``--detector dominance``): the re-embedding costs seconds to minutes, and the gates were
    chosen on three host corpora with four attacks per family (benchmarks/results/attack-recall.md). Needs a text
    field (skipped with a note without one) and at least ``min_documents`` (50) spans. At millions of points the
    sample stays ``max_queries``: a passage that dominates one narrow concept of a few dozen documents is then
    rarely sampled, one that dominates a share of all queries (what these optimised passages do here) still is."""

    name = "dominance"
    version = "2"
    description = "passages retrieved by many of the collection's own pseudo-queries, far beyond their neighbours"
    rules = (PSEUDO_QUERY_DOMINANT, OPTIMISED_DOMINANT)
    requires = frozenset({"vectors", "text", "embedder", "graph"})
    enabled_by_default = False
    budgeted_rules = frozenset({"VA334", "VA335"})
    alert_floors: ClassVar[dict[str, float]] = {"VA334": 40.0, "VA335": 5.0}
    defaults: ClassVar[dict[str, Any]] = {
        "k": 10, "max_queries": 2000, "min_words": 6, "max_words": 14, "z": 5.0, "tail_quantile": 0.9,
        "min_scale": 1.0, "neighbour_ratio": 3.5, "min_hits": 5, "soup": 0.4, "soup_sentence_words": 12,
        "min_documents": 50,
        "max_evidence": 10,
    }

    def begin(self, ctx: ScanContext) -> None:
        tail_quantile(self.name, self.params["tail_quantile"])
        p = self.params
        for key in ("k", "max_queries", "min_words", "min_documents", "min_hits"):
            if int(p[key]) < 1:
                raise DetectorError(f"parameter {key!r} of detector {self.name!r} must be at least 1, got {p[key]}",
                                    hint=f"write it like `{key} = {self.defaults[key]}` under [detectors.{self.name}]")
        if int(p["max_words"]) < int(p["min_words"]):
            raise DetectorError(f"parameter 'max_words' of detector {self.name!r} is below 'min_words'",
                                hint=f"write it like `max_words = {self.defaults['max_words']}`")

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table, p = ctx.table, self.params
        valid = ctx.valid_mask()
        with_text = np.flatnonzero(valid & np.fromiter((bool(t and t.strip()) for t in table.texts), dtype=bool,
                                                       count=len(table.texts)))
        sources, spans = pseudo_queries(table.texts, with_text, int(p["max_queries"]), int(p["min_words"]),
                                        int(p["max_words"]), ctx.settings.seed)
        k = int(p["k"])
        if len(spans) < int(p["min_documents"]) or int(valid.sum()) <= k + 1:
            ctx.note(f"dominance: skipped, {len(spans)} document(s) with >= {p['min_words']} words "
                     f"(needs {p['min_documents']})")
            return
        started = time.perf_counter()
        embedded = ctx.embedder().encode(spans, show_progress=True, desc="pseudo-queries")
        if embedded.shape[1] != ctx.info.dim:
            raise ConfigError(
                f"the embedder gives {embedded.shape[1]}-d vectors, the collection has {ctx.info.dim}",
                hint="give --model the model the collection was embedded with",
            )
        top = query_top(table.vectors, valid, embedded, ctx.info.distance, k, exclude=sources)
        hits = np.bincount(top[top >= 0], minlength=len(table.vectors)).astype(np.int64)
        raw = hits.astype(np.float64)
        raw[~valid] = np.nan
        z, median, scale = robust_z(raw, float(p["min_scale"]), tail_quantile(self.name, p["tail_quantile"]))
        z = np.nan_to_num(z, nan=-np.inf)
        idx = ctx.graph(k).indices[:, :k]
        neighbour_hits = np.where(idx >= 0, hits[np.maximum(idx, 0)], np.nan)
        around = np.nan_to_num(np.nanmedian(np.where(np.isnan(neighbour_hits).all(axis=1, keepdims=True), 0.0,
                                                     neighbour_hits), axis=1))
        ratio = (hits + 1.0) / (around + 1.0)
        candidates = np.flatnonzero((z >= float(p["z"])) & (ratio >= float(p["neighbour_ratio"]))
                                    & (hits >= int(p["min_hits"])))
        n_valid = int(valid.sum())
        expected = len(spans) * min(k, n_valid) / max(n_valid, 1)
        sampled = min(int(p["max_queries"]), len(with_text))
        ctx.note(f"dominance: {len(spans):,} pseudo-queries (a span of {p['min_words']}-{p['max_words']} words from "
                 f"each of a seeded sample of {sampled:,} of {len(with_text):,} documents with text, seed "
                 f"{ctx.settings.seed}; shorter texts give none) embedded and searched (top {k}) in "
                 f"{time.perf_counter() - started:.1f} s; "
                 f"hits median {median:g}, scale {scale:.3g}; {len(candidates)} point(s) at z >= {p['z']:g} and "
                 f">= {p['neighbour_ratio']:g}x their neighbours")
        show = int(p["max_evidence"])
        for row in candidates[np.argsort(-z[candidates], kind="stable")]:
            retrieving = np.flatnonzero((top == row).any(axis=1))
            soup = sentence_soup(table.texts[row], int(p["soup_sentence_words"]))
            optimised = soup >= float(p["soup"])
            evidence = {
                "pseudo_queries": len(spans), "query_k": k, "retrieved_by": int(hits[row]),
                "share": round(float(hits[row]) / len(spans), 4), "expected_by_chance": round(expected, 4),
                "robust_z": round(float(z[row]), 3), "median_hits": median, "scale": round(scale, 4),
                "neighbour_median_hits": float(around[row]), "neighbour_ratio": round(float(ratio[row]), 3),
                "token_soup": round(soup, 3),
                "queries_from": [table.ids[int(s)] for s in sources[retrieving[:show]]],
            }
            said = (f"retrieved in the top {k} of {hits[row]} of {len(spans):,} pseudo-queries from the collection's "
                    f"own documents ({hits[row] / max(expected, 1e-12):.0f}x chance, {ratio[row]:.1f}x its "
                    "neighbours' median)")
            yield Finding(OPTIMISED_DOMINANT if optimised else PSEUDO_QUERY_DOMINANT, self.name, table.ids[row],
                          float(z[row]), said + (f"; its text reads as a token soup ({soup:.2f})" if optimised else ""),
                          float(p["z"]), evidence, table.tenants[row])
