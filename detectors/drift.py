"""Drift between scans: how far each tenant's vectors moved since the last completed scan (kernel two-sample
test on the ledger's per-tenant samples), and ingestion bursts (a mass of new, near-identical points)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.cluster.hierarchy import DisjointSet
from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel

from auditor import summaries
from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.errors import DetectorError
from auditor.findings import (
    ATLAS_POISON_TRAINING,
    ATLAS_RAG_POISONING,
    OWASP_DATA_POISONING,
    OWASP_VECTOR_WEAKNESS,
    Finding,
    Rule,
    point_key,
)
from auditor.types import Confidence, Distance, Severity

TENANT_DRIFT = Rule(
    "VA601",
    "Tenant's vectors shifted since the last scan",
    Severity.MEDIUM,
    Confidence.MEDIUM,
    (OWASP_DATA_POISONING, ATLAS_POISON_TRAINING),
)
INGESTION_BURST = Rule(
    "VA602",
    "Ingestion burst: many new near-identical points since the last scan",
    Severity.HIGH,
    Confidence.MEDIUM,
    (OWASP_DATA_POISONING, OWASP_VECTOR_WEAKNESS, ATLAS_RAG_POISONING),
)


class DriftDetector(Detector):
    """Per-tenant distribution shift since the last completed scan, and bursts of new near-identical points.

    VA601: the engine keeps per tenant a seeded bottom-k sample (up to 256 vectors, unit length for cosine
    collections) with every scan. The two samples are compared with the kernel maximum mean discrepancy
    (RBF kernel, median-distance bandwidth) and a permutation test (``permutations`` shuffles). Score is
    ``1 - p`` (higher = more suspicious), flagged at ``1 - alpha``: under "no drift" a tenant is flagged with
    probability at most ``alpha`` = 0.001 per scan (the permutation test is exact; samples that share points
    make it conservative), so ten tenants scanned daily give about one false alarm in three years. A tenant
    also needs ``min_points`` points in both scans. Evidence: MMD², the null's 99.9th percentile, the
    centroid shift (cosine distance) and the counts.

    VA602: among points new or re-embedded since the last scan, groups (connected through the shared
    neighbour graph, ``burst_k`` neighbours) whose members are pairwise linked at cosine similarity >=
    ``burst_similarity`` (0.97: paraphrases of one text stay below it, copies and templated fills above) with
    at least ``burst_min_size`` members (20). Budget: a legitimate import of 20+ templated documents in one
    go is reported once per burst — that is the event this rule exists to surface. Not run on a baseline
    scan (with no history every point is "new").
    """

    name = "drift"
    version = "1"
    description = "per-tenant vector drift since the last scan (MMD permutation test); ingestion bursts"
    rules = (TENANT_DRIFT, INGESTION_BURST)
    requires = frozenset({"vectors"})
    defaults: ClassVar[dict[str, Any]] = {
        "alpha": 0.001,
        "permutations": 1999,
        "min_points": 30,
        "burst_k": 10,
        "burst_similarity": 0.97,
        "burst_min_size": 20,
        "max_evidence": 20,
    }

    def neighbours_needed(self) -> int:
        return int(self.params["burst_k"])

    def begin(self, ctx: ScanContext) -> None:
        p = self.params
        if not 0 < float(p["alpha"]) < 1:
            raise DetectorError(f"drift: alpha must be in (0, 1), got {p['alpha']}")
        if int(p["permutations"]) * float(p["alpha"]) < 1:
            raise DetectorError(
                f"drift: {p['permutations']} permutations cannot resolve alpha={p['alpha']}",
                hint=f"use at least {int(np.ceil(1 / float(p['alpha'])))} permutations",
            )

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        previous: dict[str | None, summaries.TenantSummary] | None = ctx.shared.get("previous_tenant_summaries")
        if not previous:
            ctx.note("drift: no summary of an earlier scan of this collection; this scan is the reference")
        else:
            current = ctx.shared.get("tenant_summaries")
            if current is None:
                current = summaries.summarise(ctx, seed=ctx.settings.seed)
            yield from self._tenant_drift(ctx, previous, current)
        if ctx.previous is not None:
            yield from self._bursts(ctx)

    # -- VA601 ----------------------------------------------------------------------------------------------
    def _tenant_drift(
        self,
        ctx: ScanContext,
        previous: dict[str | None, summaries.TenantSummary],
        current: dict[str | None, summaries.TenantSummary],
    ) -> Iterable[Finding]:
        alpha = float(self.params["alpha"])
        min_points = int(self.params["min_points"])
        since = ctx.shared.get("previous_scan_id")
        rng = np.random.default_rng(ctx.settings.seed)
        for tenant in sorted(set(previous) & set(current), key=lambda t: (t is None, str(t))):
            old, new = previous[tenant], current[tenant]
            if min(old.count, new.count, len(old.sample), len(new.sample)) < min_points:
                continue
            if old.sample.shape[1] != new.sample.shape[1]:
                continue
            mmd2, null_q, p_value = mmd_permutation_test(
                old.sample, new.sample, permutations=int(self.params["permutations"]), rng=rng
            )
            score = 1.0 - p_value
            if score < 1.0 - alpha:
                continue
            shift = _cosine_distance(old.centroid, new.centroid)
            label = tenant if tenant is not None else "(no tenant)"
            yield Finding(
                TENANT_DRIFT,
                self.name,
                None,
                score,
                f"vectors of tenant {label!r} shifted since scan {since}: MMD² {mmd2:.4f} vs {null_q:.4f} "
                f"expected at most by chance (p={p_value:.4f}); centroid moved by cosine distance {shift:.4f}",
                1.0 - alpha,
                {
                    "tenant": tenant,
                    "since_scan": since,
                    "mmd2": mmd2,
                    "null_quantile_999": null_q,
                    "p_value": p_value,
                    "centroid_cosine_distance": shift,
                    "count_before": old.count,
                    "count_now": new.count,
                    "sample_sizes": [len(old.sample), len(new.sample)],
                },
                tenant,
                identity=f"drift:{label}:since:{since}",
            )

    # -- VA602 ----------------------------------------------------------------------------------------------
    def _bursts(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        previous = ctx.previous or {}
        valid = ctx.valid_mask()
        fresh = np.zeros(len(table), dtype=bool)
        for i, pid in enumerate(table.ids):
            old = previous.get(point_key(pid))
            fresh[i] = valid[i] and (old is None or old.vector_hash != table.vector_hashes[i])
        min_size = int(self.params["burst_min_size"])
        if fresh.sum() < min_size:
            return
        graph = ctx.graph(int(self.params["burst_k"]))
        rows = np.flatnonzero(fresh)
        unit = summaries.prepare(table.vectors[rows], Distance.COSINE)  # near-identical = same direction
        position = {int(r): j for j, r in enumerate(rows)}
        limit = float(self.params["burst_similarity"])
        groups: DisjointSet[int] = DisjointSet(range(len(rows)))
        for j, r in enumerate(rows):
            for nb in graph.indices[r]:
                k = position.get(int(nb))
                if k is not None and float(unit[j] @ unit[k]) >= limit:
                    groups.merge(j, k)
        max_ev = int(self.params["max_evidence"])
        for members in groups.subsets():
            if len(members) < min_size:
                continue
            picked = sorted(members)
            member_rows = rows[picked]
            block = unit[picked]
            sims = block @ block.T
            mean_sim = float((sims.sum() - len(picked)) / (len(picked) * (len(picked) - 1)))
            tenants = Counter(table.tenants[r] for r in member_rows)
            tenant, _ = tenants.most_common(1)[0]
            ids = [table.ids[r] for r in member_rows]
            first = min(ids, key=point_key)
            yield Finding(
                INGESTION_BURST,
                self.name,
                None,
                float(len(picked)),
                f"{len(picked)} new near-identical points (mean cosine {mean_sim:.3f}) arrived since the last scan"
                + (f", mostly tenant {tenant!r}" if tenant is not None else ""),
                float(min_size),
                {
                    "size": len(picked),
                    "mean_cosine": mean_sim,
                    "min_cosine": float(sims.min()),
                    "points": ids[:max_ev],
                    "tenants": {str(k): v for k, v in tenants.most_common()},
                    "since_scan": ctx.shared.get("previous_scan_id"),
                },
                tenant,
                identity=f"burst:{point_key(first)}",
            )


def mmd_permutation_test(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], *, permutations: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Biased MMD² of samples ``x`` ``(m, d)`` and ``y`` ``(n, d)`` with an RBF kernel (median heuristic), the
    99.9th percentile of its permutation null, and the permutation p-value ``(1 + #{null >= mmd²}) / (1 + P)``.

    All permutations at once: with weights ``w`` (+1/m on one side, -1/n on the other) MMD² = wᵀKw, so P
    shuffles are one ``(P, N) @ (N, N)`` product.
    """
    pooled = np.vstack([x, y]).astype(np.float64)
    m, n = len(x), len(y)
    dist = euclidean_distances(pooled, squared=True)
    off_diagonal = dist[np.triu_indices(len(pooled), k=1)]
    median = float(np.median(off_diagonal[off_diagonal > 0])) if np.any(off_diagonal > 0) else 1.0
    kernel = rbf_kernel(pooled, gamma=1.0 / median)
    base = np.concatenate([np.full(m, 1.0 / m), np.full(n, -1.0 / n)])
    observed = float(base @ kernel @ base)
    weights = np.stack([rng.permutation(base) for _ in range(permutations)])
    null = np.einsum("pi,pi->p", weights @ kernel, weights)
    p_value = float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + permutations))
    return observed, float(np.quantile(null, 0.999)), p_value


def _cosine_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 0.0
    return float(1.0 - (a @ b) / (na * nb))
