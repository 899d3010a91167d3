"""The shared neighbour graph built across Ray workers (issue 18 item 4): the in-process engine's IVF graph
(:func:`auditor.graph.ivf_graph`) with its cells searched by Ray tasks. The driver fits the coarse cells, finds
every point's nearest ones and chooses the spread by the sampled recall test, exactly as in process; each Ray task
then searches a group of whole cells (one matrix product per cell: the cell's points against the points that count
the cell among their ``spread`` nearest) and sends back final top-k lists; the driver searches the few far-looking
lists again, as in process. A worker holds its cells' candidate rows, never the collection, and the graph is the
in-process engine's, list for list. Where no spread reaches the recall the in-process engine asks, the driver builds
the graph as in process (NN-descent)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.graph import (
    IVF_CELL_POINTS,
    IVF_SPREADS,
    RECALL_SAMPLE,
    CoarseCells,
    NeighbourGraph,
    approximate_graph,
    build_graph,
    choose_spread,
    coarse_nearest,
    gather,
    ivf_search,
    repair_far_lists,
    valid_row_numbers,
)
from auditor.types import Distance

log = logging.getLogger(__name__)

#: Points searched per Ray task (whole cells): a task holds about ``spread`` times as many candidate rows.
TASK_POINTS = 32_000


@dataclass
class GraphReport:
    """How a distributed graph was built, for the scan notes: ``tasks == 0`` when the driver built it."""

    points: int = 0
    cells: int = 0
    spread: int = 0
    recall: float = float("nan")
    tasks: int = 0
    shipped_per_point: float = 0.0
    repaired: int = 0

    def describe(self) -> str:
        if not self.tasks and self.cells:
            return (f"no spread of {IVF_SPREADS} reached the sampled recall@10 the in-process engine asks "
                    f"({self.recall:.3f} at best), so the driver built the graph as in process (NN-descent)")
        if not self.tasks:
            return "the driver built the graph as in process (too few points, or Manhattan distance)"
        return (f"{self.cells:,} k-means cells in {self.tasks} task(s), each point searched in its nearest among "
                f"the points that count it among their {self.spread} nearest (sampled recall@10 {self.recall:.4f}; "
                f"{self.shipped_per_point:.2f} rows shipped per point); {self.repaired:,} far-looking list(s) "
                "searched again on the driver")


def cells_neighbours(
    data: npt.NDArray[np.float32], nearest: npt.NDArray[np.int32], queries: npt.NDArray[np.int64], kk: int,
    distance: Distance, spread: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Ray task: :func:`auditor.graph.ivf_search` over one task's rows (``data``: every candidate of its cells,
    ascending table order; ``queries``: positions of the rows searched in them). Local positions, closest first."""
    return ivf_search(data, nearest, queries, kk, distance, spread)


def task_cells(nearest: npt.NDArray[np.int32], cells: int, task_points: int) -> list[npt.NDArray[np.int64]]:
    """Cells grouped into tasks (whole cells, in cell order) of about equal work: a cell costs its searched points
    times its candidates, a task about ``task_points`` average cells' worth."""
    searched = np.bincount(nearest[:, 0], minlength=cells).astype(np.float64)
    cost = searched * np.bincount(nearest.ravel(), minlength=cells)
    budget = task_points / max(searched.sum(), 1.0) * cost.sum()
    groups: list[list[int]] = [[]]
    filled = 0.0
    for cell in range(cells):
        if filled >= budget:
            groups.append([])
            filled = 0.0
        groups[-1].append(cell)
        filled += float(cost[cell])
    return [np.asarray(g, dtype=np.int64) for g in groups if g]


def task_rows(nearest: npt.NDArray[np.int32], groups: list[npt.NDArray[np.int64]]) -> Iterator[npt.NDArray[np.int64]]:
    """Per group of cells, the rows (ascending) that are a candidate in any of them."""
    task_of = np.empty(int(nearest.max()) + 1, dtype=np.int64)
    for t, group in enumerate(groups):
        task_of[group] = t
    pairs = np.unique(task_of[nearest] * len(nearest) + np.arange(len(nearest))[:, None])  # task-major, unique
    bounds = np.searchsorted(pairs, np.arange(len(groups) + 1) * len(nearest))
    for t in range(len(groups)):
        yield pairs[bounds[t] : bounds[t + 1]] - t * len(nearest)


def _next_ready(pending: dict[Any, Any]) -> Any:
    """The first finished of ``pending``'s tasks, waiting half a second at a time so Ctrl-C reaches the driver."""
    import ray

    while True:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        if ready:
            return ready[0]


def distributed_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    seed: int = 0,
    cell_points: int = IVF_CELL_POINTS,
    spreads: tuple[int, ...] = IVF_SPREADS,
    task_points: int = TASK_POINTS,
    in_flight: int | None = None,
    report: GraphReport | None = None,
) -> NeighbourGraph:
    """The collection's ``k``-NN graph, searched cell by cell on Ray workers (see the module). Same shape and
    meaning as :func:`auditor.graph.build_graph`'s (rows of the point table, similarities higher = closer), and
    with the default ``cell_points`` and ``spreads`` the same lists as its IVF graph. At most ``in_flight`` tasks'
    rows (default: two per CPU of the cluster) wait in the object store at once. ``report`` (filled in) says how
    it went."""
    import ray

    report = report if report is not None else GraphReport()
    n = len(vectors)
    rows = valid_row_numbers(n, valid)
    m = report.points = len(rows)
    kk = min(k, m - 1)
    if kk <= 0 or m <= RECALL_SAMPLE:
        return build_graph(vectors, k, distance, valid, seed=seed)
    if distance is Distance.MANHATTAN:  # not a matrix product: NN-descent, as in process
        return approximate_graph(vectors, k, distance, valid, seed=seed)
    data = gather(vectors, rows, distance)
    cells = report.cells = max(1, round(m / cell_points))
    near = coarse_nearest(data, cells, seed)
    local = np.arange(m, dtype=np.int64)
    spread, report.recall = choose_spread(data, near, local, kk, distance, spreads, seed)
    if spread is None:
        del data
        return approximate_graph(vectors, k, distance, valid, seed=seed)
    report.spread = spread
    top = np.full((m, kk), -1, dtype=np.int64)
    top_s = np.full((m, kk), -np.inf, dtype=np.float32)
    groups = task_cells(near[:, :spread], cells, task_points)
    task = ray.remote(cells_neighbours).options(num_cpus=1, max_retries=2)
    window = in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, npt.NDArray[np.int64]] = {}

    queries: dict[Any, npt.NDArray[np.int64]] = {}

    def collect(ref: Any) -> None:
        part, searched = pending.pop(ref), queries.pop(ref)
        found, found_s = ray.get(ref)
        top[searched] = np.where(found >= 0, part[np.maximum(found, 0)], -1)
        top_s[searched] = found_s

    try:
        for group, part in zip(groups, task_rows(near[:, :spread], groups), strict=True):
            while len(pending) >= window:
                collect(_next_ready(pending))
            own = np.flatnonzero(np.isin(near[part, 0], group))  # positions of the rows searched in the task
            ref = task.remote(data[part], near[part], own, kk, distance, spread)
            pending[ref], queries[ref] = part, part[own]
            report.shipped_per_point += len(part) / m
        while pending:
            collect(_next_ready(pending))
    except BaseException:  # Ctrl-C or a task that kept failing: stop the rest
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    report.tasks = len(groups)
    report.repaired = repair_far_lists(data, near, local, top, top_s, distance)
    del data
    log.info("distributed %d-NN graph over %d points: %s", k, m, report.describe())
    cells_of = CoarseCells(np.full((n, near.shape[1]), -1, dtype=np.int32), cells, spread, report.recall)
    cells_of.nearest[rows] = near
    graph = NeighbourGraph(np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32), distance,
                           exact=False, partition=cells_of)
    graph.indices[rows, :kk] = np.where(top >= 0, rows[np.maximum(top, 0)], -1)  # local rows to table rows
    graph.sims[rows, :kk] = top_s
    return graph
