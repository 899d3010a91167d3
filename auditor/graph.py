"""The neighbour graph shared by every pass-2 detector: k nearest neighbours of every point.

Exact blocked search (float32 matrix products, memory bounded by the block size) up to ``EXACT_LIMIT`` valid
points; beyond it an approximate graph: coarse IVF cells searched by matrix products where a sampled recall check
says they find the neighbours (:func:`ivf_graph`), NN-descent (pynndescent) elsewhere. Similarities follow the
collection's own distance and are always *higher = closer*: cosine similarity, dot product, or negative Euclidean
distance.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.types import Distance

log = logging.getLogger(__name__)

#: Exact up to here (``benchmarks/graph_speed.py --crossover``, 2 cores, 384-d): exact 10.1 s at 20k against
#: pynndescent's 1.1 s plus ~3.7 s once per process to load its kernels, so a one-shot scan crosses over near
#: 13k. Kept at 20k because the exact graph has no approximation error (approximate graphs can lose
#: near-duplicates) and is the one incremental scans patch in place; the price is at most ~6 s.
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
    #: The coarse cells an IVF-built graph was searched in (None for exact and NN-descent graphs): lets
    #: :func:`group_search` find neighbours inside a group (a tenant) without partitioning again.
    partition: CoarseCells | None = None

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
        return NeighbourGraph(self.indices[:, :k], self.sims[:, :k], self.distance, self.exact, self.partition)

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


def valid_row_numbers(n: int, valid: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
    return np.arange(n, dtype=np.int64) if valid is None else np.flatnonzero(valid).astype(np.int64)


def gather(
    vectors: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], distance: Distance
) -> npt.NDArray[np.float32]:
    """``prepare``-d copy of ``vectors[rows]`` read in slices, so a memmap is never materialised twice (the slices
    read leave this process's resident set as they are copied: :func:`release_pages`)."""
    out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), _GATHER_ROWS):
        part = rows[start : start + _GATHER_ROWS]
        lo, hi = int(part[0]), int(part[-1]) + 1
        out[start : start + len(part)] = prepare(np.asarray(vectors[lo:hi])[part - lo], distance)
        release_pages(vectors)
    return out


def release_pages(vectors: Any) -> None:
    """Unmap the resident pages of a read-only file-backed memmap (the point table's spill file) from this process.

    Why: a page of the memmap once read counts in the process's resident set until it is unmapped, so a 1M x 384
    scan held 1.5 GB of file pages on top of the normalised copy NN-descent searches (peak RSS 7.0 GiB before issue
    18). ``MADV_DONTNEED`` on a shared read-only mapping drops only the mapping: the data stays in the kernel's page
    cache (reclaimable, re-read on the next touch by a minor fault). No-op for in-memory arrays and where
    ``madvise`` is missing."""
    base = vectors
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if isinstance(base, mmap.mmap) and advice is not None:
        with contextlib.suppress(OSError, ValueError):
            base.madvise(advice)


def row_norms(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Euclidean norm of every row, read in slices (``vectors`` may be the point table's memmap)."""
    out = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), _GATHER_ROWS):
        out[start : start + _GATHER_ROWS] = np.linalg.norm(np.asarray(vectors[start : start + _GATHER_ROWS]), axis=1)
        release_pages(vectors)
    return out


def exact_graph(
    vectors: npt.NDArray[np.float32], k: int, distance: Distance, valid: npt.NDArray[np.bool_] | None = None
) -> NeighbourGraph:
    """Exact kNN by blocked matrix products; rows not ``valid`` are neither queried nor returned."""
    n = len(vectors)
    valid_rows = valid_row_numbers(n, valid)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    m = len(valid_rows)
    kk = min(k, m - 1)
    if kk <= 0:
        return NeighbourGraph(indices, sims, distance, exact=True)
    search = _ExactSearch(gather(vectors, valid_rows, distance), distance)
    top, top_s = search.top(np.arange(m, dtype=np.int64), kk)
    indices[valid_rows, :kk] = valid_rows[top]
    sims[valid_rows, :kk] = top_s
    return NeighbourGraph(indices, sims, distance, exact=True)


class _ExactSearch:
    """Blocked exact similarity search among the rows of ``base`` (``prepare``-d vectors)."""

    def __init__(self, base: npt.NDArray[np.float32], distance: Distance) -> None:
        self.base = base
        self.distance = distance
        self.sq = (base * base).sum(axis=1) if distance in (Distance.EUCLID, Distance.MANHATTAN) else None
        self.block_rows = int(max(16, min(4096, _BLOCK_ELEMENTS // max(len(base), 1))))

    def blocks(self, queries: npt.NDArray[np.int64]) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """``(query rows, similarity block)`` per block of queries; a query's own column is ``-inf``."""
        for start in range(0, len(queries), self.block_rows):
            q = queries[start : start + self.block_rows]
            s = self.base[q] @ self.base.T
            if self.sq is not None:
                # -||a-b|| from the dot product; clipped at 0 against rounding
                s = -np.sqrt(np.maximum(self.sq[q, None] + self.sq[None, :] - 2.0 * s, 0.0))
            s[np.arange(len(q)), q] = -np.inf  # exclude self
            yield q, s

    @staticmethod
    def top_of(
        s: npt.NDArray[np.float32], kk: int, use_torch: bool | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``kk`` largest entries of every row of ``s``, largest first (exactly tied entries in either order)."""
        return top_k(s, kk, use_torch=use_torch)

    def top(
        self, queries: npt.NDArray[np.int64], kk: int, use_torch: bool | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``kk`` most similar rows of each query row (self excluded), closest first."""
        idx = np.empty((len(queries), kk), dtype=np.int64)
        sims = np.empty((len(queries), kk), dtype=np.float32)
        done = 0
        for q, s in self.blocks(queries):
            idx[done : done + len(q)], sims[done : done + len(q)] = self.top_of(s, kk, use_torch)
            done += len(q)
        return idx, sims


#: Similarity blocks at least this large take their top k from torch (below it numpy is quicker than the import).
_TORCH_TOPK_ELEMENTS = 4 * 1024 * 1024


def top_k(
    s: npt.NDArray[np.float32], kk: int, *, use_torch: bool | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``kk`` largest entries of every row of ``s`` (float32 ``(r, c)``, ``kk <= c``), largest first: column
    numbers int64 ``(r, kk)`` and values; exactly tied entries in either order. ``-inf`` entries are never preferred
    to finite ones.

    torch's threaded heap for large blocks when it is installed; otherwise a threshold: the ``kk``-th largest of
    the maxima of ``>= kk`` column groups is a value at least ``kk`` entries of the row reach, so every top-``kk``
    entry is at or above it and only those few entries are sorted. Why not ``numpy.argpartition``: over a
    4096 x 10,000 float32 block it took 0.4-1.4 s on 2 cores, the threshold 0.1-0.25 s and ``torch.topk`` 0.05 s
    (the per-tenant graphs of a 100k-point, ten-tenant scan spent 12 of their 18 s in argpartition,
    benchmarks/results/in-process-speed.md). ``use_torch`` None: torch for blocks of at least
    ``_TORCH_TOPK_ELEMENTS``; False: never (a caller whose whole job is smaller than torch's ~1.5 s import, or that
    runs blocks in parallel threads, where torch's own threads only compete)."""
    torch = _torch() if use_torch or (use_torch is None and s.size >= _TORCH_TOPK_ELEMENTS) else None
    if torch is not None:
        top_s, top = torch.topk(torch.from_numpy(np.ascontiguousarray(s)), kk, dim=1, largest=True, sorted=True)
        return top.numpy().astype(np.int64), top_s.numpy()
    if s.shape[1] <= _FEW_COLUMNS and 0 < kk < s.shape[1]:
        return _top_few(s, kk)
    return _top_threshold(s, kk)


#: Up to this many columns :func:`top_k` selects by ``numpy.argpartition`` (:func:`_top_few`).
_FEW_COLUMNS = 256


def _top_few(s: npt.NDArray[np.float32], kk: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """:func:`top_k` of a block of few columns (the nearest of ~100 centroids): ``numpy.argpartition``, then the
    ``kk`` chosen sorted by value, ties by column. A row where more than ``kk`` entries reach its ``kk``-th value
    (a tie at the cut, which argpartition breaks arbitrarily) goes through :func:`_top_threshold`, so every row gets
    exactly the entries and order :func:`_top_threshold` gives. Why: over 100,000 x 98 point-to-centroid
    similarities the threshold's lexsort of ~3M entries took 1.3-1.5 s on 2 cores, argpartition ~0.2 s."""
    c = s.shape[1]
    part = np.argpartition(s, c - kk, axis=1)[:, c - kk :]
    vals = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)  # value descending, column ascending
    top = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top_s = np.take_along_axis(vals, order, axis=1)
    cut = top_s[:, kk - 1]
    # NaN never reaches a bar: a row holding one, or whose kk-th value is not finite, goes the threshold's way too
    odd = ((s >= cut[:, None]).sum(axis=1) != kk) | ~np.isfinite(cut) | np.isnan(s).any(axis=1)
    if odd.any():
        top[odd], top_s[odd] = _top_threshold(s[odd], kk)
    return top, top_s


def _top_threshold(s: npt.NDArray[np.float32], kk: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """:func:`top_k` by a threshold on the maxima of column groups (its docstring says why).

    A group is every ``groups``-th column (any split into groups gives a bar at or under the ``kk``-th largest
    entry, and so the same selection): their maxima are an element-wise maximum over contiguous rows, where a
    maximum over short runs of adjacent columns took ~4x as long. The entries at or above the bar are ordered by row,
    then value (largest first), then column, through one stable argsort of a 64-bit key (row, then the value's bits
    in descending order), ~7x quicker than ``numpy.lexsort`` of the two keys (which a row holding NaN still uses)."""
    r, c = s.shape
    groups = min(c, max(kk, 64))
    width = -(-c // groups)
    padded = s if groups * width == c else np.pad(s, ((0, 0), (0, groups * width - c)), constant_values=-np.inf)
    maxima = padded.reshape(r, width, groups).max(axis=1)
    bar = np.partition(maxima, groups - kk, axis=1)[:, groups - kk]
    rows, cols = np.nonzero(s >= bar[:, None])
    vals = s[rows, cols]
    if np.isnan(vals).any():
        order = np.lexsort((-vals, rows))
    else:
        order = np.argsort((rows.astype(np.uint64) << np.uint64(32)) | _descending_bits(vals), kind="stable")
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = rank < kk
    top = np.zeros((r, kk), dtype=np.int64)
    top_s = np.full((r, kk), -np.inf, dtype=np.float32)
    top[rows[keep], rank[keep]] = cols[keep]
    top_s[rows[keep], rank[keep]] = vals[keep]
    return top, top_s


def _descending_bits(vals: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
    """uint64 keys whose ascending order is the descending order of ``vals`` (float32, no NaN), equal exactly where
    the values compare equal (-0.0 and 0.0 included): the IEEE bits made monotonic, then inverted."""
    bits = (vals + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    return (~ascending).astype(np.uint64)


def _torch() -> Any:
    """torch (installed with sentence-transformers) for its top-k, else None."""
    try:
        import torch
    except ImportError:  # a stripped environment: the numpy path gives the same lists
        return None
    return torch


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


# -- IVF: coarse cells, exact similarities inside them -----------------------------------------------------------------

#: Points per coarse cell of an IVF graph (before spreading).
IVF_CELL_POINTS = 1_024
#: Cells a point may be a candidate in (its nearest centroids), tried in turn until the sampled recall is met: the
#: collection graph stops at 8 (beyond it NN-descent is cheaper), a search inside a group (a tenant, whose k-th
#: neighbour lies farther out in collection terms, but costs only its share of the cells) at 16.
IVF_SPREADS = (1, 2, 4, 8)
IVF_GROUP_SPREADS = (4, 8, 16)
#: Nearest centroids kept per point: the widest spread any search may use.
IVF_NEAREST = 16
#: An IVF graph is used only where its recall@10 against exact search, measured on a sample of points, is at least
#: this with a margin of two standard errors; elsewhere the graph is NN-descent's (collection) or exact (group).
IVF_MIN_RECALL = 0.98
#: Points whose exact lists the recall is measured on.
RECALL_SAMPLE = 256
#: Point-to-centroid similarities from which the nearest cells are selected by torch (~1 ns an entry on 2 threads,
#: worth its ~1.5 s import from about a million points) rather than numpy (~3-5 ns).
_TORCH_NEAREST_ELEMENTS = 1 << 28
#: Points the coarse k-means is fitted on, per cell.
_KMEANS_PER_CELL = 64


@dataclass
class CoarseCells:
    """Coarse cells over a point table: ``nearest[i]`` are the ``nearest.shape[1]`` centroids nearest to row ``i``,
    closest first, int32 (``-1`` for rows outside the partition); ``cells`` is the number of centroids; ``spread``
    and ``recall`` the spread the graph was searched with and its recall@10 measured on a sample."""

    nearest: npt.NDArray[np.int32]
    cells: int
    spread: int = 0
    recall: float = float("nan")


def _centroids(data: npt.NDArray[np.float32], cells: int, seed: int) -> npt.NDArray[np.float32]:
    """k-means centroids (scikit-learn, random start, a few Lloyd steps) fitted on a sample of ``data`` and scaled to
    the sample's mean norm. Why scaled: a centroid that averages unrelated directions is short, and a short
    centroid is the nearest (Euclidean) second cell of almost every point, so its candidate list grows to most of
    the collection (measured: one cell listed 70% of a 100k clustered set); at equal norms Euclidean order is
    cosine order."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    take = min(len(data), cells * _KMEANS_PER_CELL)
    sample = data[np.sort(rng.choice(len(data), size=take, replace=False))]
    fitted = KMeans(n_clusters=cells, init="random", n_init=1, max_iter=10, random_state=seed).fit(sample)
    centroids = np.asarray(fitted.cluster_centers_, dtype=np.float32)
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    scale = float(np.linalg.norm(sample, axis=1).mean())
    return np.ascontiguousarray(centroids * (scale / np.maximum(norms, 1e-12)), dtype=np.float32)


def _nearest_centroids(
    data: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32], count: int
) -> npt.NDArray[np.int32]:
    """The ``count`` centroids nearest (Euclidean, as k-means assigned them) to every row of ``data``."""
    half = 0.5 * (centroids * centroids).sum(axis=1)
    out = np.empty((len(data), count), dtype=np.int32)
    step = max(1, _BLOCK_ELEMENTS // max(len(centroids), 1))
    use_torch = len(data) * len(centroids) >= _TORCH_NEAREST_ELEMENTS
    for start in range(0, len(data), step):
        top, _ = top_k(data[start : start + step] @ centroids.T - half, count, use_torch=use_torch)
        out[start : start + step] = top
    return out


def coarse_nearest(data: npt.NDArray[np.float32], cells: int, seed: int) -> npt.NDArray[np.int32]:
    """The coarse cells of ``data`` (``prepare``-d rows): k-means with ``cells`` centroids (:func:`_centroids`) and
    every row's ``min(IVF_NEAREST, cells)`` nearest of them, closest first, int32 ``(len(data), ...)``. The first
    step of :func:`ivf_graph`, and of the distributed graph (``auditor.ray_graph``), which must cut the same cells."""
    return _nearest_centroids(data, _centroids(data, cells, seed), min(IVF_NEAREST, cells))


def ivf_search(
    data: npt.NDArray[np.float32], nearest: npt.NDArray[np.int32], queries: npt.NDArray[np.int64], kk: int,
    distance: Distance, spread: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``kk`` most similar rows of ``data`` to each of ``queries`` (rows of ``data``, ascending), self excluded,
    searched cell by cell: a query meets the rows that count its own (nearest) cell among their ``spread`` nearest
    (``nearest``: int32 ``(len(data), >= spread)``). Row numbers int64 ``(len(queries), kk)`` and exact
    similarities, closest first, ``-1`` / ``-inf`` where a cell held too few rows.

    Every query is in exactly one block, so its list is final when the block is done (no merging); a block is one
    matrix product of the cell's queries against the cell's candidates, which BLAS runs far faster than
    NN-descent's scattered distance evaluations (benchmarks/results/in-process-speed.md)."""
    idx = np.full((len(queries), kk), -1, dtype=np.int64)
    sims = np.full((len(queries), kk), -np.inf, dtype=np.float32)
    cells = int(nearest[:, :spread].max()) + 1 if len(data) else 0
    q_cell = nearest[queries, 0].astype(np.int64)
    q_order = np.argsort(q_cell, kind="stable")
    q_bounds = np.searchsorted(q_cell[q_order], np.arange(cells + 1))
    m_cell = nearest[:, :spread].ravel().astype(np.int64)
    m_order = np.argsort(m_cell, kind="stable")  # rows ascending within each cell
    m_rows = np.repeat(np.arange(len(data), dtype=np.int64), spread)[m_order]
    m_bounds = np.searchsorted(m_cell[m_order], np.arange(cells + 1))
    sq = (data * data).sum(axis=1) if distance in (Distance.EUCLID, Distance.MANHATTAN) else None

    def search_cell(cell: int) -> None:
        pos = q_order[q_bounds[cell] : q_bounds[cell + 1]]
        cand = m_rows[m_bounds[cell] : m_bounds[cell + 1]]
        kc = min(kk, len(cand) - 1)
        if not len(pos) or kc <= 0:
            return
        base = data[cand]
        self_col = np.searchsorted(cand, queries[pos])  # a query is a candidate of its own nearest cell
        step = max(1, _BLOCK_ELEMENTS // len(cand))
        for start in range(0, len(pos), step):
            p, col = pos[start : start + step], self_col[start : start + step]
            s = data[queries[p]] @ base.T
            if sq is not None:
                s = -np.sqrt(np.maximum(sq[queries[p], None] + sq[None, cand] - 2.0 * s, 0.0))
            s[np.arange(len(p)), col] = -np.inf
            top, top_s = top_k(s, kc, use_torch=False)
            idx[p, :kc] = np.where(np.isfinite(top_s), cand[top], -1)  # queries of a cell: rows no other cell writes
            sims[p, :kc] = top_s

    _each_cell(search_cell, cells)
    return idx, sims


def _each_cell(work: Callable[[int], None], cells: int) -> None:
    """``work(cell)`` for every cell, one cell per core at a time, each on single-threaded BLAS.

    Why: a cell's matrix product is small (about a thousand rows), and OpenBLAS' own threads cost more than they
    bring there: a 100 x 400 product took 18 ms of wall time on 2 threads on the shared box, 1.2 ms on one; numpy
    releases the GIL in matrix products, selections and gathers, so cells in parallel threads keep both cores busy."""
    from threadpoolctl import threadpool_limits

    workers = min(os.cpu_count() or 1, cells)
    with threadpool_limits(limits=1, user_api="blas"):
        if workers <= 1:
            for cell in range(cells):
                work(cell)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(work, range(cells)):
                pass


def repair_far_lists(
    data: npt.NDArray[np.float32], nearest: npt.NDArray[np.int32], queries: npt.NDArray[np.int64],
    idx: npt.NDArray[np.int64], sims: npt.NDArray[np.float32], distance: Distance,
) -> int:
    """Search again, through all ``nearest.shape[1]`` nearest cells of each, the queries whose IVF lists look far
    (their mean similarity to the first ten listed at least ``_REPAIR_Z`` robust deviations under the median, the
    farthest ``_REPAIR_SHARE`` at most) or short; merge in place what they find. Returns how many were searched.

    Why: a point at the border of its cell whose neighbours sit in the next cell is missed by a narrow spread, and
    its list then looks like an outlier's (measured at 100k, spread 1: 35 false VA301 findings, robust z 14-70,
    every one's neighbours in its second-nearest cell). Lists can only err towards farther (a missed neighbour is
    replaced by a less similar one), so every point an outlier rule could flag is in this far tail."""
    kk = idx.shape[1]
    k10 = min(10, kk)
    with np.errstate(invalid="ignore"):
        mean = np.where(idx[:, :k10] >= 0, sims[:, :k10], np.nan).mean(axis=1)
    finite = mean[np.isfinite(mean)]
    if not finite.size:
        return 0
    median = float(np.median(finite))
    mad = 1.4826 * float(np.median(np.abs(finite - median)))
    far = (median - mean) / max(mad, 1e-9)
    far[~np.isfinite(far) | (idx[:, kk - 1] < 0)] = np.inf
    pick = np.flatnonzero(far >= _REPAIR_Z)
    cap = max(1, int(_REPAIR_SHARE * len(queries)))
    if len(pick) > cap:
        pick = pick[np.argsort(-far[pick], kind="stable")[:cap]]
    if not len(pick):
        return 0
    found, found_s = _probe_search(data, nearest, queries[pick], kk, distance, nearest.shape[1])
    idx[pick], sims[pick] = _merge_lists(idx[pick], sims[pick], found, found_s, kk)
    return len(pick)


#: At most this share of the points is searched again by :func:`repair_far_lists` ...
_REPAIR_SHARE = 0.05
#: ... those whose mean top-10 similarity lies this many robust deviations (MAD) under the median, or farther.
#: The outlier rules flag at robust z 3 on the same mean with a scale never under the MAD, so every point they
#: could flag is at least this far out (1M: 3.4% of the points at 2.0, 13 CPU seconds).
_REPAIR_Z = 2.5


def _probe_search(
    data: npt.NDArray[np.float32], nearest: npt.NDArray[np.int32], queries: npt.NDArray[np.int64], kk: int,
    distance: Distance, probes: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``kk`` most similar rows of ``data`` to each of ``queries`` (self excluded) among the rows whose nearest
    cell is one of the query's ``probes`` nearest cells (the classic IVF probe, for a few queries): rows int64 and
    exact similarities, closest first, ``-1`` / ``-inf`` padded. Queries are split between the cores; each core
    goes through the cells for its own queries, keeping their running top ``kk``."""
    home = nearest[:, 0].astype(np.int64)
    order = np.argsort(home, kind="stable")
    cells = int(home.max()) + 1
    bounds = np.searchsorted(home[order], np.arange(cells + 1))
    sq = (data * data).sum(axis=1) if distance in (Distance.EUCLID, Distance.MANHATTAN) else None
    idx = np.full((len(queries), kk), -1, dtype=np.int64)
    sims = np.full((len(queries), kk), -np.inf, dtype=np.float32)
    parts = min(os.cpu_count() or 1, len(queries))
    chunks = np.array_split(np.arange(len(queries)), max(parts, 1))

    def search_chunk(part: int) -> None:
        pos = chunks[part]
        probe = nearest[queries[pos], :probes].astype(np.int64).ravel()
        p_order = np.argsort(probe, kind="stable")
        p_pos = np.repeat(pos, probes)[p_order]
        p_bounds = np.searchsorted(probe[p_order], np.arange(cells + 1))
        for cell in np.flatnonzero(np.diff(p_bounds)):
            q = p_pos[p_bounds[cell] : p_bounds[cell + 1]]
            cand = order[bounds[cell] : bounds[cell + 1]]
            if not len(cand):
                continue
            s = data[queries[q]] @ data[cand].T
            if sq is not None:
                s = -np.sqrt(np.maximum(sq[queries[q], None] + sq[None, cand] - 2.0 * s, 0.0))
            s[queries[q][:, None] == cand[None, :]] = -np.inf  # self
            kc = min(kk, len(cand))
            top, top_s = top_k(s, kc, use_torch=False)
            both_i = np.concatenate([idx[q], np.where(np.isfinite(top_s), cand[top], -1)], axis=1)
            both_s = np.concatenate([sims[q], top_s], axis=1)  # a row is in one cell only: no duplicates
            best = np.argsort(-both_s, axis=1, kind="stable")[:, :kk]
            idx[q], sims[q] = np.take_along_axis(both_i, best, axis=1), np.take_along_axis(both_s, best, axis=1)

    _each_cell(search_chunk, len(chunks))
    return idx, sims


def _merge_lists(
    idx_a: npt.NDArray[np.int64], sims_a: npt.NDArray[np.float32], idx_b: npt.NDArray[np.int64],
    sims_b: npt.NDArray[np.float32], kk: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Two neighbour lists of the same rows merged: each neighbour once (its higher similarity), top ``kk``."""
    both_i = np.concatenate([idx_a, idx_b], axis=1)
    both_s = np.concatenate([sims_a, sims_b], axis=1)
    both_s = np.where(both_i >= 0, both_s, -np.inf)
    order = np.lexsort((-both_s, both_i), axis=-1)  # by neighbour, most similar first
    both_i, both_s = np.take_along_axis(both_i, order, axis=1), np.take_along_axis(both_s, order, axis=1)
    again = np.zeros(both_i.shape, dtype=bool)
    again[:, 1:] = both_i[:, 1:] == both_i[:, :-1]
    both_s = np.where(again, -np.inf, both_s)
    best = np.argsort(-both_s, axis=1, kind="stable")[:, :kk]
    top_s = np.take_along_axis(both_s, best, axis=1)
    return np.where(np.isfinite(top_s), np.take_along_axis(both_i, best, axis=1), -1), top_s


def _sample_top(
    data: npt.NDArray[np.float32], sample: npt.NDArray[np.int64], kk: int, distance: Distance
) -> npt.NDArray[np.float32]:
    """Exact similarities of the ``kk`` nearest rows of ``data`` to each of ``sample`` (rows of ``data``, self
    excluded), closest first. Goes through ``data`` once in slices of rows (a few hundred queries against all rows
    block by block would read ``data`` once per block: 12 GB at 1M x 384)."""
    q = data[sample]
    q_sq = (q * q).sum(axis=1) if distance in (Distance.EUCLID, Distance.MANHATTAN) else None
    best = np.full((len(sample), kk), -np.inf, dtype=np.float32)
    for start in range(0, len(data), _GATHER_ROWS):
        part = data[start : start + _GATHER_ROWS]
        s = q @ part.T
        if q_sq is not None:
            s = -np.sqrt(np.maximum(q_sq[:, None] + (part * part).sum(axis=1)[None, :] - 2.0 * s, 0.0))
        mine = np.flatnonzero((sample >= start) & (sample < start + len(part)))
        s[mine, sample[mine] - start] = -np.inf
        _, top_s = top_k(np.concatenate([best, s], axis=1), kk, use_torch=False)
        best = top_s
    return best


def choose_spread(
    data: npt.NDArray[np.float32], nearest: npt.NDArray[np.int32], pool: npt.NDArray[np.int64], kk: int,
    distance: Distance, spreads: tuple[int, ...], seed: int,
) -> tuple[int | None, float]:
    """The smallest of ``spreads`` whose IVF lists reach ``IVF_MIN_RECALL`` (recall@10, less two standard errors)
    against exact search on a sample of the query rows ``pool``, and its measured recall; ``(None, best recall)``
    when none does. A found neighbour counts when it is at least as similar as the exact 10th (ties are not
    misses). Cost: the sample's exact search, ``RECALL_SAMPLE x len(data)`` products."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(pool, size=min(len(pool), RECALL_SAMPLE), replace=False))
    k10 = min(10, kk)
    exact_s = _sample_top(data, sample, k10, distance)
    bar = exact_s[:, k10 - 1 : k10] - 1e-5 * np.maximum(1.0, np.abs(exact_s[:, k10 - 1 : k10]))  # rounding
    best = 0.0
    for spread in sorted({min(s, nearest.shape[1]) for s in spreads}):  # all cells: exact
        _, found_s = ivf_search(data, nearest, sample, k10, distance, spread)
        per_query = (found_s >= bar).sum(axis=1) / k10
        recall = float(per_query.mean())
        best = max(best, recall)
        margin = 2.0 * float(per_query.std()) / np.sqrt(len(sample))
        if recall - margin >= IVF_MIN_RECALL:
            return spread, recall
    return None, best


def ivf_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    seed: int = 0,
) -> NeighbourGraph | None:
    """Approximate kNN graph from coarse cells (IVF), or None where it would not reach ``IVF_MIN_RECALL``.

    k-means centroids on a sample (``IVF_CELL_POINTS`` points per cell), every point a candidate in its
    ``spread`` nearest cells, exact similarities of each cell's points to its candidates (blocked matrix products),
    the top ``k`` kept. ``spread`` is the smallest of ``IVF_SPREADS`` whose recall@10 against exact search,
    measured on a sample of points before the graph is built, is at least ``IVF_MIN_RECALL`` (two standard errors
    below the estimate); when none is, None (the caller builds NN-descent's graph). Similarities are exact for
    every pair listed; a true neighbour is missed only when it does not count the point's cell among its nearest.
    Keeps the cells (:class:`CoarseCells`) so searches inside a tenant reuse them (:func:`group_search`).

    Why: on 2 cores pynndescent took 8.3 s at 100k x 384 and 127 s at 1M (k 20 + 10 candidates, plus 2-4 s per
    process loading its numba kernels); the cells' matrix products run at BLAS speed where the collection has
    clustered structure, and the recall check sends diffuse collections (real sentence embeddings: recall@10 0.95
    at spread 8 on 48k all-MiniLM-L6-v2 vectors, where NN-descent reached 0.995) back to NN-descent
    (benchmarks/results/in-process-speed.md). Why hand-written rather than a library: faiss' IVF searches one query
    at a time against inverted lists (6-10 min at 1M here, issue 3) and is not a dependency; an all-points graph is
    the one case where a whole cell can be multiplied at once. Dot product: cells of the raw vectors, raw dot
    products inside them, recall measured in dot-product order. Manhattan is not a matrix product: never IVF."""
    n = len(vectors)
    valid_rows = valid_row_numbers(n, valid)
    m = len(valid_rows)
    kk = min(k, m - 1)
    if kk <= 0 or distance is Distance.MANHATTAN:
        return None
    data = gather(vectors, valid_rows, distance)
    cells = max(1, round(m / IVF_CELL_POINTS))
    near = coarse_nearest(data, cells, seed)
    local = np.arange(m, dtype=np.int64)
    spread, recall = choose_spread(data, near, local, kk, distance, IVF_SPREADS, seed)
    if spread is None:
        log.info("IVF graph: recall@10 %.3f on a sample is under %.2f at spread %d; NN-descent instead", recall,
                 IVF_MIN_RECALL, max(IVF_SPREADS))
        return None
    log.info("IVF graph: %d cells, spread %d, recall@10 %.4f on a sample of %d", cells, spread, recall,
             min(m, RECALL_SAMPLE))
    top, top_s = ivf_search(data, near, local, kk, distance, spread)
    again = repair_far_lists(data, near, local, top, top_s, distance)
    log.info("IVF graph: %d points with far lists searched again through %d cells", again, near.shape[1])
    del data
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    indices[valid_rows, :kk] = np.where(top >= 0, valid_rows[np.maximum(top, 0)], -1)
    sims[valid_rows, :kk] = top_s
    nearest = np.full((n, near.shape[1]), -1, dtype=np.int32)
    nearest[valid_rows] = near
    return NeighbourGraph(indices, sims, distance, exact=False, partition=CoarseCells(nearest, cells, spread, recall))


def group_search(
    vectors: npt.NDArray[np.float32], partition: CoarseCells, queries: npt.NDArray[np.int64],
    members: npt.NDArray[np.int64], k: int, distance: Distance, *, seed: int = 0,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None:
    """Approximate k nearest ``members`` (ascending table rows, e.g. one tenant's) of each of ``queries`` (members
    too, ascending), self excluded, through the cells of an IVF graph: table rows int64 ``(len(queries), k)`` and
    exact similarities, closest first, ``-1`` / ``-inf`` padded; None where no spread of ``IVF_GROUP_SPREADS``
    reaches ``IVF_MIN_RECALL`` on a sample of the queries (the caller searches another way).

    Costs about ``len(queries) x spread x members per cell`` products instead of ``len(queries) x len(members)``.
    A query whose cells hold fewer than ``min(k, len(members) - 1)`` members is searched exactly
    (:func:`search_within`)."""
    kk = min(k, len(members) - 1)
    near = partition.nearest[members]
    if kk <= 0 or not len(queries) or (near[:, 0] < 0).any():  # a member the partition never saw: no cells
        return None
    data = gather(vectors, members, distance)
    local_q = np.searchsorted(members, queries)
    spread, recall = choose_spread(data, near, local_q, kk, distance, IVF_GROUP_SPREADS, seed)
    if spread is None:
        log.info("IVF group search: recall@10 %.3f on a sample is under %.2f", recall, IVF_MIN_RECALL)
        return None
    top, top_s = ivf_search(data, near, local_q, kk, distance, spread)
    repair_far_lists(data, near, local_q, top, top_s, distance)
    del data
    out = np.full((len(queries), k), -1, dtype=np.int64)
    out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out[:, :kk] = np.where(top[:, :kk] >= 0, members[np.maximum(top[:, :kk], 0)], -1)
    out_s[:, :kk] = top_s[:, :kk]
    short = np.flatnonzero(out[:, kk - 1] < 0)
    if len(short):
        out[short], out_s[short] = search_within(vectors, queries[short], members, k, distance)
    return out, out_s


def approximate_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    seed: int = 0,
    n_jobs: int | None = None,
) -> NeighbourGraph:
    """Approximate kNN graph by NN-descent (pynndescent); similarities from its own float32 distances (dot
    product: exact dot products of the candidates, re-ranked).

    Why pynndescent: on 1M x 384 on 2 cores it built the all-points k=10 graph in 43 s at recall 0.984 (issue 3's
    measurement; here, searching k + 8 candidates gave recall@10 0.997 at 100k, see ``_candidates``), where
    faiss HNSW (defaults) took 3.6 min at recall 0.93 and hnswlib / faiss IVF took 6-10 min (issue 3 and
    ``benchmarks/graph_speed.py``). Cosine runs as Euclidean search on unit vectors (same order, no second
    normalised copy). Dot product is not a metric NN-descent can search; its graph is the cosine graph with
    ``2k`` candidates re-ranked by the raw dot product, exact when norms are equal, approximate otherwise.
    Peak memory is one float32 copy of the valid vectors plus the NN-descent heaps (~2 GiB at 1M x 384).
    """
    from pynndescent import NNDescent

    try:
        from auditor.nndescent_cache import cached_nn_descent
    except ImportError:  # a pynndescent without the internals the cached copy calls: compile its own
        cached_nn_descent = contextlib.nullcontext  # type: ignore[assignment]

    n = len(vectors)
    valid_rows = valid_row_numbers(n, valid)
    m = len(valid_rows)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    kk = min(k, m - 1)
    if kk <= 0:
        return NeighbourGraph(indices, sims, distance, exact=False)
    search_as = Distance.COSINE if distance is Distance.DOT else distance
    data = gather(vectors, valid_rows, search_as)
    candidates = _candidates(kk, m, distance)
    metric = "manhattan" if distance is Distance.MANHATTAN else "euclidean"
    _cache_pynndescent_kernels()
    with warnings.catch_warnings(), cached_nn_descent():
        # tiny inputs (fewer points than its tree leaves) make it warn; _drop_self pads any missing neighbour
        warnings.filterwarnings("ignore", message="Failed to correctly find n_neighbors")
        warnings.filterwarnings("ignore", message="Cannot cache compiled function")
        index = NNDescent(
            # pynndescent's own tree count (10-12): 5 trees kept the mean recall (0.997 at 1M) but left ~0.4% of
            # points with wrong lists, which then ranked as outliers (planted-outlier AP 0.715 vs 1.0 at 1M)
            data, n_neighbors=candidates + 1, metric=metric, random_state=seed, low_memory=True,
            n_jobs=n_jobs or os.cpu_count() or 1, compressed=True, verbose=False,
        )
    found, found_d = index.neighbor_graph
    del index, data  # the search copy (1.5 GB at 1M x 384) is not needed past this point
    local, local_d = _drop_self(np.asarray(found, dtype=np.int64), np.asarray(found_d, dtype=np.float32), candidates)
    if distance is Distance.DOT:
        # re-rank the cosine candidates by the raw dot product
        data = gather(vectors, valid_rows, Distance.DOT)
        pair = _pair_sims(data, np.maximum(local, 0), distance)
        pair[local < 0] = -np.inf
        order = np.argsort(-pair, axis=1, kind="stable")[:, :kk]
        top = np.take_along_axis(local, order, axis=1)
        top_s = np.take_along_axis(pair, order, axis=1)
    else:
        # NN-descent's own distances, already in order: cosine from the Euclidean distance of unit vectors
        # (1 - d^2/2 keeps the digits a dot product near 1 loses), Euclid and Manhattan negated
        top, dist = local[:, :kk], local_d[:, :kk]
        top_s = (1.0 - 0.5 * dist * dist) if distance is Distance.COSINE else -dist
        top_s = np.where(top >= 0, top_s, -np.inf).astype(np.float32)
    indices[valid_rows, :kk] = np.where(top >= 0, valid_rows[np.maximum(top, 0)], -1)
    sims[valid_rows, :kk] = top_s
    return NeighbourGraph(indices, sims, distance, exact=False)


_KERNELS_CACHED = False


def _cache_pynndescent_kernels() -> None:
    """Let numba cache pynndescent's compiled kernels on disk (once per process).

    pynndescent declares its heaviest parallel kernels ``cache=False``, so every new process spent 55-110 s of
    numba compilation before the first graph (measured: 55 s at 3,000 points, 108 of 120 s at 100k on 2 cores).
    With on-disk caching a process after the first paid ~22 s, because numba refuses to cache the top-level
    ``nn_descent`` ("uses dynamic globals"; it calls ``numba.get_num_threads``, a function pointer); that one now
    runs as the cacheable copy in ``auditor.nndescent_cache`` (a later process loads everything: ~4 s at 3,000
    points). numba writes the cache beside the package or, if that is read-only, in its user-wide cache
    directory (``NUMBA_CACHE_DIR`` overrides)."""
    global _KERNELS_CACHED
    if _KERNELS_CACHED:
        return
    import importlib
    import pkgutil

    import pynndescent
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for info in pkgutil.iter_modules(pynndescent.__path__):
        module = importlib.import_module(f"pynndescent.{info.name}")
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and isinstance(getattr(obj, "_cache", None), NullCache):
                try:
                    obj.enable_caching()
                except Exception as e:  # a kernel numba cannot cache just compiles as before
                    log.debug("numba cannot cache %s: %s", obj.py_func.__qualname__, e)
    _KERNELS_CACHED = True


def _candidates(kk: int, m: int, distance: Distance) -> int:
    """Neighbours NN-descent searches for a k-NN graph. With exactly k it reached recall@10 0.951 on 100k
    clustered 384-d vectors; k + max(8, k/2), cut to the k closest by exact similarity, reached 0.997 for about
    the same time (benchmarks/results/embedding.md). Dot product re-ranks 2k cosine candidates by raw dot."""
    return min(m - 1, 2 * kk if distance is Distance.DOT else kk + max(8, kk // 2))


def _drop_self(
    found: npt.NDArray[np.int64], dist: npt.NDArray[np.float32], keep: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Neighbour lists (and their distances) without the point itself, wherever NN-descent put it; ``keep``
    columns, -1 / inf padded."""
    rows = np.arange(len(found))[:, None]
    not_self = (found != rows) & (found >= 0)
    # stable sort moves the self entry (and misses) to the end while keeping the distance order
    order = np.argsort(~not_self, axis=1, kind="stable")
    mask = np.take_along_axis(not_self, order, axis=1)[:, :keep]
    out = np.where(mask, np.take_along_axis(found, order, axis=1)[:, :keep], -1)
    out_d = np.where(mask, np.take_along_axis(dist, order, axis=1)[:, :keep], np.inf)
    return np.ascontiguousarray(out), np.ascontiguousarray(out_d, dtype=np.float32)


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
    graph = ivf_graph(vectors, k, distance, valid, seed=seed)
    if graph is not None:
        return graph
    log.info("building an approximate %d-NN graph over %d points (pynndescent)", k, m)
    return approximate_graph(vectors, k, distance, valid, seed=seed)


@dataclass
class StoredGraph:
    """A neighbour graph of an earlier scan, over the earlier rows ``rows`` (of ``size``): ``indices[j]`` are
    the earlier row numbers of the neighbours of row ``rows[j]``. Earlier row ``r`` is the point ``keys[r]``
    with vector hash ``vector_hashes[r]`` in ``auditor.statecache.StateCache.rows`` (which reads and writes it;
    defined here so this module never imports the state cache)."""

    rows: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int64]
    sims: npt.NDArray[np.float32]
    distance: Distance
    exact: bool
    size: int

    def positions(self) -> npt.NDArray[np.int64]:
        """For every earlier row, its position in ``rows`` (-1 when the graph was not built over it)."""
        out = np.full(self.size, -1, dtype=np.int64)
        out[self.rows] = np.arange(len(self.rows), dtype=np.int64)
        return out


def patch_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_],
    previous: StoredGraph,
    reuse: npt.NDArray[np.int64],
) -> tuple[NeighbourGraph, dict[str, int]] | None:
    """This scan's graph from an earlier scan's, recomputing only what changed; None when it cannot.

    ``reuse[i]`` is the earlier row of current row ``i`` when the point's vector is unchanged, else -1. An
    unchanged point keeps its list, merged with the new or moved points that come closer than its k-th
    neighbour; a point that lost a neighbour (deleted or moved) and every new or moved point are searched
    exactly. The result is exact when the earlier graph was (up to the order of exactly tied neighbours), and
    no worse than it when it was approximate. Cost: O((changed + their reverse neighbours) x n x d).
    """
    n = len(vectors)
    valid_rows = valid_row_numbers(n, valid)
    m = len(valid_rows)
    kk = min(k, m - 1)
    if previous.distance is not distance or previous.indices.shape[1] < kk or kk <= 0:
        return None
    position = previous.positions()
    prev_row = reuse[valid_rows].copy()
    has = prev_row >= 0
    prev_row[has] = np.where(position[prev_row[has]] >= 0, prev_row[has], -1)  # only rows the graph covered
    kept = np.flatnonzero(prev_row >= 0)
    prev_to_local = np.full(previous.size, -1, dtype=np.int64)
    prev_to_local[prev_row[kept]] = kept
    old = previous.indices[position[prev_row[kept]], :kk]
    old_local = np.where(old >= 0, prev_to_local[np.maximum(old, 0)], -1)
    # a list that lost an entry, or was short (fewer points than k earlier), must be searched again
    dirty = (old_local < 0).any(axis=1)
    clean = kept[~dirty]
    idx = np.full((m, kk), -1, dtype=np.int64)
    sims = np.full((m, kk), -np.inf, dtype=np.float32)
    idx[clean] = old_local[~dirty]
    sims[clean] = previous.sims[position[prev_row[clean]], :kk]
    moved = np.setdiff1d(np.arange(m, dtype=np.int64), kept, assume_unique=True)
    search = _ExactSearch(gather(vectors, valid_rows, distance), distance)
    # each clean row admits a moved point that beats its current k-th neighbour
    bar = np.full(m, np.inf, dtype=np.float32)
    bar[clean] = sims[clean, kk - 1]
    pairs: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]] = []
    for q, s in search.blocks(moved):
        idx[q], sims[q] = search.top_of(s, kk)
        qi, rows = np.nonzero(s > bar[None, :])
        pairs.append((rows.astype(np.int64), q[qi], s[qi, rows]))
    if pairs:
        _merge_candidates(idx, sims, *(np.concatenate(parts) for parts in zip(*pairs, strict=True)))
    again = kept[dirty]
    if len(again):
        idx[again], sims[again] = search.top(again, kk)
    indices = np.full((n, k), -1, dtype=np.int64)
    out_sims = np.full((n, k), -np.inf, dtype=np.float32)
    indices[valid_rows, :kk] = np.where(idx >= 0, valid_rows[np.maximum(idx, 0)], -1)
    out_sims[valid_rows, :kk] = sims
    counts = {"reused": len(clean), "searched": len(moved) + len(again)}
    return NeighbourGraph(indices, out_sims, distance, previous.exact), counts


def _merge_candidates(
    idx: npt.NDArray[np.int64], sims: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64], cand: npt.NDArray[np.int64], cand_s: npt.NDArray[np.float32],
) -> None:
    """Merge candidate neighbours ``cand`` (similarity ``cand_s``) into the lists of ``rows``, in place."""
    kk = idx.shape[1]
    order = np.argsort(rows, kind="stable")
    rows, cand, cand_s = rows[order], cand[order], cand_s[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(rows)], strict=True):
        r = int(rows[start])
        all_i = np.concatenate([idx[r], cand[start:end]])
        all_s = np.concatenate([sims[r], cand_s[start:end]])
        best = np.argsort(-all_s, kind="stable")[:kk]
        idx[r], sims[r] = all_i[best], all_s[best]


def within_group(
    graph: NeighbourGraph, rows: npt.NDArray[np.int64], group: npt.NDArray[np.bool_], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Each of ``rows``' neighbours in ``graph`` that are members of ``group`` (a boolean mask over the table),
    closest first, cut to ``k``: ``(indices, sims, complete)``, shapes ``(len(rows), k)`` and ``(len(rows),)``,
    ``-1`` / ``-inf`` padded.

    ``complete[i]`` says the list holds ``min(k, members - 1)`` entries. For an exact graph a complete list *is*
    the row's exact k-NN list inside the group: a closer member would have been listed before the k-th one (up
    to the order of exactly tied neighbours); for an approximate graph it is as good as the graph. Rows not
    complete need a search inside the group (:func:`search_within`).
    """
    idx = graph.indices[rows]
    member = (idx >= 0) & group[np.maximum(idx, 0)]
    # stable sort moves members first, keeping the similarity order among them
    order = np.argsort(~member, axis=1, kind="stable")[:, :k]
    keep = np.take_along_axis(member, order, axis=1)
    out = np.where(keep, np.take_along_axis(idx, order, axis=1), -1)
    out_s = np.where(keep, np.take_along_axis(graph.sims[rows], order, axis=1), -np.inf).astype(np.float32)
    if out.shape[1] < k:  # the graph holds fewer than k neighbours per point
        pad = k - out.shape[1]
        out = np.pad(out, ((0, 0), (0, pad)), constant_values=-1)
        out_s = np.pad(out_s, ((0, 0), (0, pad)), constant_values=-np.inf)
    need = min(k, int(np.count_nonzero(group)) - 1)
    return out, out_s, keep.sum(axis=1) >= need


def search_within(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.int64], members: npt.NDArray[np.int64], k: int,
    distance: Distance,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact k nearest ``members`` (table rows) of each of ``queries`` (table rows that are members too), self
    excluded, closest first: table row numbers int64 ``(len(queries), k)`` and similarities (higher = closer),
    ``-1`` / ``-inf`` padded. Cost O(len(queries) x len(members) x d): for the few rows the shared graph leaves
    short, not for a whole large group."""
    out = np.full((len(queries), k), -1, dtype=np.int64)
    out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    kk = min(k, len(members) - 1)
    if kk <= 0 or not len(queries):
        return out, out_s
    search = _ExactSearch(gather(vectors, members, distance), distance)
    local = np.searchsorted(members, queries)
    top, top_s = search.top(local, kk)
    out[:, :kk] = members[top]
    out_s[:, :kk] = top_s
    return out, out_s
