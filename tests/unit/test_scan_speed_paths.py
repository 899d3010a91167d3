"""The speed paths of issue 18 item 0 give the answers of the paths they replace: the argpartition top-k of few
columns against the threshold top-k (ties at the cut, -inf, NaN), and the misfiled tenant models fitted one fold per
core from one read of the sample (and the points outside it scored a block per core) against the folds and blocks
one after another."""

from __future__ import annotations

import numpy as np
import pytest

import auditor.graph as graph
from auditor.types import Distance
from detectors import tenant_misfiled
from detectors.tenant_misfiled import TableRows, out_of_fold_proba


def _reference_top(s: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``kk`` largest entries by a plain sort: value descending, then column ascending (the order the
    threshold top-k documents); ``-inf`` entries count like any value (a row of fewer finite ones lists them)."""
    top = np.array([sorted(range(s.shape[1]), key=lambda j, row=row: (-row[j], j))[:kk] for row in s.tolist()],
                   dtype=np.int64).reshape(len(s), kk)
    return top, np.take_along_axis(s, top, axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_threshold_top_k_orders_by_value_then_column(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for _ in range(30):
        rows, cols = int(rng.integers(1, 40)), int(rng.integers(2, 700))
        kk = int(rng.integers(1, min(cols, 70) + 1))
        s = rng.integers(-4, 4, size=(rows, cols)).astype(np.float32) / 4  # ties everywhere
        s[rng.random(s.shape) < 0.2] = -np.inf
        s[rng.random(s.shape) < 0.1] = -0.0  # equal to 0.0: a tie, ordered by column
        s[rng.random(s.shape) < 0.02] = np.inf
        got, got_s = graph._top_threshold(s, kk)
        want, want_s = _reference_top(s, kk)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_s, want_s)


@pytest.mark.parametrize("seed", range(6))
def test_top_few_equals_the_threshold_top_k_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        rows, cols = int(rng.integers(1, 80)), int(rng.integers(2, graph._FEW_COLUMNS + 1))
        kk = int(rng.integers(1, cols))
        s = rng.integers(-4, 4, size=(rows, cols)).astype(np.float32)  # few values: ties at the cut everywhere
        s[rng.random(s.shape) < 0.15] = -np.inf
        s[0, : max(1, cols - kk + 1)] = -np.inf  # fewer finite entries than kk in one row (where cols allow)
        if rows > 1:
            s[1, int(rng.integers(0, cols))] = np.nan
        want, want_s = graph._top_threshold(s, kk)
        got, got_s = graph._top_few(s, kk)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_s, want_s)
        assert got.dtype == want.dtype and got_s.dtype == want_s.dtype


def test_top_k_of_point_to_centroid_blocks_takes_the_few_columns_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    s = rng.normal(size=(5_000, 98)).astype(np.float32)
    s[10, [3, 40]] = s[10, 7]  # a tie that the cut may fall on
    calls: list[int] = []
    few = graph._top_few
    monkeypatch.setattr(graph, "_top_few", lambda a, k: (calls.append(k), few(a, k))[1])
    top, top_s = graph.top_k(s, 16, use_torch=False)
    assert calls == [16]
    want, want_s = graph._top_threshold(s, 16)
    np.testing.assert_array_equal(top, want)
    np.testing.assert_array_equal(top_s, want_s)


def _tenant_vectors(n: int = 3_000, dim: int = 32, tenants: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, tenants, n).astype(np.int64)
    centres = rng.normal(size=(tenants, dim))
    x = (centres[labels] + 2.0 * rng.normal(size=(n, dim))).astype(np.float32)
    return x, labels


def test_misfiled_folds_in_parallel_give_the_sequential_probabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    x, labels = _tenant_vectors()
    rows = np.arange(len(x), dtype=np.int64)
    kw = {"folds": 5, "max_train": 2_000, "c_total": 2000.0, "seed": 0}  # 1,000 points scored outside the sample
    monkeypatch.setattr(tenant_misfiled, "_PREDICT_ROWS", 96)  # ... in eleven blocks, shared between the cores
    parallel = out_of_fold_proba(TableRows(x, rows, Distance.COSINE), labels, **kw)
    monkeypatch.setattr(tenant_misfiled.os, "cpu_count", lambda: 1)  # one worker: the folds one after another
    sequential = out_of_fold_proba(TableRows(x, rows, Distance.COSINE), labels, **kw)
    # a plain array of the same normalised vectors: no sample read ahead, each fold indexes it directly
    dense = out_of_fold_proba(graph.prepare(x, Distance.COSINE), labels, **kw)
    np.testing.assert_array_equal(parallel, sequential)
    np.testing.assert_array_equal(parallel, dense)
    assert parallel.shape == (len(x), 4)
    np.testing.assert_allclose(parallel.sum(axis=1), 1.0, rtol=1e-5)  # float32 models
    assert (parallel.argmax(axis=1) == labels).mean() > 0.5  # the models do separate the tenants
