"""Near-duplicate embeddings: groups of almost identical vectors, split into benign re-ingestion of one document
and distinct texts that share a vector (a copied or forged embedding)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import (
    ATLAS_POISON_TRAINING,
    OWASP_DATA_POISONING,
    OWASP_VECTOR_WEAKNESS,
    Finding,
    Rule,
)
from auditor.graph import row_norms
from auditor.types import Confidence, Distance, Severity
from detectors.textsignals import (
    VERSION_CONTAINMENT,
    containment,
    content_words,
    jaccard,
    normalised,
    versions_of_one_text,
)

_TAGS = (OWASP_VECTOR_WEAKNESS, OWASP_DATA_POISONING, ATLAS_POISON_TRAINING)
SAME_DOCUMENT = Rule("VA311", "Near-duplicate of the same document (re-ingested)", Severity.INFO, Confidence.HIGH,
                     _TAGS)
DISTINCT_TEXTS = Rule("VA312", "Near-identical vectors with different texts", Severity.MEDIUM, Confidence.MEDIUM,
                      _TAGS)


def near_pairs(
    ctx: ScanContext, k: int, max_distance: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Row pairs ``(i, j)`` (i < j) from the shared graph whose relative distance
    ``||a - b|| / max(||a||, ||b||)`` is at most ``max_distance`` — scale-free, so the same default works for
    cosine, dot and Euclidean collections. Returns rows i, rows j and their relative distances.

    The graph's own similarities and the row norms give every edge's distance without reading vectors; only edges
    within a margin of ``max_distance`` are re-measured from the vectors (a float32 similarity near 1 loses
    digits, the re-measure does not)."""
    graph = ctx.graph(k).truncated(k)
    idx = graph.indices
    n = len(idx)
    rows = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    cols = idx.reshape(-1)
    keep = cols >= 0
    vec = ctx.table.vectors
    if graph.distance is not Distance.MANHATTAN:
        norms = row_norms(vec).astype(np.float64)
        s = graph.sims.reshape(-1).astype(np.float64)
        na, nb = norms[rows], norms[np.maximum(cols, 0)]
        if graph.distance is Distance.EUCLID:
            dist = -s
        else:
            dot = na * nb * s if graph.distance is Distance.COSINE else s
            dist = np.sqrt(np.maximum(na * na + nb * nb - 2.0 * dot, 0.0))
        keep &= dist <= (max_distance + 0.02) * np.maximum(np.maximum(na, nb), 1e-12)
    rows, cols = rows[keep], cols[keep]
    # one int64 key per unordered pair: np.unique on a 1-D key is far faster than on (a, b) rows
    key = np.unique(np.minimum(rows, cols) * n + np.maximum(rows, cols))
    pairs = np.stack([key // n, key % n], axis=1) if len(key) else np.zeros((0, 2), dtype=np.int64)
    if not len(pairs):
        return pairs[:, 0], pairs[:, 1], np.zeros(0, dtype=np.float32)
    rel = np.empty(len(pairs), dtype=np.float32)
    step = 65_536
    for start in range(0, len(pairs), step):
        p = pairs[start : start + step]
        va = np.asarray(vec[p[:, 0]], dtype=np.float32)
        vb = np.asarray(vec[p[:, 1]], dtype=np.float32)
        scale = np.maximum(np.linalg.norm(va, axis=1), np.linalg.norm(vb, axis=1))
        rel[start : start + step] = np.linalg.norm(va - vb, axis=1) / np.maximum(scale, 1e-12)
    close = rel <= max_distance
    return pairs[close, 0], pairs[close, 1], rel[close]


class NearDuplicateDetector(Detector):
    """Groups of near-identical vectors (connected components of graph edges within ``max_distance``).

    Score: ``1 - d`` where d is the smallest relative distance ``||a - b|| / max(||a||, ||b||)`` from the point
    to a group partner (1.0 = identical); threshold ``1 - max_distance``. ``max_distance`` 0.25 equals cosine
    >= 0.969 for unit vectors: on all-MiniLM-L6-v2 a passage re-ingested with mojibake, an added source line or
    cut to 80% stays at cosine 0.974-0.995 (whitespace and case changes give the *same* vector: VA105), while
    paraphrases of one claim (PoisonedRAG passages) stay below; budget: the clean dev corpora's own duplicate
    passages only (benchmarks/results/embedding.md).

    VA311 (INFO): every partner is the same document: equal ``doc_id`` (when configured), or normalised texts equal
    or with content-word Jaccard >= ``same_text_jaccard`` (0.8) whatever their doc ids. VA312 (MEDIUM): some partner
    carries a different text (a forged vector, or text swapped under a kept vector). Bit-identical copies alone are
    left to the integrity detector (VA105); a group mixing copies and near-copies lists the copies in evidence
    (``exact_copies``) and is reported once here. When every other text shares at least ``version_containment``
    (0.6) of the smaller text's content words, they are *versions* of one document (a page edited, a story re-sent
    with a paragraph more): VA311 with ``evidence["versions"]``, not "different texts behind one vector". The same
    holds for texts whose wording is shared once numbers are set aside (``evidence["numbers_differ"]``): one table,
    earnings brief or form filled with other values, which sentence embeddings barely tell apart (a changed fact
    beside its original is the conflicting-twins question, not a forged vector). A forged or swapped vector brings
    a text that shares next to nothing with its twin's. """

    name = "near-duplicate"
    version = "3"
    description = "near-identical vectors: re-ingested documents (info) and distinct texts sharing a vector"
    rules = (SAME_DOCUMENT, DISTINCT_TEXTS)
    budgeted_rules = frozenset({"VA312"})
    #: chosen leave-one-corpus-out on the dev corpora (benchmarks/alert_floors.py, results/generalization.md)
    alert_floors: ClassVar[dict[str, float]] = {"VA312": 0.75}
    requires = frozenset({"vectors", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "k": 10, "max_distance": 0.25, "same_text_jaccard": 0.8, "version_containment": VERSION_CONTAINMENT,
        "max_group_evidence": 20,
    }

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        n = len(table)
        if int(ctx.valid_mask().sum()) < 2:
            return
        max_distance = float(self.params["max_distance"])
        rows_a, rows_b, rel = near_pairs(ctx, int(self.params["k"]), max_distance)
        if not len(rows_a):
            return
        adjacency = coo_matrix((np.ones(len(rows_a)), (rows_a, rows_b)), shape=(n, n))
        _, labels = connected_components(adjacency, directed=False)
        closest = np.full(n, np.inf)
        np.minimum.at(closest, rows_a, rel)
        np.minimum.at(closest, rows_b, rel)
        members: dict[int, list[int]] = defaultdict(list)
        for row in np.unique(np.concatenate([rows_a, rows_b])):
            members[int(labels[row])].append(int(row))
        have_text = bool(ctx.field_map.text)
        for group in members.values():
            if len({table.vector_hashes[r] for r in group}) < 2:
                continue  # only bit-identical copies: VA105 of the integrity detector
            yield from self._group_findings(ctx, group, closest, have_text)

    def _group_findings(
        self, ctx: ScanContext, group: list[int], closest: npt.NDArray[np.float64], have_text: bool
    ) -> Iterable[Finding]:
        table = ctx.table
        keys = {r: normalised(table.texts[r]) for r in group}
        words = {r: content_words(table.texts[r]) for r in group}
        limit = float(self.params["same_text_jaccard"])
        version_limit = float(self.params["version_containment"])
        max_ev = int(self.params["max_group_evidence"])
        ids = [table.ids[r] for r in group]
        by_hash: dict[str, list[Any]] = defaultdict(list)
        for r in group:
            by_hash[table.vector_hashes[r]].append(table.ids[r])
        exact = [g for g in by_hash.values() if len(g) > 1]

        def same_document(a: int, b: int) -> bool:
            da, db = table.doc_ids[a], table.doc_ids[b]
            if ctx.field_map.doc_id and da is not None and da == db:
                return True
            if keys[a] == keys[b]:
                return True
            return jaccard(words[a], words[b]) >= limit

        for r in group:
            partners = [o for o in group if o != r]
            if have_text:
                distinct = [o for o in partners if not same_document(r, o)]
            else:
                distinct = [o for o in partners if ctx.field_map.doc_id and table.doc_ids[r] != table.doc_ids[o]]
            versions = have_text and bool(distinct) and all(
                versions_of_one_text(words[r], words[o], version_limit) for o in distinct
            )
            numbers_only = versions and any(containment(words[r], words[o]) < version_limit for o in distinct)
            rule = DISTINCT_TEXTS if distinct and not versions else SAME_DOCUMENT
            score = 1.0 - float(closest[r])
            evidence: dict[str, Any] = {
                "group_size": len(group),
                "group": ids[:max_ev],
                "closest_relative_distance": round(float(closest[r]), 5),
                "text_known": have_text,
            }
            if exact:
                evidence["exact_copies"] = [g[:max_ev] for g in exact]
            if distinct:
                evidence["different_text"] = [table.ids[o] for o in distinct][:max_ev]
                evidence["text_overlap"] = [round(jaccard(words[r], words[o]), 3) for o in distinct][:max_ev]
                message = (f"vector nearly identical to {len(distinct)} point(s) with a different text "
                           f"(group of {len(group)})")
            if numbers_only:  # the same wording with other values: one template (a table, an earnings brief)
                evidence["versions"] = True
                evidence["numbers_differ"] = True
                message = (f"near-duplicate of a text with the same wording and other numbers (a table or form "
                           f"filled with other values; group of {len(group)})")
            elif versions:  # every other text shares most of this one's words: an edit of the same document
                evidence["versions"] = True
                message = f"near-duplicate of another version of the same document (group of {len(group)})"
            elif not distinct:
                message = f"near-duplicate of the same document: group of {len(group)}"
            yield Finding(rule, self.name, table.ids[r], score, message, 1.0 - float(self.params["max_distance"]),
                          evidence, table.tenants[r])
