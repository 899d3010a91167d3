"""The neighbour graph built across Ray workers (the in-process IVF graph's cells, groups of whole cells searched by
Ray tasks): the same lists as the in-process IVF graph, neighbour recall@10 against the exact graph for every
distance, and a scan with `graph = "distributed"` giving the in-process engine's findings beyond the exact limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor.engine import Scanner, ScanOptions
from auditor.graph import exact_graph, ivf_graph
from auditor.ledger import Ledger
from auditor.ray_engine import RayOptions, RayScanner
from auditor.ray_graph import GraphReport, distributed_graph, task_cells, task_rows
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
    # 24 cells of ~250 points in about 6 tasks, two in flight: lists cross borders, results come back out of order
    report = GraphReport()
    graph = distributed_graph(x, 10, distance, valid, cell_points=250, task_points=1000, in_flight=2, report=report)
    assert report.tasks >= 4 and report.cells == 24 and report.spread >= 1, report
    truth = exact_graph(x, 10, distance, valid)
    rows = np.flatnonzero(valid)
    assert recall(graph, truth, rows, 10) >= 0.98
    assert (graph.indices[[5, 77]] == -1).all() and not np.isin(graph.indices, [5, 77]).any()
    same = graph.indices[rows, 0] == truth.indices[rows, 0]
    assert np.allclose(graph.sims[rows, 0][same], truth.sims[rows, 0][same], atol=1e-5)  # the exact similarity
    assert (np.diff(graph.sims[rows], axis=1) <= 1e-6).all()  # closest first
    assert not (graph.indices[rows] == rows[:, None]).any()  # never itself


def test_every_point_is_searched_by_one_task_among_its_candidates() -> None:
    rng = np.random.default_rng(0)
    nearest = np.stack([rng.permutation(40)[:3] for _ in range(5000)]).astype(np.int64)  # 40 cells, spread 3
    groups = task_cells(nearest, 40, 600)
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(40))  # each cell in exactly one task
    searched = np.zeros(len(nearest), dtype=np.int64)
    for group, rows in zip(groups, task_rows(nearest, groups), strict=True):
        assert (np.diff(rows) > 0).all()  # ascending, no row twice
        candidate = np.isin(nearest, group).any(axis=1)
        assert np.array_equal(rows, np.flatnonzero(candidate))  # exactly the rows listing one of the task's cells
        searched[rows[np.isin(nearest[rows, 0], group)]] += 1
    assert (searched == 1).all()


def test_the_lists_are_the_in_process_ivf_graphs(ray_cluster: Any) -> None:
    x = clustered(8000, 48, seed=5)
    valid = np.ones(len(x), dtype=bool)
    valid[[3, 4000]] = False
    local = ivf_graph(x, 12, Distance.COSINE, valid, seed=2)
    assert local is not None and local.partition is not None
    report = GraphReport()
    graph = distributed_graph(x, 12, Distance.COSINE, valid, seed=2, task_points=1500, report=report)
    assert report.tasks >= 4 and report.spread == local.partition.spread
    assert np.array_equal(graph.indices, local.indices)
    assert np.array_equal(graph.sims, local.sims)
    assert graph.partition is not None and np.array_equal(graph.partition.nearest, local.partition.nearest)


def test_without_a_spread_that_reaches_the_recall_the_driver_builds_nn_descent(ray_cluster: Any) -> None:
    x = np.random.default_rng(6).normal(size=(3000, 32)).astype(np.float32)  # no structure: one cell misses much
    report = GraphReport()
    graph = distributed_graph(x, 10, Distance.COSINE, cell_points=100, spreads=(1,), report=report)
    assert report.tasks == 0 and report.cells == 30 and report.recall < 0.98
    assert "the driver built the graph as in process (NN-descent)" in report.describe()
    truth = exact_graph(x, 10, Distance.COSINE)
    assert graph.partition is None and recall(graph, truth, np.arange(3000), 10) >= 0.95


def test_auto_searches_on_the_workers_only_on_a_cluster_of_several_machines(
    ray_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}").open()
    with connector_for(f"file://{tmp_path / 'none.parquet'}", collection="docs") as conn:
        scanner = RayScanner(ledger, conn, [], ScanOptions(show_progress=False), RayOptions(graph="auto"))
        assert scanner.graph_mode() == "driver"  # the test cluster: this one machine
        alive = ray_cluster.nodes()[0]
        monkeypatch.setattr(ray_cluster, "nodes", lambda: [alive, {**alive, "NodeID": "other"}, {"Alive": False}])
        assert scanner.graph_mode() == "distributed"
        assert RayScanner(ledger, conn, [], ScanOptions(), RayOptions(graph="driver")).graph_mode() == "driver"


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
    assert answers[0] == answers[1]  # the in-process engine's IVF graph, list for list: the same findings
    note = next(n for n in on_ray.notes if n.startswith("ray engine: neighbour graph ("))
    assert "task(s), each point searched in its nearest among the points" in note, note
