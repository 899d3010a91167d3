"""Misfiled documents: a point that reads like another tenant's and not like its own, judged by a per-tenant
model of typicality (out-of-fold tenant classifier) together with the shared neighbour graph."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.graph import prepare
from auditor.types import Confidence, Severity

log = logging.getLogger(__name__)

MISFILED = Rule(
    "VA421", "Document filed under the wrong tenant", Severity.HIGH, Confidence.MEDIUM, (OWASP_VECTOR_WEAKNESS,)
)


def out_of_fold_proba(
    x: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], *, folds: int, max_train: int, c_total: float,
    seed: int,
) -> npt.NDArray[np.float64]:
    """Tenant probabilities ``(n, n_tenants)`` where no point's own label trained the model that scores it.

    A stratified sample of at most ``max_train`` points is split into ``folds``; each fold is scored by a
    multinomial logistic regression fitted on the other folds, points outside the sample by the average of
    the fold models (they trained none of them). Memory and time grow with ``max_train``, not with n.

    The inverse regularisation is ``C = c_total / n_train``: scikit-learn's objective is C * (sum of losses)
    + ||w||^2 / 2, so a fixed C would make the log-odds (and so any fixed threshold on them) grow with the
    collection size; a fixed C * n keeps the margin's scale the same on 300 points and on 50,000.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    n = len(labels)
    n_classes = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    if n > max_train:
        # stratified: keep every class's share, at least `folds` points of each
        sample_parts = []
        for cls in range(n_classes):
            rows = np.flatnonzero(labels == cls)
            take = max(folds, round(len(rows) * max_train / n))
            sample_parts.append(rng.choice(rows, min(take, len(rows)), replace=False))
        sample = np.sort(np.concatenate(sample_parts))
    else:
        sample = np.arange(n)
    proba = np.zeros((n, n_classes), dtype=np.float64)
    outside = np.ones(n, dtype=bool)
    outside[sample] = False
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x[sample], labels[sample]):
        model = LogisticRegression(C=c_total / len(train), max_iter=1000)
        model.fit(x[sample[train]], labels[sample[train]])
        cols = model.classes_
        proba[np.ix_(sample[test], cols)] = model.predict_proba(x[sample[test]])
        if outside.any():
            proba[np.ix_(np.flatnonzero(outside), cols)] += model.predict_proba(x[outside]) / folds
    return proba


class MisfiledDetector(Detector):
    """Reports a point whose neighbourhood belongs mostly to one other tenant *and* which a per-tenant
    model finds atypical of its own tenant.

    Model: an out-of-fold multinomial logistic regression over the (unit-normalised) vectors of all
    labelled points of tenants with at least ``min_tenant_size`` points (see ``out_of_fold_proba``).
    Score = log P(best other tenant) - log P(own tenant), in nats; higher = more suspicious. Flagged when
    the score >= ``min_margin`` and at least ``min_vote`` of the point's ``k`` graph neighbours carry that
    same other tenant. A kNN vote alone fails between tenants of one domain (about one clean document in
    ten has most neighbours elsewhere); the classifier margin is what keeps those quiet.

    Threshold: ``min_margin`` = 2.5 nats (the other tenant ~12x likelier) with ``min_vote`` 0.3, chosen on
    the development set for a budget of <= 0.5% false positives between same-domain tenants (11 wikipedia
    topics: 0.32%) and <= 0.1% between tenants from different corpora (0%); see benchmarks/results/tenancy.md.
    """

    name = "misfiled"
    version = "1"
    description = "Documents whose content belongs to another tenant (per-tenant typicality + neighbour graph)"
    rules = (MISFILED,)
    requires = frozenset({"vectors", "tenant", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "k": 10, "min_vote": 0.3, "min_margin": 2.5, "min_tenant_size": 10, "folds": 5, "max_train": 50_000,
        "c_total": 2000.0,
    }

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        valid = ctx.valid_mask()
        min_size = int(self.params["min_tenant_size"])
        folds = int(self.params["folds"])
        sizes = Counter(t for i, t in enumerate(table.tenants) if t is not None and valid[i])
        names = sorted(t for t, n in sizes.items() if n >= max(min_size, folds))
        if len(names) < 2:
            ctx.note(f"misfiled: needs two tenants with at least {max(min_size, folds)} points, found {len(names)}")
            return
        code = {t: c for c, t in enumerate(names)}
        rows = np.array([i for i, t in enumerate(table.tenants) if t in code and valid[i]], dtype=np.int64)
        labels = np.array([code[table.tenants[i]] for i in rows], dtype=np.int64)
        x = prepare(np.asarray(table.vectors[rows]), ctx.info.distance)
        proba = out_of_fold_proba(
            x, labels, folds=folds, max_train=int(self.params["max_train"]), c_total=float(self.params["c_total"]),
            seed=ctx.settings.seed,
        )
        eps = 1e-12
        own = proba[np.arange(len(rows)), labels]
        others = proba.copy()
        others[np.arange(len(rows)), labels] = -1.0
        best = others.argmax(axis=1)
        margin = np.log(others[np.arange(len(rows)), best] + eps) - np.log(own + eps)

        graph = ctx.graph(int(self.params["k"]))
        min_vote = float(self.params["min_vote"])
        min_margin = float(self.params["min_margin"])
        for pos in np.flatnonzero(margin >= min_margin):
            row = int(rows[pos])
            other = names[int(best[pos])]
            neigh = [int(j) for j in graph.indices[row] if j >= 0]
            neigh_tenants = [table.tenants[j] for j in neigh]
            labelled = [t for t in neigh_tenants if t is not None]
            vote = labelled.count(other) / len(labelled) if labelled else 0.0
            if vote < min_vote:
                continue
            own_tenant = names[int(labels[pos])]
            yield Finding(
                MISFILED, self.name, table.ids[row], float(margin[pos]),
                f"filed under {own_tenant!r} but reads like tenant {other!r} "
                f"(model odds {np.exp(min(margin[pos], 50.0)):.0f}:1, {vote:.0%} of neighbours are {other!r})",
                min_margin,
                {"from_tenant": other, "likely_tenant": other, "p_own": round(float(own[pos]), 4),
                 "p_likely": round(float(proba[pos, best[pos]]), 4), "neighbour_vote": round(vote, 3),
                 "neighbours": [{"id": table.ids[j], "tenant": table.tenants[j]} for j in neigh[:10]]},
                own_tenant,
            )
