"""The neighbour graph shared by every pass-2 detector: k nearest neighbours of every point.

Exact blocked search (float32 matrix products, memory bounded by the block size) up to ``EXACT_LIMIT`` valid
points; an approximate graph (pynndescent) beyond it. Similarities follow the collection's own distance and are
always *higher = closer*: cosine similarity, dot product, or negative Euclidean distance.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from auditor.types import Distance

log = logging.getLogger(__name__)

#: Crossover measured by ``benchmarks/graph_speed.py --crossover`` on 2 cores (384-d): the exact search
#: costs O(n^2 d) and passes pynndescent's build time between 20k and 30k points; below this the exact graph
#: is both faster and free of approximation error (approximate graphs lose near-duplicates).
EXACT_LIMIT = 20_000
#: Elements of one similarity block (rows x all points) held at once: 32M float32 = 128 MiB.
_BLOCK_ELEMENTS = 32 * 1024 * 1024
#: Rows read from the memmap per step while gathering valid vectors.
_GATHER_ROWS = 65_536


@dataclass
class NeighbourGraph:
    """``indices[i]`` are the row numbers of point i's nearest neighbours (closest first, self excluded,
    -1 where fewer than k exist); ``sims[i]`` their similarities (higher = closer, ``-inf`` where absent);
    ``exact`` says whether the graph is exact or approximate."""

    indices: npt.NDArray[np.int64]
    sims: npt.NDArray[np.float32]
    distance: Distance
    exact: bool

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def distances(self) -> npt.NDArray[np.float32]:
        """Dissimilarity (higher = farther): 1 - cosine, -dot, or Euclidean distance."""
        if self.distance is Distance.COSINE:
            return (1.0 - self.sims).astype(np.float32)
        return (-self.sims).astype(np.float32)

    def truncated(self, k: int) -> NeighbourGraph:
        """The same graph cut to the ``k`` closest neighbours (a view, no copy)."""
        k = min(k, self.k)
        return NeighbourGraph(self.indices[:, :k], self.sims[:, :k], self.distance, self.exact)

    def k_occurrence(self, k: int | None = None) -> npt.NDArray[np.int64]:
        """How many points list each point among their ``k`` nearest (hubness), int64 ``(n,)``."""
        idx = self.indices[:, : (k or self.k)]
        idx = idx[idx >= 0]
        return np.bincount(idx, minlength=len(self.indices)).astype(np.int64)


def prepare(vectors: npt.NDArray[np.float32], distance: Distance) -> npt.NDArray[np.float32]:
    """Vectors in the form the similarity is a dot product of: unit-normalised for cosine."""
    x = np.asarray(vectors, dtype=np.float32)
    if distance is Distance.COSINE:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        x = x / norms
    return x


def _valid_rows(n: int, valid: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
    return np.arange(n, dtype=np.int64) if valid is None else np.flatnonzero(valid).astype(np.int64)


def gather(
    vectors: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], distance: Distance
) -> npt.NDArray[np.float32]:
    """``prepare``-d copy of ``vectors[rows]`` read in slices, so a memmap is never materialised twice."""
    out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), _GATHER_ROWS):
        part = rows[start : start + _GATHER_ROWS]
        lo, hi = int(part[0]), int(part[-1]) + 1
        out[start : start + len(part)] = prepare(np.asarray(vectors[lo:hi])[part - lo], distance)
    return out


def exact_graph(
    vectors: npt.NDArray[np.float32], k: int, distance: Distance, valid: npt.NDArray[np.bool_] | None = None
) -> NeighbourGraph:
    """Exact kNN by blocked matrix products; rows not ``valid`` are neither queried nor returned."""
    n = len(vectors)
    valid_rows = _valid_rows(n, valid)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    m = len(valid_rows)
    kk = min(k, m - 1)
    if kk <= 0:
        return NeighbourGraph(indices, sims, distance, exact=True)
    base = gather(vectors, valid_rows, distance)
    sq = (base * base).sum(axis=1) if distance in (Distance.EUCLID, Distance.MANHATTAN) else None
    block_rows = int(max(16, min(4096, _BLOCK_ELEMENTS // m)))
    for start in range(0, m, block_rows):
        block = base[start : start + block_rows]
        s = block @ base.T
        if sq is not None:
            # -||a-b|| from the dot product; clipped at 0 against rounding
            d2 = np.maximum(sq[start : start + len(block), None] + sq[None, :] - 2.0 * s, 0.0)
            s = -np.sqrt(d2)
        rows = np.arange(len(block))
        s[rows, start + rows] = -np.inf  # exclude self
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        part_s = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_s, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        target = valid_rows[start : start + len(block)]
        indices[target, :kk] = valid_rows[top]
        sims[target, :kk] = np.take_along_axis(part_s, order, axis=1)
    return NeighbourGraph(indices, sims, distance, exact=True)


def _pair_sims(
    data: npt.NDArray[np.float32], neighbours: npt.NDArray[np.int64], distance: Distance
) -> npt.NDArray[np.float32]:
    """Similarity of every row of ``data`` to its listed neighbours (local row numbers), blockwise."""
    out = np.empty(neighbours.shape, dtype=np.float32)
    step = 16_384
    for start in range(0, len(data), step):
        a = data[start : start + step]
        b = data[neighbours[start : start + step]]
        if distance in (Distance.EUCLID, Distance.MANHATTAN):
            out[start : start + step] = -np.linalg.norm(b - a[:, None, :], axis=2)
        else:
            out[start : start + step] = np.einsum("nd,nkd->nk", a, b)
    return out


def approximate_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    seed: int = 0,
    n_jobs: int | None = None,
) -> NeighbourGraph:
    """Approximate kNN graph by NN-descent (pynndescent), then exact similarities of the found pairs.

    Why pynndescent: on 1M x 384 on 2 cores it built the all-points k=10 graph in 43 s at recall 0.984, where
    faiss HNSW (defaults) took 3.6 min at recall 0.93 and hnswlib / faiss IVF took 6-10 min (issue 3 and
    ``benchmarks/graph_speed.py``). Cosine runs as Euclidean search on unit vectors (same order, no second
    normalised copy). Dot product is not a metric NN-descent can search; its graph is the cosine graph with
    ``2k`` candidates re-ranked by the raw dot product, exact when norms are equal, approximate otherwise.
    Peak memory is one float32 copy of the valid vectors plus the NN-descent heaps (~2 GiB at 1M x 384).
    """
    from pynndescent import NNDescent

    n = len(vectors)
    valid_rows = _valid_rows(n, valid)
    m = len(valid_rows)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    kk = min(k, m - 1)
    if kk <= 0:
        return NeighbourGraph(indices, sims, distance, exact=False)
    search_as = Distance.COSINE if distance is Distance.DOT else distance
    data = gather(vectors, valid_rows, search_as)
    candidates = min(m - 1, 2 * kk if distance is Distance.DOT else kk)
    metric = "manhattan" if distance is Distance.MANHATTAN else "euclidean"
    with warnings.catch_warnings():
        # tiny inputs (fewer points than its tree leaves) make it warn; _drop_self pads any missing neighbour
        warnings.filterwarnings("ignore", message="Failed to correctly find n_neighbors")
        index = NNDescent(
            data, n_neighbors=candidates + 1, metric=metric, random_state=seed, low_memory=True,
            n_jobs=n_jobs or os.cpu_count() or 1, compressed=True, verbose=False,
        )
    found = np.asarray(index.neighbor_graph[0], dtype=np.int64)
    del index
    if distance is Distance.DOT:
        data = gather(vectors, valid_rows, Distance.DOT)
    local = _drop_self(found, candidates)
    pair = _pair_sims(data, np.maximum(local, 0), distance)
    pair[local < 0] = -np.inf
    order = np.argsort(-pair, axis=1, kind="stable")[:, :kk]
    top = np.take_along_axis(local, order, axis=1)
    top_s = np.take_along_axis(pair, order, axis=1)
    indices[valid_rows, :kk] = np.where(top >= 0, valid_rows[np.maximum(top, 0)], -1)
    sims[valid_rows, :kk] = top_s
    return NeighbourGraph(indices, sims, distance, exact=False)


def _drop_self(found: npt.NDArray[np.int64], keep: int) -> npt.NDArray[np.int64]:
    """Neighbour lists without the point itself (wherever NN-descent put it), ``keep`` columns, -1 padded."""
    rows = np.arange(len(found))[:, None]
    not_self = (found != rows) & (found >= 0)
    # stable sort moves the self entry (and misses) to the end while keeping the distance order
    order = np.argsort(~not_self, axis=1, kind="stable")
    out = np.take_along_axis(found, order, axis=1)
    mask = np.take_along_axis(not_self, order, axis=1)
    out = np.where(mask, out, -1)[:, :keep]
    return np.ascontiguousarray(out)


def build_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    exact_limit: int | None = None,
    seed: int = 0,
) -> NeighbourGraph:
    """The scan's neighbour graph: exact up to ``exact_limit`` (default ``EXACT_LIMIT``) valid points,
    approximate (pynndescent) beyond. ``vectors`` may be the float32 memmap of the point table."""
    limit = EXACT_LIMIT if exact_limit is None else exact_limit
    m = len(vectors) if valid is None else int(np.count_nonzero(valid))
    if m <= limit:
        return exact_graph(vectors, k, distance, valid)
    log.info("building an approximate %d-NN graph over %d points (pynndescent)", k, m)
    return approximate_graph(vectors, k, distance, valid, seed=seed)
