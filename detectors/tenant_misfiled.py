"""Misfiled documents: a point that reads like another tenant's and not like its own, judged by a per-tenant
model of typicality (out-of-fold tenant classifier) together with the shared neighbour graph."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.graph import prepare, release_pages
from auditor.types import Confidence, Distance, Severity
from detectors.tenant_copies import normalised_text_key

log = logging.getLogger(__name__)

MISFILED = Rule(
    "VA421", "Document filed under the wrong tenant", Severity.HIGH, Confidence.MEDIUM, (OWASP_VECTOR_WEAKNESS,)
)


def out_of_fold_proba(
    x: Any, labels: npt.NDArray[np.int64], *, folds: int, max_train: int, c_total: float,
    seed: int, groups: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.float64]:
    """Tenant probabilities ``(n, n_tenants)`` where no point's own label trained the model that scores it;
    ``x`` is a dense array, a scipy sparse matrix or a :class:`TableRows` (its rows are taken by ascending index
    arrays).

    A stratified sample of at most ``max_train`` points is split into ``folds``; each fold is scored by a
    multinomial logistic regression fitted on the other folds, points outside the sample by the average of
    the fold models (they trained none of them). Memory and time grow with ``max_train``, not with n.

    The inverse regularisation is ``C = c_total / n_train``: scikit-learn's objective is C * (sum of losses)
    + ||w||^2 / 2, so a fixed C would make the log-odds (and so any fixed threshold on them) grow with the
    collection size; a fixed C * n keeps the margin's scale the same on 300 points and on 50,000.

    BLAS runs single-threaded here: the regression's products (40,000 x 384 by 10 classes) are too small for
    OpenBLAS' threads, which cost more than they bring (five folds at 100k points on the shared 2-core box: 20.6 s
    on 2 BLAS threads, 2.8 s on one; benchmarks/results/in-process-speed.md).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _out_of_fold_proba(x, labels, folds=folds, max_train=max_train, c_total=c_total, seed=seed,
                                  groups=groups)


def _out_of_fold_proba(
    x: Any, labels: npt.NDArray[np.int64], *, folds: int, max_train: int, c_total: float,
    seed: int, groups: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.float64]:
    from sklearn.linear_model import LogisticRegression

    n = len(labels)
    n_classes = int(labels.max()) + 1
    sample = stratified_sample(labels, max_train, folds, seed)
    proba = np.zeros((n, n_classes), dtype=np.float64)
    is_outside = np.ones(n, dtype=bool)
    is_outside[sample] = False
    outside = np.flatnonzero(is_outside)
    splits = fold_splits(labels[sample], None if groups is None else groups[sample], folds, seed)
    # a TableRows reads (and normalises) the memmap on every index: the sample once, not once per fold and test
    sampled = x[sample] if isinstance(x, TableRows) else None

    def fit(fold: int) -> tuple[Any, npt.NDArray[np.float64]]:
        train, test = splits[fold]
        model = LogisticRegression(C=c_total / len(train), max_iter=1000)
        if sampled is None:
            model.fit(x[sample[train]], labels[sample[train]])
            return model, model.predict_proba(x[sample[test]])
        model.fit(sampled[train], labels[sample[train]])
        return model, model.predict_proba(sampled[test])

    # the folds are independent fits, each on single-threaded BLAS: one per core (numpy and scikit-learn's loss
    # release the GIL), written back in fold order, so the probabilities are those of the folds one after another
    workers = max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=min(workers, len(splits))) as pool:
        fitted = list(pool.map(fit, range(len(splits))))
    models = []
    for (_, test), (model, test_proba) in zip(splits, fitted, strict=True):
        proba[np.ix_(sample[test], model.classes_)] = test_proba
        models.append(model)

    def score(start: int) -> None:
        # points outside the sample: read once per block, scored by every fold model (in fold order, as one sum);
        # blocks hold disjoint rows, so blocks on several cores add up exactly as one after another
        part = outside[start : start + _PREDICT_ROWS]
        block = x[part]
        for model in models:
            proba[np.ix_(part, model.classes_)] += model.predict_proba(block) / folds

    blocks = range(0, len(outside), _PREDICT_ROWS)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(blocks)))) as pool:
        for _ in pool.map(score, blocks):
            pass
    return proba


def stratified_sample(labels: npt.NDArray[np.int64], max_rows: int, least: int, seed: int) -> npt.NDArray[np.int64]:
    """Ascending positions of at most ~``max_rows`` labels keeping every class's share, at least ``least`` of
    each (all of them when there are no more than ``max_rows``)."""
    n = len(labels)
    if n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    parts = []
    for cls in range(int(labels.max()) + 1):
        rows = np.flatnonzero(labels == cls)
        take = max(least, round(len(rows) * max_rows / n))
        parts.append(rng.choice(rows, min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(parts))


def neighbourhood_cells(vectors: npt.NDArray[np.float32], size: int, seed: int, least: int = 2,
                        ) -> npt.NDArray[np.int64]:
    """One cell label per row: k-means cells of about ``size`` mutually similar points, at least ``least`` cells
    (random start, ten Lloyd rounds: the cells only have to keep each point with its near neighbours, not be
    optimal)."""
    from sklearn.cluster import KMeans

    n_cells = min(len(vectors), max(least, len(vectors) // max(1, size)))
    if n_cells < 2:
        return np.zeros(len(vectors), dtype=np.int64)
    model = KMeans(n_clusters=n_cells, init="random", n_init=1, max_iter=10, random_state=seed)
    return np.asarray(model.fit_predict(vectors), dtype=np.int64)


def fold_splits(labels: npt.NDArray[np.int64], groups: npt.NDArray[np.int64] | None, folds: int, seed: int,
                ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Stratified (train, test) index pairs; with ``groups`` (one label per row: the row's document), every group
    falls in one fold, so no chunk of a document trains the model that scores another chunk of it — a model that
    recognises documents would otherwise pass for one that tells tenants apart. Falls back to ungrouped folds when
    there are fewer groups than folds or a training side would hold a single tenant."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    zeros = np.zeros(len(labels))
    if groups is not None and len(np.unique(groups)) >= folds:
        grouped = list(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            zeros, labels, groups))
        if all(len(np.unique(labels[train])) > 1 and len(test) for train, test in grouped):
            return grouped
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(zeros, labels))


#: Points scored per block outside the training sample: 65,536 x 384 float32 = 96 MiB read at once.
_PREDICT_ROWS = 65_536


class TableRows:
    """The point table's vectors at ``rows`` (ascending table rows), ``prepare``-d only when indexed: ``self[i]``
    for an ascending index array ``i`` is float32 ``(len(i), d)``. Lets the tenant models read a 1M-point memmap a
    block at a time instead of holding a normalised copy of it (1.5 GB at 1M x 384, 3 GB while it was made)."""

    def __init__(self, vectors: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], distance: Distance) -> None:
        self.vectors, self.rows, self.distance = vectors, rows, distance

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        block = prepare(np.asarray(self.vectors[self.rows[index]]), self.distance)
        release_pages(self.vectors)
        return block


def lexical_features(texts: Sequence[str]) -> Any:
    """TF-IDF of each text's words (sublinear term frequency, words in at least two texts), L2-normalised
    rows: the vocabulary tells same-domain tenants apart where a 384-d sentence embedding blurs them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectoriser = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=200_000, dtype=np.float32)
    return vectoriser.fit_transform(texts)


class MisfiledDetector(Detector):
    """Reports a point that per-tenant models and its neighbourhood find atypical of its own tenant.

    Up to three views of "does this point belong to its tenant", each as log-odds against the own tenant:

    * embedding model — an out-of-fold multinomial logistic regression over the (unit-normalised) vectors of
      all labelled points of tenants with at least ``min_tenant_size`` points (see ``out_of_fold_proba``):
      ``log((1 - p_own) / p_own)``;
    * lexical model — the same out-of-fold regression over TF-IDF word features of the texts
      (``lexical_features``, inverse regularisation ``lexical_c_total``), when the text field is mapped:
      vocabulary separates same-domain tenants that the sentence embedding blurs (11 wikipedia topics:
      recall at 0.5% false positives 0.81-0.83 -> 0.83-0.91 over three seeds). A point without text takes
      the embedding model's probability in its place; ``lexical=False`` or no text field leaves it out;
    * neighbours — the smoothed share of the point's ``k`` graph neighbours filed under its own tenant,
      ``q_own = (own + smoothing / T) / (labelled + smoothing)`` over T tenants: ``log((1 - q_own) / q_own)``.

    Score = embedding log-odds + lexical log-odds + ``neighbour_weight`` x neighbour log-odds, in nats;
    higher = more suspicious. The likely tenant reported is the other tenant maximising the same sum of
    log-probabilities. Against "own" rather than against the single best other tenant, so a document that
    reads like two neighbouring tenants still adds up. A kNN vote alone fails between tenants of one domain
    (about one clean document in twenty has most neighbours elsewhere); each model alone misses moved
    documents it is unsure of; the views must agree.

    When the field map names a document id, the folds keep every chunk of one document together
    (:func:`fold_splits`): a model that saw some sections of a page recognises the others, and would pass for one
    that tells tenants apart where tenants only differ by which documents they hold.

    Separability first: a tenant model that cannot tell tenants apart has nothing to say about a point's
    tenant (many SaaS tenants store the same kind of documents; a kNN vote between them is noise). The
    out-of-fold tenant predictions of the models (argmax of the summed log-probabilities) are compared with
    always guessing the largest tenant: ``z`` = (accuracy - majority) / sqrt(majority (1 - majority) / n)
    and ``lift`` = (accuracy - majority) / (1 - majority). Below ``min_separation_z`` (3.0) or ``min_lift``
    (0.2) the detector flags nothing and says so in the notes. Both were fixed before any measurement (z
    3.0: one-sided p ~0.001); measured since: tenants of one distribution -0.04..0.00 (synthetic round-robin
    vectors, wikipedia and FactCheckGPT snippets dealt round-robin), the least separable real tenants 0.78
    (four Reuters desks), 11 wikipedia topics 0.82, different corpora 0.89 (benchmarks/results/tenancy.md).

    Then separability beyond neighbourhoods: tenants that each hold their own documents of one kind (their own
    e-mail templates, the snippets of their own questions, the sections of their own pages) pass the first test,
    because a model that saw some members of a family recognises the others. So the test is run again with folds
    that keep each cell of ~``cell_size`` (40) similar points together (k-means on a stratified sample of at most
    ``cell_gate_max`` points, at least two cells per fold): a point's tenant must be told from other
    neighbourhoods than its own. One partition into cells is a noisy estimate in a small store (GOV.UK's
    tenancy store, 1,243 points: lift 0.09-0.28 by seed), so the test pools several partitions (other k-means
    seeds, other folds) until about ``cell_pool`` (5,000) out-of-fold predictions are pooled, at most
    ``cell_repeats`` (5), one partition from 5,000 sampled points up; and the tenants pass only when their
    pooled accuracy beats the accuracy of ``min_lift`` by ``min_separation_z`` binomial standard errors
    (:func:`beyond_lift_z`) — a lift near 0.2 by chance is no evidence that tenants differ. Otherwise nothing is
    flagged; the scores themselves are unchanged. Measured offline (benchmarks/results/generalization.md,
    sessions 11-12): the same-distribution tenancy stores of the dev corpora at most 0.20 (GOV.UK, ten seeds:
    0.14-0.20, z -2.0..-0.2) with cells of 40, while tenants that do differ keep 0.54-0.62 (four Reuters desks,
    ten seeds, z >= 7.3), 0.79 (11 wikipedia topics), 0.90-0.92 (different corpora). The size was chosen after GOV.UK
    kept 0.26 with cells of 20 (in-sample for GOV.UK); ``cell_size`` 0 turns the second test off.

    Two lines on the score, calibrated on the collection's own scores; no alert ever undercuts its tail:

    * alert line ``max(min_score_floor, tail(alert_budget))`` — findings at or above keep the rule's HIGH
      severity. ``tail(b)`` is the score where a normal distribution fitted to the bulk of the collection's
      scores (its median and 90th percentile only, so up to 10% misfiled points cannot pull it) puts ``b``
      of the points; ``alert_budget`` 0.1% of the points. The floor (4.0 nats, 55:1 against the own tenant;
      different corpora, three seeds: recall 1.0 with 0-2 of ~2,650 clean points above it) keeps a large
      wave of moved documents from calibrating itself away;
    * review line ``max(min(min_score, alert line), tail(review_budget))`` — findings between it and the
      alert line are kept as LOW with their score (ranked, reviewable, not alerting). ``min_score`` = 8.25
      nats (k = 20, with the lexical view) was chosen on 11 wikipedia topics (benchmark seeds 0-2) for <= 0.5%
      false positives between same-domain tenants (recall 0.83-0.89 at 0.44%); ``review_budget`` 2% (0 = none)
      bounds the LOW findings where the collection's scores spread wide. The normal fit overestimates the
      clean tail of same-domain tenants (topics: 0.07% of clean points above tail(0.1%), 0.16% above
      tail(0.5%)), so a review line at tail(0.5%) cost 0.12 of recall there; at 2% the line stays under 8.25
      on topics seed 0 (at 1% it would be 9.1; chosen there, the other seeds and corpora reported apart).
      The review line may sit under the tail: it only ranks LOW findings for review.

    A point whose text (case/whitespace-normalised) or vector another tenant also holds is left to
    cross-tenant-copy: a story its publisher files under two desks is not misfiled under either (four Reuters
    desks, clean: 2 of 3 HIGH findings were such stories).

    Without the lexical view the score has two terms and the constants of detector version 2 apply:
    ``min_score_without_text`` = 5.5, ``min_score_floor_without_text`` = 3.0 and an exponential tail,
    ``tail(b) = q90 + beta * ln(0.1 / b)`` with ``beta = (q90 - q50) / ln 5``. Measured through real scans
    in benchmarks/results/tenancy.md.
    """

    name = "misfiled"
    version = "7"
    description = "Documents whose content belongs to another tenant (per-tenant typicality + neighbour graph)"
    rules = (MISFILED,)
    requires = frozenset({"vectors", "tenant", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "k": 20, "min_score": 8.25, "min_score_floor": 4.0, "alert_budget": 0.001, "review_budget": 0.02,
        "min_separation_z": 3.0, "min_lift": 0.2, "neighbour_weight": 1.0,
        "smoothing": 1.0, "min_tenant_size": 10, "folds": 5, "max_train": 50_000, "c_total": 2000.0,
        "lexical": True, "lexical_c_total": 32_000.0, "lexical_max_train": 20_000,
        "min_score_without_text": 5.5, "min_score_floor_without_text": 3.0,
        "cell_size": 40, "cell_gate_max": 20_000, "cell_pool": 5_000, "cell_repeats": 5,
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
        x = TableRows(table.vectors, rows, ctx.info.distance)
        groups = document_groups(table.doc_ids, rows) if ctx.field_map.doc_id else None
        proba = out_of_fold_proba(
            x, labels, folds=folds, max_train=int(self.params["max_train"]), c_total=float(self.params["c_total"]),
            seed=ctx.settings.seed, groups=groups,
        )
        lexical = self._lexical_proba(self._lexical_view(ctx, rows, labels), labels, proba, ctx.settings.seed, groups)
        separation = tenant_separability([proba] if lexical is None else [proba, lexical], labels)
        if (separation["z"] < float(self.params["min_separation_z"])
                or separation["lift"] < float(self.params["min_lift"])):
            ctx.note(f"misfiled: tenants are not told apart by their content (out-of-fold tenant accuracy "
                     f"{separation['accuracy']:.1%} against {separation['majority']:.1%} for the largest tenant, "
                     f"lift {separation['lift']:.2f}, z {separation['z']:.1f}; needs lift >= "
                     f"{self.params['min_lift']} and z >= {self.params['min_separation_z']}): nothing flagged")
            return
        if int(self.params["cell_size"]) > 0:
            beyond = self._separability_beyond_neighbourhoods(ctx, x, rows, labels)
            if beyond["z_beyond"] < float(self.params["min_separation_z"]):
                ctx.note(f"misfiled: tenants are told apart only by which neighbourhoods they hold (out-of-fold "
                         f"tenant accuracy {separation['accuracy']:.1%}, lift {separation['lift']:.2f}, falls to "
                         f"{beyond['accuracy']:.1%} against {beyond['majority']:.1%} for the largest tenant, lift "
                         f"{beyond['lift']:.2f} over {beyond['partitions']:.0f} partition(s), when no cell of "
                         f"~{self.params['cell_size']} similar points trains the model that scores it; needs lift "
                         f"{self.params['min_lift']} beaten by z >= {self.params['min_separation_z']}, has z "
                         f"{beyond['z_beyond']:.1f}): nothing flagged")
                return
        k = int(self.params["k"])
        neighbours = np.asarray(ctx.graph(k).indices[rows, :k])
        share = neighbour_shares(neighbours, table.tenants, code, float(self.params["smoothing"]))
        weight = float(self.params["neighbour_weight"])
        score, likely = misfiled_scores(proba, share, labels, weight, lexical)
        normal = lexical is not None
        alert_budget, review_budget = float(self.params["alert_budget"]), float(self.params["review_budget"])
        tail = tail_threshold(score, alert_budget, normal=normal)
        bulk = [round(float(q), 6) for q in np.quantile(score, [0.5, 0.9])]
        review_tail = tail_threshold(score, review_budget, normal=normal) if review_budget > 0 else -np.inf
        suffix = "" if lexical is not None else "_without_text"
        cap, floor = float(self.params[f"min_score{suffix}"]), float(self.params[f"min_score_floor{suffix}"])
        alert_line = max(floor, tail)
        review_line = max(min(cap, alert_line), review_tail)
        alerts = int((score >= alert_line).sum())
        reviews = int(((score >= review_line) & (score < alert_line)).sum())
        ctx.note(f"misfiled: alert line {alert_line:.2f} nats (floor {floor}, collection tail {tail:.2f} at "
                 f"{alert_budget:.2%} of points): {alerts} HIGH; review line {review_line:.2f} (min_score {cap}, "
                 f"tail {review_tail:.2f} at {review_budget:.2%}): {reviews} LOW; tenants told apart with "
                 f"out-of-fold accuracy {separation['accuracy']:.1%} against {separation['majority']:.1%} "
                 f"(lift {separation['lift']:.2f})")
        shared = held_by_other_tenants(table, rows)
        if shared.any():
            ctx.note(f"misfiled: {int(shared.sum())} points whose text or vector another tenant also holds are left "
                     "to cross-tenant-copy (a story filed under two desks is not misfiled under either)")
        at = np.arange(len(rows))
        model_log_odds, neighbour_log_odds = _log_odds(proba[at, labels]), _log_odds(share[at, labels])
        lexical_log_odds = _log_odds(lexical[at, labels]) if lexical is not None else None
        for pos in np.flatnonzero((score >= review_line) & ~shared):
            row = int(rows[pos])
            other, own_tenant = names[int(likely[pos])], names[int(labels[pos])]
            neigh = [int(j) for j in neighbours[pos] if j >= 0]
            labelled = [table.tenants[j] for j in neigh if table.tenants[j] is not None]
            vote = labelled.count(other) / len(labelled) if labelled else 0.0
            own_share = labelled.count(own_tenant) / len(labelled) if labelled else 0.0
            p_own = float(proba[pos, labels[pos]])
            lexical_evidence = (
                {"lexical_log_odds": round(float(lexical_log_odds[pos]), 3)} if lexical_log_odds is not None else {}
            )
            yield Finding(
                MISFILED, self.name, table.ids[row], float(score[pos]),
                f"filed under {own_tenant!r} but reads like tenant {other!r} (model: {p_own:.1%} {own_tenant!r}; "
                f"{own_share:.0%} of {len(neigh)} neighbours {own_tenant!r}, {vote:.0%} {other!r})",
                alert_line,
                {"likely_tenant": other, "p_own": round(p_own, 4), "p_likely": round(float(proba[pos, likely[pos]]), 4),
                 "model_log_odds": round(float(model_log_odds[pos]), 3),
                 "neighbour_log_odds": round(float(neighbour_log_odds[pos]), 3), **lexical_evidence,
                 "own_share": round(own_share, 3), "neighbour_vote": round(vote, 3),
                 "collection_tail": round(tail, 3), "review_line": round(review_line, 3), "score_bulk": bulk,
                 "tenant_lift": round(separation["lift"], 3),
                 "neighbours": [{"id": table.ids[j], "tenant": table.tenants[j]} for j in neigh[:10]]},
                own_tenant,
                severity=None if score[pos] >= alert_line else Severity.LOW,
            )

    def _separability_beyond_neighbourhoods(
        self, ctx: ScanContext, x: TableRows, rows: npt.NDArray[np.int64], labels: npt.NDArray[np.int64],
    ) -> dict[str, float]:
        """:func:`tenant_separability` of the tenant models when the folds keep each cell of ~``cell_size``
        similar points together, on a stratified sample of at most ``cell_gate_max`` points, pooled over
        :func:`cell_partitions` partitions: how well a point's tenant is told from other neighbourhoods than its
        own; ``z_beyond`` (:func:`beyond_lift_z`) says by how much the pooled accuracy beats ``min_lift``."""
        folds = int(self.params["folds"])
        sample = stratified_sample(labels, int(self.params["cell_gate_max"]), folds, ctx.settings.seed)
        vectors, sampled = x[sample], labels[sample]
        partitions = cell_partitions(len(sample), int(self.params["cell_pool"]), int(self.params["cell_repeats"]))
        view = self._lexical_view(ctx, rows[sample], sampled)
        accuracy = 0.0
        for repeat in range(partitions):
            seed = ctx.settings.seed + repeat
            cells = neighbourhood_cells(vectors, int(self.params["cell_size"]), seed, least=2 * folds)
            proba = out_of_fold_proba(vectors, sampled, folds=folds, max_train=len(sample),
                                      c_total=float(self.params["c_total"]), seed=seed, groups=cells)
            lexical = self._lexical_proba(view, sampled, proba, seed, cells)
            accuracy += tenant_separability([proba] if lexical is None else [proba, lexical], sampled)["accuracy"]
        pooled = separability_of(accuracy / partitions, sampled)
        pooled["partitions"] = float(partitions)
        pooled["z_beyond"] = beyond_lift_z(pooled["accuracy"], pooled["majority"], len(sample),
                                           float(self.params["min_lift"]))
        return pooled

    def _lexical_view(
        self, ctx: ScanContext, rows: npt.NDArray[np.int64], labels: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], Any] | None:
        """The positions of ``rows`` that hold text and their word features, computed once for every fold
        assignment that models them. None (and a note) when the lexical view is off, there is no text field, or
        too few texts to model."""
        if not self.params["lexical"] or not ctx.field_map.text:
            return None
        texts = ctx.table.texts
        with_text = np.flatnonzero([bool((texts[i] or "").strip()) for i in rows])
        if np.bincount(labels[with_text], minlength=int(labels.max()) + 1).min() < int(self.params["folds"]):
            ctx.note("misfiled: lexical view off (a tenant has fewer texts than folds)")
            return None
        try:
            return with_text, lexical_features([texts[int(rows[i])] or "" for i in with_text])
        except ValueError:  # no word occurs in two texts: nothing to learn from
            ctx.note("misfiled: lexical view off (no shared vocabulary)")
            return None

    def _lexical_proba(
        self, view: tuple[npt.NDArray[np.int64], Any] | None, labels: npt.NDArray[np.int64],
        embedding_proba: npt.NDArray[np.float64], seed: int, groups: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.float64] | None:
        """Out-of-fold tenant probabilities from the texts' words (:meth:`_lexical_view`); rows without text take
        the embedding model's. None when there is no lexical view."""
        if view is None:
            return None
        with_text, features = view
        out = embedding_proba.copy()
        out[with_text] = out_of_fold_proba(
            features, labels[with_text], folds=int(self.params["folds"]),
            max_train=int(self.params["lexical_max_train"]), c_total=float(self.params["lexical_c_total"]),
            seed=seed, groups=None if groups is None else groups[with_text],
        )
        return out


_EPS = 1e-12


def _log_odds(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``log((1 - p) / p)``: log-odds against ``p``, clipped away from 0 and 1."""
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.asarray(np.log1p(-q) - np.log(q), dtype=np.float64)


def document_groups(doc_ids: Sequence[Any], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """One integer per row: the same for rows of one document id, a row of its own where the id is missing."""
    codes: dict[str, int] = {}
    out = np.empty(len(rows), dtype=np.int64)
    for k, i in enumerate(rows):
        doc = doc_ids[int(i)]
        key = f"d:{doc!r}" if doc is not None else f"r:{int(i)}"
        out[k] = codes.setdefault(key, len(codes))
    return out


def held_by_other_tenants(table: Any, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Per row: the same (normalised) text or a bit-identical vector is also stored under another tenant."""
    tenants_of: dict[tuple[str, str], set[str | None]] = {}
    keys: list[list[tuple[str, str]]] = []
    for i in rows:
        text = table.texts[int(i)]
        own = [("vector", table.vector_hashes[int(i)])]
        if text is not None and text.strip():
            own.append(("text", normalised_text_key(text)))
        for key in own:
            tenants_of.setdefault(key, set()).add(table.tenants[int(i)])
        keys.append(own)
    return np.array([any(len(tenants_of[key]) > 1 for key in own) for own in keys], dtype=bool)


def neighbour_shares(
    neighbours: npt.NDArray[np.int64], tenants: Sequence[str | None], code: dict[str, int], smoothing: float
) -> npt.NDArray[np.float64]:
    """Smoothed share of each row's neighbours per modelled tenant, ``(n, T)``; neighbours that are missing
    (-1), unlabeled or of a tenant too small to model are not counted."""
    n_tenants = len(code)
    tenant_code = np.array([code.get(t, -1) if t is not None else -1 for t in tenants] + [-1], dtype=np.int64)
    neigh_codes = tenant_code[neighbours]  # -1 (no neighbour) indexes the trailing -1
    counts = np.zeros((len(neighbours), n_tenants), dtype=np.float64)
    rows, cols = np.nonzero(neigh_codes >= 0)
    np.add.at(counts, (rows, neigh_codes[rows, cols]), 1.0)
    labelled = counts.sum(axis=1, keepdims=True)
    return (counts + smoothing / n_tenants) / (labelled + smoothing)


def misfiled_scores(
    proba: npt.NDArray[np.float64], share: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], weight: float,
    lexical: npt.NDArray[np.float64] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Score (model [+ lexical model] + ``weight`` x neighbour log-odds against the own tenant) and likely
    other tenant per row."""
    at = np.arange(len(labels))
    models = [proba] if lexical is None else [proba, lexical]
    score = weight * _log_odds(share[at, labels])
    joint = weight * np.log(share)
    for p in models:
        score = score + _log_odds(p[at, labels])
        joint = joint + np.log(np.clip(p, _EPS, 1.0))
    joint[at, labels] = -np.inf
    return score, joint.argmax(axis=1).astype(np.int64)


def tenant_separability(
    models: Sequence[npt.NDArray[np.float64]], labels: npt.NDArray[np.int64]
) -> dict[str, float]:
    """How well out-of-fold tenant predictions (argmax of the models' summed log-probabilities) beat always
    guessing the largest tenant: accuracy, majority share, lift (share of the possible gain) and z (in
    binomial standard errors of the majority guess)."""
    joint = sum(np.log(np.clip(p, _EPS, 1.0)) for p in models)
    return separability_of(float(np.mean(np.asarray(joint).argmax(axis=1) == labels)), labels)


def separability_of(accuracy: float, labels: npt.NDArray[np.int64]) -> dict[str, float]:
    """:func:`tenant_separability`'s measures for a given out-of-fold ``accuracy`` on ``labels``."""
    majority = float(np.bincount(labels).max() / len(labels))
    spread = np.sqrt(majority * (1.0 - majority) / len(labels))
    gain = accuracy - majority
    return {"accuracy": accuracy, "majority": majority, "lift": gain / (1.0 - majority) if majority < 1 else 0.0,
            "z": gain / spread if spread > 0 else 0.0}


def cell_partitions(points: int, pool: int, most: int) -> int:
    """How many partitions into cells the second separability test pools: enough that about ``pool``
    out-of-fold predictions are pooled, at least one, at most ``most`` (the test's cost grows with ``points``,
    its noise falls with them)."""
    return max(1, min(most, -(-pool // max(1, points))))


def beyond_lift_z(accuracy: float, majority: float, n: int, min_lift: float) -> float:
    """How many binomial standard errors ``accuracy`` (on ``n`` points) lies above the accuracy of lift
    ``min_lift`` over guessing the largest tenant (share ``majority``): positive only when the tenants are told
    apart better than ``min_lift``; -inf when there is one tenant."""
    line = majority + min_lift * (1.0 - majority)
    spread = np.sqrt(line * (1.0 - line) / max(1, n))
    if spread <= 0:
        return float("inf") if accuracy > line else float("-inf")
    return float((accuracy - line) / spread)


def tail_threshold(score: npt.NDArray[np.float64], fp_budget: float, *, normal: bool = True) -> float:
    """Score that a normal (or exponential) distribution fitted to the bulk of ``score`` (its median and
    90th percentile) expects only ``fp_budget`` of the points to reach; ``inf`` when the fit is degenerate."""
    if len(score) < 20:
        return float("inf")
    q50, q90 = np.quantile(score, [0.5, 0.9])
    return tail_of_bulk(float(q50), float(q90), fp_budget, normal=normal)


def tail_of_bulk(q50: float, q90: float, fp_budget: float, *, normal: bool = True) -> float:
    """``tail_threshold`` from the bulk's median and 90th percentile (kept in each finding's evidence, so a
    benchmark can re-draw the lines at other budgets)."""
    if not 0.0 < fp_budget < 0.1:
        return float("inf")
    if not normal:
        beta = (q90 - q50) / np.log(5.0)
        return float(q90 + beta * np.log(0.1 / fp_budget)) if beta > 0 else float("inf")
    unit = NormalDist()
    sigma = (q90 - q50) / unit.inv_cdf(0.9)
    return float(q50 + sigma * unit.inv_cdf(1.0 - fp_budget)) if sigma > 0 else float("inf")
