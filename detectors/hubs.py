"""Retrieval hubs: points that appear in the nearest-neighbour lists of abnormally many others (k-occurrence
skew), optionally measured directly against real queries; the signature of passages optimised to be retrieved."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.errors import ConfigError
from auditor.findings import (
    ATLAS_FALSE_RAG_ENTRY,
    ATLAS_RAG_POISONING,
    OWASP_DATA_POISONING,
    OWASP_VECTOR_WEAKNESS,
    Finding,
    Rule,
)
from auditor.graph import gather, prepare
from auditor.types import Confidence, Distance, Severity
from detectors.outliers import robust_z, tail_quantile
from detectors.textsignals import token_soup

#: the tags of every retrieval-dominance rule (hubs here, pseudo-query dominance in detectors/dominance.py)
RETRIEVAL_TAGS = (OWASP_VECTOR_WEAKNESS, OWASP_DATA_POISONING, ATLAS_RAG_POISONING, ATLAS_FALSE_RAG_ENTRY)
K_OCCURRENCE_HUB = Rule("VA331", "Retrieval hub: in the neighbour lists of abnormally many points", Severity.LOW,
                        Confidence.LOW, RETRIEVAL_TAGS)
QUERY_DOMINANT = Rule("VA332", "Retrieved for an abnormal share of real queries", Severity.MEDIUM, Confidence.MEDIUM,
                      RETRIEVAL_TAGS)
ADVERSARIAL_HUB = Rule("VA333", "Hub whose text is a token soup (optimised adversarial passage)", Severity.MEDIUM,
                       Confidence.MEDIUM, RETRIEVAL_TAGS)


def query_top(
    vectors: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_], queries: npt.NDArray[np.float32],
    distance: Distance, k: int, exclude: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """The rows each of ``queries`` (float32 ``(q, d)``) retrieves in its top ``k``, exact, read in blocks of the
    (memmapped) collection: int64 ``(q, min(k, valid rows))``, in no particular order within a query. With
    ``exclude`` (int64 ``(q,)``, -1 for none) query ``i`` never retrieves row ``exclude[i]`` (its own document)."""
    q = prepare(queries, Distance.COSINE if distance is Distance.COSINE else Distance.DOT)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    q_sq = (q * q).sum(axis=1)
    step = 32_768
    for start in range(0, len(vectors), step):
        rows = np.arange(start, min(len(vectors), start + step))
        rows = rows[valid[rows]]
        if not len(rows):
            continue
        block = gather(vectors, rows, distance)
        s = q @ block.T
        if distance in (Distance.EUCLID, Distance.MANHATTAN):
            s = -np.sqrt(np.maximum(q_sq[:, None] + (block * block).sum(axis=1)[None, :] - 2.0 * s, 0.0))
        if exclude is not None:
            where = np.searchsorted(rows, exclude)
            hit = np.flatnonzero((where < len(rows)) & (rows[np.minimum(where, len(rows) - 1)] == exclude))
            s[hit, where[hit]] = -np.inf
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(rows, s.shape)], axis=1)
        kk = min(k, all_s.shape[1])
        top = np.argpartition(-all_s, kk - 1, axis=1)[:, :kk]
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_i = np.take_along_axis(all_i, top, axis=1)
    if exclude is not None:  # a query whose only candidate was its own row retrieves nothing there
        best_i = np.where(np.isfinite(best_s), best_i, -1)
    return best_i


def query_hits(
    vectors: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_], queries: npt.NDArray[np.float32],
    distance: Distance, k: int, exclude: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """For every row, how many of ``queries`` (float32 ``(q, d)``) retrieve it in their top ``k``
    (:func:`query_top`), int64 ``(n,)``."""
    top = query_top(vectors, valid, queries, distance, k, exclude)
    return np.bincount(top[top >= 0].reshape(-1), minlength=len(vectors)).astype(np.int64)


def _first_listers(
    idx: npt.NDArray[np.int64], distinct: npt.NDArray[np.bool_], targets: npt.NDArray[np.int64], show: int
) -> dict[int, list[int]]:
    """For each target row, the first ``show`` rows (in row order) whose neighbour list holds it, in one pass over
    the graph (a scan per target was O(targets x n x k): hours at 1M points)."""
    hit = distinct & np.isin(idx, targets)
    lister, column = np.nonzero(hit)
    listed = idx[lister, column]
    order = np.lexsort((lister, listed))
    listed, lister = listed[order], lister[order]
    # rank of each entry inside its target's run; keep the first `show` (a row lists a target at most once)
    starts = np.flatnonzero(np.r_[True, listed[1:] != listed[:-1]])
    rank = np.arange(len(listed)) - np.repeat(starts, np.diff(np.r_[starts, len(listed)]))
    keep = rank < show
    out: dict[int, list[int]] = {}
    for target, row in zip(listed[keep].tolist(), lister[keep].tolist(), strict=True):
        out.setdefault(target, []).append(row)
    return out


def read_queries(path: str | Path, limit: int) -> list[str]:
    """Non-empty lines of a UTF-8 queries file (one query per line), at most ``limit``."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except OSError as e:
        raise ConfigError(f"cannot read queries file {str(path)!r}: {e.strerror}",
                          hint="give --queries a text file with one query per line") from e
    queries = [line for line in lines if line]
    return queries[:limit]


class HubDetector(Detector):
    """Hubs of the neighbour graph, and documents that dominate retrieval for real queries.

    VA331 score: the k-occurrence N_k (how many points list this one among their ``k`` nearest), reported as its
    robust z against the collection, (N_k - median) / max(1.4826 MAD, ``min_scale``, the spread of the upper tail
    (q90 - median) / 1.2816, :func:`detectors.outliers.robust_z`; ``tail_quantile`` 0.9, 0: the MAD alone); flagged
    at ``z`` 6.0 *and* N_k >= ``min_ratio`` (5) x k (the mean of N_k is exactly k). Collections of short templated
    texts (wire briefs, one-line encyclopaedia entries, recipe steps) have a long natural hubness tail: against the
    MAD alone their ordinary hubs sat at z 6-10 (16 of 3,000 Spanish Wikipedia entries, 11 Reuters briefs; 2 and
    2 against the tail; chosen after reading those corpora). Hubness is natural in high dimension, so the rule is
    LOW; its budget is 0.2% of a clean store (the dev corpora flag 0-0.1%, benchmarks/results/embedding.md). VA333
    (MEDIUM): a point with hub z >= ``soup_z`` (3.0) whose text scores >= ``soup`` (0.5) on the token-soup scale of
    :func:`detectors.textsignals.token_soup` — gradient-crafted corpus-poisoning passages are both; HIGH when the
    point is also a hub by VA331's own bar (z >= ``z`` and N_k >= ``min_ratio`` x k). Two weak signals together
    (a moderate hub, a heuristic text score) alert; they are not a certainty: short templated briefs ("Qtly div 21
    cts vs 16 cts prior"), short sentences of another language and list-like snippets also sit at z 3-5 and score
    0.5-0.6. VA332 (needs
    ``queries_file``, one query per line, embedded with the scan's embedder): share of queries that retrieve the
    point in their top ``query_k``; flagged at >= ``min_query_share`` (5%) of the queries, at least ``min_queries``
    (3) of them, and >= 10x the share expected by chance (k / n). """

    name = "hub"
    version = "4"
    description = "k-occurrence hubs, token-soup hubs, and retrieval dominance over a query log"
    rules = (K_OCCURRENCE_HUB, QUERY_DOMINANT, ADVERSARIAL_HUB)
    budgeted_rules = frozenset({"VA331", "VA333"})
    #: chosen leave-one-corpus-out on the dev corpora (benchmarks/alert_floors.py, results/generalization.md)
    alert_floors: ClassVar[dict[str, float]] = {"VA331": 6.0, "VA333": 3.0}
    requires = frozenset({"vectors", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "k": 10, "z": 6.0, "min_ratio": 5.0, "soup_z": 3.0, "soup": 0.5, "min_scale": 1.0, "tail_quantile": 0.9,
        "queries_file": None, "query_k": 10, "min_query_share": 0.05, "min_queries": 3, "max_queries": 100_000,
        "max_evidence": 10,
    }
    param_types: ClassVar[dict[str, type]] = {"queries_file": str}

    def begin(self, ctx: ScanContext) -> None:
        tail_quantile(self.name, self.params["tail_quantile"])

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        valid = ctx.valid_mask()
        k = int(self.params["k"])
        if int(valid.sum()) > k + 1:
            yield from self._graph_hubs(ctx, valid, k)
        queries_file = self.params["queries_file"] or ctx.settings.extra.get("queries_file")
        if queries_file and valid.any():
            yield from self._query_dominance(ctx, valid, str(queries_file))

    def _graph_hubs(self, ctx: ScanContext, valid: npt.NDArray[np.bool_], k: int) -> Iterable[Finding]:
        table = ctx.table
        graph = ctx.graph(k)
        idx = graph.indices[:, :k]
        # edges between bit-identical vectors say nothing about retrieval: ties are listed in arbitrary order
        codes: dict[str, int] = {}
        copy_class = np.fromiter((codes.setdefault(h, len(codes)) for h in table.vector_hashes), dtype=np.int64,
                                 count=len(table.vector_hashes))
        distinct = (idx >= 0) & (copy_class[np.maximum(idx, 0)] != copy_class[:, None])
        occurrence = np.bincount(idx[distinct], minlength=len(idx)).astype(np.int64)
        raw = occurrence.astype(np.float64)
        raw[~valid] = np.nan
        z, median, _scale = robust_z(raw, float(self.params["min_scale"]))
        z = np.nan_to_num(z, nan=-np.inf)
        # VA331 against the spread of the collection's own hubness tail; VA333 keeps the MAD (its text is the
        # second signal, and gradient-crafted passages are moderate hubs)
        tail = tail_quantile(self.name, self.params["tail_quantile"])
        z_tail, _, _ = robust_z(raw, float(self.params["min_scale"]), tail)
        z_tail = np.nan_to_num(z_tail, nan=-np.inf)
        limit, soup_limit = float(self.params["z"]), float(self.params["soup_z"])
        min_count = float(self.params["min_ratio"]) * k
        show = int(self.params["max_evidence"])
        candidates = np.flatnonzero((z >= min(limit, soup_limit)) & (occurrence >= min(min_count, 2 * k)))
        listers = _first_listers(idx, distinct, candidates, show)
        for row in candidates:
            soup = token_soup(table.texts[row]) if ctx.field_map.text else 0.0
            listed_by = listers.get(int(row), [])
            evidence = {
                "k": k, "k_occurrence": int(occurrence[row]), "times_average": round(float(occurrence[row]) / k, 2),
                "robust_z": round(float(z[row]), 3), "median_occurrence": median, "token_soup": round(soup, 3),
                "listed_by": [table.ids[j] for j in listed_by], "graph_exact": graph.exact,
            }
            strong_hub = z_tail[row] >= limit and occurrence[row] >= min_count
            if soup >= float(self.params["soup"]) and z[row] >= soup_limit:
                yield Finding(ADVERSARIAL_HUB, self.name, table.ids[row], float(z[row]),
                              f"in the {k}-NN lists of {occurrence[row]} points and its text reads as a token soup "
                              f"({soup:.2f})", soup_limit, evidence, table.tenants[row],
                              severity=Severity.HIGH if strong_hub else None)
            elif strong_hub:
                evidence["robust_z"], evidence["robust_z_mad"] = round(float(z_tail[row]), 3), evidence["robust_z"]
                yield Finding(K_OCCURRENCE_HUB, self.name, table.ids[row], float(z_tail[row]),
                              f"in the {k}-NN lists of {occurrence[row]} points ({occurrence[row] / k:.1f}x the "
                              f"average)", limit, evidence, table.tenants[row])

    def _query_dominance(self, ctx: ScanContext, valid: npt.NDArray[np.bool_], path: str) -> Iterable[Finding]:
        table = ctx.table
        queries = read_queries(path, int(self.params["max_queries"]))
        if not queries:
            ctx.note(f"hub: queries file {path!r} has no queries")
            return
        embedded = ctx.embedder().encode(queries)
        if embedded.shape[1] != ctx.info.dim:
            raise ConfigError(
                f"the embedder gives {embedded.shape[1]}-d query vectors, the collection has {ctx.info.dim}",
                hint="give --model the model the collection was embedded with",
            )
        query_k = int(self.params["query_k"])
        hits = query_hits(table.vectors, valid, embedded, ctx.info.distance, query_k)
        n_valid = int(valid.sum())
        expected = len(queries) * min(query_k, n_valid) / max(n_valid, 1)
        share = hits / len(queries)
        need = max(float(self.params["min_query_share"]) * len(queries), float(self.params["min_queries"]),
                   10.0 * expected)
        ctx.note(f"hub: measured retrieval of {n_valid} points by {len(queries)} queries (top {query_k})")
        for row in np.flatnonzero(hits >= need):
            yield Finding(
                QUERY_DOMINANT, self.name, table.ids[row], float(share[row]),
                f"retrieved in the top {query_k} of {hits[row]} of {len(queries)} queries "
                f"({share[row]:.1%}, {hits[row] / max(expected, 1e-12):.0f}x chance)",
                need / len(queries),
                {"queries": len(queries), "retrieved_by": int(hits[row]), "share": round(float(share[row]), 4),
                 "expected_by_chance": round(expected, 4), "query_k": query_k,
                 "token_soup": round(token_soup(table.texts[row]), 3) if ctx.field_map.text else None},
                table.tenants[row],
            )
