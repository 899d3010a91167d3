"""The shared neighbour graph built across Ray workers (issue 18 item 4), IVF style: a coarse k-means splits the
vectors into cells, every point joins its ``spread`` nearest cells (so a neighbour across a border is still met in
a shared cell), each cell's exact k-NN lists are computed by one Ray task, and the driver merges every point's
lists into its top k. A worker holds one cell, never the collection."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.graph import NeighbourGraph, _ExactSearch, _valid_rows, gather
from auditor.types import Distance

log = logging.getLogger(__name__)

#: Points per cell before spreading (a cell's exact search is ``(spread * CELL_POINTS)^2`` similarities).
CELL_POINTS = 8_000
#: Cells every point joins: its nearest centroids.
SPREAD = 3
#: Points the coarse k-means is fitted on.
KMEANS_SAMPLE = 50_000


def cell_neighbours(
    data: npt.NDArray[np.float32], members: npt.NDArray[np.int64], k: int, distance: Distance
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Ray task: the exact ``k`` nearest neighbours of every member of one cell among the cell's members.
    ``data`` are the members' prepared vectors; returns (query rows, neighbour rows, similarities), flat."""
    kk = min(k, len(members) - 1)
    if kk <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    top, sims = _ExactSearch(data, distance).top(np.arange(len(members), dtype=np.int64), kk)
    return np.repeat(members, kk), members[top].ravel(), sims.ravel()


def coarse_cells(
    data: npt.NDArray[np.float32], cells: int, spread: int, seed: int
) -> list[npt.NDArray[np.int64]]:
    """Local rows of each cell: k-means centroids fitted on a sample, every row in its ``spread`` most similar
    (dot product on the prepared vectors: cosine on unit vectors) cells."""
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(seed)
    sample = data[rng.choice(len(data), size=min(len(data), KMEANS_SAMPLE), replace=False)]
    km = MiniBatchKMeans(n_clusters=cells, random_state=seed, n_init=3, batch_size=4096).fit(sample)
    centroids = km.cluster_centers_.astype(np.float32)
    nearest = np.empty((len(data), spread), dtype=np.int64)
    sq = (centroids * centroids).sum(axis=1)
    for start in range(0, len(data), 65_536):
        block = data[start : start + 65_536]
        scores = block @ centroids.T - 0.5 * sq  # nearest centroid in Euclidean terms
        part = np.argpartition(-scores, spread - 1, axis=1)[:, :spread]
        nearest[start : start + len(block)] = part
    order = np.argsort(nearest.ravel(), kind="stable")
    rows = np.repeat(np.arange(len(data), dtype=np.int64), spread)[order]
    bounds = np.searchsorted(nearest.ravel()[order], np.arange(cells + 1))
    return [rows[bounds[c] : bounds[c + 1]] for c in range(cells)]


def merge_lists(
    n: int, k: int, query: npt.NDArray[np.int64], found: npt.NDArray[np.int64], sims: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Every point's candidates from all its cells merged: duplicates dropped, the ``k`` most similar kept
    (``-1`` / ``-inf`` padded)."""
    order = np.lexsort((-sims, found, query))  # by point, then neighbour, best similarity first
    query, found, sims = query[order], found[order], sims[order]
    first = np.ones(len(query), dtype=bool)
    first[1:] = (query[1:] != query[:-1]) | (found[1:] != found[:-1])
    query, found, sims = query[first], found[first], sims[first]
    order = np.lexsort((-sims, query))
    query, found, sims = query[order], found[order], sims[order]
    starts = np.searchsorted(query, query, side="left")
    rank = np.arange(len(query)) - starts
    keep = rank < k
    indices = np.full((n, k), -1, dtype=np.int64)
    out = np.full((n, k), -np.inf, dtype=np.float32)
    indices[query[keep], rank[keep]] = found[keep]
    out[query[keep], rank[keep]] = sims[keep]
    return indices, out


def distributed_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    seed: int = 0,
    cell_points: int = CELL_POINTS,
    spread: int = SPREAD,
) -> NeighbourGraph:
    """The collection's ``k``-NN graph from per-cell exact searches on Ray workers (see the module). Same shape and
    meaning as :func:`auditor.graph.build_graph`'s (rows of the point table, similarities higher = closer)."""
    import ray

    n = len(vectors)
    rows = _valid_rows(n, valid)
    m = len(rows)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    if min(k, m - 1) <= 0:
        return NeighbourGraph(indices, sims, distance, exact=False)
    data = gather(vectors, rows, distance)
    cells = max(1, math.ceil(m / cell_points))
    spread = min(spread, cells)
    members = coarse_cells(data, cells, spread, seed) if cells > 1 else [np.arange(m, dtype=np.int64)]
    task = ray.remote(cell_neighbours).options(num_cpus=1, max_retries=2)
    refs = [task.remote(data[cell], cell, k, distance) for cell in members if len(cell) > 1]
    del data
    parts: list[Any] = ray.get(refs)
    query = np.concatenate([p[0] for p in parts])
    found = np.concatenate([p[1] for p in parts])
    found_sims = np.concatenate([p[2] for p in parts])
    local, local_sims = merge_lists(m, k, query, found, found_sims)
    indices[rows] = np.where(local >= 0, rows[np.maximum(local, 0)], -1)
    sims[rows] = local_sims
    log.info("distributed %d-NN graph over %d points: %d cells, each point in %d", k, m, cells, spread)
    return NeighbourGraph(indices, sims, distance, exact=False)
