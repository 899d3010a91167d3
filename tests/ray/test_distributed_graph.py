"""The neighbour graph built across Ray workers (k-means cells, each point in its nearest cells, merged top-k lists):
neighbour recall@10 against the exact graph for every distance, and a scan with `graph = "distributed"` agreeing with
the in-process engine (pynndescent) on >= 99% of findings beyond the exact limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor.engine import Scanner, ScanOptions
from auditor.graph import exact_graph
from auditor.ledger import Ledger
from auditor.ray_engine import RayOptions, RayScanner
from auditor.ray_graph import distributed_graph, merge_lists
from auditor.registry import connector_for, detector_classes
from auditor.types import Distance, FieldMap


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around n/100 random centres (0.45 noise per axis), some points off any cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 100), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.45 * rng.normal(size=(n, dim)).astype(np.float32)
    x[rng.choice(n, n // 200, replace=False)] = rng.normal(size=(n // 200, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(graph: Any, truth: Any, rows: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(graph.indices[r, :k]) & set(truth.indices[r, :k])) / k for r in rows]))


@pytest.mark.parametrize("distance", [Distance.COSINE, Distance.DOT, Distance.EUCLID])
def test_recall_against_the_exact_graph(ray_cluster: Any, distance: Distance) -> None:
    x = clustered(6000, 32, seed=3) * np.random.default_rng(4).uniform(0.5, 2.0, size=(6000, 1)).astype(np.float32)
    valid = np.ones(len(x), dtype=bool)
    valid[[5, 77]] = False  # rows a scan leaves out (zero vectors, wrong dimension) are never listed
    graph = distributed_graph(x, 10, distance, valid, cell_points=500)  # 12 cells: most neighbours cross one
    truth = exact_graph(x, 10, distance, valid)
    rows = np.flatnonzero(valid)
    assert recall(graph, truth, rows, 10) >= 0.98
    assert (graph.indices[[5, 77]] == -1).all() and not np.isin(graph.indices, [5, 77]).any()
    same = graph.indices[rows, 0] == truth.indices[rows, 0]
    assert np.allclose(graph.sims[rows, 0][same], truth.sims[rows, 0][same], atol=1e-5)  # the exact similarity
    assert (np.diff(graph.sims[rows], axis=1) <= 1e-6).all()  # closest first
    assert not (graph.indices[rows] == rows[:, None]).any()  # never itself


def test_merge_keeps_each_neighbour_once_best_first() -> None:
    query = np.array([0, 0, 0, 0, 1], dtype=np.int64)
    found = np.array([2, 1, 2, 3, 0], dtype=np.int64)
    sims = np.array([0.9, 0.5, 0.9, 0.7, 0.5], dtype=np.float32)
    idx, s = merge_lists(3, 2, query, found, sims)
    assert idx.tolist() == [[2, 3], [0, -1], [-1, -1]] and s[0].tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.slow
def test_scan_with_the_distributed_graph_agrees_with_the_in_process_engine(ray_cluster: Any, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 24_000  # beyond the exact limit (20,000): in process, pynndescent
    x = clustered(n, 48, seed=8)
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({
        "id": np.arange(n, dtype=np.int64),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]),
        "tenant": [("acme", "globex", "initech")[i % 3] for i in range(n)],
    }), path, row_group_size=6000)
    classes = detector_classes()
    results = []
    for name, ray in (("local", False), ("ray", True)):
        detectors = [classes[d]() for d in ("integrity", "outlier", "near-duplicate", "hub")]
        options = ScanOptions(field_map=FieldMap(tenant="tenant"), show_progress=False)
        with connector_for(f"file://{path}", collection="docs") as conn:
            ledger = Ledger(f"sqlite:///{tmp_path / name}.db").open()
            scanner = (RayScanner(ledger, conn, detectors, options, RayOptions(graph="distributed")) if ray
                       else Scanner(ledger, conn, detectors, options))
            results.append(scanner.run())
    local, on_ray = results
    assert local.status == on_ray.status == "completed"
    assert any(n.startswith("ray engine: neighbour graph (") for n in on_ray.notes), on_ray.notes
    answers = [{(r.finding.rule.id, str(r.finding.point_id), r.finding.effective_severity.value)
                for r in res.findings} for res in results]
    assert len(answers[0]) > 50
    assert len(answers[0] & answers[1]) / len(answers[0] | answers[1]) >= 0.99
