"""The shared neighbour graph: exact vs approximate agreement on real embeddings, every distance, the memmap
path, and edge cases (fewer points than k, identical vectors, invalid rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_jsonl

from auditor.batching import make_batch
from auditor.context import PointTable
from auditor.graph import approximate_graph, build_graph, exact_graph
from auditor.types import Distance, FieldMap


@pytest.fixture(scope="module")
def wiki_vectors(embed):  # type: ignore[no-untyped-def]
    rows = load_jsonl("wikipedia_en.jsonl")[:240]
    return embed([r["text"] for r in rows])


def _brute(x: np.ndarray, k: int, distance: Distance) -> np.ndarray:
    if distance is Distance.COSINE:
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = u @ u.T
    elif distance is Distance.DOT:
        s = x @ x.T
    else:
        s = -np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("distance", [Distance.COSINE, Distance.DOT, Distance.EUCLID])
def test_exact_graph_matches_brute_force_with_mixed_norms(wiki_vectors: np.ndarray, distance: Distance) -> None:
    rng = np.random.default_rng(1)
    x = wiki_vectors * rng.uniform(0.5, 3.0, size=(len(wiki_vectors), 1)).astype(np.float32)  # mixed norms
    g = exact_graph(x, 10, distance)
    assert g.exact and g.indices.shape == (len(x), 10)
    assert _recall(g.indices, _brute(x, 10, distance)) > 0.999
    assert np.all(np.diff(g.sims, axis=1) <= 1e-6)  # closest first
    assert not np.any(g.indices == np.arange(len(x))[:, None])  # self excluded


@pytest.mark.parametrize("distance", [Distance.COSINE, Distance.EUCLID, Distance.DOT])
def test_approximate_graph_recall_on_real_embeddings(wiki_vectors: np.ndarray, distance: Distance) -> None:
    truth = exact_graph(wiki_vectors, 10, distance)
    approx = approximate_graph(wiki_vectors, 10, distance)
    assert not approx.exact
    assert _recall(approx.indices, truth.indices) >= 0.98
    assert not np.any(approx.indices == np.arange(len(wiki_vectors))[:, None])
    # similarities of the found pairs agree with the exact ones (float32 NN-descent distances or exact dot)
    both = np.flatnonzero(approx.indices[:, 0] == truth.indices[:, 0])
    assert len(both) > 0.9 * len(wiki_vectors)
    assert np.allclose(approx.sims[both, 0], truth.sims[both, 0], atol=1e-4)


def test_build_graph_runs_on_the_point_table_memmap(tmp_path: Path, wiki_vectors: np.ndarray) -> None:
    table = PointTable(wiki_vectors.shape[1], spill_dir=tmp_path)
    x = wiki_vectors.copy()
    x[5] = 0.0  # a zero vector is not valid geometry
    for start in range(0, len(x), 100):
        part = x[start : start + 100]
        table.append(make_batch(list(range(start, start + len(part))), part, [{}] * len(part), FieldMap()))
    table.seal()
    try:
        assert isinstance(table.vectors, np.memmap)
        valid = table.valid_mask()
        exact = build_graph(table.vectors, 10, Distance.COSINE, valid)
        approx = build_graph(table.vectors, 10, Distance.COSINE, valid, exact_limit=100)
        assert exact.exact and not approx.exact
        assert np.all(exact.indices[5] == -1) and 5 not in exact.indices and 5 not in approx.indices
        keep = np.flatnonzero(valid)
        assert _recall(approx.indices[keep], exact.indices[keep]) >= 0.98
    finally:
        table.close()


def test_fewer_points_than_k_and_invalid_rows() -> None:
    x = np.eye(4, 8, dtype=np.float32)
    g = build_graph(x, 10, Distance.COSINE)
    assert g.indices.shape == (4, 10)
    assert set(g.indices[0, :3]) == {1, 2, 3} and np.all(g.indices[:, 3:] == -1)
    assert np.all(np.isneginf(g.sims[:, 3:]))
    valid = np.array([True, False, True, True])
    g = build_graph(x, 2, Distance.COSINE, valid)
    assert np.all(g.indices[1] == -1) and 1 not in g.indices
    one = build_graph(x[:1], 5, Distance.EUCLID)
    assert np.all(one.indices == -1)
    approx = approximate_graph(x, 10, Distance.COSINE)
    assert set(approx.indices[0, :3]) == {1, 2, 3}


def test_all_identical_vectors_do_not_list_self() -> None:
    x = np.tile(np.linspace(0.1, 1.0, 16, dtype=np.float32), (50, 1))
    for g in (exact_graph(x, 5, Distance.COSINE), approximate_graph(x, 5, Distance.COSINE)):
        assert not np.any(g.indices == np.arange(50)[:, None])
        assert np.all(g.indices >= 0)
        assert np.allclose(g.sims, 1.0, atol=1e-5)


def _stored(graph, members: np.ndarray):  # type: ignore[no-untyped-def]
    from auditor.statecache import StoredGraph

    rows = np.flatnonzero(members)
    return StoredGraph(rows, graph.indices[rows], graph.sims[rows], graph.distance, graph.exact, len(members))


@pytest.mark.parametrize("distance", [Distance.COSINE, Distance.DOT, Distance.EUCLID])
def test_patched_graph_equals_a_rebuilt_one(wiki_vectors, distance: Distance) -> None:  # type: ignore[no-untyped-def]
    """Moved, deleted, new and invalid points: patching the earlier exact graph gives the exact graph."""
    from auditor.graph import patch_graph

    rng = np.random.default_rng(1)
    before = np.asarray(wiki_vectors[:200], dtype=np.float32) * rng.uniform(0.5, 2.0, size=(200, 1)).astype(np.float32)
    valid_before = np.ones(200, dtype=bool)
    valid_before[7] = False
    earlier = exact_graph(before, 8, distance, valid_before)
    keep = np.setdiff1d(np.arange(200), [3, 50, 51])  # deleted
    now = np.concatenate([before[keep], np.asarray(wiki_vectors[200:220], dtype=np.float32)])  # 20 new points
    moved = [10, 11, 120]
    now[moved] = np.asarray(wiki_vectors[220:223], dtype=np.float32)
    reuse = np.concatenate([keep, np.full(20, -1)]).astype(np.int64)
    reuse[moved] = -1
    valid = np.ones(len(now), dtype=bool)
    valid[6] = False  # earlier row 7 (invalid then, still invalid)
    patched = patch_graph(now, 8, distance, valid, _stored(earlier, valid_before), reuse)
    assert patched is not None
    graph, counts = patched
    rebuilt = exact_graph(now, 8, distance, valid)
    assert np.array_equal(graph.indices, rebuilt.indices)
    np.testing.assert_allclose(graph.sims, rebuilt.sims, rtol=1e-5, atol=1e-5)
    assert counts["reused"] > 100 and counts["searched"] < len(now) // 2


def test_patched_subgraph_follows_membership(wiki_vectors) -> None:  # type: ignore[no-untyped-def]
    """A point that changes group (same vector) leaves one group's graph and joins the other's."""
    from auditor.graph import patch_graph

    x = np.asarray(wiki_vectors[:120], dtype=np.float32)
    group_a = np.arange(120) % 2 == 0
    earlier = exact_graph(x, 5, Distance.COSINE, group_a)
    now_a = group_a.copy()
    now_a[4], now_a[5] = False, True  # 4 left group a, 5 joined it
    reuse = np.arange(120, dtype=np.int64)
    patched = patch_graph(x, 5, Distance.COSINE, now_a, _stored(earlier, group_a), reuse)
    assert patched is not None
    assert np.array_equal(patched[0].indices, exact_graph(x, 5, Distance.COSINE, now_a).indices)
    assert patch_graph(x, 9, Distance.COSINE, now_a, _stored(earlier, group_a), reuse) is None  # wants more k
    assert patch_graph(x, 5, Distance.EUCLID, now_a, _stored(earlier, group_a), reuse) is None  # other distance


def test_disk_cached_nn_descent_builds_pynndescents_own_graph(wiki_vectors: np.ndarray,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    from auditor import nndescent_cache

    cached = approximate_graph(wiki_vectors, 10, Distance.COSINE, seed=3)
    assert nndescent_cache._nn_descent_squared_euclidean.signatures  # the cached kernel ran
    monkeypatch.setattr(nndescent_cache, "cached_nn_descent", contextlib.nullcontext)
    own = approximate_graph(wiki_vectors, 10, Distance.COSINE, seed=3)
    assert np.array_equal(cached.indices, own.indices)
    assert np.array_equal(cached.sims, own.sims)


def test_distances_without_a_cached_kernel_go_to_pynndescent() -> None:
    from pynndescent import distances as pynnd_dist
    from pynndescent.utils import EMPTY_GRAPH

    from auditor.nndescent_cache import _routed

    calls: list[object] = []

    def own(*args: object) -> str:
        calls.append(args[4])
        return "own"

    routed = _routed(own)
    assert routed(np.zeros((3, 2), np.float32), 2, None, 5, pynnd_dist.cosine, 10, 0.001, EMPTY_GRAPH, True,
                  np.zeros((1, 2), np.int32)) == "own"
    assert calls == [pynnd_dist.cosine]


def test_a_kernel_numba_cannot_compile_falls_back_to_pynndescent(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba.core.errors import TypingError
    from pynndescent import distances as pynnd_dist
    from pynndescent.utils import EMPTY_GRAPH

    from auditor import nndescent_cache

    def broken(*args: object) -> None:
        raise TypingError("process_candidates() takes other arguments")

    monkeypatch.setattr(nndescent_cache, "_CACHED", {pynnd_dist.squared_euclidean: broken})
    routed = nndescent_cache._routed(lambda *args: "own")
    assert routed(np.zeros((3, 2), np.float32), 2, None, 5, pynnd_dist.squared_euclidean, 10, 0.001, EMPTY_GRAPH,
                  True, np.zeros((1, 2), np.int32)) == "own"
    assert nndescent_cache._CACHED == {}  # not tried again in this process


def test_kernel_cache_is_dropped_when_pynndescent_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor import nndescent_cache

    kernel = nndescent_cache._nn_descent_manhattan
    marker = Path(kernel._cache._cache_path) / f"{kernel.py_func.__name__}.stamp"
    flushed: list[str] = []
    monkeypatch.setattr(kernel._cache, "flush", lambda: flushed.append("manhattan"))
    monkeypatch.setattr(nndescent_cache._nn_descent_squared_euclidean._cache, "flush", lambda: None)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("pynndescent 0.0 numba 0.0")
    nndescent_cache._flush_if_stale()
    assert flushed == ["manhattan"] and "0.0" not in marker.read_text()
    nndescent_cache._flush_if_stale()  # up to date: nothing dropped
    assert flushed == ["manhattan"]
