"""Per-tenant neighbour lists from the shared collection graph (issue 18 item 0): where the graph already holds a
point's k nearest points of its own tenant they are its exact in-tenant lists, only the rest are searched, and the
tenant-outlier findings (VA302) are those of a neighbour graph built inside each tenant."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from support import build_qdrant_store, load_jsonl, run_scan

import detectors.outliers as outliers
from auditor.graph import exact_graph, search_within, within_group
from auditor.types import Distance

K = 10


@pytest.fixture(scope="module")
def corpus(embed: Any) -> tuple[np.ndarray, list[str], list[str]]:
    """Real passages of three tenants that differ in content (wikipedia, pubmed, e-mails), plus two pubmed
    abstracts filed under e-mails (ordinary in the collection, odd in their tenant)."""
    parts = [("wiki", load_jsonl("wikipedia_en.jsonl")[:200]), ("med", load_jsonl("pubmed.jsonl")[:120]),
             ("mail", load_jsonl("emails.jsonl")[:80]), ("mail", load_jsonl("pubmed.jsonl")[120:122])]
    texts = [r["text"] for _, rows in parts for r in rows]
    tenants = [t for t, rows in parts for _ in rows]
    return embed(texts), texts, tenants


def _tenant_graph(vectors: np.ndarray, tenants: list[str], tenant: str) -> Any:
    return exact_graph(vectors, K, Distance.COSINE, np.array([t == tenant for t in tenants]))


def _same_list(idx: Any, sims: Any, truth_idx: Any, truth_sims: Any) -> None:
    """The same neighbours and similarities, up to which of several exactly tied points fills the last places."""
    np.testing.assert_allclose(sims, truth_sims, atol=1e-5)
    above = sims > sims[-1] + 1e-5
    assert set(idx[above]) == set(truth_idx[truth_sims > truth_sims[-1] + 1e-5])


def test_complete_lists_from_the_shared_graph_are_the_exact_tenant_lists(corpus: Any) -> None:
    vectors, _, tenants = corpus
    shared = exact_graph(vectors, 2 * K, Distance.COSINE)
    answered = 0
    for tenant in ("wiki", "med", "mail"):
        rows = np.flatnonzero([t == tenant for t in tenants])
        members = np.zeros(len(tenants), dtype=bool)
        members[rows] = True
        idx, sims, complete = within_group(shared, rows, members, K)
        truth = _tenant_graph(vectors, tenants, tenant)
        assert complete.any()
        answered += int(complete.sum())
        for i in np.flatnonzero(complete):
            _same_list(idx[i], sims[i], truth.indices[rows[i]], truth.sims[rows[i]])
        # a short list holds only the tenant's points the shared graph had, closest first
        for i in np.flatnonzero(~complete):
            got = idx[i][idx[i] >= 0]
            assert members[got].all() and len(got) < K
            assert np.all(np.diff(sims[i][: len(got)]) <= 1e-6)
        # the rows left short, searched inside the tenant, get the exact lists too
        short = rows[~complete]
        if len(short):
            found, found_s = search_within(vectors, short, rows, K, Distance.COSINE)
            for j, row in enumerate(short):
                _same_list(found[j], found_s[j], truth.indices[row], truth.sims[row])
    # tenants of different content: most points' tenant lists come from the shared graph
    assert answered >= 0.5 * len(tenants)


@pytest.mark.parametrize(("method", "distance"), [("knn", "cosine"), ("lof", "dot")])
def test_tenant_outliers_are_those_of_graphs_built_inside_each_tenant(
    corpus: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, method: str, distance: str
) -> None:
    """kNN distance and LOF (whose shift of signed dot-product dissimilarities stays per tenant)."""
    vectors, texts, tenants = corpus
    store = build_qdrant_store(tmp_path / "store", vectors,
                               [{"text": x, "tenant": t} for x, t in zip(texts, tenants, strict=True)],
                               distance=distance)
    params = {"outlier": {"method": method, "z": 3.0 if method == "knn" else 2.0}}
    reused = run_scan(store, f"sqlite:///{tmp_path / 'a.db'}", detectors=["outlier", "misfiled"], params=params)
    assert any("taken from the shared graph" in note for note in reused.notes), reused.notes

    def nothing_complete(graph: Any, rows: Any, group: Any, k: int) -> Any:
        idx, sims, complete = within_group(graph, rows, group, k)
        return idx, sims, np.zeros_like(complete)

    # the earlier behaviour: every tenant's own graph built from scratch (ctx.subgraph)
    monkeypatch.setattr(outliers, "within_group", nothing_complete)
    built = run_scan(store, f"sqlite:///{tmp_path / 'b.db'}", detectors=["outlier", "misfiled"], params=params)
    assert not any("taken from the shared graph" in note for note in built.notes)

    def va302(result: Any) -> dict[Any, float]:
        return {r.finding.point_id: r.finding.score for r in result.findings if r.finding.rule_id == "VA302"}

    a, b = va302(reused), va302(built)
    assert a, "the foreign passages should be tenant outliers"
    assert a.keys() == b.keys()
    assert all(a[p] == pytest.approx(b[p], rel=1e-4, abs=1e-4) for p in a)
    assert ({(r.finding.rule_id, r.finding.point_id, r.finding.effective_severity) for r in reused.findings}
            == {(r.finding.rule_id, r.finding.point_id, r.finding.effective_severity) for r in built.findings})
