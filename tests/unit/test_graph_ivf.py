"""The IVF neighbour graph (issue 18 item 0): exact similarities inside coarse cells, used only where its sampled
recall@10 reaches ``IVF_MIN_RECALL``; per-group (tenant) searches through the same cells; the threshold top-k."""

from __future__ import annotations

import numpy as np
import pytest

import auditor.graph as graph
from auditor.graph import build_graph, exact_graph, group_search, ivf_graph, top_k
from auditor.types import Distance


def clustered(n: int, dim: int = 64, per_cluster: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around n / per_cluster random centres (the shape of benchmarks/graph_speed.synthetic)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // per_cluster), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.45 * rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


@pytest.fixture(autouse=True)
def small_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells of 128 points, so a few thousand points make dozens of cells."""
    monkeypatch.setattr(graph, "IVF_CELL_POINTS", 128)


@pytest.mark.parametrize("torch_from", [0, 10**12])
def test_top_k_returns_the_largest_entries_in_order(monkeypatch: pytest.MonkeyPatch, torch_from: int) -> None:
    monkeypatch.setattr(graph, "_TORCH_TOPK_ELEMENTS", torch_from)  # 0: torch (where installed), else numpy
    rng = np.random.default_rng(3)
    s = rng.normal(size=(300, 777)).astype(np.float32)
    s[:, 5] = -np.inf
    s[7, :] = 1.0  # a row of ties: any 12 columns, all 1.0
    top, top_s = top_k(s, 12)
    want = -np.sort(-s, axis=1)[:, :12]
    np.testing.assert_array_equal(top_s, want)  # selection, no arithmetic: the same values
    np.testing.assert_array_equal(np.take_along_axis(s, top, axis=1), top_s)
    assert all(len(set(row)) == 12 for row in top)


def test_ivf_graph_lists_are_exact_pairs_with_high_recall() -> None:
    x = clustered(6_000)
    truth = exact_graph(x, 10, Distance.COSINE)
    g = ivf_graph(x, 10, Distance.COSINE)
    assert g is not None and not g.exact and g.partition is not None
    assert g.partition.nearest.shape[0] == len(x) and g.partition.cells == round(len(x) / 128)
    assert recall_at(g.indices, truth.indices) >= graph.IVF_MIN_RECALL
    assert not np.any(g.indices == np.arange(len(x))[:, None])
    assert np.all(np.diff(g.sims, axis=1) <= 1e-6)  # closest first
    # every listed similarity is the pair's cosine
    pair = np.einsum("nd,nkd->nk", x, x[g.indices])
    np.testing.assert_allclose(g.sims, pair, atol=1e-5)


@pytest.mark.parametrize("distance", [Distance.EUCLID, Distance.DOT])
def test_ivf_graph_other_distances_with_mixed_norms(distance: Distance) -> None:
    rng = np.random.default_rng(2)
    x = clustered(4_000) * rng.uniform(0.8, 1.25, size=(4_000, 1)).astype(np.float32)
    truth = exact_graph(x, 10, distance)
    g = ivf_graph(x, 10, distance)
    assert g is not None
    assert recall_at(g.indices, truth.indices) >= 0.97
    assert not np.any(g.indices == np.arange(len(x))[:, None])


def test_invalid_rows_are_neither_listed_nor_partitioned() -> None:
    x = clustered(3_000)
    valid = np.ones(len(x), dtype=bool)
    valid[::7] = False
    g = ivf_graph(x, 10, Distance.COSINE, valid)
    assert g is not None and g.partition is not None
    assert np.all(g.indices[~valid] == -1) and not np.isin(np.flatnonzero(~valid), g.indices).any()
    assert np.all(g.partition.nearest[~valid] == -1) and np.all(g.partition.nearest[valid] >= 0)


def test_without_structure_the_recall_check_sends_the_graph_to_nn_descent() -> None:
    """Uniform random directions in 256 dimensions have no cells to find neighbours in: IVF declines."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4_000, 256)).astype(np.float32)
    assert ivf_graph(x, 10, Distance.COSINE) is None
    g = build_graph(x, 10, Distance.COSINE, exact_limit=100)
    assert not g.exact and g.partition is None  # NN-descent's graph


def test_manhattan_is_never_ivf() -> None:
    assert ivf_graph(clustered(2_000), 10, Distance.MANHATTAN) is None


def test_group_search_finds_round_robin_groups_neighbours() -> None:
    """Ten groups dealt round-robin: every group's neighbours lie ten times farther out in collection terms."""
    x = clustered(8_000, per_cluster=200)
    g = ivf_graph(x, 20, Distance.COSINE)
    assert g is not None and g.partition is not None
    group = np.arange(len(x)) % 10
    for label in (0, 3):
        rows = np.flatnonzero(group == label)
        members = np.zeros(len(x), dtype=bool)
        members[rows] = True
        found = group_search(x, g.partition, rows, rows, 10, Distance.COSINE)
        assert found is not None
        idx, sims = found
        truth = exact_graph(x, 10, Distance.COSINE, members)
        assert members[idx[idx >= 0]].all() and not np.any(idx == rows[:, None])
        assert recall_at(idx, truth.indices[rows]) >= graph.IVF_MIN_RECALL
        np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", x[rows], x[idx]), atol=1e-5)


def test_group_search_declines_where_its_recall_is_not_met(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered(3_000)
    g = ivf_graph(x, 10, Distance.COSINE)
    assert g is not None and g.partition is not None
    rows = np.flatnonzero(np.arange(len(x)) % 3 == 0)
    assert group_search(x, g.partition, rows, rows, 10, Distance.COSINE) is not None
    monkeypatch.setattr(graph, "IVF_MIN_RECALL", 1.01)  # no sample can reach it: the caller must search otherwise
    assert group_search(x, g.partition, rows, rows, 10, Distance.COSINE) is None


def test_a_noisy_collection_declines_ivf() -> None:
    """A fifth of the points without structure: the sampled recall falls under the bar."""
    x = clustered(4_000)
    noise = np.random.default_rng(5).normal(size=(1_000, x.shape[1])).astype(np.float32)
    x = np.concatenate([x, noise / np.linalg.norm(noise, axis=1, keepdims=True)])
    assert ivf_graph(x, 10, Distance.COSINE, seed=1) is None


def test_far_lists_are_searched_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spread 1 misses the neighbours of points at a cell's border; their lists then look far, like an outlier's,
    and are searched again through more cells: no point keeps a list much farther than its exact one."""
    monkeypatch.setattr(graph, "IVF_SPREADS", (1,))
    x = clustered(6_000, per_cluster=100)
    truth = exact_graph(x, 10, Distance.COSINE)
    g = ivf_graph(x, 10, Distance.COSINE)
    assert g is not None and g.partition is not None and g.partition.spread == 1
    mean = g.sims.mean(axis=1)
    gap = truth.sims.mean(axis=1) - mean
    assert gap.min() >= -1e-5  # a list is never closer than the exact one
    assert gap.max() < 0.05
    median = np.median(mean)
    far = (median - mean) / (1.4826 * np.median(np.abs(mean - median))) >= 3.0  # where outliers are flagged
    assert far.any() and gap[far].max() < 0.005
    monkeypatch.setattr(graph, "_REPAIR_SHARE", 0.0)  # without the second search, border points stand out
    bare = ivf_graph(x, 10, Distance.COSINE)
    assert bare is not None
    assert (truth.sims.mean(axis=1) - bare.sims.mean(axis=1)).max() > 0.05
