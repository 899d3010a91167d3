"""Embedding outliers: points far from their k nearest neighbours (or with a high local outlier factor),
judged against the whole collection and against the point's own tenant."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.errors import DetectorError
from auditor.findings import (
    ATLAS_POISON_TRAINING,
    OWASP_DATA_POISONING,
    OWASP_VECTOR_WEAKNESS,
    Finding,
    Rule,
)
from auditor.graph import EXACT_LIMIT, NeighbourGraph, group_search, search_within, within_group
from auditor.types import Confidence, Severity

_TAGS = (OWASP_VECTOR_WEAKNESS, OWASP_DATA_POISONING, ATLAS_POISON_TRAINING)
COLLECTION_OUTLIER = Rule("VA301", "Embedding far from the rest of the collection", Severity.LOW, Confidence.MEDIUM,
                          _TAGS)
TENANT_OUTLIER = Rule("VA302", "Embedding far from the rest of its tenant", Severity.LOW, Confidence.MEDIUM, _TAGS)


def knn_distance(graph: NeighbourGraph, k: int) -> npt.NDArray[np.float64]:
    """Mean dissimilarity to the ``k`` nearest neighbours, float64 ``(n,)``; NaN where a point has none."""
    dist = graph.truncated(k).distances().astype(np.float64)
    present = graph.truncated(k).indices >= 0
    dist[~present] = np.nan
    with np.errstate(invalid="ignore"):
        counts = present.sum(axis=1)
        out = np.where(counts > 0, np.nansum(np.where(present, dist, 0.0), axis=1) / np.maximum(counts, 1), np.nan)
    return out


def local_outlier_factor(graph: NeighbourGraph, k: int) -> npt.NDArray[np.float64]:
    """LOF (Breunig et al. 2000) from the shared graph, float64 ``(n,)``; ~1 inside a cluster, higher = outlier.

    Hand-written (a few array lines) because scikit-learn's LocalOutlierFactor would search the neighbours again
    or need a sparse precomputed matrix of non-negative metric distances, which a dot-product graph is not;
    dissimilarities are shifted to be >= 0 for that reason.
    """
    g = graph.truncated(k)
    idx = g.indices
    present = idx >= 0
    dist = g.distances().astype(np.float64)
    finite = dist[present]
    shift = -min(0.0, float(finite.min())) if finite.size else 0.0
    dist = np.where(present, dist + shift, np.nan)
    counts = present.sum(axis=1)
    last = np.maximum(counts - 1, 0)
    k_dist = np.where(counts > 0, dist[np.arange(len(idx)), last], np.nan)
    safe = np.maximum(idx, 0)
    reach = np.where(present, np.maximum(k_dist[safe], dist), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_reach = np.nanmean(np.where(present, reach, np.nan), axis=1) if idx.shape[1] else np.full(len(idx), np.nan)
        lrd = 1.0 / np.maximum(mean_reach, 1e-12)
        neighbour_lrd = np.nanmean(np.where(present, lrd[safe], np.nan), axis=1) if idx.shape[1] else lrd
        return np.asarray(neighbour_lrd / lrd, dtype=np.float64)


def robust_z(
    values: npt.NDArray[np.float64], min_scale: float, tail_quantile: float | None = None,
) -> tuple[npt.NDArray[np.float64], float, float]:
    """``(x - median) / scale`` over the finite values (NaN stays NaN), ``scale`` = max(1.4826 * MAD,
    ``min_scale``) and, with ``tail_quantile`` q, the spread of the upper tail, (quantile q - median) / z_q, where
    z_q is the standard normal's q-quantile (both equal the standard deviation of a normal bulk).

    The MAD sees only the densest half: a collection that is mostly one template (100 bank e-mails, 80 of them
    filled forms) has a tiny MAD, and every free-form e-mail then sits "5 deviations" out. The upper-tail spread
    measures how far the collection's own ordinary documents reach; a planted share below 1 - q cannot move it."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.full(len(values), np.nan), float("nan"), float("nan")
    median = float(np.median(finite))
    scale = max(1.4826 * float(np.median(np.abs(finite - median))), min_scale)
    if tail_quantile is not None:
        tail = (float(np.quantile(finite, tail_quantile)) - median) / NormalDist().inv_cdf(tail_quantile)
        scale = max(scale, tail)
    return (values - median) / scale, median, scale


def tail_quantile(detector: str, value: Any) -> float | None:
    """The ``tail_quantile`` parameter of ``detector`` for :func:`robust_z`: None for 0 (the MAD alone), else a
    quantile in (0.5, 1); anything else is a configuration error."""
    q = float(value or 0)
    if q and not 0.5 < q < 1.0:
        raise DetectorError(f"{detector} tail_quantile must be in (0.5, 1), got {value}",
                            hint="e.g. tail_quantile=0.9, or 0 for the MAD alone")
    return q or None


class OutlierDetector(Detector):
    """Points whose embedding is far from everything else: another language, format or model, or a planted
    off-topic document.

    Raw score: mean dissimilarity to the ``k`` nearest neighbours (1 - cosine, -dot or Euclidean distance, per
    the collection), or LOF with ``method="lof"``. Score reported: its robust z against the collection (VA301)
    or against the point's own tenant with its neighbours inside that tenant (VA302, only when a tenant field is
    set and there are several tenants; lists the shared graph already holds are reused, see ``tenant_lists``).
    ``min_scale`` (in score units, 0.01) keeps a tight collection's tiny MAD from turning rounding into outliers,
    and VA301's scale is at least the spread of the collection's upper tail (``tail_quantile`` 0.9; 0: off; see
    :func:`robust_z`): in a collection of mostly templated documents the free-form ones are its ordinary tail,
    not outliers (measured on the 100 BIPIA e-mails: 11 points at z >= 3 with the MAD alone, none with the tail
    spread; the other ten dev corpora change by at most a few points, benchmarks/results/generalization.md).

    VA302 also needs the point's kNN distance inside its tenant to be >= ``tenant_ratio`` (1.25) x its distance in
    the whole collection — odd in its tenant *because* its neighbours live in other tenants — so a tenant's
    ordinary spread (a small tenant of unrelated e-mails) does not flag.

    Threshold ``z`` 3.0 for a false-positive budget of 0.5% of a clean store: mean kNN cosine distance is
    bounded and narrow (median ~0.6-0.7, scale ~0.06-0.08 on all-MiniLM-L6-v2), so planted foreign documents
    reach z 2.3-3.5, not normal-tail values; see benchmarks/results/embedding.md for the measured clean share.
    Fluent poison is *not* an outlier (it sits in a tight group); that is the poison-cluster detector's job.
    """

    name = "outlier"
    version = "2"
    description = "kNN-distance / LOF outliers against the collection and against the point's own tenant"
    rules = (COLLECTION_OUTLIER, TENANT_OUTLIER)
    budgeted_rules = frozenset({"VA301"})
    #: chosen leave-one-corpus-out on the dev corpora (benchmarks/alert_floors.py, results/generalization.md)
    alert_floors: ClassVar[dict[str, float]] = {"VA301": 3.251}
    requires = frozenset({"vectors", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "k": 10, "method": "knn", "z": 3.0, "min_scale": 0.01, "tail_quantile": 0.9, "per_tenant": True,
        "min_tenant_size": 20, "tenant_ratio": 1.25,
        "max_neighbours_in_evidence": 5,
    }

    def begin(self, ctx: ScanContext) -> None:
        if self.params["method"] not in ("knn", "lof"):
            raise DetectorError(f"outlier method {self.params['method']!r} is unknown", hint="use knn or lof")
        if int(self.params["k"]) < 1:
            raise DetectorError("outlier k must be >= 1", hint="e.g. k=10")
        tail_quantile(self.name, self.params["tail_quantile"])

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def _raw(self, graph: NeighbourGraph) -> npt.NDArray[np.float64]:
        k = int(self.params["k"])
        return local_outlier_factor(graph, k) if self.params["method"] == "lof" else knn_distance(graph, k)

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        valid = ctx.valid_mask()
        k = int(self.params["k"])
        if int(valid.sum()) <= k:
            ctx.note(f"outlier: {int(valid.sum())} valid points, need more than k={k}; skipped")
            return
        graph = ctx.graph(k)
        if graph.partition is not None:
            part = graph.partition
            ctx.note(f"outlier: the shared graph is approximate from {part.cells} coarse cells (IVF, spread "
                     f"{part.spread}; recall@10 {part.recall:.3f} against exact search on a sample)")
        raw = self._raw(graph)
        raw[~valid] = np.nan
        yield from self._flag(ctx, COLLECTION_OUTLIER, np.flatnonzero(valid), raw, graph, "collection")
        if ctx.field_map.tenant and self.params["per_tenant"]:
            yield from self._per_tenant(ctx, valid, knn_distance(graph, k))

    def _per_tenant(
        self, ctx: ScanContext, valid: npt.NDArray[np.bool_], collection_knn: npt.NDArray[np.float64]
    ) -> Iterable[Finding]:
        groups = {t: np.asarray(rows, dtype=np.int64) for t, rows in ctx.rows_by_tenant().items() if t is not None}
        if len(groups) < 2:
            return  # one tenant: the collection-level score already is the tenant score
        k = int(self.params["k"])
        shared = ctx.graph(k)
        n = len(ctx.table)
        # every point's neighbours inside its own tenant, all tenants in one table (a point has one tenant)
        combined = NeighbourGraph(np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32),
                                  ctx.info.distance, exact=True)
        tenants: list[tuple[str, npt.NDArray[np.int64], bool]] = []
        answered = 0
        for tenant, rows in sorted(groups.items()):
            rows = rows[valid[rows]]
            if len(rows) < max(int(self.params["min_tenant_size"]), k + 1):
                continue
            combined.indices[rows], combined.sims[rows], exact, reused = tenant_lists(ctx, shared, tenant, rows, k)
            tenants.append((tenant, rows, exact))
            answered += reused
        if not tenants:
            return
        if answered:
            ctx.note(f"outlier: tenant neighbour lists of {answered} of {sum(len(r) for _, r, _ in tenants)} points "
                     "taken from the shared graph, the rest searched inside their tenant")
        raw = self._tenant_raw(combined, [rows for _, rows, _ in tenants])
        # odd in its tenant *because* its neighbours live in other tenants, not a tenant's ordinary spread
        ratio = _ratio(knn_distance(combined, k), collection_knn)
        for tenant, rows, exact in tenants:
            keep = np.zeros(n, dtype=bool)
            keep[rows] = ratio[rows] >= float(self.params["tenant_ratio"])
            sub = NeighbourGraph(combined.indices, combined.sims, combined.distance, exact)
            yield from self._flag(ctx, TENANT_OUTLIER, rows, raw, sub, f"tenant {tenant!r}", keep, ratio)

    def _tenant_raw(self, combined: NeighbourGraph, groups: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.float64]:
        """Raw scores inside each tenant. kNN distance is per row, so one pass over all tenants; LOF shifts signed
        dissimilarities by the graph's smallest one, which must stay the tenant's own: one pass per tenant."""
        if self.params["method"] != "lof":
            return self._raw(combined)
        raw = np.full(len(combined.indices), np.nan)
        for rows in groups:
            idx = np.full_like(combined.indices, -1)
            idx[rows] = combined.indices[rows]
            raw[rows] = self._raw(NeighbourGraph(idx, combined.sims, combined.distance, combined.exact))[rows]
        return raw

    def _flag(
        self, ctx: ScanContext, rule: Rule, rows: Sequence[int] | npt.NDArray[np.int64], raw: npt.NDArray[np.float64],
        graph: NeighbourGraph, scope: str, keep: npt.NDArray[np.bool_] | None = None,
        ratio: npt.NDArray[np.float64] | None = None,
    ) -> Iterable[Finding]:
        rows = np.asarray(rows, dtype=np.int64)
        # VA302 keeps the MAD: its tenant_ratio test already tells a tenant's own spread from a foreign point
        tail = tail_quantile(self.name, self.params["tail_quantile"]) if rule is COLLECTION_OUTLIER else None
        z_all, median, scale = robust_z(raw[rows], float(self.params["min_scale"]), tail)
        limit = float(self.params["z"])
        table = ctx.table
        show = int(self.params["max_neighbours_in_evidence"])
        for local in np.flatnonzero(z_all >= limit):
            row = int(rows[local])
            if keep is not None and not keep[row]:
                continue
            nb = graph.indices[row]
            present = nb >= 0
            yield Finding(
                rule, self.name, table.ids[row], float(z_all[local]),
                f"{self.params['method']} score {raw[row]:.4g} is {z_all[local]:.1f} robust deviations above the "
                f"{scope}'s median {median:.4g}",
                limit,
                {
                    "scope": scope, "method": self.params["method"], "k": int(self.params["k"]),
                    "raw_score": float(raw[row]), "median": median, "scale": scale, "robust_z": float(z_all[local]),
                    "graph_exact": graph.exact,
                    **({"tenant_to_collection_distance": round(float(ratio[row]), 3)} if ratio is not None else {}),
                    "nearest": [
                        {"id": table.ids[int(j)], "similarity": round(float(s), 4)}
                        for j, s in zip(nb[present][:show], graph.sims[row][present][:show], strict=True)
                    ],
                },
                table.tenants[row],
            )


def tenant_lists(
    ctx: ScanContext, shared: NeighbourGraph, tenant: str, rows: npt.NDArray[np.int64], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], bool, int]:
    """The ``k`` nearest neighbours inside the tenant of each of ``rows`` (its valid points, ascending), as table
    rows and similarities ``(len(rows), k)``, whether they are exact, and how many rows the shared graph answered.

    The shared collection graph answers a point whose list already holds ``k`` of its tenant's points (exactly,
    when the graph is exact); only the rest are searched. A few short points are searched exactly against their
    tenant. When most of a tenant is left short (tenants mixed through the collection's neighbourhoods, e.g.
    round-robin), they are searched through the shared graph's IVF cells (``group_search``: approximate, used only
    where its recall@10 on a sample of them reaches ``IVF_MIN_RECALL``), else the tenant's own graph is built once
    (``ctx.subgraph``: exact up to ``EXACT_LIMIT`` points, approximate beyond). Where the shared graph is
    NN-descent's and the tenant's own graph would be exact, the shared graph is not used, so VA302 stays exact
    there. An incremental scan that keeps state builds each tenant's graph as before, because the next scan
    patches it in place (cost O(changed points)).
    """
    members = np.zeros(len(ctx.table), dtype=bool)
    members[rows] = True
    small = len(rows) <= EXACT_LIMIT
    if ctx.state is None and (shared.exact or not small or shared.partition is not None):
        idx, sims, complete = within_group(shared, rows, members, k)
        short = rows[~complete]
        if not len(short):
            return idx, sims, shared.exact, len(rows)
        pos = np.searchsorted(rows, short)
        if 2 * len(short) <= len(rows) and len(short) * len(rows) <= EXACT_LIMIT * EXACT_LIMIT:
            started = time.perf_counter()
            idx[pos], sims[pos] = search_within(ctx.table.vectors, short, rows, k, ctx.info.distance)
            ctx.add_seconds("graph.tenant_search", time.perf_counter() - started)
            return idx, sims, shared.exact, len(rows) - len(short)
        if shared.partition is not None:
            started = time.perf_counter()
            found = group_search(ctx.table.vectors, shared.partition, short, rows, k, ctx.info.distance,
                                 seed=ctx.settings.seed)
            ctx.add_seconds("graph.tenant_ivf", time.perf_counter() - started)
            if found is not None:
                idx[pos], sims[pos] = found
                return idx, sims, False, len(rows) - len(short)
    sub = ctx.subgraph(f"tenant:{tenant}", members, k)
    return sub.indices[rows, :k], sub.sims[rows, :k], sub.exact, 0


def _ratio(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """a / b for positive dissimilarities; for signed ones (dot product) the shift a - b + 1."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), a - b + 1.0)
